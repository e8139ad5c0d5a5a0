"""Small-sample statistics for the figures this project publishes: pure functions, standard library only.

Used by the training report (accuracy with its interval, "did the model learn at all?") and by the
conversion gate (is the converted model worse than the float model on the same images?). It lives
in `train/` because `convert/` already depends on `train/`, never the other way round.

* `wilson_interval` — the Wilson score interval of a proportion k/n (good at small n and at 0 or n,
  where the textbook normal interval collapses to a point).
* `binom_sf` / `binom_cdf` — exact binomial tails, summed in log space (no scipy).
* `mcnemar_p` — the exact one-sided McNemar test for paired decisions: of the images the two models
  decide differently, is "only the reference right" (b) more frequent than "only the other right" (c)
  beyond what a fair coin gives? p = P(X >= b), X ~ Binomial(b + c, 1/2).
* `chance_test` — is a classifier's number of right answers more than chance? Chance is the agreement
  expected if predictions were independent of the labels, given how often each label occurs and how
  often each is predicted (as in Cohen's kappa): a model that always says one label scores exactly
  that label's share, and is not better than chance.
* `balanced_accuracy_interval` — the mean of per-class recalls, each with a Wilson interval at level
  1 - alpha/k (Bonferroni), so the averaged interval covers at least the stated confidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _check(k: int, n: int) -> None:
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval for k successes in n trials; None when n == 0 (nothing measured)."""
    _check(k, n)
    if n == 0:
        return None
    z = _z(confidence)
    p = k / n
    z2n = z * z / n
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n)) / (1.0 + z2n)
    lo, hi = centre - half, centre + half
    return (0.0 if k == 0 else max(0.0, lo), 1.0 if k == n else min(1.0, hi))


def _log_pmf(i: int, n: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)


def _log_sum(terms: list[float]) -> float:
    m = max(terms)
    return m + math.log(math.fsum(math.exp(t - m) for t in terms))


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), exact up to float rounding."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p == 0.0:
        return 1.0
    if p == 1.0:
        return 0.0
    # Sum the shorter side and take the complement only when that side is the upper tail and small.
    if k + 1 <= n * p:
        return min(1.0, math.exp(_log_sum([_log_pmf(i, n, p) for i in range(0, k + 1)])))
    return max(0.0, 1.0 - math.exp(_log_sum([_log_pmf(i, n, p) for i in range(k + 1, n + 1)])))


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exact up to float rounding."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p == 0.0:
        return 0.0
    if p == 1.0:
        return 1.0
    if k >= n * p:  # the upper tail is the short side: sum it directly (keeps tiny p-values exact)
        return min(1.0, math.exp(_log_sum([_log_pmf(i, n, p) for i in range(k, n + 1)])))
    return max(0.0, 1.0 - math.exp(_log_sum([_log_pmf(i, n, p) for i in range(0, k)])))


def mcnemar_p(b: int, c: int) -> float:
    """Exact one-sided McNemar p-value that b > c by more than chance: P(X >= b), X ~ Bin(b + c, 1/2).
    b: pairs only the reference got right; c: pairs only the other model got right. 1.0 if b + c == 0."""
    if b < 0 or c < 0:
        raise ValueError(f"counts must be >= 0, got b={b}, c={c}")
    return binom_sf(b, b + c, 0.5)


def min_discordant(level: float) -> int:
    """The fewest images a model must lose (and gain none) for `mcnemar_p` to fall below `level`:
    the smallest b with 0.5**b < level."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    b = 1
    while 0.5**b >= level:
        b += 1
    return b


def below_p(k: int, n: int, p0: float) -> float:
    """One-sided exact p-value that the true proportion is below p0, having seen k of n: P(X <= k | p0)."""
    _check(k, n)
    return binom_cdf(k, n, p0)


def above_p(k: int, n: int, p0: float) -> float:
    """One-sided exact p-value that the true proportion is above p0, having seen k of n: P(X >= k | p0)."""
    _check(k, n)
    return binom_sf(k, n, p0)


def chance_accuracy(cm: Sequence[Sequence[int]]) -> float | None:
    """Accuracy expected if predictions were independent of the true labels, with the confusion
    matrix's row (true) and column (predicted) totals: sum over classes of p_true * p_pred."""
    rows = [sum(r) for r in cm]
    n = sum(rows)
    if n == 0:
        return None
    cols = [sum(r[j] for r in cm) for j in range(len(cm))]
    return sum(rows[i] * cols[i] for i in range(len(cm))) / (n * n)


def chance_test(cm: Sequence[Sequence[int]]) -> dict | None:
    """{correct, n, chance, p}: the exact binomial test that the diagonal of `cm` (rows true, columns
    predicted) is above what chance gives (`chance_accuracy`). None when cm is empty."""
    n = int(sum(sum(r) for r in cm))
    if n == 0:
        return None
    correct = int(sum(cm[i][i] for i in range(len(cm))))
    chance = chance_accuracy(cm)
    return {"correct": correct, "n": n, "chance": chance, "p": above_p(correct, n, min(1.0, chance))}


def balanced_accuracy_interval(cm: Sequence[Sequence[int]], confidence: float = 0.95) -> tuple[float, float] | None:
    """A conservative interval for balanced accuracy (mean recall over the classes present): each
    class's Wilson interval at 1 - (1 - confidence)/k, averaged. None when cm is empty."""
    present = [(int(r[i]), int(sum(r))) for i, r in enumerate(cm) if sum(r) > 0]
    if not present:
        return None
    k = len(present)
    per_class = [wilson_interval(hit, n, 1.0 - (1.0 - confidence) / k) for hit, n in present]
    return (sum(lo for lo, _ in per_class) / k, sum(hi for _, hi in per_class) / k)


def interval_points(ci: tuple[float, float] | None) -> float | None:
    """Width of an interval on the 0..1 scale, in percentage points."""
    return None if ci is None else 100.0 * (ci[1] - ci[0])


def fmt_ci(ci: tuple[float, float] | None, nd: int = 3) -> str:
    """'[0.842, 0.990]' or '–'."""
    return "–" if ci is None else f"[{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]"
