"""Threshold, smoothing, hysteresis and events, on scripted score sequences."""

from __future__ import annotations

import numpy as np
import pytest

from device.decision import Decider, DecisionConfig
from device.manifest import Manifest, TensorSpec
from device.validation import ValidationError


def manifest(kind: str = "sigmoid", threshold: float = 0.5) -> Manifest:
    labels = ["closed", "open"] if kind == "sigmoid" else ["a", "b", "c"]
    spec = TensorSpec(dtype="uint8", shape=[1, 1 if kind == "sigmoid" else 3], scale=1 / 256, zero_point=0)
    return Manifest(
        variant="int8",
        sha256="0" * 64,
        size_bytes=1,
        labels=labels,
        positive_label="open" if kind == "sigmoid" else None,
        output_kind=kind,
        threshold=threshold,
        input_height=32,
        input_width=32,
        input=TensorSpec(dtype="uint8", shape=[1, 32, 32, 3]),
        output=spec,
    )


def run(decider: Decider, ps):
    return [decider.update(np.array([p])) for p in ps]


def test_threshold_comes_from_manifest_unless_overridden():
    d = Decider(DecisionConfig(smoothing="none"), manifest(threshold=0.7))
    assert [x.label for x in run(d, [0.69, 0.7])] == ["closed", "open"]
    d = Decider(DecisionConfig(smoothing="none", threshold=0.2), manifest(threshold=0.7))
    assert run(d, [0.3])[0].label == "open"


def test_moving_average_waits_for_window_and_smooths_a_spike():
    d = Decider(DecisionConfig(smoothing="moving_average", window=3, hysteresis=0.0), manifest())
    out = run(d, [0.1, 0.1, 0.1, 0.95, 0.1, 0.1])
    assert [o.smoothed_label for o in out] == [None, None, "closed", "closed", "closed", "closed"]
    assert out[3].label == "open"  # the per-frame label did flip
    assert out[3].smoothed_score == pytest.approx((0.1 + 0.1 + 0.95) / 3)
    assert [o.event for o in out] == [False, False, True, False, False, False]


def test_hysteresis_needs_margin_both_ways():
    d = Decider(DecisionConfig(smoothing="none", hysteresis=0.1), manifest())
    labels = [o.smoothed_label for o in run(d, [0.3, 0.55, 0.61, 0.45, 0.39, 0.59, 0.6])]
    # starts closed; 0.55 < 0.6 stays closed; 0.61 opens; 0.45 > 0.4 stays open; 0.39 closes; 0.6 opens
    assert labels == ["closed", "closed", "open", "open", "closed", "closed", "open"]
    assert d.events == 4  # first decision + 3 changes


def test_majority_vote_counts_frames():
    d = Decider(DecisionConfig(smoothing="majority", window=5, hysteresis=0.0), manifest())
    out = run(d, [0.9, 0.9, 0.1, 0.1, 0.9, 0.1, 0.1])
    assert out[4].smoothed_label == "open" and out[4].smoothed_score == pytest.approx(3 / 5)
    assert out[5].smoothed_label == "closed" and out[5].smoothed_score == pytest.approx(2 / 5)
    assert out[5].event


def test_softmax_moving_average_with_hysteresis():
    d = Decider(DecisionConfig(window=2, hysteresis=0.2), manifest("softmax"))
    seq = [[0.8, 0.1, 0.1], [0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1]]
    out = [d.update(np.array(s)) for s in seq]
    assert out[2].label == "b" and out[2].smoothed_label == "a"  # mean a .55 vs b .35: no switch
    assert out[3].smoothed_label == "b" and out[3].event  # b .6 ≥ a .3 + .2
    assert out[4].smoothed_score == pytest.approx(0.7)


def test_reset_forgets_window_but_not_last_label():
    d = Decider(DecisionConfig(window=2, hysteresis=0.0), manifest())
    run(d, [0.9, 0.9])
    d.reset()
    out = run(d, [0.9, 0.9])
    assert out[0].smoothed_label is None and out[1].smoothed_label == "open"
    assert not out[1].event  # the same label decided again is not a change


def test_config_rejects_bad_values():
    with pytest.raises(ValidationError):
        DecisionConfig(smoothing="median")
    with pytest.raises(ValidationError):
        DecisionConfig(window=3, min_frames=4)
    with pytest.raises(ValidationError, match="windw"):
        DecisionConfig.model_validate({"windw": 3})
    with pytest.raises(TypeError, match="windw"):  # in code, a misspelled keyword is Python's TypeError
        DecisionConfig(windw=3)
