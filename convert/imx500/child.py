"""The imx500 conversion, run INSIDE the imx500 environment (`make setup-imx500`: TensorFlow 2.15,
Sony's Model Compression Toolkit 2.5.1 and imx500-converter 3.19.2, Java 17).

    .venv-imx500/bin/python -I convert/imx500/child.py JOB_DIR

A standalone script on purpose: that environment has neither this project nor its dependencies
(pydantic, Keras 3, ...), only numpy, TensorFlow 2.15 and Sony's tools. The host side
(`convert/imx500/env.py`) writes the job and reads the result; everything crosses as plain files:

    JOB_DIR/job.json          {"calibration_batch": 16}
    JOB_DIR/arch.json         the layer graph (convert/imx500/handoff.py)
    JOB_DIR/weights.npz       each layer's get_weights(), "<layer>/<i>"
    JOB_DIR/calibration.npy   float32 (N, H, W, 3) raw RGB 0..255, the training decode/resize
    JOB_DIR/verify/<split>.npy  uint8 (N, H, W, 3) per split: the device-preprocessed images

What it does:

1. rebuilds the model in tf.keras 2.15 from the graph and sets every layer's weights; a Rescaling
   layer (the in-model preprocessing, which the converter has no op for) becomes the same affine map
   as a 1x1 depthwise convolution, so the sensor still takes raw 0..255 pixels;
2. quantizes it with MCT post-training quantization for the ``imx500`` target platform
   capabilities, calibrated on the calibration images;
3. exports the quantized model (`mct.exporter.keras_export_model`) and loads that file back as the
   host simulation (`mct.keras_load_quantized_model`): the very model the converter compiles;
4. runs the rebuilt float model and the simulation on every verification split;
5. compiles the exported model with `imxconv-tf` → packerOut.zip, dnnParams.xml, memory report.

Writes JOB_DIR/out/{packerOut.zip, dnnParams.xml, *_MemoryReport.json, qmodel.keras},
JOB_DIR/probabilities.npz ("float/<split>", "imx500/<split>": float32 (N, K)) and JOB_DIR/result.json.
Exit 0, or 2 with one ``error: ...`` line on stderr.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TQDM_DISABLE", "1")  # MCT's progress bars: not in a log

import numpy as np


class ChildError(Exception):
    """One line for the host: what failed, naming the layer, file or tool."""


def log(msg: str) -> None:
    print(f"imx500: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ rebuild


def _rescaling_as_depthwise(tf, name: str, config: dict, x):
    """y = x * scale + offset per channel, as a DepthwiseConv2D(1) (kernel = scale, bias = offset)."""
    channels = int(x.shape[-1])
    scale = np.broadcast_to(np.asarray(config.get("scale", 1.0), np.float32), (channels,))
    offset = np.broadcast_to(np.asarray(config.get("offset", 0.0), np.float32), (channels,))
    layer = tf.keras.layers.DepthwiseConv2D(1, use_bias=True, name=name)
    y = layer(x)
    layer.set_weights([scale.reshape(1, 1, channels, 1).copy(), offset.copy()])
    return y, layer


def rebuild(arch: dict, weights: dict[str, np.ndarray]):
    """The tf.keras 2.15 model of the graph, weights set; (model, arrays transferred)."""
    import tensorflow as tf

    tensors: dict = {}
    preset: set[str] = set()
    for spec in arch["layers"]:
        name, cls, config = spec["name"], spec["class_name"], dict(spec["config"])
        try:
            if cls == "InputLayer":
                shape = config["batch_input_shape"]
                tensors[name] = tf.keras.Input(shape=tuple(shape[1:]), batch_size=shape[0], name=name, dtype="float32")
                continue
            ins = [tensors[s] for s in spec["inbound"]]
            x = ins if spec["inbound_is_list"] else ins[0]
            if cls == "Rescaling":
                tensors[name], _ = _rescaling_as_depthwise(tf, name, config, x)
                preset.add(name)
                continue
            layer = tf.keras.layers.deserialize({"class_name": cls, "config": config})
            tensors[name] = layer(x)
        except (TypeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ChildError(f"layer {name!r} ({cls}) cannot be rebuilt in tf.keras 2.15: {first}") from None
    model = tf.keras.Model(
        [tensors[n] for n in arch["inputs"]], [tensors[n] for n in arch["outputs"]], name=arch.get("name", "model")
    )
    by_layer: dict[str, list[np.ndarray]] = {}
    for key in sorted(weights, key=lambda k: (k.rsplit("/", 1)[0], int(k.rsplit("/", 1)[1]))):
        by_layer.setdefault(key.rsplit("/", 1)[0], []).append(weights[key])
    transferred = 0
    for layer in model.layers:
        if layer.name in preset or not layer.weights:
            continue
        arrays = by_layer.pop(layer.name, None)
        if arrays is None:
            raise ChildError(
                f"layer {layer.name!r} ({type(layer).__name__}) has weights in tf.keras 2.15 but none were handed over"
            )
        want = [tuple(w.shape) for w in layer.weights]
        got = [tuple(a.shape) for a in arrays]
        if want != got:
            raise ChildError(
                f"layer {layer.name!r} ({type(layer).__name__}): tf.keras 2.15 expects weights "
                f"{want}, the Keras model has {got}"
            )
        layer.set_weights(arrays)
        transferred += len(arrays)
    if by_layer:
        raise ChildError(
            f"weights of layer {next(iter(by_layer))!r} were handed over but the rebuilt model has "
            "no such layer with weights"
        )
    return model, transferred


# --------------------------------------------------------------------------------------- quantize


def predict(model, images: np.ndarray, batch: int = 32) -> np.ndarray:
    out = [
        np.asarray(model(images[i : i + batch].astype(np.float32), training=False), np.float32)
        for i in range(0, len(images), batch)
    ]
    k = int(model.output_shape[-1])
    return np.concatenate(out).reshape(len(images), -1) if out else np.zeros((0, k), np.float32)


def quantize(model, calibration: np.ndarray, batch: int):
    import model_compression_toolkit as mct

    if len(calibration) == 0:
        raise ChildError("calibration set is empty: no representative images to quantize with")

    def representative():
        for i in range(0, len(calibration), batch):
            yield [calibration[i : i + batch].astype(np.float32)]

    tpc = mct.get_target_platform_capabilities("tensorflow", "imx500", target_platform_version="v1")
    try:
        qmodel, _info = mct.ptq.keras_post_training_quantization(
            model, representative, target_platform_capabilities=tpc
        )
    except Exception as e:  # noqa: BLE001 - MCT raises many kinds for an unsupported graph
        raise ChildError(f"MCT post-training quantization failed ({type(e).__name__}: {_first(e)})") from None
    return qmodel


def _first(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else ""


# ---------------------------------------------------------------------------------------- compile


def compile_for_imx500(qmodel_file: Path, out: Path) -> dict:
    """imxconv-tf on the exported model; returns paths and the parsed reports."""
    conv = Path(sys.executable).with_name("imxconv-tf")
    if not conv.is_file():
        raise ChildError(f"{conv}: imxconv-tf not found in the imx500 environment (make setup-imx500)")
    if shutil.which("java") is None:
        raise ChildError("imxconv-tf needs Java 17+ on PATH: apt install openjdk-17-jre-headless (make setup-imx500)")
    cmd = [str(conv), "-i", str(qmodel_file), "-o", str(out), "--report-size-unit", "B", "--overwrite-output"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    if proc.returncode != 0 or not (out / "packerOut.zip").is_file():
        errors = [ln.split("ERROR :", 1)[1].split(" [/", 1)[0].strip() for ln in text.splitlines() if "ERROR :" in ln]
        last = (errors or [ln for ln in text.splitlines() if ln.strip()] or [f"exit {proc.returncode}"])[-1]
        raise ChildError(f"imxconv-tf failed (exit {proc.returncode}): {last}")
    reports = sorted(out.glob("*_MemoryReport.json"))
    if not reports or not (out / "dnnParams.xml").is_file():
        raise ChildError(f"imxconv-tf wrote no memory report or dnnParams.xml into {out}")
    memory = json.loads(reports[0].read_text())["Memory Report"]
    version = next(
        (
            ln.split("Running version", 1)[1].split("[", 1)[0].strip()
            for ln in text.splitlines()
            if "Running version" in ln
        ),
        "",
    )
    return {
        "seconds": seconds,
        "memory": memory,
        "tensors": dnn_tensors(out / "dnnParams.xml"),
        "memory_report_file": reports[0].name,
        "converter_version": version,
    }


def dnn_tensors(path: Path) -> dict:
    """Input/output tensors of dnnParams.xml: format (signed/unsigned), bits, scale, shift, dimensions."""
    root = ET.parse(path).getroot()

    def tensor(el) -> dict:
        dims = sorted(el.iter("dimension"), key=lambda d: int(d.get("ordinal")))
        return {
            "name": el.get("name"),
            "format": el.get("format"),
            "bits": int(el.get("bitsPerElement")),
            "scale": float(el.get("scale")),
            "shift": int(el.get("shift")),
            "dimensions": [int(d.get("size")) for d in dims],
        }

    ins, outs = list(root.iter("inputTensor")), list(root.iter("outputTensor"))
    if len(ins) != 1 or len(outs) != 1:
        raise ChildError(f"{path}: {len(ins)} input and {len(outs)} output tensors (expected one of each)")
    l2 = root.find(".//l2memory")
    return {
        "input": tensor(ins[0]),
        "output": tensor(outs[0]),
        "l2memory": {k: int(v) for k, v in (l2.attrib.items() if l2 is not None else [])},
    }


# ------------------------------------------------------------------------------------------- main


def run(job_dir: Path) -> dict:
    import model_compression_toolkit as mct
    import tensorflow as tf

    job = json.loads((job_dir / "job.json").read_text())
    out = job_dir / "out"
    out.mkdir(exist_ok=True)
    timings = {}
    t0 = time.perf_counter()
    arch = json.loads((job_dir / "arch.json").read_text())
    with np.load(job_dir / "weights.npz") as w:
        weights = {k: w[k] for k in w.files}
    model, transferred = rebuild(arch, weights)
    timings["rebuild"] = time.perf_counter() - t0
    log(
        f"rebuilt {arch.get('name')} in tf.keras (TensorFlow {tf.__version__}): {len(model.layers)} layers, "
        f"{transferred} weight arrays set"
    )

    splits = {p.stem: np.load(p, mmap_mode="r") for p in sorted((job_dir / "verify").glob("*.npy"))}
    calibration = np.load(job_dir / "calibration.npy", mmap_mode="r")
    probs: dict[str, np.ndarray] = {f"float/{s}": predict(model, x) for s, x in splits.items()}

    t0 = time.perf_counter()
    qmodel = quantize(model, calibration, int(job.get("calibration_batch", 16)))
    qfile = out / "qmodel.keras"
    mct.exporter.keras_export_model(model=qmodel, save_model_path=str(qfile))
    simulation = mct.keras_load_quantized_model(str(qfile))
    timings["quantize"] = time.perf_counter() - t0
    log(
        f"quantized with MCT {mct.__version__} (imx500 TPC v1) on {len(calibration)} images "
        f"in {timings['quantize']:.1f}s"
    )

    t0 = time.perf_counter()
    for s, x in splits.items():
        probs[f"imx500/{s}"] = predict(simulation, x)
    timings["simulate"] = time.perf_counter() - t0

    compiled = compile_for_imx500(qfile, out)
    timings["compile"] = compiled.pop("seconds")
    mem = compiled["memory"]
    log(
        f"compiled with imxconv-tf {compiled['converter_version']} in {timings['compile']:.1f}s: memory "
        f"{mem.get('Memory Usage')} of {mem.get('Total Memory Available On Chip')}, "
        f"fit in chip {mem.get('Fit In Chip')}"
    )

    np.savez(job_dir / "probabilities.npz", **probs)
    result = {
        "ok": True,
        "weight_arrays": transferred,
        "layers": len(model.layers),
        "calibration_images": int(len(calibration)),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "mct": mct.__version__,
            "imx500_converter": compiled.pop("converter_version"),
        },
        "target_platform": "imx500 v1",
        **compiled,
    }
    (job_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -I child.py JOB_DIR", file=sys.stderr)
        return 2
    try:
        run(Path(argv[0]))
    except ChildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a bug or a tool's surprise: the trace for the log, one line last
        import traceback

        traceback.print_exc()
        print(f"error: unexpected {type(e).__name__} in the imx500 conversion: {_first(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
