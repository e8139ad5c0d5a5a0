"""A real OpenSSH server on 127.0.0.1 for tests: generated host and client keys, its own known_hosts.

Used by the deploy and remote-bench tests, where it plays the Raspberry Pi.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import tools

PRIVSEP_DIR = "/run/sshd"  # sshd's privilege separation directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_sshd() -> str:
    """The sshd binary; skip (fail under CI, where `make setup` installs them) without sshd/rsync."""
    sshd = tools.require("sshd", "rsync", "ssh-keygen")["sshd"]
    # Another test run on this machine may create it between a check and our mkdir: no check.
    try:
        os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
    except PermissionError:
        pytest.skip(f"sshd needs {PRIVSEP_DIR} and we cannot create it")
    return sshd


def keygen(path: Path, comment: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path


@dataclass
class SshServer:
    tmp: Path
    port: int
    key: Path  # the client's private key
    known_hosts: Path
    home: Path
    proc: subprocess.Popen

    @property
    def user(self) -> str:
        return getpass.getuser()

    @property
    def host(self) -> str:
        return f"{self.user}@127.0.0.1"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def start_sshd(tmp: Path, *, env: dict[str, str] | None = None) -> SshServer:
    """Start `sshd -D` on a free loopback port; `env` becomes its SetEnv (e.g. PYTHONPATH, HOME)."""
    sshd = require_sshd()
    keygen(tmp / "host_key", "host_key")
    keygen(tmp / "client_key", "client_key")
    (tmp / "authorized_keys").write_text((tmp / "client_key.pub").read_text())
    home = tmp / "home"
    home.mkdir()
    port = free_port()
    setenv = " ".join(f"{k}={v}" for k, v in {"HOME": str(home), **(env or {})}.items())
    (tmp / "sshd_config").write_text(
        textwrap.dedent(f"""\
        ListenAddress 127.0.0.1
        Port {port}
        HostKey {tmp / "host_key"}
        AuthorizedKeysFile {tmp / "authorized_keys"}
        PubkeyAuthentication yes
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PermitRootLogin prohibit-password
        StrictModes no
        UsePAM no
        UseDNS no
        PidFile {tmp / "sshd.pid"}
        SetEnv {setenv}
        """)
    )
    proc = subprocess.Popen(
        [sshd, "-D", "-e", "-f", str(tmp / "sshd_config")],
        stdout=open(tmp / "sshd.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"sshd did not start: {(tmp / 'sshd.log').read_text()}")
            time.sleep(0.05)
    kh = tmp / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{port} {(tmp / 'host_key.pub').read_text()}")
    return SshServer(tmp, port, tmp / "client_key", kh, home, proc)
