"""Fixtures of the emulated-Pi tests (`make test-pi`) and the suites x CPU models x checks summary.

The selection comes from the environment (the Make target sets it from PI_SUITES / PI_CPUS):
FACEEDGE_PI_SUITES=bookworm,trixie and FACEEDGE_PI_CPUS=cortex-a72,cortex-a76 (the defaults).
Missing `make pibox` output is a skip for a bare `pytest`, a failure under `make test-pi`
(FACEEDGE_PI_REQUIRED=1) and in CI.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.pibox import build
from tests.pibox.box import Pibox
from tests.pibox.helpers import FIGURES, record, selected_cpus, selected_suites

HERE = Path(__file__).resolve().parent


def pytest_generate_tests(metafunc):
    if "suite" in metafunc.fixturenames:
        metafunc.parametrize("suite", selected_suites(), scope="session")
    if "cpu" in metafunc.fixturenames:
        metafunc.parametrize("cpu", selected_cpus(), scope="session")


def missing(what: str) -> None:
    msg = f"{what} (run `make pibox` first)"
    if os.environ.get("FACEEDGE_PI_REQUIRED") or os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


# ----------------------------------------------------------------------------------- the summary

_OUTCOMES: dict[tuple[str, str, str], str] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if item.get_closest_marker("pi") is None or not hasattr(item, "callspec"):
        return
    if rep.when == "call" or (rep.when == "setup" and not rep.passed):
        suite = item.callspec.params.get("suite", "-")
        cpu = item.callspec.params.get("cpu")
        if cpu is None:  # a per-suite check: the CPU model its box (or the deploy's Pi) ran as
            box = getattr(item.funcargs.get("pi"), "box", None) or item.funcargs.get("box")
            cpu = getattr(box, "cpu", "-")
        status = "skipped" if rep.skipped else rep.outcome
        _OUTCOMES[(suite, cpu, item.originalname.removeprefix("test_"))] = "FAILED" if status == "failed" else status


def pytest_terminal_summary(terminalreporter):
    if not _OUTCOMES and not FIGURES:
        return
    tr = terminalreporter
    tr.section("emulated Raspberry Pi: suites x CPU models x checks")
    checks = list(dict.fromkeys(c for _, _, c in _OUTCOMES))
    cols = sorted({(suite, cpu) for suite, cpu, _ in _OUTCOMES})
    names = [f"{suite} {cpu.removeprefix('cortex-').upper()}" for suite, cpu in cols]
    width = max(len(c) for c in checks)
    tr.write_line(f"{'check':<{width}}  " + "  ".join(f"{n:<14}" for n in names))
    for check in checks:
        cells = [_OUTCOMES.get((suite, cpu, check), ".") for suite, cpu in cols]
        tr.write_line(f"{check:<{width}}  " + "  ".join(f"{c:<14}" for c in cells))
    tr.write_line(
        "(A72: Cortex-A72 as in a Pi 4, A76: Cortex-A76 as in a Pi 5; '.': a per-suite check, run as the other)"
    )
    for line in FIGURES:
        tr.write_line(line)


# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def proot() -> Path:
    p = build.proot_path()
    v = build.proot_version(p) if p.exists() else None
    if not v or v[:2] < build.PROOT_MIN:
        missing(f"{p}: no proot >= 5.2")
    if not Path("/usr/bin/qemu-aarch64-static").exists():
        missing("qemu-user-static is not installed")
    return p


@pytest.fixture(scope="session")
def _boxes(proot, tmp_path_factory):
    """{suite: Pibox}, each unpacked once per session (pytest orders tests by suite x CPU and
    would otherwise tear a suite's box down and unpack it again), all deleted at the end."""
    made: dict[str, Pibox] = {}

    def get(suite: str) -> Pibox:
        if suite not in made:
            tar, wheels = build.rootfs_tarball(suite), build.wheel_dir(suite)
            if not tar.is_file():
                missing(f"{tar}: no {suite} rootfs")
            if not (wheels / ".key").is_file():
                missing(f"{wheels}: no wheelhouse")
            t0 = time.monotonic()
            b = Pibox.unpack(
                tar, tmp_path_factory.mktemp(f"pibox-{suite}"), cpu=selected_cpus()[0], proot=proot, suite=suite
            )
            b.binds.append((str(wheels), build.WHEEL_DIR_GUEST))
            record(
                f"{suite}: rootfs unpacked in {time.monotonic() - t0:.1f} s ({tar.name}, "
                f"{tar.stat().st_size / 1e6:.0f} MB)"
            )
            made[suite] = b
        return made[suite]

    yield get
    for b in made.values():
        shutil.rmtree(b.root, ignore_errors=True)


@pytest.fixture(scope="session")
def box(suite, _boxes) -> Pibox:
    """A fresh unpacked rootfs of `suite`, with the offline wheelhouse bound in."""
    return _boxes(suite)


@pytest.fixture(scope="session")
def device_wheel(tmp_path_factory) -> Path:
    """The device wheel exactly as `device deploy` builds it."""
    from device.deploy.wheel import build_device_wheel

    return build_device_wheel(tmp_path_factory.mktemp("wheel"))


INSTALL_SCRIPT = r"""
import json, os, sys, time
sys.path.insert(0, "/root/install")
import remote as d   # device/deploy/remote.py: the very code a deploy runs on the Pi
rel = "/root/install"
d.log = d.Log(os.path.join(rel, "install.log"))
t0 = time.monotonic()
d.build_venv(rel, {"wheel": sys.argv[1]}, {"python": "python3", "install": {}})
print(json.dumps({"seconds": time.monotonic() - t0}))
"""


_INSTALLED: dict[str, dict] = {}


@pytest.fixture(scope="session")
def installed(box, device_wheel) -> dict:
    """The device wheel installed inside the box the way deploy does it (device/deploy/remote.py build_venv:
    a --system-site-packages venv, pip from the box's offline index): {'python', 'seconds', 'log'}.
    Once per suite and session, like the box."""
    if box.suite not in _INSTALLED:
        _INSTALLED[box.suite] = _install(box, device_wheel)
    return _INSTALLED[box.suite]


def _install(box: Pibox, device_wheel: Path) -> dict:
    rel = box.path("/root/install")
    (rel / "wheels").mkdir(parents=True)
    shutil.copy2(device_wheel, rel / "wheels" / device_wheel.name)
    shutil.copy2(ROOT / "device" / "deploy" / "remote.py", rel / "remote.py")
    (rel / "install.py").write_text(INSTALL_SCRIPT)
    p = box.run(["python3", "/root/install/install.py", f"wheels/{device_wheel.name}"], timeout=3600, check=False)
    log = (rel / "install.log").read_text() if (rel / "install.log").exists() else ""
    assert p.returncode == 0, f"install in {box.suite} failed:\n{log}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    secs = json.loads(p.stdout.strip().splitlines()[-1])["seconds"]
    record(f"{box.suite}: venv + pip install of {device_wheel.name} under emulation: {secs:.0f} s")
    return {"python": "/root/install/venv/bin/python", "seconds": secs, "log": log}


# ------------------------------------------------------------------------ the demo's model and video

DEMO_ARGS = ["--frames-per-image", "1", "--bench-seconds", "0.5"]


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> dict:
    """`make demo` on x86 as a user runs it (sample data, MobileNetV2 alpha 1.0 96x96 trained from
    scratch, int8 conversion through the gate), but one video frame per unseen-person image and a
    short bench: its run dir (export/int8, splits.csv), video, daemon config and JSONL. An
    untrained model would make parity trivial (one output for every input), so it is trained fully."""
    t0 = time.monotonic()
    reuse = os.environ.get("FACEEDGE_PI_DEMO_RUN")  # a run of `make demo ARGS="--frames-per-image 1"`
    if reuse:
        run = Path(reuse).resolve()
        if not (run / "demo" / "results.jsonl").is_file():
            pytest.fail(f"FACEEDGE_PI_DEMO_RUN={reuse}: not a run dir `make demo` finished")
    else:
        tmp = tmp_path_factory.mktemp("demo")
        runs = tmp / "runs"
        args = shlex.join([*DEMO_ARGS, "--set", f"run.runs_dir={runs}"])
        p = subprocess.run(
            ["make", "--no-print-directory", "demo", f"DATA={tmp / 'data'}", f"ARGS={args}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        (run,) = [d for d in runs.iterdir() if d.is_dir() and not d.is_symlink()]
    manifest = json.loads((run / "export" / "int8" / "manifest.json").read_text())
    record(
        f"demo (x86): {run.name}{' (reused)' if reuse else ''}, int8 {manifest['input_height']}x{manifest['input_width']} "
        f"sha {manifest['sha256'][:12]}, made in {time.monotonic() - t0:.0f} s"
    )
    return {
        "run": run,
        "model": run / "export" / "int8",
        "video": run / "demo" / "unseen_persons.avi",
        "config": run / "demo" / "device.yaml",
        "jsonl": run / "demo" / "results.jsonl",
        "manifest": manifest,
    }
