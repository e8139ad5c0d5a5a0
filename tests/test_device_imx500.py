"""The AI Camera on the device side: the daemon on the fake IMX500 (tests/fakes/imx500.py), the
model/source/crop pairing, `device check` of an imx500 model dir. No TensorFlow: the sensor's outputs
come from the scene the test gives the fake (the slow end-to-end test, tests/test_convert_imx500.py,
feeds it the MCT simulation's outputs)."""

from __future__ import annotations

import numpy as np
import pytest

from device import check
from device.config import parse_config
from device.daemon import Daemon
from device.errors import FaceedgeError
from device.imx500 import Imx500Classifier, bind_source, load_classifier
from device.runtime import Classifier
from device.sources.imx500 import SENSOR_HEIGHT, SENSOR_WIDTH
from tests.fakes import imx500 as fake_imx500
from tests.fakes import picamera2 as fake_picamera2
from tests.helpers.imx500 import OUTPUT_SCALE, make_imx500_dir, scene

PROBS = np.array([0.10, 0.90, 0.49, 0.51, 0.50, 0.998, 0.002])


@pytest.fixture
def sensor(picam, monkeypatch):
    fake_imx500.install(monkeypatch)
    yield fake_imx500.STATE
    fake_imx500.STATE.reset()


def images(n: int, size: int = 40) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def config(**over) -> dict:
    cfg = {"source": {"type": "imx500", "width": 64, "height": 48, "fps": 120}, "decision": {"smoothing": "none"}}
    cfg.update(over)
    return cfg


def test_daemon_decides_on_the_sensor_outputs_of_each_frame(tmp_path, sensor):
    mdir = make_imx500_dir(tmp_path)
    sensor.scene = scene(images(len(PROBS)), PROBS)
    sensor.frames_without_outputs = 2  # the firmware upload: no tensor yet
    results = []
    with Daemon(parse_config(config()), model_dir=mdir) as d:
        stats = d.run(max_frames=3 * len(PROBS), on_result=results.append)
        cam = fake_picamera2.STATE.instances[-1]
        imx = sensor.instances[-1]
        assert cam.started and imx.config["network_file"] == str(mdir / "network.rpk")
    assert cam.closed
    assert len(results) == 3 * len(PROBS) and stats["no_outputs"] == 2
    assert [r.frame_id for r in results][:2] == [3, 4]  # frames 1 and 2 had no outputs
    clf = Imx500Classifier.from_model_dir(mdir)
    for r in results:
        p = PROBS[(r.frame_id - 1) % len(PROBS)]
        q = np.rint(p / OUTPUT_SCALE) * OUTPUT_SCALE  # the sensor's uint8 output, dequantized
        assert r.scores == pytest.approx([q], abs=1e-7)
        assert r.label == ("open" if q >= 0.5 else "closed") == clf.label_of(np.array([q]))[0]
    # 0.49 → 125/256 < 0.5, 0.51 → 131/256, 0.50 → 128/256 = 0.5 exactly: "open" (p >= threshold)
    by_frame = {r.frame_id: r.label for r in results}
    assert [by_frame[k] for k in (3, 4, 5, 6, 7)] == ["closed", "open", "open", "open", "closed"]
    assert set(results[-1].stages_ms) == {"frame_wait", "capture_wait", "postprocess", "latency"}
    assert d.telemetry.counter("frames_without_outputs") == 2


def test_crop_becomes_the_sensors_region_of_interest(tmp_path, sensor):
    mdir = make_imx500_dir(tmp_path)
    sensor.scene = scene(images(2), [0.2, 0.8])
    cases = [
        ({"mode": "center", "fraction": 0.5}, 1520),
        ({"mode": "full"}, SENSOR_HEIGHT),
        ({"mode": "full", "square": "stretch"}, None),
    ]
    for crop, side in cases:
        with Daemon(parse_config(config(crop=crop)), model_dir=mdir) as d:
            d.run(max_frames=1)
            roi = sensor.instances[-1].config["roi"]
        if side is None:
            assert roi == (0, 0, SENSOR_WIDTH, SENSOR_HEIGHT)
        else:
            assert roi == ((SENSOR_WIDTH - side) // 2, (SENSOR_HEIGHT - side) // 2, side, side)


@pytest.mark.parametrize(
    "over, message",
    [
        ({"source": {"type": "picamera2"}}, "set source.type imx500"),
        ({"crop": {"mode": "face"}}, "crop.mode 'face' cannot run on the AI Camera"),
        ({"crop": {"mode": "full", "square": "letterbox"}}, "crop.square 'letterbox'"),
    ],
)
def test_imx500_model_refuses_what_the_sensor_cannot_do(tmp_path, sensor, over, message):
    mdir = make_imx500_dir(tmp_path)
    with pytest.raises(FaceedgeError, match=message):
        Daemon(parse_config(config(**over)), model_dir=mdir).start()
    assert fake_picamera2.STATE.instances == [] and sensor.instances == []  # refused before opening


def test_unpackaged_model_says_how_to_package_it(tmp_path, sensor):
    mdir = make_imx500_dir(tmp_path, packaged=False)
    with pytest.raises(FaceedgeError, match=r"network.rpk: missing; package the model on the Pi: .*imx500-package"):
        Daemon(parse_config(config()), model_dir=mdir).start()


def test_cpu_model_refuses_the_imx500_source(tiny_models, sensor, tmp_path):
    import yaml

    with pytest.raises(FaceedgeError, match="runs the network on the AI Camera's sensor: load an imx500 model"):
        Daemon(parse_config(config()), model_dir=tiny_models["int8"]).start()
    (tmp_path / "device.yaml").write_text(yaml.safe_dump(config()))
    with pytest.raises(FaceedgeError, match="load an imx500 model"):  # device check (deploy's) says so too
        check.run(tmp_path / "device.yaml", tiny_models["int8"])
    clf = load_classifier(tiny_models["int8"])
    assert isinstance(clf, Classifier) and not clf.on_sensor
    assert bind_source(clf, parse_config({"source": {"type": "synthetic"}})).type == "synthetic"


def test_another_network_on_the_sensor_is_a_frame_failure(tmp_path, sensor):
    mdir = make_imx500_dir(tmp_path)
    sensor.scene = [(images(1)[0], [np.array([0.25, 0.75], np.float32)])]  # 2 values for a 1-unit model
    with Daemon(parse_config(config()), model_dir=mdir) as d:
        with pytest.raises(FaceedgeError, match="returned 2 output values, the model .* has 1"):
            d.run(max_frames=1, max_seconds=5)
    assert d.telemetry.counter("errors") >= 10


def test_no_ai_camera_is_retried_then_reported(tmp_path, sensor):
    mdir = make_imx500_dir(tmp_path)
    sensor.present = False
    cfg = config(capture={"reconnect_initial_s": 0.05, "reconnect_max_s": 0.05, "stall_s": 0.3})
    with Daemon(parse_config(cfg), model_dir=mdir) as d:
        stats = d.run(max_seconds=0.6)
        assert stats["results"] == 0 and d.grabber.stats.open_failures >= 2
        assert d.telemetry.status() in ("starting", "stalled")


def test_device_check_of_an_imx500_model(tmp_path, sensor):
    import yaml

    mdir = make_imx500_dir(tmp_path)
    cfg_file = tmp_path / "device.yaml"
    cfg_file.write_text(yaml.safe_dump(config()))
    r = check.run(cfg_file, mdir)
    assert r["ok"] and r["variant"] == "imx500" and r["network_file"] == str(mdir / "network.rpk")
    assert "network" in check.format_report(r) and "check OK" in check.format_report(r)
    assert not check.run(cfg_file, mdir, expect="open")["ok"]  # no image can be classified on the host
    with pytest.raises(FaceedgeError, match="set source.type imx500"):
        check.run(None, mdir)  # the default config's synthetic source cannot run it
    (mdir / "network.rpk").unlink()
    with pytest.raises(FaceedgeError, match="imx500-package"):
        check.run(cfg_file, mdir)


def test_bench_measures_the_ai_camera_loop_beside_the_published_figures(tmp_path, sensor, monkeypatch):
    import time
    from pathlib import Path

    from device.bench import pipeline, suite
    from device.bench.sensor import PUBLISHED_SENSOR
    from device.bench.suite import BenchOptions

    mdir = make_imx500_dir(tmp_path / "m")
    sensor.scene = scene(images(4), [0.2, 0.8, 0.3, 0.7])
    sensor.kpi_us = (3100, 450)  # what the sensor reports per frame in CnnKpiInfo (µs)

    def in_process(
        model_dir, threads, *, source, config=None, seconds=5.0, warmup_seconds=1.0, slice_seconds=0.25, timeout=None
    ):
        # the fake camera exists in this process only: run the pipeline child's code here
        return pipeline.pipeline_child(
            {
                "model_dir": str(model_dir),
                "threads": threads,
                "source": source,
                "config": config,
                "seconds": seconds,
                "warmup_seconds": warmup_seconds,
                "slice_seconds": slice_seconds,
                "spawned_at": time.time(),
            }
        )

    monkeypatch.setattr(pipeline, "bench_pipeline", in_process)
    report = suite.run(
        BenchOptions(
            model_dir=mdir,
            variants=("imx500",),
            source="imx500",
            resolution=(64, 48),
            pipeline_seconds=1.0,
            pipeline_warmup_seconds=0.2,
            out=tmp_path / "bench",
        )
    )
    assert report["raw"] == [] and report["pipeline"] == [] and report["bare"] == []
    (s,) = report["sensor"]
    assert s["raw_interleaved"] is None and s["published"] == PUBLISHED_SENSOR
    assert set(s["stage_names"]) == {
        "capture",
        "frame_wait",
        "capture_wait",
        "postprocess",
        "latency",
        "publish",
        "end_to_end",
        "sensor_dnn",
        "sensor_dsp",
    }
    assert s["stages_ms"]["sensor_dnn"]["p50"] == pytest.approx(3.1) and s["stages_ms"]["sensor_dsp"]["p50"] == 0.45
    assert 15 <= s["fps"] <= 33  # the fake camera delivers 30 fps; the loop keeps up
    md = Path(report["outputs"]["md"]).read_text()
    assert "## AI Camera (imx500" in md and "3.1 ms for MobileNet V1" in md and "sensor ≤ 30 fps" in md
    assert Path(report["outputs"]["png"]).stat().st_size > 0
    from device.errors import FaceedgeError

    with pytest.raises(FaceedgeError, match="--variants imx500 runs on the AI Camera: --source imx500"):
        suite.run(BenchOptions(model_dir=mdir, variants=("imx500",), source="synthetic", out=tmp_path / "b2"))


def test_bench_takes_the_ai_camera_model_only_when_asked(tiny_models, tmp_path):
    import shutil

    from device.bench import models, suite
    from device.bench.suite import BenchOptions

    run = tmp_path / "run"
    shutil.copytree(tiny_models["int8"], run / "export" / "int8")
    make_imx500_dir(run / "export")
    assert set(models.find_variants(run)) == {"int8"}  # a plain `make bench` measures the CPU models
    assert set(models.find_variants(run, ["imx500"])) == {"imx500"}
    with pytest.raises(FaceedgeError, match="bench imx500 on its own"):
        suite.run(BenchOptions(model_dir=run, variants=("int8", "imx500"), source="imx500", out=tmp_path / "b"))


def test_sample_config_for_the_ai_camera_runs_an_imx500_model(tmp_path, sensor):
    from device.config import load_config
    from tests.helpers import ROOT

    cfg = load_config(ROOT / "configs" / "device-imx500.yaml")
    mdir = make_imx500_dir(tmp_path)
    assert cfg.source.type == "imx500" and cfg.model.variant == "imx500"
    bound = bind_source(Imx500Classifier.from_model_dir(mdir), cfg)
    assert bound.network_file == str(mdir / "network.rpk") and bound.roi_fraction == 1.0
