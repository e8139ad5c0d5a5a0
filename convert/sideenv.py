"""What the two side environments (`.venv-imx500`, `.venv-mediapipe`) share, seen from the host:
where an environment's interpreter is, the environment its child runs with, and the one line a
failed child leaves as its error. Each child runs isolated (`python -I`) and talks through files."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def interpreter(env_var: str, default_venv: str) -> tuple[Path, str]:
    """The interpreter `env_var` names, else `<project>/<default_venv>/bin/python` (it may not exist),
    and how to name that choice in an error (``VAR=value`` or the path)."""
    given = os.environ.get(env_var)
    if given:
        return Path(given).expanduser(), f"{env_var}={given}"
    path = PROJECT_ROOT / default_venv / "bin" / "python"
    return path, str(path)


def child_env(**defaults: str) -> dict[str, str]:
    """This process's environment without PYTHON* variables (the child is another Python), plus
    `defaults` where they are not set (e.g. quieter TensorFlow logging)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    for key, value in defaults.items():
        env.setdefault(key, value)
    return env


def child_error(stderr: str, returncode: int) -> str:
    """The line a failed child's stderr says most about: its last ``error: `` line, else its last line."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith("error: ")]
    return (errs or lines or [f"exit status {returncode}"])[-1].removeprefix("error: ")
