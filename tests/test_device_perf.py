"""The per-frame fast paths of the daemon hold the reference results they replaced.

Each optimisation (hand-built `Result.to_dict`, running-sum `Decider`, table dequantization,
`Telemetry.observe_many`, channel swap after resize, lazy output imports) is checked here against
the straightforward computation it stands for: same values, same order, same pixels.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device import quant
from device.config import parse_config
from device.crop import CropConfig, Cropper, resize_to_input, save_image_rgb
from device.daemon import Daemon
from device.decision import Decider, DecisionConfig
from device.manifest import Manifest, TensorSpec
from device.runtime import Classifier, _dequantizer, available_cores, default_threads
from device.sources import FrameGrabber, OpencvConfig, SyntheticConfig, build_source
from device.telemetry import Telemetry
from device.types import Result
from tests.fakes import picamera2 as fake_picamera2
from tests.helpers.video import write_video

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- Result.to_dict


def _to_dict_reference(r: Result) -> dict:
    """What to_dict returned before it was built by hand (dataclasses.asdict + rounding), with the
    schema 2 keys first and `scores` named by `score_labels`."""
    from device.types import RESULT_SCHEMA_VERSION

    d = dataclasses.asdict(r)
    names = d.pop("score_labels") or [str(i) for i in range(len(r.scores))]
    head = {
        "schema_version": RESULT_SCHEMA_VERSION,
        **{k: d.pop(k) for k in ("run_id", "source", "file", "frame_index")},
    }
    d["stages_ms"] = {k: round(v, 3) for k, v in r.stages_ms.items()}
    d["score"] = round(r.score, 6)
    d["smoothed_score"] = round(r.smoothed_score, 6)
    d["scores"] = {k: round(s, 6) for k, s in zip(names, r.scores)}
    return {**head, **d}


@pytest.mark.parametrize("smoothed", ["open", None])
def test_to_dict_equals_the_asdict_reference_with_key_order(smoothed):
    rng = np.random.default_rng(0)
    r = Result(
        frame_id=7,
        timestamp=1764300000.123456,
        label="closed",
        score=float(rng.random()),
        smoothed_label=smoothed,
        smoothed_score=float(rng.random()),
        event=smoothed is not None,
        stages_ms={"crop": 0.1234567, "invoke": 1.98765, "latency": 12.00049},
        scores=[float(x) for x in rng.random(3)],
        model_sha256="ab" * 32,
        score_labels=("a", "b", "c"),
        run_id="20260101T000000Z-abcdef",
        source="images",
        file="x/1.png",
        frame_index=3,
    )
    got, ref = r.to_dict(), _to_dict_reference(r)
    assert got == ref
    assert list(got) == list(ref) and list(got["stages_ms"]) == list(ref["stages_ms"])
    got["stages_ms"]["crop"] = -1.0  # a copy: the result itself is untouched
    assert r.stages_ms["crop"] == 0.1234567
    assert Result(1, 0.0, "a", 0.5, None, 0.5).to_dict() == _to_dict_reference(Result(1, 0.0, "a", 0.5, None, 0.5))


# ----------------------------------------------------------------------------- Decider


class ReferenceDecider:
    """The window mean recomputed with np.mean on every frame (the Decider before running sums)."""

    def __init__(self, cfg: DecisionConfig, man: Manifest) -> None:
        self.cfg, self.labels = cfg, list(man.labels)
        self.binary = man.output_kind == "sigmoid"
        self.t = man.threshold if cfg.threshold is None else cfg.threshold
        self.window = 1 if cfg.smoothing == "none" else cfg.window
        self.min_frames = 1 if cfg.smoothing == "none" else (cfg.min_frames or cfg.window)
        self.buf: list[np.ndarray] = []
        self.state = self.last = None

    def reset(self) -> None:
        self.buf, self.state = [], None

    def update(self, scores):
        s = np.asarray(scores, np.float64).reshape(-1)
        maj = self.cfg.smoothing == "majority"
        if self.binary:
            p = float(s[0])
            label = self.labels[1] if p >= self.t else self.labels[0]
            v = np.array([1.0 if p >= self.t else 0.0]) if maj else np.array([p])
            score = p
        else:
            k = int(np.argmax(s))
            label, score = self.labels[k], float(s[k])
            v = np.eye(len(self.labels))[k] if maj else s
        self.buf = (self.buf + [v])[-self.window :]
        mean = np.mean(self.buf, axis=0)
        h = self.cfg.hysteresis
        if self.binary:
            m, cut = float(mean[0]), (0.5 if maj else self.t)
            pos, neg = self.labels[1], self.labels[0]
            if len(self.buf) >= self.min_frames:
                if self.state is None:
                    self.state = pos if m >= cut else neg
                elif self.state == pos and m < cut - h:
                    self.state = neg
                elif self.state == neg and m >= cut + h:
                    self.state = pos
                smoothed = self.state
            else:
                smoothed = None
            sscore = m
        else:
            if len(self.buf) >= self.min_frames:
                best = int(np.argmax(mean))
                if self.state is None:
                    self.state = self.labels[best]
                else:
                    cur = self.labels.index(self.state)
                    if best != cur and mean[best] >= mean[cur] + h:
                        self.state = self.labels[best]
                smoothed, sscore = self.state, float(mean[self.labels.index(self.state)])
            else:
                smoothed, sscore = None, float(mean.max())
        event = smoothed is not None and smoothed != self.last
        if smoothed is not None:
            self.last = smoothed
        return label, score, smoothed, sscore, event


def _manifest(labels: list[str]) -> Manifest:
    spec = TensorSpec(dtype="uint8", shape=[1, len(labels) if len(labels) > 2 else 1])
    return Manifest(
        variant="int8",
        sha256="0" * 64,
        size_bytes=1,
        labels=labels,
        positive_label="open" if len(labels) == 2 else None,
        output_kind="sigmoid" if len(labels) == 2 else "softmax",
        input_height=8,
        input_width=8,
        input=spec,
        output=spec,
    )


@pytest.mark.parametrize("labels", [["closed", "open"], ["a", "b", "c"]])
@pytest.mark.parametrize(
    "smoothing,window,min_frames",
    [
        ("moving_average", 5, None),
        ("moving_average", 7, 2),
        ("majority", 4, None),
        ("none", 5, None),
    ],
)
def test_running_sum_decider_equals_the_window_mean(labels, smoothing, window, min_frames):
    man = _manifest(labels)
    cfg = DecisionConfig(smoothing=smoothing, window=window, min_frames=min_frames, hysteresis=0.05)
    rng = np.random.default_rng(window * 10 + len(labels))
    fast, ref = Decider(cfg, man), ReferenceDecider(cfg, man)
    ref_events = 0
    for i in range(3000):
        if len(labels) == 2:
            # slow drifts around the threshold plus noise, float32 like the classifier's output
            scores = np.array([np.clip(0.5 + 0.4 * math.sin(i / 37) + rng.normal(0, 0.15), 0, 1)], np.float32)
        else:
            scores = rng.dirichlet(np.ones(3) * 0.7).astype(np.float32)
        if i in (700, 701, 1900):  # after a stall or a reconnect: the window is forgotten
            fast.reset()
            ref.reset()
        d = fast.update(scores)
        label, score, smoothed, sscore, event = ref.update(scores)
        assert (d.label, d.smoothed_label, d.event) == (label, smoothed, event), i
        assert d.score == score and abs(d.smoothed_score - sscore) < 1e-12, i
        ref_events += event
    assert fast.events == ref_events > 3  # the sequences do switch labels, and the counts agree


def test_running_sum_does_not_drift_over_a_long_run():
    man = _manifest(["closed", "open"])
    d = Decider(DecisionConfig(window=5), man)
    rng = np.random.default_rng(1)
    vals = rng.random(200_003).astype(np.float32)
    for v in vals:
        out = d.update(np.array([v]))
    assert abs(out.smoothed_score - float(np.mean(vals[-5:].astype(np.float64)))) < 1e-15


# ----------------------------------------------------------------------------- dequantization + threads


@pytest.mark.parametrize(
    "dtype,scale,zero", [("uint8", 1 / 256, 0), ("uint8", 0.0123, 131), ("int8", 1 / 256, -128), ("int8", 0.07, 5)]
)
def test_table_dequantization_equals_quant_dequantize_for_every_code(dtype, scale, zero):
    codes = np.arange(256, dtype=np.uint8).view(dtype)
    fast = _dequantizer(np.dtype(dtype), float(np.float32(scale)), zero)
    np.testing.assert_array_equal(fast(codes), quant.dequantize(codes, float(np.float32(scale)), zero))
    assert fast(codes).dtype == np.float32


def test_float_and_wide_outputs_keep_the_pure_function():
    x = np.array([0.25, 0.75], np.float32)
    np.testing.assert_array_equal(_dequantizer(np.dtype(np.float32), 0.0, 0)(x), x)
    np.testing.assert_array_equal(_dequantizer(np.dtype(np.float16), 0.0, 0)(x.astype(np.float16)), x)
    q = np.array([-300, 0, 300], np.int16)
    np.testing.assert_array_equal(_dequantizer(np.dtype(np.int16), 0.01, 3)(q), quant.dequantize(q, 0.01, 3))


def test_classifier_scores_equal_the_reference_dequantization(tiny_models):
    clf = Classifier.from_model_dir(tiny_models["int8"], num_threads=1)
    rng = np.random.default_rng(0)
    for _ in range(5):
        clf.set_input(rng.integers(0, 256, (*clf.input_size, 3), dtype=np.uint8))
        clf.invoke()
        raw = clf.interpreter.get_tensor(clf._out["index"])
        np.testing.assert_array_equal(clf.scores(), quant.dequantize(raw, clf.out_scale, clf.out_zero).reshape(-1))


def test_default_threads_are_the_cores_of_the_affinity_mask():
    assert available_cores() == len(os.sched_getaffinity(0))
    assert default_threads() == available_cores()
    code = (
        "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
        "from device.runtime import available_cores, default_threads; "
        "print(default_threads(), available_cores(), os.cpu_count())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    threads, cores, cpus = map(int, out.stdout.split())
    assert threads == 1 and cores == 1 and cpus >= 1


# ----------------------------------------------------------------------------- telemetry


def test_observe_many_equals_repeated_observe():
    clock = lambda: 100.0  # noqa: E731 - a frozen clock: both snapshots are taken at the same time
    a, b = Telemetry(clock=clock), Telemetry(clock=clock)
    rng = np.random.default_rng(0)
    for _ in range(700):  # more than the percentile window
        stages = {k: float(v) for k, v in zip(("crop", "invoke", "latency", "publish"), rng.exponential(3.0, 4))}
        for k, v in stages.items():
            a.observe(k, v)
        b.observe_many(stages)
    assert a.snapshot()["latency_ms"] == b.snapshot()["latency_ms"]

    def ours(text: str) -> list[str]:  # the process_* families read /proc at call time (CPU seconds move)
        return [line for line in text.splitlines() if "process_" not in line]

    assert ours(a.prometheus_text()) == ours(b.prometheus_text())
    assert any(line.startswith("faceedge_") for line in ours(a.prometheus_text()))


# ----------------------------------------------------------------------------- channel order


def test_opencv_read_native_is_bgr_decoded_into_the_given_buffer(tmp_path):
    write_video(tmp_path / "v.avi", n=3)
    a = build_source(OpencvConfig(device=str(tmp_path / "v.avi"), realtime=False))
    b = build_source(OpencvConfig(device=str(tmp_path / "v.avi"), realtime=False))
    with a, b:
        assert a.channel_order == "BGR"
        out = np.empty((48, 64, 3), np.uint8)
        for _ in range(3):
            bgr = a.read_native(out)
            assert bgr is out
            np.testing.assert_array_equal(bgr[..., ::-1], b.read())
        assert a.read_native(out) is None and b.read() is None


@pytest.mark.parametrize(
    "crop",
    [
        {"mode": "full"},
        {"mode": "full", "square": "letterbox", "pad_value": 7},
        {"mode": "full", "square": "stretch"},
        {"mode": "center", "fraction": 0.55},
    ],
)
def test_swap_after_resize_is_pixel_identical_to_swap_before(tiny_models, crop):
    """What justifies the capture thread's order: cv2.resize treats channels independently."""
    cfg = parse_config({"source": {"type": "synthetic", "fps": 0, "frames": 1}, "crop": crop})
    with Daemon(cfg, model_dir=tiny_models["int8"]) as d:
        preparer = d.preparer
        assert d.grabber.prepare is preparer  # the capture thread runs it
        rng = np.random.default_rng(3)
        for shape in [(480, 640), (37, 91), (300, 200), (32, 32)]:
            rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
            bgr = np.ascontiguousarray(rgb[..., ::-1])
            want = resize_to_input(Cropper(CropConfig(**crop))(rgb).image, d.classifier.input_size)
            got_rgb, _ = preparer.prepare(rgb, None)
            got_bgr, _ = preparer.prepare(bgr, np.empty_like(want), bgr=True)
            np.testing.assert_array_equal(got_rgb, want)
            np.testing.assert_array_equal(got_bgr, want)


def _model_inputs(daemon: Daemon, n: int) -> list[tuple[int, np.ndarray]]:
    """(frame_id, what the loop handed to the interpreter) for the first n results."""
    seen: list[np.ndarray] = []
    set_input = daemon.classifier.set_input
    daemon.classifier.set_input = lambda x: (seen.append(x.copy()), set_input(x))[1]
    ids: list[int] = []
    daemon.run(max_frames=n, max_seconds=20, on_result=lambda r: ids.append(r.frame_id))
    assert len(ids) == len(seen) >= min(n, 3)
    return list(zip(ids, seen))


def _reference(frames_rgb: list[np.ndarray], size: tuple[int, int], crop: dict) -> list[np.ndarray]:
    cropper = Cropper(CropConfig(**crop))
    return [resize_to_input(cropper(f).image, size) for f in frames_rgb]


@pytest.mark.parametrize("crop", [{"mode": "full"}, {"mode": "center", "fraction": 0.7}])
def test_every_source_delivers_rgb_to_the_model(tiny_models, tmp_path, picam, crop):
    write_video(tmp_path / "v.avi", n=8)
    rng = np.random.default_rng(5)
    (tmp_path / "imgs").mkdir()
    for i in range(4):  # colourful, so that a channel swap cannot go unnoticed
        save_image_rgb(tmp_path / "imgs" / f"{i}.png", rng.integers(0, 256, (40, 52, 3), dtype=np.uint8))
    sources = {
        "opencv": ({"type": "opencv", "device": str(tmp_path / "v.avi"), "realtime": False}, "BGR"),
        "images": ({"type": "images", "path": str(tmp_path / "imgs")}, "RGB"),
        "synthetic": (
            {"type": "synthetic", "width": 64, "height": 48, "fps": 0, "pattern": "bars", "frames": 8},
            "RGB",
        ),
        "picamera2 RGB888": ({"type": "picamera2", "width": 64, "height": 48, "fps": 200, "format": "RGB888"}, "BGR"),
        "picamera2 BGR888": ({"type": "picamera2", "width": 64, "height": 48, "fps": 200, "format": "BGR888"}, "RGB"),
        "picamera2 XRGB8888": (
            {"type": "picamera2", "width": 64, "height": 48, "fps": 200, "format": "XRGB8888"},
            "RGB",
        ),
    }
    for name, (section, order) in sources.items():
        cfg = parse_config({"source": section, "crop": crop})
        src = build_source(cfg.source)
        assert src.channel_order == order, name
        with src:  # the reference: read() (RGB), crop, resize, frame by frame
            frames = [src.read() for _ in range(8)]
        frames = [f for f in frames if f is not None]
        with Daemon(cfg, model_dir=tiny_models["int8"]) as d:
            size = d.classifier.input_size
            got = _model_inputs(d, 6)
        ref = _reference(frames, size, crop)
        for frame_id, x in got:
            want = ref[0] if name.startswith("picamera2") else ref[frame_id - 1]  # the fake's scene is still
            np.testing.assert_array_equal(x, want, err_msg=f"{name}: frame {frame_id}")
        if name == "picamera2 RGB888":  # and it really is RGB: red on the left as the scene is
            assert tuple(got[0][1][size[0] // 2, 2]) == fake_picamera2.LEFT_RGB


def test_grabber_reads_natively_only_for_a_preparer(tmp_path):
    """A BGR source is read natively (no full-frame swap) when a preparer will swap the small image;
    without one the grabber reads RGB."""
    from device.crop import Preparer

    write_video(tmp_path / "v.avi", n=6)
    calls: list[bool] = []

    class Recording(Preparer):
        def prepare(self, image, out=None, *, bgr=False):
            calls.append(bgr)
            return super().prepare(image, out, bgr=bgr)

    factory = lambda: build_source(OpencvConfig(device=str(tmp_path / "v.avi"), realtime=False))  # noqa: E731
    ref = build_source(OpencvConfig(device=str(tmp_path / "v.avi"), realtime=False))
    with ref:
        want_rgb = ref.read().copy()
    want = resize_to_input(want_rgb, (8, 8))
    for preparer, keep, order in [
        (None, True, "RGB"),
        (Recording(Cropper(CropConfig(square="stretch")), (8, 8)), True, "BGR"),
        (Recording(Cropper(CropConfig(square="stretch")), (8, 8)), False, "BGR"),
    ]:
        calls.clear()
        with FrameGrabber(factory, prepare=preparer, keep_images=keep) as g:
            frames = []
            for _ in range(6):
                f = g.get(timeout=5.0)
                assert f is not None
                frames.append(
                    (
                        f.channel_order,
                        None if f.image is None else f.image.copy(),
                        None if f.prepared is None else f.prepared.copy(),
                    )
                )
        assert calls == ([True] * 6 if preparer is not None else [])
        for channel_order, image, prepared in frames[:1]:
            assert channel_order == order and (image is None) == (not keep)
            if preparer is None:
                assert prepared is None
                np.testing.assert_array_equal(image, want_rgb)
            else:
                np.testing.assert_array_equal(prepared, want)
        for channel_order, _, _ in frames:
            assert channel_order == order


def test_daemon_holds_one_full_frame_buffer_in_flight(tiny_models, tmp_path):
    """keep_images=False: a prepared frame's full-size buffer goes back to the pool at once."""
    buffers: set[int] = set()

    class Recording:
        def __init__(self):
            self.src = build_source(SyntheticConfig(width=320, height=240, fps=0))

        def read(self, out=None, timeout=None):
            img = self.src.read(out, timeout)
            buffers.add(id(img))
            return img

        def __getattr__(self, name):
            return getattr(self.src, name)

    cfg = parse_config({"source": {"type": "synthetic", "width": 320, "height": 240, "fps": 0}})
    with Daemon(cfg, model_dir=tiny_models["int8"], source_factory=Recording) as d:
        d.run(max_frames=60)
    assert len(buffers) == 1, len(buffers)


def test_disabled_outputs_are_not_imported(tmp_path):
    """A daemon without http/mqtt outputs does not load their modules, nor ssl or paho (~7 MB)."""
    code = (
        "import sys, device.daemon, device.config; device.config.parse_config({'outputs': {'jsonl': {}}}); "
        "from device.outputs import build_outputs; from device.telemetry import Telemetry; "
        "build_outputs(device.config.parse_config({'outputs': {'jsonl': {'path': '-'}}}).outputs, Telemetry()); "
        "print(sorted(m for m in ('http.server', 'ssl', 'paho', 'device.outputs.http', 'device.outputs.mqtt') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = (
        "import sys, device.config; from device.outputs import build_outputs, HttpOutput; "
        "from device.telemetry import Telemetry; "
        "o = build_outputs(device.config.parse_config({'outputs': {'http': {'port': 0}}}).outputs, Telemetry()); "
        "print(type(o[0]).__name__, o[0].__class__ is HttpOutput, 'device.outputs.http' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["HttpOutput", "True", "True"]
