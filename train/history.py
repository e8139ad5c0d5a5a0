"""history.csv: one row per epoch (written by train.callbacks), read back, and the epoch timings."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

HISTORY_FIELDS = (
    "epoch",
    "phase",
    "attempt",
    "seconds",
    "train_seconds",
    "images_per_s",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
)


def read_history(path: str | Path) -> list[dict]:
    """history.csv rows, one per epoch (a resumed run that repeated an epoch keeps the last)."""
    p = Path(path)
    if not p.is_file():
        return []
    rows: dict[int, dict] = {}
    with open(p, newline="") as f:
        for r in csv.DictReader(f):
            row = {k: (_num(v) if k != "phase" else v) for k, v in r.items()}
            rows[int(row["epoch"])] = row
    return [rows[k] for k in sorted(rows)]


def _num(v: str):
    if v in ("", None):
        return None
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


def _phase_timing(rows: list[dict], train_images: int) -> dict:
    secs = [h["seconds"] for h in rows if h.get("seconds") is not None]
    train_secs = [h["train_seconds"] for h in rows if h.get("train_seconds") is not None]
    rest = secs[1:]
    return {
        "epoch_seconds": [round(s, 3) for s in secs],
        "first_epoch_seconds": round(secs[0], 3) if secs else None,
        "later_epochs_mean_seconds": round(float(np.mean(rest)), 3) if rest else None,
        "first_epoch_extra_seconds": round(secs[0] - float(np.mean(rest)), 3) if rest else None,
        "images_per_s": round(train_images / float(np.median(train_secs)), 1) if train_secs else None,
    }


def timing_summary(history: list[dict], train_images: int) -> dict:
    """Epoch wall times, the first epoch apart (it fills the cache and traces the graph), and the
    training throughput; the top level is the first phase, `phases` has each phase on its own."""
    phases: dict[str, list[dict]] = {}
    for h in history:
        phases.setdefault(h.get("phase") or "train", []).append(h)
    first = next(iter(phases.values()), [])
    out = _phase_timing(first, train_images)
    out["epoch_seconds"] = [round(h["seconds"], 3) for h in history if h.get("seconds") is not None]
    out["train_images"] = train_images
    out["total_train_seconds"] = round(float(sum(out["epoch_seconds"])), 3)
    out["phases"] = {name: _phase_timing(rows, train_images) for name, rows in phases.items()}
    return out
