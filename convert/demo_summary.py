"""The demo's summary: the headline figures, each with its n and 95 % interval, read back from the
stages' own files (so a resumed demo reports the same), and the lines printed at the end."""

from __future__ import annotations

import json
from pathlib import Path

from convert.demo_video import DEMO_DIR, VIDEO_NAME, read_truth, score_results


def _bench_pipeline_fps(bench_json: Path) -> dict:
    b = json.loads(bench_json.read_text())
    eff = b.get("efficiency", {}).get("int8", {})
    threads = eff.get("default_threads")
    rows = [p for p in b.get("pipeline", []) if p.get("variant") == "int8"]
    at = [p for p in rows if p.get("threads") == threads] or rows
    if not at:
        return {}
    p = at[-1]
    return {
        "threads": p.get("threads"),
        "fps": p.get("fps"),
        "fps_p50": p.get("fps_p50"),
        "peak_rss_mb": p.get("peak_rss_mb"),
    }


def _split_figures(m: dict, n_key: str) -> dict:
    return {
        "n": m[n_key],
        "correct": m.get("correct"),
        "accuracy": m["accuracy"],
        "accuracy_ci95": m.get("accuracy_ci95"),
    }


def build_summary(run_dir: Path, *, seconds: float, from_stage: str) -> dict:
    """The headline figures, each with its n and 95 % interval, read from the stages' files."""
    conv = json.loads((run_dir / "convert.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    out = run_dir / DEMO_DIR
    results = out / "results.jsonl"
    int8 = conv["variants"]["int8"]
    keras = {
        s: {**_split_figures(metrics[s], "count"), "persons": metrics.get("persons", {}).get(s)}
        for s in ("valid", "seen_holdout", "unseen_persons")
        if metrics.get(s, {}).get("count")
    }
    q = {
        s: {
            **_split_figures(m, "n"),
            "agree": m.get("agree"),
            "agreement": m["agreement"],
            "agreement_ci95": m.get("agreement_ci95"),
            "only_float_right": m.get("only_float_right"),
            "only_converted_right": m.get("only_converted_right"),
            "mcnemar_p": m.get("gate", {}).get("mcnemar_p"),
        }
        for s, m in int8["splits"].items()
    }
    lowest = min(q, key=lambda s: q[s]["agreement"])
    return {
        "run": str(run_dir),
        "seconds": round(seconds, 1),
        "from_stage": from_stage,
        "keras": keras,
        "int8": q,
        "int8_vs_float_agreement": {
            "split": lowest,
            "n": q[lowest]["n"],
            "agreement": q[lowest]["agreement"],
            "agreement_ci95": q[lowest]["agreement_ci95"],
        },
        "gate": {
            "passed": conv["gate"]["passed"],
            "notes": conv["gate"].get("notes", []),
            "failures": conv["gate"]["failures"],
        },
        "int8_size_ratio": int8["size_ratio_to_float32"],
        "int8_size_bytes": int8["size_bytes"],
        "daemon_on_video": score_results(results, read_truth(out)),
        "bench_pipeline": _bench_pipeline_fps(run_dir / "bench" / "bench.json"),
        "reproducibility": metrics.get("reproducibility", {}),
        "paths": {
            "report": str(run_dir / "report.md"),
            "models": str(run_dir / "export"),
            "convert": str(run_dir / "convert.json"),
            "daemon_results": str(results),
            "video": str(out / VIDEO_NAME),
            "bench": str(run_dir / "bench" / "bench.md"),
        },
    }


def _pct(x) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f}%"


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
