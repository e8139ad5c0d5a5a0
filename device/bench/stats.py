"""Latency statistics of the benchmark: percentiles, spread, and JSON-friendly rounding."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

STAT_KEYS = ("mean", "std", "min", "p50", "p95", "p99", "max")
# Spread above which a latency series is called "wide": the machine is busy, throttling or
# migrating threads, and the figures should be re-measured before they are trusted.
WIDE_CV = 0.15  # std / mean
WIDE_TAIL = 1.5  # p95 / p50


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


def round_floats(x: Any, digits: int = 6) -> Any:
    """Floats to `digits` significant digits (JSON readable, nothing lost that was measured)."""
    if isinstance(x, float):
        return float(f"{x:.{digits}g}") if np.isfinite(x) else None
    if isinstance(x, dict):
        return {k: round_floats(v, digits) for k, v in x.items()}
    if isinstance(x, list):
        return [round_floats(v, digits) for v in x]
    return x
