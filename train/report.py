"""Metrics (pure numpy), plots and the run's report.md, in the original log's own form:
Info / Result / Prediction / Knowledge.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from device.files import atomic_write_bytes
from train import stats
from train.determinism import describe as describe_reproducibility

log = logging.getLogger(__name__)

EVAL_SPLITS = ("valid", "seen_holdout", "unseen_persons")
SPLIT_TITLES = {
    "valid": "valid (random, seen persons)",
    "seen_holdout": "seen-person holdout",
    "unseen_persons": "unseen persons",
}
GAP_WARNING = 0.10  # seen minus unseen accuracy above this is called out in the report
# The Knowledge section claims generalisation to new persons only from at least this many unseen
# persons and an unseen-person interval no wider than this many points.
MIN_PERSONS_FOR_CLAIM = 5
MAX_CI_POINTS_FOR_CLAIM = 10.0

# ------------------------------------------------------------------------------ metrics (numpy)


def predicted_classes(probs: np.ndarray, output_kind: str, threshold: float = 0.5) -> np.ndarray:
    probs = np.asarray(probs, np.float64)
    if output_kind == "sigmoid":
        return (probs.reshape(-1) >= threshold).astype(np.int64)
    return probs.argmax(axis=-1).astype(np.int64)


def log_loss(y: np.ndarray, probs: np.ndarray, output_kind: str, eps: float = 1e-7) -> float:
    y = np.asarray(y, np.int64)
    if len(y) == 0:
        return float("nan")
    if output_kind == "sigmoid":
        p = np.clip(np.asarray(probs, np.float64).reshape(-1), eps, 1 - eps)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    p = np.clip(np.asarray(probs, np.float64), eps, 1.0)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def roc_auc_binary(y: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve = P(score of a random positive > score of a random negative),
    ties counted half (Mann-Whitney U with average ranks). None when a class is absent."""
    y = np.asarray(y).astype(bool).reshape(-1)
    score = np.asarray(score, np.float64).reshape(-1)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    ranks = np.empty(len(score), np.float64)
    i = 0
    while i < len(score):  # average ranks over ties
        j = i
        while j + 1 < len(score) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_auc(y: np.ndarray, probs: np.ndarray, output_kind: str, num_classes: int) -> float | None:
    if output_kind == "sigmoid":
        return roc_auc_binary(y, np.asarray(probs).reshape(-1))
    aucs = [roc_auc_binary(np.asarray(y) == k, np.asarray(probs)[:, k]) for k in range(num_classes)]
    aucs = [a for a in aucs if a is not None]
    return float(np.mean(aucs)) if aucs else None  # macro one-vs-rest


def confusion_matrix(y: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(y, np.int64), np.asarray(pred, np.int64)), 1)
    return cm  # rows: true label, columns: predicted


def balanced_accuracy(cm: np.ndarray) -> float | None:
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return None
    return float(np.mean(np.diag(cm)[present] / support[present]))


def split_metrics(y: np.ndarray, probs: np.ndarray, output_kind: str, num_classes: int, threshold: float = 0.5) -> dict:
    y = np.asarray(y, np.int64)
    n = int(len(y))
    if n == 0:
        return {
            "count": 0,
            "correct": 0,
            "accuracy": None,
            "accuracy_ci95": None,
            "balanced_accuracy": None,
            "balanced_accuracy_ci95": None,
            "loss": None,
            "roc_auc": None,
            "confusion_matrix": np.zeros((num_classes, num_classes), int).tolist(),
        }
    pred = predicted_classes(probs, output_kind, threshold)
    cm = confusion_matrix(y, pred, num_classes)
    correct = int((pred == y).sum())
    return {
        "count": n,
        "correct": correct,
        "accuracy": correct / n,
        "accuracy_ci95": stats.wilson_interval(correct, n),
        "balanced_accuracy": balanced_accuracy(cm),
        "balanced_accuracy_ci95": stats.balanced_accuracy_interval(cm.tolist()),
        "loss": log_loss(y, probs, output_kind),
        "roc_auc": roc_auc(y, probs, output_kind, num_classes),
        "confusion_matrix": cm.tolist(),
    }


def per_person(split: str, persons: Sequence[str | None], y: np.ndarray, pred: np.ndarray) -> list[dict]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(persons):
        groups[p if p is not None else "(none)"].append(i)
    rows = []
    for person in sorted(groups):
        idx = np.asarray(groups[person])
        rows.append(
            {
                "split": split,
                "person": person,
                "count": int(len(idx)),
                "accuracy": float((np.asarray(pred)[idx] == np.asarray(y)[idx]).mean()),
            }
        )
    return rows


# ------------------------------------------------------------------------------ history


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


# ------------------------------------------------------------------------------ plots


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


# ------------------------------------------------------------------------------ report.md


def _fmt(v, nd=3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def write_report(
    run_dir: Path,
    *,
    cfg,
    info: dict,
    metrics: dict,
    summary: dict,
    history: list[dict],
    index_info: dict,
    fit_info: dict,
    title: str | None = None,
) -> str:
    """Write report.md in the log's form and return its text."""
    m = metrics
    aug = cfg.augment
    aug_text = (
        "none"
        if not aug.active
        else ", ".join(
            filter(
                None,
                [
                    "RandomHorizontalFlip" if aug.flip else "",
                    f"RandomBrightness(max_delta={aug.brightness})" if aug.brightness else "",
                    f"RandomContrast({aug.contrast[0]}, {aug.contrast[1]})" if aug.contrast else "",
                    f"RandomHue({aug.hue})" if aug.hue else "",
                    f"RandomSaturation({aug.saturation[0]}, {aug.saturation[1]})" if aug.saturation else "",
                    f"GaussianNoise({aug.noise})" if aug.noise else "",
                ],
            )
        )
    )
    counts = summary["images"]
    persons = summary["persons"]
    ft = cfg.training.fine_tune
    lines = [f"# Run {title or run_dir.name}", ""]
    lines += [
        "## Info",
        "",
        f"- data: `{index_info['root']}` ({index_info['layout']}), {index_info['images']} images, labels "
        f"{', '.join(f'{k}: {v}' for k, v in index_info['counts'].items())}; "
        f"{index_info['skipped']} files skipped (see skipped.csv)",
        f"- split (seed {cfg.data.split_seed}; splits.csv lists every image): train {counts['train']}, "
        f"valid {counts['valid']} ({cfg.data.valid_fraction:g} of the rest, random), seen-person holdout "
        f"{counts['seen_holdout']}, unseen persons {counts['unseen_persons']} "
        f"({', '.join(persons['unseen_persons']) or 'none'}: held out entirely)",
        f"- batch {cfg.training.batch_size}, shuffle buffer {cfg.pipeline.shuffle_buffer} (reshuffled each epoch)",
        f"- augmentation: {aug_text}",
        f"- model: {info['backbone']}"
        + (f" (alpha {info['alpha']})" if info.get("alpha") else "")
        + f", input {cfg.model.input_size}x{cfg.model.input_size}, weights {cfg.model.weights}, "
        f"backbone {'frozen' if cfg.model.freeze_backbone else 'trained'}; head: "
        f"{cfg.model.head.pooling} pooling"
        + (f", fc {cfg.model.head.fc_units}" if cfg.model.head.fc_units else "")
        + (f", dropout {cfg.model.head.dropout}" if cfg.model.head.dropout else "")
        + f", Dense({1 if info['output_kind'] == 'sigmoid' else len(info['labels'])}, {info['output_kind']})",
        f"- parameters: {fit_info['trainable_params']:,} trainable of {fit_info['total_params']:,}"
        + (f"; fine-tune: {fit_info.get('fine_tune_trainable_params', 0):,} trainable" if ft else ""),
        f"- preprocessing inside the model: `{info['preprocessing']}` (the model takes raw RGB 0..255)",
        f"- compile: Adam(lr={cfg.training.learning_rate:g}), "
        f"{'binary' if info['output_kind'] == 'sigmoid' else 'sparse categorical'} cross-entropy, accuracy"
        + (f"; fine-tune top {ft.layers} layers, Adam(lr={ft.learning_rate:g}), {ft.epochs} epochs" if ft else ""),
        f"- class weights: {fit_info['class_weights_text']}",
        f"- pipeline: decode+resize (parallel) → cache ({cfg.pipeline.cache}) → shuffle → batch → "
        f"{'augment → ' if aug.active else ''}{'prefetch → ' if cfg.pipeline.prefetch else ''}train"
        + ("; head trained on cached backbone features (fast path)" if fit_info["fast_path"] else ""),
        f"- train: up to {cfg.training.epochs} epochs, "
        + (
            f"early stopping on {fit_info['monitor']} (patience {cfg.training.patience}"
            + (f", not before epoch {cfg.training.min_epochs + 1}" if cfg.training.min_epochs else "")
            + "), the chosen epoch's weights restored"
            if cfg.training.patience > 0
            else "no early stopping (patience 0): the last epoch's weights are kept, no epoch is chosen"
        )
        + f", {fit_info['strategy']}"
        + (", mixed precision" if cfg.training.mixed_precision else ""),
        f"- reproducibility: {describe_reproducibility(m.get('reproducibility') or {})} (see Knowledge)",
        "",
    ]
    lines += [
        "## Result",
        "",
        "![curves](curves.png)",
        "",
        f"- epochs run: {fit_info['epochs_run']}" + (" (stopped early)" if fit_info.get("stopped_early") else ""),
        f"- model selection: {selection_text(m.get('selection') or {})}",
        "",
    ]
    lines += [
        "| epoch | phase | loss | accuracy | val_loss | val_accuracy | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for h in history:
        lines.append(
            f"| {h['epoch']} | {h['phase']} | {_fmt(h.get('loss'))} | {_fmt(h.get('accuracy'))} | "
            f"{_fmt(h.get('val_loss'))} | {_fmt(h.get('val_accuracy'))} | {_fmt(h.get('seconds'), 1)} |"
        )
    lines += [
        "",
        "## Prediction",
        "",
        "Intervals: 95 %, Wilson (balanced accuracy: per-class Wilson, Bonferroni), treating images as "
        "independent; images of one person are not, so with few persons the real uncertainty is larger.",
        "",
        "| split | images | persons | accuracy (95 % CI) | balanced acc. (95 % CI) | loss | ROC AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    n_persons = m.get("persons", {})
    for s in EVAL_SPLITS:
        d = m[s]
        lines.append(
            f"| {SPLIT_TITLES[s]} | {d['count']} | {n_persons.get(s, '–')} | {_fmt(d['accuracy'])} "
            f"{stats.fmt_ci(d.get('accuracy_ci95'))} | {_fmt(d['balanced_accuracy'])} "
            f"{stats.fmt_ci(d.get('balanced_accuracy_ci95'))} | {_fmt(d['loss'])} | {_fmt(d['roc_auc'])} |"
        )
    lines += [
        "",
        "Seen persons, new images:",
        "",
        "![seen](predictions_seen.png)",
        "",
        "Persons never seen in training:",
        "",
        "![unseen](predictions_unseen.png)",
        "",
        "Per person:",
        "",
        "| split | person | images | accuracy |",
        "|---|---|---|---|",
    ]
    for r in m["per_person"]:
        if r["split"] != "train":
            lines.append(f"| {r['split']} | {r['person']} | {r['count']} | {_fmt(r['accuracy'])} |")
    lines += ["", "## Knowledge", ""]
    lines += knowledge(cfg, info, m)
    text = "\n".join(lines) + "\n"
    atomic_write_bytes(run_dir / "report.md", text.encode())
    return text


def knowledge(cfg, info: dict, m: dict) -> list[str]:
    t = m["timing"]
    out = []
    if t.get("first_epoch_seconds") is not None:
        if t.get("later_epochs_mean_seconds") is not None:
            out.append(
                f"- Timing (measured): first epoch {t['first_epoch_seconds']:.1f} s, later epochs "
                f"{t['later_epochs_mean_seconds']:.1f} s on average: the first is "
                f"{t['first_epoch_extra_seconds']:+.1f} s apart (decoding, resizing and filling the "
                f"{cfg.pipeline.cache} cache, graph tracing), as the log saw (79 s vs ~1 min less)."
            )
        else:
            out.append(f"- Timing (measured): one epoch, {t['first_epoch_seconds']:.1f} s.")
        if t.get("images_per_s"):
            out.append(f"- Training throughput: {t['images_per_s']:.0f} images/s (median epoch, train part).")
        ft = t.get("phases", {}).get("fine_tune")
        if ft and ft.get("first_epoch_seconds") is not None:
            out.append(
                f"- Fine-tune phase: first epoch {ft['first_epoch_seconds']:.1f} s (a new graph with the "
                f"unfrozen layers, and gradients through them)"
                + (
                    f", later {ft['later_epochs_mean_seconds']:.1f} s"
                    if ft.get("later_epochs_mean_seconds") is not None
                    else ""
                )
                + "."
            )
        if t.get("feature_extraction_seconds") is not None:
            out.append(
                f"- Fast path: backbone features computed once in {t['feature_extraction_seconds']:.1f} s; "
                "head epochs then run on cached features."
            )
    out += _learned_and_generalisation(m)
    rec = m.get("reproducibility")
    if rec:
        out.append(
            f"- Reproducibility: {describe_reproducibility(rec)}. The same config, data and seed give the "
            "same figures on this machine with this thread count; another CPU (instruction set, oneDNN "
            "kernels) or another thread count can change them, so compare runs by ranges over seeds, not "
            "by single figures."
        )
    if info["backbone"] == "mobilenet_v2":
        out.append(
            "- Preprocessing: the original log rescaled inputs with /255 (to [0, 1]), which was wrong for "
            "MobileNetV2: its ImageNet weights expect [-1, 1]. This model scales inside itself "
            "(`x/127.5 - 1`), so it takes raw RGB 0..255 and the device cannot get it wrong."
        )
    elif info["backbone"] == "vgg16":
        out.append(
            "- Preprocessing: VGG16's ImageNet weights expect caffe-style input (BGR, mean subtracted, "
            "0..255), not the log's /255; the model does this inside itself and takes raw RGB 0..255."
        )
    else:
        out.append(
            f"- Preprocessing: the model scales inside itself (`{info['preprocessing']}`) and takes raw RGB "
            "0..255, so training, conversion and the device cannot drift apart. (The original log's /255 "
            "rescale was wrong for its MobileNetV2, whose ImageNet weights expect [-1, 1].)"
        )
    if cfg.model.weights == "none":
        out.append(
            "- Weights `none`: the backbone started from random initialisation (offline run); "
            "ImageNet weights would normally learn faster and generalise better."
        )
    if not cfg.augment.active:
        out.append("- No augmentation: the log's run 2 found that without it even new images of seen persons fail.")
    return out


def selection_text(sel: dict) -> str:
    """How the saved weights were chosen, and what that means for the valid figure."""
    if not sel or sel.get("epoch") is None:
        return "no epoch ran"
    if sel.get("by") == "valid":
        after = (
            f" from epoch {sel['first_eligible_epoch']} on (the first {sel['min_epochs']} not eligible)"
            if sel.get("min_epochs")
            else ""
        )
        return (
            f"the valid split chose epoch {sel['epoch']} (lowest {sel['monitor']}{after}) and its weights are "
            "the saved model, so the valid figures are optimistic: that split picked the model. The seen-person "
            "holdout and the unseen persons never influenced training or selection."
        )
    if sel.get("by") == "train":
        return (
            f"no valid split: the training loss chose epoch {sel['epoch']}; the seen-person holdout and the "
            "unseen persons never influenced training or selection."
        )
    best = sel.get("best_epoch")
    return (
        f"none: patience 0, the last epoch's weights (epoch {sel['epoch']}) are the saved model"
        + (f" (the lowest {sel['monitor']} was at epoch {best}, not used)" if best not in (None, sel["epoch"]) else "")
        + ". The valid split was only watched; no split influenced selection."
    )


def _learned_and_generalisation(m: dict) -> list[str]:
    """What the data can and cannot show about the model: did it learn, and does it generalise to new
    persons. Generalisation is claimed only from >= MIN_PERSONS_FOR_CLAIM unseen persons and an interval
    no wider than MAX_CI_POINTS_FOR_CLAIM points."""
    out = []
    verdict = m.get("verdict") or {}
    learned = verdict.get("learned") is not False
    if not learned:
        out.append(
            f"- **The model did not learn** — {verdict.get('diagnosis')}. The conversion gate will not publish it."
        )
    seen, unseen = m["seen_holdout"], m["unseen_persons"]
    if not unseen.get("count"):
        out.append(
            "- No unseen-person set (the data has no persons or none was held out): generalisation to new "
            "persons was NOT measured."
        )
        return out
    if not learned:
        return out
    persons = m.get("persons", {}).get("unseen_persons")
    ci = unseen.get("accuracy_ci95")
    width = stats.interval_points(ci)
    measured = (
        f"{unseen['accuracy']:.3f} {stats.fmt_ci(ci)} on unseen persons ({unseen.get('correct', '?')} of "
        f"{unseen['count']} images, {persons if persons is not None else '?'} persons)"
    )
    gap = (seen["accuracy"] - unseen["accuracy"]) if seen.get("count") else None
    reasons = []
    if persons is None or persons < MIN_PERSONS_FOR_CLAIM:
        reasons.append(
            f"{'only ' + str(persons) if persons is not None else 'an unknown number of'} unseen "
            f"person{'s' if persons != 1 else ''} (at least {MIN_PERSONS_FOR_CLAIM} needed)"
        )
    if width is None or width > MAX_CI_POINTS_FOR_CLAIM:
        reasons.append(
            f"a 95 % interval {width:.0f} points wide (at most {MAX_CI_POINTS_FOR_CLAIM:g})"
            if width is not None
            else "no interval"
        )
    if reasons:
        out.append(
            f"- What the data can show: {measured}. That is how the model does on these persons; with "
            f"{' and '.join(reasons)} the data cannot show whether it generalises to new persons in general. "
            "Hold out more persons (data.holdout_persons) to measure that."
        )
    if gap is not None and gap > GAP_WARNING:
        out.append(
            f"- **Seen/unseen gap: {seen['accuracy']:.3f} on new images of seen persons vs "
            f"{unseen['accuracy']:.3f} on unseen persons ({gap:+.3f}).** The model has partly learned the "
            "persons, not the attribute; more persons, more augmentation or a frozen pretrained backbone "
            "usually narrow it. The random valid split leaks identities and overstates accuracy for new people."
            + (" With this few persons, per-person difficulty can also explain it." if reasons else "")
        )
    elif gap is not None and gap < -GAP_WARNING:
        out.append(
            f"- Unseen persons score higher than seen persons ({unseen['accuracy']:.3f} vs "
            f"{seen['accuracy']:.3f}), as in the log's run 4: with few persons per split, per-person "
            "difficulty dominates; see the per-person table before trusting either number."
        )
    elif not reasons:
        if gap is not None:
            out.append(
                f"- {measured} and {seen['accuracy']:.3f} {stats.fmt_ci(seen.get('accuracy_ci95'))} on new "
                f"images of seen persons: no large gap ({gap:+.3f}), so the model generalises to new persons "
                "on this data."
            )
        else:
            out.append(f"- {measured}: the model generalises to new persons on this data.")
    return out


def write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=_json_default) + "\n").encode())


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
