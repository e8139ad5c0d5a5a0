"""The test suite's own rules: a tool `make setup` installs is required under CI (a failure, not a
skip, when missing); every skip is listed with its reason at the end; fixtures that share the
machine with other test runs do not race."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# One quick test per tool `make setup` installs, each with the real test module's own check.
TOOL_TESTS = {
    "systemd-analyze": "tests/test_device_service.py::test_unit_verifies_cleanly",
    "mosquitto": "tests/test_device_outputs_mqtt.py::test_results_events_and_availability",
    "chromium": "tests/test_label.py::test_review_page_in_chromium",
}


def run_pytest(tests: list[str], *, ci: bool, tool_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["FACEEDGE_TEST_TOOL_PATH"] = str(tool_path)  # where the tests look for external tools: nothing there
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *tests],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_missing_setup_tools_fail_under_ci_and_skip_visibly_elsewhere(tmp_path):
    empty = tmp_path / "no-tools"
    empty.mkdir()
    tests = list(TOOL_TESTS.values())
    p = run_pytest(tests, ci=True, tool_path=empty)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    for tool in TOOL_TESTS:
        assert f"{tool} is not installed" in out, (tool, out[-3000:])
    assert " skipped" not in out.splitlines()[-1], out.splitlines()[-1]  # none of them quietly skipped

    p = run_pytest(tests, ci=False, tool_path=empty)
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    assert f"{len(tests)} skipped" in out.splitlines()[-1]
    # the summary says what was not tested and why, one line per reason
    section = out[out.index("not tested here") :]
    for tool in TOOL_TESTS:
        assert f"{tool} is not installed" in section, section


def test_sshd_and_rsync_required_under_ci(monkeypatch, tmp_path):
    """The deploy and bench-remote tests' sshd fixture: the same rule, checked in-process (those tests
    need TensorFlow-built models first, too slow to run twice here)."""
    import tests.sshd as sshd

    monkeypatch.setenv("FACEEDGE_TEST_TOOL_PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="sshd, rsync, ssh-keygen is not installed"):
        sshd.require_sshd()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="sshd, rsync, ssh-keygen is not installed"):
        sshd.require_sshd()


def test_sshd_privsep_dir_created_by_someone_else_meanwhile(monkeypatch, tmp_path):
    """Two test runs on one machine: /run/sshd appears between our check and our mkdir
    (FileExistsError was seen in a full run)."""
    import tests.sshd as sshd

    privsep = tmp_path / "run-sshd"
    privsep.mkdir()  # another run made it a moment ago
    monkeypatch.setattr(sshd, "PRIVSEP_DIR", str(privsep), raising=False)
    real_isdir, real_makedirs = os.path.isdir, os.makedirs

    def isdir(p):  # the fixture's own check ran before the other run's mkdir: it saw no directory
        if sys._getframe(1).f_code.co_filename == sshd.__file__:
            return False
        return real_isdir(p)

    monkeypatch.setattr(os.path, "isdir", isdir)

    def makedirs(p, *a, **kw):  # the real mkdir, on our stand-in for /run/sshd
        return real_makedirs(privsep if str(p) == "/run/sshd" else p, *a, **kw)

    monkeypatch.setattr(os, "makedirs", makedirs)
    sshd.require_sshd()
    assert privsep.is_dir()
