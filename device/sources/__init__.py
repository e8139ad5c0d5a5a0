"""Frame sources: one interface (`FrameSource`), a registry keyed by config `type`, and the
capture thread (`FrameGrabber`) that keeps only the newest frame.

Importing this package registers the built-in sources: picamera2, opencv, images, synthetic, and
imx500 (the AI Camera: frames with the sensor's own inference).
"""

from device.sources.base import (
    SOURCE_TYPES,
    FrameSource,
    SourceConfig,
    SourceError,
    build_source,
    register_source,
)
from device.sources.capture import CaptureConfig, Frame, FrameGrabber
from device.sources.images import ImagesConfig, ImagesSource
from device.sources.imx500 import Imx500Config, Imx500Source
from device.sources.opencv import OpencvConfig, OpencvSource
from device.sources.picam import Picamera2Config, Picamera2Source
from device.sources.synthetic import SyntheticConfig, SyntheticSource

__all__ = [
    "SOURCE_TYPES",
    "FrameSource",
    "SourceConfig",
    "SourceError",
    "build_source",
    "register_source",
    "CaptureConfig",
    "Frame",
    "FrameGrabber",
    "ImagesConfig",
    "ImagesSource",
    "Imx500Config",
    "Imx500Source",
    "OpencvConfig",
    "OpencvSource",
    "Picamera2Config",
    "Picamera2Source",
    "SyntheticConfig",
    "SyntheticSource",
]
