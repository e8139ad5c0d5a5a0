"""What a conversion starts from: the options, the float model and its model_info.json, the images
to calibrate and verify with, where to write, and the gate's settings; each checked, errors naming
the file and key, before TensorFlow is loaded."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from convert import data as cdata
from convert.gate import DEFAULT_MAX_DROP, DEFAULT_MIN_AGREEMENT, DEFAULT_SIGNIFICANCE, GateConfig
from convert.probe import DEFAULT_TIMEOUT_S
from convert.quantize import DEFAULT_CALIBRATION_STEPS
from device.errors import FaceedgeError
from device.manifest import VARIANTS
from device.validation import Lenient, Meta, Strict, ValidationError, first_error

log = logging.getLogger(__name__)

DEFAULT_VARIANTS = ("int8", "float32")
IMX500 = "imx500"  # opt-in: converted in its own environment (convert/imx500/), verified like the others
DEFAULT_PREPROCESSING = "inside the model; input is raw RGB 0..255"


class ConvertOptions(Strict):
    """Everything `python -m convert` accepts, validated (errors name the key)."""

    run: Path | None = None
    from_model: Path | None = None
    data: Path | None = None
    out: Path | None = None
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    io_dtype: str = "uint8"
    calibration_images: Annotated[int, Meta(ge=0)] = DEFAULT_CALIBRATION_STEPS
    seed: int = 0
    max_drop: Annotated[float, Meta(ge=0.0, le=100.0)] = DEFAULT_MAX_DROP
    min_agreement: Annotated[float, Meta(ge=0.0, le=1.0)] = DEFAULT_MIN_AGREEMENT
    significance: Annotated[float, Meta(gt=0.0, lt=1.0)] | None = None
    min_balanced_accuracy: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    labels: list[str] | None = None
    positive_label: str | None = None
    threshold: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    preprocessing: str | None = None
    child_timeout: Annotated[float, Meta(gt=0)] = DEFAULT_TIMEOUT_S

    def check(self) -> None:
        if not self.variants:
            raise ValueError("variants: give at least one variant")
        bad = [x for x in self.variants if x not in VARIANTS]
        if bad:
            raise ValueError(f"unknown variant {bad[0]!r} (choose from {', '.join(VARIANTS)})")
        self.variants = tuple(dict.fromkeys(self.variants))  # de-duplicated, order kept
        if self.io_dtype not in ("uint8", "int8"):
            raise ValueError(f"io_dtype {self.io_dtype!r}: choose uint8 or int8")


class ModelInfo(Lenient):
    """The part of the training run's model_info.json that conversion reads (other keys ignored)."""

    labels: Annotated[list[str], Meta(min_length=2)]
    positive_label: str | None = None
    output_kind: str = "sigmoid"
    threshold: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.5
    input_size: tuple[int, int] | None = None
    backbone: str = ""
    preprocessing: str = DEFAULT_PREPROCESSING
    resize_method: str = "bilinear"


def options_from(**kw) -> ConvertOptions:
    try:
        return ConvertOptions(**kw)
    except ValidationError as e:
        loc, msg = first_error(e, "(options)")
        raise FaceedgeError(f"option {loc!r}: {msg}") from None


def read_model_info(path: Path) -> ModelInfo:
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FaceedgeError(f"{path}: not a readable JSON file ({e})") from None
    try:
        return ModelInfo.model_validate(raw)
    except ValidationError as e:
        loc, msg = first_error(e, "(root)")
        raise FaceedgeError(f"{path}: key {loc!r}: {msg}") from None


@dataclass
class Source:
    model_path: Path
    info: ModelInfo | None
    data: cdata.ConvertData
    out: Path
    run_dir: Path | None
    description: str


def resolve_source(opts: ConvertOptions) -> Source:
    """The model file, its model_info (if any), the images, and where to write; all checked."""
    from convert.export import check_model_path

    if (opts.run is None) == (opts.from_model is None):
        raise FaceedgeError("give exactly one of --run RUN_DIR or --from MODEL")
    if opts.run is not None:
        run = opts.run
        if not run.exists():
            raise FaceedgeError(f"{run}: run directory not found")
        if not run.is_dir():
            raise FaceedgeError(f"{run}: not a directory (give a training run directory)")
        run = run.resolve()
        model = run / "model.keras"
        if not model.exists():
            raise FaceedgeError(f"{model}: run has no model (did training finish?)")
        check_model_path(model)
        info_path = run / "model_info.json"
        if not info_path.is_file():
            raise FaceedgeError(f"{info_path}: run has no model_info.json (did training finish?)")
        info = read_model_info(info_path)
        if opts.data is not None:
            data = cdata.load_data_arg(opts.data)
        else:
            data = cdata.load_run_splits(run / "splits.csv")
        return Source(model, info, data, (opts.out or run).resolve(), run, str(run))
    model = opts.from_model
    check_model_path(model)
    if opts.data is None:
        raise FaceedgeError(f"{model}: --from needs --data DIR_OR_CSV (images to calibrate and verify with)")
    if opts.out is None:
        raise FaceedgeError(f"{model}: --from needs --out DIR (where export/ and convert.json go)")
    info_path = (model if model.is_dir() else model.parent) / "model_info.json"
    info = read_model_info(info_path) if info_path.is_file() else None
    data = cdata.load_data_arg(opts.data, seed=None)
    return Source(model.resolve(), info, data, opts.out.resolve(), None, str(model.resolve()))


def model_head(info: ModelInfo | None, opts: ConvertOptions, data_labels: list[str], units: int, model: Path) -> dict:
    """labels, positive_label, output_kind, threshold: model_info first, then flags, then the data."""
    labels = list(opts.labels or (info.labels if info else data_labels))
    kind = "sigmoid" if units == 1 else "softmax"
    if info is not None and info.output_kind != kind:
        raise FaceedgeError(f"{model}: model_info says {info.output_kind} but the model has {units} output unit(s)")
    if kind == "softmax" and len(labels) != units:
        raise FaceedgeError(f"{model}: {units} output units but {len(labels)} labels {labels}")
    if kind == "sigmoid" and len(labels) != 2:
        raise FaceedgeError(f"{model}: a 1-unit (sigmoid) model needs exactly 2 labels, got {labels}")
    positive = opts.positive_label or (info.positive_label if info else None)
    if kind == "sigmoid" and positive is None:
        positive = sorted(labels)[1]  # Keras' directory convention: class 1 = the second label, sorted
        log.warning("%s: no positive label given; assuming %r (sorted label 1; set --positive_label)", model, positive)
    if positive is not None and positive not in labels:
        raise FaceedgeError(f"positive_label {positive!r} is not one of the labels {labels}")
    threshold = opts.threshold if opts.threshold is not None else (info.threshold if info else 0.5)
    unknown = sorted(set(data_labels) - set(labels))
    if unknown:
        raise FaceedgeError(f"the data has label(s) {unknown} the model does not know (model labels {labels})")
    return {
        "labels": labels,
        "positive_label": positive if kind == "sigmoid" else None,
        "output_kind": kind,
        "threshold": float(threshold),
    }


def gate_config(opts: ConvertOptions, run_dir: Path | None) -> GateConfig:
    """The gate's settings: the options first, then the run's config.yaml `gate:` section (the floor the
    training stage applied), then the defaults."""
    run_gate = None
    cfg_path = run_dir / "config.yaml" if run_dir is not None else None
    if cfg_path is not None and cfg_path.is_file():
        from train.config import load_raw, validate

        try:
            run_gate = validate(load_raw(cfg_path), str(cfg_path)).gate
        except FaceedgeError as e:
            log.warning("%s: gate settings not read (%s); using the defaults", cfg_path, e)
    significance = (
        opts.significance
        if opts.significance is not None
        else (run_gate.significance if run_gate is not None else DEFAULT_SIGNIFICANCE)
    )
    floor = (
        opts.min_balanced_accuracy
        if opts.min_balanced_accuracy is not None
        else (run_gate.min_balanced_accuracy if run_gate is not None else None)
    )
    return GateConfig(
        max_drop=opts.max_drop, min_agreement=opts.min_agreement, significance=significance, min_balanced_accuracy=floor
    )
