"""The "## Conversion" section of a run's report.md: a table of convert.json's figures.

The section is replaced in place when conversion runs again (everything from its heading to the
next "## " heading), appended otherwise; the file is written atomically.
"""

from __future__ import annotations

import re
from pathlib import Path

from device.files import atomic_write_bytes

HEADING = "## Conversion"


def _pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:.2f}%"


def _ci(ci) -> str:
    return "–" if not ci else f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%"


def _p(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def markdown_section(summary: dict) -> str:
    gate = summary["gate"]
    verdict = "**passed**" if gate["passed"] else "**FAILED**"
    significance = gate.get("significance", 0.05)
    lines = [
        HEADING,
        "",
        f"Converted {summary['created']} with TensorFlow {summary['versions']['tensorflow']}; every model verified "
        f"with the device runtime ({summary['versions']['device_runtime']}) and the device's preprocessing, the "
        f"float model on the same uint8 images. Gate: {verdict}. A variant fails a split where it is "
        f"significantly worse than the float model on the same images (exact one-sided McNemar on b = only "
        f"float right vs c = only the variant right, p < {significance:g}) by more than {gate['max_drop']:g} "
        f"points, or where its agreement with the float model is significantly below "
        f"{100 * gate['min_agreement']:g}% (exact binomial, p < {significance:g}); and no model whose balanced "
        f"accuracy on unseen persons is not better than chance or below "
        f"{gate.get('min_balanced_accuracy', 0.55):g} is published. Intervals: 95 % (Wilson).",
        "",
    ]
    calibration = summary.get("calibration")
    if calibration:
        lines += [
            f"int8 calibration: {calibration['images']} images of the {calibration['split']} split "
            f"(seed {calibration['seed']}, training decode/resize).",
            "",
        ]
    lines += [
        "| variant | split | n | accuracy (95 % CI) | float acc. (95 % CI) | b / c | McNemar p | agreement (95 % CI) | "
        "balanced acc. | max abs Δp | mean abs Δp | size | size / float32 | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for variant, result in summary["variants"].items():
        ratio = "–" if result.get("size_ratio_to_float32") is None else f"{result['size_ratio_to_float32']:.3f}"
        for split, figures in result["splits"].items():
            split_gate = figures.get("gate", {})
            lines.append(
                f"| {variant} | {split} | {figures['n']} | "
                f"{_pct(figures['accuracy'])} ({_ci(figures.get('accuracy_ci95'))}) | "
                f"{_pct(figures['float_accuracy'])} ({_ci(figures.get('float_accuracy_ci95'))}) | "
                f"{figures.get('only_float_right', '–')} / {figures.get('only_converted_right', '–')} | "
                f"{_p(split_gate.get('mcnemar_p'))} | "
                f"{_pct(figures['agreement'])} ({_ci(figures.get('agreement_ci95'))}) | "
                f"{_pct(figures['balanced_accuracy'])} | "
                f"{figures['max_abs_diff']:.4f} | {figures['mean_abs_diff']:.4f} | {_kib(result['size_bytes'])} | "
                f"{ratio} | "
                f"{result['status']} |"
            )
    lines.append("")
    times = ", ".join(f"{name} {result['conversion_seconds']:.1f}s" for name, result in summary["variants"].items())
    lines += [
        f"Conversion time: {times}; verification {summary['verification']['seconds']:.1f}s; "
        f"total {summary['seconds']:.1f}s. Published models in `export/<variant>/`, rejected ones in "
        f"`export/<variant>.rejected/`, figures in `convert.json`."
    ]
    if gate.get("notes"):
        lines += ["", "What these splits cannot show:", ""] + [f"- {note}" for note in gate["notes"]]
    if gate["failures"]:
        lines += ["", "Gate failures:", ""] + [f"- {failure}" for failure in gate["failures"]]
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
