"""An offline sample dataset: cartoon face crops of synthetic persons, eyes open or closed.

``make data`` (``python -m train data --out DIR --seed N``) writes::

    <out>/<label>/<person>/<nnnn>.jpg      labels: closed, open
    <out>/README.txt                       what this is, how it was made, the counts
    <out>/sample.json                      the generator's parameters and summary
    <out>/preview.jpg                      a contact sheet: a row per person, eyes open | closed

Why it is built this way: the point of the sample is that *seen-person* and *unseen-person*
accuracy mean something, as they did in the original log. So

* every person has fixed identity traits (face shape, skin tone, hair colour and style, eye
  spacing and size, iris colour, brows, nose, mouth, ears, beard or glasses), and every person has
  both labels, in about equal numbers;
* every image varies in pose (roll, a little yaw), scale, position, lighting (gain, contrast,
  colour cast, a light gradient), background (flat, gradient, stripes, blobs, cloud texture),
  clothing, mouth (open mouths show white teeth), gaze, noise, blur and JPEG quality;
* the label lives only in the eyes: open = white sclera, coloured iris, pupil, highlight;
  closed = a lid arc with lashes over slightly shaded skin. Global colour statistics carry almost
  nothing (tested: a classifier on per-image RGB mean/std and an 8-bin grey histogram is near
  chance on unseen persons), while a local feature of the eye region separates the labels
  (tested: ≥ 0.85 on unseen persons).

The persons and their drawing are in `train.sample_faces`; this module writes the dataset.
Deterministic: every image is drawn from a generator seeded with (seed, person, image), so the
same seed gives byte-identical files. No TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from device.errors import FaceedgeError
from device.files import current_umask
from device.flags import add_option
from train.sample_faces import Identity, make_identity, render

log = logging.getLogger(__name__)

LABELS = ("closed", "open")
MARKER = "sample.json"  # written into every generated dataset; lets `make data` replace its own output


def _label_plan(seed: int, person: int, count: int) -> list[str]:
    """Balanced labels for one person in a seeded order (one extra at random if count is odd)."""
    rng = np.random.default_rng((seed, 2, person))
    half = count // 2
    plan = [LABELS[0]] * half + [LABELS[1]] * half
    if count % 2:
        plan.append(LABELS[int(rng.integers(2))])
    return [plan[i] for i in rng.permutation(len(plan))]


def generate(
    out: str | Path,
    *,
    seed: int = 0,
    persons: int = 10,
    images_per_person: int = 40,
    size: int = 128,
    overwrite: bool = False,
    quality: int = 92,
) -> dict:
    """Write the sample dataset to `out` (see the module docstring); returns a summary.

    A non-empty `out` that is not an earlier sample dataset is refused unless `overwrite`; the new
    dataset is written next to it and renamed into place, so `out` is never half-written.
    """
    t0 = time.perf_counter()
    if persons < 2:
        raise FaceedgeError(f"persons must be >= 2 (unseen-person evaluation needs several), got {persons}")
    if images_per_person < 2:
        raise FaceedgeError(f"images_per_person must be >= 2 (each person needs both labels), got {images_per_person}")
    if not 32 <= size <= 1024:
        raise FaceedgeError(f"size must be within 32..1024, got {size}")
    out = Path(out).expanduser().absolute()
    if out.exists():
        if not out.is_dir():
            raise FaceedgeError(f"output {out} exists and is not a folder")
        nonempty = any(out.iterdir())
        ours = (out / MARKER).is_file()
        if nonempty and not (ours or overwrite):
            raise FaceedgeError(
                f"output folder {out} is not empty and not a sample dataset (use --overwrite to replace it)"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700; the dataset should be a normal folder
    try:
        idents = [make_identity(seed, person) for person in range(persons)]
        counts: dict[str, dict[str, int]] = {}
        thumbs: dict[tuple[int, str], list[np.ndarray]] = {}
        for person, ident in enumerate(idents):
            plan = _label_plan(seed, person, images_per_person)
            counts[ident.name] = {label: plan.count(label) for label in LABELS}
            for label in LABELS:
                (tmp / label / ident.name).mkdir(parents=True, exist_ok=True)
            for image, label in enumerate(plan):
                rng = np.random.default_rng((seed, 1, person, image))
                rgb = render(ident, label == "open", rng, size)
                path = tmp / label / ident.name / f"{image:04d}.jpg"
                ok, buf = cv2.imencode(
                    ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
                )
                if not ok:  # pragma: no cover - cv2 always encodes a uint8 image
                    raise FaceedgeError(f"could not encode {path}")
                path.write_bytes(buf.tobytes())
                if person < PREVIEW_PERSONS and len(thumbs.setdefault((person, label), [])) < PREVIEW_PER_LABEL:
                    thumbs[(person, label)].append(rgb)
        summary = {
            "out": str(out),
            "seed": seed,
            "persons": persons,
            "images_per_person": images_per_person,
            "size": size,
            "labels": {lbl: sum(c[lbl] for c in counts.values()) for lbl in LABELS},
            "per_person": counts,
            "images": persons * images_per_person,
        }
        meta = {k: v for k, v in summary.items() if k != "out"}  # no absolute path: same seed, same bytes
        meta.update(generator="train.sample_data", identities=[asdict(i) for i in idents])
        (tmp / MARKER).write_text(json.dumps(meta, indent=1) + "\n")
        (tmp / "README.txt").write_text(_readme(summary, idents))
        cv2.imwrite(
            str(tmp / "preview.jpg"),
            cv2.cvtColor(_preview(thumbs, size), cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, 90],
        )
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    log.debug("wrote %d images of %d persons to %s in %.2fs", summary["images"], persons, out, summary["seconds"])
    return summary


PREVIEW_PERSONS = 12
PREVIEW_PER_LABEL = 4


def _preview(thumbs: dict[tuple[int, str], list[np.ndarray]], size: int) -> np.ndarray:
    """A contact sheet: one row per person, its first open-eyed then closed-eyed images."""
    side = min(size, 96)
    gap = max(2, side // 16)
    rows = sorted({person for person, _ in thumbs})
    cols = [(label, i) for label in ("open", "closed") for i in range(PREVIEW_PER_LABEL)]
    sheet = np.full((len(rows) * (side + gap) + gap, len(cols) * (side + gap) + 3 * gap, 3), 255, np.uint8)
    for row, person in enumerate(rows):
        for col, (label, i) in enumerate(cols):
            images = thumbs.get((person, label), [])
            if i < len(images):
                y = gap + row * (side + gap)
                x = gap + col * (side + gap) + (2 * gap if label == "closed" else 0)
                sheet[y : y + side, x : x + side] = cv2.resize(images[i], (side, side), interpolation=cv2.INTER_AREA)
    return sheet


def _replace_dir(new: Path, out: Path) -> None:
    """Move `new` to `out`; an existing `out` is renamed aside first and removed after."""
    if not out.exists():
        os.replace(new, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.rmdir(old)
    os.replace(out, old)
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _readme(summary: dict, idents: list[Identity]) -> str:
    lines = [
        "faceedge sample dataset (synthetic, offline)",
        "",
        "Cartoon face crops of synthetic persons; the label is whether the eyes are open or closed.",
        f"Generated by: python -m train data --out DIR --seed {summary['seed']} "
        f"--persons {summary['persons']} --images-per-person {summary['images_per_person']} --size {summary['size']}",
        "The same seed gives byte-identical files.",
        "",
        "Layout: <label>/<person>/<nnnn>.jpg   labels: " + ", ".join(LABELS),
        "preview.jpg: a row per person, four images with eyes open, then four closed.",
        f"Images: {summary['images']} ({', '.join(f'{k} {v}' for k, v in summary['labels'].items())}), "
        f"{summary['size']}x{summary['size']} RGB JPEG",
        "",
        "Each person has fixed traits (face shape, skin tone, hair colour/style, eye spacing/size, iris",
        "colour, brows, nose, mouth, ears, beard, glasses). Each image varies pose (roll, yaw), scale,",
        "position, lighting (gain, contrast, colour cast, gradient), background, clothes, mouth, gaze,",
        "noise, blur. Only the eyes carry the label; global colour statistics do not.",
        "",
        "person  closed open  skin            hair                      eyes (dx, w, h)",
    ]
    for ident in idents:
        count = summary["per_person"][ident.name]
        lines.append(
            f"{ident.name:7s} {count['closed']:6d} {count['open']:4d}  {str(ident.skin):15s} "
            f"{ident.hair_style:6s} {str(ident.hair):18s} ({ident.eye_dx:.3f}, {ident.eye_w:.3f}, {ident.eye_h:.3f})"
            + (" beard" if ident.beard else "")
            + (" glasses" if ident.glasses else "")
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# CLI: `python -m train data ...` (registered by train/cli.py)


def add_data_parser(subparsers) -> argparse.ArgumentParser:
    """Register the `data` subcommand; its `func(args) -> int` runs it."""
    p = subparsers.add_parser(
        "data",
        help="generate the offline sample dataset",
        description="Generate the offline sample dataset: synthetic cartoon faces, eyes open/closed, "
        "<out>/<label>/<person>/<n>.jpg. Deterministic from --seed.",
    )
    p.add_argument("--out", type=Path, default=Path("data/sample"), help="output folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default: %(default)s)")
    p.add_argument("--persons", type=int, default=10, help="number of synthetic persons (default: %(default)s)")
    add_option(
        p,
        "--images-per-person",
        type=int,
        default=40,
        help="images per person, half open, half closed (default: %(default)s)",
    )
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default: %(default)s)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty output folder that is not a sample dataset"
    )
    p.set_defaults(func=run_from_args)
    return p


def run_from_args(args: argparse.Namespace) -> int:
    s = generate(
        args.out,
        seed=args.seed,
        persons=args.persons,
        images_per_person=args.images_per_person,
        size=args.size,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {s['images']} images ({', '.join(f'{k} {v}' for k, v in s['labels'].items())}) of "
        f"{s['persons']} persons to {s['out']} in {s['seconds']:.1f}s"
    )
    return 0
