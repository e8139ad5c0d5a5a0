"""A process's memory as the bench reports it, from /proc/<pid>/status. Its own small module: the
bench's child processes read their own peak at the end, and an import there must not add to it."""

from __future__ import annotations

import re
from pathlib import Path

_STATUS_KEYS = {"VmHWM": "peak_rss_mb", "VmRSS": "rss_mb", "RssAnon": "rss_anon_mb", "RssFile": "rss_file_mb"}


def memory_mb(pid: int | str = "self") -> dict[str, float]:
    """A process's memory from /proc/<pid>/status, in MB: peak_rss_mb (VmHWM), rss_mb (VmRSS), and the
    RSS split into rss_anon_mb (its own) and rss_file_mb (mapped files: the libraries, whose count
    depends on how the kernel caches them: a freshly installed OpenCV counted ~27 MB more here, so
    compare two processes' peaks in one run, not a peak on its own). {} where /proc is absent."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    found = re.findall(r"^(VmHWM|VmRSS|RssAnon|RssFile):\s+(\d+) kB", text, re.M)
    return {_STATUS_KEYS[k]: int(v) / 1024.0 for k, v in found}
