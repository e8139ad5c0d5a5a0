"""Classification metrics of one split, pure numpy: predictions, loss, ROC AUC, confusion matrix,
(balanced) accuracy with 95 % intervals, and accuracy per person."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from train import stats


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
