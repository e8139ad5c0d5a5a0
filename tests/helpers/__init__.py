"""Plain helpers shared by the tests: constants, builders and real servers the tests start.

Fixtures stay in conftest.py; everything a test module imports comes from here, never from another
test module or from conftest.py:

- `models`: the tiny TensorFlow-built classifier and its conversion (train/convert tests)
- `tiny_run`: a training run's directory as train writes it, for the convert tests
- `imx500`: an IMX500 model directory the fake sensor can run
- `video`: small test videos
- `deploy`: the deploy tests' run directory, service unit and supervisor
- `sshd`, `mosquitto`, `chromium`: real servers and a headless browser on 127.0.0.1
- `tools`: a tool `make setup` installs is required under CI (a failure, not a skip)
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
