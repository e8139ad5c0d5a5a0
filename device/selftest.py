"""One image through the device's own path (crop → resize → classify), and the model dir's self-test.

`classify_image` is what `device check` does to an image and what the conversion stage does to the
self-test image it picks: the daemon's `Preparer` (crop, then resize to the model's input) and
`Classifier.classify`. Face mode without a face falls back to the full frame (a self-test is about
the model, not the detector).

The self-test of a model dir, written by the conversion stage beside the model::

    export/<variant>/selftest.png    an image from the data, already at the model's input size
    export/<variant>/selftest.json   {"image": "selftest.png", "expect": "open", "score": 0.93,
                                      "tolerance": 0.05, "true_label": "open", "split": "unseen_persons",
                                      "from": "<the data file>"}

`device check` (deploy's check on the Pi, and the daemon's check of a new model on SIGHUP) classifies
it and requires `expect` and `score` ± `tolerance`. Being the model's input already, it is classified
with the full-frame crop whatever the device config crops (which would cut it again).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.crop import Box, CropConfig, Cropper, Preparer, save_image_rgb
from device.errors import FaceedgeError
from device.files import atomic_write_bytes

SELFTEST_JSON = "selftest.json"
SELFTEST_IMAGE = "selftest.png"
# The score `device check` accepts on the Pi: the converting machine's score for the self-test image
# may differ on another CPU / runtime build by a few int8 output steps (1/256 each), not more.
SELFTEST_TOLERANCE = 0.05
SELFTEST_KEYS = {"image", "expect", "score", "tolerance", "true_label", "split", "from"}
# The crop a self-test image is classified with: it is the model's input already.
AS_IS = CropConfig(mode="full", square="stretch")


@dataclass
class Classified:
    """What the model says about one image, and what it took."""

    label: str
    score: float
    scores: np.ndarray
    box: Box | None  # the crop, in the image's pixels
    crop: str  # the crop used, in words ("full/center_crop", "center", "face", or the fallback)
    preprocess_ms: float  # crop + resize
    inference_ms: float  # the first inference (set_input, invoke, dequantize)


def classify_image(clf: Any, crop: CropConfig, rgb: np.ndarray, *, cropper: Cropper | None = None) -> Classified:
    """Crop `rgb` as the daemon does (`crop`; face mode without a face: the full frame), resize it
    to the model's input, classify it with `clf` (a `device.runtime.Classifier`)."""
    cropper = cropper or Cropper(crop)
    model_input = Preparer(cropper, clf.input_size).image_input(rgb)
    desc = crop.mode if crop.mode != "full" else f"full/{crop.square}"
    if model_input.pixels is None:  # face mode, no face
        model_input = Preparer(Cropper(CropConfig(mode="full", square=crop.square)), clf.input_size).image_input(rgb)
        desc = f"face (no face found in the image: full/{crop.square} used)"
    t0 = time.perf_counter()
    scores = clf.classify(model_input.pixels)
    inference_ms = (time.perf_counter() - t0) * 1e3
    label, score = clf.label_of(scores)
    return Classified(
        label=label,
        score=float(score),
        scores=scores,
        box=model_input.box,
        crop=desc,
        preprocess_ms=model_input.crop_ms + model_input.resize_ms,
        inference_ms=inference_ms,
    )


@dataclass
class SelfTest:
    """A self-test image and what the model must say about it."""

    image: Path
    expect: str | None = None
    score: float | None = None
    tolerance: float = SELFTEST_TOLERANCE

    def failure(self, label: str, score: float) -> str | None:
        """Why (label, score) is not what this self-test expects (None: it is)."""
        if self.expect is not None and label != self.expect:
            return f"self-test image classified {label!r} ({score:.3f}), expected {self.expect!r}"
        if self.score is not None and not math.isclose(score, self.score, abs_tol=self.tolerance):
            return (
                f"self-test score {score:.4f} differs from the expected {self.score:.4f} by more than {self.tolerance}"
            )
        return None


def load_selftest(model_dir: str | Path) -> SelfTest | None:
    """The model dir's `selftest.json` (None when it has none); FaceedgeError naming the file and key."""
    p = Path(model_dir) / SELFTEST_JSON
    if not p.is_file():
        return None
    try:
        spec = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FaceedgeError(f"{p}: not a readable JSON file ({e})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("image"), str):
        raise FaceedgeError(f"{p}: key 'image': a path relative to the model dir is required")
    unknown = set(spec) - SELFTEST_KEYS
    if unknown:
        raise FaceedgeError(f"{p}: key {sorted(unknown)[0]!r}: unknown (expected {', '.join(sorted(SELFTEST_KEYS))})")
    for key in ("score", "tolerance"):
        if spec.get(key) is not None and not isinstance(spec[key], (int, float)):
            raise FaceedgeError(f"{p}: key {key!r}: a number is required, not {spec[key]!r}")
    return SelfTest(
        image=Path(model_dir) / spec["image"],
        expect=spec.get("expect"),
        score=None if spec.get("score") is None else float(spec["score"]),
        tolerance=float(spec.get("tolerance", SELFTEST_TOLERANCE)),
    )


def write_selftest(model_dir: str | Path, clf: Any, rgb: np.ndarray, **about: Any) -> dict[str, Any]:
    """Write `selftest.png` (`rgb` resized to the model's input) and `selftest.json` with what `clf`
    says about it through `classify_image`, as `device check` will classify it; `about`: true_label,
    split, from. Returns the JSON written."""
    model_dir = Path(model_dir)
    pixels = Preparer(Cropper(AS_IS), clf.input_size).image_input(rgb).pixels
    save_image_rgb(model_dir / SELFTEST_IMAGE, pixels)
    from device.crop import load_image_rgb

    result = classify_image(clf, AS_IS, load_image_rgb(model_dir / SELFTEST_IMAGE))  # what check will read
    spec = {
        "image": SELFTEST_IMAGE,
        "expect": result.label,
        "score": round(result.score, 6),
        "tolerance": SELFTEST_TOLERANCE,
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in about.items() if k in SELFTEST_KEYS},
    }
    atomic_write_bytes(model_dir / SELFTEST_JSON, (json.dumps(spec, indent=2) + "\n").encode())
    return spec
