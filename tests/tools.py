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
