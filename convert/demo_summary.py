"""The demo's summary: the headline figures, each with its n and 95 % interval, read back from the
stages' own files (so a resumed demo reports the same), and the lines printed at the end."""

from __future__ import annotations

import json
import math
from pathlib import Path

from convert.demo_video import DEMO_DIR, VIDEO_NAME, read_truth, score_results


def _bench_pipeline_fps(bench_json: Path) -> dict:
    """The int8 whole-pipeline figures of the benchmark, at its default thread count if it has them."""
    bench = json.loads(bench_json.read_text())
    efficiency = bench.get("efficiency", {}).get("int8", {})
    threads = efficiency.get("default_threads")
    rows = [row for row in bench.get("pipeline", []) if row.get("variant") == "int8"]
    at_threads = [row for row in rows if row.get("threads") == threads] or rows
    if not at_threads:
        return {}
    row = at_threads[-1]
    return {
        "threads": row.get("threads"),
        "fps": row.get("fps"),
        "peak_rss_mb": row.get("peak_rss_mb"),
    }


def _split_figures(figures: dict, n_key: str) -> dict:
    return {
        "n": figures[n_key],
        "correct": figures.get("correct"),
        "accuracy": figures["accuracy"],
        "accuracy_ci95": figures.get("accuracy_ci95"),
    }


def build_summary(run_dir: Path, *, seconds: float, from_stage: str) -> dict:
    """The headline figures, each with its n and 95 % interval, read from the stages' files."""
    converted = json.loads((run_dir / "convert.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    demo_dir = run_dir / DEMO_DIR
    results = demo_dir / "results.jsonl"
    int8 = converted["variants"]["int8"]
    keras = {
        split: {**_split_figures(metrics[split], "count"), "persons": metrics.get("persons", {}).get(split)}
        for split in ("valid", "seen_holdout", "unseen_persons")
        if metrics.get(split, {}).get("count")
    }
    int8_splits = {
        split: {
            **_split_figures(figures, "n"),
            "agree": figures.get("agree"),
            "agreement": figures["agreement"],
            "agreement_ci95": figures.get("agreement_ci95"),
            "only_float_right": figures.get("only_float_right"),
            "only_converted_right": figures.get("only_converted_right"),
            "mcnemar_p": figures.get("gate", {}).get("mcnemar_p"),
        }
        for split, figures in int8["splits"].items()
    }
    lowest = min(int8_splits, key=lambda split: int8_splits[split]["agreement"])
    return {
        "run": str(run_dir),
        "seconds": round(seconds, 1),
        "from_stage": from_stage,
        "keras": keras,
        "int8": int8_splits,
        "int8_vs_float_agreement": {
            "split": lowest,
            "n": int8_splits[lowest]["n"],
            "agreement": int8_splits[lowest]["agreement"],
            "agreement_ci95": int8_splits[lowest]["agreement_ci95"],
        },
        "gate": {
            "passed": converted["gate"]["passed"],
            "notes": converted["gate"].get("notes", []),
            "failures": converted["gate"]["failures"],
        },
        "int8_size_ratio": int8["size_ratio_to_float32"],
        "int8_size_bytes": int8["size_bytes"],
        "daemon_on_video": score_results(results, read_truth(demo_dir)),
        "bench_pipeline": _bench_pipeline_fps(run_dir / "bench" / "bench.json"),
        "reproducibility": metrics.get("reproducibility", {}),
        "paths": {
            "report": str(run_dir / "report.md"),
            "models": str(run_dir / "export"),
            "convert": str(run_dir / "convert.json"),
            "daemon_results": str(results),
            "video": str(demo_dir / VIDEO_NAME),
            "bench": str(run_dir / "bench" / "bench.md"),
        },
    }


def _pct(fraction) -> str:
    return "n/a" if fraction is None or math.isnan(fraction) else f"{100 * fraction:.1f}%"


def _ci(ci) -> str:
    return "" if not ci else f" [{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%]"


def summary_lines(summary: dict, *, chain_start: str) -> list[str]:
    """What the demo prints at the end; "(from STAGE)" when it did not start at `chain_start`."""
    keras, int8 = summary["keras"], summary["int8"]
    daemon, bench = summary["daemon_on_video"], summary["bench_pipeline"]
    paths = summary["paths"]
    lines = [
        "",
        f"==> demo done in {summary['seconds']:.0f} s"
        + (f" (from {summary['from_stage']})" if summary["from_stage"] != chain_start else "")
        + f" — run {summary['run']}",
        f"    report          {paths['report']}",
        f"    models          {paths['models']}/int8/ (+ float32), figures {paths['convert']}",
        f"    daemon results  {paths['daemon_results']} (video {paths['video']})",
        f"    benchmark       {paths['bench']}",
        "    (95 % intervals, Wilson; images of one person are not independent, so with few persons the real "
        "uncertainty is larger)",
        "",
    ]
    for split, title, what in (
        ("unseen_persons", "unseen-person accuracy", "images of unseen persons"),
        ("seen_holdout", "seen-person accuracy  ", "new images of seen persons"),
    ):
        if split not in int8:
            continue
        keras_split = keras.get(split, {})
        persons = keras_split.get("persons")
        lines.append(
            f"    {title}  {_pct(int8[split]['accuracy'])}{_ci(int8[split]['accuracy_ci95'])} int8 on the device "
            f"runtime, {int8[split]['correct']} of {int8[split]['n']} {what}"
            + (f" ({persons} persons)" if persons is not None else "")
            + f"; Keras {_pct(keras_split.get('accuracy'))}{_ci(keras_split.get('accuracy_ci95'))}"
        )
    agreement = summary["int8_vs_float_agreement"]
    lines.append(
        f"    int8 vs float agreement {_pct(agreement['agreement'])}{_ci(agreement['agreement_ci95'])} on "
        f"{agreement['split']} (n {agreement['n']}, the lowest split); "
        f"gate {'passed' if summary['gate']['passed'] else 'FAILED'}"
    )
    lines.append(
        f"    int8 size               {summary['int8_size_bytes'] / 1024:.0f} KiB = "
        f"{summary['int8_size_ratio']:.3f} of float32"
    )
    fps = (
        f"{bench['fps']:.1f} fps at {bench['threads']} threads (bench, synthetic 640x480 frames)"
        if bench.get("fps")
        else "n/a"
    )
    lines.append(f"    pipeline fps            {fps}")
    lines.append(
        f"    daemon on the video     {daemon['results']} frames, per frame {_pct(daemon['accuracy'])}, per image "
        f"{_pct(daemon['image_accuracy'])}{_ci(daemon['image_accuracy_ci95'])} ({daemon['images_correct']} of "
        f"{daemon['images']}), smoothed {_pct(daemon['smoothed_accuracy'])}, {daemon['events']} events, "
        f"{daemon['fps']:.1f} fps"
    )
    return lines
