"""JSON lines output: one line per result, to stdout or to a size-capped, rotating file.

Each line is `Result.to_dict()` plus `time` (ISO 8601, UTC, milliseconds) beside the epoch
`timestamp`. A file is opened unbuffered in append mode and each line is one `write()`. A nearly
full disk can still take only part of a line (a short write): the part is then cut off again with
`ftruncate` to the end of the last whole line, so every line in the file parses. A file that ends
in an incomplete line when it is opened (power lost mid-write) is cut back the same way, with a
warning. When the next line would take the file past `max_bytes`,
the file is rotated by renaming (`out.jsonl` → `out.jsonl.1` → ... → `out.jsonl.<backups>`, the
oldest deleted), like logging's RotatingFileHandler.

Write errors (a full disk, a closed pipe) never reach the loop: the first one is logged, later ones
are only counted (telemetry `output_errors`) until a write succeeds again.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

from device.errors import FaceedgeError
from device.telemetry import Telemetry
from device.types import Output, Result, register_output
from device.validation import Meta, Strict

log = logging.getLogger(__name__)


class JsonlConfig(Strict):
    path: str = "-"  # "-" = stdout
    max_bytes: Annotated[int, Meta(ge=0)] = 10 * 1024 * 1024  # rotate before the file would exceed this; 0 = never
    backups: Annotated[int, Meta(ge=0, le=100)] = 3  # rotated files kept
    events_only: bool = False  # write only the results whose smoothed label changed


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


LINE_START = b'{"time":'  # how every line we write begins (result_dict puts `time` first)
TORN_TAIL_MAX = 1 << 20  # longest incomplete last line cut at start; a line is ~0.5 KB

# One encoder for every line: json.dumps with non-default arguments builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def result_dict(result: Result) -> dict:
    """What every output publishes for a result: `Result.to_dict()` with `time` (ISO 8601) first."""
    return {"time": iso_time(result.timestamp), **result.to_dict()}


def result_line(result: Result) -> bytes:
    return (_ENCODER.encode(result_dict(result)) + "\n").encode()


@register_output("jsonl")
class JsonlOutput(Output):
    def __init__(self, cfg: JsonlConfig, telemetry: Telemetry, *, expose_images: bool = False):
        self.cfg = cfg
        self.telemetry = telemetry
        self._fd: int | None = None
        self._size = 0
        self._rotatable = False
        self._regular = False
        self._failing = False  # True between the first failed write and the next good one

    @property
    def to_stdout(self) -> bool:
        return self.cfg.path == "-"

    def start(self) -> None:
        if not self.to_stdout:
            try:
                self._open()
            except OSError as e:
                raise FaceedgeError(f"outputs.jsonl.path {self.cfg.path}: cannot open: {e.strerror or e}") from e

    def _open(self) -> None:
        path = Path(self.cfg.path)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        opened = os.fstat(self._fd)
        self._regular = stat.S_ISREG(opened.st_mode)
        self._rotatable = self._regular and self.cfg.max_bytes > 0
        self._size = opened.st_size if self._regular else 0
        if self._regular and self._size:
            self._cut_torn_tail()

    def _cut_torn_tail(self) -> None:
        """The file ends inside a line (a crash mid-write). A tail that is the start of one of our
        lines is cut back to the last newline; anything else (not ours) is kept and a newline is
        appended, so our next line starts on a line of its own."""
        size = self._size
        rfd = os.open(self.cfg.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            start = max(0, size - TORN_TAIL_MAX)
            chunk = os.pread(rfd, size - start, start)
        finally:
            os.close(rfd)
        if chunk.endswith(b"\n"):
            return
        nl = chunk.rfind(b"\n")
        tail = chunk[nl + 1 :]
        if (nl >= 0 or start == 0) and tail.startswith(LINE_START):
            keep = start + nl + 1
            os.ftruncate(self._fd, keep)
            self._size = keep
            log.warning(
                "jsonl: %s ended in an incomplete last line (%d bytes): cut back to the last whole line",
                self.cfg.path,
                size - keep,
            )
        else:
            self._size += os.write(self._fd, b"\n")
            log.warning("jsonl: %s did not end with a newline; appended one", self.cfg.path)

    def _undo_partial(self, good_size: int) -> None:
        """After a short or failed write: cut what part of the line did land (best effort)."""
        if self._fd is None or not self._regular:
            return
        try:
            if os.fstat(self._fd).st_size > good_size:
                os.ftruncate(self._fd, good_size)
        except OSError as e:
            log.debug("jsonl: could not cut a partial line from %s: %s", self.cfg.path, e)
        self._size = good_size

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        path = self.cfg.path
        n = self.cfg.backups
        if n == 0:
            os.unlink(path)
        else:
            for i in range(n - 1, 0, -1):
                src = f"{path}.{i}"
                if os.path.exists(src):
                    os.replace(src, f"{path}.{i + 1}")
            os.replace(path, f"{path}.1")
        self._open()

    def publish(self, result: Result) -> None:
        if self.cfg.events_only and not result.event:
            return
        try:
            line = result_line(result)
            if self.to_stdout:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
            else:
                if self._fd is None:
                    self._open()
                if self._rotatable and self._size > 0 and self._size + len(line) > self.cfg.max_bytes:
                    self._rotate()
                good = self._size
                try:
                    written = os.write(self._fd, line)
                except OSError:
                    self._undo_partial(good)
                    raise
                if written != len(line):
                    self._undo_partial(good)
                    raise OSError(f"short write ({written} of {len(line)} bytes; cut off again)")
                self._size = good + written
        except (OSError, ValueError) as e:  # ValueError: write to a closed stdout
            self.telemetry.inc("output_errors")  # only here: `errors` counts the other faults
            if not self._failing:
                self._failing = True
                log.error(
                    "jsonl: cannot write to %s: %s (further write errors are counted, not logged)",
                    "stdout" if self.to_stdout else self.cfg.path,
                    e,
                )
            return
        if self._failing:
            self._failing = False
            log.warning("jsonl: writing to %s again", "stdout" if self.to_stdout else self.cfg.path)

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
