"""The self-test each exported model carries: ``export/<variant>/selftest.{png,json}``.

One image of the verification data, preferably of persons the model never trained on, that the
converted model classifies right and far from its decision boundary (so that another CPU or runtime
build gives the same label), written by `device.selftest.write_selftest` with the label and score
the model gives it through the device's own path. `device check` classifies it again on the Pi
before a deploy switches releases, and in a child process before the daemon swaps in a new model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.crop import load_image_rgb
from device.selftest import write_selftest

log = logging.getLogger(__name__)

# Splits to take the image from, best first: the model never trained on these persons, then images.
SPLITS = ("unseen_persons", "seen_holdout", "valid", "all")


@dataclass
class Candidates:
    """One split's images, true labels, and a model's outputs for them (rows in the same order)."""

    paths: Sequence[str]
    labels: Sequence[str]
    probs: np.ndarray  # (N, K)


def margin(scores: np.ndarray, threshold: float) -> float:
    """How far the outputs are from changing the decision: |p - threshold| for one sigmoid unit, the
    gap between the two highest probabilities for a softmax."""
    if scores.size == 1:
        return abs(float(scores.ravel()[0]) - threshold)
    top2 = np.sort(scores.ravel())[-2:]
    return float(top2[1] - top2[0])


def pick(candidates: Candidates, clf: Any) -> int | None:
    """The index of the self-test image: one the model gets right first, then the widest margin,
    then the first path (a tie is broken the same way on every machine)."""
    best: tuple[tuple[bool, float], int] | None = None
    for i in sorted(range(len(candidates.paths)), key=lambda i: str(candidates.paths[i])):
        scores = candidates.probs[i]
        label, _ = clf.label_of(scores)
        key = (label == candidates.labels[i], margin(scores, clf.manifest.threshold))
        if best is None or key > best[0]:  # strictly: the first path wins a tie
            best = (key, i)
    return None if best is None else best[1]


def write_for_model(model_dir: Path, clf: Any, splits: dict[str, Candidates]) -> dict | None:
    """Pick the image from the best split present and write the model dir's self-test; its JSON, or
    None when there is no image to pick from."""
    for split in SPLITS:
        candidates = splits.get(split)
        if candidates is None or not len(candidates.paths):
            continue
        i = pick(candidates, clf)
        path = candidates.paths[i]
        spec = write_selftest(
            model_dir,
            clf,
            load_image_rgb(path),
            true_label=candidates.labels[i],
            split=split,
            **{"from": str(path)},
        )
        log.info(
            "%s: self-test %s (%s) → %s %.3f", model_dir.name, Path(path).name, split, spec["expect"], spec["score"]
        )
        return spec
    return None
