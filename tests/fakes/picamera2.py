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

The scene (in RGB) is ``SCENE_RGB``: left half red (200, 30, 10), right half blue (10, 30, 200),
so a test can tell a correct RGB frame from a channel-swapped one.
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
        self.instances: list["Picamera2"] = []


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
        STATE.instances.append(self)

    def create_video_configuration(self, main=None, controls=None, buffer_count=6, **kwargs) -> dict:
        m = {"format": "XBGR8888", "size": (1280, 720)}
        m.update(main or {})
        if m["format"] not in _ORDER:
            raise ValueError(f"Bad format {m['format']}")  # the fake supports only these four
        return {"use_case": "video", "main": m, "controls": {"FrameRate": 30.0, **(controls or {})},
                "buffer_count": buffer_count}

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
        rgbx = np.concatenate([scene_rgb(w, h), np.full((h, w, 1), 255, np.uint8)], axis=2)
        return np.ascontiguousarray(rgbx[:, :, list(_ORDER[main["format"]])])

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
