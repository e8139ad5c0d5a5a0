"""systemd glue: sd_notify over a real unix datagram socket, the watchdog interval, and the shipped unit
(checked with systemd-analyze verify and security --offline)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from device.service import Notifier, watchdog_interval
from tests import tools

UNIT = Path(__file__).resolve().parents[1] / "device" / "faceedge.service"
MAX_EXPOSURE = 2.5  # systemd's scale: 0 = fully locked down ... 10 = unprotected; <= 3.9 is "OK"


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@pytest.fixture
def notify_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(2)
    yield str(path), sock
    sock.close()


def recv_all(sock: socket.socket) -> list[str]:
    msgs = []
    sock.setblocking(False)
    try:
        while True:
            msgs.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(2)
    return msgs


def test_ready_status_stopping_reloading(notify_socket):
    path, sock = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("classifying camera")
    assert sock.recv(4096) == b"READY=1\nSTATUS=classifying camera"
    assert n.status("stalled:\nno frames")
    assert sock.recv(4096) == b"STATUS=stalled: no frames"
    assert n.reloading()
    msg = sock.recv(4096).decode()
    assert msg.startswith("RELOADING=1\nMONOTONIC_USEC=") and int(msg.split("=")[-1]) > 0
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    n.close()


def test_abstract_namespace_socket():
    name = f"faceedge-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_watchdog_rate_limited_to_a_quarter_of_the_interval(notify_socket):
    path, sock = notify_socket
    clock = FakeClock()
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}, clock=clock)
    assert n.watchdog_s == 10.0 and n.watchdog_min_gap_s == 2.5
    sent = []
    for _ in range(300):  # 30 fps for 10 s
        sent.append(n.watchdog())
        clock.t += 1 / 30
    msgs = recv_all(sock)
    assert msgs == ["WATCHDOG=1"] * sum(sent)
    assert sum(sent) == 4  # at 0, ~2.5, ~5, ~7.5 s: the longest gap stays well under 10 s


def test_noop_without_notify_socket_and_errors_are_quiet(tmp_path, caplog):
    n = Notifier({})
    assert not n.enabled
    assert n.ready() is False and n.watchdog() is False and n.stopping() is False
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing")})  # socket went away: no raise, one log line
    assert gone.ready() is False and gone.watchdog() is False and gone.status("x") is False
    assert len([r for r in caplog.records if "sd_notify" in r.getMessage()]) == 1
    assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_watchdog_interval_env_rules():
    me = str(os.getpid())
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "5000000"}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": me}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"}) is None  # meant for another pid
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    n = Notifier({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"})
    assert n.watchdog_s is None


def test_notify_from_a_child_process(notify_socket):
    """The daemon's main process notifies the way systemd sees it: a separate process, env from systemd."""
    path, sock = notify_socket
    code = "from device.service import Notifier; n = Notifier(); n.ready('up'); n.watchdog()"
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000",
           "PYTHONPATH": str(UNIT.parents[1])}
    env.pop("WATCHDOG_PID", None)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert [sock.recv(4096), sock.recv(4096)] == [b"READY=1\nSTATUS=up", b"WATCHDOG=1"]


# ---------------------------------------------------------------- the unit file

def unit_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            k, _, v = line.partition("=")
            out.setdefault(k, []).append(v)
    return out


def test_unit_contents():
    s = unit_settings(UNIT.read_text())
    one = {k: v[-1] for k, v in s.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["WatchdogSec"] == "10" and one["Restart"] == "on-failure" and one["RestartSec"] == "3"
    assert one["TimeoutStopSec"] == "5" and one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["ExecStart"].startswith("%h/faceedge/current/venv/bin/python -m device run --config ")
    for k, v in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "read-only",
                 "PrivateTmp": "yes", "CapabilityBoundingSet": "", "UMask": "0077", "DevicePolicy": "closed",
                 "SystemCallArchitectures": "native", "LockPersonality": "yes"}.items():
        assert one[k] == v, k
    assert set(s["DeviceAllow"]) == {"char-video4linux rw", "char-media rw", "char-dma_heap rw"}
    assert "%h/faceedge" in one["ReadWritePaths"]


def render(tmp_path: Path, user: str | None = None) -> Path:
    """The shipped unit with ExecStart's interpreter swapped for one that exists here (verify checks it)."""
    text = UNIT.read_text().replace("%h/faceedge/current/venv/bin/python", os.path.realpath(sys.executable))
    if user:
        text = text.replace("[Service]\n", f"[Service]\nUser={user}\nSupplementaryGroups=video\n", 1)
    path = tmp_path / "faceedge.service"
    path.write_text(text)
    return path


def systemd_analyze() -> str:
    return tools.require("systemd-analyze")["systemd-analyze"]


def test_unit_verifies_cleanly(tmp_path):
    unit = render(tmp_path)
    p = subprocess.run([systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path)
    # verify exits 0 even for unknown keys or bad values; it warns on stderr. Nothing may be said.
    assert p.returncode == 0 and p.stderr.strip() == "" and p.stdout.strip() == "", p.stderr
    # The check can fail: a typo'd key is reported.
    bad = tmp_path / "bad" / "faceedge.service"
    bad.parent.mkdir()
    bad.write_text(unit.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    p = subprocess.run([systemd_analyze(), "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "Unknown key 'NoNewPrivilege'" in p.stderr


def exposure(unit: Path) -> float:
    p = subprocess.run([systemd_analyze(), "security", "--offline=yes", str(unit)], capture_output=True,
                       text=True, timeout=60, cwd=unit.parent)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", p.stdout)
    assert m, p.stdout + p.stderr
    return float(m.group(1))


def test_unit_security_exposure(tmp_path):
    as_shipped = exposure(render(tmp_path))  # evaluated without User= (as if root): the worst case
    system = tmp_path / "system"
    system.mkdir()
    dedicated = exposure(render(system, user="faceedge"))
    print(f"\nsystemd-analyze security: {as_shipped} as shipped, {dedicated} with User=faceedge")
    assert as_shipped <= MAX_EXPOSURE
    assert dedicated <= as_shipped
    # A unit without the hardening section scores far worse, so the figure above means something.
    bare = tmp_path / "bare"
    bare.mkdir()
    text = render(tmp_path).read_text().split("# ---- hardening")[0] + "\n[Install]\nWantedBy=default.target\n"
    (bare / "faceedge.service").write_text(text)
    assert exposure(bare / "faceedge.service") >= 9.0


MDWE_CHILD = r"""
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux >= 6.3)
    print("unsupported"); sys.exit(0)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("W+X still allowed"); sys.exit(1)
except OSError:
    pass
from device.daemon import run
stats = run(sys.argv[2], model_dir=sys.argv[1], source="synthetic", max_frames=20)
cb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)  # a libffi closure
print("results", stats["results"], "callback", cb(41))
"""


@pytest.mark.slow
def test_daemon_runs_without_writable_executable_memory(tiny_models, tmp_path):
    """Backs MemoryDenyWriteExecute=yes in the unit: with W+X mappings refused by the kernel (the
    prctl equivalent of systemd's seccomp filter), the daemon loads LiteRT + XNNPACK and classifies."""
    env = {**os.environ, "PYTHONPATH": str(UNIT.parents[1])}
    cfg = tmp_path / "device.yaml"
    cfg.write_text("outputs: {jsonl: {path: /dev/null}}\n")
    p = subprocess.run([sys.executable, "-c", MDWE_CHILD, str(tiny_models["int8"]), str(cfg)], capture_output=True,
                       text=True, timeout=120, env=env)
    if p.stdout.strip() == "unsupported":
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    assert p.returncode == 0, p.stdout + p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "results 20 callback 42"
