"""The one interface every frame source implements, and the registry keyed by config `type`.

A source delivers frames as HxWx3 uint8 **RGB** arrays from `read()`: byte-order conversion
(OpenCV's BGR, picamera2's BGR-ordered "RGB888") happens once, inside the source, so nothing
downstream ever guesses the channel order. A source whose device produces another order also
declares it (`channel_order`) and offers the frame as produced (`read_native`): the daemon's
capture thread then swaps the channels after crop + resize, on the model's 224×224 input instead
of the whole frame (`cv2.resize` treats channels independently, so the pixels are identical). What
reaches the model, and any crop an output publishes, is RGB either way.

Errors a source may raise, and what the capture thread does with them:

- `SourceError` (and OSError/RuntimeError from camera libraries): the device is busy, gone or
  failed a read. Retryable: the capture thread closes it and reopens with capped backoff.
- `TimeoutError` from `read`: no frame within the timeout; the capture thread counts the silence
  and reopens once it lasts `stall_s`.
- `FaceedgeError` (not a SourceError): a configuration mistake (no such video file, picamera2 not
  installed). Not retryable: the daemon stops with that one-line error.
"""

from __future__ import annotations

import abc
import logging
import time
from typing import ClassVar

import numpy as np

from device.errors import FaceedgeError
from device.registry import Registry
from device.validation import Strict

log = logging.getLogger(__name__)


class SourceError(FaceedgeError):
    """A retryable source failure (busy, disconnected, read failed)."""


class SourceConfig(Strict, tag_field="type"):
    """Base of every source's config model; each subclass names its `type` (``tag="opencv"``):
    the ``type:`` key of the config picks the subclass."""

    @property
    def type(self) -> str:
        return self.__struct_config__.tag


class FrameSource(abc.ABC):
    """Open once, read many, close. Use as a context manager."""

    type: ClassVar[str] = ""

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg

    # -- lifecycle -------------------------------------------------------------------------
    @abc.abstractmethod
    def open(self) -> None:
        """Acquire the device/file. Raise SourceError (retryable) or FaceedgeError (fatal)."""

    @abc.abstractmethod
    def read(self, out: np.ndarray | None = None, timeout: float | None = None) -> np.ndarray | None:
        """Block until the next frame and return it as HxWx3 uint8 RGB.

        When `out` has the frame's shape the frame is written into it (no allocation) and `out`
        is returned; otherwise a new array is returned. Returns None at the end of a finite
        stream (a video file or an image folder without `loop`). Raises TimeoutError when no
        frame came within `timeout` seconds, SourceError when the device failed.
        """

    def read_native(self, out: np.ndarray | None = None, timeout: float | None = None) -> np.ndarray | None:
        """`read()` without the conversion to RGB: the frame in `channel_order`. Same buffer,
        end-of-stream and error rules as `read`. Default: `read()` (sources that produce RGB)."""
        return self.read(out, timeout)

    @property
    def channel_order(self) -> str:
        """Channel order of what `read_native` returns: "RGB" (the default) or "BGR"."""
        return "RGB"

    def sensor_output(self) -> np.ndarray | None:
        """A camera that runs the model itself (the AI Camera, device/sources/imx500.py): the output
        tensor of the frame the last read returned, None when that frame had none. Others: None."""
        return None

    def position(self) -> tuple[str | None, int | None]:
        """Where the frame the last read returned comes from, for the results: (file name, 0-based
        frame index). Image folders give both, video files the index; cameras and streams (None, None)."""
        return None, None

    def close(self) -> None:
        """Release the device. Idempotent."""

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- properties the capture thread uses -----------------------------------------------
    @property
    def live(self) -> bool:
        """True for cameras and network streams: an end of stream is a fault to recover from."""
        return True

    @property
    def paced(self) -> bool:
        """True when the source produces frames at its own rate (cameras, realtime files).

        An unpaced source (a folder of images, a file read with `realtime: false`) produces a
        frame whenever asked: the capture thread then reads one frame ahead of the consumer
        instead of dropping frames.
        """
        return True

    def describe(self) -> str:
        return self.type


class Pacer:
    """Sleeps so that successive frames leave at `fps` (0 = no pacing). No drift accumulates,
    and a consumer that fell behind does not cause a burst of catch-up frames."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps if fps and fps > 0 else 0.0
        self._next = 0.0

    def wait(self) -> None:
        if not self.period:
            return
        now = time.monotonic()
        if not self._next or now - self._next > self.period:
            self._next = now  # first frame, or the reader fell behind: restart the schedule
        elif self._next > now:
            time.sleep(self._next - now)
        self._next += self.period


def fit_out(out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """`out` when it can hold a frame of `shape`, else a new uint8 array."""
    if out is not None and out.shape == shape and out.dtype == np.uint8 and out.flags.c_contiguous:
        return out
    return np.empty(shape, np.uint8)


SOURCE_TYPES: Registry[type[FrameSource]] = Registry("source.type")
register_source = SOURCE_TYPES.register  # class decorator: a FrameSource under config `type: name`


def build_source(cfg: SourceConfig) -> FrameSource:
    return SOURCE_TYPES.get(cfg.type)(cfg)
