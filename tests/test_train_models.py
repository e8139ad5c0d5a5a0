"""Backbones and heads: parameter counts, in-model preprocessing, weights handling. weights=None
everywhere: nothing is downloaded (the download test points at a closed loopback port)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device.errors import FaceedgeError
from train.config import ModelConfig, validate

keras = pytest.importorskip("keras")
from train import models  # noqa: E402


def test_mobilenet_v2_alpha1_224_head_has_exactly_1281_trainable_parameters():
    built = models.build_model(ModelConfig(weights="none"), 2)
    assert models.trainable_params(built.model) == 1281  # as in the log: Dense(1) on 1280 pooled features
    assert built.model.input_shape == (None, 224, 224, 3)
    assert built.model.output_shape == (None, 1)
    assert built.model.layers[-1].activation.__name__ == "sigmoid"
    assert not built.backbone.trainable
    assert built.head_model.input_shape == (None, 1280)


def test_vgg16_head_is_fc6_fc7_2048_with_dropout():
    built = models.build_model(ModelConfig(backbone="vgg16", weights="none", input_size=32), 2)
    m = built.model
    assert m.get_layer("fc6").kernel.shape == (512, 2048)  # 1x1x512 flattened at 32 px (7x7x512 at 224)
    assert m.get_layer("fc7").kernel.shape == (2048, 2048)
    assert [m.get_layer(n).rate for n in ("dropout6", "dropout7")] == [0.5, 0.5]
    assert m.get_layer("predictions").kernel.shape == (2048, 1)
    assert models.trainable_params(m) == 512 * 2048 + 2048 + 2048 * 2048 + 2048 + 2048 + 1


def test_mobilenet_preprocessing_maps_0_to_minus1_and_255_to_1():
    built = models.build_model(ModelConfig(weights="none", alpha=0.35, input_size=32), 2)
    pre = built.model.get_layer("preprocess")
    x = np.stack([np.zeros((32, 32, 3)), np.full((32, 32, 3), 255.0), np.full((32, 32, 3), 127.5)]).astype("float32")
    y = np.asarray(pre(x))
    assert np.allclose(y[0], -1.0) and np.allclose(y[1], 1.0) and np.allclose(y[2], 0.0, atol=1e-6)


def test_vgg16_preprocessing_equals_keras_preprocess_input():
    built = models.build_model(ModelConfig(backbone="vgg16", weights="none", input_size=32), 2)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    ours = np.asarray(built.model.get_layer("preprocess")(x))
    ref = keras.applications.vgg16.preprocess_input(x.copy())
    np.testing.assert_allclose(ours, ref, atol=1e-3)
    assert not built.model.get_layer("preprocess").trainable_weights


def test_more_than_two_labels_is_softmax():
    built = models.build_model(ModelConfig(weights="none", alpha=0.35, input_size=32), 3)
    assert built.model.output_shape == (None, 3) and built.output_kind == "softmax"
    p = built.model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)


def _bn_momenta(built) -> set[float]:
    return {layer.momentum for layer in built.backbone.layers if isinstance(layer, keras.layers.BatchNormalization)}


def test_bn_momentum_of_a_backbone_trained_from_scratch():
    small = {"weights": "none", "alpha": 0.35, "input_size": 32}
    assert _bn_momenta(models.build_model(ModelConfig(**small, freeze_backbone=False), 2)) == {0.9}
    built = models.build_model(ModelConfig(**small, freeze_backbone=False, bn_momentum=0.8), 2)
    assert _bn_momenta(built) == {0.8}
    # the value is what the saved model carries (and what training used: Keras reads it at call time)
    assert {
        layer["config"]["momentum"]
        for layer in built.backbone.get_config()["layers"]
        if layer["class_name"] == "BatchNormalization"
    } == {0.8}
    # frozen (BatchNorm in inference mode): Keras' own MobileNetV2 momentum is kept
    assert _bn_momenta(models.build_model(ModelConfig(**small, bn_momentum=0.8), 2)) == {0.999}
    with pytest.raises(FaceedgeError, match=r"model\.bn_momentum"):
        validate({"data": {"root": "faces"}, "model": {"bn_momentum": 1.0}})


def test_head_model_shares_weights_with_full_model():
    built = models.build_model(ModelConfig(weights="none", alpha=0.35, input_size=32), 2)
    x = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    w = built.head_model.get_layer("predictions")
    w.set_weights([np.full_like(w.get_weights()[0], 0.01), np.array([0.3], "float32")])
    full = built.model.predict(x, verbose=0)
    via_features = built.head_model.predict(built.feature_model.predict(x, verbose=0), verbose=0)
    np.testing.assert_allclose(full, via_features, atol=1e-5)


def test_unfreeze_top_keeps_batchnorm_frozen():
    built = models.build_model(ModelConfig(weights="none", alpha=0.35, input_size=32), 2)
    n = models.unfreeze_top(built.backbone, 20)
    layers = built.backbone.layers
    assert n > 0
    assert all(not layer.trainable for layer in layers[:-20])
    top = layers[-20:]
    assert all(not layer.trainable for layer in top if isinstance(layer, keras.layers.BatchNormalization))
    assert any(layer.trainable for layer in top if isinstance(layer, keras.layers.Conv2D))
    assert models.trainable_params(built.model) > 1281 * 1  # more than the head now


def test_local_weights_file_is_loaded(tmp_path):
    cfg = ModelConfig(weights="none", alpha=0.35, input_size=32)
    src = models.build_model(cfg, 2).backbone
    path = tmp_path / "mobilenet_v2_no_top.weights.h5"
    src.save_weights(str(path))
    built = models.build_model(cfg.model_copy(update={"weights": str(path)}), 2)
    for a, b in zip(src.get_weights(), built.backbone.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_missing_weights_file_is_named(tmp_path):
    missing = tmp_path / "nothing_here.h5"
    with pytest.raises(FaceedgeError, match="nothing_here.h5: model.weights file not found"):
        models.build_model(ModelConfig(weights=str(missing), alpha=0.35, input_size=32), 2)


def test_unreachable_imagenet_download_suggests_offline_options(monkeypatch):
    cached = Path.home() / ".keras" / "models"
    if any(cached.glob("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5")):
        pytest.skip("weights are cached here; no download would be attempted")
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # discard port: the download fails at once, on loopback
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(FaceedgeError) as e:
        models.build_model(ModelConfig(weights="imagenet", alpha=0.35, input_size=96), 2)
    msg = str(e.value)
    assert "could not download the ImageNet weights" in msg
    assert "weights: none" in msg and "no_top.h5" in msg and "\n" not in msg


def test_legacy_h5_weights_file_like_keras_release_files(tmp_path):
    """Keras' own no-top files (e.g. mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5)
    are legacy HDF5 weights by layer name: what an air-gapped user copies in. A file for another
    width is a one-line error naming the file."""
    h5py = pytest.importorskip("h5py")
    from keras.src.legacy.saving import legacy_h5_format

    cfg = ModelConfig(weights="none", alpha=0.35, input_size=32)
    src = models.build_model(cfg, 2).backbone
    path = tmp_path / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_32_no_top.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, src)
    built = models.build_model(cfg.model_copy(update={"weights": str(path)}), 2)
    for a, b in zip(src.get_weights(), built.backbone.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FaceedgeError, match=rf"{path.name}: cannot load as mobilenet_v2 backbone weights"):
        models.build_model(cfg.model_copy(update={"weights": str(path), "alpha": 0.5}), 2)
