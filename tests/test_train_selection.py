"""What chose the model, and did it learn: patience 0 keeps the last epoch, min_epochs keeps early
stopping and the checkpoint off a run's first epochs, the unseen persons never influence training or
selection, a model that did not learn ends the run with a one-line diagnosis (--allow-weak keeps it),
and a data root one level too deep (labels that are persons) is refused."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from device.errors import FaceedgeError

pytest.importorskip("tensorflow")
from train import cli, fit
from train.sample_data import generate
from train.verdict import diagnose, floor_check

TIME_COLUMNS = ("seconds", "train_seconds", "images_per_s")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sel") / "faces"
    generate(root, seed=3, persons=4, images_per_person=12, size=40)
    return root


def config(tmp_path: Path, data_root: Path, name: str, **sections) -> Path:
    cfg = {
        "data": {"root": str(data_root), "holdout_persons": 1},
        "model": {
            "backbone": "simple_cnn",
            "alpha": 0.25,
            "input_size": 32,
            "weights": "none",
            "freeze_backbone": False,
        },
        "augment": {"enabled": False},
        "training": {"epochs": 3, "batch_size": 8, "verbose": 0},
        "run": {"name": name, "runs_dir": str(tmp_path / "runs")},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def history(run_dir: Path, drop=TIME_COLUMNS) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(open(run_dir / "history.csv"))]


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_patience_0_keeps_the_last_epochs_weights(tmp_path, dataset):
    run = fit.run(config(tmp_path, dataset, "p0", training={"epochs": 4, "patience": 0}), allow_weak=True)
    m, h = metrics(run), history(run)
    assert m["selection"]["by"] is None and m["selection"]["epoch"] == 4 == len(h)
    # the saved model is the last epoch's: its valid loss is that epoch's val_loss, whatever the best was
    assert m["valid"]["loss"] == pytest.approx(float(h[-1]["val_loss"]), rel=1e-4)
    report = (run / "report.md").read_text()
    assert "model selection: none: patience 0, the last epoch's weights (epoch 4)" in report
    assert "no early stopping (patience 0): the last epoch's weights are kept, no epoch is chosen" in report


@pytest.mark.slow
def test_min_epochs_keeps_early_stopping_and_selection_off_the_first_epochs(tmp_path, dataset):
    run = fit.run(
        config(tmp_path, dataset, "me", training={"epochs": 8, "patience": 1, "min_epochs": 3, "learning_rate": 0.01}),
        allow_weak=True,
    )
    m, h = metrics(run), history(run)
    sel = m["selection"]
    assert sel["by"] == "valid" and sel["first_eligible_epoch"] == 4 and sel["epoch"] >= 4
    assert len(h) >= 5  # epochs 1-3 cannot stop the run; epoch 4 sets the best, 5 is the earliest stop
    eligible = {int(r["epoch"]): float(r["val_loss"]) for r in h if int(r["epoch"]) >= 4}
    assert sel["epoch"] == min(eligible, key=lambda e: (eligible[e], e))
    # the saved model is the chosen epoch's (restored), and the report says the valid figure is optimistic
    assert m["valid"]["loss"] == pytest.approx(eligible[sel["epoch"]], rel=1e-4)
    report = (run / "report.md").read_text()
    assert f"the valid split chose epoch {sel['epoch']} (lowest val_loss from epoch 4 on" in report
    assert "optimistic" in report


@pytest.mark.slow
def test_unseen_persons_never_influence_training_or_selection(tmp_path, dataset):
    """The held-out person's labels are swapped (open ↔ closed) in a second copy of the data: training,
    selection and every other split's figures are identical; only the unseen-person figures change."""
    other = tmp_path / "swapped"
    shutil.copytree(dataset, other)
    person = sorted(p.name for p in (dataset / "open").iterdir())[0]
    shutil.move(other / "open" / person, other / "open_tmp")
    shutil.move(other / "closed" / person, other / "open" / person)
    shutil.move(other / "open_tmp", other / "closed" / person)
    common = {"data": {"holdout_persons": [person]}, "training": {"epochs": 4, "patience": 1}}
    a = fit.run(config(tmp_path, dataset, "a", **common), allow_weak=True)
    b = fit.run(config(tmp_path, other, "b", **common), allow_weak=True)
    ma, mb = metrics(a), metrics(b)
    assert history(a) == history(b)
    assert ma["selection"] == mb["selection"]
    for split in ("valid", "seen_holdout"):
        assert ma[split]["loss"] == mb[split]["loss"] and ma[split]["confusion_matrix"] == mb[split]["confusion_matrix"]
    ua, ub = ma["unseen_persons"], mb["unseen_persons"]
    assert ua["count"] == ub["count"] == 12
    assert ua["correct"] + ub["correct"] == 12  # the same predictions, every label swapped


@pytest.mark.slow
def test_a_model_that_did_not_learn_ends_non_zero_with_a_one_line_diagnosis(tmp_path, dataset, capsys):
    cfg = config(tmp_path, dataset, "weak", training={"epochs": 3, "learning_rate": 1e-7, "patience": 0})
    assert cli.main(["fit", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith("error: did not learn (unseen persons: not better than chance:")
    assert "3 epochs were not enough" in lines[0] and "--allow-weak keeps it" in lines[0]
    runs = tmp_path / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if p.name != "latest"]  # nothing kept

    assert cli.main(["fit", "--config", str(cfg), "--allow-weak"]) == 0
    out = capsys.readouterr().out
    (run,) = [p for p in runs.iterdir() if p.is_dir() and not p.is_symlink()]
    assert "WARNING did not learn (unseen persons" in out and "convert will not publish it" in out
    v = metrics(run)["verdict"]
    assert v["learned"] is False and v["split"] == "unseen_persons" and v["p"] >= 0.05
    assert "**The model did not learn**" in (run / "report.md").read_text()
    assert (runs / "latest").resolve() == run.resolve()


def test_diagnosis_names_early_stopping_during_the_chance_plateau():
    chk = floor_check([[40, 0], [40, 0]], 0.5)
    assert not chk["passed"] and not chk["better_than_chance"]
    hist = [{"epoch": e, "phase": "train", "val_accuracy": 0.5} for e in range(1, 12)]
    text = diagnose(
        chk,
        "unseen_persons",
        labels=["closed", "open"],
        cm=[[40, 0], [40, 0]],
        history=hist,
        epochs=30,
        patience=10,
        min_epochs=0,
        frozen_random_backbone=False,
    )
    assert text.startswith("did not learn (unseen persons: not better than chance: 40 of 80 right")
    assert "it says 'closed' for every image" in text
    assert text.endswith(
        "early stopping ended the run at epoch 11 (patience 10), during the first epochs at "
        "chance; raise training.patience or set training.min_epochs"
    )
    frozen = diagnose(
        chk,
        "valid",
        labels=["closed", "open"],
        cm=[[20, 20], [20, 20]],
        history=hist,
        epochs=11,
        patience=0,
        min_epochs=0,
        frozen_random_backbone=True,
    )
    assert "frozen backbone with weights none" in frozen and "for every image" not in frozen
    low = floor_check([[30, 10], [14, 26]], 0.7, min_balanced_accuracy=0.8)  # better than chance, below floor
    assert (
        low["better_than_chance"]
        and low["reason"] == "balanced accuracy 0.700 (n = 80) is below min_balanced_accuracy 0.8"
    )


def test_labels_that_look_like_persons_are_refused(tmp_path, dataset):
    too_deep = config(tmp_path, dataset / "open", "deep")
    with pytest.raises(FaceedgeError) as e:
        fit.prepare(too_deep)
    msg = str(e.value)
    assert msg.startswith(f"data.root {dataset / 'open'}: no person level and 4 labels (p01, p02, p03, p04)")
    assert f"one level up, {dataset} holds closed, open: is that the data root?" in msg
    assert "data.require_persons: false" in msg and "\n" not in msg
    assert not (tmp_path / "runs").exists()
    plan, _ = fit.prepare(
        config(tmp_path, dataset / "open", "ok", data={"require_persons": False, "holdout_persons": None})
    )
    assert plan.labels == ["p01", "p02", "p03", "p04"]
    # two labels without persons are an ordinary labelled set
    flat = tmp_path / "flat"
    for label in ("closed", "open"):
        for f in sorted((dataset / label).rglob("*.jpg"))[:6]:
            (flat / label).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, flat / label / f"{f.parent.name}_{f.name}")
    plan, _ = fit.prepare(config(tmp_path, flat, "flat", data={"holdout_persons": None}))
    assert plan.labels == ["closed", "open"]
