"""Parity: the probability verification records for an image is the one the device computes.

The conversion stage's verification (`convert.verify.tflite_probabilities`) and the device read the
file with `device.crop.load_image_rgb`, resize with `device.crop.resize_to_input` and run
`device.runtime.Classifier`; this test holds them to it. The device side is the daemon itself
(`device.daemon.Daemon` on an image-folder source with the default crop: full frame, centre square)
and `device check` (deploy's self-test) on each file. Same code path,
so equal to float tolerance (1e-6; `device check` rounds its scores to 6 decimals).

Square files only: for those the daemon's centre-square crop is the whole image, exactly what
training and verification see. (Non-square files are stretched by training and centre-cropped by
the daemon, on purpose; tests/test_train_preprocess_parity.py covers that chain.)
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.models import tiny_images

TOL = 1e-6


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    import cv2

    folder = tmp_path_factory.mktemp("parity_images")
    imgs, _ = tiny_images(12, 48, seed=7)
    paths = []
    for i, img in enumerate(imgs):
        ext = ".png" if i % 2 else ".jpg"  # lossless and JPEG (decoded by the same loader on both sides)
        p = folder / f"img_{i:02d}{ext}"
        cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        paths.append(p)
    return folder, paths


@pytest.mark.parametrize("variant", ["int8", "float32"])
def test_daemon_probability_equals_verification(tiny_models, image_files, variant):
    from convert.verify import tflite_probabilities
    from device.config import DaemonConfig
    from device.daemon import Daemon

    folder, paths = image_files
    model_dir = tiny_models[variant]
    verified = tflite_probabilities(model_dir, paths)
    assert verified.shape == (len(paths), 1)

    # the daemon itself: image-folder source (sorted, unpaced: every frame), default crop, no outputs
    cfg = DaemonConfig.model_validate({"source": {"type": "images", "path": str(folder)}})
    results = []
    with Daemon(cfg, model_dir=model_dir, outputs=[]) as daemon:
        stats = daemon.run(on_result=results.append)
    assert stats["results"] == len(paths)
    daemon_scores = np.array([r.scores for r in sorted(results, key=lambda r: r.frame_id)])
    np.testing.assert_allclose(daemon_scores, verified, rtol=0, atol=TOL)
    # and the probabilities really vary (not a constant that would match anything)
    assert verified.std() > 0.05


def test_device_check_reports_the_verified_probability(tiny_models, image_files):
    from convert.verify import tflite_probabilities
    from device import check

    _, paths = image_files
    verified = tflite_probabilities(tiny_models["int8"], paths[:3])[:, 0]
    for p, v in zip(paths[:3], verified):
        report = check.run(None, tiny_models["int8"], image=p, runs=1)
        assert report["scores"][0] == pytest.approx(float(v), abs=TOL)


def test_classifier_int8_matches_keras(tiny_keras):
    """The device runtime on the int8 conversion gives the Keras model's probabilities within 0.05."""
    import keras

    from device.runtime import Classifier

    model = keras.saving.load_model(tiny_keras["keras"])
    clf = Classifier.from_model_dir(tiny_keras["int8"], num_threads=1)
    assert clf.input_dtype == np.uint8 and clf.input_size == (32, 32)
    imgs, _ = tiny_images(32, seed=1)
    ref = model.predict(imgs.astype(np.float32), verbose=0).reshape(-1)
    got = np.array([clf.classify(im)[0] for im in imgs])
    assert np.abs(got - ref).max() < 0.05
    assert ref.std() > 0.1  # the fixture is not a constant function
