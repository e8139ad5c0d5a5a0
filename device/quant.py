"""Pure quantization math for TFLite tensors (uint8, int8 and float).

TFLite's affine quantization: real = scale * (q - zero_point). Both directions work in
int64/float64 *before* subtracting: a uint8 value minus a zero-point in uint8 arithmetic
wraps around (e.g. 3 - 128 = 131), which is the classic dequantization bug.
"""

from __future__ import annotations

import numpy as np


def is_quantized(dtype: np.dtype, scale: float) -> bool:
    """A tensor is affine-quantized when it is integer typed and has a non-zero scale."""
    return np.issubdtype(np.dtype(dtype), np.integer) and scale != 0.0


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """Map real values to `dtype` with round-half-to-even, then clip to the dtype's range."""
    dtype = np.dtype(dtype)
    if not is_quantized(dtype, scale):
        return np.asarray(x, dtype=dtype)
    info = np.iinfo(dtype)
    q = np.rint(np.asarray(x, dtype=np.float64) / scale).astype(np.int64) + int(zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Map quantized values back to float32 (int64 arithmetic before subtracting)."""
    q = np.asarray(q)
    if not is_quantized(q.dtype, scale):
        return q.astype(np.float32)
    return ((q.astype(np.int64) - int(zero_point)) * float(scale)).astype(np.float32)


def input_is_identity(dtype: np.dtype, scale: float, zero_point: int, tol: float = 1e-4) -> bool:
    """True when raw uint8 pixels can be copied into the tensor as they are (scale 1, zero-point 0).

    Models whose first layer takes raw 0..255 RGB get exactly this input quantization from the
    converter (scale ~0.99999, zero-point 0), so the per-frame quantize step becomes a copy.
    """
    return np.dtype(dtype) == np.uint8 and abs(scale - 1.0) < tol and int(zero_point) == 0
