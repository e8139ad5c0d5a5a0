"""The device stage never imports TensorFlow, Keras, `train` or `convert` (it runs on a Pi without them)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("tensorflow", "keras", "train", "convert", "tf_keras", "tflite_model_maker")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def test_no_file_under_device_imports_them():
    bad = []
    for path in sorted((ROOT / "device").rglob("*.py")):
        for line, name in _imports(path):
            top = name.split(".")[0]
            # tensorflow.lite is the runtime's last-resort fallback (desktop only), loaded by name
            if top in FORBIDDEN and not (path.name == "runtime.py" and name == "tensorflow.lite"):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert bad == []


def test_running_the_daemon_never_imports_them(tiny_models, tmp_path):
    dump = tmp_path / "modules.txt"
    cfg = tmp_path / "device.yaml"
    cfg.write_text(
        "source: {type: synthetic, width: 160, height: 120, fps: 0, frames: 20}\n"
        "crop: {mode: face, on_no_face: full}\noutputs: {jsonl: {path: '-'}, http: {port: 0}}\n"
    )
    env = dict(os.environ, FACEEDGE_DUMP_MODULES=str(dump), PYTHONPATH=str(ROOT))
    r = subprocess.run(
        [sys.executable, "-m", "device", "run", "--config", str(cfg), "--model-dir", str(tiny_models["int8"])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 20  # every frame classified (no face: the full frame)
    modules = dump.read_text().split()
    assert "device.daemon" in modules and "ai_edge_litert.interpreter" in modules and "cv2" in modules
    assert [m for m in modules if m.split(".")[0] in FORBIDDEN] == []
    # the daemon's footprint: no pydantic (msgspec validates), no psutil, and none of the other
    # subcommands' modules (the CLI imports only the command it runs)
    heavy = ("pydantic", "psutil", "device.bench", "device.deploy", "device.collect", "device.pull")
    assert [m for m in modules if m.startswith(heavy)] == []
