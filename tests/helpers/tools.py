"""External tools the tests run for real (mosquitto, sshd, systemd-analyze, openssl, ...).

`make setup` installs them (its APT_PACKAGES). Where one is missing, its tests skip, with the
reason in the summary at the end of the run (conftest's "not tested here" section). Under CI
(`CI` set, as .ci/run and every CI service do) a missing tool that `make setup` installs is a
FAILURE instead: there, a skip would silently drop the very tests that matter.

`FACEEDGE_TEST_TOOL_PATH` (os.pathsep-separated) replaces where tools are looked for: PATH plus
/usr/sbin and /sbin (mosquitto and sshd live there, often off a non-root PATH).
"""

from __future__ import annotations

import os
import shutil

import pytest

# tool -> the apt package `make setup` installs it with
SETUP_PACKAGES = {
    "mosquitto": "mosquitto",
    "mosquitto_passwd": "mosquitto",
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-server",
    "rsync": "rsync",
    "systemd-analyze": "systemd",
    "openssl": "openssl",
    "chromium": "chromium",
}


def search_path() -> str:
    override = os.environ.get("FACEEDGE_TEST_TOOL_PATH")
    if override is not None:
        return override
    return os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])


def find_tool(name: str) -> str | None:
    return shutil.which(name, path=search_path())


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def missing(names: list[str] | tuple[str, ...]) -> None:
    """Skip (or, under CI, fail) the current test: `names` are not installed."""
    pkgs = sorted({SETUP_PACKAGES.get(n, n) for n in names})
    msg = f"{', '.join(names)} is not installed (make setup installs {' '.join(pkgs)})"
    if in_ci() and all(n in SETUP_PACKAGES for n in names):
        pytest.fail(f"CI: {msg}", pytrace=False)
    pytest.skip(msg)


def require(*names: str) -> dict[str, str]:
    """{name: path} of every tool, or skip/fail the test (see `missing`)."""
    found = {n: find_tool(n) for n in names}
    absent = [n for n, p in found.items() if p is None]
    if absent:
        missing(absent)
    return found  # type: ignore[return-value]


# ---------------------------------------------------------------------------- unwritable folders

_RO_SCRIPT = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'


def _ro_prefix(folder: str) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _RO_SCRIPT, "sh", folder]


def run_with_readonly(folder, argv: list[str], **kw):
    """Run argv with `folder` (existing) unwritable for it: a subprocess.CompletedProcess.

    File modes do not stop root (these tests run as root on some machines), so for root `folder`
    is bind-mounted read-only in a private mount namespace of the child (unshare + mount; the rest
    of the machine sees nothing). For other users a mode of 0555 is enough. Skips where neither works.
    """
    import subprocess
    from pathlib import Path

    folder = Path(folder)
    if os.geteuid() != 0:
        mode = folder.stat().st_mode & 0o777
        folder.chmod(0o555)
        try:
            return subprocess.run(argv, **kw)
        finally:
            folder.chmod(mode)
    probe = subprocess.run(
        [*_ro_prefix(str(folder)), "sh", "-c", 'touch "$0/.probe" 2>&1', str(folder)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode == 0:
        (folder / ".probe").unlink(missing_ok=True)
    if "Read-only file system" not in probe.stdout:
        pytest.skip(f"cannot make a read-only folder for root here (unshare/mount: {probe.stderr.strip()[-200:]})")
    return subprocess.run([*_ro_prefix(str(folder)), *argv], **kw)
