"""The daemon's whole code path, measured in a fresh child process (`python -m device.bench.pipeline`).

The child runs `device.daemon.Daemon` (source → crop → preprocess → invoke → postprocess → output)
so that its peak RSS is the daemon's alone, not the benchmark's (which holds other interpreters):
per-stage p50/p95/p99, end-to-end fps, dropped frames, peak RSS (VmHWM), CPU use, time from start
to first result. Its window alternates slices of the daemon's loop and of raw invokes on the
daemon's own interpreter, so pipeline ÷ raw compares two figures taken in the same process at the
same moment.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from pathlib import Path
from typing import Any

import numpy as np

from device.bench.memory import memory_mb
from device.bench.stats import summarize
from device.errors import FaceedgeError
from device.files import atomic_write_bytes

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Run by path (``-P``: its own folder is not put on sys.path): nothing of the project is imported.
BARE_LOOP_SCRIPT = Path(__file__).resolve().with_name("bareloop.py")


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


def child_env() -> dict[str, str]:
    """The environment of a bench child: this checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_spec_child(
    cmd: list[str], spec: dict[str, Any], *, prefix: str, timeout: float, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, dict[str, Any] | None]:
    """Run `cmd SPEC.json RESULT.json` with `spec` (stamped `spawned_at`) written for it: the finished
    process and the result it wrote (None when it failed or wrote none). TimeoutExpired propagates."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps({**spec, "spawned_at": time.time()}))
        proc = subprocess.run(
            [*cmd, str(spec_path), str(out_path)], env=env, capture_output=True, text=True, timeout=timeout
        )
        ok = proc.returncode == 0 and out_path.is_file()
        return proc, json.loads(out_path.read_text()) if ok else None


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
    limit = timeout if timeout is not None else 60.0 + 4 * (seconds + warmup_seconds)
    cmd = [sys.executable, "-m", "device.bench.pipeline"]
    try:
        proc, result = run_spec_child(cmd, spec, prefix="faceedge-bench-", timeout=limit, env=child_env())
    except subprocess.TimeoutExpired:
        raise FaceedgeError(
            f"pipeline bench of {model_dir} ({threads} threads) did not finish in {limit:.0f} s"
        ) from None
    if result is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise FaceedgeError(
            f"pipeline bench of {model_dir} ({threads} threads) failed "
            f"(exit {proc.returncode}): {tail[0].removeprefix('error: ')}"
        )
    return result


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM; ru_maxrss where /proc is absent)."""
    peak = memory_mb().get("peak_rss_mb")
    if peak is not None:
        return peak
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


class TimedSource:
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


class _Window:
    """What the measured window collects: per stage, one compact column of float64 (not a dict per
    result: ~0.6 kB each, ~1.5 MB per window at 450 fps, which would show in the daemon's peak RSS
    measured here), and per slice the publish times of its results."""

    def __init__(self) -> None:
        self.columns: dict[str, array] = {}
        self.slices: list[list[float]] = []
        self.slice_wall = 0.0  # time.time() when the current pipeline slice began

    def start_slice(self) -> None:
        self.slices.append([])
        self.slice_wall = time.time()

    def on_result(self, result: Any) -> None:
        now = time.perf_counter()
        e2e = (time.time() - result.timestamp) * 1e3  # capture → published (outputs included)
        if result.timestamp >= self.slice_wall:  # not a frame that waited through the raw slice
            stages = result.stages_ms
            publish = max(0.0, e2e - stages.get("latency", e2e))
            for name, ms in (*stages.items(), ("publish", publish), ("end_to_end", e2e)):
                self.columns.setdefault(name, array("d")).append(ms)
        self.slices[-1].append(now)


def pipeline_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in a fresh child process: the daemon's own code path (`Daemon.start()` + `run()`).

    After the first result and a warm-up, the measured window alternates short slices of the
    daemon's loop (`Daemon.run(max_seconds=slice)`) and of raw invokes on the daemon's very
    interpreter (same model, same threads, same process). Both therefore see the same
    neighbours on a shared machine, and pipeline ÷ raw compares the code, not the moment.
    Between slices the capture thread keeps its frames ready (an unpaced source reads up to two
    ahead, then blocks), so results of frames captured before their slice began are counted for
    fps but left out of the per-stage statistics (their age is the raw slice's length).
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    t_imports = time.monotonic()
    from device.daemon import Daemon
    from device.imx500 import bind_source
    from device.sources import build_source
    from device.sources.imx500 import Imx500Source

    imports_s = time.monotonic() - t_imports
    cfg = bench_config(spec)
    capture_ms = array("d")  # appended by the capture thread (one float per read)
    kpi: list[tuple[float, float]] = []
    seconds, warmup = float(spec["seconds"]), float(spec["warmup_seconds"])
    slice_s = float(spec.get("slice_seconds") or 0.25)
    perf = time.perf_counter
    first_wall: list[float] = []
    window = _Window()

    def timed_source():  # called in the capture thread, after start() loaded the model
        src = build_source(bind_source(daemon.classifier, cfg))  # the AI Camera: with the model's network
        return TimedSource(src, capture_ms, kpi if isinstance(src, Imx500Source) else None)

    daemon = Daemon(cfg, model_dir=spec["model_dir"], source_factory=timed_source)
    pipe_s = raw_s = cpu_s = 0.0
    dropped = captured = 0
    raw_samples = array("d")
    capture_in_window = array("d")
    limit = 60.0 + 3 * (seconds + warmup)
    with daemon:
        daemon.run(
            threading.Event(), max_frames=1, max_seconds=limit, on_result=lambda r: first_wall.append(time.time())
        )
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
        kpi_start = len(kpi)
        while pipe_s < seconds:
            grabber = daemon.grabber
            dropped0, captured0, reads0 = grabber.stats.dropped, grabber.stats.captured, len(capture_ms)
            cpu0, t0 = os.times(), perf()
            window.start_slice()
            daemon.run(threading.Event(), max_seconds=slice_s, on_result=window.on_result)
            t1, cpu1 = perf(), os.times()
            if grabber.finished:
                raise FaceedgeError(
                    f"the source ended or failed during the measurement ({grabber.state}); "
                    "use a longer file, or a looping or synthetic source"
                )
            pipe_s += t1 - t0
            cpu_s += (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
            dropped += grabber.stats.dropped - dropped0
            captured += grabber.stats.captured - captured0
            capture_in_window.extend(capture_ms[reads0:])
            t_raw = perf()
            while not on_sensor and perf() - t_raw < slice_s:
                t = perf()
                clf.invoke()
                raw_samples.append((perf() - t) * 1e3)
            raw_s += perf() - t_raw
        stats = daemon.stats
        threads_used, runtime = clf.num_threads, f"{clf.runtime.name} {clf.runtime.version}"
        input_shape = list(daemon.input_shape)
        source_desc = daemon.grabber.source_name
    results = sum(len(stamps) for stamps in window.slices)
    intervals = np.concatenate([np.diff(s) for s in window.slices if len(s) > 1] or [np.zeros(0)]) * 1e3
    if not window.columns or intervals.size == 0:
        raise FaceedgeError(
            f"pipeline produced too few results to measure: the source is slower than {2 / slice_s:.0f} fps or stalled"
        )
    stage_names = list(window.columns)
    per_stage = {name: summarize(window.columns[name]) for name in stage_names}
    if capture_in_window:
        per_stage = {"capture": summarize(capture_in_window), **per_stage}
        stage_names = ["capture", *stage_names]
    if len(kpi) > kpi_start:  # the sensor's own timings of the frames read in the window
        per_stage["sensor_dnn"] = summarize(k[0] for k in kpi[kpi_start:])
        per_stage["sensor_dsp"] = summarize(k[1] for k in kpi[kpi_start:])
        stage_names += ["sensor_dnn", "sensor_dsp"]
    raw_interleaved = None
    if not on_sensor:
        raw_stats = summarize(raw_samples)
        raw_interleaved = {
            "latency_ms": raw_stats,
            "seconds": raw_s,
            "fps": 1000.0 / raw_stats["p50"],
            "throughput_fps": len(raw_samples) / raw_s,
        }
    return {
        "threads": int(spec["threads"]),
        "threads_used": threads_used,
        "runtime": runtime,
        "source": source_desc,
        "model_input": input_shape,
        "frames": results,
        "seconds": pipe_s,
        "slices": len(window.slices),
        "slice_seconds": slice_s,
        "fps": 1000.0 / float(np.median(intervals)),  # the one fps figure (device.bench.report)
        "throughput_fps": results / pipe_s,
        "frames_captured": captured,
        "dropped_frames": dropped,
        "stage_names": stage_names,
        "stages_ms": per_stage,
        "raw_interleaved": raw_interleaved,
        "cpu_percent": 100.0 * cpu_s / pipe_s,
        "peak_rss_mb": peak_rss_mb(),
        "first_result_s": stats.get("start_to_first_result_s"),
        "model_load_s": stats.get("model_load_s"),
        "first_result_from_exec_s": first_wall[0] - float(spec["spawned_at"]),
        "imports_s": imports_s,
    }


def bench_bare_loop(
    model_dir: Path,
    threads: int,
    *,
    source: dict[str, Any] | None,
    seconds: float = 5.0,
    warmup_seconds: float = 1.0,
    runtime: Any | None = None,
) -> dict[str, Any] | None:
    """Run the bare loop on `model_dir` with the bench's `source`; its figures, or None where it
    cannot run (no /proc, a camera: the bare loop would fight the daemon's measurements for it)."""
    from device.manifest import load_manifest
    from device.runtime import RUNTIMES, load_runtime

    if source is None or source.get("type") not in ("synthetic", "opencv") or not Path("/proc/self/status").exists():
        return None
    if source["type"] == "opencv" and not Path(str(source["device"])).is_file():
        return None
    runtime = runtime or load_runtime()
    module = next(m for m, dist in RUNTIMES if dist == runtime.name)
    _, model_path = load_manifest(model_dir)
    spec = {
        "model_path": str(model_path),
        "threads": threads,
        "runtime_module": module,
        "source": source,
        "seconds": seconds,
        "warmup_seconds": warmup_seconds,
    }
    cmd = [sys.executable, "-P", str(BARE_LOOP_SCRIPT)]
    try:
        proc, out = run_spec_child(cmd, spec, prefix="faceedge-bare-", timeout=60.0 + 3 * (seconds + warmup_seconds))
    except subprocess.TimeoutExpired:
        log.warning("bare loop of %s (%d threads) timed out", model_dir, threads)
        return None
    if out is None:
        log.warning("bare loop of %s failed: %s", model_dir, (proc.stderr.strip().splitlines() or ["?"])[-1])
        return None
    out["threads"] = threads
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m device.bench.pipeline SPEC.json RESULT.json`: the child `bench_pipeline` starts."""
    spec_path, out_path = sys.argv[1:3] if argv is None else argv[:2]
    try:
        result = pipeline_child(json.loads(Path(spec_path).read_text()))
    except FaceedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    atomic_write_bytes(out_path, json.dumps(result).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
