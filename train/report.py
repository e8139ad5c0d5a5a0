"""The run's report.md, in the original log's own form: Info / Result / Prediction / Knowledge; and
write_json for the run's JSON files.

The metrics (train.metrics), history.csv and timings (train.history) and plots (train.plots) have
their own modules; their public names are still importable from here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from device.files import atomic_write_bytes
from train import stats
from train.determinism import describe as describe_reproducibility
from train.history import HISTORY_FIELDS, read_history, timing_summary
from train.metrics import (
    balanced_accuracy,
    confusion_matrix,
    log_loss,
    per_person,
    predicted_classes,
    roc_auc,
    roc_auc_binary,
    split_metrics,
)
from train.plots import grid_caption, pick_examples, pick_grid, plot_curves, plot_predictions

__all__ = [  # report.md and JSON; then the names re-exported from train.metrics, .history and .plots
    "EVAL_SPLITS",
    "SPLIT_TITLES",
    "fmt_value",
    "knowledge",
    "selection_text",
    "write_json",
    "write_report",
    "HISTORY_FIELDS",
    "read_history",
    "timing_summary",
    "balanced_accuracy",
    "confusion_matrix",
    "log_loss",
    "per_person",
    "predicted_classes",
    "roc_auc",
    "roc_auc_binary",
    "split_metrics",
    "grid_caption",
    "pick_examples",
    "pick_grid",
    "plot_curves",
    "plot_predictions",
]

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


def fmt_value(v, nd=3) -> str:
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
    lines = [f"# Run {title or run_dir.name}", ""]
    lines += _info_section(cfg, info, metrics, summary, index_info, fit_info)
    lines += _result_section(metrics, history, fit_info)
    lines += _prediction_section(metrics)
    lines += ["", "## Knowledge", ""]
    lines += knowledge(cfg, info, metrics)
    text = "\n".join(lines) + "\n"
    atomic_write_bytes(run_dir / "report.md", text.encode())
    return text


def _augmentation_text(aug) -> str:
    if not aug.active:
        return "none"
    layers = [
        "RandomHorizontalFlip" if aug.flip else "",
        f"RandomBrightness(max_delta={aug.brightness})" if aug.brightness else "",
        f"RandomContrast({aug.contrast[0]}, {aug.contrast[1]})" if aug.contrast else "",
        f"RandomHue({aug.hue})" if aug.hue else "",
        f"RandomSaturation({aug.saturation[0]}, {aug.saturation[1]})" if aug.saturation else "",
        f"GaussianNoise({aug.noise})" if aug.noise else "",
    ]
    return ", ".join(filter(None, layers))


def _info_section(cfg, info: dict, metrics: dict, summary: dict, index_info: dict, fit_info: dict) -> list[str]:
    """Data, split, pipeline, model, compile and training settings."""
    aug = cfg.augment
    counts = summary["images"]
    persons = summary["persons"]
    fine_tune = cfg.training.fine_tune
    return [
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
        f"- augmentation: {_augmentation_text(aug)}",
        f"- model: {info['backbone']}"
        + (f" (alpha {info['alpha']})" if info.get("alpha") else "")
        + f", input {cfg.model.input_size}x{cfg.model.input_size}, weights {cfg.model.weights}, "
        f"backbone {'frozen' if cfg.model.freeze_backbone else 'trained'}; head: "
        f"{cfg.model.head.pooling} pooling"
        + (f", fc {cfg.model.head.fc_units}" if cfg.model.head.fc_units else "")
        + (f", dropout {cfg.model.head.dropout}" if cfg.model.head.dropout else "")
        + f", Dense({1 if info['output_kind'] == 'sigmoid' else len(info['labels'])}, {info['output_kind']})",
        f"- parameters: {fit_info['trainable_params']:,} trainable of {fit_info['total_params']:,}"
        + (f"; fine-tune: {fit_info.get('fine_tune_trainable_params', 0):,} trainable" if fine_tune else ""),
        f"- preprocessing inside the model: `{info['preprocessing']}` (the model takes raw RGB 0..255)",
        f"- compile: Adam(lr={cfg.training.learning_rate:g}), "
        f"{'binary' if info['output_kind'] == 'sigmoid' else 'sparse categorical'} cross-entropy, accuracy"
        + (
            f"; fine-tune top {fine_tune.layers} layers, Adam(lr={fine_tune.learning_rate:g}), "
            f"{fine_tune.epochs} epochs"
            if fine_tune
            else ""
        ),
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
        f"- reproducibility: {describe_reproducibility(metrics.get('reproducibility') or {})} (see Knowledge)",
        "",
    ]


def _result_section(metrics: dict, history: list[dict], fit_info: dict) -> list[str]:
    """Curves, epochs run, the model selection, and a row per epoch."""
    lines = [
        "## Result",
        "",
        "![curves](curves.png)",
        "",
        f"- epochs run: {fit_info['epochs_run']}" + (" (stopped early)" if fit_info.get("stopped_early") else ""),
        f"- model selection: {selection_text(metrics.get('selection') or {})}",
        "",
    ]
    lines += [
        "| epoch | phase | loss | accuracy | val_loss | val_accuracy | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in history:
        lines.append(
            f"| {row['epoch']} | {row['phase']} | {fmt_value(row.get('loss'))} | {fmt_value(row.get('accuracy'))} | "
            f"{fmt_value(row.get('val_loss'))} | {fmt_value(row.get('val_accuracy'))} | "
            f"{fmt_value(row.get('seconds'), 1)} |"
        )
    return lines


def _prediction_section(metrics: dict) -> list[str]:
    """Every evaluation split with its intervals, the prediction grids, and accuracy per person."""
    lines = [
        "",
        "## Prediction",
        "",
        "Intervals: 95 %, Wilson (balanced accuracy: per-class Wilson, Bonferroni), treating images as "
        "independent; images of one person are not, so with few persons the real uncertainty is larger.",
        "",
        "| split | images | persons | accuracy (95 % CI) | balanced acc. (95 % CI) | loss | ROC AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    n_persons = metrics.get("persons", {})
    for split in EVAL_SPLITS:
        figures = metrics[split]
        lines.append(
            f"| {SPLIT_TITLES[split]} | {figures['count']} | {n_persons.get(split, '–')} | "
            f"{fmt_value(figures['accuracy'])} {stats.fmt_ci(figures.get('accuracy_ci95'))} | "
            f"{fmt_value(figures['balanced_accuracy'])} {stats.fmt_ci(figures.get('balanced_accuracy_ci95'))} | "
            f"{fmt_value(figures['loss'])} | {fmt_value(figures['roc_auc'])} |"
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
    for row in metrics["per_person"]:
        if row["split"] != "train":
            lines.append(f"| {row['split']} | {row['person']} | {row['count']} | {fmt_value(row['accuracy'])} |")
    return lines


def _timing_knowledge(cfg, timing: dict) -> list[str]:
    """What the epoch timings show: the first epoch apart, throughput, fine-tune phase, fast path."""
    out = []
    if timing.get("first_epoch_seconds") is not None:
        if timing.get("later_epochs_mean_seconds") is not None:
            out.append(
                f"- Timing (measured): first epoch {timing['first_epoch_seconds']:.1f} s, later epochs "
                f"{timing['later_epochs_mean_seconds']:.1f} s on average: the first is "
                f"{timing['first_epoch_extra_seconds']:+.1f} s apart (decoding, resizing and filling the "
                f"{cfg.pipeline.cache} cache, graph tracing), as the log saw (79 s vs ~1 min less)."
            )
        else:
            out.append(f"- Timing (measured): one epoch, {timing['first_epoch_seconds']:.1f} s.")
        if timing.get("images_per_s"):
            out.append(f"- Training throughput: {timing['images_per_s']:.0f} images/s (median epoch, train part).")
        fine_tune = timing.get("phases", {}).get("fine_tune")
        if fine_tune and fine_tune.get("first_epoch_seconds") is not None:
            out.append(
                f"- Fine-tune phase: first epoch {fine_tune['first_epoch_seconds']:.1f} s (a new graph with the "
                f"unfrozen layers, and gradients through them)"
                + (
                    f", later {fine_tune['later_epochs_mean_seconds']:.1f} s"
                    if fine_tune.get("later_epochs_mean_seconds") is not None
                    else ""
                )
                + "."
            )
        if timing.get("feature_extraction_seconds") is not None:
            out.append(
                f"- Fast path: backbone features computed once in {timing['feature_extraction_seconds']:.1f} s; "
                "head epochs then run on cached features."
            )
    return out


def knowledge(cfg, info: dict, m: dict) -> list[str]:
    """report.md's Knowledge section from `m`, metrics.json's content: timings, what the data can show,
    reproducibility, preprocessing and the settings that explain the figures."""
    out = _timing_knowledge(cfg, m["timing"])
    out += _learned_and_generalisation(m)
    reproducibility = m.get("reproducibility")
    if reproducibility:
        out.append(
            f"- Reproducibility: {describe_reproducibility(reproducibility)}. The same config, data and seed give "
            "the same figures on this machine with this thread count; another CPU (instruction set, oneDNN "
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


def _learned_and_generalisation(metrics: dict) -> list[str]:
    """What the data can and cannot show about the model: did it learn, and does it generalise to new
    persons. Generalisation is claimed only from >= MIN_PERSONS_FOR_CLAIM unseen persons and an interval
    no wider than MAX_CI_POINTS_FOR_CLAIM points."""
    out = []
    verdict = metrics.get("verdict") or {}
    learned = verdict.get("learned") is not False
    if not learned:
        out.append(
            f"- **The model did not learn** — {verdict.get('diagnosis')}. The conversion gate will not publish it."
        )
    seen, unseen = metrics["seen_holdout"], metrics["unseen_persons"]
    if not unseen.get("count"):
        out.append(
            "- No unseen-person set (the data has no persons or none was held out): generalisation to new "
            "persons was NOT measured."
        )
        return out
    if not learned:
        return out
    persons = metrics.get("persons", {}).get("unseen_persons")
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
