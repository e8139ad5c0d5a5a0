"""The device wheel a release installs: the `device` package alone, built offline from this checkout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from device import __version__
from device.errors import FaceedgeError

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # device/
PROJECT_ROOT = PACKAGE_DIR.parent
WHEEL_NAME = "faceedge-device"
# What may be in the device wheel: the device package only (a test checks the built wheel too).
FORBIDDEN_IN_WHEEL = ("train/", "convert/", "tests/")


def device_requirements(pyproject: Path = PROJECT_ROOT / "pyproject.toml") -> list[str]:
    """The base dependencies plus the `device` extra, read from the project's pyproject.toml."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise FaceedgeError("building the device wheel needs Python >= 3.11 here (or pip install tomli)") from None

    try:
        data = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise FaceedgeError(f"{pyproject}: cannot read the device dependencies ({e})") from None
    proj = data.get("project", {})
    return list(proj.get("dependencies", [])) + list(proj.get("optional-dependencies", {}).get("device", []))


def build_device_wheel(out_dir: Path, *, python: str = sys.executable) -> Path:
    """A wheel of the `device` package alone, built from a generated minimal pyproject in a temp dir.

    `pip wheel --no-deps --no-build-isolation`: nothing is downloaded (setuptools comes from the
    venv). The result is checked to hold no `train/` or `convert/` file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    reqs = device_requirements()
    with tempfile.TemporaryDirectory(prefix="faceedge-wheel-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(
            PACKAGE_DIR, src / "device", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*")
        )
        (src / "pyproject.toml").write_text(
            "[build-system]\n"
            'requires = ["setuptools>=61", "wheel"]\n'
            'build-backend = "setuptools.build_meta"\n\n'
            "[project]\n"
            f'name = "{WHEEL_NAME}"\n'
            f'version = "{__version__}"\n'
            'description = "faceedge device daemon (no TensorFlow)"\n'
            'requires-python = ">=3.10"\n'
            f"dependencies = {json.dumps(reqs)}\n\n"
            "[project.scripts]\n"
            'faceedge-device = "device.cli:main"\n\n'
            "[tool.setuptools.packages.find]\n"
            'include = ["device*"]\n\n'
            "[tool.setuptools.package-data]\n"
            'device = ["*.service", "*.yaml", "assets/*"]\n'
        )
        argv = [
            python,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(Path(tmp) / "dist"),
            str(src),
        ]
        p = subprocess.run(argv, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise FaceedgeError(f"building the device wheel failed: {(p.stderr or p.stdout).strip()[-800:]}")
        wheels = sorted((Path(tmp) / "dist").glob("*.whl"))
        if len(wheels) != 1:
            raise FaceedgeError(f"building the device wheel gave {len(wheels)} wheels")
        check_wheel(wheels[0])
        dest = out_dir / wheels[0].name
        shutil.copy2(wheels[0], dest)
    return dest


def wheel_files(wheel: Path) -> list[str]:
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


def check_wheel(wheel: Path) -> None:
    names = wheel_files(wheel)
    bad = [n for n in names if n.startswith(FORBIDDEN_IN_WHEEL)]
    if bad:
        raise FaceedgeError(f"{wheel.name}: holds files outside the device package: {bad[:5]}")
    if "device/runtime.py" not in names or "device/deploy/remote.py" not in names:
        raise FaceedgeError(f"{wheel.name}: the device package is incomplete")
