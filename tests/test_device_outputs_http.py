"""HTTP output: endpoints and status codes, the token off loopback, and answering while the loop is stuck."""

from __future__ import annotations

import http.client
import json
import threading
import time

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from device.errors import FaceedgeError
from device.outputs import OutputsConfig, build_outputs, close_outputs, publish_image, start_outputs
from device.outputs.http import HttpConfig, HttpOutput
from device.telemetry import Telemetry
from device.types import Result
from device.validation import ValidationError

TOKEN = "s3cret-token-0123456789"


def get(out: HttpOutput, path: str, headers: dict | None = None, method: str = "GET"):
    conn = http.client.HTTPConnection("127.0.0.1", out.port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_endpoints_and_status_codes(served):
    tel = Telemetry()
    tel.set_model("cd" * 32)
    out = served(tel)

    code, headers, body = get(out, "/healthz")
    snap = json.loads(body)
    assert code == 503 and snap["status"] == "starting"  # not ok yet
    assert {"status", "camera_fps", "last_frame_age_s", "model_sha256", "uptime_s"} <= snap.keys()
    assert snap["model_sha256"] == "cd" * 32 and snap["last_frame_age_s"] is None
    assert headers["Content-Type"] == "application/json"

    assert get(out, "/latest")[0] == 404  # before the first result

    tel.frame_captured()
    tel.result_published(Result(7, 1_700_000_000.5, "face", 0.9, "face", 0.85, stages_ms={"invoke": 3.0}))
    tel.observe("invoke", 3.0)
    tel.set_status("ok")
    code, _, body = get(out, "/healthz")
    snap = json.loads(body)
    assert code == 200 and snap["status"] == "ok" and 0 <= snap["last_frame_age_s"] < 5

    code, _, body = get(out, "/latest")
    latest = json.loads(body)
    assert code == 200 and latest["frame_id"] == 7 and latest["time"] == "2023-11-14T22:13:20.500Z"

    code, headers, body = get(out, "/metrics?x=1")
    assert code == 200 and headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["faceedge_results"].samples[0].value == 1
    assert families["faceedge_stage_latency_seconds"].type == "histogram"

    tel.set_status("stalled", "no frames")
    assert get(out, "/healthz")[0] == 503

    code, headers, body = get(out, "/healthz", method="HEAD")
    assert code == 503 and body == b"" and int(headers["Content-Length"]) > 0
    assert get(out, "/nope")[0] == 404
    assert get(out, "/latest.jpg")[0] == 404  # images are off unless enabled
    assert headers["Server"].startswith("faceedge")  # no Python version advertised


def test_model_path_is_not_published(tiny_models, tmp_path, monkeypatch):
    """A real daemon's /healthz and /metrics say which model (sha256), never where it lives."""
    import shutil

    from device.config import parse_config
    from device.daemon import Daemon

    model_dir = tmp_path / "home" / "pi" / "faceedge" / "releases" / "20260101T000000Z-abcdef01" / "model"
    shutil.copytree(tiny_models["int8"], model_dir)
    sha = json.loads((model_dir / "manifest.json").read_text())["sha256"]
    monkeypatch.setenv("FACEEDGE_TEST_TOKEN", TOKEN)
    for http_cfg, headers in (
        ({"port": 0}, {}),
        ({"host": "0.0.0.0", "port": 0, "token_env": "FACEEDGE_TEST_TOKEN"}, {"Authorization": f"Bearer {TOKEN}"}),
    ):
        cfg = parse_config(
            {"source": {"type": "synthetic", "width": 64, "height": 48, "fps": 0}, "outputs": {"http": http_cfg}}
        )
        with Daemon(cfg, model_dir=model_dir) as d:
            d.run(max_frames=3)
            (out,) = d.outputs
            for path in ("/healthz", "/metrics"):
                code, _, body = get(out, path, headers)
                assert code == 200 and sha.encode() in body, (path, code)
                assert str(tmp_path).encode() not in body and b"model.tflite" not in body, path
            assert "model_path" not in json.loads(get(out, "/healthz", headers)[2])


def test_no_image_data_unless_enabled(served):
    tel = Telemetry()
    off = served(tel)
    publish_image([off], np.zeros((8, 8, 3), np.uint8))
    assert get(off, "/latest.jpg")[0] == 404

    on = served(tel, expose_images=True)
    assert get(on, "/latest.jpg")[0] == 404  # nothing yet
    img = np.zeros((16, 16, 3), np.uint8)
    img[..., 0] = 255  # pure red in RGB
    publish_image([on], img)
    code, headers, body = get(on, "/latest.jpg")
    assert code == 200 and headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    import cv2

    bgr = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert bgr[8, 8, 2] > 240 and bgr[8, 8, 0] < 15  # still red: channel order kept


def test_token_required_off_loopback():
    with pytest.raises(ValidationError, match="'0.0.0.0' is not loopback: a token is required"):
        OutputsConfig.model_validate({"http": {"host": "0.0.0.0"}})
    with pytest.raises(ValidationError, match="not loopback"):
        HttpConfig(host="pi.local")
    HttpConfig(host="0.0.0.0", token_env="FACEEDGE_TOKEN")  # valid
    HttpConfig(host="::1")  # loopback, no token needed
    with pytest.raises(ValidationError, match="only one of token_file and token_env"):
        HttpConfig(token_env="A", token_file="/x")


def test_token_sources_validated(tmp_path, monkeypatch):
    monkeypatch.delenv("FACEEDGE_TEST_TOKEN", raising=False)
    with pytest.raises(FaceedgeError, match=r"token_env \$FACEEDGE_TEST_TOKEN: token is missing"):
        build_outputs(OutputsConfig(http=HttpConfig(host="0.0.0.0", token_env="FACEEDGE_TEST_TOKEN")), Telemetry())
    short = tmp_path / "tok"
    short.write_text("abc\n")
    with pytest.raises(FaceedgeError, match="shorter than 16"):
        HttpOutput(HttpConfig(token_file=short), Telemetry())
    with pytest.raises(FaceedgeError, match="token_file .*missing"):
        HttpOutput(HttpConfig(token_file=tmp_path / "missing"), Telemetry())


def test_token_checked_on_every_endpoint(served, tmp_path, caplog):
    tok = tmp_path / "token"
    tok.write_text(TOKEN + "\n")
    tok.chmod(0o644)
    out = served(token_file=tok)
    assert "readable by others (mode 644)" in caplog.text  # a warning, not a refusal
    for path in ("/healthz", "/metrics", "/latest", "/nope"):
        code, headers, _ = get(out, path)
        assert code == 401 and headers["WWW-Authenticate"].startswith("Bearer"), path
        assert get(out, path, {"Authorization": "Bearer wrong-token-0123456789"})[0] == 401
        assert get(out, path, {"Authorization": f"Basic {TOKEN}"})[0] == 401
        assert get(out, path, {"Authorization": f"Bearer {TOKEN}x"})[0] == 401
    assert get(out, "/healthz", {"Authorization": f"Bearer {TOKEN}"})[0] == 503  # authorized; status starting
    assert get(out, "/metrics", {"Authorization": f"Bearer {TOKEN}"})[0] == 200


def test_bound_off_loopback_with_token(served, monkeypatch):
    monkeypatch.setenv("FACEEDGE_TEST_TOKEN", TOKEN)
    out = served(host="0.0.0.0", token_env="FACEEDGE_TEST_TOKEN")
    assert get(out, "/metrics")[0] == 401  # reached over 127.0.0.1, still needs the token
    assert get(out, "/metrics", {"Authorization": f"Bearer {TOKEN}"})[0] == 200


def test_port_in_use_is_a_clear_error(served):
    first = served()
    second = HttpOutput(HttpConfig(port=first.port), Telemetry())
    with pytest.raises(FaceedgeError, match=f"cannot bind 127.0.0.1:{first.port}"):
        start_outputs([second])


@pytest.mark.slow
def test_answers_while_the_loop_is_stuck(tiny_models, tmp_path):
    """Fault 2 (HTTP part), with the real loop stuck: the daemon's JSONL output writes into a pipe
    nobody reads, so the loop blocks inside os.write() while the camera keeps delivering frames.
    /healthz still answers at once, and says the loop is stalled (frames arriving is not enough);
    once the pipe drains, the loop goes on and the status is ok again."""
    import fcntl
    import os

    from device.config import parse_config
    from device.daemon import Daemon

    fifo = tmp_path / "results.pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # open, never read: the pipe fills
    cfg = parse_config(
        {
            "source": {"type": "synthetic", "width": 64, "height": 48, "fps": 30},
            "capture": {"stall_s": 0.8},
            "outputs": {"jsonl": {"path": str(fifo)}, "http": {"port": 0}},
        }
    )
    stop = threading.Event()
    d = Daemon(cfg, model_dir=tiny_models["int8"])
    d.start()
    fcntl.fcntl(reader, 1031, 4096)  # F_SETPIPE_SZ: a one-page pipe, full after a few lines
    loop = threading.Thread(target=d.run, args=(stop,), daemon=True)
    loop.start()
    try:
        http = next(o for o in d.outputs if o.type == "http")
        deadline = time.monotonic() + 20
        while True:  # the loop is stuck in the write once results stop while frames go on
            n = d.telemetry.counter("results")
            time.sleep(0.5)
            if n > 0 and d.telemetry.counter("results") == n:
                break
            assert time.monotonic() < deadline, "the loop never blocked"
        stuck_at = time.monotonic()
        answers = []
        while time.monotonic() - stuck_at < 3.0:
            t0 = time.perf_counter()
            code, _, body = get(http, "/healthz")
            answers.append((time.perf_counter() - t0, code, json.loads(body)))
            if answers[-1][2]["status"] == "stalled":
                break
            time.sleep(0.1)
        elapsed, code, snap = answers[-1]
        print(
            f"\nloop stuck in a write: /healthz said stalled {snap['last_result_age_s']:.2f} s after the last "
            f"result (stall_s 0.8), answering in {max(a[0] for a in answers) * 1000:.1f} ms at most"
        )
        assert max(a[0] for a in answers) < 1.0  # answered at once, every time
        assert code == 503 and snap["status"] == "stalled", snap
        assert "loop" in snap["reason"] and snap["last_frame_age_s"] < 0.5, snap  # the camera is fine
        assert d.telemetry.counter("results") == n  # really stuck all along
        # unstick: drain the pipe; the loop goes on and health recovers
        deadline = time.monotonic() + 10
        while get(http, "/healthz")[0] != 200:
            try:
                while os.read(reader, 65536):
                    pass
            except BlockingIOError:
                pass
            assert time.monotonic() < deadline, "never recovered"
            time.sleep(0.05)
        assert d.telemetry.counter("results") > n
    finally:
        stop.set()
        os.close(reader)  # a write still blocked fails (EPIPE): the loop sees `stop`
        loop.join(5)
        d.close()


def test_quiet_logging_and_concurrent_clients(served, capfd):
    out = served()
    errors = []

    def client():
        try:
            for _ in range(10):
                assert get(out, "/metrics")[0] == 200
        except Exception as e:  # noqa: BLE001 - any failure in the thread is reported below
            errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert capfd.readouterr().err == ""  # no per-request stderr lines


def test_close_is_quick_and_frees_the_port(served):
    out = HttpOutput(HttpConfig(port=0), Telemetry())
    start_outputs([out])
    port = out.port
    t0 = time.perf_counter()
    close_outputs([out])
    assert time.perf_counter() - t0 < 1.0
    again = served(port=port)
    assert get(again, "/metrics")[0] == 200


def test_server_imports_no_http_server_email_ssl_or_hmac():
    """The daemon's HTTP server and live view are our own code on socketserver: importing them loads
    none of http.server's baggage (http.client, email, ssl/OpenSSL, mimetypes, html, calendar, random,
    bz2, lzma: 7 MB resident), nor urllib.parse, nor hmac (OpenSSL's libcrypto, 3.6 MB). A fresh
    interpreter; pathlib is imported first because on Python 3.11-3.12 it imports urllib.parse itself
    (for Path.as_uri), and every device module imports pathlib."""
    import subprocess
    import sys

    heavy = ["http", "email", "urllib", "ssl", "_ssl", "hmac", "_hashlib"]
    heavy += ["mimetypes", "calendar", "random", "bz2", "lzma", "html"]
    code = (
        "import json, sys, pathlib\n"
        "before = set(sys.modules)\n"
        "import device.outputs.http, device.liveview\n"
        f"heavy = {heavy!r}\n"
        "new = [m for m in set(sys.modules) - before if m.split('.')[0] in heavy]\n"
        "print(json.dumps([sorted(new), sorted(m for m in before if m.split('.')[0] in heavy)]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    loaded, by_pathlib = json.loads(r.stdout)
    assert loaded == []
    assert set(by_pathlib) <= {"urllib", "urllib.parse"}
