"""On-device latency benchmark: the interpreter alone, and the daemon's whole code path.

`python -m device bench --model-dir RUN` measures, for each model variant present in the run
(``export/int8``, ``export/float32``, ``export/float16``) and each thread count (1 … cores):

- **raw** — the interpreter alone (`device.runtime.Classifier`), as TFLite's ``benchmark_model``
  does it: load time, first inference, warm-up runs, then timed runs until both ``--runs`` and
  ``--min-seconds`` are reached: mean, std, min, p50, p95, p99, max, and the spread.
- **pipeline** — the daemon's own code (`device.daemon.Daemon`: source → crop → preprocess →
  invoke → postprocess → output), in a fresh child process so that its peak RSS is the daemon's
  alone, not the benchmark's (which holds other interpreters): per-stage p50/p95/p99, end-to-end
  fps, dropped frames, peak RSS (VmHWM), CPU use, time from start to first result. Its window
  alternates slices of the daemon's loop and of raw invokes on the daemon's own interpreter, so
  pipeline ÷ raw compares two figures taken in the same process at the same moment.
- **bare loop** — numpy + OpenCV + the runtime in a sequential loop over the same source, in its
  own process: the floor (fps, RSS, first result) the daemon is held against.

It writes ``bench.json`` (with the machine), ``bench.md`` (tables) and ``bench.png`` (latency
plot) to ``<run>/bench/`` (or ``--out``), and prints last the pipeline's efficiency: pipeline fps
÷ raw fps for the same model and threads, and pipeline fps at the daemon's default thread count ÷
the best raw fps over all thread counts, each with two estimators (throughput, and 1000 ÷ the
median per-frame time, which preemption by other processes hardly moves); ``--repeat`` measures
everything again and reports the median ratio.

On a Raspberry Pi 4/5 (``/proc/device-tree/model``) the tables get a column with the published
figures for MobileNetV2 1.0 224 (XNNPACK, 4 threads), so a user sees whether the board is where it
should be.

The AI Camera (``--variants imx500 --source imx500``, on its own): the sensor runs the model, so
there is no raw interpreter and no thread count; the daemon's loop is measured as above, with the
stages that exist on the Pi (capture, frame_wait, capture_wait, postprocess, publish, latency,
end_to_end), fps, and the sensor's own DNN/DSP runtimes per frame (``CnnKpiInfo``), beside the
published AI Camera figures (`PUBLISHED_SENSOR`).

`python -m device bench-remote --hosts user@pi` runs the same tool on the Pi over ssh, in the
deployed venv (``<remote-dir>/current``), and brings the results back (plot redrawn here with
matplotlib when the Pi has none).

This module imports only the standard library and numpy at import time; the runtime, OpenCV,
the daemon and matplotlib are imported where they are used (matplotlib is not on the Pi: the plot
falls back to OpenCV drawing).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from device.errors import FaceedgeError
from device.files import atomic_write_bytes
from device.manifest import VARIANTS

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STAT_KEYS = ("mean", "std", "min", "p50", "p95", "p99", "max")
# Spread above which a latency series is called "wide": the machine is busy, throttling or
# migrating threads, and the figures should be re-measured before they are trusted.
WIDE_CV = 0.15  # std / mean
WIDE_TAIL = 1.5  # p95 / p50
# The project's targets for the daemon (issue 6), checked and reported, never enforced.
TARGETS = {
    "pipeline_over_raw_min": 0.95,
    "pipeline_default_over_best_raw_min": 0.85,
    "peak_rss_mb_max": 100.0,
    "first_result_s_max": 1.0,
}
BOARD_MODEL_FILE = Path("/proc/device-tree/model")
CHILD_FLAG = "--pipeline-child"

# Published figures, MobileNetV2 1.0 224, XNNPACK, 4 threads (issue 6 anchors): ms per inference
# (raw), and the picamera2 + int8 loop on a Pi 4. Keys: board → variant → (low, high) ms.
PUBLISHED_RAW_MS: dict[str, dict[str, tuple[float, float]]] = {
    "pi4": {"float32": (41.0, 46.0), "int8": (17.0, 20.0)},
    "pi5": {"int8": (4.0, 4.0)},
}
PUBLISHED_PIPELINE = {"pi4": {"int8": {"fps": 30.0, "capture_ms": 3.5}}}
PUBLISHED_THREADS = 4
PUBLISHED_NOTE = "MobileNetV2 1.0 224, XNNPACK, 4 threads (published)"
# The AI Camera (imx500). Published: the sensor's frame rate (Raspberry Pi AI Camera announcement,
# Sept 2024: 2028x1520 at 30 fps, 4056x3040 at 10 fps), the fps the loop can reach at most; and the
# sensor's ISP + AI processing "in 3.1 ms" with MobileNet V1 (Sony IMX500 press release, May 2020).
# No published on-sensor figure for MobileNetV2 (or our models) was found: none is shown for it.
SENSOR_VARIANT = "imx500"
PUBLISHED_SENSOR = {
    "fps": {"2028x1520": 30.0, "4056x3040": 10.0},
    "dnn_ms": 3.1,
    "note": "AI Camera: sensor 30 fps at 2028x1520 (Raspberry Pi); ISP + AI 3.1 ms for "
    "MobileNet V1 (Sony); no published MobileNetV2 figure",
}


# ------------------------------------------------------------------------------------------ statistics


def summarize(samples_ms: Iterable[float]) -> dict[str, float]:
    """mean/std/min/p50/p95/p99/max (+ n, cv, p95/p50) of a latency series in milliseconds."""
    a = np.asarray(list(samples_ms), dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    p50, p95, p99 = np.percentile(a, [50, 95, 99])  # linear interpolation: min ≤ p50 ≤ … ≤ max
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    out = {
        "n": int(a.size),
        "mean": mean,
        "std": std,
        "min": float(a.min()),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(a.max()),
    }
    out["cv"] = std / mean if mean > 0 else 0.0
    out["p95_over_p50"] = float(p95 / p50) if p50 > 0 else 1.0
    return out


def is_wide(stats: dict[str, float]) -> bool:
    return stats["cv"] > WIDE_CV or stats["p95_over_p50"] > WIDE_TAIL


def _round(x: Any, digits: int = 6) -> Any:
    """Floats to `digits` significant digits (JSON readable, nothing lost that was measured)."""
    if isinstance(x, float):
        return float(f"{x:.{digits}g}") if np.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _round(v, digits) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v, digits) for v in x]
    return x


# ------------------------------------------------------------------------------------------ machine


def board_model(path: Path = BOARD_MODEL_FILE) -> str | None:
    """'Raspberry Pi 4 Model B Rev 1.4' and the like, from the device tree; None elsewhere."""
    try:
        return path.read_bytes().rstrip(b"\x00\n ").decode(errors="replace") or None
    except OSError:
        return None


def board_key(model: str | None) -> str | None:
    """'pi4' / 'pi5' for the boards we hold published figures for."""
    if not model:
        return None
    m = re.search(r"Raspberry Pi (\d+)", model)
    if m and m.group(1) in ("4", "5"):
        return "pi" + m.group(1)
    if "Compute Module 4" in model:
        return "pi4"
    if "Compute Module 5" in model:
        return "pi5"
    return None


_ARM_PARTS = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1",
    "0xd40": "Neoverse-V1",
}


def cpu_model() -> str:
    """x86 'model name', or the ARM core name from the 'CPU part' field (Pi: Cortex-A72/A76)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    for key in ("model name", "Model name", "Processor"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.M)
        if m and m.group(1).strip():
            return m.group(1).strip()
    m = re.search(r"^CPU part\s*:\s*(0x[0-9a-f]+)", text, re.M)
    if m:
        return f"{_ARM_PARTS.get(m.group(1), 'ARM part ' + m.group(1))} ({platform.machine()})"
    return platform.processor() or platform.machine()


def _read_first(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_temperature_c() -> float | None:
    raw = _read_first("/sys/class/thermal/thermal_zone0/temp")
    try:
        return round(int(raw) / 1000.0, 1) if raw else None
    except ValueError:
        return None


def pi_throttled() -> str | None:
    """`vcgencmd get_throttled` on a Pi (0x0 = never throttled or under-volted), else None."""
    exe = shutil.which("vcgencmd")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"throttled=(0x[0-9a-fA-F]+)", out)
    return m.group(1) if m else None


def _os_name() -> str:
    try:
        rel = platform.freedesktop_os_release()
        return f"{rel.get('PRETTY_NAME', rel.get('NAME', 'Linux'))} (kernel {platform.release()})"
    except (OSError, AttributeError):
        return f"{platform.system()} {platform.release()}"


def _mem_total_mb() -> float | None:
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        return round(int(m.group(1)) / 1024, 1) if m else None
    except OSError:
        return None


def machine_info(runtime: Any | None = None) -> dict[str, Any]:
    """What a reader needs to compare two bench.json files: CPU, cores, OS, Python, runtime, board."""
    from device.runtime import default_threads  # the cores this process may run on (affinity mask)

    board = board_model()
    try:
        import cv2

        cv2_version = cv2.__version__
    except Exception:  # noqa: BLE001 - an absent OpenCV only loses the version string
        cv2_version = None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count() or 1,
        "cores_available": default_threads(),
        "arch": platform.machine(),
        "os": _os_name(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2_version,
        "runtime": getattr(runtime, "name", None),
        "runtime_version": getattr(runtime, "version", None),
        "board": board,
        "board_key": board_key(board),
        "memory_total_mb": _mem_total_mb(),
        "cpu_governor": _read_first("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cpu_max_mhz": _mhz(_read_first("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")),
        "temperature_c_start": cpu_temperature_c(),
        "throttled_start": pi_throttled(),
        "load_avg_start": load,
    }


def _mhz(khz: str | None) -> float | None:
    try:
        return round(int(khz) / 1000.0, 0) if khz else None
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------ models


def find_variants(path: str | os.PathLike, wanted: Iterable[str] | None = None) -> dict[str, Path]:
    """{variant: model dir} for the variants present in a run dir (``export/<variant>``), or the one
    model dir given. Raises FaceedgeError when none is there."""
    from device.manifest import MANIFEST_NAME, load_manifest

    p = Path(path)
    if not p.exists():
        raise FaceedgeError(f"{p}: no such run or model directory")
    if p.is_file():
        p = p.parent
    # the AI Camera's model only when asked for: it runs on the camera, not with the others' sources
    wanted = list(wanted) if wanted else [v for v in VARIANTS if v != SENSOR_VARIANT]
    for v in wanted:
        if v not in VARIANTS:
            raise FaceedgeError(f"--variants: unknown variant {v!r}; choose from {list(VARIANTS)}")
    if (p / MANIFEST_NAME).is_file():  # a single model dir
        man, _ = load_manifest(p)
        if man.variant not in wanted:
            raise FaceedgeError(f"{p}: holds a {man.variant} model, not one of --variants {wanted}")
        return {man.variant: p}
    found = {v: p / "export" / v for v in wanted if (p / "export" / v / MANIFEST_NAME).is_file()}
    if not found:
        raise FaceedgeError(
            f"{p}: no model under export/{{{','.join(wanted)}}}/{MANIFEST_NAME} (run `make convert` first)"
        )
    return found


def model_summary(model_dir: Path) -> dict[str, Any]:
    from device.manifest import load_manifest

    man, model_path = load_manifest(model_dir)
    alpha = None
    info = model_dir.parent.parent / "model_info.json"  # <run>/export/<variant>/ → <run>/model_info.json
    if info.is_file():
        try:
            alpha = json.loads(info.read_text()).get("alpha")
        except (OSError, ValueError):
            alpha = None
    return {
        "model_dir": str(model_dir.resolve()),
        "model_path": str(model_path),
        "variant": man.variant,
        "sha256": man.sha256,
        "size_bytes": man.size_bytes,
        "input_size": [man.input_height, man.input_width],
        "input_dtype": man.input.dtype,
        "backbone": man.backbone,
        "alpha": alpha,
        "labels": man.labels,
    }


def is_published_model(model: dict[str, Any]) -> bool:
    """MobileNetV2 1.0 at 224×224: the model the published Pi figures are for (alpha unknown = assumed)."""
    return (
        model.get("backbone", "").startswith("mobilenet_v2")
        and model.get("input_size") == [224, 224]
        and model.get("alpha") in (None, 1.0)
    )


def published_raw(board: str | None, model: dict[str, Any], variant: str, threads: int) -> dict[str, Any] | None:
    """The published raw latency for this board/model/variant/threads, or None."""
    if not board or threads != PUBLISHED_THREADS or not is_published_model(model):
        return None
    rng = PUBLISHED_RAW_MS.get(board, {}).get(variant)
    if rng is None:
        return None
    return {"board": board, "ms_low": rng[0], "ms_high": rng[1], "note": PUBLISHED_NOTE}


def published_pipeline(board: str | None, model: dict[str, Any], variant: str) -> dict[str, Any] | None:
    if not board or not is_published_model(model):
        return None
    fig = PUBLISHED_PIPELINE.get(board, {}).get(variant)
    if fig is None:
        return None
    return {"board": board, **fig, "note": "picamera2 + int8 MobileNetV2 loop (published)"}


def verdict(measured_ms: float, low: float, high: float) -> str:
    """'as published', 'faster', or 'slower ×k' (10 % tolerance above the published range)."""
    if measured_ms < low * 0.9:
        return "faster than published"
    if measured_ms <= high * 1.1:
        return "as published"
    return f"slower ×{measured_ms / high:.1f}"


# ------------------------------------------------------------------------------------------ raw


def bench_raw(
    model_dir: Path,
    threads: int,
    *,
    runs: int = 100,
    min_seconds: float = 2.0,
    max_seconds: float = 60.0,
    warmup_runs: int = 10,
    runtime: Any | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Time the interpreter alone: load, first inference, warm-up, then timed invokes.

    The input is set once (random pixels, as benchmark_model does); each sample is one
    `invoke()`. Runs continue until both `runs` samples and `min_seconds` are reached, capped by
    `max_seconds`.
    """
    from device.runtime import Classifier

    t0 = time.perf_counter()
    clf = Classifier.from_model_dir(model_dir, num_threads=threads, runtime=runtime)
    load_ms = (time.perf_counter() - t0) * 1e3
    h, w = clf.input_size
    clf.set_input(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
    t0 = time.perf_counter()
    clf.invoke()
    first_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(warmup_runs):
        clf.invoke()
    samples: list[float] = []
    perf = time.perf_counter
    start = perf()
    while True:
        t = perf()
        clf.invoke()
        samples.append((perf() - t) * 1e3)
        elapsed = perf() - start
        if (len(samples) >= runs and elapsed >= min_seconds) or elapsed >= max_seconds:
            break
    elapsed = perf() - start
    stats = summarize(samples)
    del clf
    return {
        "threads": threads,
        "load_ms": load_ms,
        "first_inference_ms": first_ms,
        "warmup_runs": warmup_runs,
        "seconds": elapsed,
        "latency_ms": stats,
        "fps": 1000.0 / stats["mean"],  # throughput: every preemption by another process counts
        "fps_p50": 1000.0 / stats["p50"],  # robust: what the model does when it has the cores
        "wide_spread": is_wide(stats),
    }


# ------------------------------------------------------------------------------------------ pipeline


def parse_resolution(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) < 8 or int(m.group(2)) < 8:
        raise argparse.ArgumentTypeError(f"resolution {text!r}: expected WIDTHxHEIGHT, e.g. 640x480")
    return int(m.group(1)), int(m.group(2))


def source_config(source: str, resolution: tuple[int, int]) -> dict[str, Any] | None:
    """The daemon's `source:` section for a bench source: 'synthetic' (unpaced), 'picamera2', a
    camera index, a video file (read as fast as consumed, looped, every frame classified), or
    'config' (None: the --config file's own source, e.g. the Pi's camera as deployed)."""
    w, h = resolution
    if source == "config":
        return None
    if source == "synthetic":
        return {"type": "synthetic", "width": w, "height": h, "fps": 0, "pattern": "bars"}
    if source in ("picamera2", "imx500"):
        return {"type": source, "width": w, "height": h}
    if source.isdigit():
        return {"type": "opencv", "device": int(source), "width": w, "height": h}
    p = Path(source).expanduser()
    if not p.is_file():
        raise FaceedgeError(
            f"--source {source!r}: not 'synthetic', 'picamera2', 'imx500', a camera index, nor a video file"
        )
    return {"type": "opencv", "device": str(p.resolve()), "realtime": False, "loop": True}


def sensor_source_check(
    found: dict[str, Path], source: dict[str, Any] | None, config: dict[str, Any] | None, pipeline: bool
) -> None:
    """The AI Camera's model is benched alone, on the imx500 source, and only as the daemon's loop
    (there is no interpreter on the Pi to time raw)."""
    if len(found) > 1:
        raise FaceedgeError(
            f"--variants {','.join(found)}: bench imx500 on its own (--variants imx500 --source "
            "imx500): it runs on the AI Camera, the others on the CPU"
        )
    if not pipeline:
        raise FaceedgeError(
            "--variants imx500 with --no_pipeline: the model runs on the sensor, so the only "
            "figures on the Pi are the daemon's loop (drop --no_pipeline)"
        )
    kind = (source or ((config or {}).get("source") or {})).get("type")
    if kind != "imx500":
        raise FaceedgeError(
            f"--variants imx500 runs on the AI Camera: --source imx500 (or --source config with "
            f"source.type imx500), not {kind or 'synthetic'!r}"
        )


def bench_pipeline(
    model_dir: Path,
    threads: int,
    *,
    source: dict[str, Any] | None,
    config: dict[str, Any] | None = None,
    seconds: float = 5.0,
    warmup_seconds: float = 1.0,
    slice_seconds: float = 0.25,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run the daemon in a fresh child process and return what it measured of itself.

    `source`: the daemon's `source:` section (None = the config's own); `config`: the daemon
    config as a dict (None = defaults; its outputs are replaced by a JSONL sink to /dev/null)."""
    spec = {
        "model_dir": str(model_dir),
        "threads": threads,
        "source": source,
        "config": config,
        "seconds": seconds,
        "warmup_seconds": warmup_seconds,
        "slice_seconds": slice_seconds,
    }
    with tempfile.TemporaryDirectory(prefix="faceedge-bench-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec["spawned_at"] = time.time()
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "device.bench", CHILD_FLAG, str(spec_path), str(out_path)]
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        limit = timeout if timeout is not None else 60.0 + 4 * (seconds + warmup_seconds)
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            raise FaceedgeError(f"pipeline bench of {model_dir} ({threads} threads) did not finish in {limit:.0f} s")
        if proc.returncode != 0 or not out_path.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise FaceedgeError(
                f"pipeline bench of {model_dir} ({threads} threads) failed "
                f"(exit {proc.returncode}): {tail[0].removeprefix('error: ')}"
            )
        return json.loads(out_path.read_text())


def _peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM; ru_maxrss where /proc is absent)."""
    try:
        m = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
        if m:
            return int(m.group(1)) / 1024.0
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


class _TimedSource:
    """Wraps the daemon's real source to time `read()`/`read_native()` in the capture thread
    (decode, plus the colour conversion of sources read as RGB; on a paced source, a camera, it
    includes the wait for the next frame). Every other call goes straight to the wrapped source."""

    def __init__(self, src: Any, samples: array | list[float], kpi: list[tuple[float, float]] | None = None) -> None:
        self._src = src
        self._samples = samples
        self._kpi = kpi  # the AI Camera: the sensor's (DNN, DSP) ms of every frame read

    def read(self, out=None, timeout=None):
        t = time.perf_counter()
        img = self._src.read(out, timeout)
        if img is not None:
            self._samples.append((time.perf_counter() - t) * 1e3)
            if self._kpi is not None and (k := self._src.sensor_kpi()) is not None:
                self._kpi.append(k)
        return img

    def read_native(self, out=None, timeout=None):  # what the capture thread calls on a BGR source
        t = time.perf_counter()
        img = self._src.read_native(out, timeout)
        if img is not None:
            self._samples.append((time.perf_counter() - t) * 1e3)
        return img

    def __getattr__(self, name: str) -> Any:
        return getattr(self._src, name)


def bench_config(spec: dict[str, Any]) -> Any:
    """The DaemonConfig a pipeline run uses: the user's config (crop, decision, capture, runtime)
    or the defaults, with the bench's source, thread count, and one JSONL output to /dev/null (the
    serialisation cost is real, the disk is not measured)."""
    from device.config import parse_config

    data = dict(spec.get("config") or {})
    if spec.get("source") is not None:
        data["source"] = spec["source"]
    data["model"] = {**(data.get("model") or {}), "num_threads": int(spec["threads"])}
    data["outputs"] = {"jsonl": {"path": os.devnull, "max_bytes": 0}}
    data["expose_images"] = False
    return parse_config(data, "bench config")


def _pipeline_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in a fresh child process: the daemon's own code path (`Daemon.start()` + `run()`).

    After the first result and a warm-up, the measured window alternates short slices of the
    daemon's loop (`Daemon.run(max_seconds=slice)`) and of raw invokes on the daemon's very
    interpreter (same model, same threads, same process). Both therefore see the same
    neighbours on a shared machine, and pipeline ÷ raw compares the code, not the moment.
    Between slices the capture thread keeps its frames ready (an unpaced source reads up to two
    ahead, then blocks), so results of frames captured before their slice began are counted for
    fps but left out of the per-stage statistics (their age is the raw slice's length).
    """
    import threading

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    t_imports = time.monotonic()
    from device.daemon import Daemon
    from device.sources import build_source

    imports_s = time.monotonic() - t_imports
    cfg = bench_config(spec)
    capture_ms = array("d")  # appended by the capture thread (one float per read)
    seconds, warmup = float(spec["seconds"]), float(spec["warmup_seconds"])
    slice_s = float(spec.get("slice_seconds") or 0.25)
    perf = time.perf_counter
    first_wall: list[float] = []
    # per stage, one compact column of float64 (not a dict per result: ~0.6 kB each, ~1.5 MB per
    # window at 450 fps, which would show in the daemon's peak RSS measured here)
    cols: dict[str, array] = {}
    stamps: list[list[float]] = []  # per slice: publish times
    current: list[float] = []
    slice_wall = [0.0]  # time.time() when the current pipeline slice began

    def on_first(result: Any) -> None:
        first_wall.append(time.time())

    def on_result(result: Any) -> None:
        now = perf()
        e2e = (time.time() - result.timestamp) * 1e3  # capture → published (outputs included)
        if result.timestamp >= slice_wall[0]:  # not a frame that waited through the raw slice
            stages = result.stages_ms
            for k, v in (*stages.items(), ("publish", max(0.0, e2e - stages.get("latency", e2e))), ("end_to_end", e2e)):
                col = cols.get(k)
                if col is None:
                    col = cols[k] = array("d")
                col.append(v)
        current.append(now)

    from device.imx500 import bind_source
    from device.sources.imx500 import Imx500Source

    kpi: list[tuple[float, float]] = []

    def timed_source():  # called in the capture thread, after start() loaded the model
        src = build_source(bind_source(daemon.classifier, cfg))  # the AI Camera: with the model's network
        return _TimedSource(src, capture_ms, kpi if isinstance(src, Imx500Source) else None)

    daemon = Daemon(cfg, model_dir=spec["model_dir"], source_factory=timed_source)
    pipe_s = raw_s = cpu_s = 0.0
    dropped = captured = 0
    raw_samples = array("d")
    cap_slices = array("d")
    limit = 60.0 + 3 * (seconds + warmup)
    with daemon:
        daemon.run(threading.Event(), max_frames=1, max_seconds=limit, on_result=on_first)
        if not first_wall:
            raise FaceedgeError(f"pipeline produced no result ({daemon.stats.get('capture')})")
        warm: list[float] = []
        t_warm = perf()
        daemon.run(threading.Event(), max_seconds=warmup, on_result=lambda r: warm.append(perf()))
        # A slow model (float32 or VGG16 on a Pi: 0.1-2 s per frame) gets slices long enough for
        # about eight results each, so that every slice has intervals to measure.
        period = (perf() - t_warm) / max(1, len(warm))
        slice_s = max(slice_s, 8 * period)
        clf = daemon.classifier
        on_sensor = clf.on_sensor  # the AI Camera: no interpreter on the Pi, no raw slices
        for _ in range(0 if on_sensor else 3):  # the raw slices' warm-up
            clf.invoke()
        kpi0 = len(kpi)
        while pipe_s < seconds:
            g = daemon.grabber
            d0, c0, k0, cpu0, t0 = g.stats.dropped, g.stats.captured, len(capture_ms), os.times(), perf()
            current = []
            slice_wall[0] = time.time()
            daemon.run(threading.Event(), max_seconds=slice_s, on_result=on_result)
            t1, cpu1 = perf(), os.times()
            if g.finished:
                raise FaceedgeError(
                    f"the source ended or failed during the measurement ({g.state}); "
                    "use a longer file, or a looping or synthetic source"
                )
            pipe_s += t1 - t0
            cpu_s += (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
            dropped += g.stats.dropped - d0
            captured += g.stats.captured - c0
            cap_slices.extend(capture_ms[k0:])
            stamps.append(current)
            t_raw = perf()
            while not on_sensor and perf() - t_raw < slice_s:
                t = perf()
                clf.invoke()
                raw_samples.append((perf() - t) * 1e3)
            raw_s += perf() - t_raw
        stats = daemon.stats
        threads_used, runtime = clf.num_threads, f"{clf.runtime.name} {clf.runtime.version}"
        frame_shape = list(daemon._input.shape) if daemon._input is not None else None
        source_desc = daemon.grabber.source_name
    n = sum(len(st) for st in stamps)
    intervals = np.concatenate([np.diff(st) for st in stamps if len(st) > 1] or [np.zeros(0)]) * 1e3
    if not cols or intervals.size == 0:
        raise FaceedgeError(
            f"pipeline produced too few results to measure: the source is slower than {2 / slice_s:.0f} fps or stalled"
        )
    stage_names = list(cols)
    per_stage = {k: summarize(cols[k]) for k in stage_names}
    if cap_slices:
        per_stage = {"capture": summarize(cap_slices), **per_stage}
        stage_names = ["capture", *stage_names]
    if len(kpi) > kpi0:  # the sensor's own timings of the frames read in the window
        per_stage["sensor_dnn"] = summarize(k[0] for k in kpi[kpi0:])
        per_stage["sensor_dsp"] = summarize(k[1] for k in kpi[kpi0:])
        stage_names += ["sensor_dnn", "sensor_dsp"]
    if on_sensor:
        raw_interleaved = None
    else:
        raw_stats = summarize(raw_samples)
        raw_interleaved = {
            "latency_ms": raw_stats,
            "seconds": raw_s,
            "fps": len(raw_samples) / raw_s,
            "fps_p50": 1000.0 / raw_stats["p50"],
        }
    return {
        "threads": int(spec["threads"]),
        "threads_used": threads_used,
        "runtime": runtime,
        "source": source_desc,
        "model_input": frame_shape,
        "frames": n,
        "seconds": pipe_s,
        "slices": len(stamps),
        "slice_seconds": slice_s,
        "fps": n / pipe_s,
        "fps_p50": 1000.0 / float(np.median(intervals)),
        "frames_captured": captured,
        "dropped_frames": dropped,
        "stage_names": stage_names,
        "stages_ms": per_stage,
        "raw_interleaved": raw_interleaved,
        "cpu_percent": 100.0 * cpu_s / pipe_s,
        "peak_rss_mb": _peak_rss_mb(),
        "first_result_s": stats.get("start_to_first_result_s"),
        "model_load_s": stats.get("model_load_s"),
        "first_result_from_exec_s": first_wall[0] - float(spec["spawned_at"]),
        "imports_s": imports_s,
    }


# The floor the daemon is held against: the same model and source in a bare sequential loop
# (numpy + OpenCV + the runtime, nothing else: no pydantic, no threads, no outputs), run as its own
# `python -c` child so that its peak RSS and start-up are those of the loop alone.
_BARE_LOOP = r"""
import importlib, json, os, re, sys, time
spec = json.loads(open(sys.argv[1]).read())
import numpy as np, cv2
Interpreter = importlib.import_module(spec["runtime_module"]).Interpreter
t_start = time.monotonic()
it = Interpreter(model_path=spec["model_path"], num_threads=spec["threads"])
it.allocate_tensors()
i, o = it.get_input_details()[0], it.get_output_details()[0]
h, w = int(i["shape"][1]), int(i["shape"][2])
dtype = np.dtype(i["dtype"])
scale, zero = i["quantization"]
src = spec["source"]
if src["type"] == "opencv":
    cap = cv2.VideoCapture(src["device"])
    def read_bgr():
        ok, f = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, f = cap.read()
        return f
else:
    fw, fh = src.get("width", 640), src.get("height", 480)
    pattern = (np.arange(fw + 128)[None, :, None] * np.array([3, 5, 7]) % 256).astype(np.uint8)
    pattern = np.repeat(pattern, fh, axis=0)
    n = [0]
    def read_bgr():
        n[0] += 1
        off = (n[0] * 4) % 128
        return pattern[:, off:off + fw].copy()
ends, first = [], None
warm, secs = spec["warmup_seconds"], spec["seconds"]
while True:
    bgr = read_bgr()
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    H, W = rgb.shape[:2]
    s = min(H, W)
    y, x = (H - s) // 2, (W - s) // 2
    small = cv2.resize(rgb[y:y + s, x:x + s], (w, h), interpolation=cv2.INTER_LINEAR)
    if dtype == np.uint8 and (scale, zero) in ((0.0, 0), (1.0, 0)):
        t = small[None]
    elif np.issubdtype(dtype, np.floating):
        t = small[None].astype(dtype)
    else:
        t = np.clip(np.round(small[None] / scale + zero), np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)
    it.set_tensor(i["index"], t)
    it.invoke()
    scores = it.get_tensor(o["index"]).astype(np.float32)
    now = time.monotonic()
    if first is None:
        first = (now - t_start, time.time())
        t_first = now
    if now - t_first >= warm:
        ends.append(now)
        if now - ends[0] >= secs:
            break
hwm = int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) / 1024.0
d = np.diff(ends)
json.dump({"frames": len(ends), "seconds": ends[-1] - ends[0], "fps": (len(ends) - 1) / (ends[-1] - ends[0]),
           "fps_p50": 1000.0 / (float(np.median(d)) * 1e3), "peak_rss_mb": hwm, "first_result_s": first[0],
           "first_result_from_exec_s": first[1] - spec["spawned_at"]}, open(sys.argv[2], "w"))
"""


def bench_bare_loop(
    model_dir: Path,
    threads: int,
    *,
    source: dict[str, Any],
    seconds: float = 5.0,
    warmup_seconds: float = 1.0,
    runtime: Any | None = None,
) -> dict[str, Any] | None:
    """The bare-loop reference (see _BARE_LOOP), or None where it cannot run (no /proc, a camera)."""
    from device.manifest import load_manifest
    from device.runtime import RUNTIMES, load_runtime

    if source is None or source.get("type") not in ("synthetic", "opencv") or not Path("/proc/self/status").exists():
        return None
    if source["type"] == "opencv" and not Path(str(source["device"])).is_file():
        return None  # a camera: the bare loop would fight the daemon's measurements for it
    runtime = runtime or load_runtime()
    module = next(m for m, dist in RUNTIMES if dist == runtime.name)
    _, model_path = load_manifest(model_dir)
    with tempfile.TemporaryDirectory(prefix="faceedge-bare-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(
            json.dumps(
                {
                    "model_path": str(model_path),
                    "threads": threads,
                    "runtime_module": module,
                    "source": source,
                    "seconds": seconds,
                    "warmup_seconds": warmup_seconds,
                    "spawned_at": time.time(),
                }
            )
        )
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _BARE_LOOP, str(spec_path), str(out_path)],
                capture_output=True,
                text=True,
                timeout=60.0 + 3 * (seconds + warmup_seconds),
            )
        except subprocess.TimeoutExpired:
            log.warning("bare loop of %s (%d threads) timed out", model_dir, threads)
            return None
        if proc.returncode != 0 or not out_path.is_file():
            log.warning("bare loop of %s failed: %s", model_dir, (proc.stderr.strip().splitlines() or ["?"])[-1])
            return None
        out = json.loads(out_path.read_text())
    out["threads"] = threads
    return out


# ------------------------------------------------------------------------------------------ report


def _ratios(pipes: dict[int, dict], key: str, default: int) -> dict[str, Any]:
    """Ratios of one round with one fps estimator (`fps` or `fps_p50`); raw = the interleaved
    raw slices measured in the same child as each pipeline."""
    out: dict[str, Any] = {"same_threads": {t: p[key] / p["raw_interleaved"][key] for t, p in pipes.items()}}
    if default in pipes:
        best = max(pipes.values(), key=lambda p: p["raw_interleaved"][key])
        out["default_over_best"] = pipes[default][key] / best["raw_interleaved"][key]
        out["best_threads"] = best["threads"]
    return out


def efficiency(pipeline: list[dict], default_threads: int, bare: list[dict] | None = None) -> dict[str, Any]:
    """Per variant: pipeline fps ÷ raw fps (same model, same threads: the raw slices interleaved
    with the pipeline's in the same child), and pipeline fps at the default thread count ÷ the
    best raw fps over all thread counts; the median over rounds.

    Two fps estimators, both reported: throughput (`fps`: frames ÷ time; every time slice another
    process takes counts against it) and robust (`fps_p50`: 1000 ÷ the median per-frame time;
    preemptions land in the tail, not the median). On a quiet machine they agree; on a shared
    one the robust ratio compares the code rather than the neighbours.
    """
    out: dict[str, Any] = {}
    for variant in sorted({p["variant"] for p in pipeline}):
        rounds = sorted({p["round"] for p in pipeline if p["variant"] == variant})
        acc: dict[str, dict[str, list]] = {"fps": {}, "fps_p50": {}}
        for rnd in rounds:
            pipes = {p["threads"]: p for p in pipeline if p["variant"] == variant and p["round"] == rnd}
            for key in acc:
                r = _ratios(pipes, key, default_threads)
                for t, x in r["same_threads"].items():
                    acc[key].setdefault(f"t{t}", []).append(x)
                if "default_over_best" in r:
                    acc[key].setdefault("default_over_best", []).append(r["default_over_best"])
                    acc[key].setdefault("best_threads", []).append(r["best_threads"])
        entry: dict[str, Any] = {"default_threads": default_threads}
        for key, suffix in (("fps", ""), ("fps_p50", "_p50")):
            a = acc[key]
            per = {k[1:]: float(np.median(v)) for k, v in sorted(a.items(), key=lambda kv: kv[0]) if k.startswith("t")}
            entry[f"pipeline_over_raw{suffix}"] = dict(sorted(per.items(), key=lambda kv: int(kv[0])))
            if str(default_threads) in per:
                entry[f"pipeline_over_raw{suffix}_at_default"] = per[str(default_threads)]
                entry[f"pipeline_over_raw{suffix}_rounds"] = a[f"t{default_threads}"]
            if a.get("default_over_best"):
                entry[f"pipeline_default_over_best_raw{suffix}"] = float(np.median(a["default_over_best"]))
                bt = a["best_threads"]
                entry[f"best_raw_threads{suffix}"] = max(set(bt), key=bt.count)
        bares = [b for b in (bare or []) if b["variant"] == variant]
        pipes_d = [p for p in pipeline if p["variant"] == variant and p["threads"] == default_threads]
        pairs = [(p, b) for p in pipes_d for b in bares if b["round"] == p["round"]]
        if pairs:
            entry["pipeline_over_bare"] = float(np.median([p["fps"] / b["fps"] for p, b in pairs]))
            entry["pipeline_over_bare_p50"] = float(np.median([p["fps_p50"] / b["fps_p50"] for p, b in pairs]))
            entry["rss_over_bare_mb"] = float(np.median([p["peak_rss_mb"] - b["peak_rss_mb"] for p, b in pairs]))
        out[variant] = entry
    return out


def check_targets(report: dict[str, Any], variant: str = "int8") -> dict[str, Any]:
    """The project's daemon targets (TARGETS) against this run, for `variant` (int8 by default).
    The fps ratios are judged on the robust (median) estimator, the throughput one is shown too."""
    eff = report.get("efficiency", {}).get(variant)
    d = report["settings"]["default_threads"]
    pipes = [p for p in report.get("pipeline", []) if p["variant"] == variant and p["threads"] == d]
    if not eff or not pipes:
        return {}
    checks: dict[str, Any] = {
        "variant": variant,
        "threads": d,
        "pipeline_over_raw": {
            "value": eff.get("pipeline_over_raw_p50_at_default"),
            "throughput": eff.get("pipeline_over_raw_at_default"),
            "min": TARGETS["pipeline_over_raw_min"],
        },
        "pipeline_default_over_best_raw": {
            "value": eff.get("pipeline_default_over_best_raw_p50"),
            "throughput": eff.get("pipeline_default_over_best_raw"),
            "min": TARGETS["pipeline_default_over_best_raw_min"],
        },
        "peak_rss_mb": {
            "value": float(np.median([p["peak_rss_mb"] for p in pipes])),
            "max": TARGETS["peak_rss_mb_max"],
        },
        "first_result_s": {
            "value": float(np.median([p["first_result_s"] for p in pipes])),
            "max": TARGETS["first_result_s_max"],
        },
    }
    for c in checks.values():
        if isinstance(c, dict) and c.get("value") is not None:
            c["ok"] = c["value"] >= c["min"] if "min" in c else c["value"] <= c["max"]
    return checks


def _fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    s = report["settings"]
    board = s.get("compare_board")
    multi = s["repeat"] > 1
    lines = [
        "# Bench",
        "",
        f"{report['created']} · {m['cpu_model']} · {m['cores_available']}/{m['cores']} cores · {m['os']} · "
        f"Python {m['python']} · {m['runtime']} {m['runtime_version']}"
        + (f" · **{m['board']}**" if m.get("board") else ""),
        "",
        f"Raw: {s['warmup_runs']} warm-up runs, then ≥ {s['runs']} runs and ≥ {s['min_seconds']} s. "
        + (
            f"Pipeline: {s['pipeline_seconds']} s after {s['pipeline_warmup_seconds']} s of warm-up, source "
            f"`{s['source_desc']}`. "
            if s["pipeline"]
            else ""
        )
        + f"{s['repeat']} round(s). The daemon's default thread count: {s['default_threads']}."
        + (f" Pinned to CPUs {','.join(map(str, s['cpus']))}." if s.get("cpus") else ""),
        "",
        "## Raw interpreter (invoke only)",
        "",
    ]
    head = (
        ["variant", "threads"]
        + (["round"] if multi else [])
        + ["load ms", "first ms", "mean", "std", "min", "p50", "p95", "p99", "max", "fps", "fps (p50)", "cv", "p95/p50"]
    )
    if board:
        head.append(f"published ({board}, {PUBLISHED_THREADS} thr)")
    rows = []
    for r in report["raw"]:
        st = r["latency_ms"]
        row = (
            [r["variant"], str(r["threads"])]
            + ([str(r["round"])] if multi else [])
            + [
                _fmt(r["load_ms"], 1),
                _fmt(r["first_inference_ms"]),
                *(_fmt(st[k]) for k in STAT_KEYS),
                _fmt(r["fps"], 1),
                _fmt(r["fps_p50"], 1),
                f"{st['cv'] * 100:.0f} %" + (" ⚠" if r["wide_spread"] else ""),
                _fmt(st["p95_over_p50"]),
            ]
        )
        if board:
            pub = r.get("published")
            row.append(
                f"{pub['ms_low']:g}–{pub['ms_high']:g} ms: {verdict(st['p50'], pub['ms_low'], pub['ms_high'])}"
                if pub
                else "—"
            )
        rows.append(row)
    lines += _table(head, rows)
    lines += [
        "",
        f"Latencies in ms. fps = 1000 ÷ mean (throughput); fps (p50) = 1000 ÷ p50 (robust to other "
        f"processes). ⚠ = wide spread (cv > {WIDE_CV:.0%} or p95/p50 > {WIDE_TAIL}): the machine was busy or "
        "throttling; measure again.",
        "",
    ]

    if report["pipeline"]:
        lines += ["## Pipeline (the daemon's own loop, in a fresh process)", ""]
        head = (
            ["variant", "threads"]
            + (["round"] if multi else [])
            + [
                "fps",
                "fps (p50)",
                "raw fps",
                "raw fps (p50)",
                "÷ raw",
                "÷ raw (p50)",
                "frames",
                "dropped",
                "peak RSS MB",
                "CPU %",
                "first result s",
                "from exec s",
            ]
        )
        if board:
            head.append(f"published ({board})")
        rows = []
        for p in report["pipeline"]:
            row = (
                [p["variant"], str(p["threads"])]
                + ([str(p["round"])] if multi else [])
                + [
                    _fmt(p["fps"], 1),
                    _fmt(p["fps_p50"], 1),
                    _fmt(p["raw_interleaved"]["fps"], 1),
                    _fmt(p["raw_interleaved"]["fps_p50"], 1),
                    _fmt(p.get("pipeline_over_raw"), 3),
                    _fmt(p.get("pipeline_over_raw_p50"), 3),
                    str(p["frames"]),
                    str(p["dropped_frames"]),
                    _fmt(p["peak_rss_mb"], 1),
                    _fmt(p["cpu_percent"], 0),
                    _fmt(p["first_result_s"], 3),
                    _fmt(p.get("first_result_from_exec_s"), 3),
                ]
            )
            if board:
                pub = p.get("published")
                row.append(f"≈{pub['fps']:g} fps, capture ≈{pub['capture_ms']:g} ms" if pub else "—")
            rows.append(row)
        lines += _table(head, rows)
        lines += [
            "",
            "raw fps: invokes of the daemon's own interpreter in slices interleaved with the pipeline's "
            f"({s.get('slice_seconds', 0.25)} s each, same process, same moment), the reference of ÷ raw. "
            "CPU % = process CPU time ÷ wall time (100 = one core busy). first result = from "
            "`Daemon.start()` (model load, source open) to the first published result; from exec = from "
            "the process spawn (interpreter start and imports included).",
            "",
        ]
        if report.get("bare"):
            lines += ["### Bare loop (reference floor: numpy + OpenCV + runtime, sequential, nothing else)", ""]
            head = (
                ["variant", "threads"]
                + (["round"] if multi else [])
                + ["fps", "fps (p50)", "peak RSS MB", "first result s", "from exec s"]
            )
            rows = [
                [b["variant"], str(b["threads"])]
                + ([str(b["round"])] if multi else [])
                + [
                    _fmt(b["fps"], 1),
                    _fmt(b["fps_p50"], 1),
                    _fmt(b["peak_rss_mb"], 1),
                    _fmt(b["first_result_s"], 3),
                    _fmt(b["first_result_from_exec_s"], 3),
                ]
                for b in report["bare"]
            ]
            lines += _table(head, rows) + [""]
        lines += ["### Per stage (ms, p50 / p95 / p99)", ""]
        stages = report["pipeline"][0]["stage_names"]
        head = ["variant", "threads"] + (["round"] if multi else []) + stages
        rows = []
        for p in report["pipeline"]:
            row = [p["variant"], str(p["threads"])] + ([str(p["round"])] if multi else [])
            for st in stages:
                x = p["stages_ms"].get(st)
                row.append(f"{x['p50']:.2f} / {x['p95']:.2f} / {x['p99']:.2f}" if x else "—")
            rows.append(row)
        lines += _table(head, rows)
        lines += [
            "",
            "capture: `source.read()` in the capture thread (decode + colour conversion; on a paced "
            "source it includes the wait for the next frame); frame_wait: the loop idle, waiting for a frame; "
            "capture_wait: frame age when the loop took it; crop, preprocess (resize + set_input; the daemon "
            "crops and resizes in the capture thread and reports those times here), invoke, postprocess "
            "(dequantize + decision); publish: outputs; latency: capture → decided; end_to_end: capture → "
            "published. Frames captured before their slice began are left out of these statistics.",
            "",
        ]

    if report.get("sensor"):
        lines += sensor_lines(report)
    if report.get("efficiency"):
        lines += ["## Efficiency", ""]
        lines += efficiency_lines(report, md=True)
        lines.append("")
    if report.get("targets"):
        t = report["targets"]
        head = ["figure", "value", "throughput estimator", "target", "ok"]
        rows = []
        for k in ("pipeline_over_raw", "pipeline_default_over_best_raw", "peak_rss_mb", "first_result_s"):
            c = t[k]
            bound = f"≥ {c['min']}" if "min" in c else f"≤ {c['max']}"
            rows.append(
                [
                    k,
                    _fmt(c["value"], 3),
                    _fmt(c.get("throughput"), 3) if "throughput" in c else "",
                    bound,
                    "yes" if c.get("ok") else "**NO**",
                ]
            )
        lines += [f"## Targets ({t['variant']}, {t['threads']} threads)", ""] + _table(head, rows)
        lines += ["", "fps ratios judged on the robust (p50) estimator; the throughput one beside it.", ""]
    if report.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    return "\n".join(lines)


def sensor_lines(report: dict[str, Any]) -> list[str]:
    """The AI Camera's section: the loop's fps and the stages that exist on the Pi, the sensor's
    own DNN/DSP times when it reports them, and the published AI Camera figures beside them."""
    multi = report["settings"]["repeat"] > 1
    pub = PUBLISHED_SENSOR
    lines = ["## AI Camera (imx500: the model runs on the sensor)", ""]
    head = (
        ["variant"]
        + (["round"] if multi else [])
        + ["fps", "fps (p50)", "frames", "dropped", "peak RSS MB", "CPU %", "first result s", "published"]
    )
    rows = [
        [s["variant"]]
        + ([str(s["round"])] if multi else [])
        + [
            _fmt(s["fps"], 1),
            _fmt(s["fps_p50"], 1),
            str(s["frames"]),
            str(s["dropped_frames"]),
            _fmt(s["peak_rss_mb"], 1),
            _fmt(s["cpu_percent"], 0),
            _fmt(s["first_result_s"], 3),
            f"sensor ≤ {pub['fps']['2028x1520']:g} fps (2028x1520), ≤ {pub['fps']['4056x3040']:g} fps (4056x3040)",
        ]
        for s in report["sensor"]
    ]
    lines += _table(head, rows) + ["", "### Per stage (ms, p50 / p95 / p99)", ""]
    stages = report["sensor"][0]["stage_names"]
    head = ["variant"] + (["round"] if multi else []) + stages
    rows = []
    for s in report["sensor"]:
        row = [s["variant"]] + ([str(s["round"])] if multi else [])
        for st in stages:
            x = s["stages_ms"].get(st)
            row.append(f"{x['p50']:.2f} / {x['p95']:.2f} / {x['p99']:.2f}" if x else "—")
        rows.append(row)
    lines += _table(head, rows)
    lines += [
        "",
        "No crop, preprocess or invoke on the Pi: the sensor crops its region of interest, scales it and "
        "runs the network. capture: one camera request (frame + its output tensors; includes the wait for "
        "the frame); postprocess: output tensor → decision; sensor_dnn / sensor_dsp: the sensor's own "
        f"runtimes for each frame (CnnKpiInfo). Published: {pub['note']} (Sony reports ISP + AI "
        f"processing in {pub['dnn_ms']:g} ms for MobileNet V1; no figure for MobileNetV2 was found).",
        "",
    ]
    return lines


def efficiency_lines(report: dict[str, Any], md: bool = False) -> list[str]:
    """The efficiency summary: per variant, pipeline ÷ raw at the default threads (robust and
    throughput), pipeline at default ÷ best raw, and against the bare loop."""
    out = []
    for v, e in report.get("efficiency", {}).items():
        d = e["default_threads"]
        s = (
            f"efficiency {v}: pipeline ÷ raw fps at {d} threads = "
            f"{_fmt(e.get('pipeline_over_raw_p50_at_default'), 3)}"
            f" (throughput {_fmt(e.get('pipeline_over_raw_at_default'), 3)})"
        )
        rr = e.get("pipeline_over_raw_p50_rounds") or []
        if len(rr) > 1:
            s += f" [rounds {min(rr):.3f}–{max(rr):.3f}]"
        if "pipeline_default_over_best_raw_p50" in e:
            s += (
                f"; pipeline at default ({d}) ÷ best raw ({e['best_raw_threads_p50']} thr) = "
                f"{e['pipeline_default_over_best_raw_p50']:.3f} "
                f"(throughput {e['pipeline_default_over_best_raw']:.3f})"
            )
        if "pipeline_over_bare_p50" in e:
            s += (
                f"; ÷ bare loop = {e['pipeline_over_bare_p50']:.3f} (throughput {e['pipeline_over_bare']:.3f}), "
                f"RSS {e['rss_over_bare_mb']:+.1f} MB over it"
            )
        out.append(("- " if md else "") + s)
        if md:
            per = ", ".join(f"{t} thr {x:.3f}" for t, x in e["pipeline_over_raw_p50"].items())
            out.append(f"  - pipeline ÷ raw (p50) per thread count: {per}")
    return out


# ------------------------------------------------------------------------------------------ plot


def write_plot(report: dict[str, Any], path: Path) -> str:
    """bench.png: raw latency per variant × threads (p50 bar, p95/p99 ticks) and the pipeline's
    per-stage p50 (bar) with p95 (whisker). matplotlib when installed; else drawn with OpenCV
    (the Pi has no matplotlib). Returns the backend used."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: F401
    except Exception:  # noqa: BLE001 - not installed (the Pi) or broken: fall back to OpenCV
        _plot_cv2(report, path)
        return "opencv"
    _plot_matplotlib(report, path)
    return "matplotlib"


# Stages that are waits or spans, not per-frame work: drawn apart from the work stages.
SPAN_STAGES = ("frame_wait", "capture_wait", "latency", "end_to_end")


def _raw_series(report: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    return [
        (
            f"{r['variant']} {r['threads']}t" + (f" r{r['round']}" if report["settings"]["repeat"] > 1 else ""),
            r["latency_ms"],
        )
        for r in report["raw"]
    ]


def _stage_series(report: dict[str, Any]) -> tuple[list[str], list[tuple[str, dict[str, dict]]]]:
    pipes = report["pipeline"] or report.get("sensor") or []  # the AI Camera's loop when that is all there is
    stages = pipes[0]["stage_names"] if pipes else []
    multi = report["settings"]["repeat"] > 1
    return stages, [
        (f"{p['variant']} {p['threads']}t" + (f" r{p['round']}" if multi else ""), p["stages_ms"]) for p in pipes
    ]


def _percentile_bars(ax: Any, series: list[tuple[str, dict[str, float]]], xlabel: str, title: str) -> None:
    """p50 bars with p95/p99 ticks; a log axis when the tail is > 20× the fastest median."""
    y = np.arange(len(series))
    ax.barh(y, [s["p50"] for _, s in series], color="#4c72b0", label="p50")
    ax.scatter([s["p95"] for _, s in series], y, marker="|", s=200, color="#dd8452", label="p95", zorder=3)
    ax.scatter([s["p99"] for _, s in series], y, marker="|", s=200, color="#c44e52", label="p99", zorder=3)
    ax.set_yticks(y, [n for n, _ in series])
    ax.invert_yaxis()
    lo = min(s["p50"] for _, s in series)
    if lo > 0 and max(s["p99"] for _, s in series) > 20 * lo:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        xlabel += " (log)"
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)


def _plot_matplotlib(report: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    raw = _raw_series(report)
    stages, pipes = _stage_series(report)
    work = [s for s in stages if s not in SPAN_STAGES]
    ncols = 3 if pipes else 1
    rows = max(len(raw), len(pipes) * len(work) / 3, 6)
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 0.42 * rows + 1.8), squeeze=False)
    if raw:
        _percentile_bars(axes[0][0], raw, "ms per invoke", "raw interpreter latency")
    else:
        axes[0][0].set_title("no raw interpreter: the AI Camera's sensor runs the model")
        axes[0][0].axis("off")
    if pipes:
        ax = axes[0][1]
        n = len(work)
        height = 0.8 / max(1, len(pipes))
        yb = np.arange(n)
        colours = plt.get_cmap("tab10" if len(pipes) <= 10 else "tab20").colors
        for i, (name, st) in enumerate(pipes):
            p50 = [st.get(s, {}).get("p50", 0.0) for s in work]
            err = [max(0.0, st.get(s, {}).get("p95", 0.0) - st.get(s, {}).get("p50", 0.0)) for s in work]
            ax.barh(
                yb + i * height,
                p50,
                height=height,
                xerr=[np.zeros(n), err],
                capsize=2,
                label=name,
                color=colours[i % len(colours)],
            )
        ax.set_yticks(yb + height * (len(pipes) - 1) / 2, work)
        ax.invert_yaxis()
        ax.set_xlabel("ms per frame (bar p50, whisker p95)")
        ax.set_title("pipeline: work per stage")
        ax.legend(fontsize=7, loc="lower right")
        e2e = [
            (f"{name} · {p['fps_p50']:.0f} fps", st["end_to_end"])
            for (name, st), p in zip(pipes, report["pipeline"] or report.get("sensor") or [])
            if "end_to_end" in st
        ]
        if e2e:
            _percentile_bars(axes[0][2], e2e, "ms, capture → published", "pipeline: end-to-end latency")
    m = report["machine"]
    fig.suptitle(
        f"{m.get('board') or m['cpu_model']} · {m['runtime']} {m['runtime_version']} · {report['created']}", fontsize=9
    )
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _plot_cv2(report: dict[str, Any], path: Path) -> None:
    """Horizontal bars with OpenCV: p50 bar + p95 tick, raw rows then pipeline stage rows."""
    import cv2

    rows: list[tuple[str, float, float, tuple[int, int, int]]] = []
    for name, s in _raw_series(report):
        rows.append((f"raw {name}", s["p50"], s["p95"], (176, 114, 76)))
    stages, pipes = _stage_series(report)
    for name, st in pipes:
        for s in stages:
            if s in st:
                rows.append((f"{name} {s}", st[s]["p50"], st[s]["p95"], (82, 132, 221)))
    width, left, row_h = 900, 260, 22
    img = np.full((60 + row_h * max(1, len(rows)), width, 3), 255, np.uint8)
    top = max([r[2] for r in rows] + [1e-3])
    scale = (width - left - 40) / top
    cv2.putText(
        img, "latency ms: bar p50, tick p95", (10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA
    )
    for i, (name, p50, p95, colour) in enumerate(rows):
        y = 45 + i * row_h
        cv2.putText(img, name[:34], (8, y + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.rectangle(img, (left, y + 3), (left + max(1, int(p50 * scale)), y + row_h - 3), colour, -1)
        x95 = left + int(p95 * scale)
        cv2.line(img, (x95, y + 1), (x95, y + row_h - 1), (0, 0, 0), 2)
        cv2.putText(
            img,
            f"{p50:.2f}",
            (min(x95 + 4, width - 50), y + 14),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.38,
            (60, 60, 60),
            1,
            cv2.LINE_AA,
        )
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise FaceedgeError(f"{path}: OpenCV could not encode the plot")
    atomic_write_bytes(path, buf.tobytes())


def write_outputs(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """bench.json, bench.md, bench.png (each written atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "bench.json", "md": out_dir / "bench.md", "png": out_dir / "bench.png"}
    report["plot_backend"] = write_plot(report, paths["png"])
    atomic_write_bytes(paths["json"], (json.dumps(_round(report), indent=2) + "\n").encode())
    atomic_write_bytes(paths["md"], render_markdown(report).encode())
    return paths


# ------------------------------------------------------------------------------------------ run


def parse_threads(text: str) -> list[int]:
    try:
        vals = sorted({int(x) for x in text.replace(" ", "").split(",") if x})
    except ValueError:
        raise argparse.ArgumentTypeError(f"threads {text!r}: expected a comma-separated list such as 1,2,4") from None
    if not vals or vals[0] < 1:
        raise argparse.ArgumentTypeError(f"threads {text!r}: each thread count must be ≥ 1")
    return vals


def parse_cpus(text: str) -> list[int]:
    """'0-3' / '2,3' / '0,2-3' → sorted CPU ids (for --cpus)."""
    out: set[int] = set()
    try:
        for part in text.replace(" ", "").split(","):
            if not part:
                continue
            lo, _, hi = part.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"cpus {text!r}: expected CPU ids such as 0-3 or 2,3") from None
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(f"cpus {text!r}: no CPU ids")
    return sorted(out)


def daemon_default_threads(config: dict[str, Any] | None = None) -> int:
    """The thread count the daemon runs with: the config's model.num_threads, else the runtime's
    default (all cores)."""
    from device.runtime import default_threads

    n = ((config or {}).get("model") or {}).get("num_threads")
    return int(n) if n else default_threads()


def load_bench_config(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """A device YAML validated like the daemon does, returned as a dict for the child."""
    if path is None:
        return None
    from device.config import load_config

    return load_config(path).model_dump()


def run(
    model_dir: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    variants: list[str] | None = None,
    threads: list[int] | None = None,
    runs: int = 100,
    min_seconds: float = 2.0,
    max_seconds: float = 60.0,
    warmup_runs: int = 10,
    pipeline: bool = True,
    pipeline_seconds: float = 5.0,
    pipeline_warmup_seconds: float = 1.0,
    source: str = "synthetic",
    resolution: tuple[int, int] = (640, 480),
    config: str | os.PathLike | None = None,
    slice_seconds: float = 0.25,
    repeat: int = 1,
    baseline: bool = True,
    compare_board: str = "auto",
    echo: Any = None,
    cpus: list[int] | None = None,
    _pinned: list[int] | None = None,
) -> dict[str, Any]:
    """Benchmark every variant × thread count; write bench.json/.md/.png; return the report."""
    from device.runtime import load_runtime

    say = echo or (lambda msg: log.info("%s", msg))
    if cpus:
        previous = os.sched_getaffinity(0)
        try:
            os.sched_setaffinity(0, cpus)  # inherited by every child: the pipeline and the bare loop
        except (OSError, ValueError) as e:
            raise FaceedgeError(f"--cpus {','.join(map(str, cpus))}: cannot pin to these CPUs ({e})") from None
        try:
            return run(
                model_dir,
                out=out,
                variants=variants,
                threads=threads,
                runs=runs,
                min_seconds=min_seconds,
                max_seconds=max_seconds,
                warmup_runs=warmup_runs,
                pipeline=pipeline,
                pipeline_seconds=pipeline_seconds,
                pipeline_warmup_seconds=pipeline_warmup_seconds,
                source=source,
                resolution=resolution,
                config=config,
                slice_seconds=slice_seconds,
                repeat=repeat,
                baseline=baseline,
                compare_board=compare_board,
                echo=echo,
                cpus=None,
                _pinned=cpus,
            )
        finally:
            os.sched_setaffinity(0, previous)
    root = Path(model_dir)
    found = find_variants(root, variants)
    out_dir = Path(out) if out else (root if not (root / "manifest.json").is_file() else root.parent) / "bench"
    runtime = load_runtime()
    machine = machine_info(runtime)
    cores = machine["cores_available"]
    threads = threads or list(range(1, cores + 1))
    cfg = load_bench_config(config)
    default = daemon_default_threads(cfg)
    board = machine["board_key"] if compare_board == "auto" else (None if compare_board == "none" else compare_board)
    src = source_config(source, resolution) if pipeline else None
    if pipeline and src is None and cfg is None:
        raise FaceedgeError("--source config needs --config (the device YAML whose source to use)")
    if SENSOR_VARIANT in found:
        sensor_source_check(found, src, cfg, pipeline)
    models = {v: model_summary(d) for v, d in found.items()}
    warnings: list[str] = []
    if machine["load_avg_start"] and machine["load_avg_start"][0] > 0.5 * cores:
        warnings.append(
            f"the machine was busy at start (load average {machine['load_avg_start'][0]:.2f} on "
            f"{cores} cores): absolute figures are pessimistic; the interleaved pipeline ÷ raw "
            "ratios (p50) hold better"
        )
    if machine["cpu_governor"] not in (None, "performance"):
        warnings.append(
            f"CPU governor is {machine['cpu_governor']!r}: frequency scaling widens the spread "
            "(`echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor`)"
        )
    if max(threads) > cores:
        warnings.append(f"threads {max(threads)} > {cores} available cores: oversubscribed")

    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tool": "python -m device bench",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {
            "variants": list(found),
            "threads": threads,
            "runs": runs,
            "min_seconds": min_seconds,
            "max_seconds": max_seconds,
            "warmup_runs": warmup_runs,
            "pipeline": pipeline,
            "pipeline_seconds": pipeline_seconds,
            "pipeline_warmup_seconds": pipeline_warmup_seconds,
            "slice_seconds": slice_seconds,
            "source": src,
            "source_desc": source if source in ("synthetic", "picamera2") else str(source),
            "resolution": list(resolution),
            "config": str(config) if config else None,
            "repeat": repeat,
            "default_threads": default,
            "cpus": _pinned,
            "compare_board": board,
        },
        "models": models,
        "raw": [],
        "pipeline": [],
        "bare": [],
        "sensor": [],
    }
    for rnd in range(1, repeat + 1):
        for variant, mdir in found.items():
            if variant == SENSOR_VARIANT:  # the AI Camera: only the loop exists on the Pi
                s = bench_pipeline(
                    mdir,
                    1,
                    source=src,
                    config=cfg,
                    seconds=pipeline_seconds,
                    warmup_seconds=pipeline_warmup_seconds,
                    slice_seconds=slice_seconds,
                )
                s.update(variant=variant, round=rnd, threads="sensor", published=PUBLISHED_SENSOR)
                report["sensor"].append(s)
                st = s["stages_ms"]
                dnn = st.get("sensor_dnn")
                say(
                    f"sensor   {variant:8s}: {s['fps']:.1f} fps (p50 {s['fps_p50']:.1f}), postprocess p50 "
                    f"{st['postprocess']['p50']:.3f} ms, latency p50 {st['latency']['p50']:.1f} ms"
                    + (f", sensor DNN p50 {dnn['p50']:.2f} ms" if dnn else "")
                    + f"  peak RSS {s['peak_rss_mb']:.1f} MB  first result {s['first_result_s']:.3f} s"
                )
                continue
            for t in threads:
                r = bench_raw(
                    mdir,
                    t,
                    runs=runs,
                    min_seconds=min_seconds,
                    max_seconds=max_seconds,
                    warmup_runs=warmup_runs,
                    runtime=runtime,
                )
                r.update(variant=variant, round=rnd, published=published_raw(board, models[variant], variant, t))
                report["raw"].append(r)
                st = r["latency_ms"]
                say(
                    f"raw      {variant:8s} {t} thr: p50 {st['p50']:.2f} ms  p95 {st['p95']:.2f}  "
                    f"p99 {st['p99']:.2f}  {r['fps']:.1f} fps  cv {st['cv']:.0%}"
                    + ("  (wide spread)" if r["wide_spread"] else "")
                )
                if pipeline:
                    p = bench_pipeline(
                        mdir,
                        t,
                        source=src,
                        config=cfg,
                        seconds=pipeline_seconds,
                        warmup_seconds=pipeline_warmup_seconds,
                        slice_seconds=slice_seconds,
                    )
                    ri = p["raw_interleaved"]
                    p.update(
                        variant=variant,
                        round=rnd,
                        pipeline_over_raw=p["fps"] / ri["fps"],
                        pipeline_over_raw_p50=p["fps_p50"] / ri["fps_p50"],
                        published=published_pipeline(board, models[variant], variant),
                    )
                    report["pipeline"].append(p)
                    say(
                        f"pipeline {variant:8s} {t} thr: {p['fps']:.1f} fps (p50 {p['fps_p50']:.1f}), "
                        f"÷ raw {p['pipeline_over_raw']:.3f} (p50 {p['pipeline_over_raw_p50']:.3f})  "
                        f"dropped {p['dropped_frames']}  peak RSS {p['peak_rss_mb']:.1f} MB  "
                        f"first result {p['first_result_s']:.3f} s"
                    )
                    if baseline and t == default:
                        b = bench_bare_loop(
                            mdir,
                            t,
                            source=src,
                            seconds=pipeline_seconds,
                            warmup_seconds=pipeline_warmup_seconds,
                            runtime=runtime,
                        )
                        if b is not None:
                            b.update(variant=variant, round=rnd)
                            report["bare"].append(b)
                            say(
                                f"bare     {variant:8s} {t} thr: {b['fps']:.1f} fps (p50 {b['fps_p50']:.1f})  "
                                f"peak RSS {b['peak_rss_mb']:.1f} MB  first result {b['first_result_s']:.3f} s"
                            )
    for r in report["raw"]:
        if r["wide_spread"]:
            st = r["latency_ms"]
            warnings.append(
                f"raw {r['variant']} {r['threads']} threads: wide spread (cv {st['cv']:.0%}, "
                f"p95/p50 {st['p95_over_p50']:.2f}): another process competed for the CPU, or it throttled"
            )
    if pipeline and report["pipeline"]:
        report["efficiency"] = efficiency(report["pipeline"], default, report["bare"])
        for v, e in report["efficiency"].items():
            rr = e.get("pipeline_over_raw_p50_rounds") or []
            if len(rr) > 1 and max(rr) - min(rr) > 0.1:
                warnings.append(
                    f"{v}: pipeline ÷ raw (p50) at {default} threads varied from {min(rr):.2f} to "
                    f"{max(rr):.2f} over the rounds: the median is the figure, the range its spread"
                )
        for p in report["pipeline"]:
            fw = p["stages_ms"].get("frame_wait", {}).get("p50", 0.0)
            if p["fps_p50"] > 0 and fw > 0.25 * 1000.0 / p["fps_p50"]:
                warnings.append(
                    f"pipeline {p['variant']} {p['threads']} threads: the loop waited {fw:.1f} ms per "
                    f"frame for the source (p50): it is source-bound at {p['fps_p50']:.1f} fps (a camera's "
                    "frame rate?), so pipeline ÷ raw measures the source, not the model"
                )
            if p["fps"] < 0.85 * p["fps_p50"]:
                warnings.append(
                    f"pipeline {p['variant']} {p['threads']} threads: throughput {p['fps']:.0f} fps is "
                    f"{1 - p['fps'] / p['fps_p50']:.0%} below the median frame rate {p['fps_p50']:.0f}: "
                    "the process lost the CPU to others (or stalled) during the window"
                )
        if default not in threads:
            warnings.append(f"the daemon's default thread count ({default}) was not measured: no default ratio")
        report["targets"] = check_targets(report, "int8" if "int8" in found else next(iter(found)))
    report["machine"]["temperature_c_end"] = cpu_temperature_c()
    report["machine"]["throttled_end"] = pi_throttled()
    if report["machine"]["throttled_end"] not in (None, "0x0"):
        warnings.append(
            f"the Pi reports throttling/under-voltage (get_throttled={report['machine']['throttled_end']}):"
            " figures are below what the board can do (power supply, cooling)"
        )
    report["warnings"] = warnings
    report["outputs"] = {k: str(v) for k, v in write_outputs(report, out_dir).items()}
    return report


# ------------------------------------------------------------------------------------------ remote

REMOTE_BENCH_DIR = "bench"  # results on the device: <remote-dir>/bench/<timestamp>/
# Runs on the device (sh, via the deploy's ssh helpers): in the deployed release, the same tool.
# $1 remote dir, $2 results dir (relative to it), $3 stop-service command ("" = none), $4 start
# command, then the bench flags.
REMOTE_BENCH_SH = r"""
set -u
cd && cd -- "$1" || { echo "error: no directory $1 on this device (deploy first: make deploy)" >&2; exit 3; }
out=$2; stop=$3; start=$4; shift 4
if [ ! -x current/venv/bin/python ] || [ ! -d current/model ]; then
  echo "error: $(pwd -P)/current has no deployed release (venv/bin/python, model/): run make deploy first" >&2
  exit 3
fi
config=""
[ -f current/device.yaml ] && config="--config current/device.yaml"
if [ -n "$stop" ]; then
  echo "stopping the service for the benchmark: $stop"
  sh -c "$stop" || { echo "error: could not stop the service ($stop)" >&2; exit 3; }
  trap 'echo "starting the service again: $start"; sh -c "$start"' EXIT
fi
mkdir -p "$out"
echo "results-dir=$(cd "$out" && pwd -P)"
current/venv/bin/python -m device bench --model-dir current/model $config --out "$out" "$@"
"""


def run_remote(
    hosts: str,
    *,
    port: int = 22,
    ssh_key: str | os.PathLike | None = None,
    known_hosts: str | os.PathLike | None = None,
    connect_timeout: int = 10,
    remote_dir: str = "faceedge",
    out: str | os.PathLike | None = None,
    bench_args: list[str] | None = None,
    stop_service: str | None = None,
    echo: Any = print,
) -> dict[str, dict[str, Any]]:
    """Run `device bench` in the deployed release on each host (one after the other, so two Pis
    never share the network or this machine while measuring), fetch its results, redraw the plot
    here. `stop_service`: 'systemd-user' or 'systemd-system' stops faceedge.service for the
    benchmark (the running daemon would otherwise compete for the CPU and the camera) and starts
    it again after. Returns {host: report}; raises FaceedgeError naming the host on a failure.

    ssh/rsync as deploy uses them (device/ssh.py: key only, host keys checked)."""
    from device.ssh import Host, Ssh, check_remote_dir, explain_ssh_failure, parse_hosts

    targets: list[Host] = parse_hosts(hosts)
    rdir = check_remote_dir(remote_dir)
    ssh = Ssh(
        port=port,
        key=Path(ssh_key).expanduser() if ssh_key else None,
        known_hosts=Path(known_hosts).expanduser() if known_hosts else None,
        connect_timeout=connect_timeout,
    )
    stop_cmd, start_cmd = _service_commands(stop_service)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    remote_out = f"{REMOTE_BENCH_DIR}/{stamp}"
    reports: dict[str, dict[str, Any]] = {}
    for host in targets:
        local = Path(out) if out else Path("runs") / "bench" / f"{_host_slug(host.host)}-{stamp}"
        if out and len(targets) > 1:
            local = local / _host_slug(host.host)
        argv = ssh.ssh_argv(
            host, ["sh", "-c", REMOTE_BENCH_SH, "bench", rdir, remote_out, stop_cmd, start_cmd, *(bench_args or [])]
        )
        echo(f"[{host.spec}] device bench in {rdir}/current (results: {rdir}/{remote_out})")
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        lines: list[str] = []
        abs_out = None  # rsync's remote side starts in the passwd home, not $HOME: fetch by absolute path
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if lines[-1].startswith("results-dir=") and abs_out is None:
                abs_out = lines[-1].split("=", 1)[1]
                continue
            echo(f"[{host.spec}] {lines[-1]}")
        code = proc.wait()
        if code == 255:
            raise FaceedgeError(explain_ssh_failure(host, ssh, "\n".join(lines)))
        if code != 0:
            why = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else "")
            raise FaceedgeError(f"{host.dest}: remote bench failed (exit {code}): {why.removeprefix('error: ')}")
        local.mkdir(parents=True, exist_ok=True)
        if not abs_out:
            raise FaceedgeError(f"{host.dest}: the remote bench did not say where its results are")
        src = f"{host.rsync_dest}:{abs_out}/"
        sync = ["rsync", "-a", "-e", ssh.rsync_shell(host), "--", src, f"{local}/"]
        p = subprocess.run(sync, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise FaceedgeError(
                f"{host.dest}: fetching {src} failed (exit {p.returncode}): "
                f"{(p.stderr.strip().splitlines() or [''])[-1]}"
            )
        try:
            report = json.loads((local / "bench.json").read_text())
        except (OSError, ValueError) as e:
            raise FaceedgeError(f"{local / 'bench.json'}: not fetched or not JSON ({e})") from None
        report["remote"] = {"host": host.spec, "dir": abs_out, "local": str(local)}
        if report.get("plot_backend") != "matplotlib":  # drawn with OpenCV on the Pi: redraw it here
            try:
                report["plot_backend"] = write_plot(report, local / "bench.png")
            except Exception as e:  # noqa: BLE001 - the fetched OpenCV plot stays
                log.warning("could not redraw %s: %s", local / "bench.png", e)
        report["outputs"] = {k: str(local / f"bench.{k}") for k in ("json", "md", "png")}
        atomic_write_bytes(local / "bench.json", (json.dumps(report, indent=2) + "\n").encode())
        reports[host.spec] = report
    return reports


def _service_commands(manager: str | None) -> tuple[str, str]:
    unit = "faceedge.service"
    if not manager:
        return "", ""
    if manager == "systemd-user":
        return f"systemctl --user stop {unit}", f"systemctl --user start {unit}"
    if manager == "systemd-system":
        return f"sudo -n systemctl stop {unit}", f"sudo -n systemctl start {unit}"
    raise FaceedgeError(f"--stop_service {manager!r}: choose systemd-user or systemd-system")


def _host_slug(host: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", host) or "host"


def add_remote_parser(subparsers: Any, fmt: Any = argparse.ArgumentDefaultsHelpFormatter) -> None:
    p = subparsers.add_parser(
        "bench-remote",
        formatter_class=fmt,
        help="run `bench` on Pis over ssh in the deployed release and bring the results back",
        description="Run `python -m device bench` on each host over ssh, in the deployed release "
        "(<remote_dir>/current: its venv, model and device.yaml), then fetch bench.json/.md/.png "
        "and redraw the plot here. The bench flags below are passed through.",
    )
    p.add_argument("--hosts", required=True, help="comma-separated user@host[:port] (measured one after the other)")
    p.add_argument("--port", type=int, default=22, help="ssh port (a host's own :port wins)")
    p.add_argument(
        "--ssh_key",
        "--ssh-key",
        dest="ssh_key",
        default=None,
        help="private key for ssh (None = ssh's own choice or the agent)",
    )
    p.add_argument(
        "--known_hosts",
        "--known-hosts",
        dest="known_hosts",
        default=None,
        help="known_hosts file to check host keys against (None = ~/.ssh/known_hosts)",
    )
    p.add_argument(
        "--connect_timeout",
        "--connect-timeout",
        dest="connect_timeout",
        type=int,
        default=10,
        help="ssh connect timeout, seconds",
    )
    p.add_argument(
        "--remote_dir",
        "--remote-dir",
        dest="remote_dir",
        default="faceedge",
        help="the deploy dir on the device (relative = under the user's home)",
    )
    p.add_argument(
        "--stop_service",
        "--stop-service",
        dest="stop_service",
        default=None,
        choices=["systemd-user", "systemd-system"],
        help="stop faceedge.service while measuring (it competes for CPU and camera), start it after",
    )
    p.add_argument("--out", default=None, help="local results dir (None = runs/bench/<host>-<UTC timestamp>)")
    _add_bench_args(p)
    p.set_defaults(func=_cmd_bench_remote)


def _bench_passthrough(args: argparse.Namespace) -> list[str]:
    """The bench flags the user set, serialised again for the device's `device bench`."""
    d = argparse.ArgumentParser(add_help=False)
    _add_bench_args(d)
    defaults = vars(d.parse_args([]))
    out: list[str] = []
    for action in d._actions:
        name = action.dest
        val = getattr(args, name, defaults.get(name))
        if val == defaults.get(name):
            continue
        flag = action.option_strings[0]
        if isinstance(action, (argparse._StoreFalseAction, argparse._StoreTrueAction)):
            out.append(flag)
        elif isinstance(val, list):
            out += [flag, ",".join(map(str, val))]
        elif isinstance(val, tuple):
            out += [flag, "x".join(map(str, val))]
        else:
            out += [flag, str(val)]
    return out


def _cmd_bench_remote(args: argparse.Namespace) -> int:
    reports = run_remote(
        args.hosts,
        port=args.port,
        ssh_key=args.ssh_key,
        known_hosts=args.known_hosts,
        connect_timeout=args.connect_timeout,
        remote_dir=args.remote_dir,
        out=args.out,
        bench_args=_bench_passthrough(args),
        stop_service=args.stop_service,
    )
    for host, report in reports.items():
        print(f"== {host}: {report['remote']['local']}")
        print_summary(report)
    return 0


# ------------------------------------------------------------------------------------------ CLI


def _add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--variants",
        type=lambda s: [v for v in s.split(",") if v],
        default=None,
        help="comma-separated subset of int8,float32,float16 (None = all present)",
    )
    p.add_argument(
        "--threads", type=parse_threads, default=None, help="comma-separated thread counts (None = 1 … available cores)"
    )
    p.add_argument("--runs", type=int, default=100, help="raw: timed invokes, at least")
    p.add_argument(
        "--min_seconds",
        "--min-seconds",
        dest="min_seconds",
        type=float,
        default=2.0,
        help="raw: time the invokes for at least this long",
    )
    p.add_argument(
        "--max_seconds",
        "--max-seconds",
        dest="max_seconds",
        type=float,
        default=60.0,
        help="raw: stop after this long whatever --runs says",
    )
    p.add_argument(
        "--warmup_runs",
        "--warmup-runs",
        dest="warmup_runs",
        type=int,
        default=10,
        help="raw: untimed invokes before timing",
    )
    p.add_argument(
        "--no_pipeline",
        "--no-pipeline",
        dest="pipeline",
        action="store_false",
        help="raw interpreter only (pipeline measured: %(default)s)",
    )
    p.add_argument(
        "--pipeline_seconds",
        "--pipeline-seconds",
        dest="pipeline_seconds",
        type=float,
        default=5.0,
        help="pipeline: measured window per run",
    )
    p.add_argument(
        "--pipeline_warmup_seconds",
        "--pipeline-warmup-seconds",
        dest="pipeline_warmup_seconds",
        type=float,
        default=1.0,
        help="pipeline: results discarded before the window opens",
    )
    p.add_argument(
        "--slice_seconds",
        "--slice-seconds",
        dest="slice_seconds",
        type=float,
        default=0.25,
        help="pipeline: the window alternates slices of this length of the daemon's loop and of raw "
        "invokes on its interpreter (the reference of pipeline ÷ raw)",
    )
    p.add_argument(
        "--source",
        default="synthetic",
        help="pipeline source: synthetic, picamera2, a camera index, a video file (read unpaced, "
        "looped), or config (the --config file's own source)",
    )
    p.add_argument(
        "--config",
        default=None,
        help="device YAML whose crop/decision/capture/model sections the pipeline uses (None = "
        "the daemon's defaults); its outputs are replaced by a JSONL sink to /dev/null",
    )
    p.add_argument(
        "--resolution",
        type=parse_resolution,
        default=(640, 480),
        help="pipeline frame size WIDTHxHEIGHT (synthetic/cameras; a file has its own)",
    )
    p.add_argument("--repeat", type=int, default=1, help="measure every (raw, pipeline) pair this many times")
    p.add_argument(
        "--cpus",
        type=parse_cpus,
        default=None,
        help="pin the benchmark and its children to these CPUs, e.g. 2-3 (None = no pinning); "
        "thread counts then default to 1 … len(cpus)",
    )
    p.add_argument(
        "--no_baseline",
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip the bare-loop reference (numpy + OpenCV + runtime only) at the default thread count "
        "(bare loop measured: %(default)s)",
    )
    p.add_argument(
        "--compare_board",
        "--compare-board",
        dest="compare_board",
        choices=["auto", "pi4", "pi5", "none"],
        default="auto",
        help="add the published figures of this board (auto: /proc/device-tree/model)",
    )


def add_parser(subparsers: Any) -> None:
    """Register `bench` and `bench-remote` with device/cli.py's subparsers."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = subparsers.add_parser(
        "bench",
        help="latency benchmark here: raw interpreter and the daemon's pipeline",
        description=__doc__.split("\n\n")[0],
        formatter_class=fmt,
    )
    p.add_argument(
        "--model_dir",
        "--model-dir",
        dest="model_dir",
        default="runs/latest",
        help="a run dir (export/<variant>/) or one model dir",
    )
    p.add_argument("--out", default=None, help="output dir (None = <run>/bench)")
    _add_bench_args(p)
    p.set_defaults(func=_cmd_bench)
    add_remote_parser(subparsers, fmt)


def _cmd_bench(args: argparse.Namespace) -> int:
    if (
        args.runs < 1
        or args.warmup_runs < 0
        or args.repeat < 1
        or args.pipeline_seconds <= 0
        or args.slice_seconds <= 0
        or args.pipeline_warmup_seconds < 0
    ):
        raise FaceedgeError(
            "--runs and --repeat must be ≥ 1, --warmup_runs and --pipeline_warmup_seconds ≥ 0, "
            "--pipeline_seconds and --slice_seconds > 0"
        )
    report = run(
        args.model_dir,
        out=args.out,
        variants=args.variants,
        threads=args.threads,
        runs=args.runs,
        min_seconds=args.min_seconds,
        max_seconds=args.max_seconds,
        warmup_runs=args.warmup_runs,
        pipeline=args.pipeline,
        pipeline_seconds=args.pipeline_seconds,
        pipeline_warmup_seconds=args.pipeline_warmup_seconds,
        source=args.source,
        resolution=args.resolution,
        config=args.config,
        slice_seconds=args.slice_seconds,
        repeat=args.repeat,
        baseline=args.baseline,
        compare_board=args.compare_board,
        echo=print,
        cpus=args.cpus,
    )
    print_summary(report)
    return 0


def print_summary(report: dict[str, Any]) -> None:
    for w in report.get("warnings", []):
        print(f"warning: {w}")
    t = report.get("targets") or {}
    for k in ("peak_rss_mb", "first_result_s"):
        if k in t:
            c = t[k]
            print(
                f"{k} ({t['variant']}, {t['threads']} thr): {_fmt(c['value'], 3)} (target ≤ {c['max']}"
                f"{'' if c.get('ok') else ', MISSED'})"
            )
    print("wrote " + ", ".join(report["outputs"].values()))
    for line in efficiency_lines(report):  # last, as the issue asks
        print(line)


def main(argv: list[str] | None = None) -> int:
    """`python -m device.bench ...` (the CLI is `python -m device bench`); also the pipeline child."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD_FLAG]:
        try:
            result = _pipeline_child(json.loads(Path(argv[1]).read_text()))
        except FaceedgeError as e:
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code
        atomic_write_bytes(argv[2], json.dumps(result).encode())
        return 0
    from device.cli import standalone

    return standalone(add_parser, "python -m device.bench", argv)


if __name__ == "__main__":
    raise SystemExit(main())
