"""The "## Conversion" section of a run's report.md: a table of convert.json's figures.

The section is replaced in place when conversion runs again (everything from its heading to the
next "## " heading), appended otherwise; the file is written atomically.
"""

from __future__ import annotations

import re
from pathlib import Path

from device.manifest import atomic_write_bytes

HEADING = "## Conversion"


def _pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:.2f}%"


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def markdown_section(summary: dict) -> str:
    gate = summary["gate"]
    verdict = "**passed**" if gate["passed"] else "**FAILED**"
    lines = [
        HEADING,
        "",
        f"Converted {summary['created']} with TensorFlow {summary['versions']['tensorflow']}; every model verified "
        f"with the device runtime ({summary['versions']['device_runtime']}) and the device's preprocessing, the "
        f"float model on the same uint8 images. Gate (accuracy drop ≤ {gate['max_drop']:g} points and agreement "
        f"≥ {100 * gate['min_agreement']:g}% on every split): {verdict}.",
        "",
    ]
    calib = summary.get("calibration")
    if calib:
        lines += [f"int8 calibration: {calib['images']} images of the {calib['split']} split "
                  f"(seed {calib['seed']}, training decode/resize).", ""]
    lines += [
        "| variant | split | n | accuracy | balanced acc. | float acc. | drop (pts) | agreement | max abs Δp | "
        "mean abs Δp | size | size / float32 | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for v, r in summary["variants"].items():
        ratio = "–" if r.get("size_ratio_to_float32") is None else f"{r['size_ratio_to_float32']:.3f}"
        for split, m in r["splits"].items():
            lines.append(
                f"| {v} | {split} | {m['n']} | {_pct(m['accuracy'])} | {_pct(m['balanced_accuracy'])} | "
                f"{_pct(m['float_accuracy'])} | {m['accuracy_drop_points']:.2f} | {_pct(m['agreement'])} | "
                f"{m['max_abs_diff']:.4f} | {m['mean_abs_diff']:.4f} | {_kib(r['size_bytes'])} | {ratio} | "
                f"{r['status']} |"
            )
    lines.append("")
    times = ", ".join(f"{v} {r['conversion_seconds']:.1f}s" for v, r in summary["variants"].items())
    lines += [f"Conversion time: {times}; verification {summary['verification']['seconds']:.1f}s; "
              f"total {summary['seconds']:.1f}s. Models in `export/<variant>/`, figures in `convert.json`."]
    if gate["failures"]:
        lines += ["", "Gate failures:", ""] + [f"- {f}" for f in gate["failures"]]
    return "\n".join(lines) + "\n"


def upsert_section(report: Path, summary: dict) -> None:
    """Replace the report's Conversion section (or append one); create the report if missing."""
    section = markdown_section(summary)
    text = report.read_text(encoding="utf-8") if report.is_file() else ""
    pattern = re.compile(rf"^{re.escape(HEADING)}[ \t]*$.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        new = pattern.sub(lambda _: section + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        new = (text.rstrip("\n") + "\n\n" if text.strip() else "") + section
    atomic_write_bytes(report, new.encode("utf-8"))
