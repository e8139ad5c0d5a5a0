"""What a benchmark concludes: pipeline ÷ raw efficiency and the daemon's targets."""

from __future__ import annotations

from typing import Any

import numpy as np

# The project's targets for the daemon, checked and reported, never enforced.
TARGETS = {
    "pipeline_over_raw_min": 0.95,
    "pipeline_default_over_best_raw_min": 0.85,
    "peak_rss_mb_max": 100.0,
    "first_result_s_max": 1.0,
}


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
