"""Types shared by the daemon loop, its outputs and the benchmark."""

from __future__ import annotations

import abc
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from device.registry import Registry

log = logging.getLogger(__name__)

# Version of the result schema every output publishes (docs/outputs.md, docs/schemas/). 2: schema_version,
# run_id, source, file, frame_index added; `scores` named by label (an object, was a list).
RESULT_SCHEMA_VERSION = 2


@dataclass
class Result:
    """One classified frame, as every output publishes it."""

    frame_id: int
    timestamp: float  # wall-clock time (time.time()) the frame was captured
    label: str  # per-frame label under the manifest's threshold
    score: float  # P(positive label) for binary models, top-class probability otherwise
    smoothed_label: str | None  # after temporal smoothing + hysteresis; None until enough frames
    smoothed_score: float
    event: bool = False  # True on the frame where the smoothed label changed
    stages_ms: dict[str, float] = field(default_factory=dict)  # capture_wait, crop, preprocess, invoke, ...
    scores: list[float] = field(default_factory=list)
    model_sha256: str = ""
    score_labels: tuple[str, ...] = ()  # the label each entry of `scores` is the probability of
    run_id: str = ""  # one per daemon start: tells results of different runs apart (frame_id restarts)
    source: str = ""  # the frame source's type (picamera2, opencv, images, synthetic, imx500)
    file: str | None = None  # image folders: the file the frame came from
    frame_index: int | None = None  # video files and image folders: 0-based position of the frame

    @classmethod
    def of(
        cls, frame: Any, decision: Any, scores: Any, stages: dict[str, float], manifest: Any, run_id: str, source: str
    ):
        """The result of a captured `frame` (device.sources.capture.Frame) the model scored and the
        Decider decided (`decision`), with its stage timings."""
        file, index = frame.position
        return cls(
            frame_id=frame.frame_id,
            timestamp=frame.timestamp,
            label=decision.label,
            score=decision.score,
            smoothed_label=decision.smoothed_label,
            smoothed_score=decision.smoothed_score,
            event=decision.event,
            stages_ms=stages,
            scores=scores.tolist(),
            model_sha256=manifest.sha256,
            score_labels=score_labels(manifest),
            run_id=run_id,
            source=source,
            file=file,
            frame_index=index,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form every output publishes (scores rounded to 1e-6, stages to 1 µs).

        Built field by field: `dataclasses.asdict` deep-copies recursively and cost ~20 µs of the
        ~26 µs of one JSON line, on every frame. Same keys, order and values as `asdict` + rounding
        (tests/test_device_perf.py holds the two equal). `scores` is an object keyed by label
        (`score_labels`; by position "0", "1", ... when a caller gave no names)."""
        names = self.score_labels or [str(i) for i in range(len(self.scores))]
        return {
            "schema_version": RESULT_SCHEMA_VERSION,
            "run_id": self.run_id,
            "source": self.source,
            "file": self.file,
            "frame_index": self.frame_index,
            "frame_id": self.frame_id,
            "timestamp": self.timestamp,
            "label": self.label,
            "score": round(self.score, 6),
            "smoothed_label": self.smoothed_label,
            "smoothed_score": round(self.smoothed_score, 6),
            "event": self.event,
            "stages_ms": {k: round(v, 3) for k, v in self.stages_ms.items()},
            "scores": {k: round(s, 6) for k, s in zip(names, self.scores)},
            "model_sha256": self.model_sha256,
        }


class Output(abc.ABC):
    """One result sink (JSONL, HTTP, MQTT). Outputs never raise into the loop and never block it long.

    Subclasses register themselves with `@register_output("name")`.
    """

    type: ClassVar[str] = ""

    def start(self) -> None:
        """Open files/sockets/threads. Called once before the first result."""

    @abc.abstractmethod
    def publish(self, result: Result) -> None:
        """Hand one result to the sink; must return quickly (queue it if I/O may block)."""

    def close(self) -> None:
        """Flush and release resources; called once at shutdown (within the 2 s SIGTERM budget)."""

    def publish_image(self, rgb) -> None:
        """The crop the model classified last (HxWx3 uint8 RGB, the caller's to give away), for
        `/latest.jpg`. Only called when `expose_images` is on; outputs that serve no images ignore it."""

    def publish_frame(self, rgb, box) -> None:
        """The live view (device/liveview.py): a downscaled copy of a recent frame (HxWx3 uint8 RGB,
        the caller's to give away) and the crop box in its pixels (x, y, w, h), or None. Only called
        when `expose_images` is on; outputs that show no images ignore it."""


OUTPUT_TYPES: Registry[type[Output]] = Registry("outputs")
register_output = OUTPUT_TYPES.register  # class decorator: an Output under `outputs: {name: ...}`


def new_run_id() -> str:
    """`<UTC start time>-<6 hex digits>`: sorts by time, unique across restarts and devices."""
    # os.urandom is what secrets.token_hex reads; `secrets` would bring hmac, OpenSSL and random (4.5 MB).
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + os.urandom(3).hex()


def score_labels(manifest) -> tuple[str, ...]:
    """The label each entry of the model's output is the probability of: the positive label for a
    sigmoid (one output, P(positive)), every label in order for a softmax."""
    if manifest.output_kind == "sigmoid":
        return (manifest.positive_label,)
    return tuple(manifest.labels)
