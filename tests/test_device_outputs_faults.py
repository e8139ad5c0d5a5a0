"""Faults 5 and 6 through the whole daemon: the broker is killed and the JSONL file is on a full disk
while a real interpreter classifies synthetic frames; classification goes on at full rate."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request

import pytest

from device.config import parse_config
from device.daemon import Daemon
from tests.helpers.mosquitto import Mosquitto, Recorder

pytestmark = pytest.mark.slow


def wait_until(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_daemon_keeps_classifying_through_broker_kill_and_full_disk(tiny_models, tmp_path, caplog):
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    rec = Recorder(broker.port, "e2e/#")
    assert rec.subscribed.wait(5)
    cfg = parse_config(
        {
            "source": {"type": "synthetic", "width": 160, "height": 120, "fps": 20, "switch_every": 10},
            "decision": {"smoothing": "moving_average", "window": 3},
            "outputs": {
                "jsonl": {"path": "/dev/full"},
                "http": {"port": 0},
                "mqtt": {
                    "port": broker.port,
                    "topic_prefix": "e2e",
                    "queue_size": 30,
                    "reconnect_min_s": 0.2,
                    "reconnect_max_s": 1.0,
                },
            },
        }
    )
    caplog.set_level(logging.WARNING)
    results = []
    stop = threading.Event()
    daemon = Daemon(cfg, model_dir=tiny_models["int8"])
    daemon.start()
    loop = threading.Thread(target=daemon.run, kwargs={"stop_event": stop, "on_result": results.append})
    loop.start()
    try:
        mqtt = next(o for o in daemon.outputs if o.type == "mqtt")
        http = next(o for o in daemon.outputs if o.type == "http")
        assert rec.wait_for(lambda m: m[1] == "e2e/result" and json.loads(m[2])["frame_id"] >= 10, 20)

        broker.kill()
        assert wait_until(lambda: not mqtt.connected, 5)
        n0, t0 = len(results), time.monotonic()
        depths = []
        while time.monotonic() - t0 < 2.0:
            depths.append(mqtt.queue_depth)
            time.sleep(0.05)
        outage_rate = (len(results) - n0) / (time.monotonic() - t0)
        print(
            f"\n{outage_rate:.1f} results/s with the broker dead (source 20 fps); "
            f"queue max {max(depths)} of 30; dropped {daemon.telemetry.counter('mqtt_dropped')}"
        )
        assert outage_rate > 12  # the loop does not wait on the network
        assert max(depths) <= 30 and daemon.telemetry.counter("mqtt_dropped") > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{http.port}/healthz", timeout=2) as r:
            assert r.status == 200 and json.loads(r.read())["status"] == "ok"  # outputs do not make it unhealthy

        up = broker.start()
        last_before = results[-1].frame_id
        assert mqtt.wait_connected(5)
        print(f"MQTT reconnected {time.monotonic() - up:.2f} s after the broker restarted")
        assert rec.wait_for(lambda m: m[1] == "e2e/result" and json.loads(m[2])["frame_id"] > last_before + 5, 10)
    finally:
        stop.set()
        loop.join(10)
        daemon.close()
        rec.close()
        broker.kill()
    assert not loop.is_alive()
    # Fault 6 at the same time: every JSONL write failed, one log line, all counted.
    jsonl_logs = [r for r in caplog.records if r.name == "device.outputs.jsonl"]
    assert len(jsonl_logs) == 1 and "No space left on device" in jsonl_logs[0].getMessage()
    assert daemon.telemetry.counter("output_errors") == len(results)
