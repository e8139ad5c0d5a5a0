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
    sig = gate.get("significance", 0.05)
    lines = [
        HEADING,
        "",
        f"Converted {summary['created']} with TensorFlow {summary['versions']['tensorflow']}; every model verified "
        f"with the device runtime ({summary['versions']['device_runtime']}) and the device's preprocessing, the "
        f"float model on the same uint8 images. Gate: {verdict}. A variant fails a split where it is "
        f"significantly worse than the float model on the same images (exact one-sided McNemar on b = only "
        f"float right vs c = only the variant right, p < {sig:g}) by more than {gate['max_drop']:g} points, or "
        f"where its agreement with the float model is significantly below {100 * gate['min_agreement']:g}% "
        f"(exact binomial, p < {sig:g}); and no model whose balanced accuracy on unseen persons is not better "
        f"than chance or below {gate.get('min_balanced_accuracy', 0.55):g} is published. Intervals: 95 % "
        f"(Wilson).",
        "",
    ]
    calib = summary.get("calibration")
    if calib:
        lines += [
            f"int8 calibration: {calib['images']} images of the {calib['split']} split "
            f"(seed {calib['seed']}, training decode/resize).",
            "",
        ]
    lines += [
        "| variant | split | n | accuracy (95 % CI) | float acc. (95 % CI) | b / c | McNemar p | agreement (95 % CI) | "
        "balanced acc. | max abs Δp | mean abs Δp | size | size / float32 | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for v, r in summary["variants"].items():
        ratio = "–" if r.get("size_ratio_to_float32") is None else f"{r['size_ratio_to_float32']:.3f}"
        for split, m in r["splits"].items():
            g = m.get("gate", {})
            lines.append(
                f"| {v} | {split} | {m['n']} | {_pct(m['accuracy'])} ({_ci(m.get('accuracy_ci95'))}) | "
                f"{_pct(m['float_accuracy'])} ({_ci(m.get('float_accuracy_ci95'))}) | "
                f"{m.get('only_float_right', '–')} / {m.get('only_converted_right', '–')} | {_p(g.get('mcnemar_p'))} | "
                f"{_pct(m['agreement'])} ({_ci(m.get('agreement_ci95'))}) | {_pct(m['balanced_accuracy'])} | "
                f"{m['max_abs_diff']:.4f} | {m['mean_abs_diff']:.4f} | {_kib(r['size_bytes'])} | {ratio} | "
                f"{r['status']} |"
            )
    lines.append("")
    times = ", ".join(f"{v} {r['conversion_seconds']:.1f}s" for v, r in summary["variants"].items())
    lines += [
        f"Conversion time: {times}; verification {summary['verification']['seconds']:.1f}s; "
        f"total {summary['seconds']:.1f}s. Published models in `export/<variant>/`, rejected ones in "
        f"`export/<variant>.rejected/`, figures in `convert.json`."
    ]
    if gate.get("notes"):
        lines += ["", "What these splits cannot show:", ""] + [f"- {n}" for n in gate["notes"]]
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
