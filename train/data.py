"""Find the images of a dataset, check each one once, and list what was skipped and why.

Three layouts are accepted (``<root>`` is a folder, or a CSV file)::

    <root>/<label>/<person>/**/*.jpg|png|bmp   preferred: persons make unseen-person evaluation possible
    <root>/<label>/*.jpg|png|bmp               no persons: a WARNING says unseen-person evaluation is impossible
    <file>.csv  with columns path,label[,person]  paths relative to the CSV's folder; empty person = none

Every file is opened once and fully decoded (train.image_check; truncated data is an error), because
the training pipeline decodes with ``tf.io.decode_image`` and a single bad file would stop an epoch
half-way. Files that fail the check are *skipped*, each with a reason. If more than
``max_bad_fraction`` of the files are bad, indexing fails with a one-line `FaceedgeError`.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

from device.errors import FaceedgeError
from device.files import atomic_write_bytes
from train.image_check import HIDDEN, IMAGE_EXTENSIONS, NOTE_EXIF_ORIENTATION, NOTE_EXT_MISMATCH, check_all

log = logging.getLogger(__name__)

CSV_COLUMNS = ("path", "label", "person")

Layout = Literal["label/person", "label", "csv"]

# Skip reasons of indexing, beside those of train.image_check (kind, then ": detail").
MISSING = "missing"
DUPLICATE = "duplicate"
MISPLACED = "not-in-person-folder"


@dataclass(frozen=True)
class Record:
    """One usable image: absolute path, its label and (if the layout has them) its person."""

    path: str
    label: str
    person: str | None


@dataclass
class DatasetIndex:
    records: list[Record]
    skipped: list[tuple[str, str]]  # (path, reason)
    labels: list[str]
    has_persons: bool
    source: str
    layout: Layout
    seconds: float = 0.0
    extension_mismatches: int = 0  # accepted files whose content type differs from the extension
    exif_rotated: int = 0  # accepted JPEGs with an EXIF orientation other than "normal"

    @property
    def n_checked(self) -> int:
        """Files looked at, hidden ones excluded."""
        return len(self.records) + self.n_bad

    @property
    def n_bad(self) -> int:
        """Skipped files, hidden ones excluded."""
        return sum(not reason.startswith(HIDDEN) for _, reason in self.skipped)

    @property
    def bad_fraction(self) -> float:
        return self.n_bad / self.n_checked if self.n_checked else 0.0

    @property
    def persons(self) -> list[str]:
        return sorted({r.person for r in self.records if r.person is not None})

    def counts(self) -> dict[str, int]:
        """Images per label (sorted labels)."""
        c = Counter(r.label for r in self.records)
        return {lbl: c[lbl] for lbl in self.labels}

    def skipped_by_kind(self) -> dict[str, int]:
        return dict(Counter(reason.split(":", 1)[0] for _, reason in self.skipped).most_common())

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in self.skipped_by_kind().items()) or "none"
        persons = f", {len(self.persons)} persons" if self.has_persons else ", no persons"
        return (
            f"{self.source} ({self.layout}): {len(self.records)} images, {len(self.labels)} labels "
            f"{self.counts()}{persons}; skipped {len(self.skipped)} ({kinds})"
        )


# ---------------------------------------------------------------------------------------------
# Walking the layouts


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def _files_under(folder: Path) -> list[Path]:
    """All files below `folder`, recursively, following links (once: a link loop is not an endless walk),
    not descending into hidden folders."""
    out = []
    seen: set[str] = set()

    def unreadable(err: OSError) -> None:  # os.walk would skip an unreadable folder silently
        raise err

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            log.warning("%s: already visited through another link, not walked again", dirpath)
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames))
    return out


def _walk_folder(root: Path) -> tuple[Layout, list[tuple[str, str, str | None]], list[tuple[str, str]], list[Path]]:
    """Candidates (path, label, person), early skips, and the label folders."""
    entries = sorted(root.iterdir())
    label_dirs = [p for p in entries if p.is_dir() and _visible(p)]
    if not label_dirs:
        if any(p.is_file() for p in entries):
            raise FaceedgeError(
                f"data folder {root} has no label folders "
                "(files must be in <root>/<label>/<person>/ or <root>/<label>/)"
            )
        raise FaceedgeError(f"data folder {root} is empty (expected <root>/<label>/<person>/*.jpg)")
    for p in entries:
        if p.is_file() and _visible(p):
            log.debug("ignoring %s: files directly in the data root are not part of any label", p)
    has_person_dirs = any(any(c.is_dir() and _visible(c) for c in d.iterdir()) for d in label_dirs)
    cands: list[tuple[str, str, str | None]] = []
    early: list[tuple[str, str]] = []
    if has_person_dirs:
        for d in label_dirs:
            for c in sorted(d.iterdir()):
                if c.is_dir():
                    if _visible(c):
                        cands.extend((str(f), d.name, c.name) for f in _files_under(c))
                elif c.name.startswith("."):
                    early.append((str(c), f"{HIDDEN}: {c.name!r} is a hidden (system or metadata) file"))
                else:
                    early.append(
                        (str(c), f"{MISPLACED}: directly in label folder, but this dataset has person folders")
                    )
        return "label/person", cands, early, label_dirs
    for d in label_dirs:
        cands.extend((str(f), d.name, None) for f in _files_under(d))
    return "label", cands, early, label_dirs


def _read_csv(path: Path) -> tuple[list[tuple[str, str, str | None]], list[tuple[str, str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise FaceedgeError(f"data CSV {path} cannot be read ({e})") from None
    reader = csv.DictReader(io.StringIO(text))
    cols = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in ("path", "label") if c not in cols]
    if missing:
        raise FaceedgeError(
            f"data CSV {path} is missing column(s) {', '.join(missing)} (has: {', '.join(cols) or 'nothing'}; "
            f"expected header path,label,person)"
        )
    reader.fieldnames = cols
    base = path.parent
    cands: list[tuple[str, str, str | None]] = []
    early: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for lineno, row in enumerate(reader, start=2):
        rel = (row.get("path") or "").strip()
        label = (row.get("label") or "").strip()
        person = (row.get("person") or "").strip() or None
        if not rel and not label:
            continue  # blank line
        if not rel:
            raise FaceedgeError(f"data CSV {path} line {lineno}: empty path")
        if not label:
            raise FaceedgeError(f"data CSV {path} line {lineno}: empty label for {rel}")
        p = Path(rel).expanduser()
        full = os.path.normpath(str(p if p.is_absolute() else base / p))
        if full in seen:
            early.append((full, f"{DUPLICATE}: listed again on line {lineno} (first on line {seen[full]})"))
            continue
        seen[full] = lineno
        if not os.path.isfile(full):
            early.append((full, f"{MISSING}: no such file (line {lineno})"))
            continue
        cands.append((full, label, person))
    if not cands and not early:
        raise FaceedgeError(f"data CSV {path} lists no images")
    return cands, early


# ---------------------------------------------------------------------------------------------


def index_dataset(
    source: str | Path,
    *,
    max_bad_fraction: float = 0.05,
    allowed_ext: Iterable[str] = IMAGE_EXTENSIONS,
    skipped_csv: str | Path | None = None,
    workers: int | None = None,
) -> DatasetIndex:
    """Index and validate a dataset folder or CSV; see the module docstring for the layouts.

    `skipped_csv`: if given, the skipped list is written there (also when indexing then fails on too
    many bad files, so the error message can point to it). Raises `FaceedgeError` (one line, naming
    the path) for a missing or empty source, a label with no usable images, a single label, a CSV
    with missing columns, or more than `max_bad_fraction` bad files.
    """
    import time

    started = time.perf_counter()
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise FaceedgeError(f"max_bad_fraction must be within [0, 1], got {max_bad_fraction}")
    allowed = tuple(ext.lower() if ext.startswith(".") else "." + ext.lower() for ext in allowed_ext)
    root = Path(source).expanduser()
    if not root.exists():
        raise FaceedgeError(f"data folder {root} does not exist")
    root = root.resolve()
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise FaceedgeError(
                f"data source {root} is a file but not a .csv (give a folder or a path,label,person CSV)"
            )
        layout: Layout = "csv"
        candidates, listed_skipped = _read_csv(root)
        label_dirs: list[Path] = []
    else:
        try:
            layout, candidates, listed_skipped, label_dirs = _walk_folder(root)
        except OSError as e:
            raise FaceedgeError(f"data folder {e.filename or root} cannot be read ({e.strerror or e})") from None

    results = check_all([path for path, _label, _person in candidates], allowed, workers)
    records: list[Record] = []
    skipped = list(listed_skipped)
    notes: Counter[str] = Counter()
    for (path, label, person), (reason, file_notes) in zip(candidates, results):
        if reason is None:
            notes.update(file_notes)
            records.append(Record(os.path.abspath(path), label, person))
        else:
            skipped.append((os.path.abspath(path), reason))
    mismatches = notes[NOTE_EXT_MISMATCH]
    records.sort(key=lambda r: (r.label, r.person or "", r.path))
    skipped.sort()
    labels = sorted({r.label for r in records} | {d.name for d in label_dirs})
    has_persons = any(r.person is not None for r in records)
    index = DatasetIndex(
        records=records,
        skipped=skipped,
        labels=labels,
        has_persons=has_persons,
        source=str(root),
        layout=layout,
        seconds=time.perf_counter() - started,
        extension_mismatches=mismatches,
        exif_rotated=notes[NOTE_EXIF_ORIENTATION],
    )
    if skipped_csv is not None:
        write_skipped_csv(index, skipped_csv)
    _validate(index, max_bad_fraction, skipped_csv)
    if mismatches:
        log.warning(
            "%s: %d images have content that does not match their extension (accepted; "
            "the pipeline decodes by content)",
            root,
            mismatches,
        )
    if index.exif_rotated:
        log.warning(
            "%s: %d JPEGs carry an EXIF orientation (rotated/mirrored); the pipeline ignores it "
            "(as the camera on the device does), so they are trained as stored — rotate the pixels "
            "if they look sideways",
            root,
            index.exif_rotated,
        )
    if skipped:
        log.warning(
            "%s: skipped %d files (%s)%s",
            root,
            len(skipped),
            ", ".join(f"{count} {kind}" for kind, count in index.skipped_by_kind().items()),
            f"; list in {skipped_csv}" if skipped_csv else "",
        )
    if not has_persons:
        log.warning(
            "%s: no person folders/column: unseen-person evaluation is impossible "
            "(use <root>/<label>/<person>/ to measure generalisation to new persons)",
            root,
        )
    elif any(r.person is None for r in records):
        log.warning(
            "%s: %d images have no person; they are never put in the unseen-person set",
            root,
            sum(r.person is None for r in records),
        )
    log.info("indexed %s in %.2fs", index.summary(), index.seconds)
    return index


def _validate(index: DatasetIndex, max_bad_fraction: float, skipped_csv: str | Path | None) -> None:
    root = index.source
    total = index.n_checked
    if total == 0:
        raise FaceedgeError(f"data folder {root} has no image files in its label folders")
    if index.n_bad and index.bad_fraction > max_bad_fraction:
        kinds = ", ".join(f"{n} {k}" for k, n in index.skipped_by_kind().items() if k != HIDDEN)
        first = next((p, r) for p, r in index.skipped if not r.startswith(HIDDEN))
        where = f"see {skipped_csv}" if skipped_csv else f"first: {first[0]} ({first[1]})"
        raise FaceedgeError(
            f"data {root}: {index.n_bad} of {total} files are bad ({index.bad_fraction:.1%} > "
            f"max_bad_fraction {max_bad_fraction:.1%}: {kinds}); {where}"
        )
    counts = index.counts()
    for label, n in counts.items():
        if n == 0:
            where = os.path.join(root, label) if index.layout != "csv" else f"{root} (label {label!r})"
            raise FaceedgeError(f"label folder {where} has no usable images")
    if len(index.labels) < 2:
        only = index.labels[0] if index.labels else "?"
        raise FaceedgeError(f"data {root} has a single label {only!r}; a classifier needs at least two")


def check_person_level(index: DatasetIndex, *, require: bool = True) -> None:
    """Refuse a dataset with no person level and more than two labels: its "labels" are most likely
    persons (data.root one level too deep, e.g. data/sample/open), and training would quietly learn to
    tell persons apart. `require=False` (data.require_persons: false) accepts it."""
    if not require or index.has_persons or len(index.labels) <= 2:
        return
    shown = ", ".join(index.labels[:4]) + (", ..." if len(index.labels) > 4 else "")
    hint = ""
    root = Path(index.source)
    if index.layout != "csv":
        parent = root.parent
        try:
            siblings = sorted(p.name for p in parent.iterdir() if p.is_dir() and _visible(p))
        except OSError:
            siblings = []
        listed = ", ".join(siblings[:6]) + (", ..." if len(siblings) > 6 else "")
        hint = f"; one level up, {parent} holds {listed or 'no folders'}: is that the data root?"
    raise FaceedgeError(
        f"data.root {root}: no person level and {len(index.labels)} labels ({shown}): these look like persons, "
        f"not labels{hint} (set data.require_persons: false if they really are labels)"
    )


def write_skipped_csv(index: DatasetIndex | Iterable[tuple[str, str]], path: str | Path) -> None:
    """Write the skipped files as CSV (columns path,reason), atomically."""
    rows = index.skipped if isinstance(index, DatasetIndex) else list(index)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "reason"])
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def read_skipped_csv(path: str | Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [(r["path"], r["reason"]) for r in csv.DictReader(f)]
