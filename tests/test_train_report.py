"""Metrics in numpy, checked against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from train import history, metrics, plots, report


def test_roc_auc_binary_known_values():
    y = np.array([0, 0, 1, 1])
    assert metrics.roc_auc_binary(y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert metrics.roc_auc_binary(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert metrics.roc_auc_binary(y, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5  # ties count half
    assert metrics.roc_auc_binary(np.array([1, 1]), np.array([0.2, 0.3])) is None


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.uniform(size=200) + 0.3 * y, 1)  # with many ties
    pos, neg = s[y == 1], s[y == 0]
    pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert metrics.roc_auc_binary(y, s) == pytest.approx(pairwise)


def test_split_metrics_binary():
    y = np.array([0, 0, 0, 1])
    p = np.array([[0.2], [0.7], [0.1], [0.9]])
    m = metrics.split_metrics(y, p, "sigmoid", 2)
    assert m["count"] == 4 and m["accuracy"] == 0.75
    assert m["confusion_matrix"] == [[2, 1], [0, 1]]
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    expected = -np.mean([np.log(0.8), np.log(0.3), np.log(0.9), np.log(0.9)])
    assert m["loss"] == pytest.approx(expected)
    assert m["roc_auc"] == 1.0


def test_split_metrics_softmax_and_empty():
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    m = metrics.split_metrics(y, p, "softmax", 3)
    assert m["accuracy"] == 0.75 and m["confusion_matrix"][1] == [0, 0, 1]
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.8, 0.2, 0.8, 0.4])))
    e = metrics.split_metrics(np.array([]), np.zeros((0, 1)), "sigmoid", 2)
    assert e["count"] == 0 and e["accuracy"] is None


def test_per_person_and_timing():
    rows = metrics.per_person("unseen_persons", ["a", "a", "b"], np.array([1, 0, 1]), np.array([1, 1, 1]))
    assert rows == [
        {"split": "unseen_persons", "person": "a", "count": 2, "accuracy": 0.5},
        {"split": "unseen_persons", "person": "b", "count": 1, "accuracy": 1.0},
    ]
    t = history.timing_summary(
        [
            {"seconds": 10.0, "train_seconds": 8.0},
            {"seconds": 4.0, "train_seconds": 2.0},
            {"seconds": 6.0, "train_seconds": 4.0},
        ],
        train_images=100,
    )
    assert t["first_epoch_seconds"] == 10.0 and t["later_epochs_mean_seconds"] == 5.0
    assert t["first_epoch_extra_seconds"] == 5.0 and t["images_per_s"] == 25.0


def test_pick_examples_spreads_over_persons():
    persons = ["a"] * 10 + ["b"] * 10 + ["c"] * 2
    idx = plots.pick_examples(persons, n=6)
    assert len(idx) == 6 and {persons[i] for i in idx} == {"a", "b", "c"}
    assert idx == plots.pick_examples(persons, n=6)


def test_pick_grid_shows_every_mistake_first_then_correct_ones():
    right = [True] * 31 + [False]  # 32 images, one mistake, 18 shown: the mistake must be among them
    persons = ["a"] * 16 + ["b"] * 16
    idx = plots.pick_grid(right, persons)
    assert len(idx) == 18 and idx[0] == 31 and all(right[i] for i in idx[1:])
    m = {"count": 32, "correct": 31, "accuracy": 31 / 32, "accuracy_ci95": [0.843, 0.994]}
    assert plots.grid_caption("seen persons", m, right, idx) == (
        "seen persons: accuracy 0.969 [0.843, 0.994] (31 of 32); shown: all 1 mistake, 17 of 31 correct"
    )
    many = [i % 3 != 0 for i in range(120)]  # 40 mistakes: 36 shown, no room for correct ones
    idx = plots.pick_grid(many, ["p"] * 120)
    assert len(idx) == 36 and not any(many[i] for i in idx)
    m = {"count": 120, "correct": 80, "accuracy": 80 / 120, "accuracy_ci95": [0.58, 0.75]}
    assert "shown: 36 of 40 mistakes, 0 of 80 correct" in plots.grid_caption("x", m, many, idx)
    assert plots.pick_grid([True] * 5, ["a"] * 5) == [0, 1, 2, 3, 4]


def _split(acc, n=10, persons=None):
    from train import stats

    k = round(acc * n)
    return {
        "accuracy": k / n,
        "balanced_accuracy": k / n,
        "count": n,
        "correct": k,
        "accuracy_ci95": stats.wilson_interval(k, n),
    }


def _metrics(seen, unseen, valid=0.95, n=10, unseen_persons=2, learned=True):
    return {
        "labels": ["closed", "open"],
        "valid": _split(valid, n),
        "seen_holdout": _split(seen, n),
        "unseen_persons": _split(unseen, n),
        "persons": {"valid": 8, "seen_holdout": 8, "unseen_persons": unseen_persons},
        "verdict": {
            "learned": learned,
            "diagnosis": None
            if learned
            else "did not learn (unseen persons: not better than chance): early stopping ended the run "
            "at epoch 11, during the first epochs at chance; raise training.patience or set "
            "training.min_epochs",
        },
        "timing": {
            "first_epoch_seconds": 79.0,
            "later_epochs_mean_seconds": 20.0,
            "first_epoch_extra_seconds": 59.0,
            "images_per_s": 300.0,
            "phases": {},
        },
    }


def _cfg(backbone="mobilenet_v2", weights="imagenet"):
    from train.config import validate

    return validate({"data": {"root": "d"}, "model": {"backbone": backbone, "weights": weights}})


INFO = {"backbone": "mobilenet_v2", "preprocessing": "mobilenet_v2: x/127.5 - 1"}


def test_knowledge_calls_out_a_seen_unseen_gap_and_the_logs_rescale():
    text = "\n".join(report.knowledge(_cfg(), INFO, _metrics(seen=0.98, unseen=0.31, n=100)))
    assert "Seen/unseen gap: 0.980" in text and "0.310" in text
    assert "/255" in text and "[-1, 1]" in text
    assert "first epoch 79.0 s" in text and "+59.0 s" in text


def test_knowledge_claims_generalisation_only_from_5_persons_and_a_10_point_interval():
    # 2000 images of 6 persons, interval ~2 points: the claim is allowed
    text = "\n".join(report.knowledge(_cfg(), INFO, _metrics(0.95, 0.93, n=2000, unseen_persons=6)))
    assert "generalises to new persons on this data" in text and "cannot show" not in text
    # 80 images of 2 persons: neither enough persons nor a narrow enough interval
    text = "\n".join(report.knowledge(_cfg(), INFO, _metrics(0.969, 0.925, n=80, unseen_persons=2)))
    assert "generalises to new persons on this data" not in text
    assert "only 2 unseen persons (at least 5 needed)" in text and "points wide (at most 10)" in text
    assert "the data cannot show whether it generalises" in text and "(74 of 80 images, 2 persons)" in text
    # 6 persons but 80 images: the interval alone (13 points) forbids the claim
    text = "\n".join(report.knowledge(_cfg(), INFO, _metrics(0.95, 0.925, n=80, unseen_persons=6)))
    assert "generalises to new persons on this data" not in text and "only 6" not in text
    assert "points wide (at most 10)" in text
    # 5 persons and 400 images (interval ~5 points): the boundary is allowed
    text = "\n".join(report.knowledge(_cfg(), INFO, _metrics(0.95, 0.95, n=400, unseen_persons=5)))
    assert "generalises to new persons on this data" in text


def test_knowledge_of_a_model_that_did_not_learn():
    text = "\n".join(report.knowledge(_cfg(weights="none"), INFO, _metrics(0.5, 0.5, 0.5, learned=False)))
    assert "**The model did not learn** — did not learn (unseen persons: not better than chance)" in text
    assert "will not publish it" in text and "generalises" not in text


def test_selection_is_named():
    sel = {
        "by": "valid",
        "monitor": "val_loss",
        "epoch": 7,
        "best_epoch": 7,
        "min_epochs": 5,
        "first_eligible_epoch": 6,
    }
    text = report.selection_text(sel)
    assert text.startswith("the valid split chose epoch 7 (lowest val_loss from epoch 6 on")
    assert "optimistic" in text and "unseen persons never influenced training or selection" in text
    text = report.selection_text({"by": None, "monitor": "val_loss", "epoch": 60, "best_epoch": 41, "min_epochs": 0})
    assert text.startswith("none: patience 0, the last epoch's weights (epoch 60)") and "epoch 41, not used" in text
