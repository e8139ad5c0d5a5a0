"""The hand-off to the imx500 environment: the architecture's config and the weights, never a model file.

The project trains with Keras 3; Sony's tools need tf.keras 2.15, which cannot read a Keras 3
`.keras` file (nor unpickle anything of ours). So the model crosses over as data:

- ``arch.json``: the layer graph, flattened (a nested backbone model's layers become layers of the
  one graph, its input wired to what fed it), each layer with its class name and the part of its
  Keras config that tf.keras 2.15 understands;
- ``weights.npz``: each layer's ``get_weights()``, keyed ``<layer name>/<index>``.

`architecture(model)` is a pure function of the Keras 3 config: everything that cannot be rebuilt in
tf.keras 2.15 is refused here, before the other environment starts, with one line naming the layer
and the reason. What is dropped on the way cannot change what the model computes: initializers,
regularizers and constraints (the weights are set after the rebuild) and a layer's dtype policy
(the rebuild computes in float32, the converter's input).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from device.errors import FaceedgeError

FORMAT = "faceedge-imx500-arch/1"
ARCH_FILE = "arch.json"
WEIGHTS_FILE = "weights.npz"

# Layers whose Keras 3 config tf.keras 2.15 accepts once the keys below are dropped, and that
# Sony's MCT and converter know (Rescaling is rewritten by the child as an equivalent 1x1 depthwise
# convolution: the converter has no Rescaling op).
SUPPORTED = frozenset(
    {
        "InputLayer",
        "Conv2D",
        "DepthwiseConv2D",
        "SeparableConv2D",
        "BatchNormalization",
        "ReLU",
        "Activation",
        "Dense",
        "Add",
        "Multiply",
        "Concatenate",
        "ZeroPadding2D",
        "GlobalAveragePooling2D",
        "GlobalMaxPooling2D",
        "AveragePooling2D",
        "MaxPooling2D",
        "Flatten",
        "Dropout",
        "Rescaling",
        "Reshape",
        "Softmax",
    }
)
NESTED = frozenset({"Functional", "Model"})  # a functional model used as a layer (the backbone)
ACTIVATIONS = frozenset(
    {
        "linear",
        "relu",
        "relu6",
        "sigmoid",
        "softmax",
        "tanh",
        "swish",
        "silu",
        "hard_sigmoid",
        "hard_swish",
        "hard_silu",
    }
)
# Keys that cannot change the function once the weights are set.
_DROPPED_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
# Keras 3 keys tf.keras 2.15 does not know; allowed only at these (neutral) values.
_KERAS3_ONLY = {"quantization_config": None, "lora_rank": None, "lora_alpha": None, "optional": False}
_CALL_KWARGS_IGNORED = {"training", "mask"}  # inference rebuild: BatchNorm/Dropout in inference mode


def _refuse(layer: str, cls: str, why: str) -> FaceedgeError:
    return FaceedgeError(f"layer {layer!r} ({cls}) cannot be rebuilt in tf.keras 2.15 for the IMX500: {why}")


def _clean_config(name: str, cls: str, config: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key.endswith(_DROPPED_SUFFIXES) or key == "activity_regularizer":
            continue
        if key == "dtype":
            out[key] = "float32"
            continue
        if key in _KERAS3_ONLY:
            if value != _KERAS3_ONLY[key]:
                raise _refuse(name, cls, f"{key}={value!r} has no tf.keras 2.15 equivalent")
            continue
        if key == "batch_shape":  # InputLayer, Keras 3 spelling
            out["batch_input_shape"] = value
            continue
        if key == "activation":
            if not isinstance(value, str) or value not in ACTIVATIONS:
                raise _refuse(name, cls, f"activation {value!r} is not a built-in one")
        out[key] = value
    if cls == "InputLayer" and (config.get("sparse") or config.get("ragged")):
        raise _refuse(name, cls, "sparse or ragged input")
    return out


def _tensor_ref(arg: Any) -> tuple[str, int, int]:
    if not (isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__"):
        raise ValueError(f"not a tensor: {str(arg)[:80]}")
    name, node, index = arg["config"]["keras_history"]
    return str(name), int(node), int(index)


class _Flattener:
    """Walks a (possibly nested) Keras 3 functional config into one flat list of layers."""

    def __init__(self) -> None:
        self.layers: list[dict[str, Any]] = []
        self.names: set[str] = set()

    def model(self, config: dict[str, Any], inputs: list[str] | None) -> list[str]:
        """Emit the layers of a functional config; `inputs` = outer tensors feeding its inputs (None
        for the top model). Returns the names of the tensors its outputs are."""
        refs = config.get("input_layers") or []
        if refs and isinstance(refs[0], str):  # a single input is written [name, 0, 0]
            refs = [refs]
        input_names = [ref[0] for ref in refs]
        resolved: dict[str, str] = {}  # this config's layer name → tensor name in the flat graph
        if inputs is not None:
            if len(inputs) != len(input_names):
                raise _refuse(
                    config.get("name", "?"),
                    "Functional",
                    f"called on {len(inputs)} tensors, has {len(input_names)} inputs",
                )
            resolved.update(zip(input_names, inputs))
        for layer in config["layers"]:
            name, cls = layer["name"], layer["class_name"]
            if name in resolved:  # a nested model's own InputLayer: replaced by what fed the model
                continue
            nodes = layer.get("inbound_nodes") or []
            if len(nodes) > 1:
                raise _refuse(name, cls, f"called {len(nodes)} times (a shared layer)")
            sources: list[str] = []
            as_list = False
            if nodes:
                node = nodes[0]
                args, kwargs = node.get("args", []), node.get("kwargs", {}) or {}
                extra = sorted(k for k, v in kwargs.items() if k not in _CALL_KWARGS_IGNORED and v is not None)
                if extra:
                    raise _refuse(name, cls, f"called with argument(s) {', '.join(extra)}")
                if len(args) != 1:
                    raise _refuse(name, cls, f"called with {len(args)} positional arguments")
                arg = args[0]
                as_list = isinstance(arg, list)
                try:
                    refs = [_tensor_ref(a) for a in (arg if as_list else [arg])]
                except ValueError as e:
                    raise _refuse(name, cls, f"an input is {e}") from None
                for src, _node, index in refs:
                    if src not in resolved:
                        raise _refuse(name, cls, f"input {src!r} is not defined before it")
                    outs = resolved[src]
                    if isinstance(outs, list):  # a nested model's outputs
                        outs = outs[index]
                    elif index != 0:
                        raise _refuse(name, cls, f"takes output {index} of {src!r} (multi-output layer)")
                    sources.append(outs)
            if cls in NESTED:
                inner = layer["config"]
                if "input_layers" not in inner:
                    raise _refuse(name, cls, "a nested model without a functional layer graph")
                outs = self.model(inner, sources)
                resolved[name] = outs if len(outs) > 1 else outs[0]
                continue
            if cls not in SUPPORTED:
                raise _refuse(name, cls, f"the layer type is not supported (supported: {', '.join(sorted(SUPPORTED))})")
            if name in self.names:
                raise _refuse(name, cls, "a nested model has a layer of the same name")
            if cls != "InputLayer" and not nodes:
                raise _refuse(name, cls, "layer has no input")
            self.names.add(name)
            self.layers.append(
                {
                    "name": name,
                    "class_name": cls,
                    "config": _clean_config(name, cls, layer.get("config", {})),
                    "inbound": sources,
                    "inbound_is_list": as_list,
                }
            )
            resolved[name] = name
        outputs = config["output_layers"]
        if outputs and isinstance(outputs[0], str):  # a single output: [name, 0, 0]
            outputs = [outputs]
        result = []
        for src, _node, index in outputs:
            outs = resolved[src]
            result.append(outs[index] if isinstance(outs, list) else outs)
        return result


def architecture(config: dict[str, Any]) -> dict[str, Any]:
    """The flat layer graph of a Keras 3 model config (`model.get_config()`), or a FaceedgeError
    naming the first layer tf.keras 2.15 cannot rebuild and why."""
    if "layers" not in config or "input_layers" not in config:
        raise FaceedgeError(
            "the model is not a functional Keras model (no layer graph in its config): "
            "cannot be rebuilt in tf.keras 2.15 for the IMX500"
        )
    flat = _Flattener()
    outputs = flat.model(config, None)
    inputs = [layer["name"] for layer in flat.layers if layer["class_name"] == "InputLayer"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise FaceedgeError(
            f"the model has {len(inputs)} input(s) and {len(outputs)} output(s): the IMX500 "
            "variant needs one image input and one output"
        )
    return {
        "format": FORMAT,
        "name": str(config.get("name", "model")),
        "inputs": inputs,
        "outputs": outputs,
        "layers": flat.layers,
    }


def layer_weights(model: Any) -> dict[str, list[np.ndarray]]:
    """`get_weights()` of every leaf layer of `model` (nested models walked), keyed by layer name."""
    out: dict[str, list[np.ndarray]] = {}

    def walk(m: Any) -> None:
        for layer in m.layers:
            if hasattr(layer, "layers") and layer.__class__.__name__ in NESTED:
                walk(layer)
                continue
            w = layer.get_weights()
            if w:
                out[layer.name] = [np.asarray(a) for a in w]

    walk(model)
    return out


def write(model: Any, out_dir: Path) -> dict[str, Any]:
    """Write arch.json + weights.npz for a Keras 3 model into `out_dir`; returns the architecture.
    Raises FaceedgeError (nothing rebuildable) before anything is written."""
    arch = architecture(model.get_config())
    weights = layer_weights(model)
    names = {layer["name"] for layer in arch["layers"]}
    stray = sorted(set(weights) - names)
    if stray:
        raise FaceedgeError(
            f"layer {stray[0]!r} has weights but is not in the model's graph: cannot be rebuilt "
            "in tf.keras 2.15 for the IMX500"
        )
    arch["weight_arrays"] = sum(len(w) for w in weights.values())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / ARCH_FILE).write_text(json.dumps(arch, indent=1) + "\n")
    np.savez(out_dir / WEIGHTS_FILE, **{f"{name}/{i}": a for name, ws in weights.items() for i, a in enumerate(ws)})
    return arch
