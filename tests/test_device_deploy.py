"""`device deploy` / `rollback` / `deploy-model` end to end, against a real OpenSSH server.

The "Pi" is this machine: an `sshd` started by the fixture on 127.0.0.1 and a free port (generated
host key and client key, its own known_hosts), with the release tree under a temp HOME. Its
"system site-packages" (what `apt install python3-opencv python3-numpy ...` gives a real Pi) is
the project venv's site-packages, handed to the ssh session by sshd's `SetEnv PYTHONPATH`, so the
release venvs (`--system-site-packages`, wheel installed `--no-deps`) download nothing.

systemd is not PID 1 here, so the service manager is `command`: tests/helpers/deploy.py's SUPERVISOR, run on the "Pi"
over ssh, starts the REAL daemon from `<remote_dir>/current` with the ExecStart line of the unit
shipped in the release (same command line as systemd would run), as a background process with a
pidfile, and kills the old one. The health gate talks to the daemon's real HTTP /healthz.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ROOT
from tests.helpers.deploy import SUPERVISOR, make_run, supervisor_service_args
from tests.helpers.models import tiny_images
from tests.helpers.sshd import free_port, keygen, start_sshd

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

UNIT = ROOT / "device" / "faceedge.service"
PY = sys.executable


# ============================================================================ fixtures


class Pi:
    """The sshd + the ssh options a client needs."""

    def __init__(self, tmp: Path, port: int, key: Path, known_hosts: Path, home: Path, proc):
        self.tmp, self.port, self.key, self.known_hosts, self.home, self.proc = tmp, port, key, known_hosts, home, proc
        self.user = getpass.getuser()
        self.python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))

    @property
    def host(self) -> str:
        return f"{self.user}@127.0.0.1"

    def ssh_args(self, known_hosts: Path | None = None) -> list[str]:
        return [
            "--hosts",
            self.host,
            "--port",
            str(self.port),
            "--ssh-key",
            str(self.key),
            "--known-hosts",
            str(known_hosts or self.known_hosts),
            "--remote-python",
            self.python,
        ]


@pytest.fixture(scope="module")
def pi(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pi")
    # The Pi's "system site-packages" (numpy, OpenCV, LiteRT from apt there) are this venv's.
    server = start_sshd(tmp, env={"PYTHONPATH": sysconfig.get_paths()["purelib"]})
    keygen(tmp / "other_host_key", "other_host_key")
    port, kh, home, proc = server.port, server.known_hosts, server.home, server.proc
    (tmp / "supervisor.py").write_text(SUPERVISOR)
    yield Pi(tmp, port, tmp / "client_key", kh, home, proc)
    for state in tmp.glob("state-*"):
        subprocess.run([PY, str(tmp / "supervisor.py"), "stop", str(home / "x"), str(state)], check=False)
    proc.terminate()
    proc.wait(timeout=10)


def device_yaml(path: Path, http_port: int, source: str = "synthetic") -> Path:
    src = {
        "synthetic": "source: {type: synthetic, width: 64, height: 48, fps: 10}",
        # a camera that is not plugged in: the daemon starts, /healthz never says ok
        "absent_camera": "source: {type: opencv, device: 9}",
    }[source]
    path.write_text(
        textwrap.dedent(f"""\
        {src}
        capture: {{stall_s: 2.0, reconnect_initial_s: 0.2, reconnect_max_s: 1.0}}
        crop: {{mode: full}}
        model: {{num_threads: 1}}
        outputs:
          http: {{host: 127.0.0.1, port: {http_port}}}
        log_level: INFO
        """)
    )
    return path


class Target:
    """One remote_dir on the Pi with its supervisor state and daemon port."""

    def __init__(self, pi: Pi, name: str):
        self.pi = pi
        self.name = name
        self.remote_dir = pi.home / name
        self.state = pi.tmp / f"state-{name}"
        self.http_port = free_port()

    def service_args(self) -> list[str]:
        supervisor = [self.pi.python, str(self.pi.tmp / "supervisor.py")]
        return ["--remote-dir", self.name, *supervisor_service_args(supervisor, self.remote_dir, self.state)]

    def current(self) -> str | None:
        try:
            return os.path.basename(os.readlink(self.remote_dir / "current"))
        except FileNotFoundError:
            return None

    def releases(self) -> list[str]:
        d = self.remote_dir / "releases"
        return sorted(n for n in os.listdir(d) if not n.startswith(".")) if d.is_dir() else []

    def healthz(self) -> dict:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=3) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read())

    def daemon_pid(self) -> int | None:
        try:
            return int((self.state / "daemon.pid").read_text())
        except (OSError, ValueError):
            return None

    def served(self) -> str | None:
        """The release whose model the running daemon has loaded: LiteRT maps the model file, and
        /proc/<pid>/maps shows the resolved path (releases/<name>/..., not `current`)."""
        pid = self.daemon_pid()
        try:
            maps = Path(f"/proc/{pid}/maps").read_text() if pid else ""
        except OSError:  # not running
            return None
        names = set(re.findall(r"/releases/([^/\s]+)/model/model\.tflite", maps))
        return names.pop() if len(names) == 1 else None

    def wait_served(self, name: str, timeout: float = 30.0) -> dict:
        """Wait until the daemon serves release `name`, healthy and with its model; returns /healthz."""
        want = json.loads((self.remote_dir / "releases" / name / "model" / "manifest.json").read_text())["sha256"]
        deadline = time.monotonic() + timeout
        while True:
            served, h = self.served(), None
            try:
                h = self.healthz()
            except OSError:
                pass
            if served == name and h and h["status"] == "ok" and h["model_sha256"] == want:
                return h
            assert time.monotonic() < deadline, f"daemon serves {served}, health {h}; wanted {name} ({want[:12]})"
            time.sleep(0.2)


def deploy_cmd(pi: Pi, t: Target, *args: str, action: str = "deploy", known_hosts: Path | None = None) -> list[str]:
    extra = ["--health-timeout", "20"] if action != "rollback" else ["--health-timeout", "20"]
    return [PY, "-m", "device", action, *pi.ssh_args(known_hosts), *t.service_args(), *extra, *args]


def run_cli(argv: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def verify_release(t: Target, name: str) -> dict:
    """The release is complete: .ready and every BUNDLE.json file there with its sha256."""
    rel = t.remote_dir / "releases" / name
    assert (rel / ".ready").is_file(), f"{name} is not ready"
    bundle = json.loads((rel / "BUNDLE.json").read_text())
    for relpath, meta in bundle["files"].items():
        assert hashlib.sha256((rel / relpath).read_bytes()).hexdigest() == meta["sha256"], relpath
    assert (rel / "venv" / "bin" / "python").exists()
    return bundle


def logits_model(tiny_keras, out: Path) -> Path:
    """The tiny model with its sigmoid dropped (a broken export: outputs are logits, not
    probabilities) under a manifest that still says sigmoid: `device check` must refuse it."""
    import keras

    from tests.helpers.models import convert_tiny

    model = keras.models.load_model(tiny_keras["keras"])
    model.layers[-1].activation = keras.activations.linear
    xs, _ = tiny_images(64, 32, seed=0)
    return convert_tiny(model, xs.astype(np.float32), out, "float32")


@pytest.fixture(scope="module")
def kit(tiny_models, tiny_keras, pi, tmp_path_factory):
    """One target on the Pi, its configs, runs with different models, and prebuilt bundles."""
    from device.deploy.bundle import build_bundle
    from device.deploy.wheel import build_device_wheel

    tmp = tmp_path_factory.mktemp("kit")
    t = Target(pi, "faceedge")
    good = device_yaml(tmp / "device.yaml", t.http_port)
    runs = {
        "a": make_run(tmp / "run-a", tiny_models["int8"]),
        "b": make_run(tmp / "run-b", tiny_models["float32"], seed=1),
        "bad": make_run(tmp / "run-bad", logits_model(tiny_keras, tmp / "logits"), seed=2),
    }
    wheel = build_device_wheel(tmp / "wheel")
    b = {}
    for key, run, variant, cfg, model_only in [
        ("a", runs["a"], "int8", good, False),
        ("b", runs["b"], "float32", good, False),
        ("bad", runs["bad"], "float32", good, False),
        ("unhealthy", runs["a"], "int8", device_yaml(tmp / "absent.yaml", t.http_port, "absent_camera"), False),
        ("model_b", runs["b"], "float32", good, True),
        ("model_bad", runs["bad"], "float32", good, True),
    ]:
        build_bundle(
            tmp / f"bundle-{key}", run=run, variant=variant, config=cfg, wheel=wheel, model_only=model_only, unit=UNIT
        )
        b[key] = tmp / f"bundle-{key}"
    sha = {
        k: json.loads((r / "export" / v / "manifest.json").read_text())["sha256"]
        for k, r, v in [("a", runs["a"], "int8"), ("b", runs["b"], "float32"), ("bad", runs["bad"], "float32")]
    }
    return {"target": t, "config": good, "runs": runs, "bundles": b, "sha": sha, "tmp": tmp, "wheel": wheel}


# ============================================================================ the cases (in order: one story)

FAST = ["--venv-without-pip", "--no-deps"]  # after the first deploy: pip from the "system", deps too


def test_first_deploy(pi, kit):
    t: Target = kit["target"]
    t0 = time.monotonic()
    # through the Makefile, as a user types it (ARGS: the test's supervisor instead of systemd)
    args = [*t.service_args(), "--remote-python", pi.python, "--health-timeout", "20", "--no-deps"]
    p = run_cli(
        [
            "make",
            "--no-print-directory",
            "deploy",
            f"PI={pi.host}",
            f"PORT={pi.port}",
            f"SSH_KEY={pi.key}",
            f"KNOWN_HOSTS={pi.known_hosts}",
            f"REMOTE_DIR={t.name}",
            f"RUN={kit['runs']['a']}",
            f"DEVICE_CONFIG={kit['config']}",
            "ARGS=" + shlex.join(args),
        ]
    )
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    cur = t.current()
    assert cur is not None and cur in t.releases()
    bundle = verify_release(t, cur)
    # the bundle: wheel of the device package only, model + manifest, config, unit, self-test
    names = set(bundle["files"])
    assert {"model/model.tflite", "model/manifest.json", "device.yaml", "faceedge.service"} <= names
    assert {"model/selftest.png", "model/selftest.json"} <= names  # the model dir as convert wrote it
    assert bundle["selftest"] is None and bundle["model"]["selftest"]["expect"] in ("open", "closed")
    selftest = json.loads((t.remote_dir / "current" / "model" / "selftest.json").read_text())
    assert selftest["split"] == "unseen_persons" and selftest["score"] == bundle["model"]["selftest"]["score"]
    from device.deploy.wheel import wheel_files

    wheel = t.remote_dir / "current" / bundle["wheel"]
    assert not [n for n in wheel_files(wheel) if n.startswith(("train/", "convert/"))]
    assert bundle["model"]["sha256"] == kit["sha"]["a"]
    assert "device check passed" in p.stdout
    # the release (model, config, self-test image) and the data folder are the deploying user's alone:
    # every folder on the way is 700, every bundle file 600 (pip's venv files may be 755 inside)
    rel = t.remote_dir / "releases" / cur
    for f in [
        t.remote_dir,
        t.remote_dir / "data",
        t.remote_dir / "releases",
        rel,
        *(rel / p for p in bundle["files"]),
        *((rel / p).parent for p in bundle["files"]),
    ]:
        assert f.stat().st_mode & 0o077 == 0, f"{f} is mode {f.stat().st_mode & 0o777:o}"
    # the daemon runs from the release, with the unit's command line, and is healthy
    h = t.healthz()
    assert h["status"] == "ok" and h["model_sha256"] == kit["sha"]["a"]
    pid = t.daemon_pid()
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert str(t.remote_dir / "current" / "venv" / "bin" / "python").encode() == cmdline[0]
    assert str(t.remote_dir / "current" / "model").encode() in cmdline
    # the device package the daemon imported is the release's wheel, not this checkout
    out = subprocess.run(
        [str(t.remote_dir / "current" / "venv" / "bin" / "python"), "-c", "import device, sys; print(device.__file__)"],
        capture_output=True,
        text=True,
        cwd="/",
        env={**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]},
    )
    assert os.path.realpath(out.stdout.strip()).startswith(str(t.remote_dir / "releases" / cur / "venv")), out
    print(f"first deploy: {took:.1f} s")


def test_second_deploy_then_rollback(pi, kit):
    t: Target = kit["target"]
    first = t.current()
    assert first is not None, "needs test_first_deploy"
    pid1 = t.daemon_pid()
    p = run_cli(deploy_cmd(pi, t, "--bundle", str(kit["bundles"]["b"]), *FAST))
    assert p.returncode == 0, p.stdout + p.stderr
    second = t.current()
    assert second != first and second > first
    verify_release(t, second)
    h = t.healthz()
    assert h["status"] == "ok" and h["model_sha256"] == kit["sha"]["b"]
    assert t.daemon_pid() != pid1  # restarted
    # unchanged files were hard-linked from the previous release by rsync --link-dest
    a, b = (t.remote_dir / "releases" / n / "faceedge.service" for n in (first, second))
    assert os.stat(a).st_ino == os.stat(b).st_ino
    # and the new venv's files identical to the previous venv's share their inodes (disk per release)
    site = "lib/python{}.{}/site-packages/device/daemon.py".format(*sys.version_info[:2])
    a, b = (t.remote_dir / "releases" / n / "venv" / site for n in (first, second))
    assert os.stat(a).st_ino == os.stat(b).st_ino and "hard-linked" in p.stdout

    # `device status` / `make status`: the same over ssh, read-only, as a table and as JSON
    p = run_cli([PY, "-m", "device", "status", *pi.ssh_args(), "--remote-dir", t.name])
    assert p.returncode == 0, p.stdout + p.stderr
    head, row = p.stdout.splitlines()
    assert head.split()[:3] == ["host", "current", "model"]
    assert row.split()[:4] == [pi.host, second, kit["sha"]["b"][:12], "ok"]
    assert row.split()[-2:] == [first, kit["sha"]["a"][:12]]
    p = run_cli(
        [
            "make",
            "--no-print-directory",
            "status",
            f"PI={pi.host}",
            f"PORT={pi.port}",
            f"SSH_KEY={pi.key}",
            f"KNOWN_HOSTS={pi.known_hosts}",
            f"REMOTE_DIR={t.name}",
            "ARGS=" + shlex.join(["--remote-python", pi.python, "--json"]),
        ]
    )
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads(p.stdout[p.stdout.index("{") :])[pi.host]
    assert (report["current"], report["previous"]) == (second, first)
    assert (report["model_sha256"], report["previous_model_sha256"]) == (kit["sha"]["b"], kit["sha"]["a"])
    health = report["health"]
    assert health["status"] == "ok" and health["model_sha256"] == kit["sha"]["b"] and health["uptime_s"] > 0
    assert report["interrupted"] is None and {"name": second, "state": "ready"} in report["releases"]
    # a host that cannot be asked is a row of its own, and exit status 1
    p = run_cli([PY, "-m", "device", "status", *pi.ssh_args(), "--remote-dir", t.name, "--hosts", "nobody@127.0.0.1"])
    assert p.returncode == 1 and "nobody@127.0.0.1  error: " in p.stdout, p.stdout + p.stderr

    p = run_cli([PY, "-m", "device", "rollback", *pi.ssh_args(), *t.service_args(), "--health-timeout", "20"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert t.current() == first
    h = t.healthz()
    assert h["status"] == "ok" and h["model_sha256"] == kit["sha"]["a"]
    assert second in t.releases()  # kept: a later deploy prunes it

    # nothing older than the first release: a second rollback refuses, current stays
    p = run_cli([PY, "-m", "device", "rollback", *pi.ssh_args(), *t.service_args()])
    assert p.returncode == 1 and "no ready release older than" in p.stdout
    assert t.current() == first


def test_deploy_model_reloads_with_sighup(pi, kit):
    t: Target = kit["target"]
    before = t.current()
    pid = t.daemon_pid()
    p = run_cli(deploy_cmd(pi, t, "--bundle", str(kit["bundles"]["model_b"]), action="deploy-model"))
    assert p.returncode == 0, p.stdout + p.stderr
    now = t.current()
    assert now != before
    bundle = verify_release(t, now)
    assert bundle["code_from"] == before and bundle["model"]["sha256"] == kit["sha"]["b"]
    # same daemon process (SIGHUP reload, no restart), now serving the new model
    assert t.daemon_pid() == pid
    h = t.healthz()
    assert h["status"] == "ok" and h["model_sha256"] == kit["sha"]["b"]
    # code and venv are hard links to the previous release's files, not copies
    rel_a, rel_b = (t.remote_dir / "releases" / n for n in (before, now))
    assert os.stat(rel_a / bundle["wheel"]).st_ino == os.stat(rel_b / bundle["wheel"]).st_ino
    assert "SIGHUP" in p.stdout


def test_model_failing_check_never_becomes_current(pi, kit):
    t: Target = kit["target"]
    before, pid = t.current(), t.daemon_pid()
    sha_before = t.healthz()["model_sha256"]
    for action, key in (("deploy", "bad"), ("deploy-model", "model_bad")):
        n_before = set(t.releases())
        args = ["--bundle", str(kit["bundles"][key])] + (FAST if action == "deploy" else [])
        p = run_cli(deploy_cmd(pi, t, *args, action=action))
        assert p.returncode == 1, p.stdout + p.stderr
        assert "`device check` failed in the new release" in p.stdout
        assert "not a probability" in p.stdout  # check's own reason, passed through
        assert t.current() == before
        (new,) = set(t.releases()) - n_before
        rel = t.remote_dir / "releases" / new
        assert (rel / ".failed").is_file() and not (rel / ".ready").exists()
        # the running daemon was never touched
        assert t.daemon_pid() == pid and t.healthz()["model_sha256"] == sha_before


def test_unhealthy_daemon_is_rolled_back(pi, kit):
    t: Target = kit["target"]
    before = t.current()
    sha_before = t.healthz()["model_sha256"]
    n_before = set(t.releases())
    t0 = time.monotonic()
    p = run_cli(deploy_cmd(pi, t, "--bundle", str(kit["bundles"]["unhealthy"]), *FAST, "--health-timeout", "6"))
    took = time.monotonic() - t0
    assert p.returncode == 1, p.stdout + p.stderr
    out = p.stdout
    assert "health gate failed" in out and ("'starting'" in out or "'stalled'" in out), out
    assert f"rolled back to {before} (healthy)" in out
    assert t.current() == before
    (new,) = set(t.releases()) - n_before
    assert "health gate failed" in (t.remote_dir / "releases" / new / ".failed").read_text()
    h = t.healthz()
    assert h["status"] == "ok" and h["model_sha256"] == sha_before
    # a rollback never lands on the refused release
    assert new not in json.dumps(_status(pi, t)["previous"])
    print(f"unhealthy deploy + roll back: {took:.1f} s")


def test_deploy_killed_in_its_health_gate_is_never_ready_nor_a_rollback_target(pi, kit):
    """A power cut while the health gate waits: the new release is `current` and running, but it never
    passed the gate, so it is not ready and never a rollback target; the next rollback (or deploy)
    finishes the interrupted transaction: the new release is marked failed and the old one serves again."""
    t: Target = kit["target"]
    old = t.current()
    t.wait_served(old)
    proc = subprocess.Popen(
        deploy_cmd(pi, t, "--bundle", str(kit["bundles"]["unhealthy"]), *FAST, "--health-timeout", "120"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while t.current() == old:  # the device side flips, restarts, then waits in the gate (absent camera)
        assert proc.poll() is None and time.monotonic() < deadline, "the deploy never flipped"
        time.sleep(0.05)
    new = t.current()
    while t.served() != new:  # the daemon was restarted on the new release
        assert time.monotonic() < deadline, "the new release never started"
        time.sleep(0.05)
    remote = _remote_deploys(t)
    assert remote, "the device side is not in its health gate"
    os.killpg(proc.pid, signal.SIGKILL)
    for r in remote:
        _kill_tree(r)
    proc.wait()
    rel = t.remote_dir / "releases" / new
    assert not (rel / ".ready").exists(), "a release that never passed its health gate is marked ready"
    st = _status(pi, t)
    assert st["current"] == new and st["previous"] == old and st["interrupted"]["release"] == new
    assert t.served() == new  # what runs now is the unproven release...
    p = run_cli([PY, "-m", "device", "rollback", *pi.ssh_args(), *t.service_args(), "--health-timeout", "20"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "interrupted before its health gate passed" in p.stdout
    assert t.current() == old and (rel / ".failed").is_file() and not (rel / ".ready").exists()
    t.wait_served(old)  # ...until the next deploy or rollback put the last healthy one back
    assert _status(pi, t)["interrupted"] is None


def test_remote_dir_outside_the_home_is_refused_on_the_device(pi, kit):
    outside = pi.tmp / "not-in-home" / "faceedge"
    p = run_cli(
        [
            PY,
            "-m",
            "device",
            "rollback",
            *pi.ssh_args(),
            "--service-manager",
            "command",
            "--restart-cmd",
            "true",
            "--remote-dir",
            str(outside),
        ]
    )
    assert p.returncode == 1, p.stdout + p.stderr
    assert "is not inside the home" in p.stdout
    assert not (pi.tmp / "not-in-home").exists()


def test_first_deploy_that_never_turns_healthy_leaves_nothing_running(pi, kit):
    from device.deploy.bundle import build_bundle

    t = Target(pi, "faceedge-fresh")
    bundle = kit["tmp"] / "bundle-fresh-unhealthy"
    build_bundle(
        bundle,
        run=kit["runs"]["a"],
        config=device_yaml(kit["tmp"] / "fresh.yaml", t.http_port, "absent_camera"),
        wheel=kit["wheel"],
        unit=UNIT,
    )
    p = run_cli(deploy_cmd(pi, t, "--bundle", str(bundle), *FAST, "--health-timeout", "4"))
    assert p.returncode == 1, p.stdout + p.stderr
    assert "no previous release: service stopped, `current` removed" in p.stdout
    assert t.current() is None and t.daemon_pid() is None
    (name,) = t.releases()
    assert (t.remote_dir / "releases" / name / ".failed").is_file()


def _status(pi: Pi, t: Target) -> dict:
    from device.deploy.ship import Options, status
    from device.ssh import Host, Ssh

    opts = Options(
        ssh=Ssh(port=pi.port, key=pi.key, known_hosts=pi.known_hosts), remote_dir=t.name, remote_python=pi.python
    )
    return status([Host.parse(pi.host)], opts)[pi.host]


def test_wrong_or_unknown_host_key_is_refused(pi, kit):
    t: Target = kit["target"]
    before, n_before = t.current(), t.releases()
    wrong = pi.tmp / "known_hosts_wrong"
    wrong.write_text(f"[127.0.0.1]:{pi.port} {(pi.tmp / 'other_host_key.pub').read_text()}")
    unknown = pi.tmp / "known_hosts_empty"
    unknown.write_text("")
    for kh in (wrong, unknown):
        p = run_cli(deploy_cmd(pi, t, "--bundle", str(kit["bundles"]["b"]), *FAST, known_hosts=kh))
        assert p.returncode == 1, p.stdout + p.stderr
        assert "host key verification failed" in p.stdout and "Nothing was copied" in p.stdout
        assert t.current() == before and t.releases() == n_before


def test_parallel_hosts_one_unreachable(pi, kit):
    t: Target = kit["target"]
    closed = free_port()
    hosts = f"{pi.host}:{pi.port},{pi.user}@127.0.0.1:{closed}"
    argv = deploy_cmd(pi, t, "--bundle", str(kit["bundles"]["b"]), *FAST)
    argv[argv.index("--hosts") + 1] = hosts
    p = run_cli(argv)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"[{pi.user}@127.0.0.1:{closed}] FAILED: cannot reach 127.0.0.1:{closed}" in p.stdout
    assert f"ok on {pi.host}:{pi.port}" in p.stdout and f"FAILED on {pi.user}@127.0.0.1:{closed}" in p.stdout
    assert t.healthz()["model_sha256"] == kit["sha"]["b"]


def _remote_deploys(t: Target) -> list:
    """device/deploy/remote.py processes working on this target (`python3 - '{"action": ...}'`)."""
    import psutil

    out = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if len(cmd) >= 3 and cmd[1] == "-" and '"action"' in cmd[2] and str(t.remote_dir) in cmd[2]:
            out.append(proc)
    return out


def _kill_tree(proc) -> None:
    import psutil

    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def _timed_deploy(t: Target, argv: list[str]) -> tuple[float, float]:
    """Run one deploy to its end; (whole duration, duration of its device side)."""
    t0, t_dev = time.monotonic(), None
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while proc.poll() is None:
        if t_dev is None and _remote_deploys(t):
            t_dev = time.monotonic()
        time.sleep(0.02)
    out = proc.stdout.read()
    assert proc.returncode == 0 and t_dev is not None, out
    end = time.monotonic()
    return end - t0, end - t_dev


def test_killed_deploys_leave_old_or_new_current_never_a_mix(pi, kit):
    """SIGKILL at seeded random points. Either the laptop alone (at a point of the whole deploy: the
    device side, once started, finishes the transaction on its own), or the laptop and the device-side
    process tree together (a power cut: at a point of the device side's run)."""
    t: Target = kit["target"]
    log = t.remote_dir / "deploy.log"
    rng = random.Random(20261128)
    bundles = [kit["bundles"]["a"], kit["bundles"]["b"]]
    # a clean deploy first: its timeline spreads the kill points
    full, device_side = _timed_deploy(t, deploy_cmd(pi, t, "--bundle", str(bundles[0]), *FAST))
    plan = [("laptop", k, 4) for k in range(4)] + [("laptop+device", k, 6) for k in range(6)]
    rng.shuffle(plan)
    rows = []
    for i, (who, k, n) in enumerate(plan):
        old = t.current()
        log_len = len(log.read_text().splitlines())
        started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        proc = subprocess.Popen(
            deploy_cmd(pi, t, "--bundle", str(bundles[(i + 1) % 2]), *FAST),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        t0 = time.monotonic()
        remote = []
        if who == "laptop":
            delay = full * (k + rng.random()) / n  # a random point in each k-th slice of the whole deploy
            time.sleep(delay)
        else:
            while not remote and time.monotonic() - t0 < 60:  # the device side has started
                remote = _remote_deploys(t)
                time.sleep(0.01)
            assert remote, "the device side never started"
            time.sleep(device_side * (k + rng.random()) / n)
            delay = time.monotonic() - t0
        os.killpg(proc.pid, signal.SIGKILL)
        for r in remote:
            _kill_tree(r)
        proc.wait()
        at_kill = log.read_text().splitlines()[log_len:]
        # A laptop-only kill: the device side runs on to its end. sshd may still be starting it
        # when the laptop dies (the exec request and the script were already sent): wait until
        # none has been seen for a whole second.
        deadline, quiet_since = time.monotonic() + 120, time.monotonic()
        while time.monotonic() - quiet_since < 1.0:
            if _remote_deploys(t):
                quiet_since = time.monotonic()
            assert time.monotonic() < deadline, "device-side deploy never finished"
            time.sleep(0.1)
        now = t.current()
        new = [n for n in t.releases() if n[:16] >= started]
        assert now == old or now in new, f"kill {i}: current {now} is neither {old} nor one of {new}"
        step = at_kill[-1].split(" ", 1)[1][:44] if at_kill else "(device side not started)"
        interrupted = _status(pi, t)["interrupted"]
        if interrupted is not None:
            # killed between the flip and the end of the health gate: `current` may be the unproven
            # release, which is not ready and not a rollback target; the next rollback undoes it
            assert interrupted["previous"] == old and now in (old, interrupted["release"]), (i, interrupted, now)
            assert _status(pi, t)["previous"] != interrupted["release"]  # never the rollback target
            p = run_cli([PY, "-m", "device", "rollback", *pi.ssh_args(), *t.service_args(), "--health-timeout", "20"])
            assert p.returncode == 0, p.stdout + p.stderr
            now = t.current()
            assert now == old, (i, p.stdout)
        verify_release(t, now)  # a whole release: .ready, every file's sha256, a venv
        t.wait_served(now)  # and the running daemon serves exactly that release, healthy
        rows.append((i, delay, who, step, ("old" if now == old else "new") + (" (undone)" if interrupted else "")))
    print(f"\nkill points (a full deploy takes {full:.1f} s, its device side {device_side:.1f} s):")
    for num, at, killed, log_tail, outcome in rows:
        print(
            f"  #{num} at {at:5.2f} s, killed {killed:<13}; device log at the kill: {log_tail:<44}"
            f" -> {outcome} release current and served"
        )
    outcomes = {r[4].split()[0] for r in rows}
    assert outcomes == {"old", "new"}, rows
    # and the device is left deployable: a clean deploy succeeds and serves its model
    p = run_cli(deploy_cmd(pi, t, "--bundle", str(bundles[1]), *FAST))
    assert p.returncode == 0, p.stdout + p.stderr
    verify_release(t, t.current())
    h = t.healthz()
    assert h["status"] == "ok" and h["model_sha256"] == kit["sha"]["b"]
    ready = [n for n in t.releases() if (t.remote_dir / "releases" / n / ".ready").exists()]
    assert len(ready) <= 3 + 2, ready  # --keep 3, plus current and previous at most
