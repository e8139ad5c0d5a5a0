"""The Raspberry Pi AI Camera (Sony IMX500) through picamera2's IMX500 helper: frames, and the
output tensors the sensor computed for each of them. Only on Raspberry Pi OS (apt: python3-picamera2,
imx500-all).

The part of the API used here, and nothing else (tests/fakes/imx500.py mimics exactly this part,
on top of tests/fakes/picamera2.py):

- ``IMX500(network_file)`` from ``picamera2.devices.imx500`` - finds the sensor's V4L2 sub-device
  and uploads the network firmware (the ``.rpk``); must come before ``Picamera2`` is created. Raises
  ``RuntimeError`` when no IMX500 is connected ("Requested camera dev-node not found") or the file is
  missing. ``.camera_num`` is the camera to open.
- ``IMX500.set_inference_roi_abs((x, y, w, h))`` - the part of the sensor image (full-resolution
  pixels, 4056 x 3040) the sensor scales to the network's input.
- ``Picamera2(camera_num)``, ``create_video_configuration``, ``configure``, ``start`` as for the
  plain camera (device/sources/picam.py).
- ``capture_request(wait=seconds)`` → a request holding one frame and its metadata:
  ``make_array("main")``, ``get_metadata()``, ``release()``. Image and outputs of the same request
  belong together, which ``capture_array`` + ``capture_metadata`` would not guarantee.
- ``IMX500.get_outputs(metadata, add_batch=True)`` - the output tensors (float32, reshaped from
  libcamera's ``CnnOutputTensor`` with ``CnnOutputTensorInfo``), or None for a frame without them
  (the first frames, while the network firmware is still being uploaded).
- ``IMX500.get_kpi_info(metadata)`` - the sensor's own timings for that frame, (DNN runtime, DSP
  runtime) in ms from ``CnnKpiInfo``, or None: the benchmark reports them (`sensor_kpi`).

Frames are RGB from `read()` as for every source; `sensor_output()` is the first output tensor of
the frame `read()` returned last (None when that frame had none).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import numpy as np

from device.errors import FaceedgeError
from device.sources.base import SourceError, register_source
from device.sources.picam import FORMATS, Picamera2Config, Picamera2Source, start_camera
from device.validation import Meta

log = logging.getLogger(__name__)

SENSOR_WIDTH, SENSOR_HEIGHT = 4056, 3040  # IMX500 full resolution: the units of the inference ROI


class Imx500Config(Picamera2Config, tag="imx500"):
    network_file: (
        Annotated[
            str, Meta(description="the .rpk the sensor runs; set by the daemon from the loaded model dir (network.rpk)")
        ]
        | None
    ) = None
    roi_fraction: (
        Annotated[
            float,
            Meta(
                gt=0,
                le=1.0,
                description="side of the centred square the sensor classifies, as a fraction of its "
                "height; None = the whole sensor image. Set by the daemon from crop",
            ),
        ]
        | None
    ) = 1.0


def roi_box(fraction: float) -> tuple[int, int, int, int]:
    """(x, y, w, h) in full-resolution sensor pixels of the centred square of `fraction` × height."""
    side = int(round(SENSOR_HEIGHT * fraction))
    return (SENSOR_WIDTH - side) // 2, (SENSOR_HEIGHT - side) // 2, side, side


@register_source("imx500")
class Imx500Source(Picamera2Source):
    cfg: Imx500Config

    def __init__(self, cfg: Imx500Config) -> None:
        super().__init__(cfg)
        self.imx500: Any = None
        self._output: np.ndarray | None = None
        self._kpi: tuple[float, float] | None = None

    def open(self) -> None:
        c = self.cfg
        if not c.network_file:
            raise FaceedgeError("source.type 'imx500': no network file (the daemon sets it from an imx500 model dir)")
        try:
            from picamera2 import Picamera2
            from picamera2.devices.imx500 import IMX500
        except ImportError as e:
            raise FaceedgeError(
                f"source.type 'imx500': picamera2's IMX500 support is not importable ({e}); on Raspberry Pi OS "
                "`sudo apt install imx500-all python3-picamera2` and create the venv with --system-site-packages"
            ) from None
        try:
            imx = IMX500(c.network_file)  # before Picamera2: uploads the network firmware
        except (RuntimeError, OSError) as e:
            raise SourceError(f"imx500: {e}") from None
        try:
            cam = Picamera2(imx.camera_num)
        except (RuntimeError, OSError, IndexError) as e:
            raise SourceError(f"imx500 camera {imx.camera_num}: {e}") from None

        def set_roi() -> None:
            if c.roi_fraction is not None:
                imx.set_inference_roi_abs(roi_box(c.roi_fraction))

        self.size = start_camera(cam, c, f"imx500 camera {imx.camera_num}", after_start=set_roi)
        self.cam, self.imx500 = cam, imx
        log.info(
            "imx500: network %s on camera %d; the first frames come without outputs while it uploads",
            c.network_file,
            imx.camera_num,
        )

    def _capture(self, timeout: float | None) -> np.ndarray:
        if self.cam is None:
            raise SourceError("imx500: read before open")
        request = self.cam.capture_request(wait=timeout if timeout else True)
        try:
            arr = request.make_array("main")
            metadata = request.get_metadata()
        finally:
            request.release()
        outputs = self.imx500.get_outputs(metadata, add_batch=True)
        self._output = outputs[0] if outputs else None
        self._kpi = self.imx500.get_kpi_info(metadata)
        channels = FORMATS[self.cfg.format][0]
        if arr.ndim != 3 or arr.shape[2] != channels:
            raise SourceError(f"imx500: expected {channels}-channel {self.cfg.format} frames, got {arr.shape}")
        return arr

    def sensor_output(self) -> np.ndarray | None:
        return self._output

    def sensor_kpi(self) -> tuple[float, float] | None:
        """(DNN runtime, DSP runtime) in ms the sensor reported for the last frame read, or None."""
        return self._kpi

    def close(self) -> None:
        super().close()
        self.imx500 = None

    def describe(self) -> str:
        c = self.cfg
        roi = "whole sensor" if c.roi_fraction is None else f"centred square {c.roi_fraction:g}"
        return f"imx500 (AI Camera) {c.width}x{c.height} {c.format} @ {c.fps:g} fps, inference on {roi}"
