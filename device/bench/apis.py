"""The runtime's two Python APIs on the same model, and the runtime's own benchmark tool.

ai-edge-litert 2.x runs a model through the classic `Interpreter` (what the daemon uses) or through
`CompiledModel` (the newer API with accelerator options; CPU here). `compare_apis` times both on
the same model and thread count, each in its own child process (``python -m device.bench.apis``) so
that each one's peak RSS is its own, alternating them so that both see the same neighbours.

`litert_benchmark` runs the runtime's own tool, ``litert-benchmark`` (installed with ai-edge-litert;
it times `CompiledModel.run_by_index`), on the same model and thread count: its median beside the
bench's raw median is a cross-check of the bench's timing.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from device.bench.memory import memory_mb
from device.bench.stats import summarize

APIS = ("interpreter", "compiled_model")
AGREE_WITHIN = 0.15  # litert-benchmark's median and the bench's raw median: |ratio - 1| ≤ this


def _time(run, runs: int, min_seconds: float, warmup_runs: int) -> list[float]:
    for _ in range(warmup_runs):
        run()
    samples: list[float] = []
    perf = time.perf_counter
    start = perf()
    while len(samples) < runs or perf() - start < min_seconds:
        t = perf()
        run()
        samples.append((perf() - t) * 1e3)
    return samples


def _interpreter(model_path: str, threads: int, x: np.ndarray):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=model_path, num_threads=threads)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x.reshape(it.get_input_details()[0]["shape"]))
    return it.invoke


def _compiled_model(model_path: str, threads: int, x: np.ndarray):
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import CpuOptions, Options

    options = Options(hardware_accelerators=HardwareAccelerator.CPU, cpu_options=CpuOptions(num_threads=threads))
    model = CompiledModel.from_file(model_path, options=options)
    inputs, outputs = model.create_input_buffers(0), model.create_output_buffers(0)
    inputs[0].write(x)
    return lambda: model.run_by_index(0, inputs, outputs)


def api_child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a child: load the model through one API, time `runs` invokes on one random input."""
    make = {"interpreter": _interpreter, "compiled_model": _compiled_model}[spec["api"]]
    x = np.random.default_rng(0).integers(0, 256, spec["input_shape"], dtype=np.dtype(spec["input_dtype"]))
    t0 = time.perf_counter()
    run = make(spec["model_path"], spec["threads"], x)
    load_ms = (time.perf_counter() - t0) * 1e3
    samples = _time(run, spec["runs"], spec["min_seconds"], spec["warmup_runs"])
    peak = memory_mb().get("peak_rss_mb")  # None without /proc
    return {"api": spec["api"], "load_ms": load_ms, "latency_ms": summarize(samples), "peak_rss_mb": peak}


def _run_child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    from device.bench.pipeline import child_env

    with tempfile.TemporaryDirectory(prefix="faceedge-api-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.run(
            [sys.executable, "-m", "device.bench.apis", str(spec_path), str(out_path)],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0 or not out_path.is_file():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return {"api": spec["api"], "error": f"exit {proc.returncode}: {tail}"}
        return json.loads(out_path.read_text())


def compare_apis(
    model_path: Path,
    threads: int,
    input_shape: list[int],
    input_dtype: str,
    *,
    runs: int = 100,
    min_seconds: float = 1.0,
    warmup_runs: int = 10,
    rounds: int = 2,
) -> dict[str, Any]:
    """Both APIs on one model: per API the median over rounds of the p50 latency, its peak RSS, and
    which is faster. Rounds alternate the APIs (A B B A …) so that a busy moment hits both."""
    spec = {
        "model_path": str(model_path),
        "threads": threads,
        "input_shape": input_shape,
        "input_dtype": input_dtype,
        "runs": runs,
        "min_seconds": min_seconds,
        "warmup_runs": warmup_runs,
    }
    order = [a for r in range(rounds) for a in (APIS if r % 2 == 0 else APIS[::-1])]
    results: dict[str, list[dict[str, Any]]] = {a: [] for a in APIS}
    for api in order:
        results[api].append(_run_child({**spec, "api": api}, timeout=120.0 + 2 * min_seconds))
    out: dict[str, Any] = {"threads": threads, "rounds": rounds}
    for api, rs in results.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            out[api] = {"error": rs[0]["error"]}
            continue
        out[api] = {
            "p50_ms": statistics.median(r["latency_ms"]["p50"] for r in ok),
            "p50_ms_rounds": [r["latency_ms"]["p50"] for r in ok],
            "load_ms": statistics.median(r["load_ms"] for r in ok),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in ok) if ok[0]["peak_rss_mb"] else None,
        }
    if all("p50_ms" in out[a] for a in APIS):
        out["compiled_over_interpreter"] = out["compiled_model"]["p50_ms"] / out["interpreter"]["p50_ms"]
        out["faster"] = min(APIS, key=lambda a: out[a]["p50_ms"])
    return out


def litert_benchmark_tool() -> list[str] | None:
    """The command of the runtime's benchmark tool: the `litert-benchmark` script beside this Python,
    else its module; None when ai-edge-litert does not ship it."""
    script = Path(sys.executable).with_name("litert-benchmark")
    if script.is_file():
        return [str(script)]
    try:
        import ai_edge_litert.tools.benchmark_litert_model  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model"]


def litert_benchmark(model_path: Path, threads: int, *, runs: int = 100, warmup_runs: int = 10) -> dict[str, Any]:
    """Run `litert-benchmark` on the model: its median and mean ms, or why it could not run."""
    tool = litert_benchmark_tool()
    if tool is None:
        return {"error": "this ai-edge-litert has no litert-benchmark tool"}
    with tempfile.TemporaryDirectory(prefix="faceedge-litert-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            *tool,
            f"--model={model_path}",
            f"--num_threads={threads}",
            f"--num_runs={runs}",
            f"--warmup_runs={warmup_runs}",
            f"--result_json={out}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return {"error": f"litert-benchmark failed (exit {proc.returncode}): {tail}"}
        result = json.loads(out.read_text())
    latency = result.get("latency")  # ai-edge-litert 2.x: {"latency": {"median_ms", "avg_ms", ...}, ...}
    if not isinstance(latency, dict) or "median_ms" not in latency:
        return {"error": f"litert-benchmark's result has no latency.median_ms (keys: {sorted(result)})"}
    return {
        "tool": Path(tool[0]).name if len(tool) == 1 else tool[-1],
        "threads": threads,
        "runs": runs,
        "median_ms": latency["median_ms"],
        "avg_ms": latency.get("avg_ms"),
    }


def cross_check(raw_median_ms: float, tool: dict[str, Any], apis: dict[str, Any] | None, wide: bool) -> dict[str, Any]:
    """The bench's raw median (Interpreter) against litert-benchmark's (CompiledModel): the ratio,
    whether they agree within AGREE_WITHIN, and if not, the likely reason from what was measured."""
    if "median_ms" not in tool:
        return {"bench_median_ms": raw_median_ms, "error": tool.get("error")}
    ratio = raw_median_ms / tool["median_ms"]
    out: dict[str, Any] = {
        "bench_median_ms": raw_median_ms,
        "litert_benchmark_median_ms": tool["median_ms"],
        "ratio": ratio,
        "agree": abs(ratio - 1.0) <= AGREE_WITHIN,
    }
    if not out["agree"]:
        cm = (apis or {}).get("compiled_model", {}).get("p50_ms")
        if cm and abs(cm / tool["median_ms"] - 1.0) <= AGREE_WITHIN:
            out["why"] = (
                f"the tool runs CompiledModel, which the bench also measured at {cm:.2f} ms: the two APIs "
                "differ on this model, the timing does not"
            )
        elif wide:
            out["why"] = "the bench's raw timing had a wide spread: other processes competed for the CPU"
        else:
            out["why"] = (
                "the tool ran at another moment (a shared or throttling machine), with its own input "
                f"and {tool['runs']} runs; rerun on a quiet machine"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m device.bench.apis SPEC.json OUT.json`: one API's child (see compare_apis)."""
    spec_path, out_path = sys.argv[1:3] if argv is None else argv[:2]
    result = api_child(json.loads(Path(spec_path).read_text()))
    Path(out_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
