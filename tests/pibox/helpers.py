"""Plain helpers of the emulated-Pi tests (fixtures and hooks: conftest.py): the suites and CPU
models chosen, the figures for the end-of-run summary, the demo's daemon config."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from tests.pibox.box import CPUS, SUITES

PY = sys.executable

# what the stand-in for Raspberry Pi OS's simplejpeg/picamera2 is: a Cython module of Debian's
# python3-pywt, built against the OS's numpy C API
APT_EXTENSION = "import pywt._extensions._pywt as ext, numpy; print(ext.__file__, numpy.__version__, numpy.__file__)"


def _selected(var: str, allowed) -> list[str]:
    raw = os.environ.get(var, "")
    chosen = [s.strip() for s in raw.split(",") if s.strip()] or list(allowed)
    bad = [s for s in chosen if s not in allowed]
    if bad:
        raise pytest.UsageError(f"{var}={raw!r}: {bad} not in {list(allowed)}")
    return chosen


def selected_suites() -> list[str]:
    return _selected("FACEEDGE_PI_SUITES", SUITES)


def selected_cpus() -> list[str]:
    return _selected("FACEEDGE_PI_CPUS", CPUS)


FIGURES: list[str] = []


def record(line: str) -> None:
    """A figure for the end-of-run summary (parity counts, timings)."""
    FIGURES.append(line)


def write_daemon_config(path: Path, video: str, results: str, threads: int) -> Path:
    """The demo's daemon config (every frame of the video, JSONL out) with a fixed thread count."""
    path.write_text(
        textwrap.dedent(f"""\
        source: {{type: opencv, device: {video}, realtime: false}}
        crop: {{mode: full}}
        model: {{variant: int8, num_threads: {threads}}}
        outputs:
          jsonl: {{path: {results}}}
        log_level: INFO
        """)
    )
    return path
