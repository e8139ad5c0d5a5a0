"""Decode every frame of a video with OpenCV (BGR, as the daemon's opencv source reads it).

Imported by the parity tests on x86 and inside the emulated Pi (copied there): numpy + cv2 only."""

from __future__ import annotations

import numpy as np


def read_frames(video) -> np.ndarray:
    import cv2

    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr)
    cap.release()
    return np.stack(frames)
