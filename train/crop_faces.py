"""`python -m train crop-faces`: turn raw photos into the square crops the model trains on, with
the device's own `device.crop.Cropper` — so training sees exactly the region the Pi will cut out
of its camera frames.

    python -m train crop-faces --src RAW_DIR --out DATASET_DIR [--config crop.yaml | --mode face --margin 0.2]

The folder structure under ``--src`` (``<label>/<person>/...``) is mirrored under ``--out``; each
crop is written at its native resolution (training resizes, exactly like the device) as PNG
(lossless: the dataset then holds the very pixels the device crops) or JPEG (``--format jpg``).
Two reports land in ``--out`` (files in a data root are ignored by the indexer):

- ``crop_faces.csv``: one row per source image: src, out, status, faces, x, y, w, h
- ``crop_faces_skipped.csv``: path,reason for every image with no face or that could not be read
  (the columns of a run's ``skipped.csv``)

Crops that already exist are kept (re-running resumes a large job) unless ``--overwrite``.
``--config`` takes a YAML file holding either CropConfig keys or a device config with a ``crop:``
block — pass the device's config and the training crops are cut with the device's settings.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.crop import CropConfig, Cropper, load_image_rgb, save_image_rgb
from device.errors import FaceedgeError
from device.files import atomic_write_bytes
from device.flags import add_option
from device.validation import ValidationError, first_error
from train.config import load_raw
from train.data import write_skipped_csv

log = logging.getLogger(__name__)

SOURCE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
REPORT_NAME = "crop_faces.csv"
SKIPPED_NAME = "crop_faces_skipped.csv"
NO_FACE = "no-face"
UNREADABLE = "unreadable"


@dataclass
class Row:
    src: str
    out: str = ""
    status: str = ""  # cropped | exists | no-face | unreadable
    faces: int = 0
    box: tuple[int, int, int, int] | None = None
    reason: str = ""


@dataclass
class CropFacesResult:
    src: Path
    out: Path
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.rows)

    @property
    def skipped(self) -> list[Row]:
        return [r for r in self.rows if r.status in (NO_FACE, UNREADABLE)]

    def summary(self) -> str:
        return (
            f"{len(self.rows)} images: {self.count('cropped')} cropped, {self.count('exists')} already there, "
            f"{self.count(NO_FACE)} without a face, {self.count(UNREADABLE)} unreadable "
            f"({self.seconds:.1f} s) → {self.out}"
        )


def load_crop_config(path: str | os.PathLike) -> CropConfig:
    """A YAML file of CropConfig keys, or any config with a `crop:` block (e.g. the device config)."""
    p = Path(path)
    raw = load_raw(p)
    if not isinstance(raw, dict):
        raise FaceedgeError(f"{p}: expected a mapping of crop settings, got {type(raw).__name__}")
    if not set(raw) <= set(CropConfig.field_names()):  # a whole device config: validate it all, take crop:
        from device.config import parse_config

        return parse_config(raw, str(p)).crop
    try:
        return CropConfig.model_validate(raw)
    except ValidationError as e:
        key, msg = first_error(e)
        raise FaceedgeError(f"{p}: key {key!r}: {msg}") from None


def list_sources(src: Path) -> list[Path]:
    if not src.is_dir():
        raise FaceedgeError(f"--src {src}: no such folder")
    files = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(
            Path(dirpath) / f
            for f in sorted(filenames)
            if not f.startswith(".") and Path(f).suffix.lower() in SOURCE_EXTENSIONS
        )
    return files


def _targets(files: list[Path], src: Path, out: Path, ext: str) -> list[Path]:
    """Mirror paths; `a.jpg` and `a.png` in one folder would collide, so the second keeps its suffix."""
    seen: set[Path] = set()
    targets = []
    for f in files:
        t = out / f.relative_to(src).with_suffix(ext)
        if t in seen:
            t = t.with_name(f"{f.stem}_{f.suffix.lstrip('.').lower()}{ext}")
        seen.add(t)
        targets.append(t)
    return targets


def run(
    src: str | os.PathLike,
    out: str | os.PathLike,
    crop: CropConfig | None = None,
    *,
    fmt: str = "png",
    jpeg_quality: int = 95,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = False,
) -> CropFacesResult:
    """Crop every image under `src` into the same relative path under `out` (see module docstring)."""
    src, out = Path(src).resolve(), Path(out).resolve()
    crop = crop or CropConfig(mode="face")
    if fmt not in ("png", "jpg"):
        raise FaceedgeError(f"--format {fmt!r}: choose png or jpg")
    if out == src or src in out.parents:
        raise FaceedgeError(f"--out {out}: must not be inside --src {src} (crops would be cropped again)")
    files = list_sources(src)
    if not files:
        raise FaceedgeError(f"--src {src}: no images ({', '.join(SOURCE_EXTENSIONS)})")
    targets = _targets(files, src, out, "." + fmt)
    Cropper(crop)  # fail fast on a bad detector config, before any thread starts
    local = threading.local()  # one Cropper (one detector) per worker thread, built once

    def crop_one(job: tuple[Path, Path]) -> Row:
        source, target = job
        row = Row(src=str(source), out=str(target))
        if target.exists() and not overwrite:
            row.status = "exists"
            return row
        if not hasattr(local, "cropper"):
            local.cropper = Cropper(crop)
        try:
            rgb = load_image_rgb(source)
        except FaceedgeError as e:
            row.status, row.reason, row.out = UNREADABLE, f"{UNREADABLE}: {e}", ""
            return row
        cropped = local.cropper(rgb)
        row.faces, row.box = cropped.faces, cropped.box
        if cropped.image is None:
            row.status, row.reason, row.out = NO_FACE, f"{NO_FACE}: no face found ({crop.detector})", ""
            return row
        save_image_rgb(target, cropped.image, jpeg_quality=jpeg_quality)
        row.status = "cropped"
        return row

    t0 = time.monotonic()
    result = CropFacesResult(src=src, out=out)
    n_workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n_workers) as pool:  # OpenCV releases the GIL
        for done, row in enumerate(pool.map(crop_one, zip(files, targets)), 1):
            result.rows.append(row)
            if progress and (done % 25 == 0 or done == len(files)):
                print(f"\rcrop-faces: {done}/{len(files)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    result.seconds = time.monotonic() - t0
    _write_reports(result)
    log.info("%s", result.summary())
    return result


def _write_reports(result: CropFacesResult) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["src", "out", "status", "faces", "x", "y", "w", "h"])
    for row in result.rows:
        writer.writerow([row.src, row.out, row.status, row.faces, *(row.box if row.box else ("", "", "", ""))])
    atomic_write_bytes(result.out / REPORT_NAME, buf.getvalue().encode())
    write_skipped_csv([(r.src, r.reason) for r in result.skipped], result.out / SKIPPED_NAME)


# ----------------------------------------------------------------------------- CLI


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "crop-faces",
        help="crop faces (or centre squares) from raw photos with the device's cropper",
        description=__doc__.split("\n\n")[0],
    )
    S = argparse.SUPPRESS  # crop flags: unset = the --config value or CropConfig's default
    p.add_argument("--src", type=Path, required=True, help="raw photos, <label>/<person>/*.jpg")
    p.add_argument("--out", type=Path, required=True, help="dataset root to write the crops into")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML with crop settings or a device config with a crop: block (flags below override it)",
    )
    p.add_argument("--mode", choices=["full", "center", "face"], default=S, help="crop mode (default: face)")
    p.add_argument("--margin", type=float, default=S, help="face margin, fraction of the box side (default: 0.2)")
    p.add_argument("--detector", choices=["haar", "yunet"], default=S, help="face detector (default: haar)")
    add_option(p, "--yunet-model", type=str, default=S, help="path to face_detection_yunet_2023mar.onnx")
    add_option(p, "--min-size", type=int, default=S, help="smallest face side in pixels (default: 40)")
    add_option(
        p,
        "--on-no-face",
        choices=["skip", "full"],
        default=S,
        help="no face found: skip the image (default) or keep the full-frame crop",
    )
    p.add_argument(
        "--format", dest="fmt", choices=["png", "jpg"], default="png", help="crop file format (default: %(default)s)"
    )
    add_option(p, "--jpeg-quality", type=int, default=95, help="JPEG quality with --format jpg (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="re-crop images whose crop already exists")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="threads (default: %(default)s)")
    p.set_defaults(func=_cli)
    return p


def config_from_args(args: argparse.Namespace) -> CropConfig:
    base = load_crop_config(args.config).model_dump() if args.config else {"mode": "face"}
    for key in ("mode", "margin", "detector", "yunet_model", "min_size", "on_no_face"):
        value = getattr(args, key, None)
        if value is not None:
            base[key] = value
    try:
        return CropConfig.model_validate(base)
    except ValidationError as e:
        loc, msg = first_error(e, "crop")
        raise FaceedgeError(f"--{loc.replace('_', '-')}: {msg}") from None  # the flag's spelling


def _cli(args: argparse.Namespace) -> int:
    res = run(
        args.src,
        args.out,
        config_from_args(args),
        fmt=args.fmt,
        jpeg_quality=args.jpeg_quality,
        overwrite=args.overwrite,
        workers=args.workers,
        progress=sys.stderr.isatty(),
    )
    print(res.summary())
    if res.skipped:
        print(f"{len(res.skipped)} skipped, listed in {res.out / SKIPPED_NAME}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (`python -m train.crop_faces`); `python -m train crop-faces` is the same."""
    parser = argparse.ArgumentParser(prog="crop-faces")
    sub = parser.add_subparsers(dest="cmd", required=True)
    add_parser(sub)
    args = parser.parse_args(["crop-faces", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except FaceedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
