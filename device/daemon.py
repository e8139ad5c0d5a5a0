"""The device daemon: newest camera frame → crop → resize → classify → decide → outputs.

Load once, infer many: the interpreter, the face detector and every buffer are made in `start()`;
the per-frame path allocates nothing that matters. Capture, crop and resize (`device.crop.Preparer`)
run in the capture thread (device/sources/capture.py), overlapping inference; BGR frames are swapped
after the resize, on the small image. The loop always takes the newest frame, so latency stays
bounded whatever the camera's rate.

Use it from code (the benchmark does)::

    with Daemon(load_config("configs/device.yaml"), model_dir="runs/latest") as d:   # start()
        stats = d.run(stop_event, max_frames=100, max_seconds=10, on_result=print)  # close() on exit

Health (`Telemetry`, /healthz): `starting` until the first result, `ok` while fresh results flow,
`stalled` when no frame came for `capture.stall_s` (the capture thread meanwhile reopens the
source with capped backoff), `error` when the source cannot work at all; a frame older than
`stall_s` is never classified. systemd (`Notifier`): READY=1 after the first result;
WATCHDOG=1 only after a fresh frame went through this loop; STOPPING=1 on exit.

SIGHUP (`request_reload`) reloads config and model without stopping: device/reload.py. The command
line, `python -m device run`, and its signal handlers are device/run.py.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from device.config import DaemonConfig, apply_opencv_threads, check_limits
from device.crop import Cropper, Preparer
from device.decision import Decider
from device.errors import FaceedgeError
from device.imx500 import bind_source
from device.liveview import FramePreview
from device.outputs import build_outputs, close_outputs, publish_all, publish_image, replace_outputs, start_outputs
from device.reload import Reload, Reloader, load_model, load_reload, model_dir_of, with_source
from device.runtime import Classifier, LabelRule
from device.service import Notifier
from device.sources import FrameGrabber, FrameSource, build_source
from device.telemetry import Telemetry
from device.types import Output, Result, new_run_id

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_FAILURES = 10  # frames raising in a row before the loop gives up
# Per-result timings in ms (Result.stages_ms and Telemetry histograms of the same names):
# frame_wait (loop blocked waiting for a frame), capture_wait (the frame's age: captured → taken by
# the loop), crop, preprocess (resize + quantize into the input tensor), invoke, postprocess
# (dequantize + decide), latency (capture → decided). Telemetry also gets `publish` (outputs) per
# result and `capture` (one source.read() in the capture thread: decode + colour conversion) per frame.
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
            self.config = with_source(config, source_override)
        if not (self.model_dir_arg or self.config.model.dir):
            raise FaceedgeError("no model: pass --model-dir or set model.dir in the config")
        self.telemetry = telemetry or Telemetry(stall_after_s=self.config.capture.stall_s)
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
        self.preparer: Preparer | None = None  # crop → resize into the model input
        self.reloader = Reloader(self._load_reload, on_start=self.notifier.reloading, on_refused=self._reload_refused)
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
        self.model_dir = model_dir_of(cfg, self.model_dir_arg)
        self.classifier = load_model(self.model_dir, cfg)
        bind_source(self.classifier, cfg)  # model and source must match (the AI Camera): fail before they open
        apply_opencv_threads(cfg)
        self.decider = Decider(cfg.decision, self.classifier.manifest)
        self.cropper = Cropper(cfg.crop)
        self._input = np.empty(self.classifier.input_size + (3,), np.uint8)
        self.preparer = Preparer(self.cropper, self.classifier.input_size)
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
        counters = ("frames", "results", "no_roi", "no_outputs", "stale", "stalls", "reloads", "reloads_refused")
        self.stats = {
            **dict.fromkeys(counters, 0),
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
        cfg_stall = lambda: self.config.capture.stall_s  # noqa: E731 - changes on reload
        poll = min(0.1, cfg_stall() / 4)
        deadline = time.monotonic() + max_seconds if max_seconds else None
        t_run = time.monotonic()
        stalled = False
        session = 0
        results_at_start = self.stats["results"]
        failures = 0  # consecutive frames that raised
        grabber = self.grabber
        while not stop.is_set():
            ready = self.reloader.take()
            if ready is not None:
                self._apply_reload(ready)
                grabber = self.grabber
            if deadline is not None and time.monotonic() >= deadline:
                break
            t_wait = time.perf_counter()
            frame = grabber.get(timeout=poll)
            now = time.monotonic()
            if frame is None:
                if grabber.finished:
                    if grabber.state == "failed":
                        error = grabber.error
                        self.telemetry.set_status("error", str(error))
                        raise error if isinstance(error, FaceedgeError) else FaceedgeError(str(error))
                    break
                last = grabber.last_frame_mono if grabber.last_frame_mono is not None else t_run
                if not stalled and now - last >= cfg_stall():
                    stalled = True
                    self.stats["stalls"] += 1
                    reason = f"no frame for {now - last:.1f} s from {grabber.source_name} ({grabber.state})"
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
                log.info("frames resumed from %s", grabber.source_name)
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
                grabber.release()
            self.notifier.watchdog()  # only here: a fresh frame went through the whole loop
            if result is None:
                continue
            if on_result is not None:
                on_result(result)
            if max_frames is not None and self.stats["results"] - results_at_start >= max_frames:
                break
        self.stats["run_s"] = round(time.monotonic() - t_run, 4)
        self.stats["capture"] = grabber.stats.as_dict()
        return self.stats

    def _capture_preparer(self) -> Preparer | None:
        """The preparer the capture thread runs. None in face mode (a detector run on every captured
        frame would waste the CPU on frames then dropped: the loop crops the frames it classifies)
        and for the AI Camera (it crops and classifies on the sensor)."""
        if self.config.crop.mode == "face" or self.classifier.on_sensor:
            return None
        return self.preparer

    def _process(self, frame, wait_ms: float = 0.0) -> Result | None:
        """One frame through crop → resize → invoke → decide → publish; stage times in ms.

        `wait_ms`: how long the loop blocked for this frame (0 when the capture thread is ahead).
        Crop and resize were usually done by the capture thread already (`frame.prepared`)."""
        clf = self.classifier
        if clf.on_sensor:
            return self._process_sensor(frame, wait_ms)
        age_ms = (time.monotonic() - frame.mono) * 1000.0
        model_input = self.preparer.frame_input(frame, out=self._input)  # here or in the capture thread
        if model_input.pixels is None:
            if model_input.skipped == "stale":
                self.stats["stale"] += 1
                self.telemetry.inc("stale_frames_discarded")
            else:  # face mode, no face: nothing to classify in this frame
                self.stats["no_roi"] += 1
                self.telemetry.inc("no_roi")
                self.telemetry.observe("crop", model_input.crop_ms)
            return None
        x = model_input.pixels
        t1 = time.perf_counter()
        clf.set_input(x)
        t2 = time.perf_counter()
        clf.invoke()
        t3 = time.perf_counter()
        scores = clf.scores()
        decision = self.decider.update(scores)
        t4 = time.perf_counter()
        stages = {
            "frame_wait": wait_ms,  # loop idle, waiting for the source
            "capture_wait": age_ms,  # captured → taken by the loop (the frame's age)
            "crop": model_input.crop_ms,
            "preprocess": model_input.resize_ms + (t2 - t1) * 1000.0,  # resize + set_input
            "invoke": (t3 - t2) * 1000.0,
            "postprocess": (t4 - t3) * 1000.0,
            "latency": (time.monotonic() - frame.mono) * 1000.0,  # capture → decided
        }
        return self._emit(frame, decision, scores, stages, x, t4, model_input.box)

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
        decision = self.decider.update(scores)
        t4 = time.perf_counter()
        stages = {
            "frame_wait": wait_ms,
            "capture_wait": age_ms,
            "postprocess": (t4 - t3) * 1000.0,
            "latency": (time.monotonic() - frame.mono) * 1000.0,
        }
        return self._emit(frame, decision, scores, stages, frame.image, t4)

    def _emit(self, frame, decision, scores: np.ndarray, stages: dict, image: np.ndarray | None, t4: float, box=None):
        """Publish one decided frame: result, outputs, telemetry, readiness (both paths)."""
        manifest, source = self.classifier.manifest, self.config.source.type
        result = Result.of(frame, decision, scores, stages, manifest, self.run_id, source)
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
            self.stats["start_to_first_result_s"] = first_s = round(time.monotonic() - self._t_start, 4)
            self.notifier.ready(f"classifying {self.grabber.source_name}")
            log.info("first result %.3f s after start: %s %.3f", first_s, decision.label, decision.score)
        if self.telemetry.status() != "ok":
            self.telemetry.set_status("ok")
            self.notifier.status(f"ok: classifying {self.grabber.source_name}")
        return result

    # ------------------------------------------------------------------------------- reload
    def request_reload(self) -> None:
        """Ask for a config + model reload (safe to call from a signal handler; see device/reload.py)."""
        self.reloader.request()

    def _load_reload(self) -> Reload:
        """The reload thread: the config again and its model, validated; the loop serves meanwhile."""
        return load_reload(
            self.config_path,
            self.config,
            model_dir_arg=self.model_dir_arg,
            source_override=self.source_override,
            outputs_required=self._outputs_given is None and bool(self.outputs),
        )

    def _reload_refused(self, e: FaceedgeError) -> None:
        old = self.classifier
        self.stats["reloads_refused"] += 1
        self.telemetry.inc("reloads_refused")
        log.error("reload refused: %s; still serving %s (sha256 %s)", e, old.model_path, old.manifest.sha256[:12])
        self.notifier.ready(f"reload refused: {e}")

    def _apply_reload(self, ready: Reload) -> None:
        """Main loop: swap in the validated model and the new config sections, at a frame boundary."""
        cfg, clf, mdir = ready.config, ready.classifier, ready.model_dir
        old_cfg, old_clf = self.config, self.classifier
        self.classifier, self.model_dir, self.config = clf, mdir, cfg
        self._input = np.empty(clf.input_size + (3,), np.uint8)
        self.decider = Decider(cfg.decision, clf.manifest)
        if cfg.crop != old_cfg.crop:
            self.cropper = Cropper(cfg.crop)
        apply_opencv_threads(cfg)
        self.preparer = Preparer(self.cropper, clf.input_size)  # frames the old one prepared are redone in the loop
        self.grabber.prepare = self._capture_preparer()
        if self._outputs_given is None and (cfg.outputs, cfg.expose_images) != (old_cfg.outputs, old_cfg.expose_images):
            self.outputs, started = replace_outputs(self.outputs, cfg, old_cfg, self.telemetry)
            if not started:  # e.g. the new port is taken: the previous outputs run again
                self.config = cfg = cfg.model_copy(
                    update={"outputs": old_cfg.outputs, "expose_images": old_cfg.expose_images}
                )
        self._preview = self._make_preview()
        self.grabber.keep_images = cfg.expose_images  # the live view needs the whole frame
        # the AI Camera loads its network when it opens: a new imx500 model means reopening it
        if cfg.source != old_cfg.source or cfg.capture != old_cfg.capture or clf.on_sensor or old_clf.on_sensor:
            self.grabber.stop(timeout=1.0)
            self.telemetry.stall_after_s = cfg.capture.stall_s
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
    def _make_grabber(self, cfg: DaemonConfig) -> FrameGrabber:
        source = bind_source(self.classifier, cfg)  # the AI Camera gets the model's network file
        factory = self._source_factory or (lambda: build_source(source))
        # keep_images=False: the loop uses the prepared input, not the frame (face mode has no hook
        # and keeps its frames): one full-size buffer in flight instead of up to four. The live view
        # (expose_images) shows whole frames, so it keeps them.
        return FrameGrabber(
            factory,
            cfg.capture,
            telemetry=self.telemetry,
            prepare=self._capture_preparer(),
            keep_images=cfg.expose_images,
        )

    def _make_preview(self) -> FramePreview | None:
        """The live view's frame feed (device/liveview.py), when images are exposed."""
        if not self.config.expose_images or not self.outputs:
            return None
        cropper = self.cropper
        box_of = None if self.config.crop.mode == "face" else (lambda rgb: cropper(rgb).box)
        return FramePreview(self.outputs, box_of)
