"""`make demo` end to end, with smaller settings (README promise: one command, the whole chain), then
resumed from a later stage, and the video stage through its own Make target.

Real stage CLIs in child processes: sample data generator, training, conversion (with its gate),
an MJPG video, the device daemon on it, the benchmark. Small but learning: 8 persons x 40 images,
the compact ConvNet at 64 px for 40 epochs (unseen persons 0.94 measured on two data seeds; the
floor needs better than chance), so the gate and the floor pass for a reason, not by being off.
"""

from __future__ import annotations

import csv
import json
import shlex
import subprocess
from pathlib import Path

import pytest

from device.errors import FaceedgeError

ROOT = Path(__file__).resolve().parents[1]


def make(*argv: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["make", *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_make_demo_small_then_resumed(tmp_path):
    data, runs = tmp_path / "data", tmp_path / "runs"
    args = shlex.join(
        [
            "--data-args",
            "--persons 8 --images-per-person 40 --size 96",
            "--set",
            "model.input_size=64",
            "--set",
            "training.epochs=40",
            "--set",
            "training.patience=0",
            "--set",
            f"run.runs_dir={runs}",
            "--frames-per-image",
            "2",
            "--bench-seconds",
            "0.5",
        ]
    )
    proc = make("demo", f"DATA={data}", "CONFIG=configs/sample-cnn.yaml", f"ARGS={args}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for n, stage in enumerate(["data", "train", "convert", "video", "device", "bench"], start=1):
        assert f"==> [{n}/6] {stage}" in out
    for target in ("make data", "make train", "make convert", "make video", "make run-device", "make bench"):
        assert f"(re-run alone: {target} " in out

    (run_dir,) = [p for p in runs.iterdir() if p.is_dir() and not p.is_symlink()]
    summary = json.loads((run_dir / "demo" / "summary.json").read_text())
    conv = json.loads((run_dir / "convert.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert conv["gate"]["passed"] and summary["gate"]["passed"] and metrics["verdict"]["learned"]
    assert summary["int8_size_ratio"] == conv["variants"]["int8"]["size_ratio_to_float32"]
    # every accuracy carries its n and interval, and is the stage's own figure
    for split, q in summary["int8"].items():
        c = conv["variants"]["int8"]["splits"][split]
        assert (q["n"], q["correct"], q["accuracy"], q["accuracy_ci95"]) == (
            c["n"],
            c["correct"],
            c["accuracy"],
            c["accuracy_ci95"],
        )
        assert q["accuracy_ci95"][0] <= q["accuracy"] <= q["accuracy_ci95"][1]
    k = summary["keras"]["unseen_persons"]
    assert (k["n"], k["accuracy"], k["persons"]) == (
        metrics["unseen_persons"]["count"],
        metrics["unseen_persons"]["accuracy"],
        2,
    )
    for key in ("report", "models", "convert", "daemon_results", "video", "bench"):
        assert Path(summary["paths"][key]).exists(), key

    # the daemon classified every frame of the video, and its per-frame labels are scored against the truth
    truth = list(csv.DictReader(open(run_dir / "demo" / "unseen_persons.csv")))
    results = [json.loads(ln) for ln in (run_dir / "demo" / "results.jsonl").read_text().splitlines()]
    unseen = [r for r in csv.DictReader(open(run_dir / "splits.csv")) if r["split"] == "unseen_persons"]
    assert len(truth) == 2 * len(unseen) > 0
    d = summary["daemon_on_video"]
    assert len(results) == len(truth) == d["results"] and d["images"] == len(unseen)
    labels = {t["frame"]: t["label"] for t in truth}
    acc = sum(r["label"] == labels[str(r["frame_id"])] for r in results) / len(results)
    assert acc == pytest.approx(d["accuracy"])
    assert summary["bench_pipeline"]["fps"] > 0
    assert "unseen-person accuracy" in out and "pipeline fps" in out and str(run_dir / "report.md") in out
    assert f"of {len(unseen)} images of unseen persons (2 persons)" in out

    # resumable: the video stage alone (its own target), then the demo from the device stage on
    (run_dir / "demo" / "unseen_persons.avi").unlink()
    proc = make("video", f"RUN={run_dir}", "ARGS=--frames-per-image 1")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "==> [4/6] video" in proc.stdout and "==> [5/6]" not in proc.stdout
    assert (run_dir / "demo" / "unseen_persons.avi").is_file()
    assert len(list(csv.DictReader(open(run_dir / "demo" / "unseen_persons.csv")))) == len(unseen)
    proc = make("demo", "FROM=device", f"RUN={run_dir}", "ARGS=--bench-seconds 0.5")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "==> [5/6] device" in proc.stdout and "==> [6/6] bench" in proc.stdout
    assert "==> [3/6]" not in proc.stdout and "==> [1/6]" not in proc.stdout and "(from device)" in proc.stdout
    again = json.loads((run_dir / "demo" / "summary.json").read_text())
    assert again["int8"] == summary["int8"] and again["keras"] == summary["keras"]  # read back, not recomputed
    assert again["daemon_on_video"]["results"] == len(unseen)  # one frame per image now

    # a stage that cannot run says what to run first, in one line
    (run_dir / "demo" / "unseen_persons.avi").unlink()
    proc = make("demo", "FROM=device", f"RUN={run_dir}")
    assert proc.returncode == 2
    assert (
        f"error: {run_dir / 'demo' / 'unseen_persons.avi'}: no video (run the video stage first: make video "
        f"RUN={run_dir})" in proc.stderr
    )
    proc = make("demo", "FROM=convert", f"RUN={tmp_path / 'nowhere'}")
    assert proc.returncode == 2 and "run directory not found" in proc.stderr


def test_a_failed_stage_says_how_to_resume_there():
    import sys

    from convert import demo

    args = demo.build_parser().parse_args(["--seed", "3", "--set", "training.epochs=5"])
    assert demo.resume_command(args, "train", None) == "make demo FROM=train SEED=3 ARGS='--set training.epochs=5'"
    resume = demo.resume_command(args, "convert", Path("/x/runs/s-1"))
    assert resume == "make demo FROM=convert RUN=/x/runs/s-1 SEED=3 ARGS='--set training.epochs=5'"
    with pytest.raises(demo.StageFailed) as e:
        demo.run_stage(
            3,
            6,
            "convert",
            [sys.executable, "-c", "import sys; print('gate says no'); sys.exit(1)"],
            "make convert RUN=/x/runs/s-1",
            resume=resume,
        )
    assert str(e.value) == (
        "stage convert failed (exit 1); resume the demo there with: "
        + resume
        + " (or re-run the stage alone: make convert RUN=/x/runs/s-1)"
    )
    assert e.value.exit_code == 1
    with pytest.raises(FaceedgeError, match="--from video comes after --to convert"):
        demo.run(demo.build_parser().parse_args(["--from", "video", "--to", "convert"]))
