"""Frames through `cv2.VideoCapture`: a USB/V4L2 camera index, a video file, or an RTSP/HTTP URL.

- Live sources (camera, URL) ask for a 1-frame driver buffer (`CAP_PROP_BUFFERSIZE`), so a read
  returns the newest frame rather than one queued seconds ago; URLs get open/read timeouts so a
  dead stream raises instead of blocking the capture thread forever.
- A file is paced at its native frame rate by default (it then behaves like a camera, dropping
  frames the model cannot keep up with); `realtime: false` reads it as fast as it is consumed,
  every frame classified. `loop: true` restarts it at the end.
- OpenCV decodes to BGR; `read()` converts it to RGB, once, into a reused buffer. The daemon's
  capture thread uses `read_native()` instead (BGR, decoded straight into its recycled buffer)
  and swaps the channels on the resized model input: ~0.02 ms instead of a full-frame pass.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

import cv2
import numpy as np

from device.errors import FaceedgeError
from device.sources.base import FrameSource, Pacer, SourceConfig, SourceError, fit_out, register_source
from device.validation import Meta

log = logging.getLogger(__name__)

BACKENDS = {"any": cv2.CAP_ANY, "v4l2": cv2.CAP_V4L2, "ffmpeg": cv2.CAP_FFMPEG, "gstreamer": cv2.CAP_GSTREAMER}


class OpencvConfig(SourceConfig, tag="opencv"):
    device: Annotated[int | str, Meta(description="camera index, video file path, or rtsp:// / http:// URL")] = 0
    width: Annotated[int, Meta(gt=0, description="cameras: requested frame width")] | None = None
    height: Annotated[int, Meta(gt=0, description="cameras: requested frame height")] | None = None
    fps: Annotated[float, Meta(gt=0, description="cameras: requested frame rate")] | None = None
    fourcc: Annotated[str, Meta(min_length=4, max_length=4, description="cameras: e.g. MJPG")] | None = None
    realtime: Annotated[bool, Meta(description="files: pace at the file's frame rate; false = as fast as consumed")] = (
        True
    )
    loop: Annotated[bool, Meta(description="files: restart at the end")] = False
    backend: Literal["any", "v4l2", "ffmpeg", "gstreamer"] = "any"
    open_timeout_s: Annotated[float, Meta(gt=0, description="URLs: give up opening after this long")] = 10.0
    read_timeout_s: Annotated[float, Meta(gt=0, description="URLs: a read raises after this long without data")] = 5.0


def source_kind(device: int | str) -> str:
    if isinstance(device, int) or (isinstance(device, str) and device.strip().isdigit()):
        return "camera"
    if "://" in str(device):
        return "stream"
    return "file"


@register_source("opencv")
class OpencvSource(FrameSource):
    cfg: OpencvConfig

    def __init__(self, cfg: OpencvConfig) -> None:
        super().__init__(cfg)
        self.kind = source_kind(cfg.device)
        self.cap: cv2.VideoCapture | None = None
        self._bgr: np.ndarray | None = None
        self._pacer = Pacer(0)
        self.file_fps = 0.0
        self._index = -1  # video files: 0-based index of the frame the last read returned

    def open(self) -> None:
        c = self.cfg
        api = BACKENDS[c.backend]
        if self.kind == "camera":
            cap = cv2.VideoCapture(int(c.device), api)
        elif self.kind == "stream":
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                int(c.open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                int(c.read_timeout_s * 1000),
            ]
            cap = cv2.VideoCapture(str(c.device), api, params)
        else:
            path = Path(str(c.device)).expanduser()
            if not path.is_file():
                raise FaceedgeError(f"source.device {str(c.device)!r}: no such video file")
            cap = cv2.VideoCapture(str(path), api)
            if not cap.isOpened():
                raise FaceedgeError(f"source.device {str(c.device)!r}: OpenCV cannot decode this file")
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.describe()}: cannot open (busy, absent or unreachable)")
        if self.kind != "file":
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of stale ones
        if self.kind == "camera":
            if c.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*c.fourcc))
            if c.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, c.width)
            if c.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, c.height)
            if c.fps:
                cap.set(cv2.CAP_PROP_FPS, c.fps)
        if self.kind == "file":
            self.file_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            if c.realtime:
                self._pacer = Pacer(self.file_fps if 0 < self.file_fps < 1000 else 30.0)
        self.cap = cap
        self._index = -1
        log.debug(
            "opened %s (%dx%d)", self.describe(), cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
        )

    @property
    def live(self) -> bool:
        return self.kind != "file" or self.cfg.loop

    @property
    def paced(self) -> bool:
        return self.kind != "file" or self.cfg.realtime

    @property
    def channel_order(self) -> str:
        return "BGR"

    def _read_bgr(self, dst: np.ndarray | None) -> np.ndarray | None:
        """Decode the next frame as BGR, into `dst` when it has the frame's shape."""
        if self.cap is None:
            raise SourceError(f"{self.describe()}: read before open")
        self._pacer.wait()
        ok, bgr = self.cap.read(dst)
        if not ok and self.kind == "file" and self.cfg.loop:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._index = -1
            ok, bgr = self.cap.read(dst)
        if not ok:
            if self.kind == "file":
                return None
            raise SourceError(f"{self.describe()}: read failed (device gone or stream ended)")
        self._index += 1
        return bgr

    def position(self) -> tuple[str | None, int | None]:
        return (None, self._index) if self.kind == "file" and self._index >= 0 else (None, None)

    def read_native(self, out: np.ndarray | None = None, timeout: float | None = None) -> np.ndarray | None:
        return self._read_bgr(out)

    def read(self, out: np.ndarray | None = None, timeout: float | None = None) -> np.ndarray | None:
        bgr = self._read_bgr(self._bgr)
        if bgr is None:
            return None
        self._bgr = bgr  # decode into the same buffer next time
        out = fit_out(out, bgr.shape)
        cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out)
        return out

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None

    def describe(self) -> str:
        return f"opencv {self.kind} {self.cfg.device}"
