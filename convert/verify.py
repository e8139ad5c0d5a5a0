"""Verification: every `.tflite` through the device's own code, the float model on the same pixels.

The images are read by `device.crop.load_image_rgb` and made into the model's input by the daemon's
`device.crop.Preparer` (resized whole, as training reads a file), the `.tflite` runs in
`device.runtime.Classifier` (the daemon's loader, quantize and dequantize), and the decision is
`Classifier.label_of` (the daemon's threshold or argmax) for both the `.tflite` and the float model.
The float model sees exactly the same uint8 images, so any difference measured here is the
conversion's, not the preprocessing's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from device.crop import Cropper, Preparer, load_image_rgb
from device.selftest import AS_IS
from device.runtime import Classifier
from train import stats

log = logging.getLogger(__name__)

CHUNK = 256  # images held in memory at once


def load_model_images(paths: Sequence[str | os.PathLike], size_hw: tuple[int, int]) -> np.ndarray:
    """(N, H, W, 3) uint8: each file read and made into the model's input exactly as the device does
    (the daemon's `Preparer`, with the crop a self-test image gets: the whole file, resized)."""
    h, w = size_hw
    preparer = Preparer(Cropper(AS_IS), (h, w))
    out = np.empty((len(paths), h, w, 3), np.uint8)
    for i, p in enumerate(paths):
        preparer.image_input(load_image_rgb(p), out=out[i])
    return out


def classifier_probabilities(clf: Classifier, images: np.ndarray) -> np.ndarray:
    """(N, K) dequantized outputs, one `Classifier.classify` per image (batch 1, as on the device)."""
    k = int(np.prod(clf.output_details["shape"][1:]))
    out = np.empty((len(images), k), np.float32)
    for i, img in enumerate(images):
        out[i] = clf.classify(img)
    return out


def tflite_probabilities(model_dir: str | os.PathLike, image_paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """What verification computes per image for a published model dir: (N, K) probabilities
    (K = 1, P(positive label), for a sigmoid model). The device parity test compares the daemon's
    value with this."""
    clf = Classifier.from_model_dir(model_dir)
    out = []
    for i in range(0, len(image_paths), CHUNK):
        out.append(classifier_probabilities(clf, load_model_images(image_paths[i : i + CHUNK], clf.input_size)))
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def decisions(clf: Classifier, probs: np.ndarray) -> list[str]:
    """Labels under the manifest's threshold/argmax: the daemon's rule, for any model's outputs."""
    return [clf.label_of(row)[0] for row in probs]


def accuracy(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    if not len(y_true):
        return float("nan")
    return float(np.mean([a == b for a, b in zip(y_true, y_pred)]))


def balanced_accuracy(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    """Mean per-class recall over the classes present in `y_true` (sklearn's definition)."""
    classes = sorted(set(y_true))
    if not classes:
        return float("nan")
    recalls = []
    for c in classes:
        idx = [i for i, t in enumerate(y_true) if t == c]
        recalls.append(np.mean([y_pred[i] == c for i in idx]))
    return float(np.mean(recalls))


@dataclass
class SplitOutputs:
    """Everything computed for one split: ground truth, float-model and per-variant outputs."""

    labels: list[str] = field(default_factory=list)
    float_probs: list[np.ndarray] = field(default_factory=list)
    variant_probs: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def probs(self, variant: str | None) -> np.ndarray:
        parts = self.float_probs if variant is None else self.variant_probs[variant]
        return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)


def run_split(
    paths: Sequence[str],
    labels: Sequence[str],
    size_hw: tuple[int, int],
    float_predict: Callable[[np.ndarray], np.ndarray],
    classifiers: dict[str, Classifier],
) -> SplitOutputs:
    """Read each image once (device preprocessing), run the float model and every variant on it."""
    res = SplitOutputs(labels=list(labels), variant_probs={v: [] for v in classifiers})
    for i in range(0, len(paths), CHUNK):
        images = load_model_images(paths[i : i + CHUNK], size_hw)
        res.float_probs.append(np.asarray(float_predict(images), np.float32).reshape(len(images), -1))
        for v, clf in classifiers.items():
            res.variant_probs[v].append(classifier_probabilities(clf, images))
    return res


def split_metrics(out: SplitOutputs, variant: str, clf: Classifier) -> dict:
    """Per split: n, accuracy and balanced accuracy with 95 % intervals (for the variant and the float
    model), the paired counts the gate tests (b = only the float model right, c = only the variant
    right; images where they decide the same), probability differences and the variant's confusion
    matrix (rows true, columns predicted, in the manifest's label order)."""
    p_float, p_tfl = out.probs(None), out.probs(variant)
    d_float, d_tfl = decisions(clf, p_float), decisions(clf, p_tfl)
    diff = np.abs(p_tfl.astype(np.float64) - p_float.astype(np.float64))
    n = len(out.labels)
    right = [t == p for t, p in zip(out.labels, d_tfl)]
    right_f = [t == p for t, p in zip(out.labels, d_float)]
    agree = sum(a == b for a, b in zip(d_float, d_tfl))
    labels = list(clf.manifest.labels)
    ix = {lbl: i for i, lbl in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), np.int64)
    for t, p in zip(out.labels, d_tfl):
        cm[ix[t], ix[p]] += 1
    cm_f = np.zeros_like(cm)
    for t, p in zip(out.labels, d_float):
        cm_f[ix[t], ix[p]] += 1
    acc, acc_f = accuracy(out.labels, d_tfl), accuracy(out.labels, d_float)
    return {
        "n": n,
        "correct": int(sum(right)),
        "accuracy": acc,
        "accuracy_ci95": stats.wilson_interval(int(sum(right)), n),
        "balanced_accuracy": balanced_accuracy(out.labels, d_tfl),
        "balanced_accuracy_ci95": stats.balanced_accuracy_interval(cm.tolist()),
        "float_correct": int(sum(right_f)),
        "float_accuracy": acc_f,
        "float_accuracy_ci95": stats.wilson_interval(int(sum(right_f)), n),
        "float_balanced_accuracy": balanced_accuracy(out.labels, d_float),
        "float_balanced_accuracy_ci95": stats.balanced_accuracy_interval(cm_f.tolist()),
        "accuracy_drop_points": 100.0 * (acc_f - acc) if n else 0.0,
        "only_float_right": int(sum(f and not v for f, v in zip(right_f, right))),
        "only_converted_right": int(sum(v and not f for f, v in zip(right_f, right))),
        "agree": int(agree),
        "agreement": accuracy(d_float, d_tfl),
        "agreement_ci95": stats.wilson_interval(int(agree), n),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "confusion_matrix": cm.tolist(),
    }
