"""SIGHUP: reload the config and the model while the old model keeps serving.

`Reloader.request()` is safe in a signal handler. The daemon's loop calls `Reloader.take()` once per
iteration: it starts the reload thread when one was requested, and hands back the loaded `Reload`
once it is ready, so the daemon swaps it in at a frame boundary. The thread (`load_reload`) reads the
config, validates the new model in a child process (`device check` via
`device.check.validate_in_child`: manifest and sha256, shapes, one inference on its self-test image)
so that a truncated or mismatched file - or one that crashes the runtime - is refused with one log
line, and only then loads it in this process.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from device.check import validate_in_child
from device.config import DaemonConfig, load_config, require_outputs, source_from_arg
from device.errors import FaceedgeError
from device.imx500 import bind_source, load_classifier
from device.manifest import resolve_model_dir
from device.runtime import Classifier, LabelRule, load_runtime

log = logging.getLogger(__name__)


@dataclass
class Reload:
    """A validated, loaded model and the config it comes with, ready to swap in."""

    config: DaemonConfig
    classifier: Classifier | LabelRule
    model_dir: Path


def with_source(cfg: DaemonConfig, source_override: str | None) -> DaemonConfig:
    """`cfg` with the command line's `--source`, when there is one."""
    if not source_override:
        return cfg
    return cfg.model_copy(update={"source": source_from_arg(source_override, cfg.source)})


def model_dir_of(cfg: DaemonConfig, model_dir_arg: str | os.PathLike | None) -> Path:
    """The model dir the daemon loads: `--model-dir`, else the config's model.dir (a run dir's variant)."""
    return resolve_model_dir(model_dir_arg or cfg.model.dir, cfg.model.variant)


def load_model(model_dir: Path, cfg: DaemonConfig) -> Classifier | LabelRule:
    """The model as the config says to run it (runtime, threads; the AI Camera's on the sensor)."""
    runtime = load_runtime(cfg.model.runtime) if cfg.model.runtime else None
    return load_classifier(model_dir, num_threads=cfg.model.num_threads, runtime=runtime)


def load_reload(
    config_path: str | os.PathLike | None,
    current: DaemonConfig,
    *,
    model_dir_arg: str | os.PathLike | None = None,
    source_override: str | None = None,
    outputs_required: bool = True,
) -> Reload:
    """Read the config again (or keep `current` without a file), validate the model it names in a
    child process, then load it here. FaceedgeError says why it was refused."""
    cfg = load_config(config_path) if config_path else current
    if outputs_required:  # a reload must not turn every output off
        require_outputs(cfg, config_path)
    cfg = with_source(cfg, source_override)
    model_dir = model_dir_of(cfg, model_dir_arg)
    validate_in_child(model_dir, config=config_path, timeout_s=cfg.model.validate_timeout_s)
    classifier = load_model(model_dir, cfg)
    bind_source(classifier, cfg)
    return Reload(cfg, classifier, model_dir)


class Reloader:
    """Runs `load` in a thread on request; `on_refused(error)` when it raises FaceedgeError."""

    def __init__(
        self,
        load: Callable[[], Reload],
        *,
        on_start: Callable[[], None] = lambda: None,
        on_refused: Callable[[FaceedgeError], None] = lambda e: None,
    ) -> None:
        self._load = load
        self._on_start = on_start
        self._on_refused = on_refused
        self._requested = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready: Reload | None = None
        self._lock = threading.Lock()

    def request(self) -> None:
        """Ask for a reload (safe to call from a signal handler)."""
        self._requested.set()

    def take(self) -> Reload | None:
        """From the loop: start a requested reload; the loaded one once it is ready (once)."""
        if self._requested.is_set():
            self._requested.clear()
            if self._thread is not None and self._thread.is_alive():
                log.info("reload already in progress; request merged")
            else:
                self._on_start()
                self._thread = threading.Thread(target=self._run, name="reload", daemon=True)
                self._thread.start()
        if self._ready is None:
            return None
        with self._lock:
            ready, self._ready = self._ready, None
        return ready

    def _run(self) -> None:
        try:
            ready = self._load()
        except FaceedgeError as e:
            self._on_refused(e)
            return
        with self._lock:
            self._ready = ready
