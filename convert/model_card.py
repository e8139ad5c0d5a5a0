"""MODEL_CARD.md in the run directory: what the exported model is, how good, for what, and its limits.

Written by the conversion stage (only there: the card describes the model that ships, and the
int8/float comparison exists only after conversion; one writer, one owner of the file), rewritten
atomically at every conversion. It reads what the run already holds, and says so when a part is
missing (e.g. a model converted with ``--from`` has no training metrics):

- ``model_info.json``: labels, positive label, threshold, input size, backbone, preprocessing;
- ``splits.csv``: images and persons per split and label (where the data came from);
- ``metrics.json`` (training): the unseen-person figure with its 95 % interval, the verdict;
- the conversion summary (convert.json): each variant's size, sha256, status, and its accuracy on
  each split next to the float model's, with the agreement between the two.
"""

from __future__ import annotations

import csv
import json
import logging
import zipfile
from collections import Counter
from pathlib import Path

from device.files import atomic_write_bytes

log = logging.getLogger(__name__)

CARD = "MODEL_CARD.md"
SPLIT_ORDER = ("train", "valid", "seen_holdout", "unseen_persons")
SPLIT_NAMES = {
    "train": "train",
    "valid": "validation",
    "seen_holdout": "held-out images of training persons",
    "unseen_persons": "persons never seen in training",
}


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _ci(ci) -> str:
    return "" if not ci else f" (95 % interval {100 * ci[0]:.1f}–{100 * ci[1]:.1f} %)"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _splits(path: Path) -> tuple[dict, dict, dict] | None:
    """(images per split, persons per split, images per label, persons) from splits.csv."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return None
    images = Counter(r["split"] for r in rows)
    persons = {s: len({r["person"] for r in rows if r["split"] == s}) for s in images}
    labels = Counter(r["label"] for r in rows)
    return dict(images), persons, dict(labels), len({r["person"] for r in rows})


def render(run_dir: Path, summary: dict) -> str:
    info = _read_json(run_dir / "model_info.json") or {}
    metrics = _read_json(run_dir / "metrics.json")
    model = summary.get("model", {})
    labels = model.get("labels") or info.get("labels") or []
    kind = model.get("output_kind", "")
    lines = [f"# Model card: {run_dir.name}", ""]
    lines += [
        "A face-crop classifier made by faceedge: trained on face crops (train/), quantized to TFLite "
        "(convert/), run on a Raspberry Pi camera (device/). Written by the conversion stage "
        f"({summary.get('created', '')}); rewritten at every conversion.",
        "",
        "## Model",
        "",
        f"- Labels: {', '.join(labels)}"
        + (
            f"; output: P({model.get('positive_label')}), decided at >= {model.get('threshold'):g}"
            if kind == "sigmoid"
            else "; output: softmax over the labels"
        ),
        f"- Input: one RGB face crop, {'x'.join(str(v) for v in model.get('input_size', []))}, raw pixels 0..255; "
        f"scaling inside the model ({model.get('preprocessing') or info.get('preprocessing', 'n/a')})",
        f"- Backbone: {info.get('backbone') or 'n/a'}",
    ]
    for v, r in summary.get("variants", {}).items():
        path = Path(str(r.get("path", "")))
        meta = path.suffix == ".tflite" and path.is_file() and zipfile.is_zipfile(path)
        lines.append(
            f"- `{v}`: {r.get('status')}, {r.get('size_bytes', 0) / 1024:.0f} KiB, sha256 `{str(r.get('sha256'))[:16]}…`"
            f" ({r.get('recipe', '')}){'; TFLite metadata with labels.txt inside' if meta else ''}"
        )
    lines += [
        "- `labels.txt` (one line per output unit) and `manifest.json` sit beside each model file. The manifest is "
        "what the device trusts.",
        "",
        "## Data",
        "",
    ]
    sp = _splits(run_dir / "splits.csv")
    if sp is None:
        lines.append(
            f"No splits.csv in the run: the data is `{summary.get('source', {}).get('data')}` (not described here)."
        )
    else:
        images, persons, per_label, n_persons = sp
        lines.append(
            f"{sum(images.values())} images ({', '.join(f'{k} {n}' for k, n in sorted(per_label.items()))}) of "
            f"{n_persons} persons, split by person: no person of `unseen_persons` is in training:"
        )
        lines += ["", "| split | images | persons |", "|---|---|---|"]
        for s in [s for s in SPLIT_ORDER if s in images] + sorted(set(images) - set(SPLIT_ORDER)):
            lines.append(f"| {SPLIT_NAMES.get(s, s)} (`{s}`) | {images[s]} | {persons[s]} |")
    lines += ["", "## How good", ""]
    if metrics and "unseen_persons" in metrics:
        u = metrics["unseen_persons"]
        lines.append(
            f"**On persons never seen in training** (float model, n = {u.get('count')} images, "
            f"{metrics.get('persons', {}).get('unseen_persons', '?')} persons): accuracy {_pct(u.get('accuracy'))}"
            f"{_ci(u.get('accuracy_ci95'))}, balanced accuracy {_pct(u.get('balanced_accuracy'))}"
            f"{_ci(u.get('balanced_accuracy_ci95'))}. With so few persons the interval is wide, and it says "
            "nothing about persons unlike these."
        )
        verdict = metrics.get("verdict") or {}
        if verdict:
            lines.append(
                f"\nTraining verdict: {'passed' if verdict.get('passed') else 'FAILED'} "
                f"(better than chance: p = {verdict.get('p', float('nan')):.2g}; floor {verdict.get('min_balanced_accuracy')})."
            )
    else:
        lines.append("No training metrics (metrics.json) in this run: the figures below are conversion's only.")
    lines += [
        "",
        "Quantized against float, same images, same device preprocessing (convert.json has every figure):",
        "",
        "| variant | split | n | accuracy | float accuracy | agreement |",
        "|---|---|---|---|---|---|",
    ]
    for v, r in summary.get("variants", {}).items():
        for s, m in (r.get("splits") or {}).items():
            lines.append(
                f"| {v} | {s} | {m.get('n')} | {_pct(m.get('accuracy'))}{_ci(m.get('accuracy_ci95'))} | "
                f"{_pct(m.get('float_accuracy'))} | {_pct(m.get('agreement'))} |"
            )
    gate = summary.get("gate", {})
    lines += [
        "",
        f"Conversion gate: {'passed' if gate.get('passed') else 'FAILED: ' + '; '.join(gate.get('failures', []))}.",
        "",
        "## Intended use",
        "",
        "Telling the labels above apart on square face crops from a fixed camera, in the setting the data was "
        "collected in (light, distance, camera), for people who agreed to it: e.g. a home automation that reacts "
        "to the label through Home Assistant.",
        "",
        "## Limits",
        "",
        "- Measured on few persons: the intervals above are the honest size of what is known. Persons, ages, skin "
        "tones, glasses, light or cameras not in the data may do much worse, and nothing here measures that.",
        "- Not for identifying people, for decisions about people (access, work, school, insurance, policing), "
        "or for anything safety-critical. A label is a guess with the error rates above.",
        "- The scores are the model's outputs, not probabilities calibrated for other data than the data measured.",
        "",
        "## Consent and privacy",
        "",
        "Face images are personal data (biometric data when used to identify someone; in the EU, GDPR applies). "
        "Collect and train only on people who agreed, knowing what for; let them withdraw (delete their folder in "
        "`data/<name>/<label>/<person>/` and train again). Keep the data and the runs on machines you control. "
        "The device classifies on the Pi and publishes labels, not images, unless `expose_images` is on; keep the "
        "HTTP output on loopback or behind its token, and tell people where a camera runs.",
        "",
    ]
    return "\n".join(lines)


def write(run_dir: Path, summary: dict) -> Path:
    path = Path(run_dir) / CARD
    atomic_write_bytes(path, render(Path(run_dir), summary).encode())
    log.info("wrote %s", path)
    return path
