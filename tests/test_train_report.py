"""Metrics in numpy, checked against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from train import report


def test_roc_auc_binary_known_values():
    y = np.array([0, 0, 1, 1])
    assert report.roc_auc_binary(y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert report.roc_auc_binary(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert report.roc_auc_binary(y, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5  # ties count half
    assert report.roc_auc_binary(np.array([1, 1]), np.array([0.2, 0.3])) is None


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.uniform(size=200) + 0.3 * y, 1)  # with many ties
    pos, neg = s[y == 1], s[y == 0]
    pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert report.roc_auc_binary(y, s) == pytest.approx(pairwise)


def test_split_metrics_binary():
    y = np.array([0, 0, 0, 1])
    p = np.array([[0.2], [0.7], [0.1], [0.9]])
    m = report.split_metrics(y, p, "sigmoid", 2)
    assert m["count"] == 4 and m["accuracy"] == 0.75
    assert m["confusion_matrix"] == [[2, 1], [0, 1]]
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    expected = -np.mean([np.log(0.8), np.log(0.3), np.log(0.9), np.log(0.9)])
    assert m["loss"] == pytest.approx(expected)
    assert m["roc_auc"] == 1.0


def test_split_metrics_softmax_and_empty():
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    m = report.split_metrics(y, p, "softmax", 3)
    assert m["accuracy"] == 0.75 and m["confusion_matrix"][1] == [0, 0, 1]
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.8, 0.2, 0.8, 0.4])))
    e = report.split_metrics(np.array([]), np.zeros((0, 1)), "sigmoid", 2)
    assert e["count"] == 0 and e["accuracy"] is None


def test_per_person_and_timing():
    rows = report.per_person("unseen_persons", ["a", "a", "b"], np.array([1, 0, 1]), np.array([1, 1, 1]))
    assert rows == [{"split": "unseen_persons", "person": "a", "count": 2, "accuracy": 0.5},
                    {"split": "unseen_persons", "person": "b", "count": 1, "accuracy": 1.0}]
    t = report.timing_summary([{"seconds": 10.0, "train_seconds": 8.0}, {"seconds": 4.0, "train_seconds": 2.0},
                               {"seconds": 6.0, "train_seconds": 4.0}], train_images=100)
    assert t["first_epoch_seconds"] == 10.0 and t["later_epochs_mean_seconds"] == 5.0
    assert t["first_epoch_extra_seconds"] == 5.0 and t["images_per_s"] == 25.0


def test_pick_examples_spreads_over_persons():
    persons = ["a"] * 10 + ["b"] * 10 + ["c"] * 2
    idx = report.pick_examples(persons, n=6)
    assert len(idx) == 6 and {persons[i] for i in idx} == {"a", "b", "c"}
    assert idx == report.pick_examples(persons, n=6)


def _metrics(seen, unseen, valid=0.95):
    def split(acc):
        return {"accuracy": acc, "balanced_accuracy": acc, "count": 10}
    return {"labels": ["closed", "open"], "valid": split(valid), "seen_holdout": split(seen),
            "unseen_persons": split(unseen),
            "timing": {"first_epoch_seconds": 79.0, "later_epochs_mean_seconds": 20.0,
                       "first_epoch_extra_seconds": 59.0, "images_per_s": 300.0, "phases": {}}}


def _cfg(backbone="mobilenet_v2", weights="imagenet"):
    from train.config import validate

    return validate({"data": {"root": "d"}, "model": {"backbone": backbone, "weights": weights}})


def test_knowledge_calls_out_a_seen_unseen_gap_and_the_logs_rescale():
    info = {"backbone": "mobilenet_v2", "preprocessing": "mobilenet_v2: x/127.5 - 1"}
    text = "\n".join(report.knowledge(_cfg(), info, _metrics(seen=0.98, unseen=0.31)))
    assert "Seen/unseen gap: 0.980" in text and "0.310" in text
    assert "/255" in text and "[-1, 1]" in text
    assert "first epoch 79.0 s" in text and "+59.0 s" in text
    text = "\n".join(report.knowledge(_cfg(), info, _metrics(seen=0.95, unseen=0.93)))
    assert "no large gap" in text
    text = "\n".join(report.knowledge(_cfg(weights="none"), info, _metrics(0.5, 0.5, 0.5)))
    assert "did not learn" in text and "freeze_backbone: false" in text
