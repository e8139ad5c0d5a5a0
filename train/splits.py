"""Person-aware splits: what the original log measured too late.

Four splits, made in this order from a dataset's records:

1. ``unseen_persons`` — every image of the held-out persons (named, or a count chosen
   deterministically from the seed; default about a quarter of the persons). These persons appear
   in no other split, so accuracy on them is accuracy on *new people*.
2. ``seen_holdout`` — of the remaining persons' images, a fraction (default 0.1) kept for the final
   report only: new images of persons the model has seen. Stratified by label, then by person.
3. ``valid`` / ``train`` — the original log's random split of the rest (valid 0.2, seed 112),
   stratified by label, then by person.

Everything is deterministic: the records are sorted first and every random choice is drawn from a
generator seeded with ``(seed, label, person)``, so the same data and seed give the same split
whatever order the files were listed in; and since each person's images are taken in their own
seeded order, adding a person's images moves only a few of the others (quota rounding).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Protocol, Sequence

from device.errors import FaceedgeError
from device.files import atomic_write_bytes

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "seen_holdout", "unseen_persons")
SPLIT_COLUMNS = ("path", "label", "person", "split")
DEFAULT_SEED = 112  # the original log's split seed


class _RecordLike(Protocol):
    path: str
    label: str
    person: str | None


@dataclass(frozen=True)
class SplitRecord:
    path: str
    label: str
    person: str | None
    split: str


def _rng(seed: int, *keys: object) -> random.Random:
    """A generator seeded from `seed` and `keys`, stable across processes (no hash salting)."""
    h = hashlib.sha256(repr((int(seed),) + tuple(keys)).encode()).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


def _labels_by_person(records: Iterable[_RecordLike]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if r.person is not None:
            out[r.person].add(r.label)
    return dict(out)


def choose_holdout_persons(
    persons_by_label: Mapping[str, Iterable[str]] | Iterable[_RecordLike],
    holdout: Sequence[str] | int | float | None,
    seed: int = DEFAULT_SEED,
) -> list[str]:
    """Pick the persons to hold out entirely (sorted).

    `persons_by_label`: {label: persons} or records. `holdout`: a list of names (each must exist),
    a count, a fraction in (0, 1), or None (about a quarter, at least 1). A count is chosen from the
    seed so that, whenever possible, every label is represented both by a held-out person and by a
    person left for training; failing that, the choice covers as many labels on both sides as it can.
    Returns [] (with a warning) when there are fewer than 2 persons and nothing was asked for.
    """
    if isinstance(persons_by_label, Mapping):
        labels_of: dict[str, set[str]] = defaultdict(set)
        for label, persons in persons_by_label.items():
            for person in persons:
                if person is not None:
                    labels_of[person].add(label)
        all_labels = set(persons_by_label)
    else:
        records = list(persons_by_label)
        labels_of = _labels_by_person(records)
        all_labels = {r.label for r in records}
    persons = sorted(labels_of)

    if isinstance(holdout, (list, tuple)):
        names = [str(h) for h in holdout]
        unknown = sorted(set(names) - set(persons))
        if unknown:
            raise FaceedgeError(
                f"holdout_persons: unknown person(s) {', '.join(unknown)} "
                f"(persons in the data: {', '.join(persons) or 'none'})"
            )
        chosen = sorted(set(names))
        if chosen and len(chosen) >= len(persons):
            raise FaceedgeError(f"holdout_persons: holding out all {len(persons)} persons leaves none to train on")
        _warn_uncovered(chosen, labels_of, all_labels)
        return chosen

    n_persons = len(persons)
    if holdout is None:
        if n_persons < 2:
            if n_persons == 1:
                log.warning("only one person (%s): no unseen-person split is possible", persons[0])
            return []
        count = max(1, round(n_persons / 4))
    elif isinstance(holdout, bool):
        raise FaceedgeError(f"holdout_persons: expected names, a count or a fraction, got {holdout!r}")
    elif isinstance(holdout, float) and not float(holdout).is_integer():
        if not 0.0 < holdout < 1.0:
            raise FaceedgeError(f"holdout_persons: a fraction must be in (0, 1), got {holdout}")
        count = max(1, round(n_persons * holdout))
    elif isinstance(holdout, (int, float)):
        count = int(holdout)
        if count < 0:
            raise FaceedgeError(f"holdout_persons: count must be >= 0, got {count}")
    else:
        raise FaceedgeError(f"holdout_persons: expected names, a count or a fraction, got {holdout!r}")
    if count == 0:
        return []
    if count >= n_persons:
        raise FaceedgeError(
            f"holdout_persons: cannot hold out {count} of {n_persons} persons (at least one must remain for training)"
        )

    rng = _rng(seed, "holdout-persons")
    best: tuple[int, list[str]] | None = None
    need = len(all_labels) * 3
    for _attempt in range(500):
        candidate = sorted(rng.sample(persons, count))
        held = set().union(*(labels_of[p] for p in candidate))
        rest = set().union(*(labels_of[p] for p in persons if p not in candidate))
        # Training must see every label (weight 2); the unseen set should show every label (weight 1).
        score = len(held & all_labels) + 2 * len(rest & all_labels)
        if best is None or score > best[0]:
            best = (score, candidate)
        if score == need:
            break
    assert best is not None
    _warn_uncovered(best[1], labels_of, all_labels)
    return best[1]


def _warn_uncovered(chosen: list[str], labels_of: Mapping[str, set[str]], all_labels: set[str]) -> None:
    if not chosen:
        return
    held = set().union(*(labels_of[p] for p in chosen))
    rest = set().union(*(labels_of[p] for p in labels_of if p not in chosen))
    if all_labels - held:
        log.warning("unseen-person set has no images of label(s) %s", ", ".join(sorted(all_labels - held)))
    if all_labels - rest:
        log.warning(
            "after holding out %s, no other person has label(s) %s",
            ", ".join(chosen),
            ", ".join(sorted(all_labels - rest)),
        )


def _allocate(sizes: Mapping[object, int], total: int, rng: random.Random) -> dict[object, int]:
    """Split `total` over groups proportionally to `sizes` (largest remainder, ties broken by rng)."""
    size_sum = sum(sizes.values())
    if size_sum == 0 or total <= 0:
        return {group: 0 for group in sizes}
    exact = {group: total * size / size_sum for group, size in sizes.items()}
    out = {group: math.floor(share) for group, share in exact.items()}
    keys = sorted(sizes, key=str)
    tiebreak = {group: rng.random() for group in keys}
    order = sorted(keys, key=lambda group: (-(exact[group] - out[group]), tiebreak[group]))
    for group in order[: total - sum(out.values())]:
        out[group] += 1
    return out


def _carve(records: list[_RecordLike], fraction: float, seed: int, name: str) -> tuple[list, list]:
    """Take about `fraction` of `records`, stratified by label then person; (taken, rest).

    Each label keeps at least one image in the rest, so training sees every label.
    """
    if fraction <= 0 or not records:
        return [], list(records)
    by_label: dict[str, list] = defaultdict(list)
    for r in records:
        by_label[r.label].append(r)
    taken, rest = [], []
    for label in sorted(by_label):
        of_label = by_label[label]
        quota = min(round(len(of_label) * fraction), len(of_label) - 1)
        by_person: dict[str, list] = defaultdict(list)
        for r in of_label:
            by_person[r.person or ""].append(r)
        alloc = _allocate({person: len(rows) for person, rows in by_person.items()}, quota, _rng(seed, name, label))
        for person in sorted(by_person):
            group = sorted(by_person[person], key=lambda r: r.path)
            _rng(seed, name, label, person).shuffle(group)
            taken.extend(group[: alloc[person]])
            rest.extend(group[alloc[person] :])
    return taken, rest


def make_splits(
    records: Iterable[_RecordLike],
    *,
    holdout_persons: Sequence[str] | int | float | None = None,
    valid_fraction: float = 0.2,
    seen_holdout_fraction: float = 0.1,
    seed: int = DEFAULT_SEED,
) -> list[SplitRecord]:
    """Assign every record to one of `SPLITS` (see the module docstring). Sorted by split, then path."""
    ordered = sorted(records, key=lambda r: (r.path, r.label, r.person or ""))
    if not ordered:
        raise FaceedgeError("make_splits: no records to split")
    duplicates = [a.path for a, b in zip(ordered, ordered[1:]) if a.path == b.path]
    if duplicates:
        raise FaceedgeError(f"make_splits: {duplicates[0]} is listed more than once ({len(duplicates)} duplicates)")
    for key, fraction in (("valid_fraction", valid_fraction), ("seen_holdout_fraction", seen_holdout_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise FaceedgeError(f"{key} must be in [0, 1), got {fraction}")
    if valid_fraction + seen_holdout_fraction >= 1.0:
        raise FaceedgeError(
            f"valid_fraction + seen_holdout_fraction must be < 1, got {valid_fraction} + {seen_holdout_fraction}"
        )

    has_persons = any(r.person is not None for r in ordered)
    if not has_persons:
        if holdout_persons not in (None, 0, [], ()):
            raise FaceedgeError(f"holdout_persons={holdout_persons!r}, but the data has no persons")
        log.warning("the data has no persons: no unseen_persons split (unseen-person evaluation is impossible)")
        held: set[str] = set()
    else:
        held = set(choose_holdout_persons(ordered, holdout_persons, seed))

    unseen = [r for r in ordered if r.person is not None and r.person in held]
    remaining = [r for r in ordered if r.person is None or r.person not in held]
    lost = sorted({r.label for r in ordered} - {r.label for r in remaining})
    if lost:
        raise FaceedgeError(
            f"holdout_persons: holding out {', '.join(sorted(held))} leaves no training images of label(s) "
            f"{', '.join(lost)} (hold out fewer or other persons)"
        )
    seen_holdout, rest = _carve(remaining, seen_holdout_fraction, seed, "seen_holdout")
    valid, train = _carve(rest, valid_fraction, seed, "valid")

    out = [
        SplitRecord(r.path, r.label, r.person, split)
        for split, group in (
            ("train", train),
            ("valid", valid),
            ("seen_holdout", seen_holdout),
            ("unseen_persons", unseen),
        )
        for r in group
    ]
    out.sort(key=lambda s: (SPLITS.index(s.split), s.path))
    return out


# ---------------------------------------------------------------------------------------------
# Files and summaries


def write_splits_csv(split_records: Iterable[SplitRecord], path: str | Path) -> None:
    """Write columns path,label,person,split (person empty for none), atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SPLIT_COLUMNS)
    for s in split_records:
        w.writerow([s.path, s.label, s.person or "", s.split])
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def read_splits_csv(path: str | Path) -> list[SplitRecord]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise FaceedgeError(f"splits file {p} cannot be read ({e})") from None
    reader = csv.DictReader(io.StringIO(text))
    cols = reader.fieldnames or []
    missing = [c for c in SPLIT_COLUMNS if c not in cols]
    if missing:
        raise FaceedgeError(f"splits file {p} is missing column(s) {', '.join(missing)}")
    out = []
    for lineno, row in enumerate(reader, start=2):
        split = row["split"]
        if split not in SPLITS:
            raise FaceedgeError(f"splits file {p} line {lineno}: unknown split {split!r} (one of {', '.join(SPLITS)})")
        if not row["path"] or not row["label"]:
            raise FaceedgeError(f"splits file {p} line {lineno}: empty path or label")
        out.append(SplitRecord(row["path"], row["label"], row["person"] or None, split))
    return out


def split_summary(split_records: Iterable[SplitRecord]) -> dict:
    """{"labels", "images": {split: n}, "counts": {split: {label: n}}, "persons": {split: [..]}}.

    Every split in `SPLITS` and every label appears (zero counts included).
    """
    recs = list(split_records)
    labels = sorted({s.label for s in recs})
    counts = {sp: {lbl: 0 for lbl in labels} for sp in SPLITS}
    persons: dict[str, set[str]] = {sp: set() for sp in SPLITS}
    for s in recs:
        counts[s.split][s.label] += 1
        if s.person is not None:
            persons[s.split].add(s.person)
    return {
        "labels": labels,
        "images": {sp: sum(counts[sp].values()) for sp in SPLITS},
        "counts": counts,
        "persons": {sp: sorted(persons[sp]) for sp in SPLITS},
    }


# ---------------------------------------------------------------------------------------------
# Class imbalance


def class_weights(
    split_records: Iterable[SplitRecord] | Iterable[str], labels: Sequence[str]
) -> dict[int, float] | None:
    """Balanced class weights {label index: n / (k * n_c)}, as Keras' `class_weight` wants.

    `split_records`: split records (only the ``train`` split is counted) or a list of label names.
    Returns None when there is nothing to count. A label with no examples is an error.
    """
    items = list(split_records)
    if items and isinstance(items[0], SplitRecord):
        names = [s.label for s in items if s.split == "train"]
    else:
        names = [str(x) for x in items]
    if not names:
        return None
    c = Counter(names)
    unknown = sorted(set(c) - set(labels))
    if unknown:
        raise FaceedgeError(f"class_weights: label(s) {', '.join(unknown)} not in labels {list(labels)}")
    empty = [lbl for lbl in labels if c[lbl] == 0]
    if empty:
        raise FaceedgeError(f"class_weights: no training images of label(s) {', '.join(empty)}")
    n, k = len(names), len(labels)
    return {i: n / (k * c[lbl]) for i, lbl in enumerate(labels)}


def is_skewed(counts: Mapping[str, int] | Sequence[int], ratio: float = 1.5) -> bool:
    """True when the largest class has more than `ratio` times the images of the smallest."""
    values = list(counts.values()) if isinstance(counts, Mapping) else list(counts)
    if len(values) < 2:
        return False
    lo, hi = min(values), max(values)
    return lo == 0 or hi / lo > ratio
