"""The schemas written down in docs/ (docs/schemas/*.json, docs/outputs.md) held against what a real
daemon publishes: JSON lines, MQTT result/event/state/availability messages (real mosquitto), GET
/latest, and the metric families of /metrics (parsed with prometheus_client's own parser)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from device.config import parse_config
from device.daemon import Daemon
from tests.helpers import ROOT
from tests.helpers.mosquitto import Mosquitto, Recorder

pytestmark = pytest.mark.timeout(180)
SCHEMAS = ROOT / "docs" / "schemas"


def schema(name: str) -> dict:
    s = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(s)
    return s


def validate(obj, s) -> None:
    jsonschema.Draft202012Validator(s).validate(obj)


def scene_folder(folder: Path, n: int = 24) -> list[str]:
    """open, open, ..., closed, ...: the tiny model's rule, so the smoothed label changes."""
    import cv2

    folder.mkdir(parents=True)
    names = []
    for i in range(n):
        img = np.full((32, 32, 3), 50, np.uint8)
        if i < n // 2:
            img[:, :16] = 210  # left half brighter: open
        else:
            img[:, 16:] = 210  # closed
        name = f"f{i:02d}.png"
        cv2.imwrite(str(folder / name), img)
        names.append(name)
    return names


def test_jsonl_mqtt_and_http_match_the_documented_schemas(tiny_models, tmp_path):
    result_s, event_s = schema("result.schema.json"), schema("event.schema.json")
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    rec = Recorder(broker.port, "sch/#")
    try:
        assert rec.subscribed.wait(5)
        names = scene_folder(tmp_path / "frames")
        cfg = parse_config(
            {
                "source": {"type": "images", "path": str(tmp_path / "frames"), "fps": 0},
                "decision": {"window": 3},
                "outputs": {
                    "jsonl": {"path": str(tmp_path / "out.jsonl")},
                    "http": {"port": 0},
                    "mqtt": {"port": broker.port, "topic_prefix": "sch", "home_assistant": True, "client_id": "sch"},
                },
            }
        )
        with Daemon(cfg, model_dir=tiny_models["int8"]) as d:
            mqtt = next(o for o in d.outputs if o.type == "mqtt")
            assert mqtt.wait_connected(5)
            stats = d.run(max_seconds=60)
            http = next(o for o in d.outputs if o.type == "http")
            with urllib.request.urlopen(http.url + "/latest", timeout=5) as r:
                latest = json.loads(r.read())
            with urllib.request.urlopen(http.url + "/metrics", timeout=5) as r:
                metrics_text = r.read().decode()
            assert rec.wait_for(lambda m: m[1] == "sch/result" and json.loads(m[2])["frame_id"] == len(names), 10)
        assert stats["results"] == len(names)

        lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert len(lines) == len(names)
        for line in lines + [latest] + [json.loads(m[2]) for m in rec.on("sch/result")]:
            validate(line, result_s)
        assert [x["file"] for x in lines] == names and [x["frame_index"] for x in lines] == list(range(len(names)))
        assert {x["run_id"] for x in lines} == {d.run_id} and {x["source"] for x in lines} == {"images"}
        assert all(list(x["scores"]) == ["open"] and x["scores"]["open"] == x["score"] for x in lines)  # P(open)
        events = [json.loads(m[2]) for m in rec.on("sch/event")]
        assert [(e["previous"], e["label"]) for e in events] == [(None, "open"), ("open", "closed")]
        for e in events:
            validate(e, event_s)
        assert [m[2] for m in rec.on("sch/state")] == [b"open", b"closed"]  # plain text
        assert [m[2] for m in rec.on("sch/availability")][:1] == [b"online"]
        check_metrics(metrics_text)
    finally:
        rec.close()
        broker.kill()


def check_metrics(text: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    doc = json.loads((SCHEMAS / "metrics.json").read_text())["families"]
    documented = {f["name"]: f for f in doc}
    exposed = {}
    for fam in text_string_to_metric_families(text):
        # the parser drops _total from counter family names
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        exposed[name] = fam
    unknown = set(exposed) - set(documented)
    assert not unknown, f"/metrics families not in docs/schemas/metrics.json: {unknown}"
    for name, fam in exposed.items():
        assert fam.type == documented[name]["type"], name
        for s in fam.samples:
            assert set(s.labels) <= set(documented[name]["labels"]), (name, s.labels)
    expected_here = {
        n
        for n, f in documented.items()
        if f["when"]
        in ("always", "after the first result", "after the first frame", "outputs.mqtt on", "Linux (/proc)")
    }
    assert expected_here <= set(exposed), expected_here - set(exposed)
    value = {
        n: exposed[n].samples[0].value
        for n in ("process_resident_memory_bytes", "process_start_time_seconds", "process_cpu_seconds_total")
    }
    assert 10e6 < value["process_resident_memory_bytes"] < 8e9
    assert time.time() - 3600 < value["process_start_time_seconds"] <= time.time()
    assert value["process_cpu_seconds_total"] > 0
    md = (ROOT / "docs" / "outputs.md").read_text()
    missing = [n for n in documented if f"`{n}`" not in md]
    assert not missing, f"docs/outputs.md does not describe {missing}"


def test_video_file_results_carry_the_frame_index(tiny_models, tmp_path):
    import cv2

    path = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(6):
        w.write(np.full((48, 64, 3), 40 * i, np.uint8))
    w.release()
    cfg = parse_config(
        {"source": {"type": "opencv", "device": str(path), "realtime": False}, "outputs": {"jsonl": {"path": "-"}}}
    )
    results = []
    with Daemon(cfg, model_dir=tiny_models["int8"]) as d:
        d.run(on_result=results.append, max_seconds=30)
    assert [r.frame_index for r in results] == list(range(6))
    assert all(r.file is None and r.source == "opencv" for r in results)
    validate({"time": "2026-01-01T00:00:00.000Z", **results[0].to_dict()}, schema("result.schema.json"))


def test_camera_results_have_no_position(tiny_models):
    cfg = parse_config({"source": {"type": "synthetic", "fps": 30}, "outputs": {"jsonl": {"path": "-"}}})
    results = []
    stop = threading.Event()
    with Daemon(cfg, model_dir=tiny_models["int8"]) as d:
        d.run(stop, on_result=results.append, max_frames=3, max_seconds=20)
    assert results and all(r.file is None and r.frame_index is None and r.source == "synthetic" for r in results)
