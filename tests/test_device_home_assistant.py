"""Home Assistant MQTT discovery (device/outputs/homeassistant.py) against a real mosquitto.

A subscriber plays Home Assistant's part: it reads the retained discovery configs, checks them
against the configuration keys Home Assistant documents for MQTT binary sensors and sensors (and
their `device` and `origin` maps), then follows the entities the way Home Assistant would: the
label's state from the state topic, the score through its value template, availability from the
availability topic. The daemon is the real one (`python -m device run`), on a folder of images
whose label changes every second; it is killed with SIGKILL for the last will.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers import ROOT
from tests.helpers.mosquitto import Recorder

pytestmark = pytest.mark.timeout(240)

# Configuration keys from Home Assistant's documentation (home-assistant.io, MQTT Binary Sensor and
# MQTT Sensor pages, "Configuration Variables"; `device` and `origin` maps from the same pages and
# the MQTT discovery page). A key outside these sets would be rejected by Home Assistant's schema.
COMMON_KEYS = {
    "availability", "availability_mode", "availability_template", "availability_topic", "default_entity_id",
    "device", "device_class", "enabled_by_default", "encoding", "entity_category", "entity_picture",
    "expire_after", "force_update", "icon", "json_attributes_template", "json_attributes_topic", "name",
    "object_id", "origin", "payload_available", "payload_not_available", "platform", "qos", "state_topic",
    "unique_id", "value_template",
}  # fmt: skip
DOCUMENTED_KEYS = {
    "binary_sensor": COMMON_KEYS | {"off_delay", "payload_off", "payload_on"},
    "sensor": COMMON_KEYS
    | {"last_reset_value_template", "options", "state_class", "suggested_display_precision", "unit_of_measurement"},
}
REQUIRED_KEYS = {"binary_sensor": {"state_topic"}, "sensor": {"state_topic"}}
DEVICE_KEYS = {
    "configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model", "model_id", "name",
    "serial_number", "suggested_area", "sw_version", "via_device",
}  # fmt: skip
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
STRING_KEYS = {
    "name", "unique_id", "state_topic", "availability_topic", "payload_available", "payload_not_available",
    "payload_on", "payload_off", "value_template", "device_class", "state_class", "icon",
}  # fmt: skip


def check_discovery(topic: str, cfg: dict) -> str:
    """Fail unless `cfg` is a config Home Assistant accepts on `topic`; returns the component."""
    parts = topic.split("/")
    assert len(parts) == 5 and parts[0] == "homeassistant" and parts[4] == "config", topic
    component = parts[1]
    assert component in DOCUMENTED_KEYS, topic
    unknown = set(cfg) - DOCUMENTED_KEYS[component]
    assert not unknown, f"{topic}: keys Home Assistant does not document: {unknown}"
    assert REQUIRED_KEYS[component] <= set(cfg), topic
    for k in STRING_KEYS & set(cfg):
        assert isinstance(cfg[k], str) and cfg[k], (topic, k)
    assert cfg["qos"] in (0, 1, 2) if "qos" in cfg else True
    dev = cfg["device"]
    assert not set(dev) - DEVICE_KEYS, dev
    assert dev.get("identifiers") or dev.get("connections"), "a device needs identifiers or connections"
    assert "unique_id" in cfg, "device info only works with a unique_id"
    assert not set(cfg.get("origin", {})) - ORIGIN_KEYS and cfg["origin"]["name"]
    if component == "sensor" and cfg.get("device_class") == "enum":
        assert isinstance(cfg["options"], list) and all(isinstance(o, str) for o in cfg["options"])
    return component


class HomeAssistantEmulation:
    """Follows entities from retained discovery configs, as Home Assistant's MQTT integration does."""

    def __init__(self, port: int) -> None:
        self.rec = Recorder(port, "#")
        assert self.rec.subscribed.wait(5)

    def configs(self) -> dict[str, dict]:
        out = {}
        for _, topic, payload, _retain in self.rec.on_prefix("homeassistant/"):
            if payload:
                out[topic] = json.loads(payload)
            else:
                out.pop(topic, None)  # an empty config deletes the entity
        return out

    def entity_state(self, cfg: dict) -> str | None:
        msgs = self.rec.on(cfg["state_topic"])
        if not msgs:
            return None
        payload = msgs[-1][2].decode()
        if "payload_on" in cfg:
            return {cfg["payload_on"]: "on", cfg["payload_off"]: "off"}.get(payload, "unknown")
        if cfg.get("value_template") == "{{ value_json.smoothed_score }}":
            return str(json.loads(payload)["smoothed_score"])
        return payload

    def available(self, cfg: dict) -> bool | None:
        msgs = self.rec.on(cfg["availability_topic"])
        if not msgs:
            return None
        return msgs[-1][2].decode() == cfg["payload_available"]

    def close(self) -> None:
        self.rec.close()


def write_scene_folder(folder: Path) -> None:
    """10 'open' then 10 'closed' images of the tiny model's rule (left half brighter = open)."""
    import cv2

    folder.mkdir()
    for i in range(20):
        img = np.full((32, 32, 3), 50, np.uint8)
        img[:, :16] = 210 if i < 10 else 50
        img[:, 16:] = 50 if i < 10 else 210
        cv2.imwrite(str(folder / f"{i:02d}.png"), img)


def daemon_config(tmp_path: Path, port: int, **mqtt) -> Path:
    write_scene_folder(tmp_path / "frames")
    cfg = {
        "source": {"type": "images", "path": str(tmp_path / "frames"), "loop": True, "fps": 10},
        "decision": {"window": 3},
        "outputs": {
            "mqtt": {
                "port": port,
                "topic_prefix": "faceedge/hat",
                "client_id": "faceedge-hat",
                "home_assistant": True,
                "result_interval_s": 0.2,
                "reconnect_min_s": 0.2,
                "reconnect_max_s": 1.0,
                **mqtt,
            }
        },
    }
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_daemon(config: Path, model_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "device", "run", "--config", str(config), "--model-dir", str(model_dir)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait(pred, timeout: float = 20.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_discovery_state_and_availability_as_home_assistant_sees_them(broker, tiny_models, tmp_path):
    config = daemon_config(tmp_path, broker.port)
    ha = HomeAssistantEmulation(broker.port)
    proc = start_daemon(config, tiny_models["int8"])
    try:
        configs = wait(lambda: (c := ha.configs()) and len(c) == 2 and c, what="two discovery configs")
        components = {t: check_discovery(t, c) for t, c in configs.items()}
        assert components == {
            "homeassistant/binary_sensor/faceedge-hat/label/config": "binary_sensor",
            "homeassistant/sensor/faceedge-hat/score/config": "sensor",
        }
        label = configs["homeassistant/binary_sensor/faceedge-hat/label/config"]
        score = configs["homeassistant/sensor/faceedge-hat/score/config"]
        assert label["state_topic"] == "faceedge/hat/state"
        assert (label["payload_on"], label["payload_off"], label["name"]) == ("open", "closed", "open")
        assert label["availability_topic"] == score["availability_topic"] == "faceedge/hat/availability"
        assert label["device"] == score["device"] and label["unique_id"] != score["unique_id"]
        sha = json.loads((tiny_models["int8"] / "manifest.json").read_text())["sha256"]
        assert sha[:12] in label["device"]["model"] and label["device"]["sw_version"].startswith("faceedge ")

        # The label follows the scene: on (open) and off (closed) in turn, each state retained.
        wait(lambda: ha.available(label) is True, what="available")
        wait(lambda: ha.entity_state(label) == "on", what="label on")
        wait(lambda: ha.entity_state(label) == "off", what="label off")
        wait(lambda: ha.entity_state(label) == "on", what="label on again")
        assert 0.0 <= float(ha.entity_state(score)) <= 1.0

        # A Home Assistant that starts now sees the current state at once (retained).
        late = HomeAssistantEmulation(broker.port)
        try:
            wait(lambda: len(late.configs()) == 2 and late.entity_state(label) in ("on", "off"), 5, "late: state")
            assert late.available(label) is True
            # what a new subscriber gets at once, it gets as retained messages (MQTT 3.1.1 retain flag)
            assert all(m[3] for m in late.rec.on_prefix("homeassistant/")), "discovery configs must be retained"
            assert late.rec.on("faceedge/hat/state")[0][3], "the state must be retained"
        finally:
            late.close()

        proc.send_signal(signal.SIGKILL)  # no goodbye: the broker's last will says offline
        proc.wait(10)
        wait(lambda: ha.available(label) is False, 10, "offline after SIGKILL")
        assert ha.available(score) is False
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        ha.close()


def test_clean_stop_keeps_the_entities_and_ha_remove_deletes_them(broker, tiny_models, tmp_path):
    config = daemon_config(tmp_path, broker.port)
    ha = HomeAssistantEmulation(broker.port)
    proc = start_daemon(config, tiny_models["int8"])
    try:
        configs = wait(lambda: (c := ha.configs()) and len(c) == 2 and c, what="discovery")
        label = configs["homeassistant/binary_sensor/faceedge-hat/label/config"]
        wait(lambda: ha.entity_state(label) in ("on", "off"), what="a state")
        time.sleep(0.5)
        sent = [m[1] for m in ha.rec.messages if m[1].endswith("/config")]
        assert len(sent) == 2, sent  # once each at start (on connect), not again with the first result
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        wait(lambda: ha.available(label) is False, 5, "offline after a clean stop")
    finally:
        if proc.poll() is None:
            proc.kill()
        ha.close()
    after = HomeAssistantEmulation(broker.port)
    try:  # a clean stop removes nothing: the device stays in Home Assistant, unavailable
        wait(lambda: len(after.configs()) == 2, 5, "configs still retained")
    finally:
        after.close()

    watch = Recorder(broker.port, "#")  # what ha-remove's own connection publishes
    assert watch.subscribed.wait(5)
    p = subprocess.run(
        [sys.executable, "-m", "device", "ha-remove", "--config", str(config)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert "cleared homeassistant/binary_sensor/faceedge-hat/label/config" in p.stdout
    assert "WARNING" not in p.stderr, p.stderr  # a success says nothing alarming
    time.sleep(0.3)
    watch.close()
    assert b"online" not in [m[2] for m in watch.messages]  # ha-remove's connection says no "online"
    configs_seen = [m for m in watch.messages if m[1].endswith("/config") and m[2]]
    assert len(configs_seen) == 2  # the two retained at subscribe; none sent again before the clears
    gone = HomeAssistantEmulation(broker.port)
    try:
        time.sleep(1.0)  # retained messages arrive right after subscribing; give them time
        left = [m[1] for m in gone.rec.messages if m[2]]
        assert left == [], f"still retained: {left}"
    finally:
        gone.close()


def test_multi_label_model_is_an_enum_sensor():
    from device.manifest import Manifest
    from device.outputs.homeassistant import discovery_configs

    man = Manifest(
        variant="int8",
        sha256="ab" * 32,
        size_bytes=1,
        labels=["away", "alice", "bob"],
        output_kind="softmax",
        input_height=8,
        input_width=8,
        input={"dtype": "uint8", "shape": [1, 8, 8, 3]},
        output={"dtype": "uint8", "shape": [1, 3]},
    )
    configs = dict(discovery_configs(man, prefix="faceedge/x", discovery_prefix="homeassistant", node="n1", host="pi"))
    label = configs["homeassistant/sensor/n1/label/config"]
    assert check_discovery("homeassistant/sensor/n1/label/config", label) == "sensor"
    assert label["device_class"] == "enum" and label["options"] == ["away", "alice", "bob"]
    assert "homeassistant/binary_sensor/n1/label/config" not in configs


def test_discovery_prefix_is_checked():
    from device.outputs.configs import MqttConfig

    with pytest.raises(ValueError, match="discovery_prefix"):
        MqttConfig(home_assistant=True, discovery_prefix="home/#")
