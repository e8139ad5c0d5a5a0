"""The tiny classifier the tests share. Built here with TensorFlow (imported lazily: only the tests
that build a model need it), or, for the tests that only need some valid model, the checked-in
conversion of it in TINY_MODEL_DIR (made by tests/fixtures/make_tiny_model.py), loaded without
TensorFlow as the device does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.helpers import ROOT

TINY_MODEL_DIR = ROOT / "tests" / "fixtures" / "tiny_model"
TINY_MODEL_VARIANTS = ("int8", "float32")


def build_tiny_keras_model(size: int = 32, seed: int = 0):
    """A small raw-RGB-in binary classifier with preprocessing inside the model."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inp, out)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    # A learnable rule (left half brighter than right half) so outputs spread over (0, 1).
    xs, ys = tiny_images(512, size, seed)
    model.fit(xs.astype(np.float32), ys, epochs=8, batch_size=32, verbose=0)
    return model, xs.astype(np.float32)


def tiny_images(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images whose label is 'left half brighter than right half', with noise."""
    rng = np.random.default_rng(seed)
    left = rng.uniform(30, 225, (n, 1, 1, 1))
    right = rng.uniform(30, 225, (n, 1, 1, 1))
    img = np.empty((n, size, size, 3))
    img[:, :, : size // 2] = left
    img[:, :, size // 2 :] = right
    img += rng.normal(0, 20, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), (left > right).reshape(-1).astype(np.float32)


def convert_tiny(model, rep: np.ndarray, out_dir: Path, variant: str) -> Path:
    """Convert with the raw TF converter and write model.tflite + manifest.json (test fixture only)."""
    import tensorflow as tf

    from device.files import sha256_file
    from device.manifest import Manifest, TensorSpec, write_manifest

    saved = out_dir / f"_saved_{variant}"
    model.export(str(saved), verbose=False)
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if variant == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([r[None]] for r in rep[:64])
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    data = conv.convert()
    mdir = out_dir / variant
    mdir.mkdir(parents=True, exist_ok=True)
    (mdir / "model.tflite").write_bytes(data)
    from device.runtime import load_runtime

    interp = load_runtime().interpreter_cls(model_path=str(mdir / "model.tflite"))
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    spec = lambda d: TensorSpec(  # noqa: E731
        dtype=np.dtype(d["dtype"]).name,
        shape=[int(s) for s in d["shape"]],
        scale=float(d["quantization"][0]),
        zero_point=int(d["quantization"][1]),
    )
    size = int(i["shape"][1])
    man = Manifest(
        variant=variant,
        sha256=sha256_file(mdir / "model.tflite"),
        size_bytes=len(data),
        labels=["closed", "open"],
        positive_label="open",
        output_kind="sigmoid",
        threshold=0.5,
        input_height=size,
        input_width=size,
        input=spec(i),
        output=spec(o),
        preprocessing={"in_model": "rescale: x/127.5 - 1"},
        source_run="tests/helpers/models.py",
        tensorflow_version=tf.__version__,
        converter="TFLiteConverter.from_saved_model",
    )
    write_manifest(mdir, man)
    return mdir
