"""Person-aware splits (train/splits.py): no person leaks into the unseen set, determinism, fractions."""

from __future__ import annotations

import logging
import random
from collections import Counter

import pytest

from device.errors import FaceedgeError
from train.data import Record
from train.splits import (
    SPLITS,
    SplitRecord,
    choose_holdout_persons,
    class_weights,
    is_skewed,
    make_splits,
    read_splits_csv,
    split_summary,
    write_splits_csv,
)


def records(persons: dict[str, dict[str, int]], root: str = "/d") -> list[Record]:
    """persons: {person: {label: n images}}."""
    return [
        Record(f"{root}/{lbl}/{p}/{i:04d}.jpg", lbl, p)
        for p, by_label in persons.items()
        for lbl, n in by_label.items()
        for i in range(n)
    ]


def uniform(n_persons=10, per_label=20, labels=("closed", "open")) -> list[Record]:
    return records({f"p{k:02d}": {lbl: per_label for lbl in labels} for k in range(n_persons)})


def persons_in(splits, name):
    return {s.person for s in splits if s.split == name}


def check_invariants(recs, splits):
    """What must hold for every split of every dataset."""
    assert sorted(s.path for s in splits) == sorted(r.path for r in recs)  # each image exactly once
    assert all(s.split in SPLITS for s in splits)
    by_path = {r.path: r for r in recs}
    assert all(by_path[s.path].label == s.label and by_path[s.path].person == s.person for s in splits)
    unseen = persons_in(splits, "unseen_persons")
    for other in ("train", "valid", "seen_holdout"):
        assert not unseen & persons_in(splits, other), f"person leak into {other}"
    assert None not in unseen
    # Training sees every label.
    assert {s.label for s in splits if s.split == "train"} == {r.label for r in recs}


def test_default_split_holds_out_a_quarter_of_persons_covering_every_label():
    recs = uniform(12)
    splits = make_splits(recs)
    check_invariants(recs, splits)
    unseen = persons_in(splits, "unseen_persons")
    assert len(unseen) == 3
    assert {s.label for s in splits if s.split == "unseen_persons"} == {"closed", "open"}
    summary = split_summary(splits)
    assert summary["images"]["unseen_persons"] == 3 * 40
    rest = 9 * 40
    assert summary["images"]["seen_holdout"] == round(0.1 * rest)
    # Rounded per label (stratified): within one image per label of the exact fraction.
    assert abs(summary["images"]["valid"] - 0.2 * (rest - round(0.1 * rest))) <= 1
    # Stratified by label: both labels equally in valid and seen_holdout.
    assert summary["counts"]["valid"]["closed"] == summary["counts"]["valid"]["open"]
    assert summary["counts"]["seen_holdout"]["closed"] == summary["counts"]["seen_holdout"]["open"]
    # Stratified by person: every seen person is in seen_holdout and valid, with near-equal shares.
    seen = persons_in(splits, "train")
    assert persons_in(splits, "seen_holdout") == seen == persons_in(splits, "valid")
    per_person = Counter(s.person for s in splits if s.split == "valid")
    assert max(per_person.values()) - min(per_person.values()) <= 2


def test_no_person_leak_randomized():
    """Hypothesis-style: many random datasets, arguments and record orders; invariants always hold."""
    rng = random.Random(1234)
    infeasible = 0
    for case in range(150):
        n_labels = rng.choice([2, 2, 3, 4])
        labels = [f"l{i}" for i in range(n_labels)]
        n_persons = rng.randint(2, 14)
        persons = {}
        for k in range(n_persons):
            present = [lbl for lbl in labels if rng.random() < 0.8] or [rng.choice(labels)]
            persons[f"person{k}"] = {lbl: rng.randint(1, 25) for lbl in present}
        recs = records(persons)
        if len({r.label for r in recs}) < 2:
            continue
        # Some images without a person (allowed in CSVs): never in unseen_persons.
        recs += [Record(f"/d/anon/{i}.jpg", rng.choice(labels), None) for i in range(rng.randint(0, 5))]
        holdout = rng.choice(
            [None, 1, max(1, n_persons // 2), 0.3, sorted(rng.sample(sorted(persons), rng.randint(1, n_persons - 1)))]
        )
        seed = rng.randint(0, 10**6)
        kw = dict(
            holdout_persons=holdout,
            valid_fraction=rng.choice([0.0, 0.2, 0.3]),
            seen_holdout_fraction=rng.choice([0.0, 0.1, 0.25]),
            seed=seed,
        )
        try:
            splits = make_splits(recs, **kw)
        except FaceedgeError as e:
            # Only legitimate when the held-out persons are the only ones with some label.
            assert "leaves no training images of label" in str(e), (case, e)
            held = set(holdout) if isinstance(holdout, list) else None
            if held is not None:
                rest_labels = {r.label for r in recs if r.person not in held}
                assert rest_labels != {r.label for r in recs}, case
            infeasible += 1
            continue
        check_invariants(recs, splits)
        if isinstance(holdout, list):
            assert persons_in(splits, "unseen_persons") == set(holdout), case
        # Determinism whatever the order on disk.
        shuffled = recs[:]
        rng.shuffle(shuffled)
        assert make_splits(shuffled, **kw) == splits, case
    assert infeasible < 30  # the loop really exercised the splitter


def test_holdout_covers_every_label_when_possible():
    # Persons mostly have one label only: a random pick of 2 would often miss a label on one side.
    recs = records(
        {
            "a": {"x": 5},
            "b": {"x": 5},
            "c": {"x": 5},
            "d": {"x": 5},
            "e": {"x": 5},
            "f": {"x": 5},
            "g": {"y": 5},
            "h": {"y": 5},
        }
    )
    for seed in range(30):
        held = choose_holdout_persons(recs, 2, seed)
        labels_held = {r.label for r in recs if r.person in held}
        labels_rest = {r.label for r in recs if r.person not in held}
        assert labels_held == labels_rest == {"x", "y"}, (seed, held)


def test_holdout_by_count_fraction_and_mapping():
    recs = uniform(8)
    assert len(choose_holdout_persons(recs, 3, 0)) == 3
    assert len(choose_holdout_persons(recs, 0.5, 0)) == 4
    assert len(choose_holdout_persons(recs, None, 0)) == 2
    assert choose_holdout_persons(recs, 0, 0) == []
    by_label = {"closed": [f"p{k:02d}" for k in range(8)], "open": [f"p{k:02d}" for k in range(8)]}
    assert choose_holdout_persons(by_label, 2, 7) == choose_holdout_persons(recs, 2, 7)
    # The seed matters (some seed picks a different pair).
    assert len({tuple(choose_holdout_persons(recs, 2, s)) for s in range(10)}) > 1


def test_named_holdout():
    recs = uniform(6)
    splits = make_splits(recs, holdout_persons=["p03", "p01"])
    assert persons_in(splits, "unseen_persons") == {"p01", "p03"}
    check_invariants(recs, splits)


def test_named_holdout_unknown_persons_is_error_naming_them():
    with pytest.raises(FaceedgeError, match="nobody, zed") as e:
        make_splits(uniform(4), holdout_persons=["p01", "zed", "nobody"])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("holdout", [4, ["p00", "p01", "p02", "p03"], -1, 1.5, True, "p01"])
def test_impossible_holdouts_are_errors(holdout):
    with pytest.raises(FaceedgeError, match="holdout_persons"):
        make_splits(uniform(4), holdout_persons=holdout)


@pytest.mark.parametrize(
    "kw,key",
    [
        (dict(valid_fraction=1.0), "valid_fraction"),
        (dict(seen_holdout_fraction=-0.1), "seen_holdout_fraction"),
        (dict(valid_fraction=0.6, seen_holdout_fraction=0.5), "valid_fraction"),
    ],
)
def test_bad_fractions(kw, key):
    with pytest.raises(FaceedgeError, match=key):
        make_splits(uniform(4), **kw)


def test_duplicate_and_empty_records_are_errors():
    recs = uniform(3)
    with pytest.raises(FaceedgeError, match=recs[0].path):
        make_splits(recs + [recs[0]])
    with pytest.raises(FaceedgeError):
        make_splits([])


def test_no_persons_gives_no_unseen_split_but_a_seen_holdout(caplog):
    recs = [Record(f"/d/{lbl}/{i}.jpg", lbl, None) for lbl in ("a", "b") for i in range(50)]
    with caplog.at_level(logging.WARNING, logger="train.splits"):
        splits = make_splits(recs)
    assert "no unseen_persons split" in caplog.text
    s = split_summary(splits)
    assert s["images"] == {"train": 72, "valid": 18, "seen_holdout": 10, "unseen_persons": 0}
    assert s["counts"]["seen_holdout"] == {"a": 5, "b": 5}
    with pytest.raises(FaceedgeError, match="no persons"):
        make_splits(recs, holdout_persons=2)


def test_one_person_only_warns_and_makes_no_unseen_split(caplog):
    recs = records({"solo": {"a": 10, "b": 10}})
    with caplog.at_level(logging.WARNING):
        splits = make_splits(recs)
    assert "only one person" in caplog.text
    assert not persons_in(splits, "unseen_persons")


def test_every_label_keeps_a_training_image_even_when_tiny():
    recs = records({"p1": {"a": 1, "b": 1}, "p2": {"a": 1, "b": 2}})
    splits = make_splits(recs, holdout_persons=0, valid_fraction=0.5, seen_holdout_fraction=0.4)
    check_invariants(recs, splits)


def test_adding_a_person_barely_moves_the_others():
    base = {f"p{k}": {"a": 12, "b": 12} for k in range(6)}
    s1 = make_splits(records(base), holdout_persons=["p0"])
    s2 = make_splits(records({**base, "p9": {"a": 12, "b": 12}}), holdout_persons=["p0"])
    before = {s.path: s.split for s in s1}
    after = {s.path: s.split for s in s2 if s.person != "p9"}
    assert before.keys() == after.keys()
    # Each person's images are taken in a fixed seeded order; only the rounding of quotas shifts a few.
    moved = [p for p in before if before[p] != after[p]]
    assert len(moved) <= 0.1 * len(before), len(moved)
    assert {p for p in before if before[p] == "unseen_persons"} == {p for p in after if after[p] == "unseen_persons"}


def test_csv_roundtrip(tmp_path):
    recs = uniform(5) + [Record("/d/x/no person, with comma.jpg", "open", None)]
    splits = make_splits(recs)
    p = tmp_path / "run" / "splits.csv"
    write_splits_csv(splits, p)
    assert p.read_text().splitlines()[0] == "path,label,person,split"
    assert read_splits_csv(p) == splits
    assert not [f for f in p.parent.iterdir() if f.name != "splits.csv"]  # no temp files left


def test_read_splits_csv_errors(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("path,label,split\n/a.jpg,x,train\n")
    with pytest.raises(FaceedgeError, match="person"):
        read_splits_csv(p)
    p.write_text("path,label,person,split\n/a.jpg,x,,test\n")
    with pytest.raises(FaceedgeError, match="line 2.*'test'"):
        read_splits_csv(p)
    with pytest.raises(FaceedgeError, match="nope.csv"):
        read_splits_csv(tmp_path / "nope.csv")


def test_split_summary_lists_every_split_and_label():
    s = split_summary([SplitRecord("/a", "x", "p", "train"), SplitRecord("/b", "y", None, "valid")])
    assert s["labels"] == ["x", "y"]
    assert s["counts"]["unseen_persons"] == {"x": 0, "y": 0}
    assert s["persons"] == {"train": ["p"], "valid": [], "seen_holdout": [], "unseen_persons": []}


def test_class_weights_balanced():
    labels = ["closed", "open"]
    w = class_weights(["closed"] * 30 + ["open"] * 10, labels)
    assert w == {0: pytest.approx(40 / (2 * 30)), 1: pytest.approx(40 / (2 * 10))}
    # Weighted counts equal per class.
    assert 30 * w[0] == pytest.approx(10 * w[1])
    splits = [SplitRecord(f"/{i}", "open" if i % 4 == 0 else "closed", None, "train") for i in range(40)]
    splits += [SplitRecord(f"/v{i}", "open", None, "valid") for i in range(100)]  # not counted
    assert class_weights(splits, labels) == {0: pytest.approx(40 / 60), 1: pytest.approx(40 / 20)}
    assert class_weights([], labels) is None
    with pytest.raises(FaceedgeError, match="open"):
        class_weights(["closed"] * 3, labels)
    with pytest.raises(FaceedgeError, match="blink"):
        class_weights(["closed", "open", "blink"], labels)


def test_is_skewed():
    assert not is_skewed({"a": 100, "b": 100})
    assert not is_skewed({"a": 150, "b": 100})
    assert is_skewed({"a": 151, "b": 100})
    assert is_skewed([10, 0])
    assert is_skewed([10, 25], ratio=2.0) and not is_skewed([10, 20], ratio=2.0)
    assert not is_skewed([5])
