"""The imx500 environment, seen from the host: where its Python is, and running the child in it.

Sony's tools live in their own virtual environment (`make setup-imx500` → ``.venv-imx500``; pins in
convert/imx500/requirements.txt): they need TensorFlow 2.15 / tf.keras 2, numpy < 2 and Python < 3.12,
the project runs TensorFlow 2.16+ with Keras 3 and numpy 2. The conversion runs there as a child
process (`convert/imx500/child.py`), isolated (`python -I`: no PYTHONPATH, no user site), and talks
to this side only through the files of its job directory.

``FACEEDGE_IMX500_PYTHON`` names another interpreter of such an environment.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

from convert.sideenv import child_env, child_error, interpreter
from device.errors import FaceedgeError

log = logging.getLogger(__name__)

ENV_VAR = "FACEEDGE_IMX500_PYTHON"
DEFAULT_VENV = ".venv-imx500"
CHILD = Path(__file__).with_name("child.py")
# MobileNetV2 224 takes minutes on 2 busy cores (quantization and the converter's backend): be generous.
TIMEOUT_S = 3600.0


def python_path() -> Path:
    """The imx500 environment's interpreter; FaceedgeError saying how to make it when it is missing."""
    p, where = interpreter(ENV_VAR, DEFAULT_VENV)
    if not p.exists():
        raise FaceedgeError(
            f"{where}: the imx500 variant needs its own environment (Sony's MCT and converter, "
            f"TensorFlow 2.15): run `make setup-imx500`"
        )
    return p


def run_child(job_dir: Path, timeout_s: float = TIMEOUT_S) -> dict:
    """Run child.py on `job_dir`; returns its result.json. Errors are one line (the child's own)."""
    py = python_path()
    cmd = [str(py), "-I", str(CHILD), str(job_dir)]
    env = child_env(TF_CPP_MIN_LOG_LEVEL="3")
    log.info("imx500: running the conversion in %s (child process)", py.parent.parent)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=job_dir)
    except subprocess.TimeoutExpired:
        raise FaceedgeError(f"imx500: the conversion did not finish within {timeout_s:g} s") from None
    for line in proc.stderr.splitlines():
        if line.startswith("imx500: "):
            log.info("%s", line)
    if proc.returncode != 0:
        last = child_error(proc.stderr, proc.returncode)
        if proc.returncode < 0:
            last = f"crashed (signal {-proc.returncode}); last line: {last}"
        raise FaceedgeError(f"imx500: {last}")
    try:
        return json.loads((job_dir / "result.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FaceedgeError(f"imx500: the conversion wrote no readable result.json ({e})") from None
