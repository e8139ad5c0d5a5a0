"""`python -m device collect`: build a training dataset with the camera the model will run on.

    python -m device collect --label L --person P --out ROOT [--config C] [--source S] [--count N] [--every-s 0.2]

Frames come from any source (the Pi camera, a webcam, a video file, a folder of images; the
config's ``source:`` or ``--source``), go through the daemon's own `Cropper` (the config's
``crop:``, or ``--mode``), and the crops are saved into the training layout
``<ROOT>/<label>/<person>/`` — the pixels training will see are the pixels the daemon will crop.

A frame is saved only if it passes, in this order:

1. **rate**: at least ``every_s`` seconds since the last saved crop (paced sources: cameras and
   real-time video; a folder of images is taken as fast as it is read);
2. **crop**: face mode found a face (else ``no_face``);
3. **sharpness**: variance of the Laplacian of the crop, at 128x128 grey, ≥ ``min_sharpness``
   (motion blur and defocus give low values; else ``blurred``);
4. **novelty**: the crop's 64-bit difference hash (dHash) differs in ≥ ``min_change`` bits from
   each of the last ``recent`` saved crops (a person sitting still yields near-identical frames;
   else ``duplicate``).

Files are named ``<person>-<session time>-<n>.png``, written to a temporary file, fsynced, then
hard-linked into place, which fails rather than overwrite an existing file (the next number is
taken). A progress line on stderr shows saved/wanted and the skip counts; Ctrl-C stops cleanly.
``--live-view`` serves the daemon's live-view page (device/liveview.py) on the config's
``outputs.http`` (default 127.0.0.1:8088), with the crops saved so far per label.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from device.crop import Cropper, encode_image_rgb
from device.errors import FaceedgeError
from device.files import require_writable_dir, write_new
from device.flags import add_option
from device.quality import dhash, grey_thumb, hamming, sharpness

log = logging.getLogger(__name__)

DEFAULT_MIN_SHARPNESS = 40.0
DEFAULT_MIN_CHANGE = 5
DEFAULT_RECENT = 8
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

SAVED, TOO_SOON, NO_FACE, BLURRED, DUPLICATE = "saved", "too_soon", "no_face", "blurred", "duplicate"


# ----------------------------------------------------------------------------- the frame loop


@dataclass
class CollectStats:
    frames: int = 0
    saved: int = 0
    too_soon: int = 0
    no_face: int = 0
    blurred: int = 0
    duplicate: int = 0
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"saved {self.saved} crops from {self.frames} frames in {self.seconds:.1f} s "
            f"(skipped: {self.duplicate} duplicate, {self.blurred} blurred, {self.no_face} without a face, "
            f"{self.too_soon} within every_s)"
        )

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("files")
        return d


class Collector:
    """Decides frame by frame what to keep and saves it (the testable core of `collect`)."""

    def __init__(
        self,
        out_dir: str | os.PathLike,
        cropper: Cropper,
        *,
        person: str = "person",
        every_s: float = 0.2,
        min_sharpness: float = DEFAULT_MIN_SHARPNESS,
        min_change: int = DEFAULT_MIN_CHANGE,
        recent: int = DEFAULT_RECENT,
        fmt: str = "png",
        jpeg_quality: int = 95,
        session: str | None = None,
    ) -> None:
        if fmt not in ("png", "jpg"):
            raise FaceedgeError(f"--format {fmt!r}: choose png or jpg")
        self.out_dir = Path(out_dir)
        self.cropper = cropper
        self.person = person
        self.every_s = every_s
        self.min_sharpness = min_sharpness
        self.min_change = min_change
        self.recent: deque[int] = deque(maxlen=max(1, recent))
        self.ext = "." + fmt
        self.jpeg_quality = jpeg_quality
        self.session = session or time.strftime("%Y%m%d-%H%M%S")
        self.stats = CollectStats()
        self._last_save: float | None = None
        self._n = 0
        self.view = None  # a device.liveview.CollectView, shown every frame and what became of it
        self._box = None

    def offer(self, rgb: np.ndarray, t: float) -> str:
        """Consider one frame captured at monotonic time `t`; returns what happened to it."""
        self._box = None
        outcome = self._offer(rgb, t)
        if self.view is not None:
            self.view.offer(rgb, self._box, outcome)
        return outcome

    def _offer(self, rgb: np.ndarray, t: float) -> str:
        s = self.stats
        s.frames += 1
        if self.every_s > 0 and self._last_save is not None and t - self._last_save < self.every_s:
            s.too_soon += 1
            return TOO_SOON
        cut = self.cropper(rgb)
        self._box = cut.box
        if cut.image is None:
            s.no_face += 1
            return NO_FACE
        grey = grey_thumb(cut.image)
        if sharpness(grey) < self.min_sharpness:
            s.blurred += 1
            return BLURRED
        h = dhash(grey)
        if any(hamming(h, r) < self.min_change for r in self.recent):
            s.duplicate += 1
            return DUPLICATE
        self._save(cut.image)
        self.recent.append(h)
        self._last_save = t
        return SAVED

    def _save(self, crop: np.ndarray) -> None:
        data = encode_image_rgb(crop, self.ext, jpeg_quality=self.jpeg_quality)
        if data is None:
            raise FaceedgeError(f"{self.out_dir}: OpenCV could not encode a {self.ext} crop")
        self._n += 1
        try:
            path = write_new(self.out_dir / f"{self.person}-{self.session}-{self._n:05d}{self.ext}", data)
        except OSError as e:  # e.g. the disk filled up meanwhile: stop with what was saved so far
            raise FaceedgeError(
                f"--out {self.out_dir}: cannot write a crop ({e.strerror or e}); {self.stats.saved} saved before"
            ) from None
        self.stats.saved += 1
        self.stats.files.append(str(path))
        log.debug("saved %s", path)


class Progress:
    """One status line on stderr: redrawn in place on a terminal, a line every few saves otherwise."""

    def __init__(self, title: str, total: int | None, stream: TextIO | None = None, every: int = 10) -> None:
        self.title, self.total = title, total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every
        self._last_saved = -1
        self._last_draw = 0.0

    def line(self, s: CollectStats) -> str:
        if self.total:
            done = min(s.saved, self.total)
            bar = "#" * (20 * done // self.total) + "." * (20 - 20 * done // self.total)
            head = f"{self.title} [{bar}] {s.saved}/{self.total}"
        else:
            head = f"{self.title} {s.saved} saved"
        return f"{head}  frames {s.frames}, dup {s.duplicate}, blur {s.blurred}, no face {s.no_face}"

    def update(self, s: CollectStats, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            if force or s.saved != self._last_saved or now - self._last_draw > 0.5:
                self.stream.write("\r" + self.line(s) + "\x1b[K")
                self.stream.flush()
                self._last_draw = now
        elif force or (s.saved != self._last_saved and s.saved % self.every == 0):
            self.stream.write(self.line(s) + "\n")
            self.stream.flush()
        self._last_saved = s.saved

    def close(self, s: CollectStats) -> None:
        self.update(s, force=True)
        if self.tty:
            self.stream.write("\n")


def collect_frames(
    frames: Iterable[np.ndarray | tuple[float, np.ndarray]],
    collector: Collector,
    *,
    count: int | None = None,
    max_seconds: float | None = None,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> CollectStats:
    """Feed frames (arrays, or (monotonic time, array) pairs) to `collector` until `count` crops are
    saved, `max_seconds` passed or the frames end. Ctrl-C stops cleanly with what was saved."""
    t0 = clock()
    stats = collector.stats
    try:
        for item in frames:
            t, rgb = item if isinstance(item, tuple) else (clock(), item)
            collector.offer(rgb, t)
            if progress is not None:
                progress.update(stats)
            if count is not None and stats.saved >= count:
                break
            if max_seconds is not None and clock() - t0 >= max_seconds:
                break
    except KeyboardInterrupt:
        log.warning("interrupted")
    stats.seconds = clock() - t0
    if progress is not None:
        progress.close(stats)
    return stats


# ----------------------------------------------------------------------------- sources


def source_frames(
    source, *, read_timeout_s: float = 1.0, stall_s: float = 10.0, open_attempts: int = 4
) -> Iterator[tuple[float, np.ndarray]]:
    """(monotonic time, frame) pairs from a `device.sources` FrameSource, opened here (retrying a
    busy camera with backoff) and closed when the iteration ends."""
    from device.sources import SourceError
    from device.sources.capture import backoff_delay

    for attempt in range(1, open_attempts + 1):
        try:
            source.open()
            break
        except SourceError as e:
            if attempt == open_attempts:
                raise FaceedgeError(f"source {source.describe()}: {e} (gave up after {attempt} attempts)") from None
            delay = backoff_delay(attempt, 0.5, 8.0)
            log.warning(
                "source %s: %s; retrying in %.1f s (attempt %d/%d)", source.describe(), e, delay, attempt, open_attempts
            )
            time.sleep(delay)
    try:
        last = time.monotonic()
        while True:
            try:
                img = source.read(timeout=read_timeout_s)
            except TimeoutError:
                if time.monotonic() - last > stall_s:
                    raise FaceedgeError(f"source {source.describe()}: no frame for {stall_s:g} s") from None
                continue
            if img is None:
                return
            last = time.monotonic()
            yield last, img
    finally:
        source.close()


def _check_name(kind: str, value: str) -> str:
    if not _NAME_OK.match(value) or value in (".", ".."):
        raise FaceedgeError(f"--{kind} {value!r}: use letters, digits, '.', '_' or '-' (it becomes a folder name)")
    return value


def run(
    label: str,
    person: str,
    out: str | os.PathLike,
    *,
    config: str | os.PathLike | None = None,
    source: str | None = None,
    mode: str | None = None,
    margin: float | None = None,
    count: int | None = 100,
    every_s: float = 0.2,
    max_seconds: float | None = None,
    min_sharpness: float = DEFAULT_MIN_SHARPNESS,
    min_change: int = DEFAULT_MIN_CHANGE,
    fmt: str = "png",
    progress: bool = True,
    live_view: bool = False,
) -> CollectStats:
    """Collect crops of `person` showing `label` into `<out>/<label>/<person>/`."""
    from device.config import load_config, source_from_arg
    from device.sources import build_source

    _check_name("label", label)
    _check_name("person", person)
    if count is not None and count < 1:
        raise FaceedgeError(f"--count {count}: must be >= 1")
    if every_s < 0:
        raise FaceedgeError(f"--every-s {every_s}: must be >= 0")
    cfg = load_config(config)
    crop_cfg = cfg.crop
    if mode is not None or margin is not None:
        update = {k: v for k, v in (("mode", mode), ("margin", margin)) if v is not None}
        crop_cfg = type(crop_cfg).model_validate({**crop_cfg.model_dump(), **update})
    out_dir = Path(out) / label / person
    require_writable_dir(out_dir, "--out")  # before the camera is opened
    src_cfg = source_from_arg(source, cfg.source) if source else cfg.source
    src = build_source(src_cfg)
    collector = Collector(
        out_dir,
        Cropper(crop_cfg),
        person=person,
        every_s=every_s if src.paced else 0.0,
        min_sharpness=min_sharpness,
        min_change=min_change,
        fmt=fmt,
    )
    if not src.paced and every_s:
        log.info("%s is read as fast as it is consumed: every_s does not apply", src.describe())
    log.info(
        "collecting %s of %s/%s from %s (crop %s) into %s",
        count or "crops",
        label,
        person,
        src.describe(),
        crop_cfg.mode,
        out_dir,
    )
    if live_view:
        from device.liveview import CollectView
        from device.outputs.configs import HttpConfig

        collector.view = CollectView(
            cfg.outputs.http or HttpConfig(), out_root=Path(out), label=label, person=person, wanted=count
        )
        collector.view.start()
    bar = Progress(f"{label}/{person}", count) if progress else None
    frames = source_frames(src, read_timeout_s=cfg.capture.read_timeout_s, stall_s=max(cfg.capture.stall_s, 2.0))
    try:
        with closing(frames):  # closes the source as soon as we stop, not at garbage collection
            stats = collect_frames(frames, collector, count=count, max_seconds=max_seconds, progress=bar)
    finally:
        if collector.view is not None:
            collector.view.close()
    log.debug("%s", stats.summary())  # the CLI prints it
    return stats


# ----------------------------------------------------------------------------- CLI


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "collect",
        help="save de-duplicated, sharp crops from a camera/video into <out>/<label>/<person>/",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--label", type=str, required=True, help="class of what the camera sees, e.g. open")
    p.add_argument("--person", type=str, required=True, help="who is filmed (keeps persons apart in the splits)")
    p.add_argument("--out", type=Path, required=True, help="dataset root")
    p.add_argument("--config", type=Path, default=None, help="device config YAML (its source: and crop:)")
    p.add_argument(
        "--source",
        type=str,
        default=None,
        help="override the source: picamera2, a camera index, a video file, an image folder/glob, a URL",
    )
    p.add_argument(
        "--mode",
        choices=["full", "center", "face"],
        default=argparse.SUPPRESS,
        help="override crop.mode (default: the config's)",
    )
    p.add_argument(
        "--margin",
        type=float,
        default=argparse.SUPPRESS,
        help="override crop.margin for face crops (default: the config's)",
    )
    p.add_argument("--count", type=int, default=100, help="stop after saving this many crops (default: %(default)s)")
    add_option(
        p,
        "--every-s",
        type=float,
        default=0.2,
        help="at least this many seconds between saved crops (default: %(default)s)",
    )
    add_option(p, "--max-seconds", type=float, default=None, help="stop after this long")
    add_option(
        p,
        "--min-sharpness",
        type=float,
        default=DEFAULT_MIN_SHARPNESS,
        help="variance of the Laplacian (at 128x128) below which a crop is 'blurred' (default: %(default)s)",
    )
    add_option(
        p,
        "--min-change",
        type=int,
        default=DEFAULT_MIN_CHANGE,
        help="dHash bits (of 64) a crop must differ from recent saves, else 'duplicate' (default: %(default)s)",
    )
    p.add_argument(
        "--format", dest="fmt", choices=["png", "jpg"], default="png", help="crop file format (default: %(default)s)"
    )
    add_option(
        p,
        "--live-view",
        action="store_true",
        help="serve the live-view page (frame, crop box, counts per label) on the config's outputs.http",
    )
    p.set_defaults(func=cli)
    return p


def cli(args: argparse.Namespace) -> int:
    stats = run(
        args.label,
        args.person,
        args.out,
        config=args.config,
        source=args.source,
        mode=getattr(args, "mode", None),
        margin=getattr(args, "margin", None),
        count=args.count,
        every_s=args.every_s,
        max_seconds=args.max_seconds,
        min_sharpness=args.min_sharpness,
        min_change=args.min_change,
        fmt=args.fmt,
        live_view=args.live_view,
    )
    print(stats.summary())
    print(f"crops in {Path(args.out) / args.label / args.person}")
    return 0
