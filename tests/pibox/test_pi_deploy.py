"""deploy: `make deploy PI=root@127.0.0.1 PORT=<port>` into the emulated Pi, end to end.

The Pi is the rootfs's own aarch64 sshd (under qemu, on 127.0.0.1 only, key login, a host key
made for this run and its own known_hosts). Everything a deploy does happens there for real:
rsync of the bundle, a --system-site-packages venv with pip installing aarch64 wheels (from the
box's offline index), `device check`, the atomic flip of `current`, the health gate on the
daemon's /healthz. systemd is not PID 1 in the box, so the service manager is `command` with the
x86 deploy test's supervisor (tests/helpers/deploy.py SUPERVISOR: starts the unit's ExecStart with a
pidfile). Then `deploy-model`, `rollback`, `bench-remote`, each through its Make target. One story:
the tests run in order and share the Pi.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.deploy import SUPERVISOR, supervisor_service_args
from tests.pibox.box import free_port, start_sshd
from tests.pibox.helpers import APT_EXTENSION, record, selected_cpus

pytestmark = [pytest.mark.pi, pytest.mark.slow, pytest.mark.timeout(3600)]

# The board each suite plays in the deploy (the parity tests cover both CPU models on both suites).
CPU_OF_SUITE = {"bookworm": "cortex-a72", "trixie": "cortex-a76"}
REMOTE_DIR = "/root/faceedge"
STATE = "/root/faceedge-state"


class EmulatedPi:
    def __init__(self, ssh, http_port: int, config: Path, tmp: Path, say):
        self.ssh, self.http_port, self.config, self.tmp, self.say = ssh, http_port, config, tmp, say
        self.box = ssh.box

    def make(self, target: str, *, run: Path | None = None, args: list[str] = (), timeout: float = 3000):
        argv = [
            "make",
            "--no-print-directory",
            target,
            f"PI={self.ssh.host}",
            f"PORT={self.ssh.port}",
            f"SSH_KEY={self.ssh.key}",
            f"KNOWN_HOSTS={self.ssh.known_hosts}",
            "REMOTE_DIR=faceedge",
            f"DEVICE_CONFIG={self.config}",
            "ARGS=" + shlex.join(list(args)),
        ]
        if run is not None:
            argv.append(f"RUN={run}")
        t0 = time.monotonic()
        tag = f"[pi {self.box.suite}/{self.box.cpu}]"
        self.say(f"{tag} $ {shlex.join(argv)}")
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        lines = []
        for line in proc.stdout:  # the deploy's own log, live in `make test-pi`'s output
            lines.append(line)
            self.say(f"{tag} {line.rstrip()}")
        code = proc.wait(timeout=timeout)
        took = time.monotonic() - t0
        self.say(f"{tag} (exit {code}, {took:.0f} s)")
        return subprocess.CompletedProcess(argv, code, "".join(lines), ""), took

    def service_args(self) -> list[str]:
        return supervisor_service_args(["python3", "/root/supervisor.py"], REMOTE_DIR, STATE)

    def sh(self, remote: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(self.ssh.ssh_argv(remote), capture_output=True, text=True, timeout=timeout)

    def current(self) -> str | None:
        link = self.box.path(REMOTE_DIR) / "current"
        return Path(link.readlink()).name if link.is_symlink() else None

    def healthz(self) -> dict:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read())


@pytest.fixture(scope="module")
def pi(box, tmp_path_factory, request):
    cpu = CPU_OF_SUITE[box.suite] if CPU_OF_SUITE[box.suite] in selected_cpus() else selected_cpus()[0]
    b = box.with_cpu(cpu)
    tmp = tmp_path_factory.mktemp(f"deploy-{box.suite}")
    b.path("/root/supervisor.py").write_text(SUPERVISOR)
    http_port = free_port()
    config = tmp / "device.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        # the emulated Pi: no camera, so the synthetic source; HTTP (the health gate) on loopback
        source: {{type: synthetic, width: 160, height: 120, fps: 5}}
        capture: {{stall_s: 30.0}}
        crop: {{mode: full}}
        model: {{num_threads: 2, validate_timeout_s: 900}}
        outputs:
          http: {{host: 127.0.0.1, port: {http_port}}}
        log_level: INFO
        """)
    )
    t0 = time.monotonic()
    ssh = start_sshd(b, tmp / "keys", timeout=300)
    record(f"{box.suite}/{cpu}: aarch64 sshd up on 127.0.0.1:{ssh.port} in {time.monotonic() - t0:.1f} s")
    capman = request.config.pluginmanager.getplugin("capturemanager")

    def say(text: str) -> None:
        with capman.global_and_fixture_disabled():
            print(text, flush=True)

    yield EmulatedPi(ssh, http_port, config, tmp, say)
    b.run(["python3", "/root/supervisor.py", "stop", REMOTE_DIR, STATE], timeout=300, check=False)
    ssh.stop()


SLOW = ["--health-timeout", "900", "--check-timeout", "1800", "--lock-wait", "600"]


def test_deploy(pi, demo):
    p, took = pi.make("deploy", run=demo["run"], args=[*pi.service_args(), *SLOW])
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-3000:]
    out = p.stdout
    for step in ("copied in", "verified", "venv ready", "device check passed", "deploy "):
        assert step in out, step
    cur = pi.current()
    assert cur is not None and (pi.box.path(REMOTE_DIR) / "releases" / cur / ".ready").is_file()
    h = pi.healthz()
    assert h["status"] == "ok" and h["model_sha256"] == demo["manifest"]["sha256"], h
    # the release venv holds aarch64 wheels and runs the wheel's device package
    q = pi.sh(
        f"{REMOTE_DIR}/current/venv/bin/python -c 'import platform, cv2, device; "
        "print(platform.machine(), cv2.__file__, device.__file__)'"
    )
    machine, cv2_file, device_file = q.stdout.split()
    assert machine == "aarch64" and device_file.startswith(f"{REMOTE_DIR}/current/venv/"), q.stdout
    pi.first = cur
    record(
        f"deploy {pi.box.suite}/{pi.ssh.box.cpu}: make deploy into root@127.0.0.1:{pi.ssh.port} ok in "
        f"{took:.0f} s (release {cur}); "
        + "; ".join(ln.strip() for ln in out.splitlines() if "numpy" in ln or "venv ready" in ln)
    )


def test_deploy_keeps_apt_numpy_extension(pi):
    """Bookworm's numpy (and Trixie's): the apt C extension imports from the deployed venv."""
    q = pi.sh(f"{REMOTE_DIR}/current/venv/bin/python -c {shlex.quote(APT_EXTENSION)}")
    assert q.returncode == 0, q.stdout + q.stderr
    ext_file, version, numpy_file = q.stdout.split()
    assert numpy_file.startswith("/usr/lib/python3/dist-packages/"), numpy_file
    record(f"deploy {pi.box.suite}: apt's pywt imports from the deployed venv (numpy {version} from the OS)")


def test_deploy_model(pi, demo):
    """A new model only (the run's float32 export), reloaded with SIGHUP through the supervisor."""
    sha = json.loads((demo["run"] / "export" / "float32" / "manifest.json").read_text())["sha256"]
    p, took = pi.make("deploy-model", run=demo["run"], args=[*pi.service_args(), *SLOW, "--variant", "float32"])
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-3000:]
    assert pi.current() != pi.first
    deadline = time.monotonic() + 60
    while pi.healthz().get("model_sha256") != sha and time.monotonic() < deadline:
        time.sleep(1)
    assert pi.healthz()["model_sha256"] == sha
    record(f"deploy-model {pi.box.suite}: float32 model live after SIGHUP, {took:.0f} s")


def test_rollback(pi, demo):
    p, took = pi.make("rollback", args=[*pi.service_args(), "--health-timeout", "900", "--lock-wait", "600"])
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-3000:]
    assert pi.current() == pi.first
    h = pi.healthz()
    assert h["status"] == "ok" and h["model_sha256"] == demo["manifest"]["sha256"], h
    record(f"rollback {pi.box.suite}: back to {pi.first}, healthy, {took:.0f} s")


def test_bench_remote(pi):
    out = pi.tmp / "bench"
    cores = len(os.sched_getaffinity(0))  # the box has the host's cores: the daemon's default threads there
    threads = sorted({1, cores})
    p, took = pi.make(
        "bench-device",
        args=[
            "--out",
            str(out),
            "--variants",
            "int8",
            "--threads",
            ",".join(map(str, threads)),
            "--runs",
            "3",
            "--warmup-runs",
            "1",
            "--min-seconds",
            "0.05",
            "--max-seconds",
            "60",
            "--pipeline-seconds",
            "2",
            "--pipeline-warmup-seconds",
            "0.5",
            "--resolution",
            "160x120",
            "--no-baseline",
            "--no-extras",
        ],
    )
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-3000:]
    rep = json.loads((out / "bench.json").read_text())
    assert rep["machine"]["arch"] == "aarch64"
    assert rep["machine"]["cpu_model"].startswith({"cortex-a72": "Cortex-A72", "cortex-a76": "Cortex-A76"}[pi.box.cpu])
    # complete: every section, the daemon's default thread count (the box shows the host's 2 cores) included
    assert sorted((r["variant"], r["threads"]) for r in rep["raw"]) == [("int8", t) for t in threads]
    assert all(r["latency_ms"]["n"] >= 3 and r["fps"] > 0 for r in rep["raw"])
    assert sorted(p["threads"] for p in rep["pipeline"]) == threads
    assert all(p["frames"] >= 1 and "invoke" in p["stages_ms"] for p in rep["pipeline"])
    assert rep["settings"]["default_threads"] == cores
    assert rep["efficiency"]["int8"]["pipeline_default_over_best_raw"] > 0
    assert {"pipeline_fps", "pipeline_default_over_best", "pipeline_over_raw_1_thread"} <= set(rep["summary"])
    assert (out / "bench.md").is_file() and (out / "bench.png").is_file()
    record(
        f"bench-remote {pi.box.suite}/{pi.box.cpu}: bench.json back in {took:.0f} s "
        f"(raw int8 1 thread {rep['raw'][0]['latency_ms']['p50']:.0f} ms p50, emulated: not a Pi's timing)"
    )
