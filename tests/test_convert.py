"""The conversion stage on a tiny run: int8 + float TFLite, verified with the device runtime, gated.

One tiny run (32x32 model, 280 PNG files) is converted once per module; the other tests reuse it or
fail before TensorFlow runs (bad input). Real converter, real LiteRT interpreter, real files.
"""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from convert.cli import main, run
from convert.quantize import QuantizationConfig
from device.errors import FaceedgeError
from device.files import sha256_file
from device.manifest import load_manifest
from tests.helpers.tiny_run import SIZE, make_tiny_run, write_images

# Stated tolerance: the int8 model's dequantized P(open) is within 0.02 of the Keras model's on every
# image (the uint8 output's step is 1/256 ≈ 0.0039; input, weights and activations add a little).
INT8_MAX_ABS_DIFF = 0.02
# float32 TFLite computes what Keras computes, up to float rounding; float16 weights a little more.
FLOAT32_MAX_ABS_DIFF = 1e-5
FLOAT16_MAX_ABS_DIFF = 2e-3
VERIFY_SPLITS = ["valid", "seen_holdout", "unseen_persons"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("convert"))


@pytest.fixture(scope="module")
def converted(tiny_run) -> dict:
    summary = run(tiny_run, variants=["int8", "float32", "float16"], calibration_images=100)
    return summary


def _copy_run(src: Path, dst: Path, *, train_rows: list[list[str]] | None = None) -> Path:
    """A second run dir sharing the model (and, unless replaced, the train rows) of `src`."""
    dst.mkdir(parents=True)
    for f in ("model.keras", "model_info.json", "report.md"):
        shutil.copy(src / f, dst / f)
    rows = list(csv.reader(open(src / "splits.csv")))
    if train_rows is not None:
        rows = [rows[0]] + [r for r in rows[1:] if r[3] != "train"] + train_rows
    with open(dst / "splits.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return dst


# ------------------------------------------------------------------------------- a good conversion


def test_int8_has_uint8_io_and_agrees_with_keras(tiny_run, converted):
    from device.runtime import Classifier

    gate = converted["gate"]
    assert gate["passed"] and gate["failures"] == []
    assert (gate["max_drop"], gate["min_agreement"], gate["significance"], gate["min_balanced_accuracy"]) == (
        1.0,
        0.98,
        0.05,
        0.55,
    )
    assert gate["notes"] and all("too few images to detect a drop of 1 point" in n for n in gate["notes"])
    man, path = load_manifest(tiny_run / "export" / "int8")
    assert (man.input.dtype, man.output.dtype) == ("uint8", "uint8")
    clf = Classifier(path, man)  # what the interpreter itself says, not only the manifest
    assert clf.input_dtype == np.uint8 and np.dtype(clf._out["dtype"]) == np.uint8
    # raw 0..255 pixels in: the converter gives the input scale 1, zero-point 0 (a plain copy)
    assert man.input.scale == pytest.approx(1.0, abs=1e-4) and man.input.zero_point == 0
    for split in VERIFY_SPLITS:
        m = converted["variants"]["int8"]["splits"][split]
        assert m["n"] >= 50
        assert m["max_abs_diff"] <= INT8_MAX_ABS_DIFF, (split, m)
        assert m["agreement"] >= 0.98 and m["accuracy"] >= 0.95, (split, m)
        assert m["max_abs_diff"] > 0  # it really is quantized: not bit-equal to float
        f32 = converted["variants"]["float32"]["splits"][split]
        assert f32["max_abs_diff"] <= FLOAT32_MAX_ABS_DIFF and f32["agreement"] == 1.0
        assert converted["variants"]["float16"]["splits"][split]["max_abs_diff"] <= FLOAT16_MAX_ABS_DIFF


def test_verification_figures_are_independent_of_the_pipeline(tiny_run, converted):
    """Recompute one split with Keras and the published int8 file directly; the figures must match."""
    import keras

    from convert.verify import tflite_probabilities
    from device.crop import load_image_rgb, resize_to_input

    rows = [r for r in csv.DictReader(open(tiny_run / "splits.csv")) if r["split"] == "unseen_persons"]
    paths = [r["path"] for r in rows]
    p_int8 = tflite_probabilities(tiny_run / "export" / "int8", paths)[:, 0]
    x = np.stack([resize_to_input(load_image_rgb(p), (SIZE, SIZE)) for p in paths]).astype(np.float32)
    p_keras = keras.models.load_model(tiny_run / "model.keras").predict(x, verbose=0)[:, 0]
    m = converted["variants"]["int8"]["splits"]["unseen_persons"]
    assert np.abs(p_int8 - p_keras).max() == pytest.approx(m["max_abs_diff"], abs=1e-6)
    truth = np.array([r["label"] == "open" for r in rows])
    assert np.mean((p_int8 >= 0.5) == truth) == pytest.approx(m["accuracy"])
    assert np.mean((p_keras >= 0.5) == truth) == pytest.approx(m["float_accuracy"])


def test_manifests_complete_and_sha256_correct(tiny_run, converted):
    import tensorflow as tf

    sizes = {}
    for variant in ("int8", "float32", "float16"):
        mdir = tiny_run / "export" / variant
        raw = json.loads((mdir / "manifest.json").read_text())
        model = mdir / "model.tflite"
        assert raw["sha256"] == sha256_file(model) == converted["variants"][variant]["sha256"]
        assert raw["size_bytes"] == model.stat().st_size
        assert raw["variant"] == variant and raw["status"] == "published"
        assert raw["labels"] == ["closed", "open"] and raw["positive_label"] == "open"
        assert raw["output_kind"] == "sigmoid" and raw["threshold"] == 0.5
        assert (raw["input_height"], raw["input_width"]) == (SIZE, SIZE)
        assert raw["preprocessing"]["color_order"] == "RGB"
        assert raw["preprocessing"]["input_range"] == [0.0, 255.0]
        assert raw["preprocessing"]["in_model"] == "rescale: x/127.5 - 1"
        assert raw["source_run"] == str(tiny_run.resolve())
        assert raw["tensorflow_version"] == tf.__version__
        assert "from_saved_model" in raw["converter"]
        assert raw["min_runtime_version"].count(".") == 2  # read from the flatbuffer, e.g. "1.14.0"
        assert raw["created"].endswith("Z") and raw["backbone"] == "tiny_cnn"
        sizes[variant] = raw["size_bytes"]
        assert not list(mdir.glob(".*")), "temporary files left behind"
    int8 = json.loads((tiny_run / "export" / "int8" / "manifest.json").read_text())
    assert int8["output"]["scale"] == pytest.approx(1 / 256, rel=1e-3) and int8["output"]["zero_point"] == 0
    assert "calibrated" in int8["notes"] and "100 images" in int8["notes"]
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]
    assert not [p for p in (tiny_run / "export").iterdir() if p.name.startswith(".")]


def test_each_model_carries_a_selftest_that_device_check_passes(tiny_run, converted):
    """export/<variant>/selftest.{png,json}: an image of persons the model never trained on, at the
    model's input size, that the model gets right; `device check` classifies it to the recorded score."""
    from device import check
    from device.crop import load_image_rgb

    splits = {r["path"]: r for r in csv.DictReader(open(tiny_run / "splits.csv"))}
    for variant in ("int8", "float32", "float16"):
        mdir = tiny_run / "export" / variant
        spec = json.loads((mdir / "selftest.json").read_text())
        assert spec == converted["variants"][variant]["selftest"]
        assert spec["image"] == "selftest.png" and load_image_rgb(mdir / "selftest.png").shape == (SIZE, SIZE, 3)
        row = next(r for p, r in splits.items() if str(spec["from"]).endswith(p) or p.endswith(str(spec["from"])))
        assert spec["split"] == row["split"] == "unseen_persons" and spec["true_label"] == row["label"]
        assert spec["expect"] == spec["true_label"]  # a right answer, as `pick` prefers
        report = check.run(model_dir=mdir, runs=1)
        assert report["ok"] and report["image"] == str(mdir / "selftest.png")
        assert report["label"] == spec["expect"] and report["score"] == pytest.approx(spec["score"], abs=1e-6)


def test_convert_json_and_report_section(tiny_run, converted):
    data = json.loads((tiny_run / "convert.json").read_text())
    assert data == json.loads(json.dumps(converted))  # what run() returned is what was written
    assert set(data["variants"]) == {"int8", "float32", "float16"}
    r = data["variants"]["int8"]
    assert r["size_ratio_to_float32"] == pytest.approx(r["size_bytes"] / data["variants"]["float32"]["size_bytes"])
    assert set(r["splits"]) == set(VERIFY_SPLITS)
    assert set(r["splits"]["valid"]) >= {"accuracy", "balanced_accuracy", "agreement", "max_abs_diff", "mean_abs_diff"}
    assert data["calibration"] == {
        "split": "train",
        "images": 100,
        "seed": 0,
        "decode_resize": "train.pipeline.decode_and_resize",
    }
    assert data["verification"]["splits"] == {"valid": 50, "seen_holdout": 50, "unseen_persons": 60}
    report = (tiny_run / "report.md").read_text()
    assert report.startswith("# Run tiny\n\n## Metrics")  # the training part is kept
    assert report.count("## Conversion") == 1
    table = [ln for ln in report.splitlines() if ln.startswith("| int8 |")]
    assert len(table) == 3 and "published" in table[0]
    assert f"{r['size_ratio_to_float32']:.3f}" in table[0]


def test_calibration_is_deterministic_and_drawn_from_train(tiny_run):
    from convert.data import choose_calibration, load_run_splits

    d = load_run_splits(tiny_run / "splits.csv")
    a = choose_calibration(d.split("train"), 50, seed=0)
    b = choose_calibration(list(reversed(d.split("train"))), 50, seed=0)  # listing order does not matter
    c = choose_calibration(d.split("train"), 50, seed=1)
    assert [s.path for s in a] == [s.path for s in b] != [s.path for s in c]
    assert {s.split for s in a} == {"train"} and len({s.path for s in a}) == 50


def test_rerun_replaces_section_and_models_atomically(tiny_run, converted, tmp_path):
    run2 = _copy_run(tiny_run, tmp_path / "run2")
    first = run(run2, variants=["float32"])
    sha_first = first["variants"]["float32"]["sha256"]
    assert main(["--run", str(run2), "--variants", "float32", "--log-level", "WARNING"]) == 0
    report = (run2 / "report.md").read_text()
    assert report.count("## Conversion") == 1 and report.startswith("# Run tiny")
    assert load_manifest(run2 / "export" / "float32")[0].sha256 == sha_first  # deterministic conversion
    assert sorted(p.name for p in (run2 / "export").iterdir()) == ["float32"]


# ------------------------------------------------------------------------------------------ the gate


def _black_train_rows(tmp_path: Path) -> list[list[str]]:
    black = write_images(tmp_path / "black", np.zeros((3, 40, 40, 3), np.uint8), "black")
    return [[str(p), "closed", "px", "train"] for p in black]


def test_gate_rejects_int8_calibrated_on_black_images(tiny_run, tmp_path, capsys):
    bad = _copy_run(tiny_run, tmp_path / "bad", train_rows=_black_train_rows(tmp_path))
    rc = main(["--run", str(bad), "--variants", "int8", "--log-level", "ERROR"])
    assert rc == 1
    captured = capsys.readouterr()
    assert "error: gate: int8 unseen_persons: agreement with the float model" in captured.err
    assert "significantly below min_agreement 98%" in captured.err
    assert "int8: no published int8 model: export/int8/ does not exist" in captured.out
    data = json.loads((bad / "convert.json").read_text())
    assert data["gate"]["passed"] is False and data["variants"]["int8"]["status"] == "rejected"
    assert data["variants"]["int8"]["current"] is None
    for m in data["variants"]["int8"]["splits"].values():  # damaged on every split, at every size
        assert m["agreement"] < 0.9 and m["gate"]["agreement_significantly_low"], m
    assert not (bad / "export" / "int8").exists()  # nothing where the device looks
    rejected = bad / "export" / "int8.rejected"
    assert data["variants"]["int8"]["path"] == str(rejected / "model.tflite")
    raw = json.loads((rejected / "manifest.json").read_text())
    assert raw["status"] == "rejected" and "rejected by the conversion gate" in raw["notes"]
    with pytest.raises(FaceedgeError, match="rejected by the conversion gate"):
        load_manifest(rejected)  # the device refuses it
    assert "FAILED" in (bad / "report.md").read_text()


def test_rejected_conversion_never_replaces_the_published_model(tiny_run, tmp_path, capsys):
    """good → export/int8/; a damaged re-run → export/int8.rejected/, the good one untouched; a passing
    re-run replaces the good one and removes the stale .rejected/ it supersedes."""
    run_dir = _copy_run(tiny_run, tmp_path / "run")
    good_splits = (run_dir / "splits.csv").read_text()
    assert main(["--run", str(run_dir), "--variants", "int8", "--log-level", "ERROR"]) == 0
    good = (run_dir / "export" / "int8" / "manifest.json").read_bytes()
    good_model = (run_dir / "export" / "int8" / "model.tflite").read_bytes()
    capsys.readouterr()

    _copy_run(tiny_run, tmp_path / "tmp", train_rows=_black_train_rows(tmp_path))
    (run_dir / "splits.csv").write_text((tmp_path / "tmp" / "splits.csv").read_text())
    assert main(["--run", str(run_dir), "--variants", "int8", "--log-level", "ERROR"]) == 1
    out = capsys.readouterr().out
    assert (run_dir / "export" / "int8" / "manifest.json").read_bytes() == good
    assert (run_dir / "export" / "int8" / "model.tflite").read_bytes() == good_model
    assert json.loads((run_dir / "export" / "int8.rejected" / "manifest.json").read_text())["status"] == "rejected"
    sha = json.loads(good)["sha256"]
    assert f"int8: the published model is unchanged: {run_dir / 'export' / 'int8'}" in out and sha[:12] in out
    data = json.loads((run_dir / "convert.json").read_text())
    assert data["variants"]["int8"]["current"]["sha256"] == sha
    assert load_manifest(run_dir)[0].sha256 == sha  # what the device loads from the run: the good model

    (run_dir / "splits.csv").write_text(good_splits)
    assert main(["--run", str(run_dir), "--variants", "int8", "--log-level", "ERROR"]) == 0
    assert not (run_dir / "export" / "int8.rejected").exists()
    assert json.loads((run_dir / "export" / "int8" / "manifest.json").read_text())["status"] == "published"
    assert sorted(p.name for p in (run_dir / "export").iterdir()) == ["int8"]


def test_chance_level_model_is_never_published_and_device_check_refuses_it(tmp_path, capsys):
    """A model that says "open" for every image converts faithfully (int8 agrees with it on every image)
    but did not learn: the floor rejects it, and `device check` does not pass it."""
    import keras

    from device import check
    from tests.helpers.models import build_tiny_keras_model

    model, _ = build_tiny_keras_model()
    last = model.layers[-1]
    w, b = last.get_weights()
    last.set_weights([np.zeros_like(w), np.full_like(b, 2.0)])  # sigmoid(2) = 0.88 for every image
    run_dir = make_tiny_run(tmp_path, model=model)
    assert keras.models.load_model(run_dir / "model.keras").predict(np.zeros((1, SIZE, SIZE, 3)), verbose=0)[0, 0] > 0.5
    assert main(["--run", str(run_dir), "--log-level", "ERROR"]) == 1
    err = capsys.readouterr().err
    assert "error: gate: int8 unseen_persons: not better than chance: 30 of 60 right" in err
    assert "error: gate: float32 unseen_persons: not better than chance" in err
    data = json.loads((run_dir / "convert.json").read_text())
    assert data["gate"]["passed"] is False
    for v in ("int8", "float32"):
        assert data["variants"][v]["status"] == "rejected"
        assert data["variants"][v]["splits"]["unseen_persons"]["agreement"] == 1.0  # faithful, and useless
        assert not (run_dir / "export" / v).exists()
    assert check.main(["--model-dir", str(run_dir), "--runs", "1"]) == 2
    assert "no published model under export/int8/: the conversion gate rejected it" in capsys.readouterr().err
    assert check.main(["--model-dir", str(run_dir / "export" / "int8.rejected"), "--runs", "1"]) == 2
    err = capsys.readouterr().err
    assert "rejected by the conversion gate" in err and "did not learn" in err


# --------------------------------------------------------------------------------------- bad input


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [ln for ln in err if ln.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


def _assert_nothing_written(run_dir: Path) -> None:
    assert not (run_dir / "convert.json").exists()
    assert not (run_dir / "export").exists() or not any((run_dir / "export").iterdir())


@pytest.mark.parametrize(
    "kind, expect",
    [
        ("zero", "model file is empty (0 bytes)"),
        ("truncated", "not a .keras archive"),
        ("random", "not a .keras archive"),
        ("lfs", "is a Git LFS pointer"),
    ],
)
def test_bad_keras_file_rejected(tiny_run, tmp_path, capsys, kind, expect):
    bad = _copy_run(tiny_run, tmp_path / "bad")
    model = bad / "model.keras"
    good = model.read_bytes()
    content = {
        "zero": b"",
        "truncated": good[: len(good) // 2],
        "random": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "lfs": b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32 + b"\nsize 123456\n",
    }[kind]
    model.write_bytes(content)
    assert main(["--run", str(bad)]) == 2
    line = _error_line(capsys)
    assert str(model) in line and expect in line
    _assert_nothing_written(bad)


def test_keras_archive_with_corrupt_member_rejected(tiny_run, tmp_path, capsys):
    bad = _copy_run(tiny_run, tmp_path / "bad")
    with zipfile.ZipFile(tiny_run / "model.keras") as zin, zipfile.ZipFile(bad / "model.keras", "w") as zout:
        for item in zin.infolist():
            if item.filename != "config.json":
                zout.writestr(item, zin.read(item.filename))
    assert main(["--run", str(bad)]) == 2
    assert "has no config.json" in _error_line(capsys)
    _assert_nothing_written(bad)


@pytest.mark.parametrize(
    "kind, expect",
    [
        ("truncated", "unreadable HDF5 file"),
        ("random", "not an HDF5 file"),
        ("lfs", "Git LFS pointer"),
        ("weights_only", "holds weights only"),
    ],
)
def test_bad_h5_file_rejected(tiny_run, tmp_path, capsys, kind, expect):
    import keras

    h5 = tmp_path / "model.h5"
    model = keras.models.load_model(tiny_run / "model.keras")
    if kind == "weights_only":
        model.save_weights(tmp_path / "w.weights.h5")
        shutil.move(tmp_path / "w.weights.h5", h5)
    else:
        model.save(h5)
        good = h5.read_bytes()
        h5.write_bytes(
            {
                "truncated": good[: len(good) // 3],
                "random": np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes(),
                "lfs": b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n",
            }[kind]
        )
    out = tmp_path / "out"
    assert main(["--from", str(h5), "--data", str(tiny_run / "splits.csv"), "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert str(h5) in line and expect in line
    assert not out.exists()


def test_run_without_model(tiny_run, tmp_path, capsys):
    bad = _copy_run(tiny_run, tmp_path / "bad")
    (bad / "model.keras").unlink()
    assert main(["--run", str(bad)]) == 2
    assert f"{bad / 'model.keras'}: run has no model" in _error_line(capsys)
    assert main(["--run", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in _error_line(capsys)
    _assert_nothing_written(bad)


def test_run_whose_data_folder_has_gone(tiny_run, tmp_path, capsys):
    bad = _copy_run(tiny_run, tmp_path / "bad")
    text = (bad / "splits.csv").read_text()
    data_root = str(tiny_run.parents[1] / "data")
    (bad / "splits.csv").write_text(text.replace(data_root, str(tmp_path / "moved")))
    assert main(["--run", str(bad)]) == 2
    line = _error_line(capsys)
    assert str(bad / "splits.csv") in line and "280 of 280 listed images are missing" in line
    _assert_nothing_written(bad)


def test_empty_calibration_set(tiny_run, tmp_path, capsys):
    bad = _copy_run(tiny_run, tmp_path / "bad", train_rows=[])
    assert main(["--run", str(bad)]) == 2
    assert "calibration set is empty" in _error_line(capsys)
    assert main(["--run", str(tiny_run), "--calibration-images", "0"]) == 2
    assert "calibration_images=0" in _error_line(capsys)
    _assert_nothing_written(bad)
    with pytest.raises(FaceedgeError, match="at least one image"):
        QuantizationConfig.for_int8(lambda: iter(()), steps=0)


def test_bad_options_name_the_key(tiny_run, capsys):
    assert main(["--run", str(tiny_run), "--min-agreement", "1.5"]) == 2
    assert "min_agreement" in _error_line(capsys)
    with pytest.raises(SystemExit):
        main(["--run", str(tiny_run), "--variants", "int4"])


# ------------------------------------------------------------------------------- child-process load


def test_child_process_load_turns_a_bad_flatbuffer_into_one_line(tmp_path):
    from convert.probe import probe_in_child

    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"\x1c\x00\x00\x00TFL3" + np.random.default_rng(2).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(FaceedgeError) as e:
        probe_in_child(bad, timeout_s=60)
    msg = str(e.value)
    assert msg.startswith(f"{bad}: ") and "\n" not in msg
    assert "cannot load" in msg or "crashed" in msg


def test_child_process_load_reports_tensors(tiny_run, converted):
    from convert.probe import probe_in_child

    info = probe_in_child(tiny_run / "export" / "int8" / "model.tflite")
    assert info["input"]["dtype"] == "uint8" and info["input"]["shape"] == [1, SIZE, SIZE, 3]
    assert info["runtime"] in ("ai-edge-litert", "tflite-runtime", "tensorflow")
    assert 0.0 <= info["scores"][0] <= 1.0


# ------------------------------------------------------------------------ --from a file with --data


def test_from_h5_with_data_folder_and_int8_io(tiny_run, tmp_path):
    """The original log's case: a full-model .h5 and a folder of images, split by the training stage."""
    import keras

    h5 = tmp_path / "weights.h5"
    keras.models.load_model(tiny_run / "model.keras").save(h5)
    data = tiny_run.parents[1] / "data"
    out = tmp_path / "out"
    summary = run(
        None,
        from_model=h5,
        data=data,
        out=out,
        variants=["int8"],
        io_dtype="int8",
        calibration_images=60,
        positive_label="open",
    )
    assert summary["gate"]["passed"], summary["gate"]
    man, _ = load_manifest(out / "export" / "int8")
    assert (man.input.dtype, man.output.dtype) == ("int8", "int8")
    assert man.labels == ["closed", "open"] and man.positive_label == "open"
    assert set(summary["variants"]["int8"]["splits"]) <= set(VERIFY_SPLITS)
    assert summary["calibration"]["split"] == "train" and summary["calibration"]["images"] == 60
    assert summary["variants"]["int8"]["splits"]["unseen_persons"]["agreement"] >= 0.98
    assert (out / "report.md").read_text().startswith("## Conversion")


def test_from_saved_model_dir(tiny_run, tmp_path):
    """A SavedModel is converted as it is, and is its own float reference (its serving signature)."""
    import keras

    saved = tmp_path / "saved"
    keras.models.load_model(tiny_run / "model.keras").export(str(saved), verbose=False)
    out = tmp_path / "out"
    summary = run(
        None,
        from_model=saved,
        data=tiny_run / "splits.csv",
        out=out,
        variants=["float32"],
        labels=["closed", "open"],
        positive_label="open",
    )
    assert summary["source"]["float_model_kind"] == "saved_model"
    assert summary["gate"]["passed"]
    for m in summary["variants"]["float32"]["splits"].values():
        assert m["agreement"] == 1.0 and m["max_abs_diff"] <= FLOAT32_MAX_ABS_DIFF
    assert load_manifest(out / "export" / "float32")[0].labels == ["closed", "open"]
    (saved / "saved_model.pb").unlink()
    with pytest.raises(FaceedgeError, match="not a SavedModel"):
        run(None, from_model=saved, data=tiny_run / "splits.csv", out=out)


def test_balanced_accuracy_and_report_upsert(tmp_path):
    from convert.report import HEADING, upsert_section
    from convert.verify import accuracy, balanced_accuracy

    y = ["a"] * 8 + ["b"] * 2
    p = ["a"] * 10  # always "a": 80% accurate, but only half the classes recalled
    assert accuracy(y, p) == pytest.approx(0.8)
    assert balanced_accuracy(y, p) == pytest.approx(0.5)
    m = {
        "n": 10,
        "accuracy": 0.8,
        "accuracy_ci95": [0.49, 0.94],
        "balanced_accuracy": 0.5,
        "float_accuracy": 0.8,
        "float_accuracy_ci95": [0.49, 0.94],
        "accuracy_drop_points": 0.0,
        "only_float_right": 0,
        "only_converted_right": 0,
        "agreement": 1.0,
        "agreement_ci95": [0.72, 1.0],
        "max_abs_diff": 0.01,
        "mean_abs_diff": 0.001,
        "gate": {"mcnemar_p": 1.0},
    }
    summary = {
        "created": "2026-01-01T00:00:00Z",
        "versions": {"tensorflow": "x", "device_runtime": "y"},
        "gate": {"passed": True, "max_drop": 1.0, "min_agreement": 0.98, "failures": []},
        "calibration": None,
        "variants": {
            "int8": {
                "splits": {"valid": m},
                "size_bytes": 2048,
                "size_ratio_to_float32": 0.3,
                "status": "published",
                "conversion_seconds": 1.0,
            }
        },
        "verification": {"seconds": 0.5},
        "seconds": 2.0,
    }
    report = tmp_path / "report.md"
    report.write_text(f"# Run\n\n{HEADING}\n\nold text\n\n## Later section\n\nkept\n")
    upsert_section(report, summary)
    text = report.read_text()
    assert "old text" not in text and text.count(HEADING) == 1
    assert (
        "| int8 | valid | 10 | 80.00% (49.0–94.0%) | 80.00% (49.0–94.0%) | 0 / 0 | 1 | 100.00% (72.0–100.0%) | "
        "50.00% |" in text
    )
    assert text.index(HEADING) < text.index("## Later section") and text.rstrip().endswith("kept")


def _three_class_images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Label = which of the three vertical bands is brightest (by a clear margin)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    levels = rng.uniform(30, 120, (n, 3))
    levels[np.arange(n), y] += rng.uniform(80, 120, n)
    img = np.empty((n, size, size, 3))
    for b in range(3):
        img[:, :, b * size // 3 : (b + 1) * size // 3] = levels[:, b, None, None, None]
    img[:, :, 3 * (size // 3) :] = levels[:, 2, None, None, None]
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), y


@pytest.mark.slow
def test_softmax_model_from_keras_file_and_folder(tmp_path):
    """A 3-label softmax model: per-class outputs verified, argmax decisions compared."""
    import keras

    keras.utils.set_random_seed(0)
    size = 24
    inp = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Flatten()(keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x))  # keeps position
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    xs, ys = _three_class_images(600, size, 0)
    model.fit(xs.astype(np.float32), ys, epochs=15, batch_size=32, verbose=0)
    model.save(tmp_path / "three.keras")
    labels = ["left", "middle", "right"]
    for person in range(6):
        imgs, yy = _three_class_images(24, size, 10 + person)
        for i, (img, y) in enumerate(zip(imgs, yy)):
            write_images(tmp_path / "data" / labels[y] / f"p{person}", img[None], f"p{person}_{i:02d}")
    summary = run(
        None,
        from_model=tmp_path / "three.keras",
        data=tmp_path / "data",
        out=tmp_path / "out",
        variants=["int8", "float32"],
        calibration_images=50,
    )
    man, _ = load_manifest(tmp_path / "out" / "export" / "int8")
    assert man.output_kind == "softmax" and man.labels == labels and man.positive_label is None
    assert man.output.shape == [1, 3] and man.output.dtype == "uint8"
    for split, m in summary["variants"]["int8"]["splits"].items():
        assert m["float_accuracy"] >= 0.95, (split, m)  # the model learned the rule
        assert m["max_abs_diff"] <= 0.05 and m["agreement"] >= 0.98, (split, m)
    assert summary["variants"]["float32"]["splits"]["valid"]["max_abs_diff"] <= FLOAT32_MAX_ABS_DIFF


def test_failure_during_conversion_leaves_nothing(tiny_run, tmp_path, capsys):
    """An image that cannot be decoded, found only while calibrating: error, no export, no staging."""
    bad_img = tmp_path / "broken.png"
    bad_img.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    bad = _copy_run(tiny_run, tmp_path / "bad", train_rows=[[str(bad_img), "open", "px", "train"]])
    report_before = (bad / "report.md").read_text()
    assert main(["--run", str(bad), "--log-level", "ERROR"]) == 2
    line = _error_line(capsys)
    assert str(bad_img) in line and "calibration image cannot be decoded" in line
    assert not (bad / "export").exists() and not (bad / "convert.json").exists()
    assert (bad / "report.md").read_text() == report_before
