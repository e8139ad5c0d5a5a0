"""Cartoon faces of synthetic persons for the sample dataset: identities and drawing.

A person (`Identity`) has fixed traits; `render` draws one image of them with eyes open or closed,
varying everything that is not identity (pose, scale, lighting, background, clothes, mouth, gaze,
noise, blur). Drawing is numpy + OpenCV at twice the output size, then area-downsampled (antialiased
shapes); every random draw comes from the generator passed in, so the same generator state gives the
same pixels. No TensorFlow.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

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


@dataclass(frozen=True)
class _Frame:
    """Where the face sits on the supersampled canvas of side `n`: centre and radii."""

    n: int
    cx: float
    cy: float
    rx: float
    ry: float


class _Layer:
    """The person's RGB layer and its alpha mask; the filled shapes of the silhouette go into both."""

    def __init__(self, n: int):
        self.img = np.zeros((n, n, 3), np.float32)
        self.mask = np.zeros((n, n), np.float32)

    def ellipse(self, centre, axes, colour, start: int = 0, end: int = 360) -> None:
        for target, value in ((self.img, colour), (self.mask, 1.0)):
            cv2.ellipse(target, centre, axes, 0, start, end, value, -1, cv2.LINE_AA)

    def circle(self, centre, radius: int, colour) -> None:
        for target, value in ((self.img, colour), (self.mask, 1.0)):
            cv2.circle(target, centre, radius, value, -1, cv2.LINE_AA)

    def rectangle(self, corner0, corner1, colour) -> None:
        for target, value in ((self.img, colour), (self.mask, 1.0)):
            cv2.rectangle(target, corner0, corner1, value, -1)


def _draw_head(layer: _Layer, ident: Identity, frame: _Frame, rng: np.random.Generator, hair) -> None:
    """Shirt, neck, hair behind the head, ears, the face, hair on top and beard."""
    n, cx, cy, rx, ry = frame.n, frame.cx, frame.cy, frame.rx, frame.ry
    skin = ident.skin
    # Shoulders / shirt (colour changes every image: clothes are not identity).
    shirt = tuple(int(v) for v in rng.integers(0, 256, 3))
    layer.ellipse((int(cx), int(n * 1.08)), (int(n * 0.42), int(n * 0.25)), shirt)
    layer.rectangle((int(cx - rx * 0.4), int(cy + ry * 0.6)), (int(cx + rx * 0.4), int(n * 0.9)), _col(skin, 0.85))
    if ident.hair_style == "long":
        layer.ellipse((int(cx), int(cy + ry * 0.25)), (int(rx * 1.25), int(ry * 1.2)), hair)
    if ident.hair_style == "bun":
        layer.circle((int(cx), int(cy - ry * 1.1)), int(rx * 0.45), hair)
    if ident.ears:
        for side in (-1, 1):
            layer.ellipse(
                (int(cx + side * rx * 0.98), int(cy + ry * 0.05)), (int(rx * 0.14), int(ry * 0.2)), _col(skin, 0.93)
            )
    layer.ellipse((int(cx), int(cy)), (int(rx), int(ry)), skin)
    # Hair on top.
    img = layer.img
    if ident.hair_style in ("short", "long", "fringe", "bun"):
        layer.ellipse((int(cx), int(cy - ry * 0.35)), (int(rx * 1.04), int(ry * 0.72)), hair, 180, 360)
        if ident.hair_style == "fringe":
            cv2.rectangle(
                img, (int(cx - rx * 0.85), int(cy - ry * 0.6)), (int(cx + rx * 0.85), int(cy - ry * 0.38)), hair, -1
            )
    elif ident.hair_style == "curly":
        curls = np.random.default_rng([ord(ch) for ch in ident.name])  # the same curls in every image
        for k in range(16):
            t = math.pi * (1.0 + k / 15)
            px, py = cx + rx * 0.95 * math.cos(t), cy - ry * 0.25 + ry * 0.85 * math.sin(t)
            layer.circle((int(px), int(py)), int(rx * curls.uniform(0.18, 0.26)), hair)
    if ident.beard:
        cv2.ellipse(
            img, (int(cx), int(cy + ry * 0.45)), (int(rx * 0.9), int(ry * 0.55)), 0, 0, 180, hair, -1, cv2.LINE_AA
        )


def _draw_eyes(img, ident: Identity, frame: _Frame, rng: np.random.Generator, yaw: float, is_open: bool) -> None:
    """Both eyes (the label), brows, and glasses."""
    n, cx, cy = frame.n, frame.cx, frame.cy
    ey = cy + ident.eye_y * n
    gaze = (float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1)))
    openness = float(rng.uniform(0.65, 1.0))
    for side in (-1, 1):
        ex = cx + yaw + side * ident.eye_dx * n
        _eye(img, ident, ex, ey, n, is_open, rng, gaze, openness, mirror=side > 0)
        # Brows.
        brow_w = ident.eye_w * n * 1.1
        brow_y = ey - ident.eye_h * n - ident.brow_gap * n
        tilt = ident.brow_tilt * side
        p0 = (int(ex - brow_w), int(brow_y + tilt * brow_w * 0.5 * side + rng.uniform(-0.005, 0.005) * n))
        p1 = (int(ex + brow_w), int(brow_y - tilt * brow_w * 0.5 * side))
        cv2.line(img, p0, p1, _col(ident.hair, 0.8), max(2, int(ident.brow_thick * n)), cv2.LINE_AA)
    if ident.glasses:
        for side in (-1, 1):
            ex = cx + yaw + side * ident.eye_dx * n
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


def _draw_nose(img, ident: Identity, frame: _Frame, yaw: float) -> None:
    n, rx, ry = frame.n, frame.rx, frame.ry
    nx, ny = frame.cx + yaw * 1.3, frame.cy + ry * 0.18
    colour = _col(ident.skin, 0.72)
    lw = max(2, int(0.009 * n))
    if ident.nose == "line":
        cv2.line(img, (int(nx), int(ny - ry * 0.2)), (int(nx + rx * 0.06), int(ny)), colour, lw, cv2.LINE_AA)
    elif ident.nose == "dot":
        cv2.circle(img, (int(nx), int(ny)), int(rx * 0.07), colour, -1, cv2.LINE_AA)
    elif ident.nose == "triangle":
        pts = np.array([[nx, ny - ry * 0.18], [nx - rx * 0.1, ny + ry * 0.02], [nx + rx * 0.1, ny + ry * 0.02]])
        cv2.polylines(img, [pts.astype(np.int32)], True, colour, lw, cv2.LINE_AA)
    else:
        cv2.ellipse(img, (int(nx), int(ny)), (int(rx * 0.1), int(ry * 0.06)), 0, 0, 180, colour, lw, cv2.LINE_AA)


def _draw_mouth(img, ident: Identity, frame: _Frame, rng: np.random.Generator, yaw: float) -> None:
    """Closed (a curve) or open (dark with teeth): independent of the label."""
    n = frame.n
    mx, my = frame.cx + yaw * 1.2, frame.cy + frame.ry * 0.5
    lw = max(2, int(0.009 * n))
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


def _draw_blush(img, frame: _Frame, rng: np.random.Generator, yaw: float) -> None:
    """Cheek blush sometimes (red-ish, unrelated to the label)."""
    if rng.random() < 0.3:
        blush = img.copy()
        for side in (-1, 1):
            cv2.circle(
                blush,
                (int(frame.cx + yaw + side * frame.rx * 0.6), int(frame.cy + frame.ry * 0.25)),
                int(frame.rx * 0.16),
                (230, 120, 120),
                -1,
                cv2.LINE_AA,
            )
        img[:] = img * 0.7 + blush * 0.3


def _face_layer(ident: Identity, rng: np.random.Generator, n: int, is_open: bool) -> tuple[np.ndarray, np.ndarray]:
    """The person drawn upright and centred: (RGB float image, alpha mask in [0, 1]). The order of the
    random draws is part of the output: same generator state, same pixels."""
    frame = _Frame(n=n, cx=n * 0.5, cy=n * 0.47, rx=ident.face_rx * n, ry=ident.face_ry * n)
    layer = _Layer(n)
    hair = _col(ident.hair, rng.uniform(0.9, 1.1))
    _draw_head(layer, ident, frame, rng, hair)
    yaw = rng.uniform(-0.035, 0.035) * n  # features slide sideways a little
    _draw_eyes(layer.img, ident, frame, rng, yaw, is_open)
    _draw_nose(layer.img, ident, frame, yaw)
    _draw_mouth(layer.img, ident, frame, rng, yaw)
    _draw_blush(layer.img, frame, rng, yaw)
    return layer.img, layer.mask


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
