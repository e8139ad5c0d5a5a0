"""Region of interest and resize: the pixels the model sees, shared by the daemon, `device collect`,
`device check` and the training side's `crop-faces` command, so training and device crop alike.

Pipeline for one frame (HxWx3 uint8 RGB)::

    Cropper(config)(rgb) ─► CropResult.image (a square region, usually a view of the frame)
                         ─► resize_to_input(image, (h, w))  (cv2 INTER_LINEAR == tf bilinear, antialias=False)

Modes (``CropConfig.mode``):

- ``full``: the whole frame made square. ``square="center_crop"`` (default) keeps the centred
  min(H, W) square: the subject keeps its aspect ratio, as in the square face crops the model is
  trained on (`crop-faces` writes square crops; decoding a square file and resizing it is exactly
  what training does). ``letterbox`` pads to square with ``pad_value``; ``stretch`` resizes the
  whole frame, distorting it (what training does with *non-square* files, see the parity test).
- ``center``: a centred square of ``fraction`` × min(H, W) (a subject at a fixed spot, e.g. a door).
- ``face``: the largest detected face, grown by ``margin`` (a fraction of the box side, on each
  side), made square around the box centre, shifted (and if needed shrunk) to lie inside the frame.
  With no face: ``on_no_face="skip"`` returns no image (the frame is not classified / not saved),
  ``"full"`` falls back to the ``full`` crop.

Face detectors (both from the OpenCV we pin, opencv-python-headless 4.13):

- ``haar`` (default): ``cv2.CascadeClassifier`` with ``haarcascade_frontalface_default.xml``,
  which ships inside the wheel (``cv2.data.haarcascades``) — works offline, needs no model file,
  fast enough on a Pi 4/5 on a ~480 px wide grey copy of the frame, good for the frontal faces a
  face-crop classifier is about. Weaker on profiles, strong tilt and low light.
- ``yunet``: ``cv2.FaceDetectorYN`` (a small CNN, much better on hard poses) needs the ONNX file
  ``face_detection_yunet_2023mar.onnx`` (~230 KB, from opencv_zoo). It is not in the wheel and is
  never downloaded by this code: set ``yunet_model`` to its path.

The detector is built once in `Cropper.__init__`, never per frame.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Protocol

import cv2
import numpy as np

from device.errors import FaceedgeError
from device.files import atomic_write_bytes
from device.validation import Meta, Strict

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # (x, y, w, h) in frame pixels, OpenCV's convention
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
YUNET_FILE = "face_detection_yunet_2023mar.onnx"

# cv2.imread/imdecode apply the EXIF orientation tag by default; tf.io.decode_image does not.
# Ignoring it keeps device-side loading pixel-identical to the training pipeline (parity test).
_IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


# --------------------------------------------------------------------------- loading and resizing


def load_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (grey → 3 channels, alpha dropped, EXIF ignored).

    Decodes the same way training does (`tf.io.decode_image(channels=3)`): alpha is dropped, not
    composited, and the EXIF orientation tag is ignored. Raises FaceedgeError naming the file.
    """
    p = Path(path)
    try:
        data = np.fromfile(p, dtype=np.uint8)  # imdecode: works for any path and tells missing from bad
    except FileNotFoundError:
        raise FaceedgeError(f"{p}: image file not found") from None
    except OSError as e:
        raise FaceedgeError(f"{p}: cannot read image file ({e.strerror or e})") from None
    if data.size == 0:
        raise FaceedgeError(f"{p}: image file is empty (0 bytes)")
    bgr = cv2.imdecode(data, _IMREAD_FLAGS)
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise FaceedgeError(f"{p}: not an image OpenCV can decode")
    if bgr.dtype != np.uint8:  # IMREAD_COLOR already converts 16-bit to 8-bit; belt and braces
        bgr = (bgr >> 8).astype(np.uint8) if bgr.dtype == np.uint16 else bgr.astype(np.uint8)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_image_rgb(rgb: np.ndarray, ext: str, *, jpeg_quality: int = 95) -> bytes | None:
    """HxWx3 uint8 RGB → the bytes of an `ext` file (".png", ".jpg", ...; `jpeg_quality` for JPEG);
    None when OpenCV cannot encode it."""
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR), params)
    return buf.tobytes() if ok else None


def save_image_rgb(path: str | os.PathLike, rgb: np.ndarray, *, jpeg_quality: int = 95) -> None:
    """Encode by extension (.png lossless, .jpg/.jpeg with `jpeg_quality`) and write atomically."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in (".jpg", ".jpeg", ".png", ".bmp"):
        raise FaceedgeError(f"{p}: unsupported image extension {ext!r} (use .png, .jpg or .bmp)")
    data = encode_image_rgb(rgb, ext, jpeg_quality=jpeg_quality)
    if data is None:
        raise FaceedgeError(f"{p}: OpenCV could not encode the image")
    atomic_write_bytes(p, data)


def resize_to_input(rgb: np.ndarray, size_hw: Sequence[int], out: np.ndarray | None = None) -> np.ndarray:
    """Resize HxWx3 uint8 to `size_hw` = (h, w) with cv2.INTER_LINEAR.

    INTER_LINEAR uses half-pixel centres and no antialiasing, like training's
    `tf.image.resize(method="bilinear", antialias=False)`; the only difference is that OpenCV
    rounds to uint8 (≤ 0.5 grey level, see tests/test_train_preprocess_parity.py). Pass a preallocated
    `out` (h, w, 3) uint8 buffer to resize without allocating in the per-frame loop. A frame that
    already has the size is returned as is (or copied into `out`).
    """
    h, w = int(size_hw[0]), int(size_hw[1])
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 image, got {rgb.shape} {rgb.dtype}")
    if out is not None and (out.shape != (h, w, 3) or out.dtype != np.uint8):
        raise ValueError(f"out buffer is {out.shape} {out.dtype}, expected {(h, w, 3)} uint8")
    if rgb.shape[:2] == (h, w):
        if out is None:
            return rgb
        np.copyto(out, rgb)
        return out
    if out is None:
        return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    cv2.resize(rgb, (w, h), dst=out, interpolation=cv2.INTER_LINEAR)
    return out


# --------------------------------------------------------------------------- config


class CropConfig(Strict):
    """How a frame becomes the square region the model sees (the `crop:` block of a config)."""

    mode: Literal["full", "center", "face"] = "full"
    # full: how a non-square frame is made square (see the module docstring for why center_crop).
    square: Literal["center_crop", "letterbox", "stretch"] = "center_crop"
    pad_value: Annotated[int, Meta(ge=0, le=255)] = 0  # letterbox padding grey level
    # center: side of the centred square as a fraction of min(H, W).
    fraction: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.6
    # face:
    detector: Literal["haar", "yunet"] = "haar"
    yunet_model: str | None = None  # path to face_detection_yunet_2023mar.onnx (detector: yunet)
    margin: Annotated[float, Meta(ge=0.0, le=2.0)] = 0.2  # added on each side, as a fraction of the face box side
    min_size: Annotated[int, Meta(ge=8)] = 40  # smallest face side in frame pixels
    score_threshold: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.7  # yunet confidence
    min_neighbors: Annotated[int, Meta(ge=1)] = 5  # haar: higher = fewer false faces
    scale_factor: Annotated[float, Meta(gt=1.0, le=2.0)] = 1.1  # haar pyramid step
    # frames wider than this are downscaled for detection only (speed); faces narrower than ~12 % of
    # the frame width are then missed by Haar (measured on a 1400 px frame: found at 480, not at 320)
    detect_width: Annotated[int, Meta(ge=64)] = 480
    on_no_face: Literal["skip", "full"] = "skip"

    def check(self) -> None:
        if self.mode == "face" and self.detector == "yunet" and not self.yunet_model:
            raise ValueError(
                f"crop.yunet_model: detector 'yunet' needs the path to {YUNET_FILE} "
                "(not shipped with OpenCV; or use detector: haar)"
            )


# --------------------------------------------------------------------------- detectors


class Detector(Protocol):
    """The one call the cropper needs from a face detector."""

    def detect(self, rgb: np.ndarray) -> list[Box]:
        """Face boxes (x, y, w, h) in the frame's pixels, any order."""
        ...


class _Downscaled:
    """Run detection on a copy no wider than `detect_width` and map boxes back."""

    def __init__(self, detect_width: int) -> None:
        self.detect_width = detect_width

    def _small(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        h, w = rgb.shape[:2]
        if w <= self.detect_width:
            return rgb, 1.0
        s = self.detect_width / w
        return cv2.resize(rgb, (self.detect_width, max(1, round(h * s))), interpolation=cv2.INTER_AREA), s


class HaarDetector(_Downscaled):
    """cv2.CascadeClassifier with the frontal-face cascade from the OpenCV wheel."""

    def __init__(self, cfg: CropConfig, cascade_path: str | os.PathLike | None = None) -> None:
        super().__init__(cfg.detect_width)
        path = Path(cascade_path) if cascade_path else Path(cv2.data.haarcascades) / HAAR_CASCADE
        if not path.is_file():
            raise FaceedgeError(f"{path}: Haar cascade file not found (is opencv-python-headless 4.x installed?)")
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise FaceedgeError(f"{path}: OpenCV could not load this Haar cascade")
        self.min_size = cfg.min_size
        self.min_neighbors = cfg.min_neighbors
        self.scale_factor = cfg.scale_factor

    def detect(self, rgb: np.ndarray) -> list[Box]:
        small, s = self._small(rgb)
        grey = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        m = max(8, int(self.min_size * s))
        found = self.cascade.detectMultiScale(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(m, m)
        )
        return [_unscale(b, s) for b in (found if len(found) else [])]


class YuNetDetector(_Downscaled):
    """cv2.FaceDetectorYN (ONNX file supplied by the user). detect() → (retval, faces Nx15 | None);
    columns 0-3 are x, y, w, h, 4-13 five landmarks, 14 the score."""

    def __init__(self, cfg: CropConfig) -> None:
        super().__init__(cfg.detect_width)
        path = Path(cfg.yunet_model or "")
        if not path.is_file():
            raise FaceedgeError(
                f"crop.yunet_model: {path}: YuNet model file not found "
                f"(download {YUNET_FILE} from opencv_zoo, or use detector: haar)"
            )
        try:
            self.net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), cfg.score_threshold, 0.3, 50)
        except cv2.error as e:
            raise FaceedgeError(f"crop.yunet_model: {path}: OpenCV cannot load it ({str(e).strip()[:120]})") from None
        self.min_size = cfg.min_size
        self._size: tuple[int, int] | None = None

    def detect(self, rgb: np.ndarray) -> list[Box]:
        small, s = self._small(rgb)
        h, w = small.shape[:2]
        if self._size != (w, h):  # only when the frame size changes, not per frame
            self.net.setInputSize((w, h))
            self._size = (w, h)
        _, faces = self.net.detect(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        if faces is None:
            return []
        boxes = [_unscale(tuple(int(round(v)) for v in f[:4]), s) for f in faces]
        return [b for b in boxes if min(b[2], b[3]) >= self.min_size]


def _unscale(b, s: float) -> Box:
    x, y, w, h = (int(v) for v in b)
    if s == 1.0:
        return x, y, w, h
    return round(x / s), round(y / s), round(w / s), round(h / s)


def build_detector(cfg: CropConfig) -> Detector:
    return YuNetDetector(cfg) if cfg.detector == "yunet" else HaarDetector(cfg)


# --------------------------------------------------------------------------- geometry (pure)


def center_square(h: int, w: int, fraction: float = 1.0) -> Box:
    """The centred square of side fraction × min(h, w)."""
    side = max(1, int(round(min(h, w) * fraction)))
    return (w - side) // 2, (h - side) // 2, side, side


def largest(boxes: Sequence[Box]) -> Box:
    return max(boxes, key=lambda b: (b[2] * b[3], -b[1], -b[0]))


def face_square(box: Box, frame_hw: tuple[int, int], margin: float) -> Box:
    """Grow `box` by `margin` × its longer side on each side, make it square around its centre,
    and move (shrinking only if larger than the frame) so that it lies inside the frame."""
    fh, fw = frame_hw
    x, y, w, h = box
    side = int(round(max(w, h) * (1.0 + 2.0 * margin)))
    side = max(1, min(side, fh, fw))
    cx, cy = x + w / 2.0, y + h / 2.0
    x0 = int(round(cx - side / 2.0))
    y0 = int(round(cy - side / 2.0))
    x0 = min(max(x0, 0), fw - side)
    y0 = min(max(y0, 0), fh - side)
    return x0, y0, side, side


# --------------------------------------------------------------------------- the cropper


@dataclass
class CropResult:
    image: np.ndarray | None  # the region (a view of the frame when possible); None = skip this frame
    box: Box | None  # (x, y, w, h) of the region in the frame; None when skipped
    faces: int  # faces found (face mode; 0 otherwise)


class Cropper:
    """Built once from a CropConfig (the face detector is loaded here, never per frame)."""

    def __init__(self, cfg: CropConfig | None = None, *, detector: Detector | None = None) -> None:
        self.cfg = cfg or CropConfig()
        self.detector: Detector | None = None
        if self.cfg.mode == "face":
            self.detector = detector if detector is not None else build_detector(self.cfg)

    def __call__(self, rgb: np.ndarray) -> CropResult:
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB frame, got shape {rgb.shape}")
        c = self.cfg
        if c.mode == "center":
            return _cut(rgb, center_square(*rgb.shape[:2], c.fraction), 0)
        if c.mode == "face":
            boxes = self.detector.detect(rgb)  # type: ignore[union-attr]
            if boxes:
                return _cut(rgb, face_square(largest(boxes), rgb.shape[:2], c.margin), len(boxes))
            if c.on_no_face == "skip":
                return CropResult(None, None, 0)
        return self._full(rgb)

    def _full(self, rgb: np.ndarray) -> CropResult:
        h, w = rgb.shape[:2]
        sq = self.cfg.square
        if sq == "stretch" or h == w:
            return CropResult(rgb, (0, 0, w, h), 0)
        if sq == "center_crop":
            return _cut(rgb, center_square(h, w), 0)
        side = max(h, w)  # letterbox
        top, left = (side - h) // 2, (side - w) // 2
        v = self.cfg.pad_value
        padded = cv2.copyMakeBorder(
            rgb, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT, value=(v, v, v)
        )
        return CropResult(padded, (0, 0, w, h), 0)


def _cut(rgb: np.ndarray, box: Box, faces: int) -> CropResult:
    x, y, w, h = box
    return CropResult(rgb[y : y + h, x : x + w], box, faces)


# --------------------------------------------------------------------------- the model's input


@dataclass
class ModelInput:
    """A frame made into the model's input, and what it took."""

    pixels: np.ndarray | None  # (h, w, 3) uint8 RGB; None: nothing to classify in this frame
    box: Box | None  # the crop box in the frame, when it was cropped here (not in the capture thread)
    crop_ms: float
    resize_ms: float
    skipped: str | None = None  # why `pixels` is None: "no_roi" (face mode, no face) or "stale"


class Preparer:
    """Crop → resize: a frame made into the model's input, (h, w, 3) uint8 RGB of `size_hw`.

    The daemon's capture thread calls `prepare` on every frame it keeps (the FrameGrabber's hook), so
    that crop and resize overlap inference; it hands it BGR frames with ``bgr=True`` (OpenCV decodes
    BGR): the channels are then swapped on the small resized image, not the whole frame (resize
    treats channels independently, so resize-then-swap == swap-then-resize). The loop calls
    `frame_input`, which takes what this preparer made in the capture thread, and crops and resizes
    any other frame itself (face mode, which has no capture-thread hook; a frame prepared by the
    hook a reload replaced). `image_input` is the same for one RGB image (`device check`).
    """

    def __init__(self, cropper: Cropper, size_hw: Sequence[int]) -> None:
        self.cropper = cropper
        self.size = (int(size_hw[0]), int(size_hw[1]))
        self._scratch = np.empty(self.size + (3,), np.uint8)  # BGR frames: resized here, then swapped

    def prepare(
        self, image: np.ndarray, out: np.ndarray | None = None, *, bgr: bool = False
    ) -> tuple[np.ndarray | None, dict[str, float]]:
        """The capture thread's hook: (the model input, written into `out` when it fits, or None
        when the crop found nothing; {"crop": ms, "resize": ms}). Keeps no reference to `image`."""
        t0 = time.perf_counter()
        crop = self.cropper(image)  # a view: the crop geometry does not depend on the channel order
        t1 = time.perf_counter()
        if crop.image is None:
            return None, {}
        if out is None or out.shape != self.size + (3,):
            out = np.empty(self.size + (3,), np.uint8)
        if bgr:
            cv2.cvtColor(resize_to_input(crop.image, self.size, out=self._scratch), cv2.COLOR_BGR2RGB, dst=out)
        else:
            resize_to_input(crop.image, self.size, out=out)
        return out, {"crop": (t1 - t0) * 1000.0, "resize": (time.perf_counter() - t1) * 1000.0}

    def image_input(self, rgb: np.ndarray, out: np.ndarray | None = None) -> ModelInput:
        """One RGB image cropped and resized here (into `out` when given)."""
        t0 = time.perf_counter()
        crop = self.cropper(rgb)
        t1 = time.perf_counter()
        if crop.image is None:
            return ModelInput(None, None, (t1 - t0) * 1000.0, 0.0, "no_roi")
        pixels = resize_to_input(crop.image, self.size, out=out)
        return ModelInput(pixels, crop.box, (t1 - t0) * 1000.0, (time.perf_counter() - t1) * 1000.0)

    def frame_input(self, frame, out: np.ndarray | None = None) -> ModelInput:
        """The input of a captured frame (`device.sources.capture.Frame`): the one this preparer made
        in the capture thread, else cropped and resized here from the frame's image."""
        if frame.prepared is not None and frame.prepared_by is self:
            return ModelInput(frame.prepared, None, frame.prep_ms["crop"], frame.prep_ms["resize"])
        image = frame.image
        if image is None:  # prepared by the hook a reload replaced; its pixels already recycled
            return ModelInput(None, None, 0.0, 0.0, "stale")
        if frame.channel_order == "BGR":  # read natively for a hook a reload replaced: rare
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        return self.image_input(image, out)
