"""Home Assistant MQTT discovery for the MQTT output (`outputs.mqtt.home_assistant: true`).

Home Assistant's MQTT integration creates entities from retained JSON configs it finds under
``<discovery_prefix>/<component>/<node_id>/<object_id>/config`` (discovery prefix ``homeassistant``
unless configured). For the loaded model this publishes, retained:

- the smoothed label: a ``binary_sensor`` for a binary (sigmoid) model, named after its positive
  label, ``on`` when the smoothed label is the positive one (``payload_on``/``payload_off`` are the
  two labels); a ``sensor`` with ``device_class: enum`` and the labels as ``options`` otherwise. Its
  ``state_topic`` is ``<prefix>/state``: the current smoothed label, plain text, retained, so a
  Home Assistant that restarts sees the state at once.
- the score: a ``sensor`` on ``<prefix>/result`` reading ``smoothed_score`` (P(positive label) for
  a binary model; for more labels, the smoothed score of the smoothed label). Results come at the
  camera's rate unless ``result_interval_s`` limits them: 1 s is plenty for Home Assistant.
- both with the availability topic of the last will (``<prefix>/availability``: ``online`` /
  ``offline``), and one device: name ``faceedge <host>``, the model's variant and sha256 as its
  model, the faceedge version as its software version.

Configs are (re)published at every connect and whenever the model changes (a SIGHUP reload).

Removing the device: a clean stop publishes only ``offline`` (the entity shows as unavailable and
keeps its history); a restart, deploy or reboot must not delete it from Home Assistant. To remove it,
``python -m device ha-remove --config device.yaml`` publishes empty retained payloads on every
config topic this node can have, and on its state and availability topics: Home Assistant then
deletes the entities and the device, and the broker forgets the retained messages.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from typing import Any

from device import __version__

log = logging.getLogger(__name__)

COMPONENTS = ("binary_sensor", "sensor")
OBJECTS = ("label", "score")
ORIGIN = {"name": "faceedge", "sw_version": __version__}


def node_id(client_id: str) -> str:
    """The discovery topic's node id: the MQTT client id with what HA does not allow replaced."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", client_id) or "faceedge"


def config_topic(discovery_prefix: str, component: str, node: str, obj: str) -> str:
    return f"{discovery_prefix}/{component}/{node}/{obj}/config"


def all_config_topics(discovery_prefix: str, node: str) -> list[str]:
    """Every config topic this node may have published (whatever model it ran)."""
    return [config_topic(discovery_prefix, c, node, o) for c in COMPONENTS for o in OBJECTS]


def discovery_configs(
    manifest, *, prefix: str, discovery_prefix: str, node: str, host: str
) -> list[tuple[str, dict[str, Any]]]:
    """(topic, config) for the model's entities; pure (tests check the keys against HA's docs)."""
    common = {
        "availability_topic": f"{prefix}/availability",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": [node],
            "name": f"faceedge {host}",
            "manufacturer": "faceedge",
            "model": f"{manifest.variant} classifier, model sha256 {manifest.sha256[:12]}",
            "sw_version": f"faceedge {__version__}",
        },
        "origin": ORIGIN,
    }
    if manifest.output_kind == "sigmoid":
        label = (
            "binary_sensor",
            {
                "name": manifest.positive_label,
                "unique_id": f"{node}_label",
                "state_topic": f"{prefix}/state",
                "payload_on": manifest.positive_label,
                "payload_off": manifest.negative_label,
                "qos": 1,
            },
        )
    else:
        label = (
            "sensor",
            {
                "name": "Label",
                "unique_id": f"{node}_label",
                "state_topic": f"{prefix}/state",
                "device_class": "enum",
                "options": list(manifest.labels),
                "qos": 1,
            },
        )
    score = (
        "sensor",
        {
            "name": "Score",
            "unique_id": f"{node}_score",
            "state_topic": f"{prefix}/result",
            "value_template": "{{ value_json.smoothed_score }}",
            "state_class": "measurement",
            "icon": "mdi:gauge",
        },
    )
    out = []
    for obj, (component, cfg) in zip(OBJECTS, (label, score)):
        out.append((config_topic(discovery_prefix, component, node, obj), {**cfg, **common}))
    return out


class HomeAssistant:
    """What the MQTT output publishes for Home Assistant: the discovery configs of the model the
    daemon runs (from `Telemetry.manifest`), and the retained state. Messages are (topic, payload,
    qos, retain) tuples for the output to send; nothing here touches the network."""

    def __init__(self, cfg, *, prefix: str, client_id: str, telemetry) -> None:
        self.cfg = cfg
        self.prefix = prefix
        self.node = node_id(client_id)
        self.telemetry = telemetry
        self.host = socket.gethostname() or "device"
        self.topic_state = f"{prefix}/state"
        self._published_sha: str | None = None
        self._stale: list[str] = []  # config topics of a previous model that this one has not

    def configs(self) -> list[tuple[str, bytes, int, bool]]:
        """The discovery configs of the current model ([] before a model is loaded)."""
        man = self.telemetry.manifest
        if man is None:
            return []
        configs = discovery_configs(
            man, prefix=self.prefix, discovery_prefix=self.cfg.discovery_prefix, node=self.node, host=self.host
        )
        mine = {t for t, _ in configs}
        # A reload from a binary to a multi-label model: the old binary_sensor must go.
        gone = [t for t in all_config_topics(self.cfg.discovery_prefix, self.node) if t not in mine]
        self._published_sha = man.sha256
        msgs = [(t, b"", 1, True) for t in gone if t in self._stale]
        self._stale = sorted(mine)
        return msgs + [(t, json.dumps(c).encode(), 1, True) for t, c in configs]

    def model_changed(self, sha256: str) -> bool:
        return self.telemetry.manifest is not None and sha256 != self._published_sha

    def state(self, label: str) -> tuple[str, bytes, int, bool]:
        return (self.topic_state, label.encode(), self.cfg.qos_event, True)


# ----------------------------------------------------------------------------- ha-remove


def remove(cfg, *, timeout_s: float = 10.0) -> list[str]:
    """Publish empty retained payloads on every discovery config topic of this node and on its
    state and availability topics; returns the topics cleared. FaceedgeError when the broker cannot
    be reached or does not acknowledge."""
    import time

    from device.errors import FaceedgeError
    from device.outputs.mqtt import MqttOutput
    from device.telemetry import Telemetry

    host = socket.gethostname() or "device"
    daemon_id = cfg.client_id or f"faceedge-{host}"  # the daemon's, as MqttOutput makes it
    # Its own client id (the daemon's would take over its session), TLS and password as configured,
    # no last will: this connection leaves no "offline" behind. One attempt, no retries.
    one_try = {"client_id": f"{daemon_id}-ha-remove", "reconnect_min_s": timeout_s, "reconnect_max_s": timeout_s}
    out = MqttOutput(cfg.model_copy(update=one_try), Telemetry(), will=False)
    topics = all_config_topics(cfg.discovery_prefix, node_id(daemon_id))
    topics += [f"{out.prefix}/state", f"{out.prefix}/availability"]
    client = out.client
    why: list[str] = []
    client.on_connect_fail = client.on_refused = why.append
    client.on_connect = lambda: None  # not the daemon's "online" and discovery configs: only the clears
    client.on_disconnect = lambda reason: None  # our own stop below, not a lost connection to warn about
    client.start(cfg.host, cfg.port)
    try:
        deadline = time.monotonic() + timeout_s
        while not client.wait_connected(0.05):
            if why or time.monotonic() > deadline:
                raise FaceedgeError(
                    f"outputs.mqtt: cannot connect to {cfg.host}:{cfg.port}: {why[0] if why else 'timed out'}"
                )
        sent = [(t, client.publish(t, b"", 1, True)) for t in topics]
        for t, msg in sent:
            if not msg.wait(max(0.0, deadline - time.monotonic())):
                raise FaceedgeError(f"outputs.mqtt: {cfg.host}:{cfg.port} did not acknowledge clearing {t}")
    finally:
        client.stop(1.0)
    return topics


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "ha-remove",
        help="remove this device from Home Assistant (clear its retained MQTT discovery configs)",
        description="Publish empty retained payloads on the Home Assistant discovery config topics, the state "
        "and the availability topic of the daemon configured by --config (its outputs.mqtt): Home Assistant "
        "deletes the device and its entities. Stop the daemon first, or it publishes them again.",
    )
    p.add_argument("--config", required=True, help="the daemon's device YAML config (its outputs.mqtt)")
    p.set_defaults(func=_cmd_remove)


def _cmd_remove(args) -> int:
    from device.config import load_config
    from device.errors import FaceedgeError

    cfg = load_config(args.config)
    if cfg.outputs.mqtt is None:
        raise FaceedgeError(f"{args.config}: key 'outputs.mqtt': not configured, nothing to remove")
    for t in remove(cfg.outputs.mqtt):
        print(f"cleared {t}")
    return 0
