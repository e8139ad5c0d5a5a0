"""The daemon as a user starts it: `python -m device run` in its own process, and `--help`.

`daemon_footprint` runs the real CLI daemon on the bench's model with a synthetic source, the JSON
lines output on, the HTTP output on and the MQTT output configured (towards a loopback port nothing
listens on: the client is built, imported and retrying, as on a Pi whose broker is away), and reads
its peak RSS (VmHWM) and the time from exec to its first result. `help_seconds` times
`python -m device --help`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from device.bench.memory import memory_mb
from device.bench.pipeline import child_env
from device.errors import FaceedgeError


def help_seconds(runs: int = 5) -> dict[str, Any]:
    """Wall time of `python -m device --help`, median and range over `runs`."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "device", "--help"], env=child_env(), capture_output=True, timeout=60
        )
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise FaceedgeError(f"python -m device --help failed (exit {proc.returncode})")
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": runs}


def _unused_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def daemon_config(resolution: tuple[int, int], threads: int, jsonl: str = "-") -> dict[str, Any]:
    """The config the footprint is measured with: every output a deployment has."""
    w, h = resolution
    return {
        "source": {"type": "synthetic", "width": w, "height": h, "fps": 0, "pattern": "bars"},
        "model": {"num_threads": threads},
        "outputs": {
            "jsonl": {"path": jsonl},
            "http": {"host": "127.0.0.1", "port": 0},
            "mqtt": {"host": "127.0.0.1", "port": _unused_loopback_port()},
        },
    }


def daemon_footprint(
    model_dir: Path, threads: int, *, resolution: tuple[int, int] = (640, 480), seconds: float = 5.0
) -> dict[str, Any] | None:
    """Run `python -m device run` for `seconds` after its first result; its peak RSS (MB, VmHWM read
    just before SIGTERM), exec → first result (s) and results per second. None without /proc."""
    if not Path("/proc/self/status").exists():
        return None
    with tempfile.TemporaryDirectory(prefix="faceedge-footprint-") as tmp:
        cfg_path = Path(tmp) / "device.yaml"
        cfg = daemon_config(resolution, threads)
        cfg_path.write_text(json.dumps(cfg))  # JSON is YAML
        cmd = [sys.executable, "-m", "device", "run", "--config", str(cfg_path), "--model-dir", str(model_dir)]
        t_exec = time.monotonic()
        proc = subprocess.Popen(
            cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        first: list[float] = []
        lines = [0]
        stderr: list[bytes] = []

        def drain_stdout() -> None:  # the daemon must never block on a full pipe
            for _ in proc.stdout:
                if not first:
                    first.append(time.monotonic())
                lines[0] += 1

        readers = [
            threading.Thread(target=drain_stdout, daemon=True),
            threading.Thread(target=lambda: stderr.append(proc.stderr.read()), daemon=True),
        ]
        for t in readers:
            t.start()
        try:
            deadline = time.monotonic() + 60.0
            while not first and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            if not first:
                raise FaceedgeError(f"`device run` on {model_dir} gave no result ({_tail(proc, stderr, readers)})")
            n0, t0 = lines[0], time.monotonic()
            time.sleep(seconds)
            if proc.poll() is not None:
                raise FaceedgeError(f"`device run` on {model_dir} ended early ({_tail(proc, stderr, readers)})")
            memory = memory_mb(proc.pid)
            rate = (lines[0] - n0) / (time.monotonic() - t0)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        for t in readers:
            t.join(timeout=5)
    return {
        "threads": threads,
        "outputs": "jsonl (stdout), http (127.0.0.1), mqtt (configured, broker away)",
        "source": f"synthetic {resolution[0]}x{resolution[1]} unpaced",
        **{k: memory[k] for k in ("peak_rss_mb", "rss_anon_mb", "rss_file_mb")},
        "first_result_from_exec_s": first[0] - t_exec,
        "results_per_s": rate,
        "seconds": seconds,
        "exit_code": proc.returncode,
    }


def _tail(proc: subprocess.Popen, stderr: list[bytes], readers: list[threading.Thread]) -> str:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for t in readers:
        t.join(timeout=5)
    text = b"".join(stderr).decode(errors="replace").strip().splitlines()
    return f"exit {proc.returncode}: {text[-1] if text else 'no output'}"
