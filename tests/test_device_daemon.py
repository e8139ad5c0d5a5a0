"""The daemon loop in-process and `make run-device`: real interpreter, real frames, real outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from device.config import parse_config
from device.crop import load_image_rgb, resize_to_input
from device.daemon import STAGES, Daemon
from device.runtime import Classifier
from tests.fakes import picamera2 as fake_picamera2
from tests.helpers.video import write_video

ROOT = Path(__file__).resolve().parents[1]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_synthetic_run_labels_follow_the_scene_and_events_fire(tiny_models):
    cfg = parse_config(
        {
            "source": {"type": "synthetic", "width": 320, "height": 240, "fps": 0, "switch_every": 10},
            "decision": {"smoothing": "moving_average", "window": 3, "hysteresis": 0.05},
            "outputs": {"http": {"port": 0}},
        }
    )
    results = []
    with Daemon(cfg, model_dir=tiny_models["int8"]) as d:
        stats = d.run(max_frames=40, on_result=results.append)
        http = next(o for o in d.outputs if o.type == "http")
        code, health = http_get(f"http://127.0.0.1:{http.port}/healthz")
    assert stats["results"] == 40 and [r.frame_id for r in results] == list(range(1, 41))
    # frames 1-10 left half bright (the tiny model's "open"), 11-20 right half bright, ...
    expected = ["open" if ((r.frame_id - 1) // 10) % 2 == 0 else "closed" for r in results]
    assert [r.label for r in results] == expected
    # window 3: first decision at frame 3; after a swap at 11, 21, 31 two of three frames outvote the old one
    assert [r.frame_id for r in results if r.event] == [3, 12, 22, 32]
    assert all(r.smoothed_label is None for r in results[:2])
    assert set(results[-1].stages_ms) == set(STAGES)
    assert all(r.model_sha256 == d.classifier.manifest.sha256 for r in results)
    assert stats["start_to_first_result_s"] < 1.0
    assert code == 200 and health["status"] == "ok" and health["model_sha256"] == d.classifier.manifest.sha256
    assert d.telemetry.counter("results") == 40 and d.telemetry.counter("events") == 4


def test_images_source_scores_equal_the_classifier_on_the_same_file(tiny_models, tmp_path):
    from tests.helpers.models import tiny_images

    imgs, _ = tiny_images(6, size=48, seed=3)
    for i, img in enumerate(imgs):
        import cv2

        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    cfg = parse_config({"source": {"type": "images", "path": str(tmp_path)}, "decision": {"smoothing": "none"}})
    with Daemon(cfg, model_dir=tiny_models["int8"]) as d:
        results = []
        stats = d.run(on_result=results.append)  # a folder without loop ends the run
    assert stats["results"] == 6 and stats["capture"]["dropped"] == 0  # unpaced: every image classified
    clf = Classifier.from_model_dir(tiny_models["int8"])
    for r, f in zip(results, sorted(tmp_path.glob("*.png"))):
        rgb = load_image_rgb(f)
        expected = clf.classify(resize_to_input(rgb[:, :], clf.input_size))  # 48x48 square: full crop = whole image
        assert r.scores == pytest.approx(expected.tolist(), abs=1e-6)


def test_picamera2_camera_is_closed_on_close(tiny_models, picam):
    cfg = parse_config({"source": {"type": "picamera2", "width": 64, "height": 48, "fps": 60}})
    with Daemon(cfg, model_dir=tiny_models["int8"]) as d:
        results = []
        d.run(max_frames=5, on_result=results.append)
        cam = fake_picamera2.STATE.instances[-1]
        assert cam.started and not cam.closed
    assert cam.closed and not cam.started
    # the fake's scene is red left / blue right in RGB: the model saw RGB, not BGR
    clf = Classifier.from_model_dir(tiny_models["int8"])
    scene = fake_picamera2.scene_rgb(64, 48)[:, 8:56]  # full mode: the centred 48x48 square
    as_rgb = clf.classify(resize_to_input(scene, clf.input_size)).tolist()
    as_bgr = clf.classify(resize_to_input(np.ascontiguousarray(scene[:, :, ::-1]), clf.input_size)).tolist()
    assert as_rgb != as_bgr
    assert len(results) == 5 and all(r.scores == pytest.approx(as_rgb, abs=1e-6) for r in results)


def test_stop_event_ends_run_promptly(tiny_models):
    cfg = parse_config({"source": {"type": "synthetic", "width": 64, "height": 64, "fps": 30}})
    stop = threading.Event()
    with Daemon(cfg, model_dir=tiny_models["int8"]) as d:
        threading.Timer(0.5, stop.set).start()
        stats = d.run(stop)
    assert 0.45 <= stats["run_s"] < 1.0 and 5 <= stats["results"] <= 20  # 30 fps for 0.5 s


def test_make_run_device_classifies_a_video(tiny_models, tmp_path):
    video = tmp_path / "clip.avi"
    write_video(video, n=30, size=(160, 120), fps=30)
    cfg = yaml.safe_load((ROOT / "configs" / "device.yaml").read_text())
    cfg["outputs"]["http"]["port"] = 0  # the sample's 8088 may be taken on a shared machine
    (tmp_path / "device.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run(
        [
            "make",
            "-s",
            "run-device",
            f"DEVICE_CONFIG={tmp_path / 'device.yaml'}",
            f"RUN={tiny_models['int8']}",
            f"SOURCE={video}",
            f"PY={sys.executable}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) >= 25  # 30 frames at the file's own 30 fps; a loaded machine may drop a few
    ids = [row["frame_id"] for row in rows]
    assert ids == sorted(ids) and ids[-1] <= 30
    assert {"time", "label", "score", "smoothed_label", "stages_ms", "frame_id"} <= set(rows[0])
    assert "end of stream" in r.stderr


def test_unusable_source_stops_with_one_error_line(tiny_models, tmp_path):
    cfg = tmp_path / "device.yaml"
    cfg.write_text(f"source: {{type: opencv, device: {tmp_path / 'gone.mp4'}}}\noutputs: {{jsonl: {{path: '-'}}}}\n")
    r = subprocess.run(
        [sys.executable, "-m", "device", "run", "--config", str(cfg), "--model-dir", str(tiny_models["int8"])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == f"error: source.device '{tmp_path / 'gone.mp4'}': no such video file"


@pytest.mark.slow
def test_reload_applies_new_config_sections(tiny_models, tmp_path):
    path = tmp_path / "device.yaml"
    path.write_text("source: {type: synthetic, width: 64, height: 48, fps: 50}\ndecision: {window: 5}\n")
    stop = threading.Event()
    from device.config import load_config

    with Daemon(load_config(path), model_dir=tiny_models["int8"], config_path=path) as d:
        t = threading.Thread(target=d.run, args=(stop,), daemon=True)
        t.start()
        path.write_text(
            "source: {type: synthetic, width: 64, height: 48, fps: 50}\n"
            "decision: {window: 1, smoothing: none}\ncrop: {mode: center, fraction: 0.5}\n"
        )
        n = d.stats["results"]
        d.request_reload()
        deadline = time.monotonic() + 30
        while d.stats["reloads"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        stop.set()
        t.join(5)
    assert d.stats["reloads"] == 1 and d.stats["results"] > n + 5
    assert d.config.decision.window == 1 and d.cropper.cfg.mode == "center"
    assert d.latest.smoothed_label == d.latest.label  # window 1, no smoothing: the new decider is in use


def test_frames_that_keep_failing_end_the_loop_with_status_error(tiny_models, caplog):
    from device.sources.synthetic import SyntheticConfig, SyntheticSource

    class GreySource(SyntheticSource):  # test double of a broken source: 2-D frames
        def read(self, out=None, timeout=None):
            return np.zeros((48, 64), np.uint8)

    cfg = parse_config({})
    d = Daemon(cfg, model_dir=tiny_models["int8"], source_factory=lambda: GreySource(SyntheticConfig(fps=100)))
    with d, pytest.raises(ValueError, match="HxWx3"):
        d.run(max_seconds=10)
    assert d.telemetry.status() == "error" and d.telemetry.counter("errors") == 10
    assert len([r for r in caplog.records if "in a row)" in r.getMessage()]) == 10


# ----------------------------------------------------------------------------- silent successes are errors


def device_run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "device", "run", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def assert_one_line_error(p: subprocess.CompletedProcess, *words: str) -> str:
    assert p.returncode == 2, p.stdout[-500:] + p.stderr[-2000:]
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    (line,) = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    for w in words:
        assert w in line, line
    return line


def _stdout_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "device.yaml"
    cfg.write_text("outputs: {jsonl: {path: '-'}}\n")
    return cfg


@pytest.mark.parametrize("loop", [False, True])
def test_a_folder_of_corrupt_images_is_an_error_not_zero_results(tiny_models, tmp_path, loop):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        (photos / f"img{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated " * (i + 1))
    cfg = tmp_path / "device.yaml"
    cfg.write_text(
        f"source: {{type: images, path: {photos}, loop: {str(loop).lower()}}}\n"
        "capture: {stall_s: 1.0, reconnect_initial_s: 0.1, reconnect_max_s: 0.2}\n"
        "outputs: {jsonl: {path: '-'}}\n"
    )
    p = device_run(["--config", str(cfg), "--model-dir", str(tiny_models["int8"]), "--max-seconds", "30"])
    line = assert_one_line_error(p, str(photos), "4")
    assert "could be read" in line and p.stdout == ""


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--max-frames", "0"),
        ("--max-frames", "-1"),
        ("--max-seconds", "0"),
        ("--max-seconds", "-2"),
        ("--num-threads", "0"),
    ],
)
def test_run_limits_below_one_are_refused(tiny_models, tmp_path, flag, value):
    p = device_run(
        [
            "--config",
            str(_stdout_config(tmp_path)),
            "--model-dir",
            str(tiny_models["int8"]),
            "--source",
            "synthetic",
            flag,
            value,
        ]
    )
    assert_one_line_error(p, f"{flag} {value}")
    assert p.stdout == ""  # not one frame classified


def test_a_daemon_without_outputs_refuses_to_start(tiny_models, tmp_path):
    cfg = tmp_path / "device.yaml"
    cfg.write_text("source: {type: synthetic}\n")
    for args in (["--config", str(cfg)], []):  # a config without outputs:, and no config at all
        p = device_run([*args, "--model-dir", str(tiny_models["int8"]), "--max-frames", "5"])
        assert_one_line_error(p, "outputs")


def test_a_reload_that_removes_every_output_is_refused(tiny_models, tmp_path):
    path = tmp_path / "device.yaml"
    out = tmp_path / "results.jsonl"
    path.write_text(
        f"source: {{type: synthetic, width: 64, height: 48, fps: 50}}\noutputs: {{jsonl: {{path: {out}}}}}\n"
    )
    from device.config import load_config

    stop = threading.Event()
    with Daemon(load_config(path), model_dir=tiny_models["int8"], config_path=path) as d:
        t = threading.Thread(target=d.run, args=(stop,), daemon=True)
        t.start()
        path.write_text("source: {type: synthetic, width: 64, height: 48, fps: 50}\n")  # outputs: gone
        d.request_reload()
        deadline = time.monotonic() + 30
        while d.stats["reloads_refused"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        n = len(out.read_text().splitlines())
        time.sleep(0.3)
        stop.set()
        t.join(5)
    assert d.stats["reloads_refused"] == 1 and d.stats["reloads"] == 0
    assert len(out.read_text().splitlines()) > n  # still writing results where it did
