"""How sharp a crop is and how it differs from others: the pure measures `device collect` keeps
crops by (sharpness of the focus, a 64-bit difference hash against near-duplicates)."""

from __future__ import annotations

import cv2
import numpy as np

SHARP_SIZE = 128  # crops are measured at this size, so thresholds do not depend on resolution
HASH_SIZE = 8  # dHash: 8x8 = 64 bits


def grey_thumb(rgb: np.ndarray, size: int = SHARP_SIZE) -> np.ndarray:
    return cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (size, size), interpolation=cv2.INTER_AREA)


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian (Pech-Pacheco et al. 2000): high for in-focus edges, low for blur."""
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def dhash(grey: np.ndarray, size: int = HASH_SIZE) -> int:
    """Difference hash: is each pixel of a (size+1)x size thumbnail brighter than its right neighbour."""
    small = cv2.resize(grey, (size + 1, size), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).reshape(-1)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()
