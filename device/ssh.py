"""ssh and rsync to a device, as deploy and bench-remote use them: hosts, the argv builder, and what
a failed connection means, in one line a user can act on.

Security: ssh is key-only (BatchMode, no password or keyboard-interactive auth) and host keys are
always checked (StrictHostKeyChecking=yes, never turned off; `--known-hosts FILE` for a file you
filled after checking the fingerprint). Remote commands are argv lists quoted with shlex.quote;
nothing is run through a local shell.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from device.errors import FaceedgeError

_SAFE_REMOTE_DIR = re.compile(r"^[A-Za-z0-9._/+-]+$")
_SAFE_HOST = re.compile(r"^[A-Za-z0-9._%:-]+$")
_SAFE_USER = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class Host:
    """One target: `[user@]host[:port]` (IPv6: `[user@][addr]:port`)."""

    spec: str
    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, spec: str) -> "Host":
        s = spec.strip()
        user = None
        if "@" in s:
            user, s = s.rsplit("@", 1)
            if not _SAFE_USER.match(user):
                raise FaceedgeError(f"--hosts {spec!r}: bad user name {user!r}")
        port = None
        m = re.fullmatch(r"\[([0-9A-Za-z:.%]+)\](?::(\d+))?", s)
        if m:
            host, port_s = m.group(1), m.group(2)
        elif s.count(":") == 1:
            host, port_s = s.split(":")
        else:
            host, port_s = s, None
        if port_s is not None:
            port = int(port_s)
            if not 0 < port < 65536:
                raise FaceedgeError(f"--hosts {spec!r}: port {port} out of range")
        if not host or host.startswith("-") or not _SAFE_HOST.match(host):
            raise FaceedgeError(f"--hosts {spec!r}: not a host name or address")
        return cls(spec=spec.strip(), host=host, user=user, port=port)

    @property
    def dest(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def rsync_dest(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{h}" if self.user else h


def parse_hosts(text: str) -> list[Host]:
    hosts = [Host.parse(h) for h in text.split(",") if h.strip()]
    if not hosts:
        raise FaceedgeError("--hosts: give at least one user@host")
    if len({h.spec for h in hosts}) != len(hosts):
        raise FaceedgeError(f"--hosts {text!r}: a host is listed twice")
    return hosts


@dataclass(frozen=True)
class Ssh:
    """ssh/rsync argv builder. Key-only, host keys always checked."""

    port: int = 22
    key: Path | None = None
    known_hosts: Path | None = None
    connect_timeout: int = 10

    def options(self, host: Host) -> list[str]:
        opts = [
            "-p",
            str(host.port or self.port),
            "-o",
            "BatchMode=yes",  # never prompt: no passwords, no passphrases typed here
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "KbdInteractiveAuthentication=no",
            "-o",
            "PubkeyAuthentication=yes",
            "-o",
            "StrictHostKeyChecking=yes",  # unknown or changed host key: refuse
            "-o",
            f"ConnectTimeout={self.connect_timeout}",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
        ]
        if self.key is not None:
            opts += ["-i", str(self.key), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts is not None:
            opts += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        return opts

    def ssh_argv(self, host: Host, remote_argv: list[str]) -> list[str]:
        # ssh hands the remote login shell one string: quote every word.
        return ["ssh", *self.options(host), "--", host.dest, shlex.join(remote_argv)]

    def rsync_shell(self, host: Host) -> str:
        """rsync's `-e` value: rsync splits it itself (quotes allowed, no shell)."""
        return shlex.join(["ssh", *self.options(host)])

    def rsync_argv(self, host: Host, src: Path, remote_path: str, link_dest: str | None) -> list[str]:
        # paths were checked to hold no quotes.
        e = self.rsync_shell(host)
        # --checksum: link-dest matches by content, not by size+mtime. --whole-file: no delta transfer
        # (rsync 3.2.7 discards delta-built files whose basis came from --link-dest: "failed
        # verification"); bundles are a few MB and unchanged files are not sent at all.
        # --chmod: the release (model, config, self-test image) is the deploying user's alone on the
        # device; the daemon runs as that user.
        argv = ["rsync", "-a", "--checksum", "--whole-file", "--timeout=120", "--chmod=D700,F600", "-e", e]
        if link_dest:
            argv.append(f"--link-dest={link_dest}")  # unchanged files become hard links: less to send
        return argv + ["--", f"{src}/", f"{host.rsync_dest}:{remote_path}/"]


def explain_ssh_failure(host: Host, ssh: Ssh, stderr: str) -> str:
    s = stderr.strip()
    if "Host key verification failed" in s or "REMOTE HOST IDENTIFICATION HAS CHANGED" in s:
        kh = ssh.known_hosts or Path("~/.ssh/known_hosts")
        return (
            f"host key verification failed for {host.host}: its key is not in {kh} or has CHANGED. "
            "Nothing was copied. Check the fingerprint on the Pi "
            "(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) "
            f"and add it, e.g. `ssh-keyscan -p {host.port or ssh.port} {host.host} >> {kh}` after comparing"
        )
    if "Permission denied" in s:
        return (
            f"ssh key refused by {host.dest}: copy your public key there first "
            f"(ssh-copy-id {'-i ' + str(ssh.key) + ' ' if ssh.key else ''}-p {host.port or ssh.port} {host.dest})"
        )
    if "Connection refused" in s or "timed out" in s or "No route" in s or "Could not resolve" in s:
        return f"cannot reach {host.host}:{host.port or ssh.port} ({s.splitlines()[-1]})"
    return f"ssh to {host.dest} failed: {s.splitlines()[-1] if s else 'no message'}"


def check_remote_dir(remote_dir: str) -> str:
    """A relative path under the device user's home (or an absolute one, checked there to be inside it).

    Refused here: the home itself (`.`, `~`, empty), `/`, `..` anywhere, odd characters. The device
    side checks again against its real $HOME (`check_root` in device/deploy/remote.py), before creating anything.
    """
    d = remote_dir.strip()
    if d.startswith("~/"):
        d = d[2:]
    if not d or not _SAFE_REMOTE_DIR.match(d) or ".." in d.split("/"):
        raise FaceedgeError(f"--remote-dir {remote_dir!r}: use letters, digits and ._/+- only (relative = under ~)")
    d = posixpath.normpath(d)
    if d in (".", "/"):
        raise FaceedgeError(
            f"--remote-dir {remote_dir!r}: give a folder inside the home on the device "
            "(default faceedge), not the home itself or /"
        )
    return d
