"""From per-frame scores to a steady label: threshold, temporal smoothing, hysteresis, events.

One noisy frame should not flip what the device reports, so the per-frame score goes through

1. **smoothing** over the last `window` frames: `moving_average` of the probabilities, or
   `majority` (the fraction of frames voting for each label), or `none`;
2. **hysteresis** on the smoothed score: a binary model turns positive only when the smoothed
   score reaches `threshold + hysteresis` and negative only below `threshold - hysteresis`;
   a softmax model switches from label A to B only when B leads A by `hysteresis`;
3. an **event** on the frame where the smoothed label changes (including the first time one is
   decided after start).

The threshold is the manifest's (chosen by the conversion stage) unless the config overrides it.
No label is decided before `min_frames` frames (default: a full window). `reset()` forgets the
window (after a stall or reconnect, old frames must not vote), but remembers the last decided
label so that re-deciding the same label is not reported as a change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np

from device.manifest import Manifest
from device.validation import Meta, Strict


class DecisionConfig(Strict):
    threshold: Annotated[float, Meta(ge=0.0, le=1.0, description="None = the manifest's threshold")] | None = None
    smoothing: Literal["moving_average", "majority", "none"] = "moving_average"
    window: Annotated[int, Meta(ge=1, le=1000, description="frames smoothed over")] = 5
    min_frames: (
        Annotated[int, Meta(ge=1, description="frames before a first smoothed label (None = window)")] | None
    ) = None
    hysteresis: Annotated[float, Meta(ge=0.0, lt=0.5, description="margin on the smoothed score to switch labels")] = (
        0.05
    )

    def check(self) -> None:
        if self.min_frames is not None and self.min_frames > self.window:
            raise ValueError(f"min_frames ({self.min_frames}) must not exceed window ({self.window})")


@dataclass(frozen=True)
class Decision:
    label: str  # this frame alone, under the threshold (binary) or argmax (softmax)
    score: float  # P(positive) for binary, top-class probability for softmax
    smoothed_label: str | None  # None until min_frames frames were seen
    smoothed_score: float  # binary: smoothed P(positive); softmax: smoothed score of smoothed_label
    event: bool  # the smoothed label changed on this frame


class Decider:
    """Stateful per-stream decision; `update(scores)` once per classified frame.

    O(1) per frame whatever the window: a ring of the last `window` values plus their running
    sum (binary: Python floats; softmax: one float64 vector per frame, updated in place; majority:
    0/1 votes, so the sums are exact counts). The running sum is recomputed exactly (`math.fsum`,
    `ndarray.sum`) each time the ring wraps, so rounding cannot accumulate over a long run; the
    smoothed score equals the mean of the window to within a few ulps
    (tests/test_device_perf.py holds it against `np.mean`).
    """

    def __init__(self, cfg: DecisionConfig, manifest: Manifest) -> None:
        self.cfg = cfg
        self.labels = list(manifest.labels)
        self.binary = manifest.output_kind == "sigmoid"
        self.threshold = manifest.threshold if cfg.threshold is None else cfg.threshold
        self.majority = cfg.smoothing == "majority"
        if self.binary:
            self.positive = manifest.positive_label
            self.negative = manifest.negative_label
        self.window = 1 if cfg.smoothing == "none" else cfg.window
        self.min_frames = 1 if cfg.smoothing == "none" else (cfg.min_frames or cfg.window)
        # binary: majority compares the fraction of positive votes with 1/2, averages the threshold
        self._cut = 0.5 if self.majority else self.threshold
        self._index = {lbl: i for i, lbl in enumerate(self.labels)}
        if self.binary:
            self._ring: list[float] = [0.0] * self.window
            self._sum = 0.0
        else:
            k = len(self.labels)
            self._vring = np.zeros((self.window, k), np.float64)  # no per-frame allocation
            self._vsum = np.zeros(k, np.float64)
            self._onehot = np.zeros(k, np.float64)
        self._n = 0  # frames in the window (≤ window)
        self._i = 0  # next slot
        self.state: str | None = None  # smoothed label of the current window
        self.last_decided: str | None = None  # survives reset()
        self.events = 0

    def reset(self) -> None:
        self._n = 0
        self._i = 0
        self.state = None
        if self.binary:
            self._sum = 0.0
        else:
            self._vsum.fill(0.0)

    def update(self, scores) -> Decision:
        if self.binary:
            if type(scores) is np.ndarray and scores.ndim == 1:  # the daemon's case: no conversion
                p = float(scores[0])
            else:
                p = float(np.asarray(scores, dtype=np.float64).reshape(-1)[0])
            positive = p >= self.threshold
            label = self.positive if positive else self.negative
            self._push((1.0 if positive else 0.0) if self.majority else p)
            smoothed, sscore = self._decide_binary()
            out_score = p
        else:
            scores = np.asarray(scores, dtype=np.float64).reshape(-1)
            k = int(np.argmax(scores))
            label, out_score = self.labels[k], float(scores[k])
            if self.majority:
                self._onehot.fill(0.0)
                self._onehot[k] = 1.0
                self._push_vector(self._onehot)
            else:
                self._push_vector(scores)
            smoothed, sscore = self._decide_softmax()
        event = smoothed is not None and smoothed != self.last_decided
        if smoothed is not None:
            self.last_decided = smoothed
        if event:
            self.events += 1
        return Decision(label, out_score, smoothed, sscore, event)

    # -- internals ---------------------------------------------------------------------------
    def _advance(self) -> bool:
        """Move to the next slot; True when the ring just wrapped (time to resync the sum)."""
        if self._n < self.window:
            self._n += 1
        self._i += 1
        if self._i == self.window:
            self._i = 0
            return True
        return False

    def _push(self, value: float) -> None:
        ring, i = self._ring, self._i
        if self._n == self.window:
            self._sum -= ring[i]
        ring[i] = value
        self._sum += value
        if self._advance():
            self._sum = math.fsum(ring)  # exact again: no drift over a long run

    def _push_vector(self, value: np.ndarray) -> None:
        row = self._vring[self._i]
        if self._n == self.window:
            np.subtract(self._vsum, row, out=self._vsum)
        row[:] = value
        np.add(self._vsum, row, out=self._vsum)
        if self._advance():
            self._vring.sum(axis=0, out=self._vsum)

    def _decide_binary(self) -> tuple[str | None, float]:
        s = self._sum / self._n
        t, h = self._cut, self.cfg.hysteresis
        if self._n < self.min_frames:
            return None, s
        if self.state is None:
            self.state = self.positive if s >= t else self.negative
        elif self.state == self.positive and s < t - h:
            self.state = self.negative
        elif self.state == self.negative and s >= t + h:
            self.state = self.positive
        return self.state, s

    def _decide_softmax(self) -> tuple[str | None, float]:
        mean = self._vsum / self._n
        if self._n < self.min_frames:
            return None, float(mean.max())
        best = int(np.argmax(mean))
        if self.state is None:
            self.state = self.labels[best]
        else:
            cur = self._index[self.state]
            if best != cur and mean[best] >= mean[cur] + self.cfg.hysteresis:
                self.state = self.labels[best]
        return self.state, float(mean[self._index[self.state]])
