"""The capture thread: reads a FrameSource continuously and keeps only the newest frame.

Why a thread: a camera produces frames at its own pace whether or not the model keeps up. Reading
in a thread (cv2/picamera2 release the GIL while they wait and decode) overlaps capture and the
`prepare` hook (the daemon's crop + resize) with inference, and lets the loop always classify the
*newest* frame; frames overwritten before the loop took them are counted as dropped.

Channel order: frames are read with `source.read()` (RGB), except when there is a `prepare` hook
(a `device.crop.Preparer`, which swaps channels itself) and the source produces BGR
(`source.channel_order`): the frame is then read with `source.read_native()` and the hook gets
`bgr=True`, so the swap happens on the small resized image, not the whole frame. `Frame.image`
then holds BGR and says so (`Frame.channel_order`); `Frame.prepared` is RGB in every case.

Buffers: a 1-slot mailbox guarded by a condition (for an unpaced source - a file read as fast as
consumed, an image folder - a FIFO of PREFETCH frames instead, nothing dropped), plus a small pool
of recycled frame arrays, so in steady state a source that honours `read(out=...)` allocates
nothing per frame. The frame handed to
the consumer stays valid until its next `get()`/`release()`.

Faults handled here (the daemon reads `state`/`last_frame_mono` for health):

- open fails (camera busy, device absent): retry with capped exponential backoff, one log line per
  attempt;
- reads time out or fail for `stall_s`, or a live stream ends: close, reopen with the same
  backoff, and discard the first `discard_after_reconnect` frames of the new session (auto
  exposure settling, codec catching up); a frame left queued from before the fault is
  thrown away, never classified;
- a read that never returns cannot be interrupted from Python: the thread stays blocked, the
  daemon reports `stalled`, and the systemd watchdog (pinged only after fresh results) restarts
  the service.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np

from device.errors import FaceedgeError
from device.sources.base import FrameSource, SourceError
from device.validation import Meta, Strict, invalid

if TYPE_CHECKING:
    from device.crop import Preparer

log = logging.getLogger(__name__)

PREFETCH = 2  # unpaced sources: frames read ahead of the consumer (absorbs thread wake-up jitter)
POOL_SIZE = PREFETCH + 2  # + one being written + one held by the consumer


# Config keys renamed, old spelling → new: still read, with a warning (every duration key ends in _s).
RENAMED_KEYS = {"stall_seconds": "stall_s"}


class CaptureConfig(Strict):
    stall_s: (
        Annotated[float, Meta(gt=0, description="no frame for this long = stalled: health says so, source reopened")]
        | None
    ) = None  # None: 5.0 (see check)
    stall_seconds: Annotated[float, Meta(gt=0, description="stall_s's old name: still read, with a warning")] | None = (
        None
    )
    read_timeout_s: Annotated[
        float, Meta(gt=0, description="longest single blocking read before the thread checks in")
    ] = 1.0
    reconnect_initial_s: Annotated[float, Meta(gt=0, description="first retry delay after a failed open/read")] = 0.5
    reconnect_max_s: Annotated[float, Meta(gt=0, description="cap of the exponential backoff")] = 10.0
    discard_after_reconnect: Annotated[int, Meta(ge=0, description="frames thrown away after a reopen")] = 2

    def check(self) -> None:
        if self.stall_seconds is not None:  # the old name (RENAMED_KEYS)
            if self.stall_s is not None:
                invalid("stall_seconds", "give stall_s only (stall_seconds is its old name)")
            log.warning("config key capture.stall_seconds is deprecated: call it capture.stall_s")
            self.stall_s, self.stall_seconds = self.stall_seconds, None
        if self.stall_s is None:
            self.stall_s = 5.0


def backoff_delay(attempt: int, initial: float, cap: float) -> float:
    """attempt 1 -> initial, 2 -> 2*initial, ... capped at `cap`."""
    return min(cap, initial * (2 ** max(0, attempt - 1)))


@dataclass
class Frame:
    image: np.ndarray | None  # HxWx3 uint8 in `channel_order`, valid until the consumer's next
    # get()/release(); None when the grabber was made with keep_images=False and `prepared` is set
    frame_id: int  # 1, 2, ... over the grabber's life (across reconnects)
    timestamp: float  # time.time() when the frame was read
    mono: float  # time.monotonic() when the frame was read
    session: int  # 1 for the first open, +1 on every reopen
    prepared: np.ndarray | None = None  # the `prepare` hook's output (e.g. the model input), if any
    prepared_by: Preparer | None = None  # the hook that made it (a reload may swap hooks)
    prep_ms: dict[str, float] = field(default_factory=dict)  # the hook's own stage timings
    channel_order: str = "RGB"  # of `image`: "BGR" only when a channel-swapping hook read it natively
    sensor_output: np.ndarray | None = None  # the AI Camera's output tensor for this frame (source.sensor_output)
    position: tuple[str | None, int | None] = (None, None)  # (file name, frame index): source.position()


class _NullTelemetry:
    def inc(self, name: str, n: int = 1) -> None: ...
    def observe(self, stage: str, ms: float) -> None: ...
    def frame_captured(self, ts: float) -> None: ...


@dataclass
class CaptureStats:
    captured: int = 0  # frames delivered to the slot
    dropped: int = 0  # overwritten in the slot before the consumer took them
    discarded: int = 0  # thrown away after a reconnect, or stale
    open_failures: int = 0
    read_failures: int = 0
    reconnects: int = 0
    open_attempt_times: list[float] = field(default_factory=list)  # monotonic, every open attempt

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "open_attempt_times"}


class FrameGrabber:
    """`start()`, then `get(timeout)` the newest frame from the consumer thread; `stop()`."""

    def __init__(
        self,
        source_factory: Callable[[], FrameSource],
        cfg: CaptureConfig | None = None,
        *,
        telemetry: Any = None,
        prepare: Preparer | None = None,
        keep_images: bool = True,
    ) -> None:
        """`prepare.prepare(image, out, bgr=...)`, when given, runs in the capture thread on every frame
        it keeps and returns (array, {stage: ms}) - the daemon crops and resizes there, so that
        preprocessing overlaps inference. It may write into `out` (a recycled array), must not keep
        `image`, and is given `bgr=True` for BGR frames (see the module docstring); it returns RGB.

        `keep_images=False`: a frame the hook prepared hands its full-size buffer back to the pool
        at once (`Frame.image` is None): a consumer that only needs `prepared` (the daemon) then
        holds one full frame in flight instead of up to four, ~2.7 MB less at 640×480."""
        self._factory = source_factory
        self.prepare = prepare
        self.keep_images = keep_images
        self.cfg = cfg or CaptureConfig()
        self.telemetry = telemetry or _NullTelemetry()
        self.stats = CaptureStats()
        self.state = "starting"  # starting | open | reconnecting | ended | failed
        self.error: BaseException | None = None
        self.session = 0
        self.paced = True
        self.source_name = ""
        self.last_frame_mono: float | None = None
        self.reading_since: float | None = None  # monotonic start of the read in progress
        self._cond = threading.Condition()
        self._queue: deque[Frame] = deque()  # paced: ≤ 1 frame (the newest); unpaced: ≤ PREFETCH
        self._held: Frame | None = None
        self._free: list[np.ndarray] = []
        self._free_prep: list[np.ndarray] = []
        self._frame_id = 0
        self._attempt = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- consumer side -----------------------------------------------------------------------
    def start(self) -> FrameGrabber:
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()
        return self

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet taken, waiting up to `timeout`; None if none came (or the
        source ended/failed: check `finished`)."""
        with self._cond:
            self._release_locked()
            if not self._cond.wait_for(lambda: self._queue or self.finished, timeout) or not self._queue:
                return None
            frame = self._queue.popleft()
            self._held = frame
            self._cond.notify_all()  # an unpaced source waits for room in the queue
            return frame

    def release(self) -> None:
        """Hand the held frame's buffer back before the next get()."""
        with self._cond:
            self._release_locked()

    @property
    def finished(self) -> bool:
        return self.state in ("ended", "failed")

    def stop(self, timeout: float = 1.5) -> bool:
        """Stop the thread; True if it exited (and closed the source) within `timeout`."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        t = self._thread
        if t is None:
            return True
        t.join(timeout)
        if t.is_alive():
            log.warning("capture thread still blocked in %s read after %.1f s; leaving it", self.source_name, timeout)
            return False
        return True

    def __enter__(self) -> FrameGrabber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- capture thread ----------------------------------------------------------------------
    def _release_locked(self) -> None:
        if self._held is not None:
            self._recycle_frame_locked(self._held)
            self._held = None

    def _recycle_locked(self, arr: np.ndarray) -> None:
        if len(self._free) < POOL_SIZE:
            self._free.append(arr)

    def _recycle_frame_locked(self, frame: Frame) -> None:
        if frame.image is not None:
            self._recycle_locked(frame.image)
        if frame.prepared is not None and len(self._free_prep) < POOL_SIZE:
            self._free_prep.append(frame.prepared)

    def _take_buffer(self) -> np.ndarray | None:
        with self._cond:
            return self._free.pop() if self._free else None

    def _give_back(self, arr: np.ndarray | None) -> None:
        if arr is not None:
            with self._cond:
                self._recycle_locked(arr)

    def _set_state(self, state: str) -> None:
        with self._cond:
            self.state = state
            self._cond.notify_all()

    def _delay(self) -> float:
        return backoff_delay(self._attempt, self.cfg.reconnect_initial_s, self.cfg.reconnect_max_s)

    def _run(self) -> None:
        opened_before = False
        while not self._stop.is_set():
            src: FrameSource | None = None
            self.stats.open_attempt_times.append(time.monotonic())
            try:
                src = self._factory()
                self.source_name = src.describe()
                src.open()
            except SourceError as e:
                self._open_failed(src, e)
                continue
            except FaceedgeError as e:  # a configuration mistake: retrying cannot fix it
                self._close_quietly(src)
                self.error = e
                log.error("source: %s", e)
                self._set_state("failed")
                return
            except Exception as e:  # noqa: BLE001 - camera libraries raise RuntimeError/OSError/...
                self._open_failed(src, e)
                continue
            self.session += 1
            if opened_before:
                self.stats.reconnects += 1
                self.telemetry.inc("reconnects")
                log.info("%s: reopened (session %d)", self.source_name, self.session)
            discard = self.cfg.discard_after_reconnect if opened_before else 0
            opened_before = True
            with self._cond:
                self.paced = src.paced
                while self._queue:  # from before the fault: never classify it
                    self._recycle_frame_locked(self._queue.popleft())
                    self.stats.discarded += 1
                    self.telemetry.inc("stale_frames_discarded")
                self.state = "open"
            try:
                ended = self._read_loop(src, discard)
            except FaceedgeError as e:
                if isinstance(e, SourceError):
                    self._read_failed(src, e)
                    continue
                self._close_quietly(src)  # what the source says cannot work (a folder of no images)
                self.error = e
                log.error("source: %s", e)
                self._set_state("failed")
                return
            except Exception as e:  # noqa: BLE001 - OSError, cv2.error, ...
                self._read_failed(src, e)
                continue
            self._close_quietly(src)
            if ended:
                log.info("%s: end of stream", self.source_name)
                self._set_state("ended")
                return
        self._set_state("ended" if self.state != "failed" else "failed")

    def _read_failed(self, src: FrameSource, e: BaseException) -> None:
        """A read fault: count it, close the source, and wait out the backoff before the reopen."""
        self.stats.read_failures += 1
        self.telemetry.inc("source_errors")
        self._attempt += 1
        delay = self._delay()
        log.warning("%s: %s; reopening in %.1f s", self.source_name, e, delay)
        self._set_state("reconnecting")
        self._close_quietly(src)
        self._stop.wait(delay)

    def _open_failed(self, src: FrameSource | None, e: BaseException) -> None:
        self._close_quietly(src)
        self._attempt += 1
        self.stats.open_failures += 1
        self.telemetry.inc("source_open_failures")
        delay = self._delay()
        log.warning(
            "%s: open failed (attempt %d): %s; retrying in %.1f s",
            self.source_name or "source",
            self._attempt,
            e,
            delay,
        )
        self._set_state("reconnecting")
        self._stop.wait(delay)

    @staticmethod
    def _close_quietly(src: FrameSource | None) -> None:
        if src is None:
            return
        try:
            src.close()
        except Exception as e:  # noqa: BLE001 - closing a failed device may fail too
            log.debug("closing source failed: %s", e)

    def _read_loop(self, src: FrameSource, discard: int) -> bool:
        """Read until stopped (False) or a finite source ends (True); raise on a fault."""
        last = time.monotonic()
        stall = self.cfg.stall_s
        timeout = min(self.cfg.read_timeout_s, stall)
        while not self._stop.is_set():
            buf = self._take_buffer()
            preparer = self.prepare  # one hook per frame, even if a reload swaps it meanwhile
            bgr = preparer is not None and src.channel_order == "BGR"
            t_read = self.reading_since = time.monotonic()
            try:
                img = src.read_native(buf, timeout) if bgr else src.read(buf, timeout)
            except TimeoutError:
                self._give_back(buf)
                if time.monotonic() - last >= stall:
                    raise SourceError(f"no frame for {stall:g} s") from None
                continue
            finally:
                self.reading_since = None
            if img is not buf:
                self._give_back(buf)
            if img is None:
                if src.live:
                    raise SourceError("stream ended")
                return True
            mono, ts = time.monotonic(), time.time()
            self.telemetry.observe("capture", (mono - t_read) * 1000.0)
            last = mono
            self._attempt = 0
            if discard > 0:
                discard -= 1
                self.stats.discarded += 1
                self.telemetry.inc("stale_frames_discarded")
                self._give_back(img)
                continue
            tensor = src.sensor_output()
            position = src.position()
            prepared, prepared_by, prep_ms = self._prepare(img, preparer, bgr)
            if prepared is not None and not self.keep_images:
                self._give_back(img)
                img = None
            self._publish(img, ts, mono, prepared, prepared_by, prep_ms, "BGR" if bgr else "RGB", tensor, position)
        return False

    def _prepare(
        self, img: np.ndarray, preparer: Preparer | None = None, bgr: bool = False
    ) -> tuple[np.ndarray | None, Preparer | None, dict[str, float]]:
        if preparer is None:
            return None, None, {}
        with self._cond:
            out = self._free_prep.pop() if self._free_prep else None
        try:
            prepared, times = preparer.prepare(img, out, bgr=bgr)
        except Exception as e:  # noqa: BLE001 - the loop then prepares the frame itself, and says why
            log.warning("capture-thread preprocessing failed (%s); the loop will do it", e)
            self.prepare = None
            prepared, times = None, {}
        if out is not None and prepared is not out:
            with self._cond:
                self._free_prep.append(out)
        return prepared, (preparer if prepared is not None else None), times

    def _publish(
        self,
        img: np.ndarray | None,
        ts: float,
        mono: float,
        prepared: np.ndarray | None = None,
        prepared_by: Preparer | None = None,
        prep_ms: dict[str, float] | None = None,
        channel_order: str = "RGB",
        sensor_output: np.ndarray | None = None,
        position: tuple[str | None, int | None] = (None, None),
    ) -> None:
        dropped = False
        with self._cond:
            if not self.paced:  # read a few frames ahead of the consumer, never drop
                self._cond.wait_for(lambda: len(self._queue) < PREFETCH or self._stop.is_set())
            elif self._queue:  # a camera: only the newest frame is worth classifying
                self._recycle_frame_locked(self._queue.popleft())
                self.stats.dropped += 1
                dropped = True
            self._frame_id += 1
            self._queue.append(
                Frame(
                    img,
                    self._frame_id,
                    ts,
                    mono,
                    self.session,
                    prepared,
                    prepared_by,
                    prep_ms or {},
                    channel_order,
                    sensor_output,
                    position,
                )
            )
            self.stats.captured += 1
            self.last_frame_mono = mono
            self._cond.notify_all()
        if dropped:
            self.telemetry.inc("frames_dropped")
        self.telemetry.frame_captured(ts)
