"""Evaluate a fitted run: predict every split with the full raw-pixels-in model (the one that is saved),
compute metrics.json, name the selected epoch, and apply the floor (train.verdict).

Model selection: with ``training.patience`` > 0 the valid split chose the epoch (lowest val_loss, never one
of a phase's first ``training.min_epochs``); with patience 0 nothing was chosen. The seen-person holdout and
the unseen persons are only predicted here, after training: they never influence training or selection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from train.metrics import per_person, predicted_classes, split_metrics
from train.history import timing_summary
from train.report import EVAL_SPLITS
from train.phases import FitResult
from train.rundir import Plan
from train.splits import SplitRecord, split_summary
from train.verdict import diagnose, floor_check, floor_split

THRESHOLD = 0.5


@dataclass
class SplitPredictions:
    records: list[SplitRecord]
    y: np.ndarray  # true class indices
    probs: np.ndarray  # the model's outputs (float64)
    pred: np.ndarray  # predicted class indices


def predict_splits(plan: Plan, built) -> dict[str, SplitPredictions]:
    """Each evaluation split predicted by `built.model` (an empty split gives empty arrays)."""
    import tensorflow as tf

    from train import pipeline

    cfg = plan.cfg
    binary = built.output_kind == "sigmoid"
    label_dtype = tf.float32 if binary else tf.int32
    label_index = {lbl: i for i, lbl in enumerate(plan.labels)}
    out = {}
    for split in EVAL_SPLITS:
        records = plan.split(split)
        y = np.array([label_index[s.label] for s in records], np.int64)
        if records:
            images = pipeline.image_dataset(
                [s.path for s in records],
                y,
                cfg.model.input_size,
                batch_size=cfg.training.batch_size,
                cache="none",
                label_dtype=label_dtype,
            )
            probs = built.model.predict(images.map(lambda x, _: x), verbose=0).astype(np.float64)
        else:
            probs = np.zeros((0, 1 if binary else len(plan.labels)))
        out[split] = SplitPredictions(records, y, probs, predicted_classes(probs, built.output_kind))
    return out


def build_metrics(
    plan: Plan, built, predictions: dict[str, SplitPredictions], history: list[dict], fitted: FitResult
) -> dict:
    """metrics.json's content. Also adds the epochs run and the selection to `fitted.info` (report.md)."""
    cfg = plan.cfg
    metrics: dict = {"labels": plan.labels, "output_kind": built.output_kind, "threshold": THRESHOLD}
    person_rows: list[dict] = []
    for split, p in predictions.items():
        metrics[split] = split_metrics(p.y, p.probs, built.output_kind, len(plan.labels))
        person_rows += per_person(split, [s.person for s in p.records], p.y, p.pred)
    metrics["per_person"] = person_rows
    timing = timing_summary(history, fitted.train_images)
    timing.update(fitted.timing)
    timing["run_seconds"] = round(fitted.train_seconds, 2)
    metrics["timing"] = timing
    metrics["class_weights"] = fitted.info["class_weights"]
    metrics["class_weights_text"] = fitted.info["class_weights_text"]
    chosen = selection(history, fitted.monitor, cfg.training.patience, cfg.training.min_epochs)
    fitted.info.update(
        epochs_run=len(history),
        best_epoch=chosen["best_epoch"],
        selection=chosen,
        stopped_early=len([h for h in history if h["phase"] == fitted.first_phase]) < cfg.training.epochs,
    )
    metrics["epochs_run"] = len(history)
    metrics["best_epoch"] = chosen["best_epoch"]
    metrics["selection"] = chosen
    metrics["trainable_params"] = fitted.info["trainable_params"]
    metrics["total_params"] = fitted.info["total_params"]
    summary = split_summary(plan.splits)
    metrics["splits"] = summary["images"]
    metrics["persons"] = {s: len(summary["persons"][s]) for s in EVAL_SPLITS}
    metrics["fast_path"] = fitted.fast_path
    metrics["reproducibility"] = plan.extra.get("reproducibility", {})
    metrics["verdict"] = verdict(plan, metrics, history)
    return metrics


def selection(history: list[dict], monitor: str, patience: int, min_epochs: int) -> dict:
    """Which epoch's weights the model has, and what chose it (the last phase is the one that counts).

    patience > 0: the epoch with the lowest `monitor` after the phase's first `min_epochs` (what the
    checkpoint restored); patience 0: the last epoch, nothing chosen."""
    if not history:
        return {"by": None, "monitor": monitor, "epoch": None, "best_epoch": None, "min_epochs": min_epochs}
    rows = [h for h in history if h["phase"] == history[-1]["phase"]]
    first_eligible = int(rows[0]["epoch"]) + min_epochs  # epoch numbers are 1-based
    eligible = [h for h in rows if int(h["epoch"]) >= first_eligible and h.get(monitor) is not None]
    best = min(eligible, key=lambda h: (h[monitor], int(h["epoch"]))) if eligible else None
    chosen = patience > 0 and best is not None
    return {
        "by": ("valid" if monitor == "val_loss" else "train") if chosen else None,
        "monitor": monitor,
        "epoch": int(best["epoch"]) if chosen else int(rows[-1]["epoch"]),
        "best_epoch": int(best["epoch"]) if best is not None else None,
        "min_epochs": min_epochs,
        "first_eligible_epoch": first_eligible,
    }


def verdict(plan: Plan, metrics: dict, history: list[dict]) -> dict:
    """The floor (train.verdict) on unseen persons (else the seen holdout, else valid), with the diagnosis."""
    cfg = plan.cfg
    split = floor_split({s: metrics[s]["count"] for s in EVAL_SPLITS})
    if split is None:
        return {
            "learned": True,
            "split": None,
            "diagnosis": None,
            "note": "no evaluation split has images: whether the model learned was not measured",
        }
    split_figures = metrics[split]
    check = floor_check(
        split_figures["confusion_matrix"],
        split_figures["balanced_accuracy"],
        significance=cfg.gate.significance,
        min_balanced_accuracy=cfg.gate.min_balanced_accuracy,
    )
    out = {"learned": check["passed"], "split": split, **check, "diagnosis": None}
    if not check["passed"]:
        out["diagnosis"] = diagnose(
            check,
            split,
            labels=plan.labels,
            cm=split_figures["confusion_matrix"],
            history=history,
            epochs=cfg.training.epochs,
            patience=cfg.training.patience,
            min_epochs=cfg.training.min_epochs,
            frozen_random_backbone=cfg.model.weights == "none" and cfg.model.freeze_backbone,
        )
    return out
