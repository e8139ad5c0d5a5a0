"""A model to benchmark the device with: int8 MobileNetV2 1.0 at 224x224, random weights.

The device's figures (latency, fps, memory, start-up) depend on the network's shape, not on what it
learned, so `make bench-model` builds the project's MobileNetV2 classifier (train.models, weights
none: nothing is downloaded), quantizes it to int8 with uint8 input and output on random
representative images, and writes ``<out>/export/int8/`` (model.tflite + manifest.json) for
``make bench RUN=<out>``. Its decisions mean nothing; it never goes through the conversion gate, and
its manifest says so (``notes``).

    python -m convert.benchmodel runs/bench-mobilenet_v2-224
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from device.errors import FaceedgeError

MARKER = "benchmodel.json"
NOTE = "benchmark model: random weights, not trained, not gated (python -m convert.benchmodel)"


def build(out: Path, *, size: int = 224, alpha: float = 1.0, seed: int = 0) -> Path:
    """Write <out>/export/int8/{model.tflite,manifest.json} and <out>/benchmodel.json; return the model dir."""
    import tensorflow as tf

    from device.files import atomic_write_bytes, sha256_file
    from device.manifest import Manifest, Preprocessing, TensorSpec, write_manifest
    from device.runtime import load_runtime
    from train.config import ModelConfig
    from train.models import build_model

    tf.keras.utils.set_random_seed(seed)
    cfg = ModelConfig(backbone="mobilenet_v2", alpha=alpha, input_size=size, weights="none")
    built = build_model(cfg, 2)
    rng = np.random.default_rng(seed)
    rep = rng.integers(0, 256, (32, size, size, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="faceedge-benchmodel-") as tmp:
        built.model.export(tmp, verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([r[None]] for r in rep)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
        blob = conv.convert()
    mdir = out / "export" / "int8"
    mdir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(mdir / "model.tflite", blob)
    interp = load_runtime().interpreter_cls(model_path=str(mdir / "model.tflite"))
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]

    def spec(d: dict) -> TensorSpec:
        return TensorSpec(
            dtype=np.dtype(d["dtype"]).name,
            shape=[int(s) for s in d["shape"]],
            scale=float(d["quantization"][0]),
            zero_point=int(d["quantization"][1]),
        )

    write_manifest(
        mdir,
        Manifest(
            variant="int8",
            sha256=sha256_file(mdir / "model.tflite"),
            size_bytes=len(blob),
            labels=["closed", "open"],
            positive_label="open",
            output_kind="sigmoid",
            input_height=size,
            input_width=size,
            input=spec(i),
            output=spec(o),
            preprocessing=Preprocessing(in_model=built.spec.preprocessing),
            backbone="mobilenet_v2",
            tensorflow_version=tf.__version__,
            converter="tf.lite.TFLiteConverter (int8, random representative data)",
            notes=NOTE,
        ),
    )
    # the mark `make clean` knows a generated folder by (train/clean.py RUN_MARKERS)
    marker = {"made_by": "convert.benchmodel", "size": size, "alpha": alpha, "seed": seed, "note": NOTE}
    atomic_write_bytes(out / MARKER, (json.dumps(marker, indent=2) + "\n").encode())
    return mdir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m convert.benchmodel", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the run-like folder to write (export/int8/ inside)")
    p.add_argument("--size", type=int, default=224, help="input side in pixels (default: 224)")
    p.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width multiplier (default: 1.0)")
    args = p.parse_args(argv)
    try:
        mdir = build(args.out, size=args.size, alpha=args.alpha)
    except FaceedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"wrote {mdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
