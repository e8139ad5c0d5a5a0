"""Published figures the tables put beside a measurement on a Raspberry Pi, and the verdict.

MobileNetV2 1.0 224, XNNPACK, 4 threads: ms per inference (raw), and the picamera2 + int8 loop on a
Pi 4. Only a run of the same model, variant and thread count on the same board gets a figure.
"""

from __future__ import annotations

from typing import Any

# board → variant → (low, high) ms per inference
PUBLISHED_RAW_MS: dict[str, dict[str, tuple[float, float]]] = {
    "pi4": {"float32": (41.0, 46.0), "int8": (17.0, 20.0)},
    "pi5": {"int8": (4.0, 4.0)},
}
PUBLISHED_PIPELINE = {"pi4": {"int8": {"fps": 30.0, "capture_ms": 3.5}}}
PUBLISHED_THREADS = 4
PUBLISHED_NOTE = "MobileNetV2 1.0 224, XNNPACK, 4 threads (published)"


def is_published_model(model: dict[str, Any]) -> bool:
    """MobileNetV2 1.0 at 224×224: the model the published Pi figures are for (alpha unknown = assumed)."""
    return (
        model.get("backbone", "").startswith("mobilenet_v2")
        and model.get("input_size") == [224, 224]
        and model.get("alpha") in (None, 1.0)
    )


def published_raw(board: str | None, model: dict[str, Any], variant: str, threads: int) -> dict[str, Any] | None:
    """The published raw latency for this board/model/variant/threads, or None."""
    if not board or threads != PUBLISHED_THREADS or not is_published_model(model):
        return None
    rng = PUBLISHED_RAW_MS.get(board, {}).get(variant)
    if rng is None:
        return None
    return {"board": board, "ms_low": rng[0], "ms_high": rng[1], "note": PUBLISHED_NOTE}


def published_pipeline(board: str | None, model: dict[str, Any], variant: str) -> dict[str, Any] | None:
    if not board or not is_published_model(model):
        return None
    fig = PUBLISHED_PIPELINE.get(board, {}).get(variant)
    if fig is None:
        return None
    return {"board": board, **fig, "note": "picamera2 + int8 MobileNetV2 loop (published)"}


def verdict(measured_ms: float, low: float, high: float) -> str:
    """'as published', 'faster', or 'slower ×k' (10 % tolerance above the published range)."""
    if measured_ms < low * 0.9:
        return "faster than published"
    if measured_ms <= high * 1.1:
        return "as published"
    return f"slower ×{measured_ms / high:.1f}"
