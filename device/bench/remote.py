"""`python -m device bench-remote`: the same benchmark on Pis over ssh, in the deployed release
(``<remote-dir>/current``: its venv, model and device.yaml), results brought back and the plot
redrawn here with matplotlib when the Pi has none. ssh and rsync as deploy uses them (device/ssh.py).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from device.bench.plot import write_plot
from device.errors import FaceedgeError
from device.files import atomic_write_bytes
from device.ssh import Host, Ssh, check_remote_dir, explain_ssh_failure, parse_hosts

log = logging.getLogger(__name__)

REMOTE_BENCH_DIR = "bench"  # results on the device: <remote-dir>/bench/<timestamp>/
# Runs on the device (sh, via the deploy's ssh helpers): in the deployed release, the same tool.
# $1 remote dir, $2 results dir (relative to it), $3 stop-service command ("" = none), $4 start
# command, then the bench flags.
REMOTE_BENCH_SH = r"""
set -u
cd && cd -- "$1" || { echo "error: no directory $1 on this device (deploy first: make deploy)" >&2; exit 3; }
out=$2; stop=$3; start=$4; shift 4
if [ ! -x current/venv/bin/python ] || [ ! -d current/model ]; then
  echo "error: $(pwd -P)/current has no deployed release (venv/bin/python, model/): run make deploy first" >&2
  exit 3
fi
config=""
[ -f current/device.yaml ] && config="--config current/device.yaml"
if [ -n "$stop" ]; then
  echo "stopping the service for the benchmark: $stop"
  sh -c "$stop" || { echo "error: could not stop the service ($stop)" >&2; exit 3; }
  trap 'echo "starting the service again: $start"; sh -c "$start"' EXIT
fi
mkdir -p "$out"
echo "results-dir=$(cd "$out" && pwd -P)"
current/venv/bin/python -m device bench --model-dir current/model $config --out "$out" "$@"
"""


def run_remote(
    hosts: str,
    *,
    port: int = 22,
    ssh_key: str | os.PathLike | None = None,
    known_hosts: str | os.PathLike | None = None,
    connect_timeout: int = 10,
    remote_dir: str = "faceedge",
    out: str | os.PathLike | None = None,
    bench_args: list[str] | None = None,
    stop_service: str | None = None,
    echo: Any = print,
) -> dict[str, dict[str, Any]]:
    """Run `device bench` in the deployed release on each host (one after the other, so two Pis
    never share the network or this machine while measuring), fetch its results, redraw the plot
    here. `stop_service`: 'systemd-user' or 'systemd-system' stops faceedge.service for the
    benchmark (the running daemon would otherwise compete for the CPU and the camera) and starts
    it again after. Returns {host: report}; raises FaceedgeError naming the host on a failure.

    ssh/rsync as deploy uses them (device/ssh.py: key only, host keys checked)."""

    targets: list[Host] = parse_hosts(hosts)
    rdir = check_remote_dir(remote_dir)
    ssh = Ssh(
        port=port,
        key=Path(ssh_key).expanduser() if ssh_key else None,
        known_hosts=Path(known_hosts).expanduser() if known_hosts else None,
        connect_timeout=connect_timeout,
    )
    stop_cmd, start_cmd = _service_commands(stop_service)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    remote_out = f"{REMOTE_BENCH_DIR}/{stamp}"
    reports: dict[str, dict[str, Any]] = {}
    for host in targets:
        local = Path(out) if out else Path("runs") / "bench" / f"{_host_slug(host.host)}-{stamp}"
        if out and len(targets) > 1:
            local = local / _host_slug(host.host)
        argv = ssh.ssh_argv(
            host, ["sh", "-c", REMOTE_BENCH_SH, "bench", rdir, remote_out, stop_cmd, start_cmd, *(bench_args or [])]
        )
        echo(f"[{host.spec}] device bench in {rdir}/current (results: {rdir}/{remote_out})")
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        lines: list[str] = []
        abs_out = None  # rsync's remote side starts in the passwd home, not $HOME: fetch by absolute path
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if lines[-1].startswith("results-dir=") and abs_out is None:
                abs_out = lines[-1].split("=", 1)[1]
                continue
            echo(f"[{host.spec}] {lines[-1]}")
        code = proc.wait()
        if code == 255:
            raise FaceedgeError(explain_ssh_failure(host, ssh, "\n".join(lines)))
        if code != 0:
            why = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else "")
            raise FaceedgeError(f"{host.dest}: remote bench failed (exit {code}): {why.removeprefix('error: ')}")
        local.mkdir(parents=True, exist_ok=True)
        if not abs_out:
            raise FaceedgeError(f"{host.dest}: the remote bench did not say where its results are")
        src = f"{host.rsync_dest}:{abs_out}/"
        sync = ["rsync", "-a", "-e", ssh.rsync_shell(host), "--", src, f"{local}/"]
        p = subprocess.run(sync, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise FaceedgeError(
                f"{host.dest}: fetching {src} failed (exit {p.returncode}): "
                f"{(p.stderr.strip().splitlines() or [''])[-1]}"
            )
        try:
            report = json.loads((local / "bench.json").read_text())
        except (OSError, ValueError) as e:
            raise FaceedgeError(f"{local / 'bench.json'}: not fetched or not JSON ({e})") from None
        report["remote"] = {"host": host.spec, "dir": abs_out, "local": str(local)}
        if report.get("plot_backend") != "matplotlib":  # drawn with OpenCV on the Pi: redraw it here
            try:
                report["plot_backend"] = write_plot(report, local / "bench.png")
            except Exception as e:  # noqa: BLE001 - the fetched OpenCV plot stays
                log.warning("could not redraw %s: %s", local / "bench.png", e)
        report["outputs"] = {k: str(local / f"bench.{k}") for k in ("json", "md", "png")}
        atomic_write_bytes(local / "bench.json", (json.dumps(report, indent=2) + "\n").encode())
        reports[host.spec] = report
    return reports


def _service_commands(manager: str | None) -> tuple[str, str]:
    unit = "faceedge.service"
    if not manager:
        return "", ""
    if manager == "systemd-user":
        return f"systemctl --user stop {unit}", f"systemctl --user start {unit}"
    if manager == "systemd-system":
        return f"sudo -n systemctl stop {unit}", f"sudo -n systemctl start {unit}"
    raise FaceedgeError(f"--stop-service {manager!r}: choose systemd-user or systemd-system")


def _host_slug(host: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", host) or "host"
