"""The conversion gate: statistics, not a threshold. A converted model is published only if the data
cannot show it is worse than the float model, and the model is better than chance at all.

On every verified split the converted model and the float model decide the same images, so the
comparison is paired (`convert.verify.split_metrics` counts):

* b = images only the float model gets right, c = images only the converted model gets right.
  The variant **fails** a split when it is significantly worse — exact one-sided McNemar
  p = P(X >= b | X ~ Bin(b + c, 1/2)) below `significance` — *and* its accuracy is more than
  `max_drop` points below the float model's (so on a large split a real but negligible drop passes).
  One flipped image of 80 (b = 1, c = 0) is p = 0.5: noise, and it passes.
* The variant **fails** a split when its agreement with the float model is significantly below
  `min_agreement`: exact binomial P(X <= agreeing | n, min_agreement) below `significance`.
* Where a split is so small that not even the clearest possible evidence (every discordant image
  lost, none gained) at a drop of `max_drop` points could reach `significance`, the gate says so
  (`notes`): that split cannot show such a drop, whatever happens on it.

And an absolute floor (`floor_failures`, the training stage's own `train.verdict.floor_check`),
applied to every variant on the first split present of `FLOOR_SPLITS` (unseen persons when there are
any): its balanced accuracy must be better than chance (exact binomial test of the number right
against the chance agreement of its confusion matrix) and at least `min_balanced_accuracy`. A model
that did not learn is never published, however faithfully it was converted.

Each split and check is tested at `significance` on its own (no correction for the several tests):
the gate errs on the side of rejecting. A failing variant is written to `export/<variant>.rejected/`
with ``"status": "rejected"`` and the reasons in its manifest (the device refuses to load it); the
published `export/<variant>/`, if any, is left as it was (`convert.pipeline`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from device.validation import Meta, Strict
from train import stats
from train.verdict import FLOOR_SPLITS, default_min_balanced_accuracy, floor_check, floor_split

DEFAULT_MAX_DROP = 1.0  # accuracy points
DEFAULT_MIN_AGREEMENT = 0.98
DEFAULT_SIGNIFICANCE = 0.05
__all__ = [
    "DEFAULT_MAX_DROP",
    "DEFAULT_MIN_AGREEMENT",
    "DEFAULT_SIGNIFICANCE",
    "FLOOR_SPLITS",
    "GateConfig",
    "Verdict",
    "default_min_balanced_accuracy",
]


@dataclass
class Verdict:
    failures: list[str] = field(default_factory=list)  # one line per failed check: the variant is rejected
    notes: list[str] = field(default_factory=list)  # what the data cannot show (the variant still passes)
    checks: dict[str, dict] = field(default_factory=dict)  # per split: the p-values and what was decided

    @property
    def passed(self) -> bool:
        return not self.failures


class GateConfig(Strict):
    max_drop: Annotated[float, Meta(ge=0.0, le=100.0)] = DEFAULT_MAX_DROP
    min_agreement: Annotated[float, Meta(ge=0.0, le=1.0)] = DEFAULT_MIN_AGREEMENT
    significance: Annotated[float, Meta(gt=0.0, lt=1.0)] = DEFAULT_SIGNIFICANCE
    min_balanced_accuracy: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None

    def floor_of(self, num_labels: int) -> float:
        return (
            self.min_balanced_accuracy
            if self.min_balanced_accuracy is not None
            else default_min_balanced_accuracy(num_labels)
        )

    def split_check(self, figures: dict) -> dict:
        """The paired tests on one split's counts (see `convert.verify.split_metrics`)."""
        n, b, c = figures["n"], figures["only_float_right"], figures["only_converted_right"]
        p_worse = stats.mcnemar_p(b, c)
        p_agree = stats.below_p(figures["agree"], n, self.min_agreement)
        b_min = stats.min_discordant(self.significance)
        detectable = 100.0 * b_min / n if n else None
        return {
            "mcnemar_p": p_worse,
            "significantly_worse": p_worse < self.significance
            and figures["accuracy_drop_points"] > self.max_drop + 1e-9,
            "agreement_p": p_agree,
            "agreement_significantly_low": p_agree < self.significance,
            "smallest_detectable_drop_points": detectable,
            "can_detect_max_drop": detectable is not None and detectable <= self.max_drop + 1e-9,
        }

    def evaluate(self, variant: str, splits: dict[str, dict]) -> Verdict:
        """Run every check on every split of `variant`; the floor included."""
        verdict = Verdict()
        too_small = []
        for name, figures in splits.items():
            if figures["n"] == 0:
                continue
            check = self.split_check(figures)
            verdict.checks[name] = check
            n = figures["n"]
            if check["significantly_worse"]:
                verdict.failures.append(
                    f"{variant} {name}: significantly worse than the float model: {figures['only_float_right']} "
                    f"of {n} images only the float model gets right, {figures['only_converted_right']} only {variant} "
                    f"(exact McNemar p = {check['mcnemar_p']:.3g} < {self.significance:g}); accuracy "
                    f"{100 * figures['accuracy']:.2f}% vs {100 * figures['float_accuracy']:.2f}%, "
                    f"{figures['accuracy_drop_points']:.2f} points lower (max_drop {self.max_drop:g})"
                )
            if check["agreement_significantly_low"]:
                verdict.failures.append(
                    f"{variant} {name}: agreement with the float model {100 * figures['agreement']:.2f}% "
                    f"({figures['agree']} of {n}) is significantly below min_agreement "
                    f"{100 * self.min_agreement:g}% "
                    f"(exact binomial p = {check['agreement_p']:.3g} < {self.significance:g})"
                )
            if not check["can_detect_max_drop"]:
                too_small.append(f"{name} (n = {n}, {check['smallest_detectable_drop_points']:.1f})")
        if too_small:
            b_min = stats.min_discordant(self.significance)
            verdict.notes.append(
                f"{variant}: too few images to detect a drop of {self.max_drop:g} point(s) on "
                f"{', '.join(too_small)}: even {b_min} images lost and none gained is the least that reaches "
                f"p < {self.significance:g} (smallest detectable drop in points, per split)"
            )
        verdict.failures += self.floor_failures(variant, splits)
        return verdict

    def floor_failures(self, variant: str, splits: dict[str, dict]) -> list[str]:
        """The absolute floor (`train.verdict.floor_check`) on the first present split of FLOOR_SPLITS;
        empty = the model learned."""
        name = floor_split({split: figures.get("n", 0) for split, figures in splits.items()})
        if name is None:
            return []
        figures = splits[name]
        check = floor_check(
            figures["confusion_matrix"],
            figures["balanced_accuracy"],
            significance=self.significance,
            min_balanced_accuracy=self.min_balanced_accuracy,
        )
        if check["passed"]:
            return []
        tail = "; the model did not learn" if not check["better_than_chance"] else ""
        return [f"{variant} {name}: {check['reason']}{tail}"]
