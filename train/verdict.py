"""Did the model learn at all? One definition for training (which ends non-zero below it) and for the
conversion gate (which never publishes such a model).

The floor is judged on the first split present of `FLOOR_SPLITS` — unseen persons whenever the data
has them: balanced accuracy must be better than chance (`train.stats.chance_test`, an exact binomial
test of the number right against what predictions independent of the labels would get) and at least
`min_balanced_accuracy` (default a tenth of the way from chance to perfect: 0.55 for two labels).

`diagnose` turns a failed floor and the run's history into one line that says why and what to change.
"""

from __future__ import annotations

from collections.abc import Sequence

from train import stats

FLOOR_SPLITS = ("unseen_persons", "seen_holdout", "valid", "all")  # "all": data that could not be split
SPLIT_NAMES = {
    "unseen_persons": "unseen persons",
    "seen_holdout": "seen-person holdout",
    "valid": "valid",
    "all": "all images",
}


def default_min_balanced_accuracy(num_labels: int) -> float:
    """A tenth of the way from chance (1/k) to perfect: 0.55 for two labels."""
    chance = 1.0 / max(2, num_labels)
    return round(chance + 0.1 * (1.0 - chance), 4)


def floor_split(counts: dict[str, int]) -> str | None:
    """The split the floor is judged on: the first of FLOOR_SPLITS with images."""
    return next((s for s in FLOOR_SPLITS if counts.get(s)), None)


def floor_check(
    cm: Sequence[Sequence[int]],
    balanced_accuracy: float,
    *,
    significance: float = 0.05,
    min_balanced_accuracy: float | None = None,
) -> dict:
    """{passed, better_than_chance, p, correct, n, chance, balanced_accuracy, min_balanced_accuracy, reason}.
    `reason` is one phrase when it fails ("not better than chance: ..." / "balanced accuracy ... below ...")."""
    test = stats.chance_test(cm)
    floor = min_balanced_accuracy if min_balanced_accuracy is not None else default_min_balanced_accuracy(len(cm))
    out = {
        "n": test["n"],
        "correct": test["correct"],
        "chance": test["chance"],
        "p": test["p"],
        "significance": significance,
        "better_than_chance": test["p"] < significance,
        "balanced_accuracy": balanced_accuracy,
        "balanced_accuracy_ci95": stats.balanced_accuracy_interval(cm),
        "min_balanced_accuracy": floor,
        "reason": None,
    }
    if not out["better_than_chance"]:
        out["reason"] = (
            f"not better than chance: {test['correct']} of {test['n']} right, where predictions "
            f"independent of the labels would get {100 * test['chance']:.1f}% (exact binomial "
            f"p = {test['p']:.3g} >= {significance:g}); balanced accuracy {balanced_accuracy:.3f}"
        )
    elif balanced_accuracy < floor - 1e-9:
        out["reason"] = (
            f"balanced accuracy {balanced_accuracy:.3f} (n = {test['n']}) is below min_balanced_accuracy {floor:g}"
        )
    out["passed"] = out["reason"] is None
    return out


def one_label(cm: Sequence[Sequence[int]], labels: Sequence[str]) -> str | None:
    """The label predicted for every image, if the model predicts only one."""
    cols = [sum(r[j] for r in cm) for j in range(len(cm))]
    used = [j for j, c in enumerate(cols) if c]
    return labels[used[0]] if len(used) == 1 else None


def diagnose(
    check: dict,
    split: str,
    *,
    labels: Sequence[str],
    cm: Sequence[Sequence[int]],
    history: list[dict],
    epochs: int,
    patience: int,
    min_epochs: int,
    frozen_random_backbone: bool,
) -> str:
    """The one-line diagnosis of a run whose model failed the floor: what was measured, then why."""
    what = f"{SPLIT_NAMES.get(split, split)}: {check['reason']}"
    constant = one_label(cm, labels)
    if constant is not None:
        what += f"; it says {constant!r} for every image"
    first_phase = history[0]["phase"] if history else None
    phase1 = [h for h in history if h.get("phase") == first_phase]
    stopped = patience > 0 and len(phase1) < epochs
    val = [h.get("val_accuracy") for h in phase1 if h.get("val_accuracy") is not None]
    chance = 1.0 / max(2, len(labels))
    near_chance = bool(val) and max(val) < chance + 0.1 * (1.0 - chance) + 1e-9
    if frozen_random_backbone:
        why = (
            "a frozen backbone with weights none gives random features; set model.freeze_backbone: false or "
            "use pretrained weights"
        )
    elif stopped:
        at = len(phase1)
        during = "during the first epochs at chance" if near_chance else "before the model took off"
        why = (
            f"early stopping ended the run at epoch {at} (patience {patience}"
            + (f", min_epochs {min_epochs}" if min_epochs else "")
            + f"), {during}; raise training.patience or set training.min_epochs"
        )
    else:
        why = (
            f"{len(phase1)} epochs were not enough or the data does not carry the labels; try more epochs "
            "(training.epochs), another learning rate, augmentation, or more persons"
        )
    return f"did not learn ({what}): {why}"
