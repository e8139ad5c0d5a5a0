"""train/stats.py against exact rational arithmetic and published values (no scipy in the venv)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from train import stats


def exact_sf(k: int, n: int, p: Fraction) -> Fraction:
    return sum((Fraction(math.comb(n, i)) * p**i * (1 - p) ** (n - i) for i in range(max(k, 0), n + 1)), Fraction(0))


def exact_cdf(k: int, n: int, p: Fraction) -> Fraction:
    return 1 - exact_sf(k + 1, n, p)


@pytest.mark.parametrize(
    "n, p",
    [
        (1, Fraction(1, 2)),
        (10, Fraction(1, 2)),
        (80, Fraction(98, 100)),
        (80, Fraction(1, 2)),
        (263, Fraction(3, 10)),
        (57, Fraction(1, 7)),
    ],
)
def test_binomial_tails_equal_exact_sums(n, p):
    for k in range(-1, n + 2):
        sf, cdf = stats.binom_sf(k, n, float(p)), stats.binom_cdf(k, n, float(p))
        want_sf = float(exact_sf(k, n, p)) if k <= n else 0.0
        want_cdf = float(exact_cdf(k, n, p)) if k >= 0 else 0.0
        # relative accuracy, also for the tiny tails a gate decides on
        assert sf == pytest.approx(want_sf, rel=1e-9, abs=1e-300), (k, n, p)
        assert cdf == pytest.approx(want_cdf, rel=1e-9, abs=1e-300), (k, n, p)


def test_binomial_tails_at_the_edges_of_p():
    assert stats.binom_sf(0, 5, 0.0) == 1.0 and stats.binom_sf(1, 5, 0.0) == 0.0
    assert stats.binom_sf(5, 5, 1.0) == 1.0 and stats.binom_cdf(4, 5, 1.0) == 0.0
    assert stats.binom_cdf(5, 5, 0.3) == 1.0 and stats.binom_cdf(-1, 5, 0.3) == 0.0
    with pytest.raises(ValueError):
        stats.binom_sf(1, 5, 1.5)


def test_mcnemar_exact_one_sided():
    assert stats.mcnemar_p(0, 0) == 1.0  # no discordant pair: no evidence of anything
    assert stats.mcnemar_p(1, 0) == 0.5  # one image flipped: a coin toss
    assert stats.mcnemar_p(4, 0) == 1 / 16  # 0.0625: not yet significant at 0.05
    assert stats.mcnemar_p(5, 0) == 1 / 32  # 0.03125: the first significant count
    assert stats.mcnemar_p(0, 5) == 1.0  # the other model is better: no evidence it is worse
    # 10 lost, 2 gained: P(X >= 10 | 12, 1/2) = (66 + 12 + 1) / 4096
    assert stats.mcnemar_p(10, 2) == pytest.approx(79 / 4096, rel=1e-12)
    assert stats.mcnemar_p(6, 6) == pytest.approx(float(exact_sf(6, 12, Fraction(1, 2))), rel=1e-12)
    assert stats.min_discordant(0.05) == 5 and stats.min_discordant(0.01) == 7
    assert stats.min_discordant(0.0625) == 5  # 0.5**4 == 0.0625 is not below 0.0625: the boundary


@pytest.mark.parametrize(
    "k, n, lo, hi",
    [
        # Newcombe (1998), Stat Med 17:857, Table I, method 3 (Wilson score, no continuity correction)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_published_values(k, n, lo, hi):
    got = stats.wilson_interval(k, n)
    assert got[0] == pytest.approx(lo, abs=5e-5) and got[1] == pytest.approx(hi, abs=5e-5)


@pytest.mark.parametrize("k, n", [(31, 32), (73, 80), (1, 2), (40, 80), (7, 9)])
def test_wilson_bounds_solve_the_score_equation(k, n):
    """The Wilson bounds are the p where the score statistic (k - np)^2 / (np(1-p)) equals z^2."""
    z2 = 1.959963984540054**2
    for p in stats.wilson_interval(k, n):
        assert (k - n * p) ** 2 == pytest.approx(z2 * n * p * (1 - p), rel=1e-9)


def test_wilson_edge_cases():
    assert stats.wilson_interval(0, 0) is None
    assert stats.wilson_interval(10, 10)[1] == 1.0 and stats.wilson_interval(0, 10)[0] == 0.0
    wide, narrow = stats.wilson_interval(31, 32, 0.99), stats.wilson_interval(31, 32, 0.90)
    assert wide[0] < narrow[0] and wide[1] > narrow[1]
    with pytest.raises(ValueError):
        stats.wilson_interval(5, 4)


def test_chance_test_sees_a_constant_model_as_chance():
    constant = [[0, 40], [0, 40]]  # says "open" for every image
    t = stats.chance_test(constant)
    assert t["chance"] == 0.5 and t["correct"] == 40 and t["p"] > 0.5
    # 20 closed, 60 open, always "open": 75 % accurate, but only because one label dominates
    t = stats.chance_test([[0, 20], [0, 60]])
    assert t["correct"] == 60 and t["chance"] == pytest.approx(0.75) and t["p"] > 0.5
    good = [[37, 3], [4, 36]]
    t = stats.chance_test(good)
    assert (
        t["p"] == pytest.approx(float(exact_sf(73, 80, Fraction(t["chance"]).limit_denominator(10**9))), rel=1e-6)
        and t["p"] < 1e-10
    )
    assert stats.chance_test([[0, 0], [0, 0]]) is None


def test_balanced_accuracy_interval_is_conservative_and_contains_the_value():
    cm = [[37, 3], [4, 36]]
    lo, hi = stats.balanced_accuracy_interval(cm)
    ba = (37 / 40 + 36 / 40) / 2
    assert lo < ba < hi
    # wider than the plain Wilson interval of the same accuracy on the same n (Bonferroni, per class n/2)
    wlo, whi = stats.wilson_interval(73, 80)
    assert lo < wlo and hi > whi
    assert stats.balanced_accuracy_interval([[0, 0], [0, 0]]) is None
    assert stats.interval_points((0.25, 0.35)) == pytest.approx(10.0)
