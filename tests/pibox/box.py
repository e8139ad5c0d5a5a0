"""Run commands in an unpacked arm64 rootfs: proot for the filesystem view, qemu-user for the CPU.

No binfmt_misc, no kernel module, no sysctl: proot's ``-q`` hands every foreign binary to
``qemu-aarch64-static -cpu <model>`` itself. The three traps of ../shared/notes/pibox.md are
handled here: proot must be >= 5.2 (build.py builds it), the CPU model is always explicit (qemu's
default ``max`` gives wrong XNNPACK results), and ``/proc/cpuinfo`` is a file matching that model
(the host's x86 one makes the LiteRT Interpreter constructor segfault).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
QEMU = "/usr/bin/qemu-aarch64-static"
# Raspberry Pi 4 and 5 cores, as qemu names them (never the default `max`: trap 2).
CPUS = {"cortex-a72": "Pi 4", "cortex-a76": "Pi 5"}
SUITES = ("bookworm", "trixie")
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class PiboxError(RuntimeError):
    """A pibox step failed; the message says which and why."""


def cpuinfo_text(cpu: str, n_cpus: int | None = None) -> str:
    """A Pi-like /proc/cpuinfo for `cpu`, one block per host CPU (the emulated box has the host's
    cores: /sys/devices/system/cpu is the host's, and the two must agree)."""
    if cpu not in CPUS:
        raise PiboxError(f"cpu {cpu!r}: choose one of {', '.join(CPUS)}")
    block = "\n".join(ln for ln in (HERE / "cpuinfo" / cpu).read_text().splitlines() if not ln.startswith("#"))
    n = n_cpus or os.cpu_count() or 1
    return "\n\n".join(block.format(n=i) for i in range(n)) + "\n\n"


def host_guard() -> list[str]:
    """The prefix that keeps the box's mount and umount calls away from the host's mounts.

    proot's fake root is only a view: a process inside runs with the caller's real privileges, and
    the paths it mounts or unmounts are translated to host paths through the binds. As root, one
    `debootstrap --second-stage` (its exit handler unmounts /dev/pts, /dev/shm, /proc and /sys in
    "the target", which is / inside) unmounted the host's /dev/pts and /dev/shm. Run as root, the
    box therefore gets a private mount namespace (util-linux `unshare`, no fork: the pid stays
    proot's), where such calls change only the namespace's copy. As another user the kernel refuses
    them anyway (EPERM)."""
    if os.geteuid() != 0:
        return []
    return ["unshare", "--mount", "--propagation", "private", "--"]


@dataclass
class Pibox:
    """One unpacked rootfs (`root`) seen through one CPU model."""

    root: Path
    cpu: str
    proot: Path
    state: Path  # host-side scratch: the cpuinfo file, proot's temp dir, logs
    suite: str = ""
    binds: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root, self.state, self.proot = Path(self.root), Path(self.state), Path(self.proot)
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / "tmp").mkdir(exist_ok=True)
        self.cpuinfo = self.state / f"cpuinfo-{self.cpu}"
        self.cpuinfo.write_text(cpuinfo_text(self.cpu))

    @classmethod
    def unpack(cls, tarball: Path, dest: Path, *, cpu: str, proot: Path, suite: str = "") -> Pibox:
        """Unpack a rootfs tarball made by build.py into dest/root (seconds, not the build's minutes)."""
        root = Path(dest) / "root"
        if root.exists():
            raise PiboxError(f"{root}: exists already; unpack into an empty directory")
        root.mkdir(parents=True)
        t0 = time.monotonic()
        argv = ["tar", "-x", "-p", "--numeric-owner", "-f", str(tarball), "-C", str(root)]
        if str(tarball).endswith(".zst"):
            argv.insert(1, "--zstd")
        p = subprocess.run(argv, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise PiboxError(f"unpacking {tarball} failed: {p.stderr.strip()[-400:]}")
        log.info("unpacked %s in %.1f s", tarball.name, time.monotonic() - t0)
        return cls(root=root, cpu=cpu, proot=proot, state=Path(dest) / "state", suite=suite)

    def with_cpu(self, cpu: str) -> Pibox:
        """The same rootfs seen through another CPU model."""
        return Pibox(
            root=self.root, cpu=cpu, proot=self.proot, state=self.state, suite=self.suite, binds=list(self.binds)
        )

    # ------------------------------------------------------------------ running things inside

    def argv(self, cmd: list[str], *, cwd: str = "/root", binds: list[tuple[str, str]] = ()) -> list[str]:
        """proot argv running `cmd` inside as (fake) root, with a clean guest environment, in a
        mount namespace of its own (`host_guard`)."""
        argv = [
            *host_guard(),
            str(self.proot),
            "-q",
            f"{QEMU} -cpu {self.cpu}",
            "-r",
            str(self.root),
            "-0",
            "-b",
            "/dev",
            "-b",
            "/proc",
            "-b",
            "/sys",
            "-b",
            f"{self.cpuinfo}:/proc/cpuinfo",
            "-w",
            cwd,
        ]
        for host, guest in [*self.binds, *binds]:
            argv += ["-b", f"{host}:{guest}"]
        return argv + ["/usr/bin/env", "-i", f"PATH={GUEST_PATH}", "HOME=/root", "LANG=C.UTF-8", "TERM=dumb", *cmd]

    def env(self) -> dict[str, str]:
        """The proot process's own environment: its temp dir outside the rootfs, and no seccomp
        acceleration (with it, proot 5.4.0 built from sid's source makes the first execve through
        qemu exit 182, nothing run; measured on Debian 12's 6.x kernel)."""
        return {
            "PATH": os.environ.get("PATH", GUEST_PATH),
            "PROOT_TMP_DIR": str(self.state / "tmp"),
            "PROOT_NO_SECCOMP": "1",
            "LANG": "C.UTF-8",
        }

    def run(
        self,
        cmd: list[str],
        *,
        timeout: float = 600,
        check: bool = True,
        input: str | None = None,
        cwd: str = "/root",
        binds: list[tuple[str, str]] = (),
    ) -> subprocess.CompletedProcess:
        """Run cmd inside; output captured as text. check: raise PiboxError naming the command."""
        t0 = time.monotonic()
        try:
            p = subprocess.run(
                self.argv(cmd, cwd=cwd, binds=binds),
                env=self.env(),
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise PiboxError(
                f"[{self.cpu}] {' '.join(cmd)}: timed out after {timeout:.0f} s\n{(e.stderr or b'')[-2000:]!r}"
            ) from None
        log.debug("[%s] %s: exit %d in %.1f s", self.cpu, " ".join(cmd), p.returncode, time.monotonic() - t0)
        if check and p.returncode != 0:
            raise PiboxError(
                f"[{self.cpu}] {' '.join(cmd)}: exit {p.returncode}\n{(p.stdout + p.stderr).strip()[-3000:]}"
            )
        return p

    def python(self, code: str, *args: str, python: str = "python3", **kw) -> subprocess.CompletedProcess:
        return self.run([python, "-c", code, *args], **kw)

    def popen(self, cmd: list[str], *, log_path: Path, cwd: str = "/root") -> subprocess.Popen:
        return subprocess.Popen(
            self.argv(cmd, cwd=cwd),
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=open(log_path, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def path(self, guest: str) -> Path:
        """The host path of a guest path (to read and write files without emulation)."""
        return self.root / guest.lstrip("/")


# ---------------------------------------------------------------------------------- sshd inside


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PiSsh:
    """sshd running inside the box on 127.0.0.1 only: key login, its own host key and known_hosts."""

    box: Pibox
    port: int
    key: Path  # the client's private key (host side)
    known_hosts: Path
    proc: subprocess.Popen
    user: str = "root"

    @property
    def host(self) -> str:
        return f"{self.user}@127.0.0.1"

    def ssh_argv(self, remote: str) -> list[str]:
        return [
            "ssh",
            "-p",
            str(self.port),
            "-i",
            str(self.key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "--",
            self.host,
            remote,
        ]

    def stop(self) -> None:
        """End sshd and everything started through it: every process this proot traces (a daemon
        that made its own session included), then proot."""
        if self.proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in tracees(self.proc.pid):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(timeout=20)
                return
            except subprocess.TimeoutExpired:
                continue
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def tracees(tracer: int) -> list[int]:
    """Host pids of the processes `tracer` (a proot) traces: all that run inside its box."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            status = (d / "status").read_text()
        except OSError:
            continue
        m = re.search(r"^TracerPid:\s+(\d+)$", status, re.M)
        if m and int(m.group(1)) == tracer:
            pids.append(int(d.name))
    return pids


def _keygen(path: Path, comment: str) -> None:
    if path.exists():
        path.unlink()
        path.with_suffix(".pub").unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)


def start_sshd(box: Pibox, keys_dir: Path, *, port: int | None = None, timeout: float = 90) -> PiSsh:
    """Start the rootfs's own sshd (aarch64, under qemu) on 127.0.0.1:port. Keys are generated here,
    per run: the host key goes into the rootfs, the client key and known_hosts stay in keys_dir."""
    keys_dir = Path(keys_dir)
    keys_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    host_key = box.path("/etc/ssh/pibox_host_ed25519_key")
    _keygen(host_key, "pibox-host")
    host_key.chmod(0o600)
    _keygen(keys_dir / "client_key", "pibox-client")
    ssh_dir = box.path("/root/.ssh")
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text((keys_dir / "client_key.pub").read_text())
    box.path("/run/sshd").mkdir(parents=True, exist_ok=True)
    box.path("/etc/ssh/pibox_sshd_config").write_text(
        textwrap.dedent(f"""\
        # written by tests/pibox/box.py: loopback only, key login only
        ListenAddress 127.0.0.1
        Port {port}
        HostKey /etc/ssh/pibox_host_ed25519_key
        AuthorizedKeysFile /root/.ssh/authorized_keys
        PubkeyAuthentication yes
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PermitRootLogin prohibit-password
        StrictModes no
        UsePAM no
        UseDNS no
        PidFile /run/sshd-pibox.pid
        Subsystem sftp internal-sftp
        """)
    )
    log_path = box.state / "sshd.log"
    proc = box.popen(["/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/pibox_sshd_config"], log_path=log_path)
    known_hosts = keys_dir / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key.with_suffix('.pub').read_text()}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.settimeout(5)
                if s.recv(64).startswith(b"SSH-"):
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
            raise PiboxError(
                f"sshd in {box.root} did not start on 127.0.0.1:{port}: {log_path.read_text(errors='replace')[-1500:]}"
            )
        time.sleep(0.5)
    return PiSsh(box=box, port=port, key=keys_dir / "client_key", known_hosts=known_hosts, proc=proc)


def tar_rootfs(root: Path, out: Path) -> None:
    """Pack root into out (zstd when available), written under a temp name and renamed."""
    tmp = out.with_name(out.name + ".part")
    argv = ["tar", "-c", "--numeric-owner", "-f", str(tmp), "-C", str(root), "."]
    if out.name.endswith(".zst"):
        argv[1:1] = ["--zstd"]
    p = subprocess.run(argv, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise PiboxError(f"packing {root} into {out} failed: {p.stderr.strip()[-400:]}")
    os.replace(tmp, out)


__all__ = ["CPUS", "SUITES", "Pibox", "PiboxError", "PiSsh", "cpuinfo_text", "start_sshd", "tar_rootfs", "free_port"]
