"""What a benchmark concludes: pipeline ÷ raw efficiency, and the summary a user reads first."""

from __future__ import annotations

from typing import Any

import numpy as np


def _ratios(pipes: dict[int, dict], key: str, default: int) -> dict[str, Any]:
    """Ratios of one round with one fps estimator (`fps` or `throughput_fps`); raw = the interleaved
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

    The fps figure is 1000 ÷ the median time per frame (`fps`): preemptions by other processes land
    in the tail, not the median, so on a shared machine it compares the code rather than the
    neighbours, and on a quiet one it agrees with frames ÷ time (`throughput_fps`, kept in
    bench.json: every time slice another process takes counts against it; `_throughput` ratios).
    """
    out: dict[str, Any] = {}
    for variant in sorted({p["variant"] for p in pipeline}):
        rounds = sorted({p["round"] for p in pipeline if p["variant"] == variant})
        acc: dict[str, dict[str, list]] = {"fps": {}, "throughput_fps": {}}
        for rnd in rounds:
            pipes = {p["threads"]: p for p in pipeline if p["variant"] == variant and p["round"] == rnd}
            for key in acc:
                ratios = _ratios(pipes, key, default_threads)
                for t, x in ratios["same_threads"].items():
                    acc[key].setdefault(f"t{t}", []).append(x)
                if "default_over_best" in ratios:
                    acc[key].setdefault("default_over_best", []).append(ratios["default_over_best"])
                    acc[key].setdefault("best_threads", []).append(ratios["best_threads"])
        entry: dict[str, Any] = {"default_threads": default_threads}
        for key, suffix in (("fps", ""), ("throughput_fps", "_throughput")):
            collected = acc[key]
            per = {
                k[1:]: float(np.median(v))
                for k, v in sorted(collected.items(), key=lambda kv: kv[0])
                if k.startswith("t")
            }
            entry[f"pipeline_over_raw{suffix}"] = dict(sorted(per.items(), key=lambda kv: int(kv[0])))
            if str(default_threads) in per:
                entry[f"pipeline_over_raw{suffix}_at_default"] = per[str(default_threads)]
                entry[f"pipeline_over_raw{suffix}_rounds"] = collected[f"t{default_threads}"]
            if collected.get("default_over_best"):
                entry[f"pipeline_default_over_best_raw{suffix}"] = float(np.median(collected["default_over_best"]))
                bt = collected["best_threads"]
                entry[f"best_raw_threads{suffix}"] = max(set(bt), key=bt.count)
        bares = [b for b in (bare or []) if b["variant"] == variant]
        pipes_d = [p for p in pipeline if p["variant"] == variant and p["threads"] == default_threads]
        pairs = [(p, b) for p in pipes_d for b in bares if b["round"] == p["round"]]
        if pairs:
            entry["pipeline_over_bare"] = float(np.median([p["fps"] / b["fps"] for p, b in pairs]))
            entry["pipeline_over_bare_throughput"] = float(
                np.median([p["throughput_fps"] / b["throughput_fps"] for p, b in pairs])
            )
            entry["rss_over_bare_mb"] = float(np.median([p["peak_rss_mb"] - b["peak_rss_mb"] for p, b in pairs]))
        out[variant] = entry
    return out


def _median(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.median(xs)) if xs else None


def summarize(report: dict[str, Any], variant: str = "int8") -> dict[str, Any]:
    """The figures a user reads first, for `variant` at the daemon's default thread count, from this
    run (medians over rounds): one fps (1000 ÷ the median time per frame), the end-to-end latency percentiles, pipeline
    at default ÷ best pipeline over the thread counts, pipeline ÷ raw at 1 thread, the CLI daemon's
    peak RSS and its excess over the bare loop, start-up, both runtime APIs, litert-benchmark."""
    default = report["settings"]["default_threads"]
    out: dict[str, Any] = {"variant": variant, "default_threads": default}
    pipes = [p for p in report.get("pipeline", []) if p["variant"] == variant]
    fps = {t: _median(p["fps"] for p in pipes if p["threads"] == t) for t in sorted({p["threads"] for p in pipes})}
    if default in fps:
        best = max(fps, key=lambda t: fps[t])
        out.update(
            pipeline_fps=fps[default],
            best_pipeline_threads=best,
            best_pipeline_fps=fps[best],
            pipeline_default_over_best=fps[default] / fps[best],
        )
        at_d = [
            p["stages_ms"]["end_to_end"] for p in pipes if p["threads"] == default and "end_to_end" in p["stages_ms"]
        ]
        if at_d:
            out["latency_ms"] = {k: _median(e[k] for e in at_d) for k in ("p50", "p95", "p99")}
    eff = report.get("efficiency", {}).get(variant, {})
    if "1" in eff.get("pipeline_over_raw", {}):
        out["pipeline_over_raw_1_thread"] = eff["pipeline_over_raw"]["1"]
    extras = report.get("extras") or {}
    if "help" in extras:
        out["help_s"] = extras["help"]["median_s"]
    daemon = extras.get("daemon")
    if daemon:
        out["daemon_peak_rss_mb"] = daemon["peak_rss_mb"]
        out["exec_to_first_result_s"] = daemon["first_result_from_exec_s"]
        for part in ("anon", "file"):
            if f"rss_{part}_mb" in daemon:
                out[f"daemon_rss_{part}_mb"] = daemon[f"rss_{part}_mb"]
        bares = [b for b in report.get("bare", []) if b["variant"] == variant]
        bare = _median(b["peak_rss_mb"] for b in bares)
        if bare is not None:
            out["bare_loop_peak_rss_mb"] = bare
            out["daemon_rss_over_bare_mb"] = daemon["peak_rss_mb"] - bare
            for part in ("anon", "file"):
                if all(f"rss_{part}_mb" in b for b in bares):
                    out[f"bare_loop_rss_{part}_mb"] = _median(b[f"rss_{part}_mb"] for b in bares)
    apis = extras.get("apis") or {}
    for api in ("interpreter", "compiled_model"):
        if "p50_ms" in apis.get(api, {}):
            out[f"{api}_p50_ms"] = apis[api]["p50_ms"]
            out[f"{api}_peak_rss_mb"] = apis[api]["peak_rss_mb"]
            out[f"{api}_load_ms"] = apis[api]["load_ms"]
    cross = extras.get("litert_benchmark") or {}
    if "litert_benchmark_median_ms" in cross:
        out["litert_benchmark_median_ms"] = cross["litert_benchmark_median_ms"]
        out["bench_raw_median_ms"] = cross["bench_median_ms"]
        out["litert_benchmark_agree"] = cross["agree"]
        if "why" in cross:
            out["litert_benchmark_why"] = cross["why"]
    return out
