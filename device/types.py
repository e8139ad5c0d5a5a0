"""Types shared by the daemon loop, its outputs and the benchmark."""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

log = logging.getLogger(__name__)


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

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form every output publishes (scores rounded to 1e-6, stages to 1 µs).

        Built field by field: `dataclasses.asdict` deep-copies recursively and cost ~20 µs of the
        ~26 µs of one JSON line, on every frame. Same keys, order and values as `asdict` + rounding
        (tests/test_device_perf.py holds the two equal)."""
        return {
            "frame_id": self.frame_id,
            "timestamp": self.timestamp,
            "label": self.label,
            "score": round(self.score, 6),
            "smoothed_label": self.smoothed_label,
            "smoothed_score": round(self.smoothed_score, 6),
            "event": self.event,
            "stages_ms": {k: round(v, 3) for k, v in self.stages_ms.items()},
            "scores": [round(s, 6) for s in self.scores],
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


OUTPUT_TYPES: dict[str, type[Output]] = {}


def register_output(name: str):
    def deco(cls: type[Output]) -> type[Output]:
        cls.type = name
        OUTPUT_TYPES[name] = cls
        return cls

    return deco
