"""A model other tools can open: TFLite metadata written by MediaPipe's writer, labels.txt, the model
card; and MediaPipe's own ImageClassifier (in its environment, .venv-mediapipe) agreeing with the daemon.

The tiny run (tests/helpers/tiny_run.py) is converted by the real pipeline; MediaPipe then classifies
the verification images, written at the model's input size so that neither side resizes, and must
give the daemon's score for the positive label within one output quantum (1/256) on every image.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from convert.cli import run
from convert.mediapipe import env
from device.files import sha256_file
from device.manifest import load_manifest
from tests.helpers.tiny_run import make_tiny_run

pytestmark = pytest.mark.timeout(900)


def mediapipe_env() -> Path:
    """The MediaPipe environment's python; skip (fail in CI, where make setup makes it) without it."""
    py = env.python_path()
    if py is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI: {env.missing_note()} (make setup should have made it)")
        pytest.skip(env.missing_note())
    return py


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    mediapipe_env()
    run_dir = make_tiny_run(tmp_path_factory.mktemp("metadata"))
    run(run_dir, variants=["int8", "float32"], calibration_images=100)
    return run_dir


def test_exported_models_carry_labels_and_metadata(converted):
    for variant in ("int8", "float32"):
        mdir = converted / "export" / variant
        man, model = load_manifest(mdir)  # the sha256 in the manifest is of the final file
        assert man.sha256 == sha256_file(model)
        assert (mdir / "labels.txt").read_text() == "open\n"  # one line per output unit: P(open)
        data = model.read_bytes()
        assert zipfile.is_zipfile(model), "labels.txt must be an associated file (a zip after the flatbuffer)"
        with zipfile.ZipFile(model) as z:
            assert z.read("labels.txt").decode().split() == ["open"]
        assert b"TFLITE_METADATA" in data  # the metadata buffer's name in the model's metadata list
        assert b"P(open): the probability of the positive label" in data and b"mean 0, std 1" in data
    card = (converted / "MODEL_CARD.md").read_text()
    for part in ("## Data", "persons never seen in training", "| int8 | unseen_persons | 60 |", "## Limits"):
        assert part in card, part
    assert "Consent and privacy" in card and "TFLite metadata with labels.txt inside" in card


def test_mediapipe_image_classifier_agrees_with_the_daemon(converted, tmp_path):
    import cv2

    from device.config import parse_config
    from device.crop import load_image_rgb, resize_to_input
    from device.daemon import Daemon

    rows = [r.split(",") for r in (converted / "splits.csv").read_text().splitlines()[1:]]
    files = [Path(r[0]) for r in rows if r[3] != "train"]
    folder = tmp_path / "inputs"
    folder.mkdir()
    for i, f in enumerate(files):  # at the model's input size: neither MediaPipe nor the daemon resizes
        x = resize_to_input(load_image_rgb(f), (32, 32))
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(x, cv2.COLOR_RGB2BGR))
    images = sorted(folder.glob("*.png"))

    for variant, tolerance in (("int8", 1 / 256), ("float32", 1e-5)):
        mdir = converted / "export" / variant
        man, model = load_manifest(mdir)
        out = tmp_path / f"mp-{variant}.json"
        env.run_child({"command": "classify", "model": str(model), "images": [str(p) for p in images], "out": str(out)})
        mp = json.loads(out.read_text())

        cfg = parse_config(
            {
                "source": {"type": "images", "path": str(folder), "fps": 0},
                "decision": {"smoothing": "none"},
                "outputs": {"jsonl": {"path": os.devnull}},
            }
        )
        results = []
        with Daemon(cfg, model_dir=mdir) as d:
            d.run(on_result=results.append, max_seconds=120)
        by_file = {r.file: r for r in results}
        assert len(by_file) == len(images)

        diffs, same_label = [], 0
        for p, cats in zip(images, mp):
            r = by_file[p.name]
            assert [c["label"] for c in cats] == ["open"], cats  # the labels came from the file's metadata
            mp_score = cats[0]["score"]
            diffs.append(abs(mp_score - r.score))
            mp_label = man.positive_label if mp_score >= man.threshold else man.negative_label
            same_label += mp_label == r.label
        diffs = np.array(diffs)
        print(
            f"\n{variant}: MediaPipe ImageClassifier vs the daemon on {len(images)} images: same label on "
            f"{same_label}, |score difference| max {diffs.max():.2e}, {int((diffs == 0).sum())} identical"
        )
        assert diffs.max() <= tolerance + 1e-9, diffs.max()
        assert same_label == len(images)


def test_without_the_mediapipe_env_convert_notes_it_once(tiny_models, tmp_path, monkeypatch, caplog):
    """convert/metadata.attach: labels.txt still written, the model left as converted, one line saying why."""
    import shutil

    from convert import metadata

    monkeypatch.setenv(env.ENV_VAR, str(tmp_path / "nowhere" / "python"))
    monkeypatch.setattr(metadata, "_noted", False)
    model = tmp_path / "model.tflite"
    shutil.copy(tiny_models["int8"] / "model.tflite", model)
    before = model.read_bytes()
    head = {"labels": ["closed", "open"], "positive_label": "open", "output_kind": "sigmoid", "threshold": 0.5}
    caplog.set_level(logging.WARNING, logger="convert.metadata")
    for _ in range(2):  # two variants: one note
        assert metadata.attach(model, head, variant="int8", size_hw=(32, 32)) == before
    assert (tmp_path / "labels.txt").read_text() == "open\n"
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1 and "make setup-mediapipe" in notes[0] and "nowhere" in notes[0], notes
