"""The standard Prometheus process metrics, read from /proc (Linux; the Pi), without a client library.

    process_resident_memory_bytes   gauge    resident set size
    process_cpu_seconds_total       counter  user + system CPU time of the process (all threads)
    process_start_time_seconds      gauge    start time, seconds since the epoch

The same names, types and sources as the official client (prometheus_client's ProcessCollector):
/proc/self/stat fields utime, stime (clock ticks) and starttime (ticks after boot, plus `btime` of
/proc/stat), /proc/self/statm for the resident pages. Where /proc is missing, nothing is exported.
"""

from __future__ import annotations

import os
from functools import lru_cache

HELP = {
    "process_resident_memory_bytes": ("gauge", "Resident memory size in bytes."),
    "process_cpu_seconds_total": ("counter", "Total user and system CPU time spent in seconds."),
    "process_start_time_seconds": ("gauge", "Start time of the process since unix epoch in seconds."),
}


@lru_cache(maxsize=1)
def _constants() -> tuple[float, int, float] | None:
    """(clock ticks per second, page size, boot time) or None where /proc is missing."""
    try:
        ticks = float(os.sysconf("SC_CLK_TCK"))
        page = int(os.sysconf("SC_PAGE_SIZE"))
        with open("/proc/stat", "rb") as f:
            btime = next(float(line.split()[1]) for line in f if line.startswith(b"btime"))
    except (OSError, ValueError, StopIteration):
        return None
    return ticks, page, btime


def read() -> dict[str, float]:
    """The three values now ({} where /proc cannot be read)."""
    c = _constants()
    if c is None:
        return {}
    ticks, page, btime = c
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        with open("/proc/self/statm", "rb") as f:
            rss_pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return {}
    # The command name (field 2) is in parentheses and may hold spaces: split after its ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    utime, stime, start = float(fields[11]), float(fields[12]), float(fields[19])  # fields 14, 15, 22
    return {
        "process_resident_memory_bytes": float(rss_pages * page),
        "process_cpu_seconds_total": (utime + stime) / ticks,
        "process_start_time_seconds": btime + start / ticks,
    }


def prometheus_lines() -> list[str]:
    out: list[str] = []
    for name, value in read().items():
        kind, help_ = HELP[name]
        out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value!r}"]
    return out
