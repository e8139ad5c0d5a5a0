"""install: the device wheel that deploy builds goes into a --system-site-packages venv on the
emulated Pi (bookworm, trixie) without TensorFlow, and `device check` passes there; and
Bookworm's numpy: an apt C extension built against the OS's numpy still imports from that venv,
where a venv with its own numpy 2 breaks it."""

from __future__ import annotations

import json

import pytest

from tests.pibox.helpers import APT_EXTENSION, record

pytestmark = [pytest.mark.pi, pytest.mark.slow, pytest.mark.timeout(3600)]

VENV_FACTS = r"""
import importlib.util, json, sys
import numpy, cv2, device
print(json.dumps({
    "numpy": numpy.__version__, "numpy_file": numpy.__file__, "opencv": cv2.__version__,
    "device_file": device.__file__, "tensorflow": importlib.util.find_spec("tensorflow") is not None,
    "train": importlib.util.find_spec("train") is not None, "prefix": sys.prefix,
}))
"""


def test_install(box, cpu, installed, demo):
    """The venv deploy builds: the wheel's device package, the OS's numpy, no TensorFlow; `device
    check` on the demo's int8 model passes on this CPU model."""
    b = box.with_cpu(cpu)
    facts = json.loads(b.python(VENV_FACTS, python=installed["python"]).stdout.strip().splitlines()[-1])
    os_numpy = json.loads(b.python("import json, numpy; print(json.dumps([numpy.__version__, numpy.__file__]))").stdout)
    assert facts["device_file"].startswith("/root/install/venv/"), facts
    assert not facts["tensorflow"] and not facts["train"], facts
    # the venv kept the OS's numpy (deploy's constraint), it did not get one of its own
    assert [facts["numpy"], facts["numpy_file"]] == os_numpy, (facts, os_numpy)
    assert facts["numpy_file"].startswith("/usr/lib/python3/dist-packages/"), facts
    assert "system numpy" in installed["log"], installed["log"]
    model = box.path("/root/model")
    if not model.exists():
        import shutil

        shutil.copytree(demo["model"], model)
    p = b.run(
        [installed["python"], "-m", "device", "check", "--model-dir", "/root/model", "--json"], timeout=900, check=False
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert report["runtime"] == "ai-edge-litert", report
    assert report["label"] in demo["manifest"]["labels"], report
    record(
        f"{box.suite}/{cpu}: installed numpy {facts['numpy']} (OS), OpenCV {facts['opencv']}; device check: "
        f"{report['label']} {report['score']:.3f}, {report['mean_inference_ms']:.0f} ms/inference emulated"
    )


def test_apt_numpy_extension(box, installed):
    """The OS's numpy C-API extension imports from the deployed-style venv."""
    p = box.python(APT_EXTENSION, python=installed["python"], check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    ext_file, version, numpy_file = p.stdout.split()
    assert ext_file.startswith("/usr/lib/python3/dist-packages/pywt/"), ext_file
    assert numpy_file.startswith("/usr/lib/python3/dist-packages/numpy/"), numpy_file
    record(f"{box.suite}: apt's pywt (numpy C API) imports in the venv with numpy {version}")


def test_numpy_shadowing_breaks_apt_extension(box, installed, device_wheel):
    """The failure the dependency choice avoids: a venv that pip lets have its own numpy 2 (the
    device requirements without deploy's constraint) shadows Bookworm's numpy 1.24, and the apt
    extension compiled against 1.24 no longer imports."""
    if box.suite != "bookworm":
        pytest.skip(f"{box.suite}'s own numpy is 2.x: a numpy 2 in the venv shadows nothing of another ABI")
    box.run(["python3", "-m", "venv", "--system-site-packages", "/root/plain"], timeout=900)
    p = box.run(
        [
            "/root/plain/bin/python",
            "-m",
            "pip",
            "install",
            "--no-input",
            "-q",
            f"/root/install/wheels/{device_wheel.name}",
        ],
        timeout=3600,
        check=False,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    v = box.python("import numpy; print(numpy.__version__, numpy.__file__)", python="/root/plain/bin/python")
    version, where = v.stdout.split()
    assert version.startswith("2.") and where.startswith("/root/plain/"), v.stdout
    p = box.python(APT_EXTENSION, python="/root/plain/bin/python", check=False)
    assert p.returncode != 0
    err = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
    assert "numpy.dtype size changed" in p.stderr, p.stderr[-1500:]
    record(f"{box.suite}: without the constraint the venv gets numpy {version}; apt's pywt then fails: {err}")
