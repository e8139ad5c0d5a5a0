"""One benchmark: every variant × thread count, raw and pipeline, then the report files.

`BenchOptions` holds what `python -m device bench` accepts; `run(options)` measures and writes
``bench.json`` (with the machine), ``bench.md`` (tables) and ``bench.png`` (latency plot) to
``<run>/bench/`` (or ``out``) and returns the report. Its ``summary`` holds the figures a user
reads first (device.bench.report.summarize), from this one run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from device.bench import apis, footprint, pipeline
from device.bench.machine import cpu_temperature_c, machine_info, pi_throttled
from device.bench.markdown import render_markdown
from device.bench.models import find_variants, model_summary
from device.bench.plot import write_plot
from device.bench.published import published_pipeline, published_raw
from device.bench.raw import bench_raw
from device.bench.report import efficiency, summarize
from device.bench.sensor import PUBLISHED_SENSOR, SENSOR_VARIANT, sensor_line, sensor_source_check
from device.bench.stats import round_floats
from device.errors import FaceedgeError
from device.files import atomic_write_bytes

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    """What one benchmark measures and how long (the `device bench` flags, same names)."""

    model_dir: str | os.PathLike = "runs/latest"  # a run dir (export/<variant>/) or one model dir
    out: str | os.PathLike | None = None  # None: <run>/bench
    variants: tuple[str, ...] | None = None  # None: every CPU variant present
    threads: tuple[int, ...] | None = None  # None: 1 … available cores
    runs: int = 100  # raw: timed invokes, at least
    min_seconds: float = 2.0  # raw: time the invokes for at least this long
    max_seconds: float = 60.0  # raw: stop after this long whatever `runs` says
    warmup_runs: int = 10  # raw: untimed invokes before timing
    pipeline: bool = True  # measure the daemon's loop too
    pipeline_seconds: float = 5.0  # pipeline: measured window per run
    pipeline_warmup_seconds: float = 1.0  # pipeline: results discarded before the window opens
    slice_seconds: float = 0.25  # pipeline: length of the alternating loop / raw slices
    source: str = "synthetic"  # pipeline source (see device.bench.pipeline.source_config)
    resolution: tuple[int, int] = (640, 480)  # pipeline frame size (width, height)
    config: str | os.PathLike | None = None  # device YAML whose crop/decision/capture/model sections apply
    repeat: int = 1  # measure every (raw, pipeline) pair this many times
    baseline: bool = True  # the bare-loop reference at the default thread count
    compare_board: str = "auto"  # published figures of this board (auto: /proc/device-tree/model)
    cpus: tuple[int, ...] | None = None  # pin the benchmark and its children to these CPUs
    extras: bool = True  # the CLI daemon's footprint, --help time, both runtime APIs, litert-benchmark

    def __post_init__(self) -> None:
        if (
            self.runs < 1
            or self.warmup_runs < 0
            or self.repeat < 1
            or self.pipeline_seconds <= 0
            or self.slice_seconds <= 0
            or self.pipeline_warmup_seconds < 0
        ):
            raise FaceedgeError(
                "--runs and --repeat must be ≥ 1, --warmup-runs and --pipeline-warmup-seconds ≥ 0, "
                "--pipeline-seconds and --slice-seconds > 0"
            )


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


@contextlib.contextmanager
def pinned(cpus: tuple[int, ...] | None) -> Iterator[None]:
    """Pin this process (and so every child: the pipeline and the bare loop) to `cpus`; restore after."""
    if not cpus:
        yield
        return
    previous = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, cpus)
    except (OSError, ValueError) as e:
        raise FaceedgeError(f"--cpus {','.join(map(str, cpus))}: cannot pin to these CPUs ({e})") from None
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


@dataclasses.dataclass
class _Plan:
    """What the measurements need beside the report: the model dirs, the runtime, the device config."""

    model_dirs: dict[str, Path]
    runtime: Any
    device_config: dict[str, Any] | None
    out_dir: Path
    warnings: list[str]


def run(opts: BenchOptions, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Benchmark every variant × thread count; write bench.json/.md/.png; return the report."""
    say = echo or (lambda msg: log.info("%s", msg))
    with pinned(opts.cpus):
        report, plan = _prepare(opts)
        for rnd in range(1, opts.repeat + 1):
            for variant, model_dir in plan.model_dirs.items():
                if variant == SENSOR_VARIANT:
                    _measure_sensor(report, plan, opts, variant, model_dir, rnd, say)
                else:
                    _measure_cpu(report, plan, opts, variant, model_dir, rnd, say)
        cpu_variants = [v for v in plan.model_dirs if v != SENSOR_VARIANT]
        if opts.extras and cpu_variants:
            _measure_extras(report, plan, opts, "int8" if "int8" in cpu_variants else cpu_variants[0], say)
        return _conclude(report, plan, opts)


def _prepare(opts: BenchOptions) -> tuple[dict[str, Any], _Plan]:
    """The report before any measurement (machine, settings, models), and the plan."""
    from device.runtime import load_runtime

    root = Path(opts.model_dir)
    found = find_variants(root, opts.variants)
    out_dir = (
        Path(opts.out) if opts.out else (root if not (root / "manifest.json").is_file() else root.parent) / "bench"
    )
    runtime = load_runtime()
    machine = machine_info(runtime)
    cores = machine["cores_available"]
    threads = list(opts.threads or range(1, cores + 1))
    cfg = load_bench_config(opts.config)
    default = daemon_default_threads(cfg)
    compare = opts.compare_board
    board = machine["board_key"] if compare == "auto" else (None if compare == "none" else compare)
    src = pipeline.source_config(opts.source, opts.resolution) if opts.pipeline else None
    if opts.pipeline and src is None and cfg is None:
        raise FaceedgeError("--source config needs --config (the device YAML whose source to use)")
    if SENSOR_VARIANT in found:
        sensor_source_check(found, src, cfg, opts.pipeline)
    warnings: list[str] = []
    load = machine["load_avg_start"]
    if load and load[0] > 0.5 * cores:
        warnings.append(
            f"the machine was busy at start (load average {load[0]:.2f} on "
            f"{cores} cores): absolute figures are pessimistic; the interleaved pipeline ÷ raw "
            "ratios hold better"
        )
    if machine["cpu_governor"] not in (None, "performance"):
        warnings.append(
            f"CPU governor is {machine['cpu_governor']!r}: frequency scaling widens the spread "
            "(`echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor`)"
        )
    if max(threads) > cores:
        warnings.append(f"threads {max(threads)} > {cores} available cores: oversubscribed")
    report = {
        "schema_version": SCHEMA_VERSION,
        "tool": "python -m device bench",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {
            "variants": list(found),
            "threads": threads,
            "runs": opts.runs,
            "min_seconds": opts.min_seconds,
            "max_seconds": opts.max_seconds,
            "warmup_runs": opts.warmup_runs,
            "pipeline": opts.pipeline,
            "pipeline_seconds": opts.pipeline_seconds,
            "pipeline_warmup_seconds": opts.pipeline_warmup_seconds,
            "slice_seconds": opts.slice_seconds,
            "source": src,
            "source_desc": opts.source if opts.source in ("synthetic", "picamera2") else str(opts.source),
            "resolution": list(opts.resolution),
            "config": str(opts.config) if opts.config else None,
            "repeat": opts.repeat,
            "default_threads": default,
            "cpus": list(opts.cpus) if opts.cpus else None,
            "compare_board": board,
        },
        "models": {v: model_summary(d) for v, d in found.items()},
        "raw": [],
        "pipeline": [],
        "bare": [],
        "sensor": [],
        "extras": {},
    }
    return report, _Plan(found, runtime, cfg, out_dir, warnings)


def _measure_sensor(
    report: dict, plan: _Plan, opts: BenchOptions, variant: str, model_dir: Path, rnd: int, say
) -> None:
    """The AI Camera: only the loop exists on the Pi."""
    result = pipeline.bench_pipeline(
        model_dir,
        1,
        source=report["settings"]["source"],
        config=plan.device_config,
        seconds=opts.pipeline_seconds,
        warmup_seconds=opts.pipeline_warmup_seconds,
        slice_seconds=opts.slice_seconds,
    )
    result.update(variant=variant, round=rnd, threads="sensor", published=PUBLISHED_SENSOR)
    report["sensor"].append(result)
    say(sensor_line(variant, result))


def _measure_cpu(report: dict, plan: _Plan, opts: BenchOptions, variant: str, model_dir: Path, rnd: int, say) -> None:
    """Raw, then pipeline (and the bare loop at the default thread count), for every thread count."""
    settings, board, model = report["settings"], report["settings"]["compare_board"], report["models"][variant]
    for threads in settings["threads"]:
        raw = bench_raw(
            model_dir,
            threads,
            runs=opts.runs,
            min_seconds=opts.min_seconds,
            max_seconds=opts.max_seconds,
            warmup_runs=opts.warmup_runs,
            runtime=plan.runtime,
        )
        raw.update(variant=variant, round=rnd, published=published_raw(board, model, variant, threads))
        report["raw"].append(raw)
        lat = raw["latency_ms"]
        say(
            f"raw      {variant:8s} {threads} thr: p50 {lat['p50']:.2f} ms  p95 {lat['p95']:.2f}  "
            f"p99 {lat['p99']:.2f}  {raw['fps']:.1f} fps  cv {lat['cv']:.0%}"
            + ("  (wide spread)" if raw["wide_spread"] else "")
        )
        if not opts.pipeline:
            continue
        pipe = pipeline.bench_pipeline(
            model_dir,
            threads,
            source=settings["source"],
            config=plan.device_config,
            seconds=opts.pipeline_seconds,
            warmup_seconds=opts.pipeline_warmup_seconds,
            slice_seconds=opts.slice_seconds,
        )
        raw_slices = pipe["raw_interleaved"]
        pipe.update(
            variant=variant,
            round=rnd,
            pipeline_over_raw=pipe["fps"] / raw_slices["fps"],
            pipeline_over_raw_throughput=pipe["throughput_fps"] / raw_slices["throughput_fps"],
            published=published_pipeline(board, model, variant),
        )
        report["pipeline"].append(pipe)
        say(
            f"pipeline {variant:8s} {threads} thr: {pipe['fps']:.1f} fps, ÷ raw {pipe['pipeline_over_raw']:.3f}  "
            f"dropped {pipe['dropped_frames']}  peak RSS {pipe['peak_rss_mb']:.1f} MB  "
            f"first result {pipe['first_result_s']:.3f} s"
        )
        if not (opts.baseline and threads == settings["default_threads"]):
            continue
        bare = pipeline.bench_bare_loop(
            model_dir,
            threads,
            source=settings["source"],
            seconds=opts.pipeline_seconds,
            warmup_seconds=opts.pipeline_warmup_seconds,
            runtime=plan.runtime,
        )
        if bare is not None:
            bare.update(variant=variant, round=rnd)
            report["bare"].append(bare)
            say(
                f"bare     {variant:8s} {threads} thr: {bare['fps']:.1f} fps  "
                f"peak RSS {bare['peak_rss_mb']:.1f} MB  first result {bare['first_result_s']:.3f} s"
            )


def _measure_extras(report: dict, plan: _Plan, opts: BenchOptions, variant: str, say) -> None:
    """What the user runs, beside the loop: the CLI daemon with every output (peak RSS, exec → first
    result), `--help`, the runtime's two APIs and its own benchmark tool, at the default threads."""
    from device.manifest import load_manifest

    threads = report["settings"]["default_threads"]
    model_dir = plan.model_dirs[variant]
    _, model_path = load_manifest(model_dir)
    model = report["models"][variant]
    extras = report["extras"]
    extras["variant"], extras["threads"] = variant, threads
    extras["help"] = footprint.help_seconds()
    say(f"--help   {extras['help']['median_s']:.3f} s (median of {extras['help']['runs']})")
    if opts.pipeline and opts.baseline:
        daemon = footprint.daemon_footprint(
            model_dir, threads, resolution=opts.resolution, seconds=opts.pipeline_seconds + opts.pipeline_warmup_seconds
        )
        if daemon is not None:
            extras["daemon"] = daemon
            say(
                f"daemon   {variant:8s} {threads} thr: `device run` with {daemon['outputs']}: peak RSS "
                f"{daemon['peak_rss_mb']:.1f} MB, exec → first result {daemon['first_result_from_exec_s']:.3f} s"
            )
    extras["apis"] = apis.compare_apis(
        model_path,
        threads,
        [1, *model["input_size"], 3],
        model["input_dtype"],
        runs=opts.runs,
        min_seconds=min(opts.min_seconds, 2.0),
        warmup_runs=opts.warmup_runs,
    )
    compared = extras["apis"]
    if "faster" in compared:
        say(
            f"APIs     {variant:8s} {threads} thr: Interpreter p50 {compared['interpreter']['p50_ms']:.2f} ms, "
            f"{compared['interpreter']['peak_rss_mb']:.1f} MB; CompiledModel p50 "
            f"{compared['compiled_model']['p50_ms']:.2f} ms, "
            f"{compared['compiled_model']['peak_rss_mb']:.1f} MB"
        )
    tool = apis.litert_benchmark(model_path, threads, runs=opts.runs, warmup_runs=opts.warmup_runs)
    raws = [r for r in report["raw"] if r["variant"] == variant and r["threads"] == threads]
    if raws:
        median = float(np.median([r["latency_ms"]["p50"] for r in raws]))
        extras["litert_benchmark"] = apis.cross_check(median, tool, compared, any(r["wide_spread"] for r in raws))
    else:
        extras["litert_benchmark"] = {"error": f"no raw run at {threads} threads to compare with", **tool}


def _conclude(report: dict, plan: _Plan, opts: BenchOptions) -> dict[str, Any]:
    """Efficiency, targets, the warnings the figures call for; then the files."""
    found, warnings = plan.model_dirs, plan.warnings
    default = report["settings"]["default_threads"]
    for raw in report["raw"]:
        if raw["wide_spread"]:
            lat = raw["latency_ms"]
            warnings.append(
                f"raw {raw['variant']} {raw['threads']} threads: wide spread (cv {lat['cv']:.0%}, "
                f"p95/p50 {lat['p95_over_p50']:.2f}): another process competed for the CPU, or it throttled"
            )
    if opts.pipeline and report["pipeline"]:
        report["efficiency"] = efficiency(report["pipeline"], default, report["bare"])
        warnings += _pipeline_warnings(report, default)
    report["machine"]["temperature_c_end"] = cpu_temperature_c()
    report["machine"]["throttled_end"] = pi_throttled()
    if report["machine"]["throttled_end"] not in (None, "0x0"):
        warnings.append(
            f"the Pi reports throttling/under-voltage (get_throttled={report['machine']['throttled_end']}):"
            " figures are below what the board can do (power supply, cooling)"
        )
    report["summary"] = summarize(report, "int8" if "int8" in found else next(iter(found)))
    cross = report.get("extras", {}).get("litert_benchmark", {})
    if cross.get("error"):
        warnings.append(f"litert-benchmark cross-check not made: {cross['error']}")
    report["warnings"] = warnings
    report["outputs"] = {k: str(v) for k, v in write_outputs(report, plan.out_dir).items()}
    return report


def _pipeline_warnings(report: dict, default: int) -> list[str]:
    warnings = []
    for variant, e in report["efficiency"].items():
        rounds = e.get("pipeline_over_raw_rounds") or []
        if len(rounds) > 1 and max(rounds) - min(rounds) > 0.1:
            warnings.append(
                f"{variant}: pipeline ÷ raw at {default} threads varied from {min(rounds):.2f} to "
                f"{max(rounds):.2f} over the rounds: the median is the figure, the range its spread"
            )
    for pipe in report["pipeline"]:
        frame_wait = pipe["stages_ms"].get("frame_wait", {}).get("p50", 0.0)
        if pipe["fps"] > 0 and frame_wait > 0.25 * 1000.0 / pipe["fps"]:
            warnings.append(
                f"pipeline {pipe['variant']} {pipe['threads']} threads: the loop waited {frame_wait:.1f} ms per "
                f"frame for the source (p50): it is source-bound at {pipe['fps']:.1f} fps (a camera's "
                "frame rate?), so pipeline ÷ raw measures the source, not the model"
            )
        if pipe["throughput_fps"] < 0.85 * pipe["fps"]:
            warnings.append(
                f"pipeline {pipe['variant']} {pipe['threads']} threads: frames ÷ time, {pipe['throughput_fps']:.0f}, "
                f"is {1 - pipe['throughput_fps'] / pipe['fps']:.0%} below the fps of the median frame, "
                f"{pipe['fps']:.0f}: "
                "the process lost the CPU to others (or stalled) during the window"
            )
    if default not in report["settings"]["threads"]:
        warnings.append(f"the daemon's default thread count ({default}) was not measured: no default ratio")
    return warnings


def write_outputs(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """bench.json, bench.md, bench.png (each written atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "bench.json", "md": out_dir / "bench.md", "png": out_dir / "bench.png"}
    report["plot_backend"] = write_plot(report, paths["png"])
    atomic_write_bytes(paths["json"], (json.dumps(round_floats(report), indent=2) + "\n").encode())
    atomic_write_bytes(paths["md"], render_markdown(report).encode())
    return paths
