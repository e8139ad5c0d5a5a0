"""The live view: one small HTML page on the HTTP output, for the daemon and for `device collect`.

    GET /             the page (device/assets/live.html: plain HTML + a few lines of script, no build
                      step, no framework); it polls /view.json and, with images on, /frame.jpg
    GET /view.json    what the page shows: health, smoothed label and score, fps, frame id
                      (+ `collect`: label, person, saved, counts per label, when `device collect` serves it)
    GET /frame.jpg    the latest frame, downscaled, with the crop box drawn       (expose_images only)
    GET /stream.mjpg  the same frames as an MJPEG stream (multipart/x-mixed-replace) (expose_images only)

Frames reach the HTTP output through `Output.publish_frame(rgb, box)`. `FramePreview` (the daemon's
side) copies at most PREVIEW_FPS frames a second, downscaled to PREVIEW_WIDTH, so the live view costs
the classification loop one small resize a few times a second and nothing when no frame is due. The
box is drawn when a frame is first asked for as JPEG, not per frame. The token rules of the HTTP
output apply to every path here: off loopback, every request needs the bearer token (a browser on
another machine reaches the page through `ssh -L 8088:127.0.0.1:8088 pi@host`, see docs/live-view.md).

An MJPEG stream holds one of the HTTP output's worker threads while it runs, so at most MAX_STREAMS
run at once (another gets 503) and each ends after STREAM_MAX_S (a browser reconnects by itself).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from device.outputs.http import HttpOutput, _Handler

log = logging.getLogger(__name__)

PAGE_FILE = Path(__file__).resolve().parent / "assets" / "live.html"
PREVIEW_FPS = 5.0  # frames a second copied for the live view, at most
PREVIEW_WIDTH = 480  # pixels; larger frames are downscaled (INTER_AREA)
JPEG_QUALITY = 80
BOX_RGB = (255, 176, 0)  # the crop box's colour (amber); the frames are RGB
MAX_STREAMS = 2
STREAM_MAX_S = 300.0
BOUNDARY = "faceedge-frame"

_page_cache: bytes | None = None


def page() -> bytes:
    """The page's bytes (read once)."""
    global _page_cache
    if _page_cache is None:
        _page_cache = PAGE_FILE.read_bytes()
    return _page_cache


# ----------------------------------------------------------------------------- the daemon's side


def downscale(rgb: np.ndarray, box, max_width: int = PREVIEW_WIDTH) -> tuple[np.ndarray, tuple | None]:
    """A copy of `rgb` no wider than `max_width`, and `box` (x, y, w, h) scaled with it."""
    import cv2

    h, w = rgb.shape[:2]
    if w <= max_width:
        return rgb.copy(), (tuple(int(v) for v in box) if box is not None else None)
    s = max_width / w
    small = cv2.resize(rgb, (max_width, max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return small, (tuple(round(v * s) for v in box) if box is not None else None)


class FramePreview:
    """Hands the outputs a downscaled copy of at most `max_fps` frames a second (daemon loop)."""

    def __init__(
        self,
        outputs: list,
        box_of: Callable[[np.ndarray], Any] | None = None,
        *,
        max_fps: float = PREVIEW_FPS,
        max_width: int = PREVIEW_WIDTH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outputs = outputs
        self.box_of = box_of  # frame (RGB) -> crop box, for frames whose crop the capture thread made
        self.period = 1.0 / max_fps if max_fps > 0 else 0.0
        self.max_width = max_width
        self._clock = clock
        self._next = 0.0

    def due(self) -> bool:
        return self._clock() >= self._next

    def offer(self, image: np.ndarray | None, box=None, *, bgr: bool = False) -> bool:
        """Publish `image` (HxWx3 uint8) with its crop `box` if one is due; True when it was published.

        `box` None: asked from `box_of` (cheap for the full and center crops; face mode passes its box)."""
        if image is None or not self.due():
            return False
        self._next = self._clock() + self.period
        if bgr:
            import cv2

            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if box is None and self.box_of is not None:
            try:
                box = self.box_of(image)
            except Exception:  # noqa: BLE001 - the live view must never stop the loop
                box = None
        small, sbox = downscale(image, box, self.max_width)
        for o in self.outputs:
            try:
                o.publish_frame(small, sbox)
            except Exception:
                log.exception("output %s: publish_frame failed", o.type)
        return True


# ----------------------------------------------------------------------------- the HTTP side


class LiveFrames:
    """The latest live-view frame of one HTTP output: kept as given, encoded to JPEG (box drawn) when
    first asked for, and waited on by MJPEG streams."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: tuple[np.ndarray, tuple | None] | None = None
        self.seq = 0
        self._jpeg: tuple[int, bytes] | None = None
        self._closed = False
        self._streams = threading.BoundedSemaphore(MAX_STREAMS)

    def put(self, rgb: np.ndarray, box) -> None:
        with self._cond:
            self._frame = (rgb, box)
            self.seq += 1
            self._cond.notify_all()

    def jpeg(self) -> tuple[int, bytes] | None:
        """(sequence number, JPEG bytes) of the latest frame, or None before the first."""
        with self._cond:
            frame, seq, cached = self._frame, self.seq, self._jpeg
        if frame is None:
            return None
        if cached is not None and cached[0] == seq:
            return cached
        data = encode_with_box(*frame)
        if data is None:
            return None
        with self._cond:
            if self._jpeg is None or self._jpeg[0] < seq:
                self._jpeg = (seq, data)
        return seq, data

    def wait_newer(self, seq: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.seq > seq or self._closed, timeout) and not self._closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


def encode_with_box(rgb: np.ndarray, box) -> bytes | None:
    import cv2

    from device.crop import encode_image_rgb

    img = rgb
    if box is not None:
        img = np.ascontiguousarray(rgb).copy()
        x, y, w, h = (int(v) for v in box)
        thick = max(2, img.shape[1] // 160)
        cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), BOX_RGB, thick)
    return encode_image_rgb(img, ".jpg", jpeg_quality=JPEG_QUALITY)


def view_state(telemetry, *, images: bool, extra: dict | None = None) -> dict:
    """What /view.json returns (docs/outputs.md has its schema)."""
    snap = telemetry.snapshot()
    latest = telemetry.latest
    state = {
        "status": snap["status"],
        "reason": snap["reason"],
        "camera_fps": snap["camera_fps"],
        "results_fps": snap["results_fps"],
        "uptime_s": snap["uptime_s"],
        "model_sha256": snap["model_sha256"],
        "images": images,
        "frame_seq": None,
        "result": None,
        "score_of": None,  # binary models: the score is P(this label)
    }
    man = telemetry.manifest
    if man is not None and man.output_kind == "sigmoid":
        state["score_of"] = man.positive_label
    if latest is not None:
        state["result"] = {
            "frame_id": latest.frame_id,
            "time": latest.timestamp,
            "label": latest.label,
            "score": round(latest.score, 4),
            "smoothed_label": latest.smoothed_label,
            "smoothed_score": round(latest.smoothed_score, 4),
            "file": latest.file,
        }
    if extra:
        state.update(extra)
    return state


def handle(handler: _Handler, out: HttpOutput, path: str) -> bool:
    """Answer the live-view paths on `handler` (device/outputs/http.py's); False for other paths."""
    if path == "/":
        handler.reply(200, page(), "text/html; charset=utf-8")
    elif path == "/view.json":
        extra = out.view_extra() if out.view_extra is not None else None
        state = view_state(out.telemetry, images=out.expose_images, extra=extra)
        state["frame_seq"] = out.frames.seq if out.expose_images and out.frames.seq else None
        handler.reply_json(200, state)
    elif path == "/frame.jpg" and out.expose_images:
        got = out.frames.jpeg()
        if got is None:
            handler.reply_json(404, {"error": "no frame yet"})
        else:
            handler.reply(200, got[1], "image/jpeg", {"X-Frame-Seq": str(got[0])})
    elif path == "/stream.mjpg" and out.expose_images:
        _stream(handler, out.frames)
    else:
        return False
    return True


def _stream(handler: _Handler, frames: LiveFrames) -> None:
    if not frames._streams.acquire(blocking=False):
        handler.reply_json(503, {"error": f"at most {MAX_STREAMS} streams at once"}, {"Retry-After": "5"})
        return
    try:
        if not handler.begin_stream(f"multipart/x-mixed-replace; boundary={BOUNDARY}"):
            return  # HEAD
        seq, t_end = -1, time.monotonic() + STREAM_MAX_S
        while not frames.closed and time.monotonic() < t_end:
            got = frames.jpeg()
            if got is not None and got[0] != seq:
                seq, data = got
                part = (
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                    + data
                    + b"\r\n"
                )
                handler.write(part)
            frames.wait_newer(seq, 1.0)
    except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
        pass  # the client went away
    finally:
        frames._streams.release()


# ----------------------------------------------------------------------------- device collect


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def count_images(root: Path) -> dict[str, int]:
    """Crops per label folder under a dataset root (`<root>/<label>/**`; hidden folders skipped)."""
    counts: dict[str, int] = {}
    if not root.is_dir():
        return counts
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        counts[d.name] = sum(
            1
            for f in d.rglob("*")
            if f.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in f.relative_to(root).parts)
            and f.is_file()
        )
    return counts


class CollectView:
    """The live view of `device collect --live-view`: the same page, with the crops saved so far per
    label. Served by an HttpOutput made from the config's `outputs.http` (host, port, token rules)."""

    def __init__(self, http_cfg, *, out_root: Path, label: str, person: str, wanted: int | None) -> None:
        from device.outputs.http import HttpOutput
        from device.telemetry import Telemetry

        self.telemetry = Telemetry()
        self.http = HttpOutput(http_cfg, self.telemetry, expose_images=True)
        self.http.view_extra = self._extra
        self.preview = FramePreview([self.http])
        self.label, self.person, self.wanted = label, person, wanted
        self.counts = count_images(out_root)
        self.counts.setdefault(label, 0)
        self.saved = 0
        self.skipped: dict[str, int] = {}

    @property
    def url(self) -> str:
        return self.http.url

    def start(self) -> None:
        self.http.start()
        self.telemetry.set_status("ok", f"collecting {self.label}/{self.person}")
        log.info("live view on %s/", self.url)

    def offer(self, rgb: np.ndarray, box, outcome: str) -> None:
        """One frame `device collect` looked at, its crop box and what happened to it."""
        self.telemetry.frame_captured()
        if outcome == "saved":
            self.saved += 1
            self.counts[self.label] = self.counts.get(self.label, 0) + 1
        else:
            self.skipped[outcome] = self.skipped.get(outcome, 0) + 1
        self.telemetry.loop_progress()
        self.preview.offer(rgb, box)

    def _extra(self) -> dict:
        return {
            "collect": {
                "label": self.label,
                "person": self.person,
                "saved": self.saved,
                "wanted": self.wanted,
                "counts": dict(self.counts),
                "skipped": dict(self.skipped),
            }
        }

    def close(self) -> None:
        self.http.close()
