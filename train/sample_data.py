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

Drawing is numpy + OpenCV at twice the output size, then area-downsampled (antialiased shapes).
Deterministic: every image is drawn from a generator seeded with (seed, person, image), so the
same seed gives byte-identical files. No TensorFlow.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from device.errors import FaceedgeError
from device.files import current_umask

log = logging.getLogger(__name__)

LABELS = ("closed", "open")
MARKER = "sample.json"  # written into every generated dataset; lets `make data` replace its own output
SS = 2  # supersampling factor

SKIN_TONES = [  # RGB, light to dark
    (255, 224, 196),
    (241, 194, 167),
    (224, 172, 138),
    (198, 134, 103),
    (176, 118, 82),
    (141, 85, 60),
    (110, 68, 45),
    (84, 52, 36),
]
HAIR_COLOURS = [
    (25, 20, 18),
    (60, 40, 25),
    (110, 70, 35),
    (170, 120, 60),
    (225, 195, 120),
    (165, 60, 30),
    (150, 150, 150),
    (230, 230, 225),
    (70, 50, 100),
    (35, 60, 110),
]
IRIS_COLOURS = [(80, 50, 25), (50, 35, 20), (60, 110, 160), (70, 120, 70), (110, 90, 50), (90, 100, 110)]
HAIR_STYLES = ("short", "long", "bald", "fringe", "bun", "curly")


@dataclass(frozen=True)
class Identity:
    """The traits fixed per person (fractions are of the canvas size)."""

    name: str
    face_rx: float
    face_ry: float
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: str
    eye_dx: float  # half the distance between the eye centres
    eye_y: float  # eye line, relative to the face centre (negative = above)
    eye_w: float  # eye half-width
    eye_h: float  # open-eye half-height
    iris: tuple[int, int, int]
    brow_thick: float
    brow_tilt: float
    brow_gap: float
    nose: str
    mouth_w: float
    mouth_curve: float
    ears: bool
    beard: bool
    glasses: bool


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def make_identity(seed: int, index: int) -> Identity:
    rng = np.random.default_rng((seed, 0, index))
    # Spread the main traits over the persons so that 8-10 persons really look different.
    skin = SKIN_TONES[(index * 3 + int(rng.integers(2))) % len(SKIN_TONES)]
    style = HAIR_STYLES[(index + seed) % len(HAIR_STYLES)]
    return Identity(
        name=f"p{index + 1:02d}",
        face_rx=float(rng.uniform(0.27, 0.33)),
        face_ry=float(rng.uniform(0.34, 0.40)),
        skin=tuple(int(np.clip(c + rng.integers(-10, 11), 0, 255)) for c in skin),
        hair=_pick(rng, HAIR_COLOURS),
        hair_style=style,
        eye_dx=float(rng.uniform(0.11, 0.145)),
        eye_y=float(rng.uniform(-0.10, -0.05)),
        eye_w=float(rng.uniform(0.068, 0.088)),
        eye_h=float(rng.uniform(0.043, 0.056)),
        iris=_pick(rng, IRIS_COLOURS),
        brow_thick=float(rng.uniform(0.010, 0.022)),
        brow_tilt=float(rng.uniform(-0.25, 0.25)),
        brow_gap=float(rng.uniform(0.035, 0.06)),
        nose=_pick(rng, ("line", "dot", "triangle", "hook")),
        mouth_w=float(rng.uniform(0.05, 0.09)),
        mouth_curve=float(rng.uniform(-0.2, 0.8)),
        ears=bool(rng.random() < 0.75),
        beard=index % 5 == 3,
        glasses=index % 3 == 1,
    )


# ---------------------------------------------------------------------------------------------
# Drawing (all coordinates in pixels of the supersampled canvas)


def _col(c, f: float = 1.0) -> tuple[int, int, int]:
    return tuple(int(np.clip(v * f, 0, 255)) for v in c)


@functools.lru_cache(maxsize=8)
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(yy, xx) in [0, 1), read-only, cached per size."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    """A background of side `n`, drawn at half resolution (it is smooth) and upscaled."""
    big, n = n, n // 2
    kind = int(rng.integers(5))
    c1 = rng.uniform(0, 255, 3).astype(np.float32)
    c2 = rng.uniform(0, 255, 3).astype(np.float32)
    yy, xx = _grid(n)
    if kind == 0:  # flat
        t = np.zeros((n, n), np.float32)
    elif kind == 1:  # linear gradient
        a = rng.uniform(0, 2 * math.pi)
        t = math.cos(a) * xx + math.sin(a) * yy
        t = (t - t.min()) / (np.ptp(t) + 1e-6)
    elif kind == 2:  # stripes
        a = rng.uniform(0, math.pi)
        f = rng.uniform(3, 12)
        t = (np.sin((math.cos(a) * xx + math.sin(a) * yy) * f * 2 * math.pi) > 0).astype(np.float32)
    elif kind == 3:  # blobs
        t = np.zeros((n, n), np.float32)
        for _ in range(int(rng.integers(4, 14))):
            cx, cy, r = rng.uniform(0, n), rng.uniform(0, n), rng.uniform(0.04, 0.2) * n
            cv2.circle(t, (int(cx), int(cy)), int(r), float(rng.uniform(0.3, 1.0)), -1)
        t = cv2.GaussianBlur(t, (0, 0), n * 0.01 + 0.5)
    else:  # cloudy low-frequency noise
        small = rng.random((6, 6)).astype(np.float32)
        t = cv2.resize(small, (n, n), interpolation=cv2.INTER_CUBIC)
        t = np.clip((t - t.min()) / (np.ptp(t) + 1e-6), 0, 1)
    t = cv2.resize(t.astype(np.float32), (big, big), interpolation=cv2.INTER_LINEAR)
    return c1 + (c2 - c1) * t[..., None]


def _eye(
    img,
    ident: Identity,
    cx: float,
    cy: float,
    n: int,
    is_open: bool,
    rng,
    gaze: tuple[float, float],
    openness: float,
    mirror: bool,
) -> None:
    w = ident.eye_w * n
    h = ident.eye_h * n
    dark = (30, 22, 20)
    line = max(2, int(round(0.012 * n)))
    c = (int(cx), int(cy))
    if is_open:
        hh = h * openness
        cv2.ellipse(
            img, c, (int(w), int(hh)), 0, 0, 360, _col((248, 246, 240), rng.uniform(0.93, 1.0)), -1, cv2.LINE_AA
        )
        r_iris = min(hh * 0.95, w * 0.5)
        ix = cx + gaze[0] * (w - r_iris) * 0.8
        iy = cy + gaze[1] * max(hh - r_iris, 0) * 0.5
        # Clip the iris to the sclera: draw it on a copy of the eye's box, keep it inside the ellipse.
        x0, y0 = max(0, int(cx - w) - 2), max(0, int(cy - hh) - 2)
        x1, y1 = min(img.shape[1], int(cx + w) + 3), min(img.shape[0], int(cy + hh) + 3)
        box = img[y0:y1, x0:x1]
        mask = np.zeros(box.shape[:2], np.float32)
        cv2.ellipse(mask, (c[0] - x0, c[1] - y0), (int(w), int(hh)), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
        layer = box.copy()
        ic = (int(ix) - x0, int(iy) - y0)
        cv2.circle(layer, ic, int(r_iris), _col(ident.iris), -1, cv2.LINE_AA)
        cv2.circle(layer, ic, int(r_iris * 0.5), (12, 10, 10), -1, cv2.LINE_AA)
        hl = (int(ic[0] + r_iris * 0.35 * (-1 if mirror else 1)), int(ic[1] - r_iris * 0.35))
        cv2.circle(layer, hl, max(1, int(r_iris * 0.22)), (255, 255, 255), -1, cv2.LINE_AA)
        box += (layer - box) * mask[..., None]
        cv2.ellipse(img, c, (int(w), int(hh)), 0, 0, 360, dark, max(1, line // 2), cv2.LINE_AA)
        cv2.ellipse(img, c, (int(w), int(hh)), 0, 185, 355, dark, line + 1, cv2.LINE_AA)  # upper lid
    else:
        lid = _col(ident.skin, 0.88)
        cv2.ellipse(img, (int(cx), int(cy - h * 0.15)), (int(w), int(h * 0.75)), 0, 180, 360, lid, -1, cv2.LINE_AA)
        cv2.ellipse(img, c, (int(w), int(h * rng.uniform(0.35, 0.6))), 0, 5, 175, dark, line + 1, cv2.LINE_AA)
        for k in range(5):  # lashes along the lower curve of the lid
            t = math.pi * (0.2 + 0.15 * k)
            x0, y0 = cx + w * math.cos(t), cy + h * 0.45 * math.sin(t)
            cv2.line(
                img,
                (int(x0), int(y0)),
                (int(x0 + w * 0.12 * math.cos(t)), int(y0 + h * 0.5)),
                dark,
                max(1, line // 2),
                cv2.LINE_AA,
            )


def _face_layer(ident: Identity, rng: np.random.Generator, n: int, is_open: bool) -> tuple[np.ndarray, np.ndarray]:
    """The person drawn upright and centred: (RGB float image, alpha mask in [0, 1])."""
    img = np.zeros((n, n, 3), np.float32)
    mask = np.zeros((n, n), np.float32)
    cx, cy = n * 0.5, n * 0.47
    rx, ry = ident.face_rx * n, ident.face_ry * n
    skin = ident.skin
    hair = _col(ident.hair, rng.uniform(0.9, 1.1))

    def both(draw):  # draw the same shape into the image and the mask
        draw(img, None)
        draw(mask, 1.0)

    # Shoulders / shirt (colour changes every image: clothes are not identity).
    shirt = tuple(int(v) for v in rng.integers(0, 256, 3))
    both(
        lambda a, v: cv2.ellipse(
            a,
            (int(cx), int(n * 1.08)),
            (int(n * 0.42), int(n * 0.25)),
            0,
            0,
            360,
            v if v is not None else shirt,
            -1,
            cv2.LINE_AA,
        )
    )
    both(
        lambda a, v: cv2.rectangle(
            a,
            (int(cx - rx * 0.4), int(cy + ry * 0.6)),
            (int(cx + rx * 0.4), int(n * 0.9)),
            v if v is not None else _col(skin, 0.85),
            -1,
        )
    )
    if ident.hair_style == "long":
        both(
            lambda a, v: cv2.ellipse(
                a,
                (int(cx), int(cy + ry * 0.25)),
                (int(rx * 1.25), int(ry * 1.2)),
                0,
                0,
                360,
                v if v is not None else hair,
                -1,
                cv2.LINE_AA,
            )
        )
    if ident.hair_style == "bun":
        both(
            lambda a, v: cv2.circle(
                a, (int(cx), int(cy - ry * 1.1)), int(rx * 0.45), v if v is not None else hair, -1, cv2.LINE_AA
            )
        )
    if ident.ears:
        for s in (-1, 1):
            both(
                lambda a, v, s=s: cv2.ellipse(
                    a,
                    (int(cx + s * rx * 0.98), int(cy + ry * 0.05)),
                    (int(rx * 0.14), int(ry * 0.2)),
                    0,
                    0,
                    360,
                    v if v is not None else _col(skin, 0.93),
                    -1,
                    cv2.LINE_AA,
                )
            )
    both(
        lambda a, v: cv2.ellipse(
            a, (int(cx), int(cy)), (int(rx), int(ry)), 0, 0, 360, v if v is not None else skin, -1, cv2.LINE_AA
        )
    )
    # Hair on top.
    if ident.hair_style in ("short", "long", "fringe", "bun"):
        cv2.ellipse(
            img, (int(cx), int(cy - ry * 0.35)), (int(rx * 1.04), int(ry * 0.72)), 0, 180, 360, hair, -1, cv2.LINE_AA
        )
        if ident.hair_style == "fringe":
            cv2.rectangle(
                img, (int(cx - rx * 0.85), int(cy - ry * 0.6)), (int(cx + rx * 0.85), int(cy - ry * 0.38)), hair, -1
            )
        cv2.ellipse(
            mask, (int(cx), int(cy - ry * 0.35)), (int(rx * 1.04), int(ry * 0.72)), 0, 180, 360, 1.0, -1, cv2.LINE_AA
        )
    elif ident.hair_style == "curly":
        crng = np.random.default_rng([ord(ch) for ch in ident.name])  # the same curls in every image
        for k in range(16):
            t = math.pi * (1.0 + k / 15)
            px, py = cx + rx * 0.95 * math.cos(t), cy - ry * 0.25 + ry * 0.85 * math.sin(t)
            r = int(rx * crng.uniform(0.18, 0.26))
            cv2.circle(img, (int(px), int(py)), r, hair, -1, cv2.LINE_AA)
            cv2.circle(mask, (int(px), int(py)), r, 1.0, -1, cv2.LINE_AA)
    if ident.beard:
        cv2.ellipse(
            img, (int(cx), int(cy + ry * 0.45)), (int(rx * 0.9), int(ry * 0.55)), 0, 0, 180, hair, -1, cv2.LINE_AA
        )
    # Yaw: features slide sideways a little.
    yaw = rng.uniform(-0.035, 0.035) * n
    ey = cy + ident.eye_y * n
    gaze = (float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1)))
    openness = float(rng.uniform(0.65, 1.0))
    for s in (-1, 1):
        ex = cx + yaw + s * ident.eye_dx * n
        _eye(img, ident, ex, ey, n, is_open, rng, gaze, openness, mirror=s > 0)
        # Brows.
        bw = ident.eye_w * n * 1.1
        by = ey - ident.eye_h * n - ident.brow_gap * n
        tilt = ident.brow_tilt * s
        p0 = (int(ex - bw), int(by + tilt * bw * 0.5 * s + rng.uniform(-0.005, 0.005) * n))
        p1 = (int(ex + bw), int(by - tilt * bw * 0.5 * s))
        cv2.line(img, p0, p1, _col(ident.hair, 0.8), max(2, int(ident.brow_thick * n)), cv2.LINE_AA)
    if ident.glasses:
        for s in (-1, 1):
            ex = cx + yaw + s * ident.eye_dx * n
            cv2.circle(
                img, (int(ex), int(ey)), int(ident.eye_w * n * 1.45), (40, 40, 40), max(2, int(0.008 * n)), cv2.LINE_AA
            )
        cv2.line(
            img,
            (int(cx + yaw - ident.eye_dx * n * 0.45), int(ey)),
            (int(cx + yaw + ident.eye_dx * n * 0.45), int(ey)),
            (40, 40, 40),
            max(2, int(0.008 * n)),
        )
    # Nose.
    nx, ny = cx + yaw * 1.3, cy + ry * 0.18
    nc = _col(skin, 0.72)
    lw = max(2, int(0.009 * n))
    if ident.nose == "line":
        cv2.line(img, (int(nx), int(ny - ry * 0.2)), (int(nx + rx * 0.06), int(ny)), nc, lw, cv2.LINE_AA)
    elif ident.nose == "dot":
        cv2.circle(img, (int(nx), int(ny)), int(rx * 0.07), nc, -1, cv2.LINE_AA)
    elif ident.nose == "triangle":
        pts = np.array([[nx, ny - ry * 0.18], [nx - rx * 0.1, ny + ry * 0.02], [nx + rx * 0.1, ny + ry * 0.02]])
        cv2.polylines(img, [pts.astype(np.int32)], True, nc, lw, cv2.LINE_AA)
    else:
        cv2.ellipse(img, (int(nx), int(ny)), (int(rx * 0.1), int(ry * 0.06)), 0, 0, 180, nc, lw, cv2.LINE_AA)
    # Mouth: closed (a curve) or open (dark with teeth) — independent of the label.
    mx, my = cx + yaw * 1.2, cy + ry * 0.5
    mw = ident.mouth_w * n * rng.uniform(0.85, 1.15)
    lips = _col((170, 60, 60), rng.uniform(0.7, 1.1))
    if rng.random() < 0.4:
        mh = mw * rng.uniform(0.35, 0.7)
        cv2.ellipse(img, (int(mx), int(my)), (int(mw), int(mh)), 0, 0, 360, (60, 15, 20), -1, cv2.LINE_AA)
        cv2.ellipse(
            img,
            (int(mx), int(my - mh * 0.55)),
            (int(mw * 0.8), int(mh * 0.4)),
            0,
            0,
            360,
            (245, 245, 238),
            -1,
            cv2.LINE_AA,
        )
        cv2.ellipse(img, (int(mx), int(my)), (int(mw), int(mh)), 0, 0, 360, lips, lw, cv2.LINE_AA)
    else:
        curve = ident.mouth_curve + rng.uniform(-0.2, 0.2)
        cv2.ellipse(
            img,
            (int(mx), int(my - mw * curve * 0.5)),
            (int(mw), int(abs(mw * curve) + 1)),
            0,
            0 if curve >= 0 else 180,
            180 if curve >= 0 else 360,
            lips,
            lw + 1,
            cv2.LINE_AA,
        )
    # Cheek blush sometimes (red-ish, unrelated to the label).
    if rng.random() < 0.3:
        blush = img.copy()
        for s in (-1, 1):
            cv2.circle(
                blush,
                (int(cx + yaw + s * rx * 0.6), int(cy + ry * 0.25)),
                int(rx * 0.16),
                (230, 120, 120),
                -1,
                cv2.LINE_AA,
            )
        img[:] = img * 0.7 + blush * 0.3
    return img, mask


def render(ident: Identity, is_open: bool, rng: np.random.Generator, size: int) -> np.ndarray:
    """One RGB uint8 image of `ident` with eyes open or closed."""
    n = size * SS
    bg = _background(rng, size)
    face, mask = _face_layer(ident, rng, n, is_open)  # supersampled, then area-downsampled
    # Pose: roll, scale, shift.
    angle = rng.uniform(-15, 15)
    scale = rng.uniform(0.85, 1.12)
    m = cv2.getRotationMatrix2D((n * 0.5, n * 0.5), angle, scale)
    m[:, 2] += rng.uniform(-0.07, 0.07, 2) * n
    rgba = cv2.warpAffine(np.dstack([face, mask]), m, (n, n), flags=cv2.INTER_LINEAR, borderValue=0)
    rgba = cv2.resize(rgba, (size, size), interpolation=cv2.INTER_AREA)
    # The face layer was drawn over black with antialiased edges: it is premultiplied by its mask.
    img = bg * (1.0 - rgba[..., 3:]) + rgba[..., :3]
    # Lighting: gain, contrast, colour cast, a directional light gradient.
    yy, xx = _grid(size)
    a = rng.uniform(0, 2 * math.pi)
    grad = 1.0 + rng.uniform(0, 0.6) * (math.cos(a) * (xx - 0.5) + math.sin(a) * (yy - 0.5))
    gain = rng.uniform(0.6, 1.3)
    cast = rng.uniform(0.85, 1.15, 3)
    contrast = rng.uniform(0.7, 1.25)
    mean = img.mean()
    img = ((img - mean) * contrast + mean) * gain * grad[..., None] * cast[None, None, :]
    img += rng.uniform(-25, 25)
    if rng.random() < 0.35:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.1))
    img += rng.normal(0, rng.uniform(0, 8), img.shape)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------


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
        idents = [make_identity(seed, p) for p in range(persons)]
        counts: dict[str, dict[str, int]] = {}
        thumbs: dict[tuple[int, str], list[np.ndarray]] = {}
        for p, ident in enumerate(idents):
            plan = _label_plan(seed, p, images_per_person)
            counts[ident.name] = {lbl: plan.count(lbl) for lbl in LABELS}
            for lbl in LABELS:
                (tmp / lbl / ident.name).mkdir(parents=True, exist_ok=True)
            for k, lbl in enumerate(plan):
                rng = np.random.default_rng((seed, 1, p, k))
                rgb = render(ident, lbl == "open", rng, size)
                ok, buf = cv2.imencode(
                    ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
                )
                if not ok:  # pragma: no cover - cv2 always encodes a uint8 image
                    raise FaceedgeError(f"could not encode {tmp / lbl / ident.name / f'{k:04d}.jpg'}")
                (tmp / lbl / ident.name / f"{k:04d}.jpg").write_bytes(buf.tobytes())
                if p < PREVIEW_PERSONS and len(thumbs.setdefault((p, lbl), [])) < PREVIEW_PER_LABEL:
                    thumbs[(p, lbl)].append(rgb)
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
    log.info("wrote %d images of %d persons to %s in %.2fs", summary["images"], persons, out, summary["seconds"])
    return summary


PREVIEW_PERSONS = 12
PREVIEW_PER_LABEL = 4


def _preview(thumbs: dict[tuple[int, str], list[np.ndarray]], size: int) -> np.ndarray:
    """A contact sheet: one row per person, its first open-eyed then closed-eyed images."""
    t = min(size, 96)
    gap = max(2, t // 16)
    rows = sorted({p for p, _ in thumbs})
    cols = [(lbl, i) for lbl in ("open", "closed") for i in range(PREVIEW_PER_LABEL)]
    sheet = np.full((len(rows) * (t + gap) + gap, len(cols) * (t + gap) + 3 * gap, 3), 255, np.uint8)
    for r, p in enumerate(rows):
        for c, (lbl, i) in enumerate(cols):
            imgs = thumbs.get((p, lbl), [])
            if i < len(imgs):
                y = gap + r * (t + gap)
                x = gap + c * (t + gap) + (2 * gap if lbl == "closed" else 0)
                sheet[y : y + t, x : x + t] = cv2.resize(imgs[i], (t, t), interpolation=cv2.INTER_AREA)
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
        f"--persons {summary['persons']} --images_per_person {summary['images_per_person']} --size {summary['size']}",
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
    for i in idents:
        c = summary["per_person"][i.name]
        lines.append(
            f"{i.name:7s} {c['closed']:6d} {c['open']:4d}  {str(i.skin):15s} {i.hair_style:6s} {str(i.hair):18s} "
            f"({i.eye_dx:.3f}, {i.eye_w:.3f}, {i.eye_h:.3f})"
            + (" beard" if i.beard else "")
            + (" glasses" if i.glasses else "")
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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("data/sample"), help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    p.add_argument("--persons", type=int, default=10, help="number of synthetic persons")
    p.add_argument("--images_per_person", type=int, default=40, help="images per person (half open, half closed)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
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
