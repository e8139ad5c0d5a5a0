"""Telemetry: counters, histograms, rates, health status and the Prometheus exposition text."""

from __future__ import annotations

import math
import re
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from device.telemetry import BUCKETS_MS, Telemetry
from device.types import Result


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def result(i: int, event: bool = False) -> Result:
    return Result(i, 1_700_000_000.0 + i, "face", 0.9, "face", 0.8, event=event, stages_ms={"invoke": 2.0})


# Exposition format 0.0.4, line by line: comments, or `name{labels} value`.
SAMPLE_RE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})? '
    r"(NaN|[+-]Inf|[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?)$"
)


def check_exposition(text: str) -> dict:
    """Validate the text strictly and return {family name: family} from prometheus_client's parser."""
    assert text.endswith("\n")
    typed: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            parts = line.split(" ", 3)
            assert len(parts) == 4, line
            if parts[1] == "TYPE":
                assert parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"), line
                assert parts[2] not in typed, f"TYPE twice for {parts[2]}"
                typed[parts[2]] = parts[3]
            continue
        assert SAMPLE_RE.match(line), f"bad sample line: {line!r}"
        name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or base in typed, f"sample {name} has no TYPE line"
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_counters_and_histogram_figures():
    t = Telemetry()
    for ms in (0.3, 1.5, 1.5, 7.0, 30000.0):
        t.observe("invoke", ms)
    t.inc("frames_dropped", 3)
    t.inc("my_custom")
    families = check_exposition(t.prometheus_text())

    assert families["faceedge_frames_dropped"].type == "counter"  # parser strips _total
    (s,) = [s for s in families["faceedge_frames_dropped"].samples if s.name.endswith("_total")]
    assert s.value == 3
    assert [s.value for s in families["faceedge_my_custom"].samples if s.name.endswith("_total")] == [1]

    hist = families["faceedge_stage_latency_seconds"]
    assert hist.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")}
    assert len(buckets) == len(BUCKETS_MS) + 1
    assert buckets["0.0005"] == 1  # 0.3 ms
    assert buckets["0.002"] == 3  # + two 1.5 ms
    assert buckets["0.01"] == 4  # + 7 ms
    assert buckets["10"] == 4  # 30 s is above the largest edge
    assert buckets["+Inf"] == 5
    values = [buckets[k] for k in sorted(buckets, key=lambda k: math.inf if k == "+Inf" else float(k))]
    assert values == sorted(values), "buckets must be cumulative"
    (total,) = [s.value for s in hist.samples if s.name.endswith("_sum")]
    assert total == pytest.approx((0.3 + 1.5 + 1.5 + 7.0 + 30000.0) / 1000)
    (count,) = [s.value for s in hist.samples if s.name.endswith("_count")]
    assert count == 5

    snap = t.snapshot()
    assert snap["counters"]["frames_dropped"] == 3
    lat = snap["latency_ms"]["invoke"]
    assert lat["count"] == 5 and lat["p50"] == 1.5 and lat["p99"] == 30000.0


def test_gauges_status_and_model_info_in_exposition():
    clock = FakeClock()
    t = Telemetry(clock=clock)
    t.set_model("ab" * 32)
    t.observe('we"ird\\stage', 1.0)  # quotes and backslashes in a label must be escaped
    t.set_status("ok")
    t.set_gauge("mqtt_connected", 1)
    for i in range(11):
        t.frame_captured(1_700_000_000.0 + i / 10)
        clock.t += 0.1
    families = check_exposition(t.prometheus_text())
    status = {s.labels["status"]: s.value for s in families["faceedge_status"].samples}
    assert status == {"starting": 0, "ok": 1, "stalled": 0, "error": 0}
    (info,) = families["faceedge_model_info"].samples
    assert info.labels == {"sha256": "ab" * 32}
    stages = {s.labels["stage"] for s in families["faceedge_stage_latency_seconds"].samples}
    assert stages == {'we"ird\\stage'}
    assert families["faceedge_camera_fps"].samples[0].value == pytest.approx(10 / 1.1, rel=1e-6)
    assert math.isnan(families["faceedge_last_result_age_seconds"].samples[0].value)
    assert families["faceedge_last_frame_age_seconds"].samples[0].value == pytest.approx(0.1)
    assert families["faceedge_mqtt_connected"].samples[0].value == 1


def test_rates_decay_and_ages():
    clock = FakeClock()
    t = Telemetry(clock=clock)
    for i in range(31):  # 30 fps for 1 s
        t.frame_captured()
        if i % 3 == 0:
            t.result_published(result(i, event=(i == 0)))
        clock.t += 1 / 30
    snap = t.snapshot()
    assert snap["camera_fps"] == pytest.approx(30, rel=0.05)
    assert snap["results_fps"] == pytest.approx(10, rel=0.1)
    assert snap["counters"]["frames_captured"] == 31
    assert snap["counters"]["results"] == 11
    assert snap["counters"]["events"] == 1
    assert t.latest.frame_id == 30
    clock.t += 10  # no frames for 10 s: the rates fall to 0 and the ages grow
    snap = t.snapshot()
    assert snap["camera_fps"] == 0 and snap["results_fps"] == 0
    assert snap["last_frame_age_s"] == pytest.approx(10 + 1 / 30, abs=1e-3)
    assert snap["uptime_s"] == pytest.approx(31 / 30 + 10, abs=1e-3)


def test_status_and_stall_detection_without_the_loop():
    clock = FakeClock()
    t = Telemetry(stall_after_s=2.0, clock=clock)
    assert t.snapshot()["status"] == "starting"
    t.set_status("ok")
    t.frame_captured()
    clock.t += 1.9
    assert t.status() == "ok"
    clock.t += 0.2  # the loop is stuck and sets nothing; the snapshot still says stalled
    snap = t.snapshot()
    assert snap["status"] == "stalled" and "no frame for 2.1 s" in snap["reason"]
    t.frame_captured()
    assert t.status() == "ok"
    t.set_status("error", "model failed")
    assert t.snapshot()["reason"] == "model failed"
    with pytest.raises(ValueError, match="bogus"):
        t.set_status("bogus")
    with pytest.raises(ValueError, match="Bad-Name"):
        t.inc("Bad-Name")


def test_thread_safe_counts():
    t = Telemetry()

    def work():
        for _ in range(5000):
            t.inc("frames_dropped")
            t.observe("crop", 1.0)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert t.counter("frames_dropped") == 20000
    assert t.snapshot()["latency_ms"]["crop"]["count"] == 20000


def test_a_stuck_loop_is_stalled_even_while_frames_arrive():
    clock = FakeClock()
    t = Telemetry(stall_after_s=1.0, clock=clock)
    t.set_status("ok")
    for _ in range(5):  # the camera delivers, the loop handles each frame
        t.frame_captured()
        t.loop_progress()
        clock.t += 0.1
    assert t.status() == "ok"
    for _ in range(15):  # the loop hangs on a frame; the camera goes on
        t.frame_captured()
        clock.t += 0.1
    snap = t.snapshot()
    assert snap["status"] == "stalled" and "loop" in snap["reason"] and snap["last_frame_age_s"] == 0.1
    t.loop_progress()  # it gets going again
    assert t.status() == "ok"


def test_the_documented_healthz_fields_are_the_snapshot():
    from pathlib import Path

    row = next(
        line
        for line in (Path(__file__).parents[1] / "docs/outputs.md").read_text().splitlines()
        if line.startswith("| `/healthz` |")
    )
    documented = set(re.findall(r"`([a-z_0-9]+)`", row.split("|")[2]))
    assert documented - {"ok"} == set(Telemetry().snapshot())
