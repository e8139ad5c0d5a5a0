"""The conversion gate's statistics (convert/gate.py) on paired decisions, both directions and the
boundaries: one flipped image of 80 passes, a systematic loss fails, a split too small to show the
configured drop says so, and a model at chance never passes the floor.

The decisions come from `convert.verify.split_metrics` with a real `device.runtime.Classifier`'s
threshold rule (the session's tiny int8 model), on probabilities set per image."""

from __future__ import annotations

import numpy as np
import pytest

from convert.gate import GateConfig, default_min_balanced_accuracy
from convert.verify import SplitOutputs, split_metrics


@pytest.fixture(scope="module")
def clf(tiny_models):
    from device.runtime import Classifier

    return Classifier.from_model_dir(tiny_models["int8"])  # labels closed/open, threshold 0.5


def paired(
    n: int,
    *,
    float_wrong: int = 0,
    lost: int = 0,
    gained: int = 0,
    open_share: float = 0.5,
    variant_says: str | None = None,
) -> SplitOutputs:
    """n images; the float model is wrong on `float_wrong` of them; the variant additionally gets `lost`
    images wrong that the float model gets right, and `gained` right that the float model gets wrong
    (or, with `variant_says`, says that label for every image)."""
    n_open = int(round(n * open_share))
    labels = ["open"] * n_open + ["closed"] * (n - n_open)
    truth = np.array([1.0 if lbl == "open" else 0.0 for lbl in labels])
    p_float = np.where(truth == 1, 0.9, 0.1)
    p_float[:float_wrong] = 1 - p_float[:float_wrong]  # the float model's own mistakes
    p_var = p_float.copy()
    p_var[:gained] = 1 - p_var[:gained]  # right where float was wrong
    p_var[float_wrong : float_wrong + lost] = 1 - p_var[float_wrong : float_wrong + lost]
    if variant_says is not None:
        p_var[:] = 0.9 if variant_says == "open" else 0.1
    out = SplitOutputs(
        labels=labels,
        float_probs=[p_float[:, None].astype(np.float32)],
        variant_probs={"int8": [p_var[:, None].astype(np.float32)]},
    )
    return out


def test_one_flipped_image_of_80_passes(clf):
    m = split_metrics(paired(80, float_wrong=6, lost=1), "int8", clf)
    assert (m["n"], m["only_float_right"], m["only_converted_right"], m["agree"]) == (80, 1, 0, 79)
    assert m["accuracy_drop_points"] == pytest.approx(1.25)  # over max_drop 1: the old gate's false alarm
    v = GateConfig().evaluate("int8", {"unseen_persons": m})
    assert v.passed, v.failures
    assert v.checks["unseen_persons"]["mcnemar_p"] == 0.5
    assert v.checks["unseen_persons"]["agreement_p"] > 0.05  # 79 of 80 agree: not significantly < 98 %
    # ...and it says that 80 images cannot show a 1-point drop, in one line
    assert len(v.notes) == 1 and "unseen_persons (n = 80, 6.2)" in v.notes[0]
    assert "too few images to detect a drop of 1 point" in v.notes[0]


def test_mcnemar_boundary_four_lost_passes_five_lost_fail(clf):
    gate = GateConfig(min_agreement=0.9)  # isolate the paired-accuracy test
    four = gate.evaluate("int8", {"valid": split_metrics(paired(80, lost=4), "int8", clf)})
    five = gate.evaluate("int8", {"valid": split_metrics(paired(80, lost=5), "int8", clf)})
    assert four.checks["valid"]["mcnemar_p"] == 1 / 16 and four.passed
    assert five.checks["valid"]["mcnemar_p"] == 1 / 32 and not five.passed
    assert five.failures == [
        "int8 valid: significantly worse than the float model: 5 of 80 images only the float model gets right, "
        "0 only int8 (exact McNemar p = 0.0312 < 0.05); accuracy 93.75% vs 100.00%, 6.25 points lower (max_drop 1)"
    ]
    # gains count for the variant: 5 lost but 3 gained is 5 of 8 discordant, p = 0.36
    mixed = split_metrics(paired(80, float_wrong=3, lost=5, gained=3), "int8", clf)
    assert (mixed["only_float_right"], mixed["only_converted_right"]) == (5, 3)
    assert gate.evaluate("int8", {"valid": mixed}).passed
    # a better variant is never "significantly worse"
    better = split_metrics(paired(80, float_wrong=10, gained=10), "int8", clf)
    assert gate.evaluate("int8", {"valid": better}).checks["valid"]["mcnemar_p"] == 1.0


def test_significant_but_small_drop_on_a_large_split_passes_max_drop(clf):
    """3000 images, 45 lost and 15 gained: significant (p ~ 5e-5), but 1.0 point: not more than max_drop."""
    m = split_metrics(paired(3000, float_wrong=100, lost=45, gained=15), "int8", clf)
    chk = GateConfig().split_check(m)
    assert chk["mcnemar_p"] < 1e-4 and m["accuracy_drop_points"] == pytest.approx(1.0)
    assert not chk["significantly_worse"] and chk["can_detect_max_drop"]
    assert GateConfig(max_drop=0.5).split_check(m)["significantly_worse"]


def test_agreement_significantly_below_min_agreement_fails(clf):
    # 5 disagreements of 80 at min_agreement 0.98: P(X <= 75 | 80, 0.98) = 0.022355 < 0.05 (exact, by Fraction)
    five = split_metrics(paired(80, float_wrong=5, lost=0, gained=5), "int8", clf)  # all gains: not worse
    v = GateConfig().evaluate("int8", {"seen_holdout": five})
    assert five["agree"] == 75 and v.checks["seen_holdout"]["agreement_p"] == pytest.approx(
        0.02235544314860857, rel=1e-9
    )
    assert [f for f in v.failures if "agreement" in f] == [
        "int8 seen_holdout: agreement with the float model 93.75% (75 of 80) is significantly below "
        "min_agreement 98% (exact binomial p = 0.0224 < 0.05)"
    ]
    four = split_metrics(paired(80, float_wrong=4, gained=4), "int8", clf)  # P(X <= 76) = 0.0769: passes
    assert GateConfig().evaluate("int8", {"seen_holdout": four}).passed


def test_too_small_note_depends_on_n_and_max_drop(clf):
    big = split_metrics(paired(600), "int8", clf)  # 5/600 = 0.83 points: a 1-point drop is detectable
    v = GateConfig().evaluate("int8", {"valid": big})
    assert v.passed and v.notes == [] and v.checks["valid"]["smallest_detectable_drop_points"] == pytest.approx(5 / 6)
    small = split_metrics(paired(40), "int8", clf)
    assert GateConfig(max_drop=12.5).evaluate("int8", {"valid": small}).notes == []  # 5/40 = 12.5: exactly
    assert len(GateConfig(max_drop=12.4).evaluate("int8", {"valid": small}).notes) == 1


def test_floor_refuses_a_model_at_chance(clf):
    constant = split_metrics(paired(80, variant_says="open"), "int8", clf)
    v = GateConfig(min_agreement=0.0).evaluate(
        "int8", {"valid": split_metrics(paired(80), "int8", clf), "unseen_persons": constant}
    )
    floor = [f for f in v.failures if "chance" in f]
    assert len(floor) == 1 and floor[0].startswith("int8 unseen_persons: not better than chance: 40 of 80 right")
    assert "the model did not learn" in floor[0]
    # the floor is judged on unseen persons; without them on the seen-person holdout
    v2 = GateConfig(min_agreement=0.0).evaluate("int8", {"seen_holdout": constant})
    assert any(f.startswith("int8 seen_holdout: not better than chance") for f in v2.failures)


def test_floor_min_balanced_accuracy(clf):
    # 52 of 80 right (65 %): better than chance (p ~ 0.005), below a floor of 0.7, above the default 0.55
    m = split_metrics(paired(80, float_wrong=28), "int8", clf)
    assert m["balanced_accuracy"] == pytest.approx(0.65)
    assert GateConfig().floor_failures("int8", {"unseen_persons": m}) == []
    assert GateConfig(min_balanced_accuracy=0.7).floor_failures("int8", {"unseen_persons": m}) == [
        "int8 unseen_persons: balanced accuracy 0.650 (n = 80) is below min_balanced_accuracy 0.7"
    ]
    assert default_min_balanced_accuracy(2) == 0.55 and default_min_balanced_accuracy(4) == 0.325


def test_intervals_and_counts_in_the_metrics(clf):
    m = split_metrics(paired(80, float_wrong=6, lost=1), "int8", clf)
    assert m["correct"] == 73 and m["float_correct"] == 74
    lo, hi = m["accuracy_ci95"]
    assert lo < 73 / 80 < hi and hi - lo < 0.15
    assert m["agreement_ci95"][1] == pytest.approx(0.9978, abs=1e-3)
    assert np.asarray(m["confusion_matrix"]).sum() == 80
    lo, hi = m["balanced_accuracy_ci95"]
    assert lo < m["balanced_accuracy"] < hi
