"""The run's plots: training curves and prediction grids (matplotlib, written atomically as PNG)."""

from __future__ import annotations

import io
import math
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from device.files import atomic_write_bytes
from train import stats


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict], path: Path, fine_tune_from: int | None = None, title: str = "") -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [h["epoch"] for h in history]
    for ax, key, name in ((axes[0], "accuracy", "accuracy"), (axes[1], "loss", "loss")):
        for k, lbl in ((key, "train"), (f"val_{key}", "valid")):
            vals = [h.get(k) for h in history]
            if any(v is not None for v in vals):
                ax.plot(epochs, [np.nan if v is None else v for v in vals], marker="o", ms=3, label=lbl)
        if fine_tune_from:
            ax.axvline(fine_tune_from + 0.5, color="grey", ls="--", lw=1, label="fine-tune")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path, plt)


def plot_predictions(
    images: np.ndarray,
    true: Sequence[str],
    pred: Sequence[str],
    conf: Sequence[float],
    persons: Sequence[str | None],
    path: Path,
    title: str,
) -> None:
    """A grid of images, each titled true/pred and framed green (right) or red (wrong)."""
    plt = _plt()
    n = len(images)
    cols = min(6, max(1, n))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.5 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        ok = true[i] == pred[i]
        ax.imshow(np.clip(images[i], 0, 255).astype(np.uint8))
        ax.set_title(
            f"{'✓' if ok else '✗'} true {true[i]}\npred {pred[i]} ({conf[i]:.2f})"
            + (f"\n{persons[i]}" if persons[i] else ""),
            fontsize=7,
            color="green" if ok else "red",
        )
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_edgecolor("green" if ok else "red")
            s.set_linewidth(3)
    if n == 0:
        axes[0, 0].text(0.5, 0.5, "no images in this split", ha="center", va="center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path, plt)


def _save(fig, path: Path, plt) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def pick_grid(
    right: Sequence[bool], persons: Sequence[str | None], n: int = 18, max_mistakes: int = 36, seed: int = 0
) -> list[int]:
    """Indices for a prediction grid: every mistake first (up to `max_mistakes`), then correct examples
    spread over persons until the grid has `n` images."""
    wrong = [i for i, ok in enumerate(right) if not ok]
    good = [i for i, ok in enumerate(right) if ok]
    shown_wrong = [wrong[j] for j in pick_examples([persons[i] for i in wrong], max_mistakes, seed)]
    room = max(0, n - len(shown_wrong))
    shown_good = [good[j] for j in pick_examples([persons[i] for i in good], room, seed)]
    return shown_wrong + shown_good


def grid_caption(title: str, m: dict, right: Sequence[bool], shown: Sequence[int]) -> str:
    """'unseen persons: accuracy 0.925 [0.846, 0.965] (74 of 80); shown: all 6 mistakes, 12 of 74 correct'."""
    if not m.get("count"):
        return title
    n_wrong = sum(not ok for ok in right)
    wrong_shown = sum(not right[i] for i in shown)
    good_shown = len(shown) - wrong_shown
    plural = "s" if n_wrong != 1 else ""
    mistakes = f"all {n_wrong} mistake{plural}" if wrong_shown == n_wrong else f"{wrong_shown} of {n_wrong} mistakes"
    return (
        f"{title}: accuracy {m['accuracy']:.3f} {stats.fmt_ci(m.get('accuracy_ci95'))} "
        f"({m['correct']} of {m['count']}); shown: {mistakes if n_wrong else 'no mistakes'}, "
        f"{good_shown} of {m['correct']} correct"
    )


def pick_examples(persons: Sequence[str | None], n: int = 18, seed: int = 0) -> list[int]:
    """Indices of up to `n` examples spread over persons, deterministic."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(persons):
        groups[p or ""].append(i)
    for g in groups.values():
        rng.shuffle(g)
    out: list[int] = []
    while len(out) < n and any(groups.values()):
        for k in sorted(groups):
            if groups[k] and len(out) < n:
                out.append(groups[k].pop())
    return sorted(out)
