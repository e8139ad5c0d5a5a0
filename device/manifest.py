"""The model manifest: everything the device needs to know about a `.tflite` file.

The conversion stage writes one `manifest.json` beside each model it publishes; the device reads
it and nothing about the model is duplicated by hand in the device config. Layout on disk::

    <model dir>/model.tflite
    <model dir>/manifest.json

A run directory holds such model dirs under `export/<variant>/` (int8, float32, float16, and imx500:
the AI Camera's `packerOut.zip` as `model_file`, packaged on the Pi into `network.rpk`, device/imx500.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal

from device.errors import FaceedgeError
from device.files import atomic_write_bytes, sha256_file
from device.validation import Meta, Strict, ValidationError, field, first_error

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
MODEL_NAME = "model.tflite"
VARIANTS = ("int8", "float32", "float16", "imx500")


class TensorSpec(Strict):
    dtype: Literal["uint8", "int8", "float32", "float16"]
    shape: list[int]
    scale: float = 0.0  # 0.0 = not quantized
    zero_point: int = 0


class Preprocessing(Strict):
    """The preprocessing contract between training, conversion and device.

    The model takes raw RGB pixels in [0, 255] (`input_range`); scaling to what the backbone
    wants is a layer inside the model (`in_model`, e.g. "mobilenet_v2: x/127.5 - 1").
    The device must only crop and resize with `resize_method`.
    """

    color_order: Literal["RGB"] = "RGB"
    input_range: tuple[float, float] = (0.0, 255.0)
    in_model: str = ""
    resize_method: Literal["bilinear", "area"] = "bilinear"
    crop: Literal["full", "center", "face"] = "full"


class Manifest(Strict, kw_only=True):
    schema_version: int = SCHEMA_VERSION
    variant: Literal["int8", "float32", "float16", "imx500"]
    model_file: str = MODEL_NAME
    sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
    size_bytes: Annotated[int, Meta(gt=0)]
    labels: Annotated[list[str], Meta(min_length=2)]
    positive_label: str | None = None  # binary models: the label a sigmoid output of 1.0 means
    output_kind: Literal["sigmoid", "softmax"]
    threshold: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.5
    input_height: Annotated[int, Meta(gt=0)]
    input_width: Annotated[int, Meta(gt=0)]
    input: TensorSpec
    output: TensorSpec
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    source_run: str = ""
    backbone: str = ""
    tensorflow_version: str = ""
    converter: str = ""
    min_runtime_version: str = ""
    created: str = ""
    status: Literal["published", "rejected"] = "published"
    notes: str = ""

    def check(self) -> None:
        if self.output_kind == "sigmoid":
            if len(self.labels) != 2:
                raise ValueError("a sigmoid model has exactly two labels")
            if self.positive_label not in self.labels:
                raise ValueError(f"positive_label {self.positive_label!r} is not one of {self.labels}")

    @property
    def negative_label(self) -> str | None:
        if self.output_kind != "sigmoid":
            return None
        return next(lbl for lbl in self.labels if lbl != self.positive_label)


def resolve_model_dir(path: str | os.PathLike, variant: str = "int8") -> Path:
    """Accept a model dir, a manifest/model file, or a run dir (→ `export/<variant>/`)."""
    p = Path(path)
    if p.is_file():
        p = p.parent
    if (p / MANIFEST_NAME).is_file():
        return p
    candidate = p / "export" / variant
    if (candidate / MANIFEST_NAME).is_file():
        return candidate
    if not p.exists():
        raise FaceedgeError(f"{p}: no such model directory")
    if (p / "export" / f"{variant}.rejected" / MANIFEST_NAME).is_file():
        raise FaceedgeError(
            f"{p}: no published model under export/{variant}/: the conversion gate rejected it "
            f"(export/{variant}.rejected/; the reasons are in convert.json)"
        )
    raise FaceedgeError(f"{p}: no {MANIFEST_NAME} here nor under export/{variant}/ (run `make convert` first)")


def load_manifest(path: str | os.PathLike, *, verify_sha256: bool = True) -> tuple[Manifest, Path]:
    """Read and validate a manifest; returns it and the absolute path of its model file.

    Raises FaceedgeError naming the file and the failed check.
    """
    p = Path(path)
    mpath = p if p.name == MANIFEST_NAME else resolve_model_dir(p) / MANIFEST_NAME
    try:
        raw = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise FaceedgeError(f"{mpath}: manifest not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FaceedgeError(f"{mpath}: not a readable JSON manifest ({e})") from None
    try:
        man = Manifest.model_validate(raw)
    except ValidationError as e:
        loc, msg = first_error(e)
        raise FaceedgeError(f"{mpath}: key {loc!r}: {msg}") from None
    model_path = (mpath.parent / man.model_file).resolve()
    if not model_path.is_file():
        raise FaceedgeError(f"{model_path}: model file named by {mpath} is missing")
    if verify_sha256:
        digest = sha256_file(model_path)
        if digest != man.sha256:
            raise FaceedgeError(f"{model_path}: sha256 {digest[:12]}… does not match manifest {man.sha256[:12]}…")
    if man.status != "published":
        raise FaceedgeError(f"{mpath}: model was {man.status} by the conversion gate ({man.notes})")
    return man, model_path


def write_manifest(model_dir: str | os.PathLike, manifest: Manifest) -> Path:
    path = Path(model_dir) / MANIFEST_NAME
    atomic_write_bytes(path, (manifest.model_dump_json(indent=2) + "\n").encode())
    return path
