"""Generated frames for tests, demos and benchmarks: no camera, no files, a known content.

Patterns (all cheap: a frame is one memcpy out of a pattern precomputed at open):

- ``halves``: the left or the right half is the brighter one, swapping every `switch_every`
  frames, with a moving bright bar for motion. The tiny test model's rule ("left half brighter")
  flips with it, so smoothing and label-change events can be observed end to end.
- ``bars``: vertical colour bars scrolling sideways over a gradient.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np

from device.sources.base import FrameSource, Pacer, SourceConfig, fit_out, register_source
from device.validation import Meta


class SyntheticConfig(SourceConfig, tag="synthetic"):
    width: Annotated[int, Meta(ge=8, le=7680)] = 640
    height: Annotated[int, Meta(ge=8, le=4320)] = 480
    fps: Annotated[float, Meta(ge=0, description="frames per second; 0 = as fast as consumed")] = 30.0
    pattern: Literal["halves", "bars"] = "halves"
    switch_every: Annotated[int, Meta(ge=1, description="halves: frames between left/right swaps")] = 60
    frames: Annotated[int, Meta(ge=1, description="end after this many frames (None = endless)")] | None = None


@register_source("synthetic")
class SyntheticSource(FrameSource):
    cfg: SyntheticConfig

    BAR = 16  # px, width of the moving bar / colour bars
    STEP = 4  # px the pattern moves per frame

    def __init__(self, cfg: SyntheticConfig) -> None:
        super().__init__(cfg)
        self._n = 0
        self._pacer = Pacer(cfg.fps)
        self._base: np.ndarray | None = None

    def open(self) -> None:
        h, w = self.cfg.height, self.cfg.width
        # built in place in uint8: no full-frame float temporaries (they would show in peak RSS)
        if self.cfg.pattern == "halves":
            base = np.empty((2, h, w, 3), np.uint8)
            grad = np.linspace(0, 40, h).astype(np.uint8)[:, None, None]
            base[0, :, : w // 2] = 190 + grad
            base[0, :, w // 2 :] = 60 + grad
            base[1] = base[0, :, ::-1]
        else:
            period = 8 * self.BAR
            x = np.arange(w + period)
            colours = np.array(
                [
                    [255, 255, 255],
                    [255, 255, 0],
                    [0, 255, 255],
                    [0, 255, 0],
                    [255, 0, 255],
                    [255, 0, 0],
                    [0, 0, 255],
                    [0, 0, 0],
                ],
                np.uint8,
            )
            row = colours[(x // self.BAR) % 8]
            shade = np.linspace(0.5, 1.0, h, dtype=np.float32)[:, None, None]
            base = np.empty((h, w + period, 3), np.uint8)
            np.multiply(row[None], shade, out=base, casting="unsafe")
        self._base = base
        self._n = 0

    @property
    def live(self) -> bool:
        return self.cfg.frames is None

    @property
    def paced(self) -> bool:
        return self.cfg.fps > 0

    def read(self, out: np.ndarray | None = None, timeout: float | None = None) -> np.ndarray | None:
        assert self._base is not None, "read() before open()"
        if self.cfg.frames is not None and self._n >= self.cfg.frames:
            return None
        self._pacer.wait()
        h, w = self.cfg.height, self.cfg.width
        out = fit_out(out, (h, w, 3))
        n = self._n
        if self.cfg.pattern == "halves":
            np.copyto(out, self._base[(n // self.cfg.switch_every) % 2])
            x = (n * self.STEP) % max(1, w - self.BAR)
            out[: h // 8, x : x + self.BAR] = 255  # motion confined to the top strip
        else:
            off = (n * self.STEP) % (8 * self.BAR)
            np.copyto(out, self._base[:, off : off + w])
        self._n += 1
        return out

    def close(self) -> None:
        self._base = None

    def describe(self) -> str:
        c = self.cfg
        return f"synthetic {c.pattern} {c.width}x{c.height} @ {c.fps:g} fps"
