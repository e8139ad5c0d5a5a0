"""Shared fixtures (plain helpers: tests/helpers/). TensorFlow is imported lazily, only by fixtures that
build models."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.helpers.models import TINY_MODEL_DIR, TINY_MODEL_VARIANTS, build_tiny_keras_model, convert_tiny

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """{'int8': dir, 'float32': dir}: the checked-in 32x32 tiny classifier (tests/fixtures/tiny_model/),
    copied so that no test changes the fixture. No TensorFlow: what the device tests load."""
    out = tmp_path_factory.mktemp("tiny_models")
    return {variant: Path(shutil.copytree(TINY_MODEL_DIR / variant, out / variant)) for variant in TINY_MODEL_VARIANTS}


@pytest.fixture(scope="session")
def tiny_keras(tmp_path_factory) -> dict[str, Path]:
    """{'keras': path to .keras, 'int8': dir}: the tiny classifier built and converted here with
    TensorFlow, for the tests that compare a model with its own conversion or change the model."""
    out = tmp_path_factory.mktemp("tiny_keras")
    model, xs = build_tiny_keras_model()
    model.save(out / "model.keras")
    return {"keras": out / "model.keras", "int8": convert_tiny(model, xs, out, "int8")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The device wheel (`device.deploy.wheel.build_device_wheel`), built once per test module."""
    from device.deploy.wheel import build_device_wheel

    return build_device_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def picam(monkeypatch):
    """The fake picamera2 (tests/fakes/picamera2.py) installed as `picamera2`, fresh; yields its STATE."""
    from tests.fakes import picamera2 as fake_picamera2

    fake_picamera2.STATE.reset()
    monkeypatch.setitem(sys.modules, "picamera2", fake_picamera2)
    yield fake_picamera2.STATE
    fake_picamera2.STATE.stalled.clear()


@pytest.fixture
def broker(tmp_path):
    """A real mosquitto on 127.0.0.1 (tests/helpers/mosquitto.py), killed after the test."""
    from tests.helpers.mosquitto import Mosquitto

    b = Mosquitto(tmp_path / "broker")
    b.start()
    yield b
    b.kill()


@pytest.fixture
def served():
    """A factory of started HTTP outputs on an ephemeral loopback port: served(telemetry=None, *,
    expose_images=False, **HttpConfig fields); all closed after the test."""
    from device.outputs.http import HttpConfig, HttpOutput
    from device.telemetry import Telemetry

    started = []

    def make(telemetry: Telemetry | None = None, *, expose_images: bool = False, **cfg) -> HttpOutput:
        tel = telemetry or Telemetry()
        out = HttpOutput(HttpConfig(**{"port": 0, **cfg}), tel, expose_images=expose_images)
        out.start()
        started.append(out)
        return out

    yield make
    for out in started:
        out.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """List what was NOT tested in this run and why, one line per reason (a skip is easy to miss in
    the `-ra` lines). Tools `make setup` installs never skip under CI: they fail (tests/helpers/tools.py)."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    by_reason: dict[str, list[str]] = {}
    for rep in skipped:
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        by_reason.setdefault(reason.removeprefix("Skipped: "), []).append(rep.nodeid)
    terminalreporter.write_sep("=", f"{len(skipped)} skipped: not tested here")
    for reason, ids in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        shown = ", ".join(ids[:3]) + (f", ... ({len(ids) - 3} more)" if len(ids) > 3 else "")
        terminalreporter.write_line(f"{len(ids):3d} x {reason}: {shown}")
