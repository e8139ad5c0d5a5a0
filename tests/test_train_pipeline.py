"""The tf.data pipeline: the decode/resize contract and the log's six augmentations."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from train.config import AugmentConfig

tf = pytest.importorskip("tensorflow")
from train import pipeline  # noqa: E402

OFF = dict(flip=False, brightness=0.0, contrast=None, hue=0.0, saturation=None, noise=0.0)


def only(**on) -> AugmentConfig:
    return AugmentConfig(**{**OFF, **on})


def batch(n=8, size=16, seed=0) -> tf.Tensor:
    rng = np.random.default_rng(seed)
    return tf.constant(rng.uniform(40, 215, (n, size, size, 3)).astype("float32"))


def seed(a=1, b=2):
    return tf.constant([a, b], tf.int64)


def test_decode_and_resize_contract(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "gray.png")  # grayscale → 3 channels
    Image.fromarray(np.dstack([rgb, np.full((30, 40), 255, np.uint8)])).save(tmp_path / "rgba.png")
    out = pipeline.decode_and_resize(tf.constant(str(tmp_path / "a.png")), 20)
    assert out.dtype == tf.float32 and out.shape == (20, 20, 3)
    ref = tf.image.resize(rgb, (20, 20), method="bilinear", antialias=False)
    np.testing.assert_array_equal(out.numpy(), ref.numpy())
    assert not np.allclose(out.numpy(), np.round(out.numpy()))  # not rounded
    g = pipeline.decode_and_resize(tf.constant(str(tmp_path / "gray.png")), (10, 12)).numpy()
    assert g.shape == (10, 12, 3) and np.array_equal(g[..., 0], g[..., 2])
    a = pipeline.decode_and_resize(tf.constant(str(tmp_path / "rgba.png")), 20).numpy()
    np.testing.assert_allclose(a, out.numpy())


def test_everything_off_is_identity():
    x = batch()
    np.testing.assert_array_equal(pipeline.augment_batch(x, seed(), only()).numpy(), x.numpy())


def test_flip_mirrors_some_images_and_keeps_the_others():
    x = batch(16)
    y = pipeline.augment_batch(x, seed(), only(flip=True)).numpy()
    flipped = [np.array_equal(y[i], x.numpy()[i, :, ::-1]) for i in range(16)]
    kept = [np.array_equal(y[i], x.numpy()[i]) for i in range(16)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert any(flipped) and any(kept)


def test_brightness_shifts_each_image_by_at_most_0_15_of_full_scale():
    x = tf.fill((32, 8, 8, 3), 127.5)
    y = pipeline.augment_batch(x, seed(), only(brightness=0.15)).numpy()
    delta = y[:, 0, 0, 0] - 127.5
    assert np.all(np.abs(delta) <= 0.15 * 255 + 1e-3)
    assert np.allclose(y, y[:, :1, :1, :1])  # one shift per image
    assert delta.std() > 10  # drawn per image, spread over the range


def test_contrast_scales_deviation_from_mean_within_0_7_1_3():
    x = batch(32)
    y = pipeline.augment_batch(x, seed(), only(contrast=(0.7, 1.3))).numpy()
    xs = x.numpy()
    ratio = (y - y.mean(axis=(1, 2), keepdims=True)).std(axis=(1, 2, 3)) / (
        xs - xs.mean(axis=(1, 2), keepdims=True)
    ).std(axis=(1, 2, 3))
    assert np.all(ratio >= 0.7 - 1e-3) and np.all(ratio <= 1.3 + 1e-3)
    assert ratio.max() - ratio.min() > 0.2


def test_hue_and_saturation_keep_grey_grey_and_change_colour():
    grey = tf.fill((4, 4, 4, 3), 100.0)
    y = pipeline.augment_batch(grey, seed(), only(hue=0.05, saturation=(0.7, 2.0))).numpy()
    np.testing.assert_allclose(y, 100.0, atol=1e-3)
    colour = tf.constant(np.tile(np.array([200.0, 80.0, 40.0], "float32"), (8, 4, 4, 1)))
    y = pipeline.augment_batch(colour, seed(), only(hue=0.05)).numpy()
    assert np.abs(y - colour.numpy()).max() > 1.0
    np.testing.assert_allclose(y.max(axis=-1), 200.0, atol=0.5)  # hue keeps value (max channel)


def test_noise_has_stddev_0_08_of_full_scale():
    x = tf.fill((8, 32, 32, 3), 127.5)
    y = pipeline.augment_batch(x, seed(), only(noise=0.08)).numpy()
    assert abs((y - 127.5).std() - 0.08 * 255) < 1.0


def test_all_six_stay_in_range_and_are_deterministic():
    rng = np.random.default_rng(3)
    x = tf.constant(rng.choice([0.0, 255.0, 128.0], (16, 12, 12, 3)).astype("float32"))
    cfg = AugmentConfig()
    a = pipeline.augment_batch(x, seed(), cfg).numpy()
    b = pipeline.augment_batch(x, seed(), cfg).numpy()
    c = pipeline.augment_batch(x, seed(7, 7), cfg).numpy()
    assert a.min() >= 0.0 and a.max() <= 255.0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def _files(tmp_path, n=10):
    paths = []
    for i in range(n):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.full((20, 20, 3), i * 20, np.uint8)).save(p)
        paths.append(str(p))
    return paths


def test_eval_dataset_keeps_order_and_values(tmp_path):
    paths = _files(tmp_path)
    ds = pipeline.image_dataset(paths, np.arange(10) % 2, 8, batch_size=4, cache="none")
    xs = np.concatenate([x.numpy() for x, _ in ds])
    assert xs.shape == (10, 8, 8, 3)
    np.testing.assert_allclose(xs[:, 0, 0, 0], np.arange(10) * 20)


def test_training_dataset_shuffles_augments_and_caches_to_file(tmp_path):
    paths = _files(tmp_path)
    ds = pipeline.image_dataset(
        paths,
        np.arange(10) % 2,
        8,
        batch_size=10,
        training=True,
        cache="file",
        cache_path=tmp_path / "cache" / "train",
        seed=0,
        augment=AugmentConfig(),
    )
    e1 = next(iter(ds))[0].numpy()
    e2 = next(iter(ds))[0].numpy()
    assert e1.min() >= 0 and e1.max() <= 255
    assert not np.array_equal(e1, e2)  # new order / new augmentation each epoch
    assert list((tmp_path / "cache").glob("train*"))
    plain = pipeline.image_dataset(
        paths,
        np.arange(10) % 2,
        8,
        batch_size=10,
        training=True,
        cache="memory",
        seed=0,
        augment=AugmentConfig(enabled=False),
    )
    got = sorted(next(iter(plain))[0].numpy()[:, 0, 0, 0].tolist())
    assert got == [i * 20.0 for i in range(10)]  # shuffled, not altered
