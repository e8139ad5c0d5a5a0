"""deploy keeps the OS's numpy in a release venv (device/deploy/remote.py numpy_constraint,
system_numpy): the unit side. The emulated Bookworm/Trixie show the effect (tests/pibox)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from device.deploy import remote


def test_numpy_constraint_keeps_the_major():
    assert remote.numpy_constraint("1.24.2") == "numpy>=1.24.2,<2"  # Bookworm's python3-numpy
    assert remote.numpy_constraint("2.2.4") == "numpy>=2.2.4,<3"  # Trixie's


def test_system_numpy_is_what_that_python_sees(tmp_path):
    assert remote.system_numpy(sys.executable) == np.__version__
    bare = tmp_path / "bare"  # a venv without system site-packages sees no numpy
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    assert remote.system_numpy(str(bare / "bin" / "python")) is None
