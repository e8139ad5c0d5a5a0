"""Helpers for the AI Camera tests: an imx500 model dir as the conversion publishes it, and the
fake camera's scene built from a model's probabilities with its output quantization."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from device.files import sha256_file
from device.manifest import Manifest, TensorSpec, write_manifest
from tests.fakes.imx500 import sensor_floats

OUTPUT_SCALE = 1 / 256  # what imxconv-tf gives a sigmoid output: unsigned 8 bit, scale 2^-8


def make_imx500_dir(root: Path, *, size: int = 32, packaged: bool = True, labels=("closed", "open")) -> Path:
    """export/imx500/ as convert publishes it (packerOut.zip, manifest.json, labels.txt), plus the
    network.rpk that imx500-package makes on the Pi (its content is the fake sensor's business)."""
    mdir = root / "imx500"
    mdir.mkdir(parents=True)
    with zipfile.ZipFile(mdir / "packerOut.zip", "w") as z:
        z.writestr("dnnParams.xml", "<dnnParams/>")
    (mdir / "labels.txt").write_text("\n".join(labels) + "\n")
    sigmoid = len(labels) == 2
    man = Manifest(
        variant="imx500",
        model_file="packerOut.zip",
        sha256=sha256_file(mdir / "packerOut.zip"),
        size_bytes=(mdir / "packerOut.zip").stat().st_size,
        labels=list(labels),
        positive_label=labels[1] if sigmoid else None,
        output_kind="sigmoid" if sigmoid else "softmax",
        threshold=0.5,
        input_height=size,
        input_width=size,
        input=TensorSpec(dtype="uint8", shape=[1, size, size, 3], scale=1.0, zero_point=0),
        output=TensorSpec(dtype="uint8", shape=[1, 1 if sigmoid else len(labels)], scale=OUTPUT_SCALE, zero_point=0),
        converter="tests/helpers/imx500.py",
    )
    write_manifest(mdir, man)
    if packaged:
        (mdir / "network.rpk").write_bytes(b"fake rpk")
    return mdir


def scene(images: np.ndarray, probabilities: np.ndarray, scale: float = OUTPUT_SCALE) -> list:
    """(image, [output tensor]) pairs for the fake sensor: each probability as the sensor's uint8
    output dequantized (what libcamera hands over)."""
    probs = np.asarray(probabilities, np.float64).reshape(len(images), -1)
    return [(img, [sensor_floats(p, scale, 0)]) for img, p in zip(images, probs)]
