"""`python -m device run`: the daemon (device/daemon.py) from the command line, until stopped.

    python -m device run --config configs/device.yaml --model-dir runs/latest [--source video.mp4]

Signals (`install_signal_handlers`): SIGTERM/SIGINT set the stop event (clean exit within 2 s, about
3 s at worst with a hung camera and broker; camera closed); SIGHUP reloads config and model
(device/reload.py): a bad new model is refused with one log line while the old one keeps serving.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from device.config import check_limits, load_config, require_outputs
from device.daemon import Daemon
from device.flags import add_option

log = logging.getLogger(__name__)


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
    p = subparsers.add_parser(
        "run",
        help="run the daemon: camera → classifier → outputs",
        description="Classify camera frames on-device until SIGTERM/SIGINT (SIGHUP reloads config and model).",
    )
    p.add_argument("--config", type=Path, default=None, help="device YAML config (default: all defaults)")
    add_option(
        p,
        "--model-dir",
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
    add_option(
        p,
        "--num-threads",
        type=int,
        default=None,
        help="interpreter threads (overrides model.num_threads; default all cores)",
    )
    add_option(p, "--max-frames", type=int, default=None, help="stop after this many results")
    add_option(
        p,
        "--max-seconds",
        type=float,
        default=None,
        help="stop after this many seconds",
    )
    add_option(
        p,
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
