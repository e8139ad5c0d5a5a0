"""The MediaPipe environment, seen from the host: where its Python is, and running child.py in it.

MediaPipe lives in a virtual environment of its own (`make setup-mediapipe`, which `make setup`
runs → ``.venv-mediapipe``; pin in convert/mediapipe/requirements.txt): installing it into the
project's venv would replace the project's cv2 (opencv-python-headless 4.x, which has
CascadeClassifier) with opencv-contrib-python, and it pins numpy < 2. The child runs isolated
(`python -I`) and talks to this side only through files.

``FACEEDGE_MEDIAPIPE_PYTHON`` names another interpreter of such an environment.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path

from convert.sideenv import PROJECT_ROOT, child_env, child_error, interpreter
from device.errors import FaceedgeError

log = logging.getLogger(__name__)

ENV_VAR = "FACEEDGE_MEDIAPIPE_PYTHON"
DEFAULT_VENV = ".venv-mediapipe"
CHILD = Path(__file__).with_name("child.py")
TIMEOUT_S = 300.0


def python_path() -> Path | None:
    """The MediaPipe environment's interpreter, or None when there is none."""
    p, _ = interpreter(ENV_VAR, DEFAULT_VENV)
    return p if p.exists() else None


def missing_note() -> str:
    given = os.environ.get(ENV_VAR)
    where = f"{ENV_VAR}={given}" if given else str(PROJECT_ROOT / DEFAULT_VENV)
    return f"{where} not found: run `make setup-mediapipe` for TFLite metadata (MediaPipe's writer)"


def run_child(job: dict, timeout_s: float = TIMEOUT_S) -> None:
    """Run child.py on `job` in the environment; FaceedgeError with the child's one-line error."""
    py = python_path()
    if py is None:
        raise FaceedgeError(missing_note())
    env = child_env(GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="3")
    with tempfile.TemporaryDirectory(prefix="faceedge-mediapipe-") as tmp:
        job_file = Path(tmp) / "job.json"
        job_file.write_text(json.dumps(job))
        try:
            proc = subprocess.run(
                [str(py), "-I", str(CHILD), str(job_file)],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env=env,
                cwd=tmp,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise FaceedgeError(f"mediapipe: {job['command']} did not finish within {timeout_s:g} s") from None
    if proc.returncode != 0:
        last = child_error(proc.stderr, proc.returncode)
        raise FaceedgeError(f"mediapipe {job['command']}: {last}")
