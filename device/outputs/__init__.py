"""Result outputs (JSON lines, HTTP, MQTT), each optional, one interface (`device.types.Output`).

The daemon's config has an ``outputs:`` section validated by `OutputsConfig`; a section that is
absent (None) is off::

    outputs:
      jsonl: {path: "-"}                      # stdout, or a file with max_bytes/backups rotation
      http: {host: 127.0.0.1, port: 8088}     # /healthz /metrics /latest; token_file/token_env off loopback
      mqtt: {host: 127.0.0.1, port: 1883, topic_prefix: faceedge/pi1}

How the daemon drives them::

    outputs = build_outputs(cfg.outputs, telemetry, expose_images=False)
    start_outputs(outputs)                    # binds/opens; FaceedgeError on a port in use, bad path...
    ...per result: telemetry.result_published(result); publish_all(outputs, result)
    close_outputs(outputs)                    # at shutdown, within the SIGTERM budget

`/healthz`, `/metrics` and `/latest` read the shared `Telemetry` only, so the daemon must call
`telemetry.result_published(result)` for each result (`publish_all` does not).
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import Any

from device.errors import FaceedgeError
from device.outputs.configs import HttpConfig, MqttConfig
from device.outputs.jsonl import JsonlConfig, JsonlOutput
from device.telemetry import Telemetry
from device.types import OUTPUT_TYPES, Output, Result
from device.validation import Strict

# The MQTT output (its client; ssl with tls:) and the HTTP output (its server) cost memory: imported
# only when a config enables them (build_outputs) or their class is asked for (`device.outputs.HttpOutput`).
_MODULES = {"jsonl": "device.outputs.jsonl", "http": "device.outputs.http", "mqtt": "device.outputs.mqtt"}
_LAZY = {"HttpOutput": "device.outputs.http", "MqttOutput": "device.outputs.mqtt"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


log = logging.getLogger(__name__)

__all__ = [
    "OutputsConfig",
    "JsonlConfig",
    "HttpConfig",
    "MqttConfig",
    "JsonlOutput",
    "HttpOutput",
    "MqttOutput",
    "build_outputs",
    "start_outputs",
    "publish_all",
    "publish_image",
    "close_outputs",
    "replace_outputs",
]


class OutputsConfig(Strict):
    jsonl: JsonlConfig | None = None
    http: HttpConfig | None = None
    mqtt: MqttConfig | None = None


def build_outputs(cfg: OutputsConfig | None, telemetry: Telemetry, *, expose_images: bool = False) -> list[Output]:
    """The enabled outputs, constructed (secrets read, clients made) but not started.

    `expose_images` lets the HTTP output serve `/latest.jpg` from crops given to `publish_image`.
    """
    if cfg is None:
        return []
    outputs: list[Output] = []
    for name in OutputsConfig.field_names():
        section = getattr(cfg, name)
        if section is not None:
            importlib.import_module(_MODULES[name])  # registers the output class
            outputs.append(OUTPUT_TYPES[name](section, telemetry, expose_images=expose_images))
    return outputs


def start_outputs(outputs: list[Output]) -> None:
    """Start each output; if one fails, close those already started and re-raise."""
    started: list[Output] = []
    try:
        for o in outputs:
            o.start()
            started.append(o)
    except BaseException:
        close_outputs(started)
        raise


def publish_all(outputs: list[Output], result: Result) -> None:
    """Give `result` to every output. Outputs do not raise; this guards against one that does."""
    for o in outputs:
        try:
            o.publish(result)
        except Exception:
            log.exception("output %s raised on frame %s", o.type, result.frame_id)


def publish_image(outputs: list[Output], rgb) -> None:
    """Offer the latest crop to the outputs that can serve images (only when expose_images is on)."""
    for o in outputs:
        try:
            o.publish_image(rgb)
        except Exception:
            log.exception("output %s raised on an image", o.type)


def replace_outputs(outputs: list[Output], new: Any, old: Any, telemetry: Telemetry) -> tuple[list[Output], bool]:
    """On a reload: close `outputs`, start those of config `new` (its `outputs` and `expose_images`);
    when they cannot start (a port taken...), those of config `old` again. (outputs, whether `new`'s run)."""
    close_outputs(outputs)
    try:
        fresh = build_outputs(new.outputs, telemetry, expose_images=new.expose_images)
        start_outputs(fresh)
        return fresh, True
    except FaceedgeError as e:
        log.error("reload: new outputs refused (%s); keeping the previous ones", e)
    fresh = build_outputs(old.outputs, telemetry, expose_images=old.expose_images)
    start_outputs(fresh)
    return fresh, False


def close_outputs(outputs: list[Output]) -> None:
    """Close every output (never raises); logs how long it took."""
    t0 = time.monotonic()
    for o in reversed(outputs):
        try:
            o.close()
        except Exception:
            log.exception("output %s: error while closing", o.type)
    log.debug("outputs closed in %.3f s", time.monotonic() - t0)
