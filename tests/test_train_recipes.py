"""The README's training recipes learn on more than the sample data: each is run, exactly as the
README gives it, on a second generated dataset with other persons (12, not 10), another seed and
another image size, and must end with exit status 0 (the floor: better than chance on the unseen
persons and at least gate.min_balanced_accuracy) and a clear margin above chance on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {  # docs/training.md: the sample config and the compact alternative
    "mobilenet_v2": "configs/sample.yaml",
    "simple_cnn": "configs/sample-cnn.yaml",
}
MIN_UNSEEN_BALANCED = 0.8  # measured 0.95-1.00 on this data (docs/training.md); chance is 0.5


@pytest.fixture(scope="module")
def other_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("recipes") / "faces"
    proc = subprocess.run(
        [sys.executable, "-m", "train", "data", "--out", str(out), "--seed", "7", "--persons", "12", "--size", "112"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.mark.slow
@pytest.mark.timeout(1800)  # MobileNetV2, 60 epochs from scratch: ~3 min on 2 idle cores, ~9 at load 12
@pytest.mark.parametrize("backbone", sorted(RECIPES))
def test_readme_recipe_learns_on_other_data(backbone, other_data, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "train",
            "fit",
            "--config",
            RECIPES[backbone],
            "--set",
            f"data.root={other_data}",
            "--set",
            "training.verbose=0",
            "--set",
            f"run.runs_dir={tmp_path / 'runs'}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("run: ")]
    m = json.loads((Path(line[5:].strip()) / "metrics.json").read_text())
    assert m["verdict"]["learned"] and m["verdict"]["split"] == "unseen_persons"
    assert m["persons"]["unseen_persons"] == 3 and m["unseen_persons"]["count"] == 120
    assert m["unseen_persons"]["balanced_accuracy"] >= MIN_UNSEEN_BALANCED, m["unseen_persons"]
