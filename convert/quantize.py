"""Named conversion recipes (MediaPipe Model Maker's `QuantizationConfig` style).

A recipe is everything that distinguishes one `.tflite` variant from another, kept in one value
instead of converter attributes set here and there::

    QuantizationConfig.for_int8(representative_data, steps=300, io_dtype="uint8")
    QuantizationConfig.for_float16()
    QuantizationConfig.for_float32()

`set_converter_options(converter)` applies it to a `tf.lite.TFLiteConverter`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from device.errors import FaceedgeError

log = logging.getLogger(__name__)

Variant = Literal["int8", "float32", "float16"]
IoDtype = Literal["uint8", "int8"]
DEFAULT_CALIBRATION_STEPS = 300
# Below this many calibration images the activation ranges of rare inputs are likely missed.
MIN_RECOMMENDED_CALIBRATION = 100

# A callable that returns a fresh iterable of float32 images (H, W, 3), raw RGB 0..255.
RepresentativeData = Callable[[], Iterable[np.ndarray]]


@dataclass(frozen=True)
class QuantizationConfig:
    """One conversion recipe. Build it with `for_int8`, `for_float16` or `for_float32`."""

    variant: Variant
    representative_data: RepresentativeData | None = None
    steps: int = 0
    io_dtype: str = "float32"  # dtype of the model's input and output tensors
    per_channel: bool = True

    @classmethod
    def for_int8(
        cls,
        representative_data: RepresentativeData,
        steps: int = DEFAULT_CALIBRATION_STEPS,
        io_dtype: IoDtype = "uint8",
        per_channel: bool = True,
    ) -> QuantizationConfig:
        """Full-integer int8 (TFLITE_BUILTINS_INT8 only, so a float op fails the conversion instead of
        silently staying float), per-channel weights (the converter's default), `io_dtype` input and
        output. `representative_data` is calibrated on, at most `steps` images."""
        if io_dtype not in ("uint8", "int8"):
            raise FaceedgeError(f"io_dtype {io_dtype!r}: choose uint8 or int8")
        if steps < 1:
            raise FaceedgeError(f"calibration steps {steps}: the int8 recipe needs at least one image")
        return cls("int8", representative_data, steps, io_dtype, per_channel)

    @classmethod
    def for_float16(cls) -> QuantizationConfig:
        """float16 weights, float32 compute and I/O: half the size, (almost) float32 outputs."""
        return cls("float16")

    @classmethod
    def for_float32(cls) -> QuantizationConfig:
        """No quantization: the reference the other variants' sizes are compared with."""
        return cls("float32")

    def describe(self) -> str:
        if self.variant == "int8":
            per = "per-channel" if self.per_channel else "per-tensor"
            return (
                f"int8 full-integer (TFLITE_BUILTINS_INT8), {per} weights, {self.io_dtype} input and output, "
                f"calibrated on up to {self.steps} images"
            )
        if self.variant == "float16":
            return "float16 weights, float32 input and output"
        return "float32, no quantization"

    def set_converter_options(self, converter: Any) -> None:
        """Apply this recipe to a `tf.lite.TFLiteConverter`."""
        import tensorflow as tf

        if self.variant == "float32":
            return
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if self.variant == "float16":
            converter.target_spec.supported_types = [tf.float16]
            return
        converter.representative_dataset = self._calibration_generator
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io = tf.uint8 if self.io_dtype == "uint8" else tf.int8
        converter.inference_input_type = io
        converter.inference_output_type = io
        converter._experimental_disable_per_channel = not self.per_channel

    def _calibration_generator(self):
        """Yield [batch of one] float32 inputs, as the converter wants; fail loudly on an empty set."""
        assert self.representative_data is not None  # for_int8 guarantees it
        n = 0
        for image in self.representative_data():
            if n >= self.steps:
                break
            x = np.asarray(image, dtype=np.float32)
            yield [x if x.ndim == 4 else x[np.newaxis]]
            n += 1
        if n == 0:
            raise FaceedgeError("calibration set is empty: no representative images to quantize with")
        log.info("calibrated int8 on %d images", n)
