"""Typed training config: YAML file + `--set key.path=value` overrides → a validated `TrainConfig`.

Every section is a pydantic model with ``extra="forbid"`` (``device.validation.Strict``), so a typo is
an error that names the full dotted key. The resolved config is written into each run directory as
``config.yaml`` and is enough to repeat the run.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from device.errors import FaceedgeError
from device.validation import Strict

BACKBONES = ("mobilenet_v2", "vgg16", "simple_cnn")  # keys of train.models.BACKBONES (kept here so config needs no TF)


class DataConfig(Strict):
    root: str = Field(
        description="data folder <root>/<label>/<person>/*.jpg, <root>/<label>/*, or a CSV path,label,person"
    )
    holdout_persons: list[str] | int | None = Field(
        None, description="persons held out entirely (names, or a count drawn from split_seed; null = about a quarter)"
    )
    valid_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    seen_holdout_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    split_seed: int = 112
    max_bad_fraction: float = Field(0.05, ge=0.0, le=1.0)
    class_weights: Literal["auto", "on", "off"] = "auto"
    require_persons: bool = Field(
        True,
        description="refuse a layout with no person level and more than two labels (its labels are "
        "probably persons: data.root one level too deep); false for a multi-label set without persons",
    )


class HeadConfig(Strict):
    pooling: Literal["avg", "flatten"] = "avg"
    fc_units: list[int] = Field(
        default_factory=list, description="hidden Dense layers before the output, e.g. [2048, 2048]"
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


# The log's heads: VGG16 runs 1-2 replaced fc6/fc7 with 2048/2048 + Dropout(0.5);
# MobileNetV2 runs 3-4 had one Dense(1) on the pooled features (1,281 trainable parameters).
DEFAULT_HEADS = {
    "mobilenet_v2": {"pooling": "avg", "fc_units": [], "dropout": 0.0},
    "vgg16": {"pooling": "flatten", "fc_units": [2048, 2048], "dropout": 0.5},
    "simple_cnn": {"pooling": "avg", "fc_units": [], "dropout": 0.3},
}


class ModelConfig(Strict):
    backbone: Literal["mobilenet_v2", "vgg16", "simple_cnn"] = "mobilenet_v2"
    alpha: float = Field(1.0, gt=0.0, description="width multiplier (mobilenet_v2, simple_cnn)")
    input_size: int = Field(224, ge=32, le=1024)
    weights: str = Field("imagenet", description="imagenet | none | path to a .h5/.weights.h5 backbone weights file")
    freeze_backbone: bool = Field(True, description="false: the whole backbone trains from the first epoch")
    bn_momentum: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="BatchNorm momentum of a backbone trained from scratch (weights none, not frozen); null: "
        "0.9 (Keras' MobileNetV2 0.999 leaves the moving statistics unusable after a short run). "
        "Pretrained or frozen backbones run BatchNorm in inference mode, where it does not apply",
    )
    head: HeadConfig | None = Field(None, description="null: the backbone's default head (see DEFAULT_HEADS)")

    @field_validator("weights", mode="before")
    @classmethod
    def _weights(cls, v) -> str:
        v = "none" if v is None else str(v).strip()
        if v.lower() in ("imagenet", "none", "null", ""):
            return "none" if v.lower() in ("none", "null", "") else "imagenet"
        if not v.endswith(".h5"):
            raise ValueError(f"{v!r}: expected imagenet, none, or a backbone weights file (.h5 / .weights.h5)")
        return v

    @model_validator(mode="before")
    @classmethod
    def _merge_head(cls, data):
        """`head` keys that are given override the backbone's default head; the rest is kept."""
        if isinstance(data, dict) and isinstance(data.get("head"), dict):
            default = DEFAULT_HEADS.get(data.get("backbone", "mobilenet_v2"))
            if default is not None:
                data = {**data, "head": {**default, **data["head"]}}
        return data

    @model_validator(mode="after")
    def _default_head(self) -> ModelConfig:
        if self.head is None:
            self.head = HeadConfig(**DEFAULT_HEADS[self.backbone])
        return self


class AugmentConfig(Strict):
    """The log's six augmentations, each switchable (0, false or null turns one off)."""

    enabled: bool = True
    flip: bool = True
    brightness: float = Field(0.15, ge=0.0, le=1.0, description="max delta, as a fraction of full scale")
    contrast: tuple[float, float] | None = (0.7, 1.3)
    hue: float = Field(0.05, ge=0.0, le=0.5)
    saturation: tuple[float, float] | None = (0.7, 2.0)
    noise: float = Field(0.08, ge=0.0, le=1.0, description="gaussian noise stddev, as a fraction of full scale")

    @field_validator("contrast", "saturation")
    @classmethod
    def _range(cls, v):
        if v is not None and not (0.0 <= v[0] <= v[1]):
            raise ValueError(f"{list(v)}: expected [low, high] with 0 <= low <= high")
        return v

    @property
    def active(self) -> bool:
        return self.enabled and bool(
            self.flip or self.brightness or self.contrast or self.hue or self.saturation or self.noise
        )


class PipelineConfig(Strict):
    cache: Literal["memory", "file", "none"] = "memory"
    shuffle_buffer: int = Field(1000, ge=1)
    prefetch: bool = True
    feature_cache: bool = Field(
        True, description="frozen backbone + no augmentation: train the head on cached features"
    )


class FineTuneConfig(Strict):
    layers: int | Literal["all"] = Field(30, description="unfreeze the top N backbone layers (BatchNorm stays frozen)")
    epochs: int = Field(10, ge=1)
    learning_rate: float = Field(1e-5, gt=0.0)


class TrainingConfig(Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0.0)
    patience: int = Field(
        5,
        ge=0,
        description="early stopping on val_loss, best epoch's weights restored; "
        "0 = off: every epoch runs and the last epoch's weights are kept",
    )
    min_epochs: int = Field(
        0,
        ge=0,
        description="the first N epochs of a phase are neither chosen as best nor can "
        "stop the run (Keras start_from_epoch): a run that sits at chance "
        "for its first epochs is not ended there",
    )
    fine_tune: FineTuneConfig | None = None
    mixed_precision: bool = False
    distribute: Literal["auto", "none", "mirrored"] = "auto"
    seed: int = 0
    deterministic: bool = Field(
        True,
        description="seed Python, NumPy and TensorFlow and switch on TensorFlow op "
        "determinism: the same config, data and seed give the same figures "
        "on the same machine (and thread count)",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="TensorFlow intra- and inter-op threads; null = TensorFlow's "
        "default (the CPUs available). The thread count changes the "
        "figures in the last digits, so a run records it",
    )
    verbose: Literal[0, 1, 2] = Field(1, description="keras progress: 0 silent, 1 progress bar, 2 one line per epoch")


class GateSection(Strict):
    """The floor a model must clear to count as learned: training ends non-zero below it, and the
    conversion gate never publishes such a model (convert.gate)."""

    min_balanced_accuracy: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="on unseen persons (else the seen-person holdout, else valid); null: a "
        "tenth of the way from chance to perfect (0.55 with two labels)",
    )
    significance: float = Field(
        0.05, gt=0.0, lt=1.0, description="level of the exact binomial test 'better than chance'"
    )


class RunConfig(Strict):
    name: str = "run"
    runs_dir: str = "runs"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v) or v.endswith(".incomplete"):
            raise ValueError(f"{v!r}: use letters, digits, '.', '_' and '-' only")
        return v


class TrainConfig(Strict):
    data: DataConfig
    model: ModelConfig = ModelConfig()
    augment: AugmentConfig = AugmentConfig()
    pipeline: PipelineConfig = PipelineConfig()
    training: TrainingConfig = TrainingConfig()
    gate: GateSection = GateSection()
    run: RunConfig = RunConfig()


# ---------------------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    """``training.epochs=3`` → (["training", "epochs"], 3); the value is read as a YAML scalar/list."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise FaceedgeError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. training.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise FaceedgeError(f"--set {text!r}: value is not valid YAML ({str(e).splitlines()[0]})") from None
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    out = copy.deepcopy(raw)
    for text in overrides or []:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                raise FaceedgeError(f"--set {text!r}: {'.'.join(path[: i + 1])} is not a section")
            node = nxt
        node[path[-1]] = value
    return out


def _describe(err: dict) -> str:
    loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith(("function-", "literal[")))
    loc = re.sub(r"\.(int|str|list\[str\]|tuple\[float, float\]|none)\b", "", loc)
    if err["type"] == "extra_forbidden":
        return f"unknown config key {loc!r}"
    if err["type"] == "missing":
        return f"config key {loc!r} is required"
    msg = err["msg"].removeprefix("Value error, ")
    return f"config key {loc!r}: {msg} (got {err.get('input')!r})"


def validate(raw: dict, source: str = "config") -> TrainConfig:
    if not isinstance(raw, dict):
        raise FaceedgeError(f"{source}: expected a mapping of sections (data, model, ...), got {type(raw).__name__}")
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        errors = e.errors()
        # Prefer the most telling error: unknown keys first, then the rest in order.
        errors.sort(key=lambda er: er["type"] != "extra_forbidden")
        raise FaceedgeError(f"{source}: {_describe(errors[0])}") from None


def load_raw(path: str | Path) -> dict:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise FaceedgeError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FaceedgeError(f"{p}: cannot read config ({e})") from None
    except yaml.YAMLError as e:
        raise FaceedgeError(f"{p}: not valid YAML ({' '.join(str(e).split())})") from None
    return raw if raw is not None else {}


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read `path` (YAML), apply `--set` overrides, validate. Errors name the file and the dotted key."""
    raw = load_raw(path) if path is not None else {}
    if not isinstance(raw, dict):
        raise FaceedgeError(f"{path}: expected a mapping of sections (data, model, ...)")
    return validate(apply_overrides(raw, overrides or []), str(path) if path else "config")


def dump_config(cfg: TrainConfig) -> str:
    data = cfg.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
