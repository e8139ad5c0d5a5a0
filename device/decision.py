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

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from device.manifest import Manifest, Strict


class DecisionConfig(Strict):
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="None = the manifest's threshold")
    smoothing: Literal["moving_average", "majority", "none"] = "moving_average"
    window: int = Field(5, ge=1, le=1000, description="frames smoothed over")
    min_frames: int | None = Field(None, ge=1, description="frames before a first smoothed label (None = window)")
    hysteresis: float = Field(0.05, ge=0.0, lt=0.5, description="margin on the smoothed score to switch labels")

    @model_validator(mode="after")
    def _check(self) -> "DecisionConfig":
        if self.min_frames is not None and self.min_frames > self.window:
            raise ValueError(f"min_frames ({self.min_frames}) must not exceed window ({self.window})")
        return self


@dataclass(frozen=True)
class Decision:
    label: str  # this frame alone, under the threshold (binary) or argmax (softmax)
    score: float  # P(positive) for binary, top-class probability for softmax
    smoothed_label: str | None  # None until min_frames frames were seen
    smoothed_score: float  # binary: smoothed P(positive); softmax: smoothed score of smoothed_label
    event: bool  # the smoothed label changed on this frame


class Decider:
    """Stateful per-stream decision; `update(scores)` once per classified frame."""

    def __init__(self, cfg: DecisionConfig, manifest: Manifest) -> None:
        self.cfg = cfg
        self.labels = list(manifest.labels)
        self.binary = manifest.output_kind == "sigmoid"
        self.threshold = manifest.threshold if cfg.threshold is None else cfg.threshold
        if self.binary:
            self.positive = manifest.positive_label
            self.negative = manifest.negative_label
            width = 1
        else:
            width = len(self.labels)
        self.window = 1 if cfg.smoothing == "none" else cfg.window
        self.min_frames = 1 if cfg.smoothing == "none" else (cfg.min_frames or cfg.window)
        self._buf = np.zeros((self.window, width), np.float64)  # ring buffer, no per-frame allocation
        self._n = 0  # frames in the window (≤ window)
        self._i = 0  # next slot
        self.state: str | None = None  # smoothed label of the current window
        self.last_decided: str | None = None  # survives reset()
        self.events = 0

    def reset(self) -> None:
        self._n = 0
        self._i = 0
        self.state = None

    def update(self, scores: np.ndarray) -> Decision:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if self.binary:
            p = float(scores[0])
            label = self.positive if p >= self.threshold else self.negative
            vote = np.array([1.0 if p >= self.threshold else 0.0]) if self.cfg.smoothing == "majority" else p
            self._push(vote)
            smoothed, sscore = self._decide_binary()
            out_score = p
        else:
            k = int(np.argmax(scores))
            label, out_score = self.labels[k], float(scores[k])
            if self.cfg.smoothing == "majority":
                onehot = np.zeros(len(self.labels))
                onehot[k] = 1.0
                self._push(onehot)
            else:
                self._push(scores)
            smoothed, sscore = self._decide_softmax()
        event = smoothed is not None and smoothed != self.last_decided
        if smoothed is not None:
            self.last_decided = smoothed
        if event:
            self.events += 1
        return Decision(label, out_score, smoothed, sscore, event)

    # -- internals ---------------------------------------------------------------------------
    def _push(self, value) -> None:
        self._buf[self._i] = value
        self._i = (self._i + 1) % self.window
        self._n = min(self._n + 1, self.window)

    def _mean(self) -> np.ndarray:
        return self._buf[: self._n].mean(axis=0) if self._n < self.window else self._buf.mean(axis=0)

    def _decide_binary(self) -> tuple[str | None, float]:
        s = float(self._mean()[0])
        # majority: the fraction of positive votes is compared with 1/2; averages with the threshold
        t = 0.5 if self.cfg.smoothing == "majority" else self.threshold
        h = self.cfg.hysteresis
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
        mean = self._mean()
        if self._n < self.min_frames:
            return None, float(mean.max())
        best = int(np.argmax(mean))
        if self.state is None:
            self.state = self.labels[best]
        else:
            cur = self.labels.index(self.state)
            if best != cur and mean[best] >= mean[cur] + self.cfg.hysteresis:
                self.state = self.labels[best]
        return self.state, float(mean[self.labels.index(self.state)])
