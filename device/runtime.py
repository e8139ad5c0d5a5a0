"""LiteRT runtime loading and the classifier that the daemon, `device check`, the benchmark
and the conversion stage's verification all share.

Runtime order: ai_edge_litert (the maintained LiteRT wheel) → tflite_runtime (last release 2.14,
broken under numpy 2) → tensorflow.lite (desktop only). Load once, infer many: a Classifier holds
one interpreter for its whole life and is never rebuilt per frame.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device import quant
from device.errors import FaceedgeError
from device.manifest import Manifest, load_manifest

log = logging.getLogger(__name__)

# (module that holds Interpreter, distribution name for its version)
RUNTIMES = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow.lite", "tensorflow"),
)


@dataclass(frozen=True)
class Runtime:
    name: str
    version: str
    interpreter_cls: Any


def _dist_version(dist: str) -> str:
    """The installed version of `dist`, from the name of its ``<name>-<version>.dist-info`` folder on
    sys.path. importlib.metadata finds the same, but imports email, zipfile, csv and tempfile: about
    2 MB the daemon would keep for one string."""
    wanted = re.sub(r"[-_.]+", "_", dist).lower()
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith(".dist-info"):
                project, _, version = name[: -len(".dist-info")].rpartition("-")
                if re.sub(r"[-_.]+", "_", project).lower() == wanted:
                    return version
    return "unknown"


def load_runtime(prefer: str | None = None) -> Runtime:
    """Import the first available runtime (or exactly `prefer`, a dist name from RUNTIMES)."""
    candidates = [r for r in RUNTIMES if prefer in (None, r[1])]
    if not candidates:
        raise FaceedgeError(f"unknown runtime {prefer!r}; choose one of {[r[1] for r in RUNTIMES]}")
    errors = []
    for module, dist in candidates:
        try:
            mod = importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - ImportError, or numpy ABI errors in old wheels
            errors.append(f"{dist}: {type(e).__name__}: {e}")
            continue
        return Runtime(name=dist, version=_dist_version(dist), interpreter_cls=mod.Interpreter)
    raise FaceedgeError("no TFLite runtime importable (pip install ai-edge-litert): " + "; ".join(errors))


def default_threads() -> int:
    """The interpreter's threads when the config names none: every core this process may run on
    (`available_cores`: the affinity mask, so `taskset`, systemd's `CPUAffinity=` or a cpuset count).

    Measured on a 2-core machine (int8 MobileNetV2 224, 640x480 synthetic frames, alternating rounds,
    docs/bench.md): when nothing else ran, the loop at 2 threads gave 1.37-1.64 × its fps at 1 thread
    (6 of 6 rounds); only while other jobs kept a core busy did 1 thread win (1.17 × median, 18 of 24
    rounds), because XNNPACK splits each op across its threads and waits for the preempted one. The
    daemon's own capture thread and outputs cost too little for that: a device runs the daemon alone,
    so all cores. On a Pi 4/5 the camera's 30 fps bounds the loop at 3 threads as at 4; where
    inference is slower than the camera (Pi 3, Zero 2 W) the fourth core adds fps. A board shared
    with another busy process: set `model.num_threads` lower (`make bench-device` measures each)."""
    return available_cores()


def available_cores() -> int:
    """The cores this process may run on: the affinity mask, not `os.cpu_count()` (under `taskset`,
    systemd's `CPUAffinity=` or a container's cpuset, more threads than allowed cores only contend)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


class LabelRule:
    """The manifest's decision rule, shared by every classifier (the CPU interpreter here, the AI
    Camera's sensor in device/imx500.py), so the daemon, check and verification decide alike."""

    manifest: Manifest | None = None
    on_sensor = False  # True: the camera runs the model, frames arrive with its outputs (device/imx500.py)

    def positive_probability(self, scores: np.ndarray) -> float:
        """Binary models: P(positive label). Softmax models: the top class's probability."""
        if scores.size == 1:
            return float(scores[0])
        return float(scores.max())

    def label_of(self, scores: np.ndarray, threshold: float | None = None) -> tuple[str, float]:
        """(label, score) under the manifest's threshold (binary) or argmax (softmax)."""
        if self.manifest is None:
            raise ValueError("label_of needs a manifest")
        m = self.manifest
        if scores.size == 1:
            p = float(scores[0])
            t = m.threshold if threshold is None else threshold
            return (m.positive_label if p >= t else m.negative_label), p  # type: ignore[return-value]
        i = int(np.argmax(scores))
        return m.labels[i], float(scores[i])


class Classifier(LabelRule):
    """One interpreter, its tensors' quantization, and the manifest's labels."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        manifest: Manifest | None = None,
        *,
        num_threads: int | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.manifest = manifest
        self.runtime = runtime or load_runtime()
        self.num_threads = num_threads or default_threads()
        _check_model_file(self.model_path)
        try:
            self.interpreter = self.runtime.interpreter_cls(
                model_path=str(self.model_path), num_threads=self.num_threads
            )
            self.interpreter.allocate_tensors()
        except Exception as e:  # noqa: BLE001 - the runtime raises ValueError/RuntimeError variously
            raise FaceedgeError(f"{self.model_path}: the runtime cannot load this model ({e})") from None
        inp = self.interpreter.get_input_details()
        out = self.interpreter.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise FaceedgeError(f"{self.model_path}: expected 1 input and 1 output, got {len(inp)} and {len(out)}")
        self._in, self._out = inp[0], out[0]
        shape = tuple(int(d) for d in self._in["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
            raise FaceedgeError(f"{self.model_path}: input shape {shape} is not (1, H, W, 3)")
        self.input_height, self.input_width = shape[1], shape[2]
        self.input_dtype = np.dtype(self._in["dtype"])
        self.in_scale, self.in_zero = (float(self._in["quantization"][0]), int(self._in["quantization"][1]))
        self.out_scale, self.out_zero = (float(self._out["quantization"][0]), int(self._out["quantization"][1]))
        self._identity_input = quant.input_is_identity(self.input_dtype, self.in_scale, self.in_zero)
        self._in_index, self._out_index = int(self._in["index"]), int(self._out["index"])
        self._input_shape = (self.input_height, self.input_width, 3)
        self._dequantize = _dequantizer(np.dtype(self._out["dtype"]), self.out_scale, self.out_zero)
        if manifest is not None:
            if (manifest.input_height, manifest.input_width) != (self.input_height, self.input_width):
                raise FaceedgeError(
                    f"{self.model_path}: input {self.input_height}x{self.input_width} does not match manifest "
                    f"{manifest.input_height}x{manifest.input_width}"
                )
        log.debug(
            "loaded %s with %s %s, %d threads, input %s %s",
            self.model_path,
            self.runtime.name,
            self.runtime.version,
            self.num_threads,
            shape,
            self.input_dtype,
        )

    @classmethod
    def from_model_dir(cls, path: str | os.PathLike, **kw: Any) -> Classifier:
        manifest, model_path = load_manifest(path)
        return cls(model_path, manifest, **kw)

    @property
    def input_details(self) -> dict[str, Any]:
        """The interpreter's input tensor details (name, shape, dtype, quantization) this classifier uses."""
        return self._in

    @property
    def output_details(self) -> dict[str, Any]:
        """The interpreter's output tensor details this classifier reads."""
        return self._out

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the crop must be resized to."""
        return self.input_height, self.input_width

    def set_input(self, rgb: np.ndarray) -> None:
        """Feed one HxWx3 uint8 RGB image already resized to `input_size`."""
        if rgb.shape != self._input_shape:
            raise ValueError(f"input image shape {rgb.shape} != {self._input_shape}")
        if self._identity_input or self.input_dtype == rgb.dtype:
            tensor = rgb[np.newaxis]
        elif np.issubdtype(self.input_dtype, np.floating):
            tensor = rgb[np.newaxis].astype(self.input_dtype)
        else:
            tensor = quant.quantize(rgb[np.newaxis], self.in_scale, self.in_zero, self.input_dtype)
        self.interpreter.set_tensor(self._in_index, tensor)

    def invoke(self) -> None:
        self.interpreter.invoke()

    def scores(self) -> np.ndarray:
        """Dequantized output as float32 probabilities, shape (K,) (K = 1 for a sigmoid head)."""
        return self._dequantize(self.interpreter.get_tensor(self._out_index).reshape(-1))

    def classify(self, rgb: np.ndarray) -> np.ndarray:
        self.set_input(rgb)
        self.invoke()
        return self.scores()


def _dequantizer(dtype: np.dtype, scale: float, zero_point: int):
    """The output's dequantization, decided once at load instead of on every frame.

    8-bit outputs (the int8 models' uint8/int8 heads): a 256-entry float32 table made with
    `quant.dequantize` itself, so a frame costs one table look-up and the values are those of the
    pure function bit for bit. Float outputs: a cast that copies only when the type differs.
    Anything else (int16, ...): `quant.dequantize` per call."""
    if dtype.itemsize == 1 and quant.is_quantized(dtype, scale):
        codes = np.arange(256, dtype=np.uint8).view(dtype)  # every code, indexed by its byte
        table = quant.dequantize(codes, scale, zero_point)
        if dtype == np.uint8:
            return table.take
        return lambda raw: table.take(raw.view(np.uint8))
    if not quant.is_quantized(dtype, scale):
        return lambda raw: raw.astype(np.float32, copy=False)
    return lambda raw: quant.dequantize(raw, scale, zero_point)


def _check_model_file(path: Path) -> None:
    """Reject files that are obviously not a TFLite flatbuffer before the runtime sees them."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise FaceedgeError(f"{path}: model file not found") from None
    if size == 0:
        raise FaceedgeError(f"{path}: model file is empty (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"version https://git-lfs"):
        raise FaceedgeError(f"{path}: is a Git LFS pointer, not a model (run `git lfs pull`)")
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise FaceedgeError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier)")
