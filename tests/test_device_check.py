"""device check: loads real tiny TFLite models (conftest `tiny_models`), classifies self-test
images through the daemon's crop/resize, and fails on mismatches, bad outputs and bad models."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from device import check
from device.crop import save_image_rgb
from device.errors import FaceedgeError
from device.files import sha256_file
from device.manifest import load_manifest, write_manifest


def halves(left: int, right: int, size: int = 64) -> np.ndarray:
    """The tiny model's rule: 'open' when the left half is brighter than the right half."""
    img = np.empty((size, size, 3), np.uint8)
    img[:, : size // 2] = left
    img[:, size // 2 :] = right
    return img


@pytest.fixture
def images(tmp_path):
    save_image_rgb(tmp_path / "open.png", halves(220, 40))
    save_image_rgb(tmp_path / "closed.png", halves(40, 220))
    return tmp_path


@pytest.fixture
def model_copy(tiny_models, tmp_path):
    """A private copy of the int8 model dir the test may modify."""
    dst = tmp_path / "model"
    shutil.copytree(tiny_models["int8"], dst)
    return dst


@pytest.mark.parametrize("variant", ["int8", "float32"])
def test_expected_labels_pass_and_fail(tiny_models, images, variant):
    mdir = tiny_models[variant]
    r = check.run(model_dir=mdir, image=images / "open.png", expect="open", runs=5)
    assert r["ok"] and r["label"] == "open" and r["score"] > 0.5
    assert r["model_sha256"] == sha256_file(mdir / "model.tflite")
    assert r["input"] == [32, 32, 3] and r["input_dtype"] == ("uint8" if variant == "int8" else "float32")
    assert r["runs"] == 5 and r["load_ms"] > 0 and r["first_inference_ms"] > 0 and r["mean_inference_ms"] > 0
    closed = check.run(model_dir=mdir, image=images / "closed.png", expect="closed", runs=1)
    assert closed["ok"] and closed["label"] == "closed" and closed["score"] < 0.5
    wrong = check.run(model_dir=mdir, image=images / "closed.png", expect="open", runs=1)
    assert not wrong["ok"] and "classified 'closed'" in wrong["failure"] and "expected 'open'" in wrong["failure"]


def test_generated_pattern_and_text_output(tiny_models, capsys):
    rc = check.main(["--model-dir", str(tiny_models["int8"]), "--runs", "3"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "image    generated test pattern 640x480, crop full/center_crop" in out
    assert "check OK" in out and "first inference" in out and "over 3" in out


def test_json_and_expected_score(tiny_models, images, capsys):
    first = check.run(model_dir=tiny_models["int8"], image=images / "open.png", runs=1)
    rc = check.main(
        [
            "--model-dir",
            str(tiny_models["int8"]),
            "--image",
            str(images / "open.png"),
            "--expect-score",
            str(first["score"]),
            "--tolerance",
            "0.001",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["ok"] and report["score"] == first["score"]
    rc = check.main(
        [
            "--model-dir",
            str(tiny_models["int8"]),
            "--image",
            str(images / "open.png"),
            "--expect-score",
            str(first["score"] - 0.2),
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert rc == 1 and not report["ok"] and "differs from the expected" in report["failure"]


def test_selftest_json_in_model_dir(model_copy, images):
    shutil.copy(images / "closed.png", model_copy / "selftest.png")
    (model_copy / "selftest.json").write_text(json.dumps({"image": "selftest.png", "expect": "closed"}))
    r = check.run(model_dir=model_copy, runs=1)
    assert r["ok"] and r["image"] == str(model_copy / "selftest.png") and r["expected"] == "closed"
    (model_copy / "selftest.json").write_text(json.dumps({"image": "selftest.png", "expect": "open"}))
    assert not check.run(model_dir=model_copy, runs=1)["ok"]
    (model_copy / "selftest.json").write_text(json.dumps({"image": "selftest.png", "expected": "open"}))
    with pytest.raises(FaceedgeError, match="'expected': unknown"):
        check.run(model_dir=model_copy, runs=1)


def test_face_crop_config_without_a_face_still_checks_the_model(tiny_models, images, tmp_path):
    cfg = tmp_path / "device.yaml"
    cfg.write_text("crop:\n  mode: face\n")
    r = check.run(cfg, tiny_models["int8"], image=images / "open.png", expect="open", runs=1)
    assert r["ok"] and r["crop"].startswith("face (no face found")


def test_output_not_matching_the_manifest_fails(model_copy):
    man, _ = load_manifest(model_copy)
    write_manifest(
        model_copy, man.model_copy(update={"labels": ["a", "b", "c"], "positive_label": None, "output_kind": "softmax"})
    )
    r = check.run(model_dir=model_copy, runs=1)
    assert not r["ok"] and "1 output values" in r["failure"] and "needs 3" in r["failure"]


def test_bad_models_exit_2_with_one_error_line(tiny_models, model_copy, tmp_path, capsys):
    model = model_copy / "model.tflite"
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])  # truncated: sha256 no longer matches
    rc = check.main(["--model-dir", str(model_copy), "--json"])
    captured = capsys.readouterr()
    assert rc == 2 and "sha256" in json.loads(captured.out)["error"]
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    # truncated AND a manifest that vouches for it: the runtime refuses it
    man, _ = load_manifest(model_copy, verify_sha256=False)
    write_manifest(
        model_copy, man.model_copy(update={"sha256": sha256_file(model), "size_bytes": model.stat().st_size})
    )
    with pytest.raises(FaceedgeError, match="cannot load|TFL3"):
        check.run(model_dir=model_copy)
    with pytest.raises(FaceedgeError, match="no such model directory"):
        check.run(model_dir=tmp_path / "nope")
    with pytest.raises(FaceedgeError, match="no model"):
        check.run()
    with pytest.raises(FaceedgeError, match="--expect 'ajar': not one of the model's labels"):
        check.run(model_dir=tiny_models["int8"], expect="ajar")


def test_validate_in_child(tiny_models, model_copy):
    report = check.validate_in_child(tiny_models["int8"], timeout_s=60)
    assert report["ok"] and report["model_sha256"] == sha256_file(tiny_models["int8"] / "model.tflite")
    (model_copy / "model.tflite").write_bytes(b"TFL3 garbage")
    with pytest.raises(FaceedgeError, match="model rejected: .*sha256"):
        check.validate_in_child(model_copy, timeout_s=60)


def test_python_m_device_check(tiny_models, images, tmp_path):
    """The real command line, in a fresh process: exit 0 on the expected label, 1 otherwise."""
    import subprocess
    import sys

    from tests.helpers import ROOT

    cmd = [
        sys.executable,
        "-m",
        "device",
        "check",
        "--model-dir",
        str(tiny_models["int8"]),
        "--image",
        str(images / "open.png"),
        "--json",
        "--runs",
        "2",
    ]
    dump = tmp_path / "modules.txt"
    env = {**os.environ, "FACEEDGE_DUMP_MODULES": str(dump)}
    ok = subprocess.run([*cmd, "--expect", "open"], capture_output=True, text=True, cwd=ROOT, timeout=120, env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["label"] == "open"
    imported = {m.split(".")[0] for m in dump.read_text().split()}
    assert {"device", "cv2"} <= imported and not imported & {"tensorflow", "keras", "train", "convert"}
    bad = subprocess.run([*cmd, "--expect", "closed"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 1 and "expected 'closed'" in json.loads(bad.stdout)["failure"]


def test_the_conversion_self_test_round_trip(model_copy, tmp_path):
    """`write_selftest` (what convert writes into export/<variant>/) stores the image at the model's
    input size with the label and score the device path gives it; `device check` and the SIGHUP
    check in a child process then classify it and hold the model to that score."""
    from device.runtime import Classifier
    from device.selftest import SELFTEST_IMAGE, SELFTEST_JSON, write_selftest

    wide = np.full((96, 192, 3), 30, np.uint8)  # not the input size, nor square
    wide[:, :96] = 230
    spec = write_selftest(
        model_copy, Classifier.from_model_dir(model_copy), wide, true_label="open", split="unseen_persons"
    )
    assert spec["expect"] == "open" and spec["split"] == "unseen_persons" and 0.5 < spec["score"] <= 1.0
    from device.crop import load_image_rgb

    assert load_image_rgb(model_copy / SELFTEST_IMAGE).shape == (32, 32, 3)
    for crop in ("crop:\n  mode: center\n  fraction: 0.3\n", "crop:\n  mode: face\n"):
        cfg = tmp_path / "device.yaml"
        cfg.write_text(crop)  # the config's crop does not cut the self-test image again
        r = check.run(cfg, model_copy, runs=1)
        assert r["ok"], r
        assert r["image"] == str(model_copy / SELFTEST_IMAGE) and r["crop"] == "full/stretch"
        assert (r["expected"], r["expected_score"], r["score"]) == ("open", spec["score"], spec["score"])
    assert check.validate_in_child(model_copy, timeout_s=60)["image"] == str(model_copy / SELFTEST_IMAGE)
    # a model that no longer gives the recorded score is refused, with the reason
    (model_copy / SELFTEST_JSON).write_text(json.dumps({**spec, "score": spec["score"] - 0.3}))
    r = check.run(model_dir=model_copy, runs=1)
    assert not r["ok"] and "differs from the expected" in r["failure"]
    with pytest.raises(FaceedgeError, match="model rejected: self-test score"):
        check.validate_in_child(model_copy, timeout_s=60)
    (model_copy / SELFTEST_JSON).write_text(json.dumps({**spec, "score": "high"}))
    with pytest.raises(FaceedgeError, match="key 'score': a number is required"):
        check.run(model_dir=model_copy, runs=1)
