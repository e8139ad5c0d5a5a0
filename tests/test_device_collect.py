"""device collect: the frame loop on its own (exact skip counts), file naming that never
overwrites, and the whole command on real sources (an image folder, a video file)."""

from __future__ import annotations

import io
import os

import cv2
import numpy as np
import pytest

from device import collect
from device.collect import (
    BLURRED,
    DUPLICATE,
    NO_FACE,
    SAVED,
    TOO_SOON,
    Collector,
    Progress,
    collect_frames,
)
from device.files import write_new
from device.quality import dhash, grey_thumb, hamming, sharpness
from device.crop import CropConfig, Cropper, load_image_rgb
from device.errors import FaceedgeError


def scene(seed: int, h: int = 240, w: int = 320) -> np.ndarray:
    """A sharp, distinct frame: 12x16 random colour blocks."""
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)


def noisy(img: np.ndarray, seed: int, sigma: float = 4.0) -> np.ndarray:
    """The same scene with sensor noise: what a camera gives when nothing moves."""
    return np.clip(img + np.random.default_rng(seed).normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def blurred(img: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), 5)


class FakeDetector:
    def __init__(self, boxes):
        self.boxes = boxes

    def detect(self, rgb):
        return list(self.boxes)


# ----------------------------------------------------------------------------- measures


def test_sharpness_and_dhash_separate_the_cases():
    a = scene(1)
    g = grey_thumb(a)
    assert sharpness(g) > 500 > collect.DEFAULT_MIN_SHARPNESS > 20 > sharpness(grey_thumb(blurred(a)))
    assert hamming(dhash(g), dhash(grey_thumb(noisy(a, 5)))) < collect.DEFAULT_MIN_CHANGE
    assert all(hamming(dhash(g), dhash(grey_thumb(scene(s)))) >= 20 for s in range(2, 8))
    assert 0 <= dhash(g) < 2**64


# ----------------------------------------------------------------------------- the frame loop


def test_frame_loop_skip_counts_and_saved_pixels(tmp_path):
    a, b, c = scene(1), scene(2), scene(3)
    frames = [a, noisy(a, 1), noisy(a, 2), blurred(a), b, blurred(b), noisy(b, 3), a, c, noisy(c, 4)]
    col = Collector(tmp_path / "open" / "alice", Cropper(CropConfig()), person="alice", every_s=0, session="s1")
    decisions = [col.offer(f, float(i)) for i, f in enumerate(frames)]
    assert decisions == [SAVED, DUPLICATE, DUPLICATE, BLURRED, SAVED, BLURRED, DUPLICATE, DUPLICATE, SAVED, DUPLICATE]
    s = col.stats
    assert (s.frames, s.saved, s.duplicate, s.blurred, s.no_face, s.too_soon) == (10, 3, 5, 2, 0, 0)
    files = sorted(os.listdir(tmp_path / "open" / "alice"))
    assert files == ["alice-s1-00001.png", "alice-s1-00002.png", "alice-s1-00003.png"]
    # saved = the daemon's crop of the frame (full mode, centre square), losslessly
    assert np.array_equal(load_image_rgb(tmp_path / "open" / "alice" / files[1]), b[:, 40:280])


def test_rate_limit_every_s():
    col = Collector("/nonexistent-never-written", Cropper(), every_s=0.2)
    col._save = lambda crop: setattr(col.stats, "saved", col.stats.saved + 1)  # keep this test off the disk
    times = [0.0, 0.05, 0.1, 0.25, 0.3, 0.44, 0.46, 0.5]
    out = [col.offer(scene(10 + i), t) for i, t in enumerate(times)]
    assert out == [SAVED, TOO_SOON, TOO_SOON, SAVED, TOO_SOON, TOO_SOON, SAVED, TOO_SOON]
    assert (col.stats.saved, col.stats.too_soon) == (3, 5)


def test_face_mode_without_face_is_skipped(tmp_path):
    cropper = Cropper(CropConfig(mode="face"), detector=FakeDetector([]))
    col = Collector(tmp_path, cropper, every_s=0)
    assert col.offer(scene(1), 0.0) == NO_FACE and col.stats.no_face == 1
    col.cropper = Cropper(CropConfig(mode="face", margin=0.0), detector=FakeDetector([(100, 50, 80, 80)]))
    assert col.offer(scene(1), 1.0) == SAVED
    (saved,) = tmp_path.iterdir()
    assert np.array_equal(load_image_rgb(saved), scene(1)[50:130, 100:180])


def test_collect_frames_stops_at_count_and_reports_progress(tmp_path):
    stream = io.StringIO()
    col = Collector(tmp_path, Cropper(), every_s=0)
    bar = Progress("open/alice", 4, stream=stream, every=2)
    frames = ((float(i), scene(100 + i)) for i in range(50))
    stats = collect_frames(frames, col, count=4, progress=bar, clock=lambda: 0.0)
    assert stats.saved == 4 and stats.frames == 4 and len(list(tmp_path.iterdir())) == 4
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("open/alice [##########..........] 2/4")
    assert lines[-1].startswith("open/alice [####################] 4/4") and "dup 0, blur 0" in lines[-1]


# ----------------------------------------------------------------------------- files


def test_write_new_never_overwrites(tmp_path):
    p = tmp_path / "d" / "x.png"
    assert write_new(p, b"one") == p
    assert write_new(p, b"two") == tmp_path / "d" / "x_2.png"
    assert write_new(p, b"three") == tmp_path / "d" / "x_3.png"
    assert p.read_bytes() == b"one"
    assert sorted(os.listdir(tmp_path / "d")) == ["x.png", "x_2.png", "x_3.png"]  # no temp files left


def test_write_new_without_hard_links(tmp_path, monkeypatch):
    """FAT/exFAT media have no hard links: an exclusive reservation + rename, still never overwriting."""

    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    p = tmp_path / "x.jpg"
    assert write_new(p, b"one") == p and write_new(p, b"two") == tmp_path / "x_2.jpg"
    assert p.read_bytes() == b"one" and (tmp_path / "x_2.jpg").read_bytes() == b"two"
    assert sorted(os.listdir(tmp_path)) == ["x.jpg", "x_2.jpg"]


def test_a_second_session_with_the_same_name_keeps_the_first(tmp_path):
    first = Collector(tmp_path, Cropper(), every_s=0, person="bob", session="same")
    first.offer(scene(1), 0.0)
    before = (tmp_path / "bob-same-00001.png").read_bytes()
    second = Collector(tmp_path, Cropper(), every_s=0, person="bob", session="same")
    second.offer(scene(2), 0.0)
    assert (tmp_path / "bob-same-00001.png").read_bytes() == before
    assert (tmp_path / "bob-same-00001_2.png").is_file()


# ----------------------------------------------------------------------------- the command, real sources


def test_collect_from_an_image_folder_via_the_device_cli(tmp_path, capsys):
    from device.cli import main

    src = tmp_path / "frames"
    src.mkdir()
    frames = [scene(1), noisy(scene(1), 1), blurred(scene(2)), scene(2), scene(3), noisy(scene(3), 2), scene(4)]
    for i, f in enumerate(frames):
        cv2.imwrite(str(src / f"{i:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    out = tmp_path / "dataset"
    rc = main(
        ["collect", "--label", "open", "--person", "alice", "--out", str(out), "--source", str(src), "--count", "10"]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    # an image folder is unpaced: every_s does not apply; 4 distinct sharp scenes
    assert "saved 4 crops from 7 frames" in printed and "2 duplicate, 1 blurred" in printed
    saved = sorted((out / "open" / "alice").iterdir())
    assert len(saved) == 4 and all(load_image_rgb(p).shape == (240, 240, 3) for p in saved)
    rc = main(["collect", "--label", "../up", "--person", "alice", "--out", str(out), "--source", str(src)])
    assert rc == 2 and "--label '../up'" in capsys.readouterr().err


def test_collect_from_a_video_file_paced_with_every_s(tmp_path):
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 20, (320, 240))
    assert w.isOpened()
    for i in range(20):  # 1 s of video, a new scene every frame
        w.write(cv2.cvtColor(scene(200 + i), cv2.COLOR_RGB2BGR))
    w.release()
    stats = collect.run("closed", "bob", tmp_path / "ds", source=str(video), count=None, every_s=0.3, progress=False)
    # the file is played at its 20 fps: saves at ~0, 0.3, 0.6, 0.9 s
    assert stats.frames == 20 and 3 <= stats.saved <= 4 and stats.too_soon == 20 - stats.saved
    assert len(list((tmp_path / "ds" / "closed" / "bob").iterdir())) == stats.saved


def test_config_crop_and_bad_arguments(tmp_path):
    cfg = tmp_path / "device.yaml"
    cfg.write_text("crop:\n  mode: center\n  fraction: 0.5\n")
    src = tmp_path / "f"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), scene(1))
    stats = collect.run("open", "p1", tmp_path / "ds", config=cfg, source=str(src), count=1, progress=False)
    (saved,) = (tmp_path / "ds" / "open" / "p1").iterdir()
    assert stats.saved == 1 and load_image_rgb(saved).shape == (120, 120, 3)
    with pytest.raises(FaceedgeError, match="--count 0"):
        collect.run("open", "p1", tmp_path / "ds", source=str(src), count=0)
    with pytest.raises(FaceedgeError, match="--person 'a b'"):
        collect.run("open", "a b", tmp_path / "ds", source=str(src))
    with pytest.raises(FaceedgeError, match="--source"):
        collect.run("open", "p1", tmp_path / "ds", source=str(tmp_path / "missing.mp4"))


def test_link_new_copies_and_keeps_the_source_without_hard_links(tmp_path, monkeypatch):
    """`device pull` gives cached files their dataset name with `link_new`: without hard links it
    copies (the cache keeps its file), and a taken name gets the next number."""
    from device.files import link_new

    src = tmp_path / "cache.png"
    src.write_bytes(b"pixels")
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "a.png").write_bytes(b"someone else's")

    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    assert link_new(src, tmp_path / "ds" / "a.png") == tmp_path / "ds" / "a_2.png"
    assert (tmp_path / "ds" / "a.png").read_bytes() == b"someone else's"
    assert (tmp_path / "ds" / "a_2.png").read_bytes() == b"pixels" and src.read_bytes() == b"pixels"
