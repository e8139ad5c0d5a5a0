"""Frame sources and the capture thread: real files, real OpenCV decode, the picamera2 fake."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from device.errors import FaceedgeError
from device.sources import (
    FrameGrabber,
    ImagesConfig,
    OpencvConfig,
    Picamera2Config,
    SourceError,
    SyntheticConfig,
    build_source,
)
from device.sources.base import Pacer
from device.sources.opencv import source_kind
from tests.fakes import picamera2 as fake_picamera2
from tests.helpers.video import BLUE, RED, write_video


def assert_red_left_blue_right(img: np.ndarray, tol: int = 30) -> None:
    h, w = img.shape[:2]
    left = img[h // 4 : 3 * h // 4, 4 : w // 2 - 4].reshape(-1, 3).mean(0)
    right = img[h // 4 : 3 * h // 4, w // 2 + 4 : w - 4].reshape(-1, 3).mean(0)
    assert np.abs(left - RED).max() < tol, left
    assert np.abs(right - BLUE).max() < tol, right


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_frames_reuse_buffer_and_flip_halves():
    src = build_source(SyntheticConfig(width=64, height=48, fps=0, switch_every=3))
    with src:
        out = np.zeros((48, 64, 3), np.uint8)
        frames = [src.read(out).copy() for _ in range(6)]
        assert src.read(out) is out  # written in place, no allocation
    assert frames[0].dtype == np.uint8 and frames[0].shape == (48, 64, 3)
    left_bright = [f[24:, :32].mean() > f[24:, 32:].mean() for f in frames]
    assert left_bright == [True, True, True, False, False, False]
    assert not np.array_equal(frames[0], frames[1])  # the bar moves


def test_synthetic_paces_at_fps_and_ends_after_frames():
    src = build_source(SyntheticConfig(width=32, height=32, fps=50, frames=10))
    with src:
        t = time.monotonic()
        n = 0
        while src.read() is not None:
            n += 1
        dt = time.monotonic() - t
    assert n == 10 and not src.live
    assert 0.16 <= dt <= 1.0  # 10 frames at 50 fps = 0.18 s (first frame immediate)


def test_pacer_does_not_burst_after_falling_behind():
    p = Pacer(100)
    p.wait()
    time.sleep(0.1)  # consumer fell 10 periods behind
    t = time.monotonic()
    for _ in range(3):
        p.wait()
    assert time.monotonic() - t >= 0.015  # paced again, not 3 instant catch-up frames


# ----------------------------------------------------------------------------- images


def test_images_folder_glob_loop_and_bad_file(tmp_path, caplog):
    for i, colour in enumerate([RED, BLUE]):
        img = np.full((20, 30, 3), colour, np.uint8)
        cv2.imwrite(str(tmp_path / f"{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    (tmp_path / "2.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    with build_source(ImagesConfig(path=str(tmp_path))) as src:
        got = []
        while (f := src.read()) is not None:
            got.append(tuple(int(v) for v in f[0, 0]))
    assert got == [RED, BLUE]  # RGB order preserved, bad jpg skipped, txt ignored
    assert "2.jpg" in caplog.text
    with build_source(ImagesConfig(path=str(tmp_path / "*.png"), loop=True)) as src:
        got = [tuple(int(v) for v in src.read()[0, 0]) for _ in range(5)]
    assert got == [RED, BLUE, RED, BLUE, RED]


def test_images_missing_path_is_a_config_error(tmp_path):
    with pytest.raises(FaceedgeError, match="no such file or folder"):
        build_source(ImagesConfig(path=str(tmp_path / "nope"))).open()
    with pytest.raises(FaceedgeError, match="no images"):
        build_source(ImagesConfig(path=str(tmp_path))).open()


# ----------------------------------------------------------------------------- opencv


def test_source_kind():
    assert source_kind(0) == "camera" and source_kind("2") == "camera"
    assert source_kind("rtsp://127.0.0.1:8554/cam") == "stream"
    assert source_kind("clip.mp4") == "file"


def test_opencv_file_is_rgb_paced_and_ends(tmp_path):
    video = tmp_path / "clip.avi"
    write_video(video, n=10, fps=40)
    with build_source(OpencvConfig(device=str(video))) as src:
        assert src.paced and not src.live
        buf = None
        t = time.monotonic()
        frames = []
        while (f := src.read(buf)) is not None:
            frames.append(f.copy())
            buf = f
        dt = time.monotonic() - t
    assert len(frames) == 10
    assert_red_left_blue_right(frames[0])  # BGR→RGB done once, at the source
    assert dt >= 0.2  # 10 frames at the file's 40 fps


def test_opencv_file_not_realtime_reads_fast_and_loops(tmp_path):
    video = tmp_path / "clip.avi"
    write_video(video, n=5, fps=2)
    with build_source(OpencvConfig(device=str(video), realtime=False, loop=True)) as src:
        t = time.monotonic()
        frames = [src.read() for _ in range(12)]
        assert time.monotonic() - t < 2.0  # not paced at 2 fps (that would take 6 s)
    assert all(f is not None and f.shape == (48, 64, 3) for f in frames)


def test_opencv_missing_file_and_dead_camera(tmp_path):
    with pytest.raises(FaceedgeError, match="no such video file"):
        build_source(OpencvConfig(device=str(tmp_path / "none.mp4"))).open()
    with pytest.raises(SourceError, match="cannot open"):
        build_source(OpencvConfig(device=97)).open()  # no /dev/video97: retryable, not fatal


# ----------------------------------------------------------------------------- picamera2 (fake)


@pytest.mark.parametrize("fmt", ["BGR888", "RGB888", "XBGR8888", "XRGB8888"])
def test_picamera2_every_format_arrives_as_rgb(picam, fmt):
    cfg = Picamera2Config(width=64, height=48, fps=100, format=fmt)
    with build_source(cfg) as src:
        cam = picam.instances[-1]
        assert cam.camera_config["main"] == {"format": fmt, "size": (64, 48)}
        assert cam.camera_config["controls"]["FrameRate"] == 100
        f = src.read(timeout=1.0)
    assert f.shape == (48, 64, 3) and f.dtype == np.uint8
    assert tuple(f[0, 0]) == fake_picamera2.LEFT_RGB and tuple(f[0, -1]) == fake_picamera2.RIGHT_RGB
    assert cam.closed and not cam.started  # stop() then close()


def test_picamera2_fake_byte_order_is_libcamera_order(picam):
    """The fake itself: 'RGB888' really is [B, G, R] in numpy, as on a Pi."""
    cam = fake_picamera2.Picamera2()
    cam.configure(cam.create_video_configuration(main={"size": (8, 4), "format": "RGB888"}))
    cam.start()
    assert tuple(cam.capture_array("main")[0, 0]) == fake_picamera2.LEFT_RGB[::-1]
    cam.close()


def test_picamera2_busy_is_retryable_and_timeout_raises(picam):
    picam.busy_opens = 1
    with pytest.raises(SourceError, match="Device or resource busy"):
        build_source(Picamera2Config()).open()
    with build_source(Picamera2Config(width=32, height=32)) as src:
        picam.stalled.set()
        t = time.monotonic()
        with pytest.raises(TimeoutError):
            src.read(timeout=0.2)
        assert 0.18 <= time.monotonic() - t < 1.0


# ----------------------------------------------------------------------------- capture thread


def test_grabber_keeps_newest_and_counts_drops():
    g = FrameGrabber(lambda: build_source(SyntheticConfig(width=32, height=32, fps=200)))
    with g:
        ids, arrays = [], set()
        for _ in range(10):
            f = g.get(timeout=1.0)
            ids.append(f.frame_id)
            arrays.add(id(f.image))
            time.sleep(0.03)  # a slow consumer: ~6 frames arrive per take
    assert ids == sorted(ids) and len(set(ids)) == 10
    gaps = np.diff(ids)
    assert gaps.mean() >= 3  # the consumer always got a recent frame, not the next queued one
    assert g.stats.dropped >= 20 and g.stats.dropped == g.stats.captured - 10 - len(g._queue)
    assert len(arrays) <= 4  # buffers recycled from the pool, not allocated per frame


def test_grabber_unpaced_source_is_lossless_and_ends():
    g = FrameGrabber(lambda: build_source(SyntheticConfig(width=16, height=16, fps=0, frames=25)))
    with g:
        ids = []
        while (f := g.get(timeout=1.0)) is not None:
            ids.append(f.frame_id)
        assert g.finished and g.state == "ended"
    assert ids == list(range(1, 26)) and g.stats.dropped == 0


def test_grabber_fatal_config_error_fails_fast(tmp_path):
    g = FrameGrabber(lambda: build_source(OpencvConfig(device=str(tmp_path / "missing.avi"))))
    with g:
        assert g.get(timeout=2.0) is None
    assert g.state == "failed" and "no such video file" in str(g.error)
    assert g.stats.open_failures == 0  # not retried


def _serve(data: bytes, cut: float | None, release):
    """A one-file HTTP server on 127.0.0.1; with `cut`, it sends that fraction of the file and then
    goes silent without closing (a stalled network stream)."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def loop():
        while not release.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.recv(65536)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/x-msvideo\r\nContent-Length: %d\r\n\r\n" % len(data))
            c.sendall(data if cut is None else data[: int(len(data) * cut)])
            if cut is not None:
                release.wait()
            c.close()

    threading.Thread(target=loop, daemon=True).start()
    return srv, srv.getsockname()[1]


def test_opencv_http_stream_is_live_rgb_and_a_stall_times_out(tmp_path):
    import threading

    video = tmp_path / "clip.avi"
    write_video(video, n=40, size=(160, 120), fps=30)
    release = threading.Event()
    srv, port = _serve(video.read_bytes(), None, release)
    try:
        with build_source(OpencvConfig(device=f"http://127.0.0.1:{port}/clip.avi", read_timeout_s=1)) as src:
            assert src.kind == "stream" and src.live and src.paced
            assert_red_left_blue_right(src.read())
            n = 1
            with pytest.raises(SourceError, match="read failed"):  # the end of a live stream is a fault
                while True:
                    src.read()
                    n += 1
        assert n == 40
        stalled, port2 = _serve(video.read_bytes(), 0.3, release)
        with build_source(OpencvConfig(device=f"http://127.0.0.1:{port2}/clip.avi", read_timeout_s=1)) as src:
            t = time.monotonic()
            with pytest.raises(SourceError):
                while True:
                    src.read()
            assert time.monotonic() - t < 1.0 + 1.5  # the read timeout fired; no read blocks forever
        stalled.close()
    finally:
        release.set()
        srv.close()
    with pytest.raises(SourceError, match="cannot open"):  # nothing listening: retryable, not fatal
        build_source(OpencvConfig(device="http://127.0.0.1:1/clip.avi", open_timeout_s=1)).open()
