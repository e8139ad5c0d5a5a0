"""The self-test image the conversion stage writes beside each model (convert/selftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from convert.selftest import Candidates, margin, pick, write_for_model
from device import check
from device.crop import save_image_rgb
from device.runtime import Classifier


def test_pick_prefers_a_right_answer_then_the_widest_margin_then_the_first_path(tiny_models):
    clf = Classifier.from_model_dir(tiny_models["int8"])  # sigmoid, P(open), threshold 0.5
    assert margin(np.array([0.9]), 0.5) == pytest.approx(0.4)
    assert margin(np.array([0.1, 0.7, 0.2]), 0.5) == pytest.approx(0.5)
    probs = np.array([[0.99], [0.8], [0.05], [0.8]], np.float32)
    # b.png: open, 0.8 right; a.png: wrong (0.99 says open); c.png: closed 0.05 right, margin 0.45
    cands = Candidates(["a.png", "b.png", "c.png", "d.png"], ["closed", "open", "closed", "open"], probs)
    assert pick(cands, clf) == 2
    cands.labels[2] = "open"  # now wrong: b and d tie (right, margin 0.3): the first path wins
    assert pick(Candidates(["z.png", "b.png", "c.png", "d.png"], cands.labels, probs), clf) == 1
    assert pick(Candidates([], [], np.zeros((0, 1))), clf) is None


def test_write_for_model_takes_the_best_split_and_device_check_passes(tiny_models, tmp_path):
    import shutil

    mdir = tmp_path / "int8"
    shutil.copytree(tiny_models["int8"], mdir)
    clf = Classifier.from_model_dir(mdir)
    paths = []
    for i, (left, right) in enumerate([(230, 20), (20, 230), (200, 60)]):
        img = np.full((40, 40, 3), right, np.uint8)
        img[:, :20] = left
        paths.append(str(tmp_path / f"img{i}.png"))
        save_image_rgb(paths[-1], img)
    labels = ["open", "closed", "open"]
    from convert.verify import load_model_images

    probs = np.stack([clf.classify(x) for x in load_model_images(paths, clf.input_size)])
    splits = {
        "valid": Candidates(paths[:1], labels[:1], probs[:1]),
        "unseen_persons": Candidates(paths[1:], labels[1:], probs[1:]),
    }
    spec = write_for_model(mdir, clf, splits)
    assert spec["split"] == "unseen_persons" and spec["true_label"] == spec["expect"]
    assert spec["from"] in paths[1:]
    assert abs(spec["score"] - float(probs[paths.index(spec["from"])][0])) < 1e-6  # the verified figure
    report = check.run(model_dir=mdir, runs=1)
    assert report["ok"] and report["label"] == spec["expect"] and report["expected_score"] == spec["score"]
    assert write_for_model(mdir, clf, {}) is None
