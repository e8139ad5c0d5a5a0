"""The Raspberry Pi camera through picamera2 (libcamera). Only on Raspberry Pi OS.

The part of the Picamera2 API used here, and nothing else (tests/fakes/picamera2.py mimics exactly
this part):

- ``Picamera2(camera_num)`` - acquires the camera; raises ``RuntimeError`` when another process
  holds it (libcamera: "Failed to acquire camera: Device or resource busy").
- ``create_video_configuration(main={"size": (w, h), "format": F}, controls={"FrameRate": fps},
  buffer_count=n)`` then ``configure(config)``, ``start()``.
- ``capture_array("main", wait=seconds)`` - blocks until the next frame; with a numeric ``wait``
  it raises ``TimeoutError`` when none came in time (picamera2 ``dispatch_functions``: "a number -
  wait for this number of seconds before raising a 'timed out' error").
- ``stop()``, ``close()``.

Channel order (Picamera2 manual, "Image formats"): the format names are libcamera/DRM fourcc
names, which list components from the most significant byte of a little-endian word, so the
bytes in memory - and in the numpy array - come in the *reverse* order:

========== ======================= ==================
format     numpy array, per pixel  conversion to RGB
========== ======================= ==================
BGR888     [R, G, B]               none (the default here, on purpose)
RGB888     [B, G, R]               BGR -> RGB (cvtColor)
XBGR8888   [R, G, B, 255]          drop the 4th byte
XRGB8888   [B, G, R, 255]          BGRA -> RGB
========== ======================= ==================

That is why OpenCV examples that ask for "RGB888" can hand the array straight to ``cv2.imshow``
(which wants BGR). We request ``BGR888`` so the array is already RGB and the only per-frame copy is
the one picamera2 makes when it turns the DMA buffer into an array.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

import cv2
import numpy as np

from device.errors import FaceedgeError
from device.sources.base import FrameSource, SourceConfig, SourceError, fit_out, register_source
from device.validation import Meta, field

log = logging.getLogger(__name__)

# format -> (channels in the array, cv2 conversion code to RGB or None when already RGB)
FORMATS: dict[str, tuple[int, int | None]] = {
    "BGR888": (3, None),
    "RGB888": (3, cv2.COLOR_BGR2RGB),
    "XBGR8888": (4, cv2.COLOR_RGBA2RGB),
    "XRGB8888": (4, cv2.COLOR_BGRA2RGB),
}


class Picamera2Config(SourceConfig, tag="picamera2"):
    camera_num: Annotated[int, Meta(ge=0)] = 0
    width: Annotated[int, Meta(ge=16, description="size of the main stream; pick it for the crop you need")] = 640
    height: Annotated[int, Meta(ge=16)] = 480
    fps: Annotated[float, Meta(gt=0)] = 30.0
    format: Annotated[
        Literal["BGR888", "RGB888", "XBGR8888", "XRGB8888"],
        Meta(description="BGR888 arrives as RGB in numpy (see device/sources/picam.py)"),
    ] = "BGR888"
    buffer_count: Annotated[int, Meta(ge=2, le=16)] = 4
    controls: Annotated[dict[str, Any], Meta(description="extra libcamera controls")] = field(default_factory=dict)


def start_camera(cam, c: Picamera2Config, what: str, after_start=None) -> tuple[int, int]:
    """Configure `cam` for video (`c`'s size, format, frame rate, controls, buffers), start it, run
    `after_start` if given, and return the size configure() chose (it may align it). On failure the
    camera is closed and the error is a SourceError naming `what`."""
    try:
        config = cam.create_video_configuration(
            main={"size": (c.width, c.height), "format": c.format},
            controls={"FrameRate": c.fps, **c.controls},
            buffer_count=c.buffer_count,
        )
        cam.configure(config)
        size = tuple(config["main"]["size"])
        cam.start()
        if after_start is not None:
            after_start()
    except Exception as e:  # noqa: BLE001 - libcamera raises RuntimeError/ValueError variously
        cam.close()
        raise SourceError(f"{what}: cannot configure/start: {e}") from None
    return size


@register_source("picamera2")
class Picamera2Source(FrameSource):
    cfg: Picamera2Config

    def __init__(self, cfg: Picamera2Config) -> None:
        super().__init__(cfg)
        self.cam: Any = None
        self.size: tuple[int, int] = (cfg.width, cfg.height)

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as e:
            raise FaceedgeError(
                f"source.type 'picamera2': picamera2 is not importable ({e}); on Raspberry Pi OS "
                "`sudo apt install python3-picamera2` and create the venv with --system-site-packages"
            ) from None
        c = self.cfg
        try:
            cam = Picamera2(c.camera_num)
        except (RuntimeError, OSError, IndexError) as e:
            # busy (another process holds it) or not detected: both may clear up, so retryable
            raise SourceError(f"picamera2 camera {c.camera_num}: {e}") from None
        self.size = start_camera(cam, c, f"picamera2 camera {c.camera_num}")
        self.cam = cam

    def _capture(self, timeout: float | None) -> np.ndarray:
        if self.cam is None:
            raise SourceError("picamera2: read before open")
        # A numeric `wait` raises TimeoutError after that long (recent picamera2); older releases
        # treat it as "wait forever", which the daemon's stall detection and the watchdog cover.
        arr = self.cam.capture_array("main", wait=timeout if timeout else True)
        channels = FORMATS[self.cfg.format][0]
        if arr.ndim != 3 or arr.shape[2] != channels:
            raise SourceError(f"picamera2: expected {channels}-channel {self.cfg.format} frames, got {arr.shape}")
        return arr

    @property
    def channel_order(self) -> str:
        """BGR for format RGB888 (its arrays hold [B, G, R]): offered as is by `read_native`, the
        daemon swaps the channels after resize. RGB for the others."""
        return "BGR" if self.cfg.format == "RGB888" else "RGB"

    def read_native(self, out: np.ndarray | None = None, timeout: float | None = None) -> np.ndarray | None:
        if self.channel_order == "BGR":
            return self._capture(timeout)  # already a fresh copy made by picamera2
        return self.read(out, timeout)

    def read(self, out: np.ndarray | None = None, timeout: float | None = None) -> np.ndarray | None:
        arr = self._capture(timeout)
        code = FORMATS[self.cfg.format][1]
        if code is None:
            return arr  # already RGB, and already a fresh copy made by picamera2
        out = fit_out(out, arr.shape[:2] + (3,))
        cv2.cvtColor(arr, code, dst=out)
        return out

    def close(self) -> None:
        cam, self.cam = self.cam, None
        if cam is None:
            return
        try:
            cam.stop()
        finally:
            cam.close()

    def describe(self) -> str:
        c = self.cfg
        return f"picamera2 camera {c.camera_num} {c.width}x{c.height} {c.format} @ {c.fps:g} fps"
