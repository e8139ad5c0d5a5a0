"""Small test videos the device tests decode with the real OpenCV."""

from __future__ import annotations

import cv2
import numpy as np

RED, BLUE = (220, 20, 20), (20, 20, 220)  # RGB


def write_video(path, n: int = 20, size=(64, 48), fps: float = 20.0) -> None:
    """MJPG .avi of `n` frames whose left half is RED and right half BLUE (in RGB)."""
    w, h = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert vw.isOpened()
    for _ in range(n):
        rgb = np.empty((h, w, 3), np.uint8)
        rgb[:, : w // 2] = RED
        rgb[:, w // 2 :] = BLUE
        vw.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    vw.release()
