"""The test suite's own rules: a tool `make setup` installs is required under CI (a failure, not a
skip, when missing); every skip is listed with its reason at the end; fixtures that share the
machine with other test runs do not race; test modules are named after their stage and share
code only through tests/helpers/."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

# One quick test per tool `make setup` installs, each with the real test module's own check.
TOOL_TESTS = {
    "systemd-analyze": "tests/test_device_service.py::test_unit_verifies_cleanly",
    "mosquitto": "tests/test_device_outputs_mqtt.py::test_results_events_and_availability",
    "chromium": "tests/test_train_label.py::test_review_page_in_chromium",
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
    import tests.helpers.sshd as sshd

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
    import tests.helpers.sshd as sshd

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


STAGE_PREFIXES = ("test_device", "test_train", "test_convert", "test_project")


def layout_problems(tests_dir: Path) -> list[str]:
    """Test modules named after their stage; imports of another test module or of a conftest."""
    problems = []
    for path in sorted(tests_dir.rglob("*.py")):
        rel = path.relative_to(tests_dir.parent)
        if path.parent == tests_dir and path.name.startswith("test_") and not path.stem.startswith(STAGE_PREFIXES):
            problems.append(f"{rel}: not named after its stage ({', '.join(p + '_*' for p in STAGE_PREFIXES)})")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                last = name.rsplit(".", 1)[-1]
                if name.startswith("tests") and (last == "conftest" or last.startswith("test_")):
                    problems.append(f"{rel}: imports {name} (shared code goes in tests/helpers/)")
    return problems


def test_test_modules_are_named_after_their_stage_and_share_code_through_helpers(tmp_path):
    assert layout_problems(ROOT / "tests") == []
    bad = tmp_path / "tests"
    bad.mkdir()
    (bad / "test_bench.py").write_text("from tests.conftest import ROOT\nimport tests.test_device_deploy\n")
    (bad / "test_device_x.py").write_text("from tests.helpers import ROOT\n")
    assert layout_problems(bad) == [
        "tests/test_bench.py: not named after its stage (test_device_*, test_train_*, test_convert_*, test_project_*)",
        "tests/test_bench.py: imports tests.conftest (shared code goes in tests/helpers/)",
        "tests/test_bench.py: imports tests.test_device_deploy (shared code goes in tests/helpers/)",
    ]


# Device tests that build a model of their own with TensorFlow (both slow): a model that is not the
# tiny classifier. Every other device test loads the checked-in tests/fixtures/tiny_model/.
DEVICE_TESTS_WITH_TENSORFLOW = {
    "test_device_deploy.py": "a broken export (logits under a sigmoid manifest) that check must refuse",
    "test_device_faults.py": "a model slow enough to back up the loop",
}
TENSORFLOW_NAMES = ("tensorflow", "keras", "train", "convert", "tiny_keras", "convert_tiny", "build_tiny_keras_model")


def tensorflow_uses(path: Path) -> list[str]:
    """The TensorFlow-side modules, helpers and fixtures a test module imports or asks for."""
    used = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            used += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            used += [node.module or "", *(alias.name for alias in node.names)]
        elif isinstance(node, ast.FunctionDef):
            used += [arg.arg for arg in node.args.args]
    return sorted({name for name in used if name.split(".")[0] in TENSORFLOW_NAMES})


def test_device_tests_run_without_tensorflow(tmp_path):
    found = {p.name: tensorflow_uses(p) for p in sorted((ROOT / "tests").glob("test_device_*.py"))}
    assert {name for name, used in found.items() if used} == set(DEVICE_TESTS_WITH_TENSORFLOW), found
    (tmp_path / "test_device_x.py").write_text("def test_x(tiny_keras):\n    import keras.layers\n")
    assert tensorflow_uses(tmp_path / "test_device_x.py") == ["keras.layers", "tiny_keras"]
