"""End-to-end training runs on a tiny generated dataset: the run directory, its files and numbers,
the person-disjoint split, corrupt files, never-overwrite, bad input, the fast path, and resume
after SIGKILL."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from device.errors import FaceedgeError

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("tensorflow")
from train import cli, fit, phases, rundir  # noqa: E402
from train.sample_data import generate  # noqa: E402

TINY = {
    "model": {"backbone": "mobilenet_v2", "alpha": 0.35, "input_size": 32, "weights": "none"},
    "augment": {"enabled": False},
    "training": {"epochs": 2, "batch_size": 16, "verbose": 0},
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "faces"
    generate(root, seed=1, persons=4, images_per_person=10, size=40)
    return root


def config(tmp_path: Path, data_root: Path, name: str = "tiny", **sections) -> Path:
    cfg = {
        "data": {"root": str(data_root), "holdout_persons": 1},
        **{k: dict(v) for k, v in TINY.items()},
        "run": {"name": name, "runs_dir": str(tmp_path / "runs")},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture(scope="module")
def corrupt_dataset(dataset, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corrupt") / "faces"
    shutil.copytree(dataset, root)
    person = sorted((root / "open").iterdir())[0]
    (person / "zero.jpg").write_bytes(b"")
    good = sorted(person.glob("*.jpg"))[1].read_bytes()
    (person / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (person / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def run_dir(corrupt_dataset, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    cfg = config(
        tmp, corrupt_dataset, data={"root": str(corrupt_dataset), "holdout_persons": 1, "max_bad_fraction": 0.2}
    )
    return fit.run(cfg, allow_weak=True)  # 2 epochs: the structure is tested here, not learning


@pytest.mark.slow
def test_run_directory_contents(run_dir):
    for name in (
        "config.yaml",
        "model.keras",
        "model_info.json",
        "splits.csv",
        "skipped.csv",
        "history.csv",
        "curves.png",
        "predictions_seen.png",
        "predictions_unseen.png",
        "metrics.json",
        "report.md",
    ):
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0, name
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    for leftover in ("backup", "cache", "features", "state.json"):
        assert not (run_dir / leftover).exists()
    assert not list(run_dir.glob("*.weights.h5"))
    assert not list(run_dir.parent.glob("*.incomplete"))
    latest = run_dir.parent / "latest"
    assert latest.is_symlink() and latest.resolve() == run_dir.resolve()
    assert run_dir.name.startswith("tiny-") and len(run_dir.name) == len("tiny-20260101-120000")
    umask = os.umask(0)
    os.umask(umask)
    assert (run_dir / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


@pytest.mark.slow
def test_model_info_and_metrics_schema(run_dir):
    info = json.loads((run_dir / "model_info.json").read_text())
    assert info == {
        "labels": ["closed", "open"],
        "positive_label": "open",
        "output_kind": "sigmoid",
        "threshold": 0.5,
        "input_size": [32, 32],
        "backbone": "mobilenet_v2",
        "alpha": 0.35,
        "preprocessing": "mobilenet_v2: x/127.5 - 1",
        "resize_method": "bilinear",
        "data_root": info["data_root"],
    }
    assert Path(info["data_root"]).is_absolute()
    m = json.loads((run_dir / "metrics.json").read_text())
    for split in ("valid", "seen_holdout", "unseen_persons"):
        s = m[split]
        assert s["count"] > 0
        for key in ("accuracy", "balanced_accuracy", "loss", "roc_auc"):
            assert key in s
        assert 0.0 <= s["accuracy"] <= 1.0
        assert np.asarray(s["confusion_matrix"]).shape == (2, 2)
        assert np.asarray(s["confusion_matrix"]).sum() == s["count"]
    assert m["unseen_persons"]["count"] == 10  # one whole person
    people = {(r["split"], r["person"]) for r in m["per_person"]}
    assert sum(1 for s, _ in people if s == "unseen_persons") == 1
    t = m["timing"]
    assert len(t["epoch_seconds"]) == 2 and t["first_epoch_seconds"] > 0 and t["images_per_s"] > 0
    assert m["trainable_params"] > 0 and m["epochs_run"] == 2 and m["fast_path"] is True
    assert "class_weights" in m and "class_weights_text" in m
    hist = list(csv.DictReader(open(run_dir / "history.csv")))
    assert [int(h["epoch"]) for h in hist] == [1, 2] and {h["phase"] for h in hist} == {"head"}
    report = (run_dir / "report.md").read_text()
    for heading in ("## Info", "## Result", "## Prediction", "## Knowledge"):
        assert heading in report
    assert "/255" in report and "[-1, 1]" in report  # the log's rescale mistake is called out


@pytest.mark.slow
def test_saved_model_takes_raw_pixels_and_matches_metrics(run_dir):
    import keras

    from train import pipeline

    model = keras.models.load_model(run_dir / "model.keras")
    rows = [r for r in csv.DictReader(open(run_dir / "splits.csv")) if r["split"] == "unseen_persons"]
    x = pipeline.load_images([r["path"] for r in rows], 32)
    p = model.predict(x, verbose=0).ravel()
    y = np.array([r["label"] == "open" for r in rows])
    acc = float(((p >= 0.5) == y).mean())
    m = json.loads((run_dir / "metrics.json").read_text())
    assert acc == pytest.approx(m["unseen_persons"]["accuracy"])


@pytest.mark.slow
def test_compare_prints_runs_side_by_side(run_dir):
    from train import compare

    text = compare.run([run_dir, run_dir.parent / "latest"])  # the same run twice is shown once
    lines = text.splitlines()
    assert run_dir.name in lines[0] and lines[0].count(run_dir.name) == 1
    row = {ln.split("  ")[0].strip(): ln.split()[-1] for ln in lines[1:]}
    m = json.loads((run_dir / "metrics.json").read_text())
    assert row["batch"] == "16" and row["augmentation"] == "off" and row["epochs run"] == "2"
    assert row["unseen-persons acc"] == f"{m['unseen_persons']['accuracy']:.3f}"
    assert json.loads(compare.run([run_dir], "json"))[0]["trainable_params"] == f"{m['trainable_params']:,}"
    with pytest.raises(FaceedgeError, match="no runs"):
        compare.run([])


@pytest.mark.slow
def test_split_is_person_disjoint_and_complete(run_dir, corrupt_dataset):
    rows = list(csv.DictReader(open(run_dir / "splits.csv")))
    assert set(rows[0]) == {"path", "label", "person", "split"}
    by = {}
    for r in rows:
        by.setdefault(r["split"], set()).add(r["person"])
        assert Path(r["path"]).is_absolute()
    assert by["unseen_persons"] and not (by["unseen_persons"] & (by["train"] | by["valid"] | by["seen_holdout"]))
    assert len(rows) == 40  # every good image, once
    assert len({r["path"] for r in rows}) == 40


@pytest.mark.slow
def test_corrupt_files_are_listed_in_skipped_csv(run_dir):
    rows = list(csv.DictReader(open(run_dir / "skipped.csv")))
    names = {Path(r["path"]).name: r["reason"] for r in rows}
    assert set(names) == {"zero.jpg", "truncated.jpg", "notes.txt"}
    assert names["zero.jpg"].startswith("zero-byte")
    assert names["truncated.jpg"].startswith(("truncated", "not-an-image"))
    splits = (run_dir / "splits.csv").read_text()
    assert "zero.jpg" not in splits and "truncated.jpg" not in splits


def _cli(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_bad_input_is_one_line_error_and_writes_nothing(tmp_path, dataset, capsys):
    runs = tmp_path / "runs"
    cases = []
    cases.append(("missing", config(tmp_path, tmp_path / "nowhere"), "does not exist"))
    (tmp_path / "empty").mkdir()
    cases.append(("empty", config(tmp_path, tmp_path / "empty", name="e"), "empty"))
    one = tmp_path / "one"
    shutil.copytree(dataset / "open", one / "open")
    cases.append(("single label", config(tmp_path, one, name="o"), "single label"))
    nolabel = tmp_path / "nolabel"
    shutil.copytree(dataset, nolabel)
    shutil.rmtree(nolabel / "closed")
    (nolabel / "closed").mkdir()
    cases.append(("label without images", config(tmp_path, nolabel, name="n"), "closed"))
    for what, cfg, text in cases:
        code, out, err = _cli(["fit", "--config", str(cfg)], capsys)
        assert code == 2, what
        assert err.startswith("error: ") and err.count("\n") == 1 and text in err, (what, err)
        assert not runs.exists(), what
    code, _, err = _cli(["fit", "--config", str(config(tmp_path, dataset)), "--set", "training.epohcs=1"], capsys)
    assert code == 2 and "unknown config key 'training.epohcs'" in err and not runs.exists()


def test_existing_run_name_is_refused_before_anything_is_written(tmp_path, dataset):
    cfg = config(tmp_path, dataset)
    (tmp_path / "runs" / "tiny-20260101-120000").mkdir(parents=True)
    before = sorted(p.name for p in (tmp_path / "runs").iterdir())
    with pytest.raises(FaceedgeError, match="already exists"):
        fit.run(cfg, timestamp="20260101-120000")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == before


@pytest.mark.slow
def test_fast_path_equals_the_normal_path(tmp_path, dataset):
    """Frozen backbone, no augmentation: the head trained on cached features gives the same model
    as the head trained through the backbone (one full batch per epoch, so order does not matter)."""
    common = {
        "training": {"epochs": 2, "batch_size": 64, "verbose": 0, "patience": 0},
        "model": {"backbone": "simple_cnn", "alpha": 0.25, "input_size": 32, "weights": "none"},
    }
    fast = fit.run(config(tmp_path, dataset, name="fast", **common), allow_weak=True)
    slow = fit.run(config(tmp_path, dataset, name="slow", **common, pipeline={"feature_cache": False}), allow_weak=True)
    mf, ms = (json.loads((d / "metrics.json").read_text()) for d in (fast, slow))
    assert mf["fast_path"] and not ms["fast_path"]
    for split in ("valid", "seen_holdout", "unseen_persons"):
        assert mf[split]["loss"] == pytest.approx(ms[split]["loss"], abs=1e-4)
    hf, hs = ([float(r["loss"]) for r in csv.DictReader(open(d / "history.csv"))] for d in (fast, slow))
    np.testing.assert_allclose(hf, hs, atol=1e-4)


@pytest.mark.slow
def test_resume_after_sigkill_continues_at_the_next_epoch(tmp_path, dataset):
    """Two phases: the head on cached features (fast path), then fine-tuning the whole backbone.
    The process is SIGKILLed after two fine-tune epochs; --resume skips the finished head phase and
    continues fine-tuning at the epoch after the last one backed up."""
    cfg = config(
        tmp_path,
        dataset,
        name="killed",
        model={"backbone": "simple_cnn", "alpha": 0.25},
        training={
            "epochs": 2,
            "batch_size": 2,
            "verbose": 0,
            "patience": 0,  # ~11 steps an epoch
            "fine_tune": {"layers": "all", "epochs": 8, "learning_rate": 1e-4},
        },
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "train", "fit", "--config", str(cfg), "--allow-weak"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    runs = tmp_path / "runs"
    deadline = time.monotonic() + 120
    work = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(runs.glob("killed-*.incomplete")) if runs.exists() else []
            if found and (found[0] / "history.csv").is_file():
                work = found[0]
                if (work / "history.csv").read_text().count(",fine_tune,") >= 2:
                    break
            time.sleep(0.01)
        else:
            pytest.fail(
                f"run did not reach 2 fine-tune epochs (rc {proc.poll()}): {proc.stderr.read().decode()[-2000:]}"
            )
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    meta = json.loads((work / "backup" / "fine_tune" / "training_metadata.json").read_text())
    backed_up = meta["epoch"]  # epochs (both phases) completed and saved before the kill
    assert 4 <= backed_up < 10
    assert not (runs / work.name.removesuffix(".incomplete")).exists()
    assert not (runs / "latest").exists()

    final = fit.run(resume=work, allow_weak=True)
    rows = list(csv.DictReader(open(final / "history.csv")))
    first = [(int(r["epoch"]), r["phase"]) for r in rows if r["attempt"] == "0"]
    resumed = [(int(r["epoch"]), r["phase"]) for r in rows if r["attempt"] == "1"]
    assert first[:4] == [(1, "head"), (2, "head"), (3, "fine_tune"), (4, "fine_tune")]
    assert resumed[0] == (backed_up + 1, "fine_tune")  # continued, not restarted; the head phase not redone
    assert [(int(r["epoch"]), r["phase"]) for r in fit_history(final)] == [(1, "head"), (2, "head")] + [
        (e, "fine_tune") for e in range(3, 11)
    ]
    assert (runs / "latest").resolve() == final.resolve()
    assert not work.exists()
    m = json.loads((final / "metrics.json").read_text())
    assert m["epochs_run"] == 10 and set(m["timing"]["phases"]) == {"head", "fine_tune"}


def fit_history(run_dir):
    from train.history import read_history

    return read_history(run_dir / "history.csv")


def test_resume_refuses_complete_and_unknown_runs(tmp_path):
    done = tmp_path / "runs" / "x-20260101-120000"
    done.mkdir(parents=True)
    (done / "metrics.json").write_text("{}")
    with pytest.raises(FaceedgeError, match="complete"):
        fit.run(resume=done)
    with pytest.raises(FaceedgeError, match="no such run directory"):
        fit.run(resume=tmp_path / "runs" / "nothing.incomplete")
    early = tmp_path / "runs" / "y-20260101-120000.incomplete"
    early.mkdir()
    with pytest.raises(FaceedgeError, match="config.yaml is missing"):
        fit.run(resume=early)


@pytest.mark.slow
def test_bench_measures_in_one_run(tmp_path, dataset):
    from train import bench

    r = bench.run(config(tmp_path, dataset, model={"backbone": "simple_cnn", "alpha": 0.25}), max_images=16, epochs=1)
    assert r["images"] == 16
    for key in (
        "pipeline_plain_s",
        "pipeline_cached_s",
        "pipeline_cached_aug_s",
        "train_step_s",
        "plain_epoch_s",
        "feature_epoch_s",
        "feature_extraction_s",
        "epoch_nocache_s",
        "epoch_cache_s",
        "epoch_cache_prefetch_aug_s",
    ):
        assert r[key] > 0, key
    assert r["ratio_cache_speedup"] == pytest.approx(r["pipeline_plain_s"] / r["pipeline_cached_s"])
    assert r["ratio_plain_vs_feature_epoch"] == pytest.approx(r["plain_epoch_s"] / r["feature_epoch_s"])
    assert "plain epoch / feature-cache epoch" in bench.format_result(r)


def test_class_weights_auto_only_when_skewed(tmp_path):
    from train.config import validate
    from train.splits import SplitRecord

    def plan(n_open, mode):
        recs = [SplitRecord(f"/c{i}.jpg", "closed", "a", "train") for i in range(30)]
        recs += [SplitRecord(f"/o{i}.jpg", "open", "a", "train") for i in range(n_open)]
        cfg = validate({"data": {"root": "d", "class_weights": mode}})
        return rundir.Plan(
            cfg=cfg,
            final=tmp_path / "x",
            work=tmp_path / "x.incomplete",
            splits=recs,
            labels=["closed", "open"],
            data_root="d",
            index_info={},
        )

    w, text = phases.choose_class_weights(plan(28, "auto"))
    assert w is None and "balanced" in text
    w, text = phases.choose_class_weights(plan(10, "auto"))
    assert w == pytest.approx({0: 40 / 60, 1: 40 / 20}) and "auto: skewed" in text
    assert phases.choose_class_weights(plan(10, "off"))[0] is None
    assert phases.choose_class_weights(plan(28, "on"))[0] == pytest.approx({0: 58 / 60, 1: 58 / 56})
