"""The AI Camera (imx500) in the benchmark: the sensor runs the model, so there is no raw
interpreter and no thread count; only the daemon's loop is measured, beside the published figures.

Published: the sensor's frame rate (Raspberry Pi AI Camera announcement, Sept 2024: 2028x1520 at
30 fps, 4056x3040 at 10 fps), the fps the loop can reach at most; and the sensor's ISP + AI
processing "in 3.1 ms" with MobileNet V1 (Sony IMX500 press release, May 2020). No published
on-sensor figure for MobileNetV2 (or our models) was found: none is shown for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from device.errors import FaceedgeError

SENSOR_VARIANT = "imx500"
PUBLISHED_SENSOR = {
    "fps": {"2028x1520": 30.0, "4056x3040": 10.0},
    "dnn_ms": 3.1,
    "note": "AI Camera: sensor 30 fps at 2028x1520 (Raspberry Pi); ISP + AI 3.1 ms for "
    "MobileNet V1 (Sony); no published MobileNetV2 figure",
}


def sensor_source_check(
    found: dict[str, Path], source: dict[str, Any] | None, config: dict[str, Any] | None, pipeline: bool
) -> None:
    """The AI Camera's model is benched alone, on the imx500 source, and only as the daemon's loop
    (there is no interpreter on the Pi to time raw)."""
    if len(found) > 1:
        raise FaceedgeError(
            f"--variants {','.join(found)}: bench imx500 on its own (--variants imx500 --source "
            "imx500): it runs on the AI Camera, the others on the CPU"
        )
    if not pipeline:
        raise FaceedgeError(
            "--variants imx500 with --no-pipeline: the model runs on the sensor, so the only "
            "figures on the Pi are the daemon's loop (drop --no-pipeline)"
        )
    kind = (source or ((config or {}).get("source") or {})).get("type")
    if kind != "imx500":
        raise FaceedgeError(
            f"--variants imx500 runs on the AI Camera: --source imx500 (or --source config with "
            f"source.type imx500), not {kind or 'synthetic'!r}"
        )


def sensor_line(variant: str, result: dict[str, Any]) -> str:
    """The line printed after the AI Camera's loop was measured."""
    stages = result["stages_ms"]
    dnn = stages.get("sensor_dnn")
    return (
        f"sensor   {variant:8s}: {result['fps']:.1f} fps, postprocess p50 "
        f"{stages['postprocess']['p50']:.3f} ms, latency p50 {stages['latency']['p50']:.1f} ms"
        + (f", sensor DNN p50 {dnn['p50']:.2f} ms" if dnn else "")
        + f"  peak RSS {result['peak_rss_mb']:.1f} MB  first result {result['first_result_s']:.3f} s"
    )
