"""Counters, per-stage latency histograms, rates and health state of the running daemon.

One `Telemetry` object is shared by the capture thread, the main loop and the outputs. Writers
(`inc`, `observe`, `observe_many`, `frame_captured`, `result_published`) take one short lock and
do O(log buckets) work, so they are cheap on the per-frame path. Readers (`snapshot`, `prometheus_text`) are what
`/healthz`, `/metrics` and the logs call; they never wait on the main loop, so the HTTP thread
still answers when the loop is stuck.

Latency is recorded in milliseconds (what the loop measures) and exposed to Prometheus in seconds
(Prometheus' base unit), as a cumulative histogram with fixed bucket edges plus a bounded window of
recent values for p50/p95/p99 in the JSON snapshot.
"""

from __future__ import annotations

import bisect
import math
import re
import threading
import time
from collections import deque
from typing import Any

from device import procmetrics
from device.types import Result

PREFIX = "faceedge"
STATUSES = ("starting", "ok", "stalled", "error")

# Bucket upper edges in ms. They span a Pi 5's ~2 ms int8 MobileNetV2 invoke up to a multi-second
# capture stall; fixed so that series from different devices and releases can be aggregated.
BUCKETS_MS: tuple[float, ...] = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
RECENT_WINDOW = 512  # values kept per stage for the percentiles
RATE_WINDOW_S = 5.0  # fps = events in the last RATE_WINDOW_S seconds

# Counters that always exist (at 0) so dashboards and alerts see the series from the start.
COUNTER_HELP: dict[str, str] = {
    "frames_captured": "Frames read from the source.",
    "frames_dropped": "Frames overwritten before the loop took them (only the newest frame is kept).",
    "stale_frames_discarded": "Frames discarded as stale (e.g. the first frames after a reconnect).",
    "reconnects": "Times the frame source was reopened.",
    "results": "Results published.",
    "events": "Changes of the smoothed label.",
    # Each error is counted once, in exactly one of errors, output_errors, source_errors and
    # source_open_failures: their sum is every error (docs/outputs.md).
    "errors": "Errors of the loop (frames that failed) and the HTTP server; not those counted below.",
    "output_errors": "Results an output failed to write or send.",
    "source_errors": "Failed reads from the frame source.",
    "source_open_failures": "Failed attempts to open the frame source.",
    "no_roi": "Frames without a region to classify (e.g. no face in face mode).",
    "reloads": "Successful SIGHUP reloads of config and model.",
    "reloads_refused": "SIGHUP reloads refused (the new model or config failed validation).",
    "mqtt_dropped": "MQTT messages dropped because the bounded queue was full.",
    "mqtt_reconnects": "Times the MQTT client connected again after losing the broker.",
}
GAUGE_HELP: dict[str, str] = {
    "mqtt_connected": "1 while connected to the MQTT broker.",
    "mqtt_queue_depth": "MQTT messages waiting for the broker.",
}
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


def _fmt(v: float) -> str:
    """A sample value as the exposition format wants it (integers without a fraction, NaN, +Inf)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _percentile(sorted_vals: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, math.ceil(q / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[k]


class _Rate:
    """Events per second over a sliding window of monotonic timestamps."""

    def __init__(self, window_s: float = RATE_WINDOW_S, maxlen: int = 1024):
        self.window_s = window_s
        self.times: deque[float] = deque(maxlen=maxlen)

    def add(self, t: float) -> None:
        self.times.append(t)

    def rate(self, now: float) -> float:
        cutoff = now - self.window_s
        while self.times and self.times[0] < cutoff:
            self.times.popleft()
        n = len(self.times)
        if n < 2:
            return 0.0
        # Span from the oldest kept event to now, so the rate decays towards 0 when events stop.
        return (n - 1) / max(now - self.times[0], 1e-9)


class _Histogram:
    __slots__ = ("counts", "sum", "count", "recent")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS_MS) + 1)  # last slot: above the largest edge (+Inf)
        self.sum = 0.0
        self.count = 0
        self.recent: deque[float] = deque(maxlen=RECENT_WINDOW)

    def observe(self, ms: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS_MS, ms)] += 1
        self.sum += ms
        self.count += 1
        self.recent.append(ms)


class Telemetry:
    """Thread-safe health and metrics of one daemon.

    `stall_after_s`: when set and the status is "ok", a snapshot reports "stalled" once no frame
    has arrived for that long, or once the loop (which calls `loop_progress()` after each frame it
    handled) has not finished a frame for that long while frames still arrive — a loop stuck in
    an output or an inference call. Both hold even though the loop that would set the status is
    itself stuck.
    """

    def __init__(self, *, stall_after_s: float | None = None, clock=time.monotonic):
        self._lock = threading.Lock()
        self._clock = clock
        self._t0 = clock()
        self._started_wall = time.time()
        self.stall_after_s = stall_after_s
        self._counters: dict[str, int] = dict.fromkeys(COUNTER_HELP, 0)
        self._gauges: dict[str, float] = {}
        self._hists: dict[str, _Histogram] = {}
        self._frame_rate = _Rate()
        self._result_rate = _Rate()
        self._last_frame_mono: float | None = None
        self._last_frame_ts: float | None = None
        self._last_result_mono: float | None = None
        self._last_loop_mono: float | None = None
        self._latest: Result | None = None
        self._status = "starting"
        self._reason = ""
        self._status_since = self._t0
        self._model_sha256 = ""
        self._manifest = None

    # ---- writers (per-frame path: keep them cheap) ----
    def inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            try:
                self._counters[name] += n
            except KeyError:
                if not _NAME_RE.match(name):
                    raise ValueError(f"telemetry counter name {name!r} must match {_NAME_RE.pattern}") from None
                self._counters[name] = n

    def set_gauge(self, name: str, value: float) -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"telemetry gauge name {name!r} must match {_NAME_RE.pattern}")
        with self._lock:
            self._gauges[name] = float(value)

    def observe(self, stage: str, ms: float) -> None:
        with self._lock:
            h = self._hists.get(stage)
            if h is None:
                h = self._hists[stage] = _Histogram()
            h.observe(float(ms))

    def observe_many(self, stages_ms: dict[str, float]) -> None:
        """`observe(stage, ms)` for every item, under one lock (the loop records ~8 stages per
        result: one acquisition instead of eight)."""
        with self._lock:
            hists = self._hists
            for stage, ms in stages_ms.items():
                h = hists.get(stage)
                if h is None:
                    h = hists[stage] = _Histogram()
                h.observe(float(ms))

    def frame_captured(self, ts: float | None = None) -> None:
        """A frame arrived from the source; `ts` is its wall-clock capture time (time.time())."""
        now = self._clock()
        with self._lock:
            self._counters["frames_captured"] += 1
            self._frame_rate.add(now)
            self._last_frame_mono = now
            self._last_frame_ts = ts if ts is not None else time.time()

    def result_published(self, result: Result) -> None:
        """The loop produced `result`: keep it as the latest (for /latest) and count it.

        Stage timings are recorded separately, with `observe(stage, ms)`.
        """
        now = self._clock()
        with self._lock:
            self._counters["results"] += 1
            if result.event:
                self._counters["events"] += 1
            self._result_rate.add(now)
            self._last_result_mono = now
            self._latest = result

    def loop_progress(self) -> None:
        """The main loop finished handling a frame (classified or not). One store, no lock:
        called once per frame."""
        self._last_loop_mono = self._clock()

    def set_status(self, status: str, reason: str = "") -> None:
        if status not in STATUSES:
            raise ValueError(f"telemetry status {status!r} is not one of {', '.join(STATUSES)}")
        with self._lock:
            if status != self._status:
                self._status_since = self._clock()
            self._status = status
            self._reason = reason

    def set_model(self, sha256: str, manifest=None) -> None:
        """The loaded model, by its sha256: what /healthz and /metrics publish (never its path:
        where files live on the device is nobody's business; the log has it). `manifest`: its
        labels and kind, for outputs that describe the model (Home Assistant discovery)."""
        with self._lock:
            self._model_sha256 = sha256
            self._manifest = manifest

    @property
    def manifest(self):
        with self._lock:
            return self._manifest

    # ---- readers ----
    @property
    def latest(self) -> Result | None:
        with self._lock:
            return self._latest

    def counter(self, name: str) -> int:
        with self._lock:
            return self._counters.get(name, 0)

    def gauge(self, name: str) -> float | None:
        with self._lock:
            return self._gauges.get(name)

    def _status_now(self, now: float) -> tuple[str, str]:
        status, reason = self._status, self._reason
        if status == "ok" and self.stall_after_s is not None:
            ref = self._last_frame_mono if self._last_frame_mono is not None else self._status_since
            if now - ref > self.stall_after_s:
                return "stalled", f"no frame for {now - ref:.1f} s (stall_after_s={self.stall_after_s:g})"
            loop = self._last_loop_mono
            if loop is not None and now - loop > self.stall_after_s:
                return "stalled", (
                    f"the loop has not finished a frame for {now - loop:.1f} s while frames arrive "
                    f"(stuck in an output or inference?; stall_after_s={self.stall_after_s:g})"
                )
        return status, reason

    def status(self) -> str:
        with self._lock:
            return self._status_now(self._clock())[0]

    def snapshot(self) -> dict[str, Any]:
        """Health and counters as one JSON-able dict (for /healthz and the logs)."""
        now = self._clock()
        with self._lock:
            status, reason = self._status_now(now)
            latency = {}
            for stage, h in self._hists.items():
                vals = sorted(h.recent)
                latency[stage] = {
                    "count": h.count,
                    "mean": round(h.sum / h.count, 3) if h.count else None,
                    "p50": round(_percentile(vals, 50), 3),
                    "p95": round(_percentile(vals, 95), 3),
                    "p99": round(_percentile(vals, 99), 3),
                }
            latest = self._latest
            return {
                "status": status,
                "reason": reason,
                "camera_fps": round(self._frame_rate.rate(now), 2),
                "results_fps": round(self._result_rate.rate(now), 2),
                "last_frame_age_s": None if self._last_frame_mono is None else round(now - self._last_frame_mono, 3),
                "last_frame_time": self._last_frame_ts,
                "last_result_age_s": None if self._last_result_mono is None else round(now - self._last_result_mono, 3),
                "last_label": None if latest is None else latest.smoothed_label,
                "model_sha256": self._model_sha256,
                "uptime_s": round(now - self._t0, 3),
                "started": self._started_wall,
                "counters": dict(self._counters),
                "gauges": dict(self._gauges),
                "latency_ms": latency,
            }

    def prometheus_text(self) -> str:
        """All metrics in the Prometheus text exposition format 0.0.4."""
        now = self._clock()
        out: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            out.append(f"# HELP {PREFIX}_{name} {help_}")
            out.append(f"# TYPE {PREFIX}_{name} {kind}")

        with self._lock:
            status, _ = self._status_now(now)
            for name in sorted(self._counters):
                family(f"{name}_total", "counter", COUNTER_HELP.get(name, f"Count of {name.replace('_', ' ')}."))
                out.append(f"{PREFIX}_{name}_total {self._counters[name]}")

            gauges = {
                "camera_fps": ("Frames per second from the source (last 5 s).", self._frame_rate.rate(now)),
                "results_fps": ("Results per second (last 5 s).", self._result_rate.rate(now)),
                "uptime_seconds": ("Seconds since the daemon started.", now - self._t0),
                "last_frame_age_seconds": (
                    "Seconds since the last frame arrived (NaN before the first).",
                    float("nan") if self._last_frame_mono is None else now - self._last_frame_mono,
                ),
                "last_result_age_seconds": (
                    "Seconds since the last result (NaN before the first).",
                    float("nan") if self._last_result_mono is None else now - self._last_result_mono,
                ),
            }
            if self._latest is not None:
                gauges["last_score"] = ("Score of the latest result.", self._latest.score)
                gauges["last_smoothed_score"] = ("Smoothed score of the latest result.", self._latest.smoothed_score)
            for name, value in sorted(self._gauges.items()):
                gauges.setdefault(name, (GAUGE_HELP.get(name, f"{name.replace('_', ' ').capitalize()}."), value))
            for name, (help_, value) in gauges.items():
                family(name, "gauge", help_)
                out.append(f"{PREFIX}_{name} {_fmt(value)}")

            family("status", "gauge", "1 for the current health status, 0 for the others.")
            for s in STATUSES:
                out.append(f'{PREFIX}_status{{status="{s}"}} {1 if s == status else 0}')
            family("model_info", "gauge", "The loaded model, by sha256 (value is always 1).")
            out.append(f'{PREFIX}_model_info{{sha256="{_escape(self._model_sha256)}"}} 1')

            family("stage_latency_seconds", "histogram", "Time spent per pipeline stage, per frame.")
            for stage in sorted(self._hists):
                h = self._hists[stage]
                lab = _escape(stage)
                cum = 0
                for edge, c in zip(BUCKETS_MS, h.counts):
                    cum += c
                    out.append(
                        f'{PREFIX}_stage_latency_seconds_bucket{{stage="{lab}",le="{_fmt(edge / 1000.0)}"}} {cum}'
                    )
                out.append(f'{PREFIX}_stage_latency_seconds_bucket{{stage="{lab}",le="+Inf"}} {h.count}')
                out.append(f'{PREFIX}_stage_latency_seconds_sum{{stage="{lab}"}} {_fmt(h.sum / 1000.0)}')
                out.append(f'{PREFIX}_stage_latency_seconds_count{{stage="{lab}"}} {h.count}')
        out += procmetrics.prometheus_lines()  # process_* (standard names, no prefix)
        return "\n".join(out) + "\n"
