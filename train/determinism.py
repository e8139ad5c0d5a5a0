"""One switch for repeatable training (`training.deterministic`, on by default), and a record of
what still makes figures differ between machines.

With it on, Python's, NumPy's and TensorFlow's generators are seeded from `training.seed` and
TensorFlow op determinism is switched on (`tf.config.experimental.enable_op_determinism`): the same
config, data and seed give the same history.csv and metrics.json on the same machine, whatever else
is running on it (tests/test_train_determinism.py).

Measured here (TensorFlow 2.21, CPU): the number of intra-op threads changes the figures in the
third or fourth digit (1 vs 2 threads, the same seed), and so can another CPU (instruction set,
oneDNN's kernels). TensorFlow's default is one thread per CPU available to the process, so every
run records its thread counts, CPU and oneDNN setting (`metrics.json` → `reproducibility`), and
`training.threads` pins the count where runs on different machines are to be compared.
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path

from device.errors import FaceedgeError

log = logging.getLogger(__name__)

ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "asimd", "neon")


def cpus_available() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_description() -> dict:
    """CPU model and the SIMD instruction sets TensorFlow's kernels may pick between."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware") and not model:
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    return {"model": model, "machine": platform.machine(), "isa": [f for f in ISA_FLAGS if f in flags]}


def set_threads(threads: int | None) -> tuple[int, int]:
    """Pin TensorFlow's intra- and inter-op thread pools (before TensorFlow starts its runtime);
    returns the effective counts (TensorFlow's default is the CPUs available)."""
    import tensorflow as tf

    th = tf.config.threading
    if threads is not None:
        try:
            th.set_intra_op_parallelism_threads(threads)
            th.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            current = th.get_intra_op_parallelism_threads() or cpus_available()
            if current != threads:
                raise FaceedgeError(
                    f"training.threads={threads} cannot be applied: TensorFlow already runs in this process with "
                    f"{current} threads (set it in a fresh `python -m train fit`)"
                ) from None
    return (
        th.get_intra_op_parallelism_threads() or cpus_available(),
        th.get_inter_op_parallelism_threads() or cpus_available(),
    )


def configure(seed: int, deterministic: bool, threads: int | None) -> dict:
    """Apply the switch (before the model is built and before TensorFlow's first op) and return what
    a run records about it."""
    import keras
    import tensorflow as tf

    intra, inter = set_threads(threads)
    keras.utils.set_random_seed(seed)  # Python's random, NumPy's global generator and TensorFlow's
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        tf.config.experimental.disable_op_determinism()
    return {
        "deterministic": deterministic,
        "seed": seed,
        "intra_op_threads": intra,
        "inter_op_threads": inter,
        "threads_pinned": threads is not None,
        "cpus_available": cpus_available(),
        "cpu": cpu_description(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
    }


def describe(rec: dict) -> str:
    """One sentence for the report."""
    cpu = rec.get("cpu", {})
    isa = "/".join(cpu.get("isa", [])) or "unknown"
    return (
        f"{'deterministic' if rec.get('deterministic') else 'NOT deterministic'} (seed {rec.get('seed')}, "
        f"TensorFlow op determinism {'on' if rec.get('deterministic') else 'off'}); "
        f"{rec.get('intra_op_threads')} intra-op / {rec.get('inter_op_threads')} inter-op threads"
        f"{' (pinned)' if rec.get('threads_pinned') else ' (the CPUs available)'}; "
        f"TensorFlow {rec.get('tensorflow')}, oneDNN {rec.get('onednn')}; CPU {cpu.get('model', '?')} ({isa})"
    )
