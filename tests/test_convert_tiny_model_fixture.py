"""The checked-in tiny model (tests/fixtures/tiny_model/) is what tests/fixtures/make_tiny_model.py
makes today: regenerated here with TensorFlow, it has the same manifest, the same tensors (shapes
and dtypes), the same input/output quantization and decides like the checked-in one. So the
fixture the device tests load without TensorFlow cannot silently drift from the model builder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from device.manifest import load_manifest
from device.runtime import Classifier, load_runtime
from tests.fixtures.make_tiny_model import FILES, make
from tests.helpers.models import TINY_MODEL_DIR, TINY_MODEL_VARIANTS, tiny_images

# what may differ between two builds: the bytes (training on another CPU) and the TensorFlow version
BUILD_KEYS = ("sha256", "size_bytes", "tensorflow_version")


def structure(model_dir: Path) -> dict:
    """What a rebuild must keep: the manifest but its build keys, every tensor's shape and dtype, and
    the input and output quantization. Not the tensor names: Keras numbers its layers per process."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    interpreter = load_runtime().interpreter_cls(model_path=str(model_dir / "model.tflite"))
    io = [*interpreter.get_input_details(), *interpreter.get_output_details()]
    return {
        "manifest": {k: v for k, v in manifest.items() if k not in BUILD_KEYS},
        "tensors": sorted(
            (tuple(int(s) for s in t["shape"]), np.dtype(t["dtype"]).name) for t in interpreter.get_tensor_details()
        ),
        "io": [(float(t["quantization"][0]), int(t["quantization"][1])) for t in io],
    }


def decisions(model_dir: Path, images: np.ndarray) -> np.ndarray:
    clf = Classifier.from_model_dir(model_dir, num_threads=1)
    return np.array([clf.classify(img)[0] > 0.5 for img in images])


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory) -> dict[str, Path]:
    return make(tmp_path_factory.mktemp("tiny_model"))


def test_checked_in_fixture_is_a_small_valid_model_dir():
    assert sorted(p.name for p in TINY_MODEL_DIR.iterdir()) == sorted(TINY_MODEL_VARIANTS)
    for variant in TINY_MODEL_VARIANTS:
        model_dir = TINY_MODEL_DIR / variant
        assert sorted(p.name for p in model_dir.iterdir()) == sorted(FILES)
        assert (model_dir / "model.tflite").stat().st_size < 16_000  # a few KB
        manifest, _ = load_manifest(model_dir)  # the device's own check: sha256, size, schema
        assert manifest.variant == variant
    int8 = load_manifest(TINY_MODEL_DIR / "int8")[0]
    assert (int8.input.dtype, int8.output.dtype) == ("uint8", "uint8")  # like the real export


@pytest.mark.parametrize("variant", TINY_MODEL_VARIANTS)
def test_make_tiny_model_rebuilds_the_checked_in_fixture(rebuilt, variant):
    assert structure(rebuilt[variant]) == structure(TINY_MODEL_DIR / variant)
    images, labels = tiny_images(200, seed=7)
    checked_in, again = decisions(TINY_MODEL_DIR / variant, images), decisions(rebuilt[variant], images)
    assert (checked_in == again).mean() >= 0.95
    assert (checked_in == labels.astype(bool)).mean() >= 0.85  # it learned the rule, not a constant
