"""The device daemon: newest camera frame → crop → resize → classify → decide → outputs.

Load once, infer many: the interpreter, the face detector and every buffer are made in `start()`;
the per-frame path allocates nothing that matters (the resize writes into one preallocated input
buffer, the capture thread recycles its frame buffers). Capture, crop and resize run in the
capture thread (device/sources/capture.py), overlapping inference; a BGR source (OpenCV,
picamera2 "RGB888") is read as is and the channels are swapped after the resize, on the model's
input rather than the whole frame. The loop always takes the newest frame, so latency stays
bounded whatever the camera's rate.

Use it from code (the benchmark does)::

    with Daemon(load_config("configs/device.yaml"), model_dir="runs/latest") as d:   # start()
        stats = d.run(stop_event, max_frames=100, max_seconds=10, on_result=print)  # close() on exit

Health (`Telemetry`, served by the HTTP output's /healthz): `starting` until the first result,
`ok` while fresh results flow, `stalled` when no frame came for `capture.stall_seconds` (the
capture thread meanwhile reopens the source with capped backoff), `error` when the source cannot
work at all. Every result carries the capture time of its frame, and a frame older than
`stall_seconds` is never classified: nothing stale is published as fresh.

systemd (`Notifier`): READY=1 after the first result; WATCHDOG=1 only from this loop after a fresh
frame was processed, so a capture call that never returns stops the pings and systemd restarts
the service; STOPPING=1 on exit.

Signals (`install_signal_handlers`, CLI only): SIGTERM/SIGINT set the stop event (clean exit
within 2 s, camera closed); SIGHUP reloads config and model. The new model is first validated in
a child process (`device check` via `device.check.validate_in_child`: manifest and sha256, shapes,
one inference on its self-test image) so that a truncated or mismatched file - or one that crashes the runtime - is refused
with one log line while the old model keeps serving.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.check import validate_in_child
from device.config import DaemonConfig, load_config, source_from_arg
from device.crop import Cropper, resize_to_input
from device.decision import Decider
from device.errors import FaceedgeError
from device.imx500 import bind_source, load_classifier
from device.liveview import FramePreview
from device.manifest import resolve_model_dir
from device.outputs import build_outputs, close_outputs, publish_all, publish_image, start_outputs
from device.runtime import Classifier, LabelRule, load_runtime
from device.service import Notifier
from device.sources import FrameGrabber, FrameSource, SourceConfig, build_source
from device.telemetry import Telemetry
from device.types import Output, Result

log = logging.getLogger(__name__)

# Per-result timings in ms (Result.stages_ms and Telemetry histograms of the same names):
# frame_wait (loop blocked waiting for a frame), capture_wait (the frame's age: captured → taken by
# the loop), crop, preprocess (resize + quantize into the input tensor), invoke, postprocess
# (dequantize + decide), latency (capture → decided). Telemetry also gets `publish` (outputs) per
# result and `capture` (one source.read() in the capture thread: decode + colour conversion) per frame.
MAX_CONSECUTIVE_FAILURES = 10  # frames raising in a row before the loop gives up

STAGES = ("frame_wait", "capture_wait", "crop", "preprocess", "invoke", "postprocess", "latency")


class Daemon:
    """One camera, one model, its outputs. `start()` → `run()` → `close()` (or `with Daemon(...)`)."""

    def __init__(
        self,
        config: DaemonConfig,
        *,
        model_dir: str | os.PathLike | None = None,
        config_path: str | os.PathLike | None = None,
        source_override: str | None = None,
        telemetry: Telemetry | None = None,
        notifier: Notifier | None = None,
        outputs: list[Output] | None = None,
        source_factory: Callable[[], FrameSource] | None = None,
    ) -> None:
        self.config = config
        self.config_path = Path(config_path) if config_path else None
        self.model_dir_arg = str(model_dir) if model_dir else None
        self.source_override = source_override
        if source_override:
            self.config = self._with_source(config)
        if not (self.model_dir_arg or self.config.model.dir):
            raise FaceedgeError("no model: pass --model-dir or set model.dir in the config")
        self.telemetry = telemetry or Telemetry(stall_after_s=self.config.capture.stall_seconds)
        self.notifier = notifier or Notifier()
        self._outputs_given = outputs
        self._source_factory = source_factory
        self.classifier: Classifier | LabelRule | None = None  # LabelRule: the AI Camera's (device/imx500.py)
        self.decider: Decider | None = None
        self.cropper: Cropper | None = None
        self.grabber: FrameGrabber | None = None
        self.outputs: list[Output] = []
        self.model_dir: Path | None = None
        self.latest: Result | None = None
        self.stats: dict[str, Any] = {}
        self._input: np.ndarray | None = None
        self._prepare_fn: Callable | None = None
        self._reload_requested = threading.Event()
        self._reload_thread: threading.Thread | None = None
        self._pending: tuple[DaemonConfig, Classifier, Path] | None = None
        self._pending_lock = threading.Lock()
        self._started = False
        self._closed = False
        self._t_start = 0.0
        self.run_id = new_run_id()  # in every result: results of different runs apart
        self._preview: FramePreview | None = None  # the live view's frames (expose_images)

    # ------------------------------------------------------------------------------- lifecycle
    def start(self) -> "Daemon":
        """Load the model (fails fast on a bad one, before the camera is touched), start the
        outputs and the capture thread."""
        if self._started:
            return self
        self._t_start = time.monotonic()
        cfg = self.config
        self.model_dir = self._resolve_model(cfg)
        self.classifier = self._load_classifier(self.model_dir, cfg)
        bind_source(self.classifier, cfg)  # model and source must match (the AI Camera): fail before they open
        apply_opencv_threads(cfg)
        self.decider = Decider(cfg.decision, self.classifier.manifest)
        self.cropper = Cropper(cfg.crop)
        self._input = np.empty(self.classifier.input_size + (3,), np.uint8)
        self._prepare_fn = self._make_prepare()
        self.telemetry.set_model(self.classifier.manifest.sha256, self.classifier.manifest)
        self.telemetry.set_status("starting", "waiting for the first frame")
        self.outputs = (
            self._outputs_given
            if self._outputs_given is not None
            else build_outputs(cfg.outputs, self.telemetry, expose_images=cfg.expose_images)
        )
        start_outputs(self.outputs)
        self._preview = self._make_preview()
        self._started = True  # from here on close() has something to release
        self.grabber = self._make_grabber(cfg).start()
        self.stats = {
            "frames": 0,
            "results": 0,
            "no_roi": 0,
            "no_outputs": 0,
            "stale": 0,
            "stalls": 0,
            "reloads": 0,
            "reloads_refused": 0,
            "start_to_first_result_s": None,
            "model_load_s": round(time.monotonic() - self._t_start, 4),
        }
        log.info(
            "model %s (%s, %dx%d, %d threads, %s %s); source %s; crop %s",
            self.model_dir,
            self.classifier.manifest.variant,
            *self.classifier.input_size,
            self.classifier.num_threads,
            self.classifier.runtime.name,
            self.classifier.runtime.version,
            cfg.source.type,
            cfg.crop.mode,
        )
        self.notifier.status("starting: waiting for the first frame")
        return self

    def close(self) -> None:
        """Stop capture (closing the camera), close outputs, tell systemd. Idempotent."""
        if self._closed or not self._started:
            self._closed = True
            return
        self._closed = True
        self.notifier.stopping()
        closed = self.grabber.stop(timeout=1.0) if self.grabber else True
        close_outputs(self.outputs)
        log.info(
            "stopped: %d results from %d frames (%d dropped); source %s",
            self.stats.get("results", 0),
            self.stats.get("frames", 0),
            self.grabber.stats.dropped if self.grabber else 0,
            "closed" if closed else "NOT closed (capture call blocked)",
        )
        self.notifier.close()

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        """(height, width, 3): the model input every frame is made into (None before `start()`)."""
        return None if self.classifier is None else (*self.classifier.input_size, 3)

    def __enter__(self) -> "Daemon":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------- the loop
    def run(
        self,
        stop_event: threading.Event | None = None,
        max_frames: int | None = None,
        max_seconds: float | None = None,
        on_result: Callable[[Result], None] | None = None,
    ) -> dict[str, Any]:
        """Classify frames until `stop_event` is set, `max_frames` results were published (by
        this call), `max_seconds` passed, or a finite source ended. Returns `stats` (cumulative
        over calls: run() may be called repeatedly, e.g. in benchmark slices). Raises
        FaceedgeError when the source cannot be used at all (e.g. a missing video file)."""
        check_limits(max_frames=max_frames, max_seconds=max_seconds)
        if not self._started:
            self.start()
        stop = stop_event or threading.Event()
        cfg_stall = lambda: self.config.capture.stall_seconds  # noqa: E731 - changes on reload
        poll = min(0.1, cfg_stall() / 4)
        deadline = time.monotonic() + max_seconds if max_seconds else None
        t_run = time.monotonic()
        stalled = False
        session = 0
        results_at_start = self.stats["results"]
        failures = 0  # consecutive frames that raised
        g = self.grabber
        while not stop.is_set():
            if self._reload_requested.is_set():
                self._start_reload()
            if self._pending is not None:
                self._apply_reload()
                g = self.grabber
            if deadline is not None and time.monotonic() >= deadline:
                break
            t_wait = time.perf_counter()
            frame = g.get(timeout=poll)
            now = time.monotonic()
            if frame is None:
                if g.finished:
                    if g.state == "failed":
                        self.telemetry.set_status("error", str(g.error))
                        raise g.error if isinstance(g.error, FaceedgeError) else FaceedgeError(str(g.error))
                    break
                last = g.last_frame_mono if g.last_frame_mono is not None else t_run
                if not stalled and now - last >= cfg_stall():
                    stalled = True
                    self.stats["stalls"] += 1
                    reason = f"no frame for {now - last:.1f} s from {g.source_name} ({g.state})"
                    self.telemetry.set_status("stalled", reason)
                    self.notifier.status("stalled: " + reason)
                    self.decider.reset()  # frames from before the gap must not vote after it
                    log.warning("stalled: %s", reason)
                continue
            self.stats["frames"] += 1
            self.telemetry.loop_progress()  # /healthz: a loop stuck on this frame shows as stalled
            if now - frame.mono > cfg_stall():  # never classify a frame from before a stall
                self.stats["stale"] += 1
                self.telemetry.inc("stale_frames_discarded")
                continue
            if frame.session != session:  # a reconnect: old frames must not vote
                if session:
                    self.decider.reset()
                session = frame.session
            if stalled:
                stalled = False
                log.info("frames resumed from %s", g.source_name)
            try:
                result = self._process(frame, (time.perf_counter() - t_wait) * 1000.0)
                failures = 0
            except Exception as e:  # noqa: BLE001 - one bad frame must not end the service...
                failures += 1
                self.telemetry.inc("errors")
                log.exception("frame %d failed (%d in a row)", frame.frame_id, failures)
                if failures >= MAX_CONSECUTIVE_FAILURES:  # ...but a broken loop must (systemd restarts it)
                    self.telemetry.set_status("error", f"{failures} frames failed in a row: {e}")
                    raise
                continue
            finally:
                g.release()
            self.notifier.watchdog()  # only here: a fresh frame went through the whole loop
            if result is None:
                continue
            if on_result is not None:
                on_result(result)
            if max_frames is not None and self.stats["results"] - results_at_start >= max_frames:
                break
        self.stats["run_s"] = round(time.monotonic() - t_run, 4)
        self.stats["capture"] = g.stats.as_dict()
        return self.stats

    def _make_prepare(self) -> Callable | None:
        """The crop + resize to run in the capture thread, overlapping inference. Only for the
        cheap crop modes: a face detector run on every captured frame would waste the CPU on
        frames that are then dropped, so face mode crops in the loop, on the frames it classifies.
        None for the AI Camera, which crops and classifies on the sensor."""
        if self.config.crop.mode == "face" or self.classifier.on_sensor:
            return None
        cropper, size = self.cropper, self.classifier.input_size
        scratch = np.empty(size + (3,), np.uint8)  # BGR frames: resized here, then swapped into `out`

        def prepare(image: np.ndarray, out: np.ndarray | None, bgr: bool = False):
            t0 = time.perf_counter()
            crop = cropper(image)  # a view: the crop geometry does not depend on the channel order
            t1 = time.perf_counter()
            if crop.image is None:
                return None, {}
            if out is None or out.shape[:2] != size:
                out = np.empty(size + (3,), np.uint8)
            if bgr:  # resize treats channels independently: resize-then-swap == swap-then-resize
                cv2.cvtColor(resize_to_input(crop.image, size, out=scratch), cv2.COLOR_BGR2RGB, dst=out)
            else:
                resize_to_input(crop.image, size, out=out)
            return out, {"crop": (t1 - t0) * 1000.0, "resize": (time.perf_counter() - t1) * 1000.0}

        prepare.swaps_channels = True  # the grabber may hand it BGR frames (bgr=True)
        return prepare

    def _process(self, frame, wait_ms: float = 0.0) -> Result | None:
        """One frame through crop → resize → invoke → decide → publish; stage times in ms.

        `wait_ms`: how long the loop blocked for this frame (0 when the capture thread is ahead).
        Crop and resize were usually done by the capture thread already (`frame.prepared`)."""
        clf = self.classifier
        if clf.on_sensor:
            return self._process_sensor(frame, wait_ms)
        box = None  # the crop box, when the loop cropped (the live view asks the cropper otherwise)
        t0 = time.perf_counter()
        age_ms = (time.monotonic() - frame.mono) * 1000.0
        if frame.prepared is not None and frame.prepared_by is self._prepare_fn:
            x = frame.prepared
            clf.set_input(x)
            t1 = t0 - frame.prep_ms["resize"] / 1000.0  # report the capture thread's timings
            t0 = t1 - frame.prep_ms["crop"] / 1000.0
        else:
            image = frame.image
            if image is None:  # prepared by the hook a reload replaced; its pixels already recycled
                self.stats["stale"] += 1
                self.telemetry.inc("stale_frames_discarded")
                return None
            if frame.channel_order == "BGR":  # read natively for a hook a reload replaced: rare
                image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            crop = self.cropper(image)
            t1 = time.perf_counter()
            if crop.image is None:  # face mode, no face: nothing to classify in this frame
                self.stats["no_roi"] += 1
                self.telemetry.inc("no_roi")
                self.telemetry.observe("crop", (t1 - t0) * 1000.0)
                return None
            x = resize_to_input(crop.image, clf.input_size, out=self._input)
            clf.set_input(x)
            box = crop.box
        t2 = time.perf_counter()
        clf.invoke()
        t3 = time.perf_counter()
        scores = clf.scores()
        d = self.decider.update(scores)
        t4 = time.perf_counter()
        stages = {
            "frame_wait": wait_ms,  # loop idle, waiting for the source
            "capture_wait": age_ms,  # captured → taken by the loop (the frame's age)
            "crop": (t1 - t0) * 1000.0,
            "preprocess": (t2 - t1) * 1000.0,
            "invoke": (t3 - t2) * 1000.0,
            "postprocess": (t4 - t3) * 1000.0,
            "latency": (time.monotonic() - frame.mono) * 1000.0,  # capture → decided
        }
        return self._emit(frame, d, scores, stages, x, t4, box)

    def _process_sensor(self, frame, wait_ms: float) -> Result | None:
        """One AI Camera frame: the sensor ran the model on it, the Pi only reads its output tensor
        and decides. Stages: frame_wait, capture_wait, postprocess (outputs → decision), latency;
        there is no crop, preprocess or invoke on the Pi."""
        t3 = time.perf_counter()
        age_ms = (time.monotonic() - frame.mono) * 1000.0
        if frame.sensor_output is None:  # e.g. while the network firmware uploads
            self.stats["no_outputs"] += 1
            self.telemetry.inc("frames_without_outputs")
            return None
        scores = self.classifier.scores_from(frame.sensor_output)
        d = self.decider.update(scores)
        t4 = time.perf_counter()
        stages = {
            "frame_wait": wait_ms,
            "capture_wait": age_ms,
            "postprocess": (t4 - t3) * 1000.0,
            "latency": (time.monotonic() - frame.mono) * 1000.0,
        }
        return self._emit(frame, d, scores, stages, frame.image, t4)

    def _emit(
        self,
        frame,
        d,
        scores: np.ndarray,
        stages: dict[str, float],
        image: np.ndarray | None,
        t4: float,
        box=None,
    ) -> Result:
        """Publish one decided frame: result, outputs, telemetry, readiness (both paths)."""
        clf = self.classifier
        file, index = frame.position
        result = Result(
            frame_id=frame.frame_id,
            timestamp=frame.timestamp,
            label=d.label,
            score=d.score,
            smoothed_label=d.smoothed_label,
            smoothed_score=d.smoothed_score,
            event=d.event,
            stages_ms=stages,
            scores=scores.tolist(),
            model_sha256=clf.manifest.sha256,
            score_labels=score_labels(clf.manifest),
            run_id=self.run_id,
            source=self.config.source.type,
            file=file,
            frame_index=index,
        )
        self.telemetry.result_published(result)
        publish_all(self.outputs, result)
        if self.config.expose_images and image is not None:
            publish_image(self.outputs, image.copy())
        if self._preview is not None and self._preview.due():
            self._preview.offer(frame.image, box, bgr=frame.channel_order == "BGR")
        t5 = time.perf_counter()
        self.telemetry.observe_many({**stages, "publish": (t5 - t4) * 1000.0})  # one lock, not eight
        self.latest = result
        self.stats["results"] += 1
        if self.stats["start_to_first_result_s"] is None:
            self.stats["start_to_first_result_s"] = round(time.monotonic() - self._t_start, 4)
            self.notifier.ready(f"classifying {self.grabber.source_name}")
            log.info(
                "first result %.3f s after start: %s %.3f", self.stats["start_to_first_result_s"], d.label, d.score
            )
        if self.telemetry.status() != "ok":
            self.telemetry.set_status("ok")
            self.notifier.status(f"ok: classifying {self.grabber.source_name}")
        return result

    # ------------------------------------------------------------------------------- reload
    def request_reload(self) -> None:
        """Ask for a config + model reload (safe to call from a signal handler)."""
        self._reload_requested.set()

    def _start_reload(self) -> None:
        self._reload_requested.clear()
        if self._reload_thread is not None and self._reload_thread.is_alive():
            log.info("reload already in progress; request merged")
            return
        self.notifier.reloading()
        self._reload_thread = threading.Thread(target=self._prepare_reload, name="reload", daemon=True)
        self._reload_thread.start()

    def _prepare_reload(self) -> None:
        """Reload thread: read config, validate the model in a child process, then load it here.
        The main loop keeps classifying with the old model meanwhile."""
        old = self.classifier
        try:
            cfg = load_config(self.config_path) if self.config_path else self.config
            if self._outputs_given is None and self.outputs:  # a reload must not turn every output off
                require_outputs(cfg, self.config_path)
            cfg = self._with_source(cfg)
            mdir = self._resolve_model(cfg)
            validate_in_child(mdir, config=self.config_path, timeout_s=cfg.model.validate_timeout_s)
            clf = self._load_classifier(mdir, cfg)
            bind_source(clf, cfg)
        except FaceedgeError as e:
            self.stats["reloads_refused"] += 1
            self.telemetry.inc("reloads_refused")
            log.error("reload refused: %s; still serving %s (sha256 %s)", e, old.model_path, old.manifest.sha256[:12])
            self.notifier.ready(f"reload refused: {e}")
            return
        with self._pending_lock:
            self._pending = (cfg, clf, mdir)

    def _apply_reload(self) -> None:
        """Main loop: swap in the validated model and the new config sections, at a frame boundary."""
        with self._pending_lock:
            cfg, clf, mdir = self._pending
            self._pending = None
        old_cfg, old_clf = self.config, self.classifier
        self.classifier, self.model_dir, self.config = clf, mdir, cfg
        self._input = np.empty(clf.input_size + (3,), np.uint8)
        self.decider = Decider(cfg.decision, clf.manifest)
        if cfg.crop != old_cfg.crop:
            self.cropper = Cropper(cfg.crop)
        apply_opencv_threads(cfg)
        self._prepare_fn = self._make_prepare()  # frames prepared by the old hook are redone in the loop
        self.grabber.prepare = self._prepare_fn
        if cfg.outputs != old_cfg.outputs or cfg.expose_images != old_cfg.expose_images:
            if self._outputs_given is None:
                close_outputs(self.outputs)
                try:
                    self.outputs = build_outputs(cfg.outputs, self.telemetry, expose_images=cfg.expose_images)
                    start_outputs(self.outputs)
                except FaceedgeError as e:  # e.g. the new port is taken: keep the old outputs
                    log.error("reload: new outputs refused (%s); keeping the previous ones", e)
                    self.config = cfg = cfg.model_copy(
                        update={"outputs": old_cfg.outputs, "expose_images": old_cfg.expose_images}
                    )
                    self.outputs = build_outputs(cfg.outputs, self.telemetry, expose_images=cfg.expose_images)
                    start_outputs(self.outputs)
        self._preview = self._make_preview()
        self.grabber.keep_images = cfg.expose_images  # the live view needs the whole frame
        # the AI Camera loads its network when it opens: a new imx500 model means reopening it
        if cfg.source != old_cfg.source or cfg.capture != old_cfg.capture or clf.on_sensor or old_clf.on_sensor:
            self.grabber.stop(timeout=1.0)
            self.telemetry.stall_after_s = cfg.capture.stall_seconds
            self.grabber = self._make_grabber(cfg).start()
        self.telemetry.set_model(clf.manifest.sha256, clf.manifest)
        self.stats["reloads"] += 1
        self.telemetry.inc("reloads")
        log.info(
            "reloaded: model %s (sha256 %s), source %s, crop %s",
            mdir,
            clf.manifest.sha256[:12],
            cfg.source.type,
            cfg.crop.mode,
        )
        self.notifier.ready(f"reloaded model {clf.manifest.sha256[:12]}")

    # ------------------------------------------------------------------------------- helpers
    def _with_source(self, cfg: DaemonConfig) -> DaemonConfig:
        if not self.source_override:
            return cfg
        src: SourceConfig = source_from_arg(self.source_override, cfg.source)
        return cfg.model_copy(update={"source": src})

    def _resolve_model(self, cfg: DaemonConfig) -> Path:
        return resolve_model_dir(self.model_dir_arg or cfg.model.dir, cfg.model.variant)

    @staticmethod
    def _load_classifier(mdir: Path, cfg: DaemonConfig) -> Classifier | LabelRule:
        runtime = load_runtime(cfg.model.runtime) if cfg.model.runtime else None
        return load_classifier(mdir, num_threads=cfg.model.num_threads, runtime=runtime)

    def _make_grabber(self, cfg: DaemonConfig) -> FrameGrabber:
        source = bind_source(self.classifier, cfg)  # the AI Camera gets the model's network file
        factory = self._source_factory or (lambda: build_source(source))
        # keep_images=False: the loop uses the prepared input, not the frame (face mode has no hook
        # and keeps its frames): one full-size buffer in flight instead of up to four. The live view
        # (expose_images) shows whole frames, so it keeps them.
        return FrameGrabber(
            factory, cfg.capture, telemetry=self.telemetry, prepare=self._prepare_fn, keep_images=cfg.expose_images
        )

    def _make_preview(self) -> FramePreview | None:
        """The live view's frame feed (device/liveview.py), when images are exposed."""
        if not self.config.expose_images or not self.outputs:
            return None
        cropper = self.cropper
        box_of = None if self.config.crop.mode == "face" else (lambda rgb: cropper(rgb).box)
        return FramePreview(self.outputs, box_of)


def new_run_id() -> str:
    """`<UTC start time>-<6 hex digits>`: sorts by time, unique across restarts and devices."""
    import secrets

    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def score_labels(manifest) -> tuple[str, ...]:
    """The label each entry of the model's output is the probability of: the positive label for a
    sigmoid (one output, P(positive)), every label in order for a softmax."""
    if manifest.output_kind == "sigmoid":
        return (manifest.positive_label,)
    return tuple(manifest.labels)


def apply_opencv_threads(cfg: DaemonConfig) -> int:
    """Size OpenCV's thread pool (see DaemonConfig.opencv_threads); returns the value set."""
    n = cfg.opencv_threads
    if n is None:
        n = -1 if cfg.crop.mode == "face" else 1  # -1: OpenCV's default (all cores)
    cv2.setNumThreads(n)
    return n


def check_limits(
    *, max_frames: int | None = None, max_seconds: float | None = None, num_threads: int | None = None
) -> None:
    """Run limits below 1 are mistakes (0 used to mean one frame, or no limit at all): refuse them."""
    if max_frames is not None and max_frames < 1:
        raise FaceedgeError(f"--max_frames {max_frames}: must be >= 1 (leave it out to run until stopped)")
    if max_seconds is not None and not max_seconds > 0:
        raise FaceedgeError(f"--max_seconds {max_seconds:g}: must be > 0 (leave it out to run until stopped)")
    if num_threads is not None and num_threads < 1:
        raise FaceedgeError(
            f"--num_threads {num_threads}: must be >= 1 (leave it out for the default: the cores but one)"
        )


def require_outputs(cfg: DaemonConfig, config: str | os.PathLike | None) -> None:
    """A daemon whose results go nowhere is a mistake, not a run."""
    if not any(getattr(cfg.outputs, name) is not None for name in type(cfg.outputs).field_names()):
        where = f"{config}: key 'outputs'" if config else "no --config given, so key 'outputs'"
        raise FaceedgeError(
            f"{where}: no output configured, the results would go nowhere; add outputs.jsonl "
            "(path: '-' for stdout), outputs.http or outputs.mqtt"
        )


# ----------------------------------------------------------------------------------- signals + CLI


def install_signal_handlers(stop: threading.Event, daemon: Daemon | None = None) -> None:
    """SIGTERM/SIGINT → stop; SIGHUP → reload. Main thread only (Python's rule for signals)."""

    def _stop(signum, _frame):
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if daemon is not None:
        signal.signal(signal.SIGHUP, lambda *_: daemon.request_reload())


def run(
    config: str | os.PathLike | None,
    *,
    model_dir: str | None = None,
    source: str | None = None,
    num_threads: int | None = None,
    max_frames: int | None = None,
    max_seconds: float | None = None,
    stop: threading.Event | None = None,
    handle_signals: bool = False,
) -> dict[str, Any]:
    """`device run`: load config, start the daemon, classify until stopped. Returns stats."""
    check_limits(max_frames=max_frames, max_seconds=max_seconds, num_threads=num_threads)
    cfg = load_config(config)
    require_outputs(cfg, config)
    if num_threads is not None:
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"num_threads": num_threads})})
    stop = stop or threading.Event()
    daemon = Daemon(cfg, model_dir=model_dir, config_path=config, source_override=source)
    if handle_signals:
        install_signal_handlers(stop, daemon)
    with daemon:
        return daemon.run(stop, max_frames=max_frames, max_seconds=max_seconds)


def add_parser(subparsers) -> None:
    import argparse

    p = subparsers.add_parser(
        "run",
        help="run the daemon: camera → classifier → outputs",
        description="Classify camera frames on-device until SIGTERM/SIGINT (SIGHUP reloads config and model).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", type=Path, default=None, help="device YAML config (default: all defaults)")
    p.add_argument(
        "--model_dir",
        "--model-dir",
        dest="model_dir",
        type=str,
        default=None,
        help="model dir or run dir (overrides model.dir)",
    )
    p.add_argument(
        "--source",
        type=str,
        default=None,
        help="override the config's source: synthetic, picamera2, a camera index, a video file, "
        "a URL, an image folder or glob",
    )
    p.add_argument(
        "--num_threads",
        "--num-threads",
        dest="num_threads",
        type=int,
        default=None,
        help="interpreter threads (overrides model.num_threads; default the cores but one, at least 1)",
    )
    p.add_argument(
        "--max_frames", "--max-frames", dest="max_frames", type=int, default=None, help="stop after this many results"
    )
    p.add_argument(
        "--max_seconds",
        "--max-seconds",
        dest="max_seconds",
        type=float,
        default=None,
        help="stop after this many seconds",
    )
    p.add_argument(
        "--validate_config",
        "--validate-config",
        dest="validate_only",
        action="store_true",
        help="only validate --config and exit",
    )
    p.set_defaults(func=_cmd_run)


def _cmd_run(args) -> int:
    from device.config import summary

    cfg = load_config(args.config)  # validated before logging is configured from it
    if args.validate_only:
        print(f"ok: {args.config or '(defaults)'}: {summary(cfg)}")
        return 0
    if getattr(args, "log_level", None) is None:
        logging.getLogger().setLevel(cfg.log_level)
    stats = run(
        args.config,
        model_dir=args.model_dir,
        source=args.source,
        num_threads=args.num_threads,
        max_frames=args.max_frames,
        max_seconds=args.max_seconds,
        handle_signals=True,
    )
    log.info("run stats: %s", json.dumps({k: v for k, v in stats.items() if k != "capture"}))
    return 0
