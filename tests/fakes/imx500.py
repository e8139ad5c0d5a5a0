"""A faithful fake of the small part of picamera2's IMX500 helper that device/sources/imx500.py calls.

Installed as ``picamera2.devices.imx500`` (and ``picamera2.devices``) beside tests/fakes/picamera2.py
(`install`). It mimics, for exactly these calls, what the real one does (raspberrypi/picamera2,
picamera2/devices/imx500/imx500.py, and the Raspberry Pi AI Camera documentation, "Under the hood"):

- ``IMX500(network_file, camera_id='')``: finds the sensor (no AI Camera connected: ``RuntimeError``
  "IMX500: Requested camera dev-node not found"), then uploads the network firmware (a missing file:
  ``RuntimeError`` "Firmware file ... does not exist."). Must come before ``Picamera2`` is created:
  here it attaches itself to the fake camera of its ``camera_num`` (``picamera2.STATE.sensor``).
- ``camera_num``, ``config`` (a dict: network_file, input tensor size), ``network_intrinsics``
  (None: an .rpk packaged without intrinsics), ``get_input_size()`` → (width, height).
- ``set_inference_roi_abs((x, y, w, h))`` in full-resolution sensor pixels (4056 x 3040), bounded
  to the sensor; ``set_inference_aspect_ratio((w, h))``: the centred crop of that aspect ratio.
- ``get_outputs(metadata, add_batch=False)``: None when the frame's metadata has no
  ``CnnOutputTensor``; else the flat float32 array cut into the tensors whose shapes
  ``CnnOutputTensorInfo`` gives (libcamera's ``CnnOutputTensorInfoExported`` struct, as bytes: the
  real helper refuses any other length), each reshaped with ``order='F'``, with a leading batch
  axis when ``add_batch``. ``get_output_shapes(metadata)`` → the shapes, [] without the info.
- ``get_kpi_info(metadata)`` (static): ``CnnKpiInfo`` (DNN and DSP runtime, µs) as ms, or None.

The sensor's frames: ``STATE.scene`` is a list of (RGB image, output tensors) pairs; frame k (1, 2,
... per camera) shows scene[(k - 1) % len(scene)] resized to the stream size, and its metadata
carries that pair's outputs - as the sensor computed them, i.e. dequantized floats of its integer
output tensor (libcamera hands over floats; `sensor_floats` turns probabilities into exactly those
with the model's output quantization). The first ``STATE.frames_without_outputs`` frames carry no
tensor (the real sensor's while the firmware uploads). ``STATE.kpi_us`` (DNN, DSP runtime in µs),
when set, goes into every frame's ``CnnKpiInfo``.
"""

from __future__ import annotations

import ctypes
import os
import sys
import types

import cv2
import numpy as np

NETWORK_NAME_LEN = 64
MAX_NUM_TENSORS = 16
MAX_NUM_DIMENSIONS = 16
SENSOR_W, SENSOR_H = 4056, 3040


class _OutputTensorInfo(ctypes.LittleEndianStructure):  # libcamera: struct OutputTensorInfo
    _fields_ = [
        ("tensor_data_num", ctypes.c_uint32),
        ("num_dimensions", ctypes.c_uint32),
        ("size", ctypes.c_uint16 * MAX_NUM_DIMENSIONS),
    ]


class _CnnOutputTensorInfo(ctypes.LittleEndianStructure):  # libcamera: CnnOutputTensorInfoExported
    _fields_ = [
        ("network_name", ctypes.c_char * NETWORK_NAME_LEN),
        ("num_tensors", ctypes.c_uint32),
        ("info", _OutputTensorInfo * MAX_NUM_TENSORS),
        ("frameCount", ctypes.c_uint8),
    ]


def output_tensor_info(shapes: list[tuple[int, ...]], network_name: str = "faceedge", frame: int = 0) -> bytes:
    """The CnnOutputTensorInfo metadata bytes for tensors of these shapes."""
    info = _CnnOutputTensorInfo()
    info.network_name = network_name.encode()[: NETWORK_NAME_LEN - 1]
    info.num_tensors = len(shapes)
    info.frameCount = frame % 256
    for i, shape in enumerate(shapes):
        info.info[i].tensor_data_num = int(np.prod(shape))
        info.info[i].num_dimensions = len(shape)
        for d, size in enumerate(shape):
            info.info[i].size[d] = size
    return bytes(info)


def sensor_floats(probabilities: np.ndarray, scale: float, zero_point: int, dtype: str = "uint8") -> np.ndarray:
    """What the sensor hands over for these probabilities: its integer output tensor (the model's
    output quantization: scale, zero point, dtype) dequantized to floats, as libcamera does."""
    info = np.iinfo(np.dtype(dtype))
    q = np.clip(np.rint(np.asarray(probabilities, np.float64) / scale) + zero_point, info.min, info.max)
    return ((q - zero_point) * scale).astype(np.float32)


class _State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.present = True  # an AI Camera is connected
        self.scene: list[tuple[np.ndarray, list[np.ndarray]]] = []
        self.frames_without_outputs = 0
        self.input_size = (224, 224)  # (width, height) of the network's input tensor
        self.kpi_us: tuple[int, int] | None = None
        self.instances: list[IMX500] = []


STATE = _State()


class IMX500:
    def __init__(self, network_file: str, camera_id: str = "", tensor_injection: bool = False) -> None:
        if not STATE.present:
            raise RuntimeError("IMX500: Requested camera dev-node not found")
        if network_file != "" and not os.path.isfile(network_file):
            raise RuntimeError(f"Firmware file {os.path.abspath(network_file)} does not exist.")
        self._camera_num = 0
        self._cfg = {"network_file": network_file, "input_tensor": {}, "input_tensor_size": tuple(STATE.input_size)}
        self._cfg["roi"] = (0, 0, SENSOR_W, SENSOR_H)  # the real constructor sets the full sensor
        self.frames_served = 0
        from picamera2 import STATE as CAMERA  # the fake picamera2, installed beside this module

        CAMERA.sensor = self
        STATE.instances.append(self)

    @property
    def camera_num(self) -> int:
        return self._camera_num

    @property
    def config(self) -> dict:
        return self._cfg

    @property
    def network_intrinsics(self):
        return None

    def get_input_size(self) -> tuple[int, int]:
        return self._cfg["input_tensor_size"]

    def set_inference_roi_abs(self, roi: tuple) -> None:
        x, y, w, h = (int(v) for v in roi)
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(SENSOR_W, x + w), min(SENSOR_H, y + h)
        self._cfg["roi"] = (x0, y0, max(0, x1 - x0), max(0, y1 - y0))

    def set_inference_aspect_ratio(self, aspect_ratio: tuple) -> None:
        aw, ah = aspect_ratio
        w, h = (SENSOR_W, SENSOR_W * ah // aw) if SENSOR_W * ah // aw <= SENSOR_H else (SENSOR_H * aw // ah, SENSOR_H)
        self.set_inference_roi_abs(((SENSOR_W - w) // 2, (SENSOR_H - h) // 2, w, h))

    def get_output_shapes(self, metadata: dict) -> list:
        raw = metadata.get("CnnOutputTensorInfo")
        if not raw:
            return []
        raw = bytes(raw)
        if len(raw) != ctypes.sizeof(_CnnOutputTensorInfo):
            raise ValueError(
                f"tensor info length {len(raw)} does not match expected size {ctypes.sizeof(_CnnOutputTensorInfo)}"
            )
        info = _CnnOutputTensorInfo.from_buffer_copy(raw)
        return [list(info.info[i].size)[: info.info[i].num_dimensions] for i in range(info.num_tensors)]

    @staticmethod
    def get_kpi_info(metadata: dict):
        kpi = metadata.get("CnnKpiInfo")
        if kpi is None:
            return None
        return kpi[0] / 1000, kpi[1] / 1000

    def get_outputs(self, metadata: dict, add_batch: bool = False):
        tensor = metadata.get("CnnOutputTensor")
        if not tensor:
            return None
        flat = np.fromiter(tensor, dtype=np.float32)
        outputs, offset = [], 0
        for shape in self.get_output_shapes(metadata):
            size = int(np.prod(shape))
            t = flat[offset : offset + size].reshape(shape, order="F")
            outputs.append(np.expand_dims(t, 0) if add_batch else t)
            offset += size
        return outputs

    # -- the fake camera's side: what frame k shows and what its metadata carries ----------------
    def frame(self, k: int, width: int, height: int) -> tuple[np.ndarray, dict]:
        self.frames_served = k
        if not STATE.scene:
            raise RuntimeError("fake: STATE.scene is empty: give the AI Camera something to look at")
        image, outputs = STATE.scene[(k - 1) % len(STATE.scene)]
        rgb = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        metadata = {} if STATE.kpi_us is None else {"CnnKpiInfo": list(STATE.kpi_us)}
        if k <= STATE.frames_without_outputs:
            return rgb, metadata
        outs = [np.asarray(o, np.float32) for o in outputs]
        flat = np.concatenate([o.reshape(-1, order="F") for o in outs])
        return rgb, {
            **metadata,
            "CnnOutputTensor": flat.tolist(),
            "CnnOutputTensorInfo": output_tensor_info([o.shape for o in outs], frame=k),
        }


def install(monkeypatch) -> None:
    """Make `from picamera2.devices.imx500 import IMX500` find this module (the fake picamera2 must be
    installed as `picamera2` already: the `picam` fixture)."""
    devices = types.ModuleType("picamera2.devices")
    devices.IMX500 = IMX500
    devices.imx500 = sys.modules[__name__]
    monkeypatch.setitem(sys.modules, "picamera2.devices", devices)
    monkeypatch.setitem(sys.modules, "picamera2.devices.imx500", sys.modules[__name__])
    STATE.reset()
