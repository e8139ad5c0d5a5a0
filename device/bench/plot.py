"""bench.png: raw latency per variant × threads and the pipeline's per-stage and end-to-end times,
drawn with matplotlib when installed, else with OpenCV (the Pi has no matplotlib)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from device.errors import FaceedgeError
from device.files import atomic_write_bytes


def write_plot(report: dict[str, Any], path: Path) -> str:
    """bench.png: raw latency per variant × threads (p50 bar, p95/p99 ticks) and the pipeline's
    per-stage p50 (bar) with p95 (whisker). matplotlib when installed; else drawn with OpenCV
    (the Pi has no matplotlib). Returns the backend used."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: F401
    except Exception:  # noqa: BLE001 - not installed (the Pi) or broken: fall back to OpenCV
        plot_cv2(report, path)
        return "opencv"
    plot_matplotlib(report, path)
    return "matplotlib"


# Stages that are waits or spans, not per-frame work: drawn apart from the work stages.
SPAN_STAGES = ("frame_wait", "capture_wait", "latency", "end_to_end")


def _raw_series(report: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    return [
        (
            f"{r['variant']} {r['threads']}t" + (f" r{r['round']}" if report["settings"]["repeat"] > 1 else ""),
            r["latency_ms"],
        )
        for r in report["raw"]
    ]


def _stage_series(report: dict[str, Any]) -> tuple[list[str], list[tuple[str, dict[str, dict]]]]:
    pipes = report["pipeline"] or report.get("sensor") or []  # the AI Camera's loop when that is all there is
    stages = pipes[0]["stage_names"] if pipes else []
    multi = report["settings"]["repeat"] > 1
    return stages, [
        (f"{p['variant']} {p['threads']}t" + (f" r{p['round']}" if multi else ""), p["stages_ms"]) for p in pipes
    ]


def _percentile_bars(ax: Any, series: list[tuple[str, dict[str, float]]], xlabel: str, title: str) -> None:
    """p50 bars with p95/p99 ticks; a log axis when the tail is > 20× the fastest median."""
    y = np.arange(len(series))
    ax.barh(y, [s["p50"] for _, s in series], color="#4c72b0", label="p50")
    ax.scatter([s["p95"] for _, s in series], y, marker="|", s=200, color="#dd8452", label="p95", zorder=3)
    ax.scatter([s["p99"] for _, s in series], y, marker="|", s=200, color="#c44e52", label="p99", zorder=3)
    ax.set_yticks(y, [n for n, _ in series])
    ax.invert_yaxis()
    lo = min(s["p50"] for _, s in series)
    if lo > 0 and max(s["p99"] for _, s in series) > 20 * lo:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        xlabel += " (log)"
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)


def plot_matplotlib(report: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    raw = _raw_series(report)
    stages, pipes = _stage_series(report)
    work = [s for s in stages if s not in SPAN_STAGES]
    ncols = 3 if pipes else 1
    rows = max(len(raw), len(pipes) * len(work) / 3, 6)
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 0.42 * rows + 1.8), squeeze=False)
    if raw:
        _percentile_bars(axes[0][0], raw, "ms per invoke", "raw interpreter latency")
    else:
        axes[0][0].set_title("no raw interpreter: the AI Camera's sensor runs the model")
        axes[0][0].axis("off")
    if pipes:
        ax = axes[0][1]
        n = len(work)
        height = 0.8 / max(1, len(pipes))
        yb = np.arange(n)
        colours = plt.get_cmap("tab10" if len(pipes) <= 10 else "tab20").colors
        for i, (name, stage_ms) in enumerate(pipes):
            p50 = [stage_ms.get(s, {}).get("p50", 0.0) for s in work]
            err = [max(0.0, stage_ms.get(s, {}).get("p95", 0.0) - stage_ms.get(s, {}).get("p50", 0.0)) for s in work]
            ax.barh(
                yb + i * height,
                p50,
                height=height,
                xerr=[np.zeros(n), err],
                capsize=2,
                label=name,
                color=colours[i % len(colours)],
            )
        ax.set_yticks(yb + height * (len(pipes) - 1) / 2, work)
        ax.invert_yaxis()
        ax.set_xlabel("ms per frame (bar p50, whisker p95)")
        ax.set_title("pipeline: work per stage")
        ax.legend(fontsize=7, loc="lower right")
        e2e = [
            (f"{name} · {p['fps']:.0f} fps", stage_ms["end_to_end"])
            for (name, stage_ms), p in zip(pipes, report["pipeline"] or report.get("sensor") or [])
            if "end_to_end" in stage_ms
        ]
        if e2e:
            _percentile_bars(axes[0][2], e2e, "ms, capture → published", "pipeline: end-to-end latency")
    m = report["machine"]
    fig.suptitle(
        f"{m.get('board') or m['cpu_model']} · {m['runtime']} {m['runtime_version']} · {report['created']}", fontsize=9
    )
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def plot_cv2(report: dict[str, Any], path: Path) -> None:
    """Horizontal bars with OpenCV: p50 bar + p95 tick, raw rows then pipeline stage rows."""
    import cv2

    rows: list[tuple[str, float, float, tuple[int, int, int]]] = []
    for name, s in _raw_series(report):
        rows.append((f"raw {name}", s["p50"], s["p95"], (176, 114, 76)))
    stages, pipes = _stage_series(report)
    for name, stage_ms in pipes:
        for s in stages:
            if s in stage_ms:
                rows.append((f"{name} {s}", stage_ms[s]["p50"], stage_ms[s]["p95"], (82, 132, 221)))
    width, left, row_h = 900, 260, 22
    img = np.full((60 + row_h * max(1, len(rows)), width, 3), 255, np.uint8)
    top = max([r[2] for r in rows] + [1e-3])
    scale = (width - left - 40) / top
    cv2.putText(
        img, "latency ms: bar p50, tick p95", (10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA
    )
    for i, (name, p50, p95, colour) in enumerate(rows):
        y = 45 + i * row_h
        cv2.putText(img, name[:34], (8, y + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.rectangle(img, (left, y + 3), (left + max(1, int(p50 * scale)), y + row_h - 3), colour, -1)
        x95 = left + int(p95 * scale)
        cv2.line(img, (x95, y + 1), (x95, y + row_h - 1), (0, 0, 0), 2)
        cv2.putText(
            img,
            f"{p50:.2f}",
            (min(x95 + 4, width - 50), y + 14),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.38,
            (60, 60, 60),
            1,
            cv2.LINE_AA,
        )
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise FaceedgeError(f"{path}: OpenCV could not encode the plot")
    atomic_write_bytes(path, buf.tobytes())
