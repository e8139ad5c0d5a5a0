"""The faults the daemon survives, each with the figures it is held to.

Real interpreters, real sockets on 127.0.0.1, a real unix datagram NOTIFY_SOCKET, real signals
to a real subprocess. The camera is the faithful picamera2 fake (tests/fakes/picamera2.py) or a
test double of the *source*; the models are real TFLite models.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from device.config import parse_config
from device.daemon import Daemon
from device.files import sha256_file
from device.manifest import load_manifest, write_manifest
from device.service import Notifier
from device.sources import SourceError, SyntheticConfig
from device.sources.synthetic import SyntheticSource

ROOT = Path(__file__).resolve().parents[1]
FIGURES: dict[str, object] = {}  # printed at the end of each test (pytest -s shows them)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, dict, float]:
    t = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            code, body = r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        code, body = e.code, json.loads(e.read())
    return code, body, time.monotonic() - t


def wait_until(pred, timeout: float, step: float = 0.01):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s")


class Runner:
    """Runs a started Daemon's loop in a thread, recording (result, wall time at publish)."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.stop = threading.Event()
        self.results: list[tuple] = []
        self.error: BaseException | None = None
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.d.run(self.stop, on_result=lambda r: self.results.append((r, time.time())))
        except BaseException as e:  # noqa: BLE001 - surfaced by the test
            self.error = e

    def __enter__(self) -> "Runner":
        self.d.start()
        self.t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.t.join(5)
        self.d.close()
        assert self.error is None, self.error

    @property
    def http(self) -> str:
        return next(o for o in self.d.outputs if o.type == "http").url


PICAM = {"type": "picamera2", "width": 64, "height": 48, "fps": 30}
CAPTURE = {
    "stall_s": 0.6,
    "read_timeout_s": 0.2,
    "reconnect_initial_s": 0.1,
    "reconnect_max_s": 0.4,
    "discard_after_reconnect": 2,
}


# ----------------------------------------------------------------------------- 1. source stalls


@pytest.mark.slow
def test_1_stall_is_reported_source_reopened_with_backoff_and_nothing_stale(tiny_models, picam, caplog):
    caplog.set_level(logging.INFO)
    cfg = parse_config({"source": PICAM, "capture": CAPTURE, "outputs": {"http": {"port": 0}}})
    with Runner(Daemon(cfg, model_dir=tiny_models["int8"])) as run:
        wait_until(lambda: len(run.results) >= 10, 5)
        # the camera goes away: no more frames, and it cannot be reacquired until it is back
        picam.busy_opens = 10**6
        picam.stalled.set()
        t_stall = time.monotonic()
        n_before = len(run.results)
        wait_until(lambda: http_get(run.http + "/healthz")[0] == 503, 3, step=0.02)
        t_detect, wall_detect = time.monotonic(), time.time()
        last_frame_wall = max(r.timestamp for r, _ in run.results)
        assert http_get(run.http + "/healthz")[1]["status"] == "stalled"
        time.sleep(max(0.0, t_stall + 2.6 - time.monotonic()))
        opens = [t for t in picam.open_times if t > t_stall]
        picam.busy_opens = 0
        picam.stalled.clear()
        t_back, wall_back = time.monotonic(), time.time()
        wait_until(lambda: any(r.timestamp > wall_back for r, _ in run.results), 3)
        t_resume = time.monotonic()
        time.sleep(0.3)
        code, health, _ = http_get(run.http + "/healthz")
        grabber = run.d.grabber
    detect_s = wall_detect - last_frame_wall
    gaps = np.diff(opens)
    after = [(r, pub) for r, pub in run.results[n_before:]]
    FIGURES["stall"] = {
        "stall_s": 0.6,
        "detected_after_last_frame_s": round(detect_s, 3),
        "reopen_intervals_s": [round(g, 3) for g in gaps],
        "resume_after_return_s": round(t_resume - t_back, 3),
        "discarded": grabber.stats.discarded,
    }
    print(FIGURES["stall"])
    assert detect_s <= 0.6 + 0.25  # health says stalled within stall_s (+ the 0.1 s poll)
    assert t_detect - t_stall <= 0.6 + 0.35
    # capped exponential backoff between failed reopen attempts: 0.2, 0.4, 0.4, ... (initial 0.1 went first)
    assert len(gaps) >= 3
    assert all(d - 0.005 <= g <= d + 0.15 for g, d in zip(gaps, [0.2, 0.4, 0.4, 0.4, 0.4])), gaps
    busy_lines = [r for r in caplog.records if "open failed (attempt" in r.getMessage()]
    assert len(busy_lines) >= len(opens) - 1  # one log line per failed attempt
    # frames resume once the camera is back: within one capped backoff + the discarded frames
    assert t_resume - t_back <= 0.4 + 0.5
    assert grabber.stats.discarded >= 2 and run.d.telemetry.counter("reconnects") == 1
    # nothing stale: no result for a frame captured during the outage, each published fresh
    assert not [r for r, _ in after if last_frame_wall < r.timestamp < wall_back]
    assert all(pub - r.timestamp < 0.3 for r, pub in after)
    assert code == 200 and health["status"] == "ok"


# ----------------------------------------------------------------------------- 2. a capture call that never returns


class HangingSource(SyntheticSource):
    """Test double of a source: once `hang` is set, read() blocks until the test releases it."""

    hang = threading.Event()
    release = threading.Event()

    def read(self, out=None, timeout=None):
        if self.hang.is_set():
            self.release.wait()
            raise SourceError("released by the test")
        return super().read(out, timeout)


@pytest.mark.slow
def test_2_hung_capture_healthz_answers_and_watchdog_stops(tiny_models, tmp_path):
    HangingSource.hang.clear()
    HangingSource.release.clear()
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.05)
    messages: list[tuple[float, str]] = []
    done = threading.Event()

    def listen():
        while not done.is_set():
            try:
                messages.append((time.monotonic(), sock.recv(4096).decode()))
            except socket.timeout:
                continue

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    cfg = parse_config({"capture": {"stall_s": 0.5}, "outputs": {"http": {"port": 0}}})
    notifier = Notifier(env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"})
    d = Daemon(
        cfg,
        model_dir=tiny_models["int8"],
        notifier=notifier,
        source_factory=lambda: HangingSource(SyntheticConfig(width=64, height=48, fps=50)),
    )
    try:
        with Runner(d) as run:
            wait_until(lambda: len(run.results) >= 50, 5)
            HangingSource.hang.set()
            t_hang = time.monotonic()
            time.sleep(1.5)
            code, health, answer_s = http_get(run.http + "/healthz")
            HangingSource.release.set()
    finally:
        done.set()
        listener.join(1)
        sock.close()
    pings = [t for t, m in messages if "WATCHDOG=1" in m]
    assert any(m.startswith("READY=1") for _, m in messages)
    before = [t for t in pings if t < t_hang]
    after = [t for t in pings if t > t_hang + 0.1]
    FIGURES["hang"] = {
        "pings_before": len(before),
        "pings_after_hang": len(after),
        "healthz_code": code,
        "healthz_status": health["status"],
        "healthz_answer_s": round(answer_s, 3),
    }
    print(FIGURES["hang"])
    assert len(before) >= 5  # pings while fresh results flowed (rate-limited to WATCHDOG_USEC/4)
    assert after == []  # no ping once capture hung: systemd would restart the service after WatchdogSec
    assert code == 503 and health["status"] == "stalled" and answer_s < 0.5


# ----------------------------------------------------------------------------- 3. camera busy at open


def test_3_camera_busy_at_open_retries_with_backoff(tiny_models, picam, caplog):
    caplog.set_level(logging.INFO)
    picam.busy_opens = 3
    cfg = parse_config({"source": PICAM, "capture": CAPTURE, "outputs": {"http": {"port": 0}}})
    with Runner(Daemon(cfg, model_dir=tiny_models["int8"])) as run:
        code, health, _ = http_get(run.http + "/healthz")
        wait_until(lambda: run.results, 5)
        first_s = run.d.stats["start_to_first_result_s"]
    gaps = np.diff(picam.open_times)
    lines = [r.getMessage() for r in caplog.records if "open failed" in r.getMessage()]
    FIGURES["busy"] = {"open_gaps_s": [round(g, 3) for g in gaps], "first_result_s": first_s}
    print(FIGURES["busy"])
    assert code == 503 and health["status"] == "starting"  # not ok while it cannot get the camera
    assert len(gaps) == 3
    # never sooner than the backoff (0.1, 0.2, 0.4 s); late by at most a loaded box's scheduling delay
    assert all(d - 0.005 <= g <= d + 0.15 for g, d in zip(gaps, [0.1, 0.2, 0.4])), gaps
    assert len(lines) == 3 and all("Device or resource busy" in ln for ln in lines)  # one line per attempt
    assert [f"attempt {i}" in ln for i, ln in enumerate(lines, 1)] == [True] * 3


# ----------------------------------------------------------------------------- 4. back-pressure


@pytest.fixture(scope="session")
def slow_model(tmp_path_factory, tiny_models) -> Path:
    """A float32 model that takes tens of ms per frame on one thread (a large upsampled conv)."""
    import keras

    from tests.helpers.models import convert_tiny

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = keras.layers.UpSampling2D(8)(x)
    for _ in range(3):
        x = keras.layers.Conv2D(48, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inp, out)
    return convert_tiny(model, np.zeros((4, 32, 32, 3), np.float32), tmp_path_factory.mktemp("slow"), "float32")


@pytest.mark.slow
def test_4_back_pressure_latency_bounded_drops_counted_memory_flat(slow_model):
    import psutil

    from device.runtime import Classifier

    # The camera must outrun the model on whatever machine runs this: measure the model first and
    # run the source at three times its rate (at least 30 fps, as a camera would).
    clf = Classifier.from_model_dir(slow_model, num_threads=1)
    img = np.zeros((*clf.input_size, 3), np.uint8)
    times = []
    for _ in range(8):
        t = time.perf_counter()
        clf.classify(img)
        times.append((time.perf_counter() - t) * 1000)
    del clf
    fps = max(30.0, 3000.0 / float(np.median(times[2:])))
    cfg = parse_config(
        {
            "source": {"type": "synthetic", "width": 640, "height": 480, "fps": fps},
            "model": {"num_threads": 1},
            "outputs": {"http": {"port": 0}},
        }
    )
    proc = psutil.Process()
    rss: list[tuple[float, float]] = []
    with Runner(Daemon(cfg, model_dir=slow_model)) as run:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 6.0:
            rss.append((time.monotonic() - t0, proc.memory_info().rss / 2**20))
            time.sleep(0.25)
        stats = dict(run.d.grabber.stats.as_dict())
        dropped_metric = run.d.telemetry.counter("frames_dropped")
    res = [r for r, _ in run.results][3:]  # skip the first frames (interpreter warm-up)
    invoke = np.array([r.stages_ms["invoke"] for r in res])
    latency = np.array([r.stages_ms["latency"] for r in res])
    period = float(np.median(invoke))
    warm = [m for t, m in rss if t >= 1.5]
    FIGURES["backpressure"] = {
        "invoke_p50_ms": round(period, 1),
        "latency_p50_ms": round(float(np.median(latency)), 1),
        "latency_p95_ms": round(float(np.percentile(latency, 95)), 1),
        "latency_max_ms": round(float(latency.max()), 1),
        "results": len(run.results),
        "captured": stats["captured"],
        "dropped": stats["dropped"],
        "rss_growth_mb": round(warm[-1] - warm[0], 2),
        "rss_max_growth_mb": round(max(warm) - warm[0], 2),
    }
    FIGURES["backpressure"]["source_fps"] = round(fps, 1)
    assert period > 1000 / fps  # the model really is slower than the camera
    # Newest frame, never a queue: capture → decision stays within two inference periods. Judged per
    # result against that result's own invoke, because on a shared machine invoke itself spikes.
    ratio = latency / invoke
    FIGURES["backpressure"]["latency_over_invoke_p50_p90"] = [
        round(float(np.percentile(ratio, q)), 2) for q in (50, 90)
    ]
    print(FIGURES["backpressure"])
    # (p90, not the max: on a loaded 2-core CI box the loop thread itself is sometimes descheduled)
    assert np.percentile(ratio, 90) <= 2.0 and np.median(ratio) <= 1.5 and np.median(latency) <= 2 * period
    assert np.median(latency - invoke) <= 1000 / fps + 10  # the frame waited at most ~one camera period
    assert stats["captured"] >= 0.8 * 6 * fps  # the source kept its rate (6 s)
    assert stats["dropped"] >= stats["captured"] - len(run.results) - 2 and stats["dropped"] > 50
    assert dropped_metric == stats["dropped"]
    assert max(warm) - warm[0] < 3.0  # memory flat: no queue grows behind the slow model


# ----------------------------------------------------------------------------- 7. signals, in a real process


def _model_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("_saved*"))
    return dst


def _point(link: Path, target: Path) -> None:
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    os.replace(tmp, link)  # atomic flip, as a deploy does


class Proc:
    """A `python -m device run` subprocess with its stdout (JSON lines) and stderr read live."""

    def __init__(self, args: list[str], cwd: Path, env: dict | None = None) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-m", "device", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.rows: list[dict] = []
        self.err: list[str] = []
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_out(self) -> None:
        for line in self.p.stdout:
            self.rows.append(json.loads(line))

    def _read_err(self) -> None:
        for line in self.p.stderr:
            self.err.append(line.rstrip())

    def err_has(self, text: str) -> list[str]:
        return [ln for ln in self.err if text in ln]


@pytest.mark.slow
def test_7_sighup_refuses_bad_models_accepts_good_and_sigterm_exits_fast(tiny_models, tmp_path):
    good = _model_copy(tiny_models["int8"], tmp_path / "good")
    truncated = _model_copy(tiny_models["int8"], tmp_path / "truncated")
    data = (truncated / "model.tflite").read_bytes()
    (truncated / "model.tflite").write_bytes(data[: len(data) // 2])
    man, _ = load_manifest(good)
    write_manifest(
        truncated,
        man.model_copy(update={"sha256": sha256_file(truncated / "model.tflite"), "size_bytes": len(data) // 2}),
    )
    wrong_shape = _model_copy(tiny_models["int8"], tmp_path / "wrong_shape")
    write_manifest(wrong_shape, man.model_copy(update={"input_height": 64, "input_width": 64}))
    newer = _model_copy(tiny_models["float32"], tmp_path / "newer")
    new_sha = load_manifest(newer)[0].sha256
    current = tmp_path / "current"
    current.symlink_to(good)
    cfg = tmp_path / "device.yaml"
    cfg.write_text(
        f"source: {{type: synthetic, width: 64, height: 48, fps: 30}}\n"
        f"model: {{dir: {current}}}\noutputs: {{jsonl: {{path: '-'}}}}\n"
    )
    proc = Proc(["run", "--config", str(cfg)], ROOT, dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        wait_until(lambda: len(proc.rows) >= 5, 30)
        for bad, why in ((truncated, "cannot load this model"), (wrong_shape, "does not match manifest")):
            _point(current, bad)
            proc.p.send_signal(signal.SIGHUP)
            line = wait_until(
                lambda: (
                    proc.err_has("reload refused")[-1:]
                    if len(proc.err_has("reload refused")) > (0 if bad is truncated else 1)
                    else None
                ),
                30,
            )[0]
            assert why in line and str(bad) in line, line
            n = len(proc.rows)
            wait_until(lambda: len(proc.rows) >= n + 5, 10)  # the old model keeps serving
            assert {r["model_sha256"] for r in proc.rows[n:]} == {man.sha256}
        _point(current, newer)
        proc.p.send_signal(signal.SIGHUP)
        wait_until(lambda: proc.err_has("reloaded: model"), 30)
        wait_until(lambda: proc.rows[-1]["model_sha256"] == new_sha, 10)
        t = time.monotonic()
        proc.p.send_signal(signal.SIGTERM)
        rc = proc.p.wait(10)
        exit_s = time.monotonic() - t
    finally:
        if proc.p.poll() is None:
            proc.p.kill()
    time.sleep(0.1)
    FIGURES["signals"] = {"sigterm_exit_s": round(exit_s, 3), "refused": len(proc.err_has("reload refused"))}
    print(FIGURES["signals"])
    assert rc == 0 and exit_s < 2.0
    assert len(proc.err_has("reload refused")) == 2 and len(proc.err_has("reloaded: model")) == 1
    assert proc.err_has("source closed") and proc.err_has("SIGTERM: stopping")


# ----------------------------------------------------------------------------- 8. missing or corrupt model at start


def test_8_missing_or_corrupt_model_is_one_error_line(tiny_models, tmp_path):
    corrupt = _model_copy(tiny_models["int8"], tmp_path / "corrupt")
    with open(corrupt / "model.tflite", "r+b") as f:
        f.seek(100)
        f.write(b"\x00" * 64)  # the manifest's sha256 no longer matches
    truncated = _model_copy(tiny_models["int8"], tmp_path / "truncated")
    data = (truncated / "model.tflite").read_bytes()
    (truncated / "model.tflite").write_bytes(data[:200])
    man, _ = load_manifest(tiny_models["int8"])
    write_manifest(
        truncated, man.model_copy(update={"sha256": sha256_file(truncated / "model.tflite"), "size_bytes": 200})
    )
    cases = {
        tmp_path / "missing": "no such model directory",
        corrupt: "does not match manifest",
        truncated: "cannot load this model",
    }
    cfg = tmp_path / "device.yaml"
    cfg.write_text("outputs: {jsonl: {path: '-'}}\n")
    for mdir, why in cases.items():
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "device",
                "run",
                "--config",
                str(cfg),
                "--model-dir",
                str(mdir),
                "--source",
                "synthetic",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2, r.stderr
        assert len(lines) == 1 and lines[0].startswith("error: ") and why in lines[0], r.stderr
        assert str(mdir) in lines[0]
