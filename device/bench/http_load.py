"""`python -m device bench-http` (`make bench-http`): the daemon's HTTP output under concurrent clients.

The real daemon (`python -m device run`, in a child process) classifies a paced synthetic camera
(30 fps, like the Pi camera) with the given model and serves HTTP on 127.0.0.1. Loopback only: this
tool starts its own daemon and never connects anywhere else. Measured in one run:

1. quiet: the daemon's result rate over `--quiet-s` seconds, and its RSS;
2. load: `--clients` clients (threads, raw sockets, a new connection per request, as curl or a
   health checker does) fire together, `--rounds` times, `--pause-ms` apart; the requests go to
   /healthz, /metrics and /latest in turn. Per request: the latency from connect to the whole
   answer; an error is a refused, reset or timed-out connection or any status but 200. The
   daemon's result rate meanwhile;
3. RSS again, and quiet again for `--quiet-s`: the rate under load is compared with the mean of
   the quiet rates before and after it, so a drift of the machine's other load shows less.

Figures: latency p50/p95/p99/max (ms), errors, result rate under load ÷ quiet (the frame-rate
change), RSS change (MB). Like every bench, they hold for this machine and this moment: the load
average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from device.bench.memory import memory_mb
from device.errors import FaceedgeError
from device.flags import add_option

log = logging.getLogger(__name__)

PATHS = ("/healthz", "/metrics", "/latest")
HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET on a new connection to 127.0.0.1:port; (status, body). Raises OSError on a failure."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise OSError(f"not an HTTP answer: {head[:60]!r}") from None
    return status, body


def load(
    port: int,
    *,
    clients: int = 20,
    rounds: int = 50,
    pause_s: float = 0.02,
    timeout: float = 5.0,
    paths: tuple[str, ...] = PATHS,
) -> dict[str, Any]:
    """`clients` threads fire together `rounds` times; every request's latency (ms) and every error."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(k: int) -> None:
        mine, bad = [], []
        for r in range(rounds):
            try:
                barrier.wait(timeout=timeout + 5)
            except threading.BrokenBarrierError:
                bad.append("barrier broken (a client hung)")
                break
            path = paths[(k + r) % len(paths)]
            t0 = time.perf_counter()
            try:
                status, _ = get(port, path, timeout)
                if status != 200:
                    bad.append(f"{path}: HTTP {status}")
            except OSError as e:
                bad.append(f"{path}: {type(e).__name__}: {e}")
            mine.append((time.perf_counter() - t0) * 1000.0)
            if pause_s:
                time.sleep(pause_s)
        with lock:
            latencies.extend(mine)
            errors.extend(bad)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(rounds * (timeout + pause_s + 5))
    return {"latencies_ms": latencies, "errors": errors, "seconds": time.monotonic() - t0, "requests": clients * rounds}


class DaemonProcess:
    """`python -m device run` on a paced synthetic camera, HTTP on a free loopback port."""

    def __init__(
        self, model_dir: str | os.PathLike, *, fps: float = 30.0, width: int = 640, height: int = 480, workdir: Path
    ) -> None:
        self.port = _free_port()
        self.cfg = Path(workdir) / "device.yaml"
        self.cfg.write_text(
            f"source: {{type: synthetic, width: {width}, height: {height}, fps: {fps}}}\n"
            "crop: {mode: full}\n"
            f"outputs: {{jsonl: {{path: {os.devnull}}}, http: {{host: {HOST}, port: {self.port}}}}}\n"
            "log_level: WARNING\n"
        )
        self.log = Path(workdir) / "daemon.log"
        self._log_file = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "device", "run", "--config", str(self.cfg), "--model-dir", str(model_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")])
                ),
            },
        )

    def health(self) -> dict[str, Any]:
        status, body = get(self.port, "/healthz")
        return json.loads(body)

    def wait_ok(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise FaceedgeError(f"the daemon exited ({self.proc.returncode}): {self.log.read_text()[-800:]}")
            try:
                if self.health().get("status") == "ok":
                    return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise FaceedgeError(f"the daemon was not healthy within {timeout:.0f} s: {self.log.read_text()[-800:]}")
            time.sleep(0.1)

    def results(self) -> tuple[int, float]:
        """(results published so far, time.monotonic() of the reading)."""
        return int(self.health()["counters"]["results"]), time.monotonic()

    def rss_mb(self) -> float:
        rss = memory_mb(self.proc.pid).get("rss_mb")
        if rss is None:
            raise FaceedgeError("cannot read the daemon's RSS")
        return rss

    def stop(self) -> int:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    return self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            return self.proc.wait(timeout=10)
        finally:
            self._log_file.close()


def rate(a: tuple[int, float], b: tuple[int, float]) -> float:
    return (b[0] - a[0]) / max(b[1] - a[1], 1e-9)


def run(
    model_dir: str | os.PathLike,
    *,
    clients: int = 20,
    rounds: int = 150,
    pause_ms: float = 20.0,
    quiet_s: float = 3.0,
    fps: float = 30.0,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """Start the daemon, measure quiet then under load, stop it; the report (see the module doc)."""
    from device.bench.stats import summarize

    if clients < 1 or rounds < 1 or quiet_s <= 0:
        raise FaceedgeError("--clients, --rounds and --quiet-s must be > 0")
    with tempfile.TemporaryDirectory(prefix="faceedge-bench-http-") as tmp:
        daemon = DaemonProcess(model_dir, fps=fps, workdir=Path(tmp))
        try:
            daemon.wait_ok()
            time.sleep(1.0)  # past the first frames' warm-up
            rss0 = daemon.rss_mb()
            q0 = daemon.results()
            time.sleep(quiet_s)
            q1 = daemon.results()
            loaded = load(daemon.port, clients=clients, rounds=rounds, pause_s=pause_ms / 1000.0, timeout=timeout)
            q2 = daemon.results()
            rss1 = daemon.rss_mb()
            health = daemon.health()
            time.sleep(quiet_s)
            q3 = daemon.results()
        finally:
            code = daemon.stop()
    lat = summarize(loaded["latencies_ms"]) if loaded["latencies_ms"] else None
    before, after, load_fps = rate(q0, q1), rate(q2, q3), rate(q1, q2)
    quiet_fps = (before + after) / 2
    return {
        "clients": clients,
        "rounds": rounds,
        "requests": loaded["requests"],
        "pause_ms": pause_ms,
        "camera_fps": fps,
        "load_seconds": round(loaded["seconds"], 3),
        "latency_ms": lat,
        "errors": len(loaded["errors"]),
        "error_examples": sorted(set(loaded["errors"]))[:5],
        "quiet_fps": quiet_fps,
        "quiet_fps_before": before,
        "quiet_fps_after": after,
        "load_fps": load_fps,
        "fps_change": load_fps / quiet_fps - 1 if quiet_fps else None,
        "rss_mb_before": rss0,
        "rss_mb_after": rss1,
        "rss_change_mb": rss1 - rss0,
        "status_after": health.get("status"),
        "daemon_exit": code,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cores": os.cpu_count(),
    }


def summary_lines(rep: dict[str, Any]) -> list[str]:
    lat = rep["latency_ms"] or {}
    return [
        f"load: {rep['clients']} clients x {rep['rounds']} rounds = {rep['requests']} requests "
        f"(new connection each; /healthz, /metrics, /latest), {rep['pause_ms']:g} ms between rounds, "
        f"{rep['load_seconds']:.1f} s; camera {rep['camera_fps']:g} fps; load average "
        f"{rep['load_average'][0]} on {rep['cores']} cores",
        "latency ms: p50 {p50:.2f}  p95 {p95:.2f}  p99 {p99:.2f}  max {max:.2f}".format(**lat)
        if lat
        else "latency ms: (no answers)",
        f"errors: {rep['errors']}" + (f" ({'; '.join(rep['error_examples'])})" if rep["errors"] else ""),
        f"result rate: {rep['load_fps']:.2f} fps under load, {rep['quiet_fps']:.2f} fps quiet (before "
        f"{rep['quiet_fps_before']:.2f}, after {rep['quiet_fps_after']:.2f}): {100 * rep['fps_change']:+.1f} %",
        f"daemon RSS: {rep['rss_mb_before']:.1f} MB before, {rep['rss_mb_after']:.1f} MB after "
        f"({rep['rss_change_mb']:+.1f} MB)",
    ]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench-http",
        help="the daemon's HTTP endpoints under concurrent loopback clients (latency, errors, fps)",
        description=__doc__.split("\n\n")[0],
    )
    add_option(p, "--model-dir", default=None, help="model dir or run dir (its export/int8/); required")
    p.add_argument("--clients", type=int, default=20, help="concurrent clients (default: %(default)s)")
    p.add_argument(
        "--rounds", type=int, default=150, help="requests per client (all clients fire together) (default: %(default)s)"
    )
    add_option(p, "--pause-ms", type=float, default=20.0, help="pause between rounds (default: %(default)s)")
    add_option(
        p,
        "--quiet-s",
        type=float,
        default=3.0,
        help="seconds of result rate measured without load, before and after it (default: %(default)s)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    from device.manifest import resolve_model_dir

    if args.model_dir is None:
        raise FaceedgeError("--model-dir is required: the model dir or run dir the daemon serves")
    model_dir = resolve_model_dir(args.model_dir, "int8")
    rep = run(model_dir, clients=args.clients, rounds=args.rounds, pause_ms=args.pause_ms, quiet_s=args.quiet_s)
    for line in summary_lines(rep):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(rep, indent=2) + "\n")
    return 0 if rep["errors"] == 0 else 1
