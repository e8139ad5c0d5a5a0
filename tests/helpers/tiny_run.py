"""A tiny training run directory, as the training stage writes it, for the conversion tests.

A 32x32 raw-RGB-in classifier (tests/helpers/models.build_tiny_keras_model: "left half brighter than the
right half" = "open") and real PNG files of that rule in a <label>/<person>/ tree, 40x40 so the
resize to the model's input is exercised, split into train/valid/seen_holdout/unseen_persons.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from tests.helpers.models import build_tiny_keras_model

SIZE = 32
FILE_SIZE = 40
LABELS = ["closed", "open"]  # label 1 (sigmoid 1.0) = "open" = left half brighter
SPLIT_PLAN = {  # person: (split, images)
    "p0": ("train", 40),
    "p1": ("train", 40),
    "p2": ("train", 40),
    "p3": ("valid", 50),
    "p4": ("seen_holdout", 50),
    "p5": ("unseen_persons", 60),
}


def rule_images(n: int, size: int, seed: int, margin: float = 25.0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images of conftest.tiny_images' rule (label 1 = left half brighter), but with the two
    halves at least `margin` grey levels apart, so no image sits on the decision boundary."""
    rng = np.random.default_rng(seed)
    left = rng.uniform(30, 225, n)
    gap = rng.uniform(margin, 120, n) * rng.choice([-1, 1], n)
    right = np.clip(left + gap, 0, 255)
    right = np.where(np.abs(right - left) < margin, left - gap, right)  # clipped too close: flip the side
    img = np.empty((n, size, size, 3))
    img[:, :, : size // 2] = left[:, None, None, None]
    img[:, :, size // 2 :] = right[:, None, None, None]
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), (left > right).astype(np.float32)


def write_images(folder: Path, images: np.ndarray, stem: str) -> list[Path]:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        p = folder / f"{stem}_{i:03d}.png"
        cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        paths.append(p)
    return paths


def make_tiny_run(root: Path, *, model=None) -> Path:
    """Write runs/tiny-<ts>/ (model.keras, model_info.json, splits.csv, report.md) and data/; return the run."""
    import cv2

    data = root / "data"
    rows = []
    for k, (person, (split, n)) in enumerate(SPLIT_PLAN.items()):
        imgs, ys = rule_images(n, FILE_SIZE, seed=100 + k)
        for img, y in zip(imgs, ys):
            label = LABELS[int(y)]
            folder = data / label / person
            folder.mkdir(parents=True, exist_ok=True)
            p = folder / f"{person}_{len(rows):04d}.png"
            cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            rows.append((str(p.resolve()), label, person, split))
    run = root / "runs" / "tiny-20260101-000000"
    run.mkdir(parents=True)
    if model is None:
        model, _ = build_tiny_keras_model(SIZE)
    model.save(run / "model.keras")
    info = {
        "labels": LABELS,
        "positive_label": "open",
        "output_kind": "sigmoid",
        "threshold": 0.5,
        "input_size": [SIZE, SIZE],
        "backbone": "tiny_cnn",
        "alpha": None,
        "preprocessing": "rescale: x/127.5 - 1",
        "resize_method": "bilinear",
        "data_root": str(data.resolve()),
    }
    (run / "model_info.json").write_text(json.dumps(info, indent=2))
    with open(run / "splits.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "person", "split"])
        w.writerows(rows)
    (run / "report.md").write_text("# Run tiny\n\n## Metrics\n\nunseen accuracy: n/a\n")
    return run
