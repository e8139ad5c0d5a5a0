"""training.deterministic (the default): the same config, data and seed give the same history.csv and
metrics.json on one machine, also when the second run has CPU hogs beside it. Two real `train fit`
processes (fresh TensorFlow each), the compact ConvNet (BatchNorm included) trained from scratch with
the log's augmentation, so the augmentation's random draws, the shuffle and the initialisation are
all covered. Only the wall time columns may differ."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("tensorflow")
from train.sample_data import generate

ROOT = Path(__file__).resolve().parents[1]
TIME_COLUMNS = ("seconds", "train_seconds", "images_per_s")
HOG = "import time\nend = time.monotonic() + 600\nwhile time.monotonic() < end: pass\n"


def train(cfg: Path, name: str) -> Path:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-m", "train", "fit", "--config", str(cfg), "--set", f"run.name={name}", "--allow-weak"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("run: ")]
    return Path(line[5:].strip())


def figures(run: Path) -> tuple[list[dict], dict]:
    hist = [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in csv.DictReader(open(run / "history.csv"))]
    m = json.loads((run / "metrics.json").read_text())
    m.pop("timing")
    return hist, m


@pytest.mark.slow
@pytest.mark.timeout(1200)  # two trainings, the second with a busy CPU beside it
def test_same_config_data_and_seed_give_the_same_figures_under_load(tmp_path):
    data = tmp_path / "faces"
    generate(data, seed=5, persons=4, images_per_person=12, size=48)
    cfg = tmp_path / "det.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {"root": str(data), "holdout_persons": 1},
                "model": {
                    "backbone": "simple_cnn",
                    "alpha": 0.25,
                    "input_size": 32,
                    "weights": "none",
                    "freeze_backbone": False,
                },
                "augment": {"enabled": True},  # every one of the log's six: random draws in the input pipeline
                "training": {"epochs": 3, "batch_size": 8, "patience": 2, "verbose": 0, "seed": 7},
                "run": {"runs_dir": str(tmp_path / "runs")},
            }
        )
    )
    quiet = train(cfg, "quiet")
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(max(2, os.cpu_count() or 1))]
    try:
        loaded = train(cfg, "loaded")
        assert all(h.poll() is None for h in hogs)  # they ran beside the whole second run
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    hq, mq = figures(quiet)
    hl, ml = figures(loaded)
    assert len(hq) == 3 and hq == hl  # every loss and accuracy of every epoch, as written
    assert mq == ml  # every figure: losses to the last digit, confusion matrices, intervals, verdict
    rec = mq["reproducibility"]
    assert rec["deterministic"] is True and rec["seed"] == 7
    assert rec["intra_op_threads"] >= 1 and rec["cpus_available"] >= 1 and rec["tensorflow"]
    assert "deterministic (seed 7, TensorFlow op determinism on)" in (quiet / "report.md").read_text()
