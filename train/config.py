"""Typed training config: YAML file + `--set key.path=value` overrides → a validated `TrainConfig`.

Every section is a typed model that rejects unknown keys (``device.validation.Strict``), so a typo is
an error that names the full dotted key. The resolved config is written into each run directory as
``config.yaml`` and is enough to repeat the run.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from device.errors import FaceedgeError
from device.validation import Meta, Strict, ValidationError, field, invalid

BACKBONES = ("mobilenet_v2", "vgg16", "simple_cnn")  # keys of train.models.BACKBONES (kept here so config needs no TF)


class DataConfig(Strict):
    root: Annotated[
        str, Meta(description="data folder <root>/<label>/<person>/*.jpg, <root>/<label>/*, or a CSV path,label,person")
    ]
    holdout_persons: (
        Annotated[
            list[str] | int,
            Meta(description="persons held out entirely (names, or a count drawn from split_seed; null: a quarter)"),
        ]
        | None
    ) = None
    valid_fraction: Annotated[float, Meta(ge=0.0, lt=1.0)] = 0.2
    seen_holdout_fraction: Annotated[float, Meta(ge=0.0, lt=1.0)] = 0.1
    split_seed: int = 112
    max_bad_fraction: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.05
    class_weights: Literal["auto", "on", "off"] = "auto"
    require_persons: Annotated[
        bool,
        Meta(
            description="refuse a layout with no person level and more than two labels (its labels are "
            "probably persons: data.root one level too deep); false for a multi-label set without persons"
        ),
    ] = True


class HeadConfig(Strict):
    """A key left out (None) takes the backbone's default head (DEFAULT_HEADS, filled in by ModelConfig)."""

    pooling: Literal["avg", "flatten"] | None = None
    fc_units: (
        Annotated[list[int], Meta(description="hidden Dense layers before the output, e.g. [2048, 2048]")] | None
    ) = None
    dropout: Annotated[float, Meta(ge=0.0, lt=1.0)] | None = None


# The log's heads: VGG16 runs 1-2 replaced fc6/fc7 with 2048/2048 + Dropout(0.5);
# MobileNetV2 runs 3-4 had one Dense(1) on the pooled features (1,281 trainable parameters).
DEFAULT_HEADS = {
    "mobilenet_v2": {"pooling": "avg", "fc_units": [], "dropout": 0.0},
    "vgg16": {"pooling": "flatten", "fc_units": [2048, 2048], "dropout": 0.5},
    "simple_cnn": {"pooling": "avg", "fc_units": [], "dropout": 0.3},
}


class ModelConfig(Strict):
    backbone: Literal["mobilenet_v2", "vgg16", "simple_cnn"] = "mobilenet_v2"
    alpha: Annotated[float, Meta(gt=0.0, description="width multiplier (mobilenet_v2, simple_cnn)")] = 1.0
    input_size: Annotated[int, Meta(ge=32, le=1024)] = 224
    weights: (
        Annotated[str, Meta(description="imagenet | none | path to a .h5/.weights.h5 backbone weights file")] | None
    ) = "imagenet"
    freeze_backbone: Annotated[bool, Meta(description="false: the whole backbone trains from the first epoch")] = True
    bn_momentum: (
        Annotated[
            float,
            Meta(
                gt=0.0,
                lt=1.0,
                description="BatchNorm momentum of a backbone trained from scratch (weights none, not frozen); null: "
                "0.9 (Keras' MobileNetV2 0.999 leaves the moving statistics unusable after a short run). "
                "Pretrained or frozen backbones run BatchNorm in inference mode, where it does not apply",
            ),
        ]
        | None
    ) = None
    head: Annotated[HeadConfig, Meta(description="null: the backbone's default head (see DEFAULT_HEADS)")] | None = None

    def check(self) -> None:
        v = "none" if self.weights is None else self.weights.strip()
        if v.lower() in ("imagenet", "none", "null", ""):
            v = "none" if v.lower() in ("none", "null", "") else "imagenet"
        elif not v.endswith(".h5"):
            invalid("weights", f"{v!r}: expected imagenet, none, or a backbone weights file (.h5 / .weights.h5)")
        self.weights = v
        # `head` keys that are given override the backbone's default head; the rest is kept
        given = {} if self.head is None else {k: v for k, v in self.head.model_dump().items() if v is not None}
        if self.head is None or len(given) < len(HeadConfig.field_names()):
            self.head = HeadConfig(**{**DEFAULT_HEADS[self.backbone], **given})


class AugmentConfig(Strict):
    """The log's six augmentations, each switchable (0, false or null turns one off)."""

    enabled: bool = True
    flip: bool = True
    brightness: Annotated[float, Meta(ge=0.0, le=1.0, description="max delta, as a fraction of full scale")] = 0.15
    contrast: tuple[float, float] | None = (0.7, 1.3)
    hue: Annotated[float, Meta(ge=0.0, le=0.5)] = 0.05
    saturation: tuple[float, float] | None = (0.7, 2.0)
    noise: Annotated[float, Meta(ge=0.0, le=1.0, description="gaussian noise stddev, as a fraction of full scale")] = (
        0.08
    )

    def check(self) -> None:
        for name in ("contrast", "saturation"):
            v = getattr(self, name)
            if v is not None and not (0.0 <= v[0] <= v[1]):
                invalid(name, f"{list(v)}: expected [low, high] with 0 <= low <= high")

    @property
    def active(self) -> bool:
        return self.enabled and bool(
            self.flip or self.brightness or self.contrast or self.hue or self.saturation or self.noise
        )


class PipelineConfig(Strict):
    cache: Literal["memory", "file", "none"] = "memory"
    shuffle_buffer: Annotated[int, Meta(ge=1)] = 1000
    prefetch: bool = True
    feature_cache: Annotated[
        bool, Meta(description="frozen backbone + no augmentation: train the head on cached features")
    ] = True


class FineTuneConfig(Strict):
    layers: Annotated[
        int | Literal["all"], Meta(description="unfreeze the top N backbone layers (BatchNorm stays frozen)")
    ] = 30
    epochs: Annotated[int, Meta(ge=1)] = 10
    learning_rate: Annotated[float, Meta(gt=0.0)] = 1e-5


class TrainingConfig(Strict):
    epochs: Annotated[int, Meta(ge=1)] = 10
    batch_size: Annotated[int, Meta(ge=1)] = 32
    learning_rate: Annotated[float, Meta(gt=0.0)] = 1e-3
    patience: Annotated[
        int,
        Meta(
            ge=0,
            description="early stopping on val_loss, best epoch's weights restored; "
            "0 = off: every epoch runs and the last epoch's weights are kept",
        ),
    ] = 5
    min_epochs: Annotated[
        int,
        Meta(
            ge=0,
            description="the first N epochs of a phase are neither chosen as best nor can "
            "stop the run (Keras start_from_epoch): a run that sits at chance "
            "for its first epochs is not ended there",
        ),
    ] = 0
    fine_tune: FineTuneConfig | None = None
    mixed_precision: bool = False
    distribute: Literal["auto", "none", "mirrored"] = "auto"
    seed: int = 0
    deterministic: Annotated[
        bool,
        Meta(
            description="seed Python, NumPy and TensorFlow and switch on TensorFlow op "
            "determinism: the same config, data and seed give the same figures "
            "on the same machine (and thread count)"
        ),
    ] = True
    threads: (
        Annotated[
            int,
            Meta(
                ge=1,
                description="TensorFlow intra- and inter-op threads; null = TensorFlow's "
                "default (the CPUs available). The thread count changes the "
                "figures in the last digits, so a run records it",
            ),
        ]
        | None
    ) = None
    verbose: Annotated[
        Literal[0, 1, 2], Meta(description="keras progress: 0 silent, 1 progress bar, 2 one line per epoch")
    ] = 1


class GateSection(Strict):
    """The floor a model must clear to count as learned: training ends non-zero below it, and the
    conversion gate never publishes such a model (convert.gate)."""

    min_balanced_accuracy: (
        Annotated[
            float,
            Meta(
                ge=0.0,
                le=1.0,
                description="on unseen persons (else the seen-person holdout, else valid); null: a "
                "tenth of the way from chance to perfect (0.55 with two labels)",
            ),
        ]
        | None
    ) = None
    significance: Annotated[
        float, Meta(gt=0.0, lt=1.0, description="level of the exact binomial test 'better than chance'")
    ] = 0.05


class RunConfig(Strict):
    name: str = "run"
    runs_dir: str = "runs"

    def check(self) -> None:
        v = self.name
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v) or v.endswith(".incomplete"):
            invalid("name", f"{v!r}: use letters, digits, '.', '_' and '-' only")


class TrainConfig(Strict):
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    gate: GateSection = field(default_factory=GateSection)
    run: RunConfig = field(default_factory=RunConfig)


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


def _describe(e: ValidationError) -> str:
    if e.kind == "unknown":
        return f"unknown config key {e.key!r}"
    if e.kind == "missing":
        return f"config key {e.key!r} is required"
    return f"config key {e.key!r}: {e.detail}"


def validate(raw: dict, source: str = "config") -> TrainConfig:
    if not isinstance(raw, dict):
        raise FaceedgeError(f"{source}: expected a mapping of sections (data, model, ...), got {type(raw).__name__}")
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        raise FaceedgeError(f"{source}: {_describe(e)}") from None


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
    data = cfg.model_dump()
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
