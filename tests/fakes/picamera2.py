"""A faithful fake of the small part of the Picamera2 API that device/sources/picam.py calls.

libcamera runs only on Raspberry Pi OS, so the tests inject this module as `picamera2` through
sys.modules. It mimics, for exactly these calls, what the real library does (raspberrypi/picamera2,
picamera2/picamera2.py, and the Picamera2 manual):

- ``Picamera2(camera_num=0)`` acquires the camera; when another process holds it the real library
  logs "Camera __init__ sequence did not complete." and raises ``RuntimeError`` ("Failed to
  acquire camera: Device or resource busy"). Here: while ``STATE.busy_opens > 0``.
- ``create_video_configuration(main=..., controls=..., buffer_count=...)`` returns a plain dict
  with ``use_case``, ``main`` ({"format", "size"}), ``controls``, ``buffer_count``; the video
  configuration's default main format is ``XBGR8888`` and size (1280, 720).
- ``configure(config)``: only while stopped (the real one raises "Camera must be stopped before
  configuring").
- ``start()`` / ``stop()`` / ``close()``; ``close()`` stops first, and is idempotent.
- ``capture_array(name="main", wait=None)``: blocks until the next frame (frames come at
  ``controls["FrameRate"]``) and returns a *new* array (the real ``make_array`` copies out of the
  DMA buffer) of shape (h, w, 3) for RGB888/BGR888, (h, w, 4) for XRGB8888/XBGR8888, uint8, in
  libcamera's byte order (manual, "Image formats"): RGB888 -> [B, G, R]; BGR888 -> [R, G, B];
  XBGR8888 -> [R, G, B, 255]; XRGB8888 -> [B, G, R, 255]. With a numeric ``wait`` it raises
  ``TimeoutError`` when no frame comes in time (``dispatch_functions``: "a number - wait for this
  number of seconds before raising a 'timed out' error"); with ``wait=True`` it waits forever.
  Stricter than the real one in one place: capturing from a camera that is not started raises
  instead of hanging, so a wrong call order fails the test instead of timing it out.

- ``capture_request(wait=None, flush=None)``: the next frame as a request (the real
  ``CompletedRequest``): ``make_array("main")`` (a copy, as above), ``get_metadata()`` (a dict;
  ``SensorTimestamp`` in ns, plus what an attached sensor adds: the AI Camera's output tensors,
  tests/fakes/imx500.py), ``release()`` once. After ``release()`` the request is gone (the real one
  recycles its buffers): using it again raises, and so does releasing it twice; a camera whose
  ``buffer_count`` requests are all held unreleased delivers nothing more (raises here, hangs there).

The scene (in RGB) is ``SCENE_RGB``: left half red (200, 30, 10), right half blue (10, 30, 200),
so a test can tell a correct RGB frame from a channel-swapped one. An attached sensor
(``STATE.sensor``, set by the fake IMX500 of the same camera number) supplies its own scene instead.
"""

from __future__ import annotations

import threading
import time

import numpy as np

LEFT_RGB = (200, 30, 10)
RIGHT_RGB = (10, 30, 200)

_ORDER = {  # format -> indices into (R, G, B, 255) giving the bytes in memory
    "RGB888": (2, 1, 0),
    "BGR888": (0, 1, 2),
    "XBGR8888": (0, 1, 2, 3),
    "XRGB8888": (2, 1, 0, 3),
}


def scene_rgb(w: int, h: int) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:, : w // 2] = LEFT_RGB
    img[:, w // 2 :] = RIGHT_RGB
    return img


class _State:
    """Knobs the tests turn, and what the fake saw."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.busy_opens = 0  # next N Picamera2() calls raise "Device or resource busy"
        self.stalled = threading.Event()  # while set, no frames arrive
        self.open_times: list[float] = []  # monotonic time of every Picamera2() call
        self.instances: list[Picamera2] = []
        self.sensor = None  # tests/fakes/imx500.py: frames and metadata of the AI Camera


STATE = _State()


class Picamera2:
    def __init__(self, camera_num: int = 0) -> None:
        STATE.open_times.append(time.monotonic())
        if STATE.busy_opens > 0:
            STATE.busy_opens -= 1
            raise RuntimeError("Failed to acquire camera: Device or resource busy")
        if camera_num != 0:
            raise IndexError("list index out of range")  # global_camera_info()[camera_num]
        self.camera_num = camera_num
        self.camera_config: dict | None = None
        self.started = False
        self.is_open = True
        self.closed = False
        self.frames = 0
        self._next = 0.0
        self._requests: list[CompletedRequest] = []
        STATE.instances.append(self)

    def create_video_configuration(self, main=None, controls=None, buffer_count=6, **kwargs) -> dict:
        m = {"format": "XBGR8888", "size": (1280, 720)}
        m.update(main or {})
        if m["format"] not in _ORDER:
            raise ValueError(f"Bad format {m['format']}")  # the fake supports only these four
        return {
            "use_case": "video",
            "main": m,
            "controls": {"FrameRate": 30.0, **(controls or {})},
            "buffer_count": buffer_count,
        }

    def configure(self, camera_config) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        self.camera_config = camera_config

    def start(self, config=None, show_preview=False) -> None:
        if config is not None:
            self.configure(config)
        if self.camera_config is None:
            self.configure(self.create_video_configuration())
        self.started = True
        self._next = time.monotonic() + 1.0 / self.camera_config["controls"]["FrameRate"]

    def capture_array(self, name: str = "main", wait=None) -> np.ndarray:
        if name != "main":
            raise KeyError(name)
        return self._next_frame(wait)[0]

    def capture_request(self, wait=None, flush=None) -> CompletedRequest:
        held = sum(1 for r in self._requests if r.request is not None)
        if held >= self.camera_config["buffer_count"]:
            raise RuntimeError(f"fake: all {held} buffers are held by unreleased requests (the real camera stalls)")
        arr, metadata = self._next_frame(wait)
        req = CompletedRequest(arr, metadata)
        self._requests = [r for r in self._requests if r.request is not None] + [req]
        return req

    def _next_frame(self, wait) -> tuple[np.ndarray, dict]:
        if not self.started:
            raise RuntimeError("fake: capture_array on a camera that is not started")
        timeout = None if wait in (None, True) else float(wait)
        deadline = None if timeout is None else time.monotonic() + timeout
        period = 1.0 / self.camera_config["controls"]["FrameRate"]
        while True:
            now = time.monotonic()
            if not STATE.stalled.is_set() and now >= self._next:
                break
            if deadline is not None and now >= deadline:
                raise TimeoutError()
            until = self._next if not STATE.stalled.is_set() else now + 0.01
            if deadline is not None:
                until = min(until, deadline)
            time.sleep(max(0.0, min(until - now, 0.01)))
        self._next = max(self._next + period, time.monotonic())
        self.frames += 1
        main = self.camera_config["main"]
        w, h = main["size"]
        metadata = {"SensorTimestamp": time.monotonic_ns()}
        sensor = STATE.sensor if STATE.sensor is not None and STATE.sensor.camera_num == self.camera_num else None
        if sensor is not None:
            rgb, extra = sensor.frame(self.frames, w, h)
            metadata.update(extra)
        else:
            rgb = scene_rgb(w, h)
        rgbx = np.concatenate([rgb, np.full((h, w, 1), 255, np.uint8)], axis=2)
        return np.ascontiguousarray(rgbx[:, :, list(_ORDER[main["format"]])]), metadata

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        if self.closed:
            return
        self.stop()
        self.closed = True
        self.is_open = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class CompletedRequest:
    """One captured frame and its metadata, held until `release()` (picamera2/request.py)."""

    def __init__(self, array: np.ndarray, metadata: dict) -> None:
        self.request: tuple[np.ndarray, dict] | None = (array, metadata)

    def _held(self) -> tuple[np.ndarray, dict]:
        if self.request is None:
            raise RuntimeError("fake: request used after release()")
        return self.request

    def make_array(self, name: str) -> np.ndarray:
        if name != "main":
            raise RuntimeError(f"Stream {name!r} is not defined")
        return self._held()[0].copy()

    def get_metadata(self) -> dict:
        return dict(self._held()[1])

    def release(self) -> None:
        if self.request is None:
            raise RuntimeError("CompletedRequest: lock now has negative ref_count")
        self.request = None
