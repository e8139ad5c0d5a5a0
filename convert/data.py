"""The images conversion needs: calibration (the training split) and verification (the others).

Both come from the training stage's own files and functions, so nothing is re-decided here:
a run's `splits.csv` (`train.splits.read_splits_csv`), or for `--from MODEL --data DIR_OR_CSV` the
training stage's indexing and person-aware splits (`train.data.index_dataset`,
`train.splits.make_splits`). Calibration images go through the training decode/resize
(`train.pipeline.decode_and_resize`), so the int8 ranges are those of what the model was trained on.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.errors import FaceedgeError
from train.splits import DEFAULT_SEED, make_splits, read_splits_csv
from train.splits import SplitRecord as Sample  # a row of splits.csv: path, label, person, split

log = logging.getLogger(__name__)

CALIBRATION_SPLIT = "train"
VERIFY_SPLITS = ("valid", "seen_holdout", "unseen_persons")
ALL_SPLIT = "all"  # --data without a way to split: everything is verified as one split


@dataclass
class ConvertData:
    samples: list[Sample]
    source: str  # the splits.csv or data folder the samples came from
    labels: list[str]  # sorted label names seen in the data

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    @property
    def verify_splits(self) -> list[str]:
        present = {s.split for s in self.samples}
        names = [n for n in VERIFY_SPLITS if n in present]
        return names or ([ALL_SPLIT] if ALL_SPLIT in present else [])

    @property
    def calibration_split(self) -> str:
        return CALIBRATION_SPLIT if any(s.split == CALIBRATION_SPLIT for s in self.samples) else ALL_SPLIT

    def counts(self) -> dict[str, int]:
        return dict(Counter(s.split for s in self.samples))


def check_files_exist(samples: list[Sample], source: str) -> None:
    """A run whose data folder has gone: fail once, naming the first missing file and how many."""
    missing = [s.path for s in samples if not os.path.isfile(s.path)]
    if missing:
        folder = os.path.dirname(missing[0])
        raise FaceedgeError(
            f"{source}: {len(missing)} of {len(samples)} listed images are missing, e.g. {missing[0]} "
            f"(has the data folder {folder} moved or been deleted?)"
        )


def load_run_splits(splits_csv: Path) -> ConvertData:
    """A run's splits.csv (path,label,person,split, absolute paths), every file checked to exist."""
    if not splits_csv.is_file():
        raise FaceedgeError(f"{splits_csv}: splits file not found (is this a finished training run?)")
    recs = read_splits_csv(splits_csv)
    if not recs:
        raise FaceedgeError(f"{splits_csv}: lists no images")
    check_files_exist(recs, str(splits_csv))
    return ConvertData(recs, str(splits_csv), sorted({s.label for s in recs}))


def load_data_arg(data: Path, seed: int | None = None) -> ConvertData:
    """`--data`: a splits.csv (has a split column), or a folder / path,label[,person] CSV that the
    training stage indexes and splits person-aware (with its default seed unless `seed` is given)."""
    if not data.exists():
        raise FaceedgeError(f"{data}: data folder or CSV not found")
    if data.is_file() and data.suffix.lower() == ".csv" and "split" in _csv_header(data):
        return load_run_splits(data)
    from train.data import index_dataset

    index = index_dataset(data)  # raises unless every label has usable images
    try:
        samples = make_splits(index.records, seed=DEFAULT_SEED if seed is None else seed)
    except FaceedgeError as e:
        # Too few images or persons to split: verify (and calibrate) on everything, say so.
        log.warning(
            "%s: cannot make person-aware splits (%s); verifying all %d images as one split",
            data,
            e,
            len(index.records),
        )
        samples = [Sample(r.path, r.label, r.person, ALL_SPLIT) for r in index.records]
    return ConvertData(samples, str(data), list(index.labels))


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return [c.strip() for c in next(csv.reader(f), [])]
    except (OSError, UnicodeDecodeError) as e:
        raise FaceedgeError(f"{path}: cannot read CSV ({e})") from None


def choose_calibration(samples: list[Sample], n: int, seed: int) -> list[Sample]:
    """`n` samples drawn without replacement by a seeded generator (same data + seed ⇒ same set).

    Sorted by path first, so the choice does not depend on the order the CSV lists them in.
    """
    if n <= 0:
        raise FaceedgeError(f"calibration_images={n}: the int8 conversion needs at least one calibration image")
    pool = sorted(samples, key=lambda s: s.path)
    if not pool:
        raise FaceedgeError("calibration set is empty: the training split lists no images")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(pool))[: min(n, len(pool))]
    return [pool[i] for i in idx]


def representative_data(samples: list[Sample], size_hw: tuple[int, int]):
    """A callable the int8 recipe iterates: float32 (H, W, 3) raw RGB 0..255 through the *training*
    decode/resize, one image at a time (never all in memory)."""
    import tensorflow as tf

    from train.pipeline import decode_and_resize

    paths = [s.path for s in samples]

    def gen():
        for p in paths:
            try:
                yield decode_and_resize(tf.constant(p), size_hw).numpy()
            except tf.errors.OpError as e:
                raise FaceedgeError(f"{p}: calibration image cannot be decoded ({e.message.splitlines()[0]})") from None

    return gen
