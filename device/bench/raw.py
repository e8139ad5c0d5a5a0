"""The interpreter alone, timed as TFLite's ``benchmark_model`` does it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from device.bench.stats import is_wide, summarize


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
        "fps": 1000.0 / stats["p50"],  # the one fps figure: what the model does when it has the cores
        "throughput_fps": 1000.0 / stats["mean"],  # every preemption by another process counts
        "wide_spread": is_wide(stats),
    }
