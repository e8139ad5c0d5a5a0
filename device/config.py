"""The daemon's one YAML config, validated by a typed model that rejects unknown keys.

Sections (every one optional; see configs/device.yaml for a commented sample)::

    source:   {type: picamera2 | imx500 | opencv | images | synthetic, ...}   # device/sources/
    capture:  {stall_s, read_timeout_s, reconnect_initial_s, reconnect_max_s, discard_after_reconnect}
    crop:     {mode: full | center | face, ...}                       # device/crop.py
    model:    {dir, variant, num_threads, runtime, validate_timeout_s}
    decision: {threshold, smoothing, window, min_frames, hysteresis}  # device/decision.py
    outputs:  {jsonl, http, mqtt}                                     # device/outputs/
    log_level: INFO

A mistake is one line naming the file and the dotted key, e.g.
``configs/device.yaml: key 'source.fsp': Extra inputs are not permitted``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import yaml

from device.crop import CropConfig
from device.decision import DecisionConfig
from device.errors import FaceedgeError
from device.outputs import OutputsConfig
from device.sources import (
    CaptureConfig,
    ImagesConfig,
    Imx500Config,
    OpencvConfig,
    Picamera2Config,
    SourceConfig,
    SyntheticConfig,
)
from device.sources.images import IMAGE_SUFFIXES
from device.validation import Meta, Strict, ValidationError, field

# `type:` picks the class (each source config declares its tag)
SourceSection = Picamera2Config | Imx500Config | OpencvConfig | ImagesConfig | SyntheticConfig


class ModelConfig(Strict):
    dir: (
        Annotated[str, Meta(description="model dir (model.tflite + manifest.json) or a run dir; --model-dir overrides")]
        | None
    ) = None
    variant: Annotated[
        Literal["int8", "float32", "float16", "imx500"],
        Meta(description="which export/<variant>/ of a run dir (imx500: runs on the AI Camera, source.type imx500)"),
    ] = "int8"
    num_threads: (
        Annotated[
            int,
            Meta(
                ge=1,
                le=64,
                description="interpreter threads; None = all cores (device.runtime.default_threads)",
            ),
        ]
        | None
    ) = None
    runtime: (
        Annotated[
            Literal["ai-edge-litert", "tflite-runtime", "tensorflow"],
            Meta(description="None = the first importable, in that order"),
        ]
        | None
    ) = None
    validate_timeout_s: Annotated[
        float, Meta(gt=0, description="SIGHUP: limit for validating a new model in a child")
    ] = 60.0


class DaemonConfig(Strict):
    source: SourceSection = field(default_factory=SyntheticConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    expose_images: Annotated[bool, Meta(description="let the HTTP output serve the latest crop (/latest.jpg)")] = False
    opencv_threads: (
        Annotated[
            int,
            Meta(
                ge=0,
                le=64,
                description="OpenCV's thread pool (cv2.setNumThreads); None = 1 in full/center crop modes, where "
                "OpenCV only converts and resizes small images and its pool would compete with the "
                "interpreter's threads, and OpenCV's default in face mode (the detector uses it)",
            ),
        ]
        | None
    ) = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


def _error_line(where: str, e: ValidationError) -> str:
    return f"{where}: key {e.key or '(root)'!r}: {e.detail}"


def parse_config(data: Any, where: str = "config") -> DaemonConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FaceedgeError(f"{where}: expected a mapping of sections at the top, got {type(data).__name__}")
    try:
        return DaemonConfig.model_validate(data)
    except ValidationError as e:
        raise FaceedgeError(_error_line(where, e)) from None


def load_config(path: str | Path | None) -> DaemonConfig:
    """Read and validate the YAML file (None = all defaults). FaceedgeError names file and key."""
    if path is None:
        return DaemonConfig()
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise FaceedgeError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FaceedgeError(f"{p}: cannot read config ({e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise FaceedgeError(f"{p}: invalid YAML{where}: {problem}") from None
    return parse_config(data, str(p))


def source_from_arg(text: str, current: SourceConfig | None = None) -> SourceConfig:
    """`--source` on the command line: 'synthetic', 'picamera2', 'imx500', a camera index, a video file,
    an rtsp:// or http:// URL, an image folder, an image file or a glob. Keeps the config's
    settings when the override names the same kind of source."""
    t = text.strip()
    named = {"synthetic": SyntheticConfig, "picamera2": Picamera2Config, "imx500": Imx500Config}
    if t in named:
        if current is not None and current.type == t:
            return current
        return named[t]()
    if re.fullmatch(r"\d+", t):
        return OpencvConfig(device=int(t))
    if "://" in t:
        return OpencvConfig(device=t)
    p = Path(t).expanduser()
    if p.is_dir() or any(ch in t for ch in "*?[") or (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        return ImagesConfig(path=t)
    if p.is_file():
        return OpencvConfig(device=str(p))
    raise FaceedgeError(
        f"--source {text!r}: not 'synthetic', 'picamera2', 'imx500', a camera index, a URL, nor an existing file, "
        "folder or glob"
    )


def summary(cfg: DaemonConfig) -> str:
    outs = [n for n in OutputsConfig.field_names() if getattr(cfg.outputs, n) is not None] or ["none"]
    return (
        f"source={cfg.source.type} crop={cfg.crop.mode} smoothing={cfg.decision.smoothing}"
        f"/{cfg.decision.window} outputs={','.join(outs)}"
    )


def require_outputs(cfg: DaemonConfig, config: str | Path | None) -> None:
    """A daemon whose results go nowhere is a mistake, not a run."""
    if not any(getattr(cfg.outputs, name) is not None for name in type(cfg.outputs).field_names()):
        where = f"{config}: key 'outputs'" if config else "no --config given, so key 'outputs'"
        raise FaceedgeError(
            f"{where}: no output configured, the results would go nowhere; add outputs.jsonl "
            "(path: '-' for stdout), outputs.http or outputs.mqtt"
        )


def apply_opencv_threads(cfg: DaemonConfig) -> int:
    """Size OpenCV's thread pool (see DaemonConfig.opencv_threads); returns the value set."""
    n = cfg.opencv_threads
    if n is None:
        n = -1 if cfg.crop.mode == "face" else 1  # -1: OpenCV's default (all cores)
    cv2.setNumThreads(n)
    return n


def check_limits(
    *, max_frames: int | None = None, max_seconds: float | None = None, num_threads: int | None = None
) -> None:
    """Run limits below 1 are mistakes (0 used to mean one frame, or no limit at all): refuse them."""
    if max_frames is not None and max_frames < 1:
        raise FaceedgeError(f"--max-frames {max_frames}: must be >= 1 (leave it out to run until stopped)")
    if max_seconds is not None and not max_seconds > 0:
        raise FaceedgeError(f"--max-seconds {max_seconds:g}: must be > 0 (leave it out to run until stopped)")
    if num_threads is not None and num_threads < 1:
        raise FaceedgeError(f"--num-threads {num_threads}: must be >= 1 (leave it out for all cores)")
