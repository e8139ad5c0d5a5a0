"""`make demo` end to end, with smaller settings (README promise: one command, the whole chain).

Real stage CLIs in child processes: sample data generator, training, conversion (with its gate),
an MJPG video, the device daemon on it, the benchmark. Small: 4 persons x 12 images, 1 epoch,
32x32 input; the figures are only checked for consistency, a 1-epoch model is not expected to be good.
"""

from __future__ import annotations

import csv
import json
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_make_demo_small(tmp_path):
    data, runs = tmp_path / "data", tmp_path / "runs"
    args = shlex.join([
        "--data_args", "--persons 4 --images_per_person 12 --size 48",
        "--set", "training.epochs=1", "--set", f"run.runs_dir={runs}", "--set", "model.input_size=32",
        "--frames_per_image", "2", "--bench_seconds", "0.5",
    ])
    proc = subprocess.run(["make", "demo", f"DATA={data}", f"ARGS={args}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=480)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for n, stage in enumerate(["data", "train", "convert", "video", "device", "bench"], start=1):
        assert f"==> [{n}/6] {stage}" in out
    for target in ("make data", "make train", "make convert", "make run-device", "make bench"):
        assert f"(re-run alone: {target} " in out

    (run_dir,) = [p for p in runs.iterdir() if p.is_dir() and not p.is_symlink()]
    summary = json.loads((run_dir / "demo" / "summary.json").read_text())
    conv = json.loads((run_dir / "convert.json").read_text())
    assert conv["gate"]["passed"]
    assert summary["int8_size_ratio"] == conv["variants"]["int8"]["size_ratio_to_float32"]
    assert summary["int8_accuracy"]["unseen_persons"] == conv["variants"]["int8"]["splits"]["unseen_persons"]["accuracy"]
    for key in ("report", "models", "convert", "daemon_results", "video", "bench"):
        assert Path(summary["paths"][key]).exists(), key

    # the daemon classified every frame of the video, and its per-frame labels are scored against the truth
    truth = list(csv.DictReader(open(run_dir / "demo" / "unseen_persons.csv")))
    results = [json.loads(ln) for ln in (run_dir / "demo" / "results.jsonl").read_text().splitlines()]
    unseen = [r for r in csv.DictReader(open(run_dir / "splits.csv")) if r["split"] == "unseen_persons"]
    assert len(truth) == 2 * len(unseen) > 0
    assert len(results) == len(truth) == summary["daemon_on_video"]["results"]
    labels = {t["frame"]: t["label"] for t in truth}
    acc = sum(r["label"] == labels[str(r["frame_id"])] for r in results) / len(results)
    assert acc == pytest.approx(summary["daemon_on_video"]["accuracy"])
    assert summary["bench_pipeline"]["fps"] > 0
    assert "unseen-person accuracy" in out and "pipeline fps" in out and str(run_dir / "report.md") in out
