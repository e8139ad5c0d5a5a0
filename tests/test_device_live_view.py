"""The live view (device/liveview.py) in a real headless Chromium, and its HTTP endpoints.

The daemon classifies a camera whose scene the test switches ("left half bright" = open, "right
half bright" = closed, the tiny model's rule); the page must show the label of the scene, change
when the scene does, and show the frame with the crop box. A screenshot of each page is kept in
FACEEDGE_TEST_ARTIFACTS (default .test-artifacts/ in the repo).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from device.config import parse_config
from device.daemon import Daemon
from device.sources import SyntheticConfig
from device.sources.synthetic import SyntheticSource

pytestmark = pytest.mark.timeout(180)

AMBER = np.array([255, 176, 0])  # device.liveview.BOX_RGB


def scene(open_: bool, w: int = 640, h: int = 480) -> np.ndarray:
    img = np.full((h, w, 3), 60, np.uint8)
    bright = slice(0, w // 2) if open_ else slice(w // 2, w)
    img[:, bright] = 200
    return img


class SwitchSource(SyntheticSource):
    """A paced camera showing `scene(open)`; the test flips `showing_open`."""

    showing_open = True

    def read(self, out=None, timeout=None):
        self._pacer.wait()
        return scene(SwitchSource.showing_open).copy()


def start_daemon(
    tiny_models, *, expose_images: bool = True, http: dict | None = None
) -> tuple[Daemon, threading.Event]:
    cfg = parse_config(
        {
            "source": {"type": "synthetic", "fps": 20},
            "crop": {"mode": "center", "fraction": 0.6},
            "decision": {"window": 3},
            "outputs": {"http": {"port": 0, **(http or {})}},
            "expose_images": expose_images,
        }
    )
    SwitchSource.showing_open = True
    d = Daemon(cfg, model_dir=tiny_models["int8"], source_factory=lambda: SwitchSource(SyntheticConfig(fps=20)))
    d.start()
    stop = threading.Event()
    threading.Thread(target=d.run, args=(stop,), daemon=True).start()
    return d, stop


def get(url: str, headers: dict | None = None, timeout: float = 5.0):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.headers, r.read()


def label_is(text: str) -> str:
    return f"document.getElementById('label').textContent === {json.dumps(text)}"


FRAME_SHOWN = (
    "(() => { const i = document.getElementById('frame'); return !i.hidden && i.complete && i.naturalWidth > 0; })()"
)


def test_live_page_shows_the_label_and_follows_it(tiny_models):
    from tests.helpers.chromium import ARTIFACTS, Browser

    d, stop = start_daemon(tiny_models)
    http = d.outputs[0]
    try:
        t0 = time.monotonic()
        with Browser() as b:
            t_browser = time.monotonic() - t0
            page = b.open(http.url + "/")
            t_open = b.wait(page, label_is("open") + " && " + FRAME_SHOWN, timeout=20)
            assert b.eval(page, "document.getElementById('status').textContent") == "ok"
            assert b.eval(page, "document.getElementById('noimage').hidden") is True
            fps = b.eval(page, "document.getElementById('fps').textContent")
            assert fps.endswith(" fps") and float(fps.split()[0]) > 5, fps
            b.screenshot(page, ARTIFACTS / "live-view-open.png")

            SwitchSource.showing_open = False  # the scene changes; the page must follow without a reload
            t_switch = time.monotonic()
            b.wait(page, label_is("closed"), timeout=20)
            t_follow = time.monotonic() - t_switch
            b.wait(page, FRAME_SHOWN)
            shot = b.screenshot(page, ARTIFACTS / "live-view-closed.png")
        print(
            f"\nlive view: browser up {t_browser:.2f} s, page showed 'open' {t_open:.2f} s after opening, "
            f"'closed' {t_follow:.2f} s after the scene changed; screenshots in {shot.parent}"
        )
        # The screenshot itself shows the frame with the amber crop box.
        png = cv2.cvtColor(cv2.imread(str(shot)), cv2.COLOR_BGR2RGB)
        assert (np.abs(png.astype(int) - AMBER).sum(axis=2) < 60).sum() > 500
    finally:
        stop.set()
        d.close()


def test_frame_jpeg_has_the_crop_box_and_the_view_json(tiny_models):
    d, stop = start_daemon(tiny_models)
    http = d.outputs[0]
    try:
        deadline = time.monotonic() + 15
        while True:
            status, _, body = get(http.url + "/view.json")
            state = json.loads(body)
            if state["result"] and state["result"]["smoothed_label"] and state["frame_seq"]:
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.1)
        assert state["status"] == "ok" and state["images"] is True and state["result"]["smoothed_label"] == "open"
        assert state["model_sha256"] == d.classifier.manifest.sha256
        status, headers, jpeg = get(http.url + "/frame.jpg")
        assert status == 200 and headers["Content-Type"] == "image/jpeg" and int(headers["X-Frame-Seq"]) >= 1
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert img.shape == (360, 480, 3)  # 640x480 downscaled to PREVIEW_WIDTH 480
        # center crop, fraction 0.6 of 480 = 288 px square at (176, 96) → x0.75: (132, 72, 216, 216)
        amber = np.abs(img.astype(int) - AMBER).sum(axis=2) < 90
        cols = np.where(amber.sum(axis=0) > 100)[0]
        rows = np.where(amber.sum(axis=1) > 100)[0]
        assert abs(cols.min() - 132) <= 2 and abs(cols.max() - (132 + 215)) <= 2, (cols.min(), cols.max())
        assert abs(rows.min() - 72) <= 2 and abs(rows.max() - (72 + 215)) <= 2, (rows.min(), rows.max())
    finally:
        stop.set()
        d.close()


def read_part(resp) -> bytes:
    """One part of a multipart/x-mixed-replace stream: its JPEG body."""
    line = resp.fp.readline()
    while line in (b"\r\n", b"\n"):
        line = resp.fp.readline()
    assert line.strip() == b"--faceedge-frame", line
    headers = {}
    while (line := resp.fp.readline()) not in (b"\r\n", b"\n"):
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    assert headers["content-type"] == "image/jpeg"
    return resp.fp.read(int(headers["content-length"]))


def test_mjpeg_stream_bounded_and_ended_by_close(tiny_models):
    from device.liveview import MAX_STREAMS

    d, stop = start_daemon(tiny_models)
    http = d.outputs[0]
    conns = []
    try:
        for _ in range(MAX_STREAMS):
            c = http_client(http.port)
            c.request("GET", "/stream.mjpg")
            r = c.getresponse()
            assert r.status == 200 and r.getheader("Content-Type").startswith("multipart/x-mixed-replace")
            parts = [read_part(r) for _ in range(2)]
            assert all(p[:2] == b"\xff\xd8" and p[-2:] == b"\xff\xd9" for p in parts)  # JPEG start/end
            conns.append((c, r))
        status, _, _ = get_status(http.url + "/stream.mjpg")
        assert status == 503  # more streams would hold every worker
        assert get(http.url + "/healthz")[0] == 200  # the other endpoints still answer
        t0 = time.monotonic()
        stop.set()
        d.close()  # ends the streams: close must not wait for the clients
        assert time.monotonic() - t0 < 3
        for _, r in conns:
            assert r.read() is not None  # the stream ended (EOF), it did not hang
    finally:
        stop.set()
        d.close()
        for c, _ in conns:
            c.close()


def http_client(port: int) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=10)


def get_status(url: str, headers: dict | None = None):
    try:
        return get(url, headers)
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_images_off_page_still_served_without_frames(tiny_models):
    d, stop = start_daemon(tiny_models, expose_images=False)
    http = d.outputs[0]
    try:
        status, headers, body = get(http.url + "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html") and b"faceedge live" in body
        state = json.loads(get(http.url + "/view.json")[2])
        assert state["images"] is False and state["frame_seq"] is None
        for path in ("/frame.jpg", "/stream.mjpg", "/latest.jpg"):
            assert get_status(http.url + path)[0] == 404, path
    finally:
        stop.set()
        d.close()


def test_token_applies_to_the_live_view(tiny_models, tmp_path):
    token = "t" * 24
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "token").chmod(0o600)
    d, stop = start_daemon(tiny_models, http={"token_file": str(tmp_path / "token")})
    http = d.outputs[0]
    try:
        for path in ("/", "/view.json", "/frame.jpg", "/stream.mjpg"):
            assert get_status(http.url + path)[0] == 401, path
        auth = {"Authorization": f"Bearer {token}"}
        assert get_status(http.url + "/", auth)[0] == 200
        assert get_status(http.url + "/view.json", auth)[0] == 200
    finally:
        stop.set()
        d.close()


def test_collect_serves_the_page_with_counts_per_label(tmp_path):
    """`device collect --live-view`: the page shows the crops saved so far per label."""
    from device.collect import Collector
    from device.crop import CropConfig, Cropper
    from device.liveview import CollectView
    from device.outputs.configs import HttpConfig
    from tests.helpers.chromium import ARTIFACTS, Browser

    root = tmp_path / "data"
    (root / "closed" / "bob").mkdir(parents=True)
    for i in range(3):  # crops already there from an earlier session
        cv2.imwrite(str(root / "closed" / "bob" / f"old{i}.png"), np.zeros((8, 8, 3), np.uint8))
    (root / ".trash").mkdir()
    cv2.imwrite(str(root / ".trash" / "x.png"), np.zeros((8, 8, 3), np.uint8))  # not counted
    view = CollectView(HttpConfig(port=0), out_root=root, label="open", person="alice", wanted=5)
    c = Collector(root / "open" / "alice", Cropper(CropConfig(mode="center", fraction=0.6)), person="alice", every_s=0)
    c.view = view
    view.start()
    rng = np.random.default_rng(0)
    try:
        for i in range(5):
            img = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)  # sharp and never a duplicate
            assert c.offer(img, float(i)) == "saved"
            time.sleep(0.21)  # one preview frame each (PREVIEW_FPS 5)
        state = json.loads(get(view.url + "/view.json")[2])
        assert state["collect"]["counts"] == {"closed": 3, "open": 5} and state["collect"]["saved"] == 5
        with Browser() as b:
            page = b.open(view.url + "/")
            b.wait(page, "document.getElementById('saved').textContent === '5' && " + FRAME_SHOWN)
            rows = b.eval(
                page, "[...document.querySelectorAll('#counts tr')].map(r => [...r.cells].map(c => c.textContent))"
            )
            assert rows == [["closed", "3"], ["open", "5"]]
            assert b.eval(page, "document.getElementById('collect_what').textContent") == "open / alice"
            b.screenshot(page, ARTIFACTS / "live-view-collect.png")
    finally:
        view.close()
