"""The daemon's footprint as a user starts it: `python -m device run` with JSONL, HTTP and MQTT, against
the bare loop (numpy + OpenCV + the runtime only) on the same model, source and threads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from device.bench.footprint import daemon_config, daemon_footprint
from device.bench.pipeline import bench_bare_loop, source_config
from device.config import parse_config

# Measured on the 2-core dev machine (docs/bench.md): 7.0-7.2 MB over the bare loop at 640x480 with the
# bench model, yaml, msgspec, logging, argparse, the HTTP server and the MQTT client (no OpenSSL: no
# TLS configured) and the daemon's own modules. paho-mqtt (+8.4 MB), http.server (+7), hashlib or hmac
# (OpenSSL, +3.6), secrets (+4.5) or pydantic (+13) coming back fails it.
RSS_OVER_BARE_MAX_MB = 10.0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM needs Linux /proc")
def test_cli_daemon_peak_rss_over_the_bare_loop(tiny_models):
    model_dir = tiny_models["int8"]
    bare = bench_bare_loop(model_dir, 1, source=source_config("synthetic", (640, 480)), seconds=1.0, warmup_seconds=0.5)
    daemon = daemon_footprint(model_dir, 1, resolution=(640, 480), seconds=2.0)
    assert bare is not None and daemon is not None
    assert daemon["results_per_s"] > 0 and daemon["exit_code"] == 0  # it ran, and stopped cleanly on SIGTERM
    assert 0 < daemon["first_result_from_exec_s"] < 10
    excess = daemon["peak_rss_mb"] - bare["peak_rss_mb"]
    assert 0 < excess <= RSS_OVER_BARE_MAX_MB, (daemon["peak_rss_mb"], bare["peak_rss_mb"])


def test_footprint_config_is_every_output_and_valid():
    cfg = parse_config(daemon_config((640, 480), 1), "footprint")
    assert cfg.outputs.jsonl is not None and cfg.outputs.http is not None and cfg.outputs.mqtt is not None
    assert cfg.outputs.http.host == cfg.outputs.mqtt.host == "127.0.0.1"  # loopback only
    assert cfg.source.type == "synthetic" and cfg.model.num_threads == 1


def test_validation_library_is_light(tmp_path):
    """The device path validates with msgspec: pydantic (19 MB, 0.4-0.7 s) is not imported."""
    import subprocess

    code = "import sys, device.config, device.daemon; print(' '.join(sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    modules = r.stdout.split()
    assert "device.daemon" in modules and "msgspec" in modules, r.stderr
    assert not [m for m in modules if m.startswith("pydantic")]


HEAVY = ("ssl", "_ssl", "_hashlib", "hmac", "secrets", "importlib.metadata", "email", "http.server", "http.client")


def test_the_daemon_with_every_output_loads_no_heavy_library():
    """What the excess is made of stays out: a daemon's modules, with HTTP and MQTT (no TLS) built, a run
    id and the runtime's version, load none of these (each 2-13 MB, docs/bench.md)."""
    import subprocess

    code = (
        "import sys, device.config, device.daemon, device.outputs.http, device.outputs.mqtt\n"
        "from device.outputs.configs import MqttConfig\n"
        "from device.telemetry import Telemetry\n"
        "from device.types import new_run_id\n"
        "from device.runtime import load_runtime\n"
        "device.outputs.mqtt.MqttOutput(MqttConfig(), Telemetry()); new_run_id(); load_runtime()\n"
        "print(' '.join(sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    modules = set(r.stdout.split())
    assert "device.outputs.mqttclient" in modules, r.stderr
    assert not [m for m in modules if m.split(".")[0] in {"paho", "pydantic"} or m in HEAVY]


def test_runtime_version_without_importlib_metadata():
    from importlib.metadata import version

    from device.runtime import _dist_version

    for dist in ("ai-edge-litert", "ai_edge_litert", "numpy", "msgspec", "PyYAML"):
        assert _dist_version(dist) == version(dist), dist
    assert _dist_version("no-such-distribution") == "unknown"
