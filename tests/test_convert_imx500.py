"""The imx500 variant: the hand-off (Keras 3 layer graph + weights, refusals), the rebuild in the
imx500 environment's tf.keras 2.15, and - slow - a sample run converted with `--variants int8,imx500`
and the daemon classifying fake AI Camera frames with the simulation's outputs.

Tests that need the imx500 environment (`make setup-imx500`, which `make setup` runs) skip without it
on a developer's machine, saying so; under CI=true they fail instead, since CI's `make setup` made it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from convert.imx500 import env, handoff
from device.errors import FaceedgeError

ROOT = Path(__file__).resolve().parents[1]


def imx500_env() -> Path:
    """The imx500 environment's python; skip (fail in CI) when it is missing."""
    try:
        return env.python_path()
    except FaceedgeError as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI: {e} (make setup should have made it)")
        pytest.skip(f"no imx500 environment: {e}")


def keras_models():
    import keras

    from train.config import ModelConfig
    from train.models import build_model

    keras.utils.set_random_seed(0)
    out = {}
    for backbone, alpha in (("mobilenet_v2", 0.35), ("simple_cnn", 0.25), ("vgg16", 1.0)):
        cfg = ModelConfig(
            backbone=backbone, alpha=alpha, input_size=32, weights="none", freeze_backbone=backbone == "vgg16"
        )
        out[backbone] = build_model(cfg, 3 if backbone == "simple_cnn" else 2).model
    return out


@pytest.fixture(scope="module")
def models():
    return keras_models()


# ------------------------------------------------------------------------------------- the hand-off


def test_training_models_are_handed_over_whole(models, tmp_path):
    for name, model in models.items():
        arch = handoff.write(model, tmp_path / name)
        assert arch["inputs"] == ["image"] and arch["outputs"] == ["predictions"]
        assert arch["weight_arrays"] == len(model.get_weights())  # every array, nested backbone included
        with np.load(tmp_path / name / handoff.WEIGHTS_FILE) as w:
            assert sum(int(np.prod(w[k].shape)) for k in w.files) == model.count_params()
        layers = {layer["name"]: layer for layer in arch["layers"]}
        # the nested backbone is flattened: its first layer reads the preprocessing layer's output
        first = next(layer for layer in arch["layers"] if layer["inbound"] == ["preprocess"])
        assert first["class_name"] in ("Conv2D", "ZeroPadding2D")
        for layer in arch["layers"]:
            assert not any(k.endswith(("_initializer", "_regularizer", "_constraint")) for k in layer["config"])
            assert layer["config"].get("dtype", "float32") == "float32"
        assert list(layers["image"]["config"]["batch_input_shape"]) == [None, 32, 32, 3]
    assert json.loads((tmp_path / "mobilenet_v2" / handoff.ARCH_FILE).read_text())["format"] == handoff.FORMAT
    add = next(
        layer
        for layer in handoff.architecture(models["mobilenet_v2"].get_config())["layers"]
        if layer["class_name"] == "Add"
    )
    assert add["inbound_is_list"] and len(add["inbound"]) == 2


def _functional(build):
    import keras

    inp = keras.Input((8, 8, 3), name="image")
    return keras.Model(inp, build(keras, inp))


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda k, x: k.layers.Dense(1, name="out")(
                k.layers.Flatten()(k.layers.Lambda(lambda t: t * 2.0, name="double")(x))
            ),
            r"layer 'double' \(Lambda\) cannot be rebuilt in tf.keras 2.15 for the IMX500: the layer type is not supported",
        ),
        (
            lambda k, x: k.layers.Dense(1, name="out", activation=k.activations.gelu)(k.layers.Flatten()(x)),
            r"layer 'out' \(Dense\) .* activation 'gelu' is not a built-in one",
        ),
        (
            lambda k, x: (lambda c: k.layers.Dense(1, name="out")(k.layers.Flatten()(k.layers.Add()([c(x), c(x)]))))(
                k.layers.Conv2D(3, 1, name="shared")
            ),
            r"layer 'shared' \(Conv2D\) .* called 2 times \(a shared layer\)",
        ),
    ],
)
def test_what_cannot_be_rebuilt_is_refused_in_one_line(build, message):
    model = _functional(build)
    with pytest.raises(FaceedgeError, match=message) as e:
        handoff.architecture(model.get_config())
    assert "\n" not in str(e.value)


def test_two_outputs_and_non_functional_models_are_refused(tmp_path):
    import keras

    inp = keras.Input((8, 8, 3), name="image")
    flat = keras.layers.Flatten()(inp)
    two = keras.Model(inp, [keras.layers.Dense(1, name="a")(flat), keras.layers.Dense(1, name="b")(flat)])
    with pytest.raises(FaceedgeError, match=r"1 input\(s\) and 2 output\(s\): the IMX500 variant needs one"):
        handoff.architecture(two.get_config())
    seq = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(1)])
    with pytest.raises(FaceedgeError, match="not a functional Keras model"):
        handoff.write(seq, tmp_path / "seq")
    assert not (tmp_path / "seq").exists()  # refused before anything is written


def test_missing_environment_says_how_to_make_it(monkeypatch, tmp_path):
    monkeypatch.setenv(env.ENV_VAR, str(tmp_path / "nowhere" / "python"))
    with pytest.raises(
        FaceedgeError,
        match=r"nowhere/python: the imx500 variant needs its own environment .* "
        r"run `make setup-imx500`",
    ):
        env.python_path()


def test_convert_without_the_environment_or_with_a_saved_model_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    from tests.helpers.tiny_run import make_tiny_run

    run = make_tiny_run(tmp_path)
    monkeypatch.setenv(env.ENV_VAR, str(tmp_path / "no-env" / "python"))
    proc = subprocess.run(
        [sys.executable, "-m", "convert", "--run", str(run), "--variants", "int8,imx500"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (
        proc.stderr.strip().splitlines()[-1].startswith(f"error: {env.ENV_VAR}=") and "make setup-imx500" in proc.stderr
    )
    assert not (run / "export").exists() and not (run / "convert.json").exists()  # int8 was not published either

    import keras

    saved = tmp_path / "saved"
    keras.models.load_model(run / "model.keras").export(str(saved), verbose=False)
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "convert",
            "--from",
            str(saved),
            "--data",
            str(run / "splits.csv"),
            "--out",
            str(out),
            "--variants",
            "imx500",
            "--labels",
            "closed,open",
            "--positive-label",
            "open",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2
    assert (
        "needs a Keras model (.keras or .h5): a SavedModel has no layer graph" in proc.stderr.strip().splitlines()[-1]
    )
    assert not (out / "export" / "imx500").exists()


# ----------------------------------------------------------------------- the rebuild in tf.keras 2.15

REBUILD = """
import importlib.util, json, sys
import numpy as np
spec = importlib.util.spec_from_file_location("child", sys.argv[1])
child = importlib.util.module_from_spec(spec); spec.loader.exec_module(child)
job = sys.argv[2]
arch = json.load(open(job + "/arch.json"))
with np.load(job + "/weights.npz") as w:
    weights = {k: w[k] for k in w.files}
try:
    model, n = child.rebuild(arch, weights)
except child.ChildError as e:
    print("error: " + str(e), file=sys.stderr); sys.exit(2)
np.save(job + "/out.npy", child.predict(model, np.load(job + "/x.npy")))
print(json.dumps({"arrays": n, "classes": sorted({type(l).__name__ for l in model.layers})}))
"""


def _rebuild_in_env(python: Path, job: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "-I", "-c", REBUILD, str(env.CHILD), str(job)],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    )


def test_rebuilt_in_tf_keras_2_15_computes_what_keras_3_computes(models, tmp_path):
    python = imx500_env()
    x = np.random.default_rng(1).uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    for name, model in models.items():
        job = tmp_path / name
        arch = handoff.write(model, job)
        np.save(job / "x.npy", x)
        proc = _rebuild_in_env(python, job)
        assert proc.returncode == 0, proc.stderr[-2000:]
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        assert info["arrays"] == arch["weight_arrays"] == len(model.get_weights())
        assert "Rescaling" not in info["classes"]  # rewritten as a 1x1 depthwise convolution for the converter
        want = np.asarray(model(x, training=False))
        got = np.load(job / "out.npy")
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-5, (name, np.abs(got - want).max())


def test_a_weight_mismatch_in_the_rebuild_is_one_line(models, tmp_path):
    python = imx500_env()
    job = tmp_path / "job"
    handoff.write(models["simple_cnn"], job)
    with np.load(job / handoff.WEIGHTS_FILE) as w:
        arrays = {k: w[k] for k in w.files}
    arrays["predictions/0"] = arrays["predictions/0"][:, :2]  # a head with 2 units instead of 3
    np.savez(job / handoff.WEIGHTS_FILE, **arrays)
    np.save(job / "x.npy", np.zeros((1, 32, 32, 3), np.float32))
    proc = _rebuild_in_env(python, job)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: layer 'predictions' (Dense): tf.keras 2.15 expects weights [(64, 3), (3,)], the Keras model has [(64, 2), (3,)]"
        )
    )


# ------------------------------------------------------------------ a run converted end to end (slow)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_run_converted_for_int8_and_imx500_then_classified_on_the_fake_ai_camera(tmp_path, picam, monkeypatch):
    """A training run (tests/helpers/tiny_run.py: 32x32 raw-RGB-in CNN, real PNG splits) → `convert
    --variants int8,imx500` → both published, the MCT simulation deciding like the float model on every
    split, packerOut.zip fitting in the chip; then the daemon, on the fake AI Camera showing the
    verification images with the simulation's outputs, decides as the simulation does."""
    imx500_env()
    from convert.cli import run as convert
    from convert.imx500 import variant
    from device.config import parse_config
    from device.daemon import Daemon
    from device.imx500 import Imx500Classifier
    from device.manifest import load_manifest
    from tests.fakes import imx500 as fake_imx500
    from tests.helpers.tiny_run import make_tiny_run

    run = make_tiny_run(tmp_path)
    built = []
    real_build = variant.build

    def spy(*a, **kw):  # the real builder; keeps what it returned (the simulation's per-image outputs)
        built.append(real_build(*a, **kw))
        return built[-1]

    monkeypatch.setattr(variant, "build", spy)
    summary = convert(run, variants=["int8", "imx500"], calibration_images=100)

    assert summary["gate"]["passed"], summary["gate"]["failures"]
    for v in ("int8", "imx500"):
        assert summary["variants"][v]["status"] == "published"
        load_manifest(run / "export" / v)  # the device accepts both (sha256, status)
    imx = summary["variants"]["imx500"]
    for split in ("valid", "seen_holdout", "unseen_persons"):
        m = imx["splits"][split]
        assert m["n"] >= 50 and m["agreement"] >= 0.98 and m["accuracy_drop_points"] <= 1.0, (split, m)
        assert m["max_abs_diff"] <= 0.05, (split, m)  # a quantized model: close to float, not equal
    export = run / "export" / "imx500"
    assert sorted(p.name for p in export.iterdir()) == ["labels.txt", "manifest.json", "packerOut.zip"]
    assert (export / "labels.txt").read_text().split() == ["closed", "open"]
    with zipfile.ZipFile(export / "packerOut.zip") as z:
        assert "dnnParams.xml" in z.namelist() and z.testzip() is None
    mem = imx["imx500"]["memory"]
    assert mem["fit_in_chip"] and 0 < mem["usage_bytes"] <= mem["chip_bytes"] == 8388480 and mem["share_of_chip"] < 1
    man, _ = load_manifest(export)
    assert (man.input.dtype, man.input.scale, man.output.dtype, man.output.scale) == ("uint8", 1.0, "uint8", 1 / 256)
    assert imx["imx500"]["rebuilt_max_abs_diff"] < 1e-4 and imx["imx500"]["weight_arrays"] == 6

    # the daemon on the fake AI Camera: the verification images, each with the simulation's output as
    # the sensor hands it over (its uint8 tensor dequantized: the simulation is already on that grid)
    (build,) = built
    import cv2

    from convert.data import load_run_splits
    from convert.verify import load_model_images

    data = load_run_splits(run / "splits.csv")
    images, probs = [], []
    for split in ("valid", "seen_holdout", "unseen_persons"):
        images.append(load_model_images([s.path for s in data.split(split)], (32, 32)))
        probs.append(build.probabilities[split])
    images, probs = np.concatenate(images), np.concatenate(probs)
    on_grid = fake_imx500.sensor_floats(probs, man.output.scale, man.output.zero_point)
    assert np.abs(on_grid - probs).max() < 1e-6  # the simulation's outputs are what a uint8 tensor can carry
    fake_imx500.install(monkeypatch)
    fake_imx500.STATE.scene = [(cv2.resize(img, (64, 48)), [p]) for img, p in zip(images, on_grid)]
    (export / "network.rpk").write_bytes(b"made by imx500-package on the Pi")
    cfg = parse_config(
        {
            "source": {"type": "imx500", "width": 64, "height": 48, "fps": 200},
            "decision": {"smoothing": "none"},
            "capture": {"stall_s": 10},
        }
    )
    clf = Imx500Classifier.from_model_dir(export)
    expected = [clf.label_of(p)[0] for p in probs]
    results = []
    with Daemon(cfg, model_dir=export) as d:
        d.run(max_frames=len(images) // 2, max_seconds=120, on_result=results.append)
    assert len(results) == len(images) // 2
    for r in results:
        i = (r.frame_id - 1) % len(images)
        assert r.label == expected[i] and r.scores == pytest.approx(on_grid[i].tolist(), abs=1e-6), r.frame_id
    assert {r.label for r in results} == {"open", "closed"}  # both decisions exercised
