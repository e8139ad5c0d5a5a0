"""Shipping a bundle: per host, in parallel, probe over ssh ─► rsync into
<remote_dir>/releases/<name>/ ─► run device/deploy/remote.py there with the Pi's python3 (sent over
stdin) to verify, install, check, flip `current`, restart and gate on health; and rollback, status."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from device.deploy.bundle import read_bundle
from device.errors import FaceedgeError
from device.ssh import Host, Ssh, explain_ssh_failure

log = logging.getLogger(__name__)

REMOTE_SCRIPT = Path(__file__).with_name("remote.py")
SERVICE_MANAGERS = ("systemd-user", "systemd-system", "command")


@dataclass
class Options:
    ssh: Ssh
    remote_dir: str = "faceedge"
    remote_python: str = "python3"
    service: dict = field(default_factory=lambda: {"manager": "systemd-user"})
    health_timeout_s: float = 60.0
    check_timeout_s: float = 180.0
    install_deps: bool = True
    venv_pip: str = "seed"  # "seed": pip inside each release venv; "system": the device's python3-pip
    pip_args: list[str] = field(default_factory=list)
    keep: int = 3
    lock_wait_s: float = 60.0
    to: str | None = None  # rollback target


class HostFailed(Exception):
    pass


class Printer:
    """Line output prefixed by host, safe across threads."""

    def __init__(self, stream=None, prefix_hosts: bool = True) -> None:
        self.stream = stream or sys.stdout
        self.lock = threading.Lock()
        self.prefix_hosts = prefix_hosts

    def __call__(self, host: Host, msg: str) -> None:
        with self.lock:
            for line in msg.splitlines() or [""]:
                self.stream.write(f"[{host.spec}] {line}\n" if self.prefix_hosts else f"{line}\n")
            self.stream.flush()


PROBE = r"""
set -e
umask 077
cd
case "$1" in
  /*) case "$1" in "${HOME%/}"/?*) ;; *) echo "error: --remote-dir $1 is not inside the home $HOME" >&2; exit 3;; esac;;
esac
mkdir -p -- "$1/releases" "$1/data"
cd -- "$1"
echo "dir=$(pwd -L)"
echo "current=$(readlink current 2>/dev/null || true)"
if command -v "$2" >/dev/null 2>&1; then
  echo "python=$("$2" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
else
  echo "python="
fi
"""


def probe(host: Host, opts: Options) -> dict:
    """Resolve remote_dir (relative = under $HOME) and read `current`; proves ssh and host key work."""
    argv = opts.ssh.ssh_argv(host, ["sh", "-c", PROBE, "probe", opts.remote_dir, opts.remote_python])
    p = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=opts.ssh.connect_timeout + 60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if p.returncode != 0:
        if p.returncode == 255:
            raise HostFailed(explain_ssh_failure(host, opts.ssh, p.stderr))
        raise HostFailed(f"cannot prepare {opts.remote_dir} on {host.dest}: {p.stderr.strip()[-300:]}")
    info = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
    if not info.get("python"):
        raise HostFailed(
            f"{opts.remote_python} not found on {host.dest} (Raspberry Pi OS has python3; or set --remote-python)"
        )
    major, minor = (int(x) for x in info["python"].split("."))
    if (major, minor) < (3, 10):
        raise HostFailed(
            f"{opts.remote_python} on {host.dest} is {info['python']}; the daemon needs Python >= 3.10 "
            "(Raspberry Pi OS Bookworm has 3.11)"
        )
    info["current"] = os.path.basename(info.get("current", "").rstrip("/"))
    return info


def remote_script(host: Host, opts: Options, plan: dict, out: Callable[[str], None]) -> int:
    """Run remote.py on the host (sent over stdin) with `plan`; stream its lines.

    A script cut short (the laptop dies mid-send) never runs anything: python compiles the whole
    of stdin before running it, and the only statement with an effect is the last line's main().
    """
    argv = opts.ssh.ssh_argv(host, [opts.remote_python, "-", json.dumps(plan, separators=(",", ":"))])
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(REMOTE_SCRIPT.read_text())
    proc.stdin.close()
    lines = []
    for line in proc.stdout:
        line = line.rstrip("\n")
        lines.append(line)
        out(line)
    code = proc.wait()
    if code == 255:
        raise HostFailed(explain_ssh_failure(host, opts.ssh, "\n".join(lines)))
    return code


def base_plan(opts: Options, action: str, remote_dir: str) -> dict:
    return {
        "action": action,
        "remote_dir": remote_dir,
        "python": opts.remote_python,
        "install": {"deps": opts.install_deps, "pip_args": opts.pip_args, "venv_pip": opts.venv_pip},
        "service": opts.service,
        "health": {"timeout_s": opts.health_timeout_s},
        "check_timeout_s": opts.check_timeout_s,
        "keep": opts.keep,
        "lock_wait_s": opts.lock_wait_s,
    }


def ship(host: Host, opts: Options, bundle_dir: Path, release: str, action: str, out: Callable[[str], None]) -> str:
    info = probe(host, opts)
    remote_dir = info["dir"]
    cur = info["current"] or None
    out(f"{remote_dir} on {host.dest}: current {cur or '(none)'}; copying release {release}")
    t0 = time.monotonic()
    argv = opts.ssh.rsync_argv(host, bundle_dir, f"{remote_dir}/releases/{release}", f"../{cur}" if cur else None)
    p = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if p.returncode != 0:
        if "Host key verification failed" in p.stderr:
            raise HostFailed(explain_ssh_failure(host, opts.ssh, p.stderr))
        hint = " (install it on the device: sudo apt install rsync)" if "command not found" in p.stderr else ""
        raise HostFailed(f"rsync to {host.dest} failed (exit {p.returncode}){hint}: {p.stderr.strip()[-400:]}")
    out(f"copied in {time.monotonic() - t0:.1f} s")
    plan = base_plan(opts, action, remote_dir)
    plan["release"] = release
    code = remote_script(host, opts, plan, out)
    if code != 0:
        raise HostFailed(f"{action} of {release} failed on {host.dest} (see above); exit {code}")
    return release


def release_name(digest: str, when: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when)) + "-" + digest[:8]


def for_each_host(
    hosts: list[Host], fn: Callable[[Host, Callable[[str], None]], str], printer: Printer
) -> dict[str, str | None]:
    """Run fn on every host in parallel; {spec: result or None}; one failure never stops the others."""
    results: dict[str, str | None] = {}

    def one(h: Host) -> None:
        say = lambda msg: printer(h, msg)  # noqa: E731
        try:
            results[h.spec] = fn(h, say)
        except HostFailed as e:
            say(f"FAILED: {e}")
            results[h.spec] = None
        except (OSError, subprocess.SubprocessError, FaceedgeError) as e:
            say(f"FAILED: {e}")
            results[h.spec] = None
        except Exception as e:  # noqa: BLE001 - one host's surprise must not hide the others' results
            log.exception("unexpected failure on %s", h.spec)
            say(f"FAILED: {type(e).__name__}: {e}")
            results[h.spec] = None

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(hosts)) as ex:
        list(ex.map(one, hosts))
    return results


def _summary(results: dict[str, str | None], what: str, stream) -> int:
    bad = [h for h, r in results.items() if r is None]
    good = [h for h, r in results.items() if r is not None]
    if good:
        stream.write(f"{what}: ok on {', '.join(good)}\n")
    if bad:
        stream.write(f"{what}: FAILED on {', '.join(bad)}\n")
    stream.flush()
    return 1 if bad else 0


# ============================================================================ entry points


def deploy(
    hosts: list[Host], opts: Options, bundle_dir: Path, *, action: str = "deploy", printer: Printer | None = None
) -> int:
    """Ship a built bundle to every host in parallel; 0 when all succeeded."""
    printer = printer or Printer(prefix_hosts=len(hosts) > 1)
    meta = read_bundle(bundle_dir)
    if action == "deploy" and meta.get("model_only"):
        raise FaceedgeError(f"{bundle_dir}: a model-only bundle; use deploy-model")
    if action == "deploy-model" and not meta.get("model_only"):
        raise FaceedgeError(f"{bundle_dir}: a full bundle; deploy-model takes a model-only bundle")
    release = release_name(meta["digest"])
    results = for_each_host(hosts, lambda h, say: ship(h, opts, bundle_dir, release, action, say), printer)
    return _summary(results, f"{action} {release}", printer.stream)


def rollback(hosts: list[Host], opts: Options, *, printer: Printer | None = None) -> int:
    printer = printer or Printer(prefix_hosts=len(hosts) > 1)

    def one(h: Host, say: Callable[[str], None]) -> str:
        info = probe(h, opts)
        if not info["current"]:
            raise HostFailed(f"nothing deployed in {info['dir']} on {h.dest}")
        plan = base_plan(opts, "rollback", info["dir"])
        if opts.to:
            plan["to"] = opts.to
        code = remote_script(h, opts, plan, say)
        if code != 0:
            raise HostFailed(f"rollback failed on {h.dest}; exit {code}")
        return "ok"

    return _summary(for_each_host(hosts, one, printer), "rollback", printer.stream)


def status(hosts: list[Host], opts: Options) -> dict[str, dict]:
    """{host spec: {"current", "previous", "releases": [{"name", "state"}]}} (used by tests and `--status`)."""
    out = {}
    for h in hosts:
        info = probe(h, opts)
        plan = base_plan(opts, "status", info["dir"])
        lines: list[str] = []
        if remote_script(h, opts, plan, lines.append) != 0:
            raise HostFailed(f"status failed on {h.dest}")
        out[h.spec] = json.loads(lines[-1])
    return out
