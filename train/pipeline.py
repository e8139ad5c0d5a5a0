"""The tf.data input pipeline, in the order the original log found fast:

    paths ─► decode + resize (parallel) ─► cache ─► shuffle ─► batch ─► augment ─► prefetch

`decode_and_resize` is the preprocessing contract with the device (see the README): decode to RGB
uint8, bilinear resize without antialiasing, float32 values 0..255, NOT rounded. Scaling to what
the backbone wants happens inside the model, so the pipeline never rescales.

Augmentations work on whole batches in the 0..255 range, per image, with stateless random ops
seeded from one seed, so a run is repeatable (as far as TensorFlow's kernels are deterministic).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from train.config import AugmentConfig

log = logging.getLogger(__name__)
AUTOTUNE = tf.data.AUTOTUNE
FULL_SCALE = 255.0


def _hw(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def decode_and_resize(path, size) -> tf.Tensor:
    """File path (string tensor) → float32 (H, W, 3) RGB, 0..255 — the training/device contract."""
    data = tf.io.read_file(path)
    # JPEG: decode_image uses libjpeg's fast integer IDCT (INTEGER_FAST), which differs from OpenCV's
    # and Pillow's default (ISLOW) by up to ~5 grey levels; INTEGER_ACCURATE is bit-identical to the
    # device's cv2 decode (tests/test_train_preprocess_parity.py). Other formats: decode_image.
    img = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False),  # uint8; gray/RGBA → RGB
    )
    img.set_shape([None, None, 3])
    return tf.image.resize(img, _hw(size), method="bilinear", antialias=False)  # float32, not rounded


def load_images(paths: Sequence[str], size) -> np.ndarray:
    """Eagerly load a few images (for plots/tests) through the same contract."""
    return (
        np.stack([decode_and_resize(tf.constant(str(p)), size).numpy() for p in paths])
        if len(paths)
        else np.zeros((0, *_hw(size), 3), np.float32)
    )


# ------------------------------------------------------------------------------ augmentation


def augment_batch(images: tf.Tensor, seed: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """The log's six augmentations on a float32 batch (B, H, W, 3) in 0..255, each drawn per image.

    Parameters are those of the log, given on the 0..1 scale the log used (its Rescale(1/255) came
    first) and applied here on the 0..255 scale: brightness ±0.15 → ±38.25 grey levels, noise
    stddev 0.08 → 20.4 grey levels. Output is clipped back to 0..255.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
    x = tf.cast(images, tf.float32)
    batch = tf.shape(x)[0]
    per_image = tf.stack([batch, 1, 1, 1])
    if cfg.flip:
        x = tf.image.stateless_random_flip_left_right(x, seed=seeds[0])
    if cfg.brightness:
        delta = tf.random.stateless_uniform(per_image, seeds[1], -cfg.brightness, cfg.brightness)
        x = x + delta * FULL_SCALE
    if cfg.contrast:
        lo, hi = cfg.contrast
        factor = tf.random.stateless_uniform(per_image, seeds[2], lo, hi)
        mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)  # per image and channel, as adjust_contrast
        x = (x - mean) * factor + mean
    if cfg.hue or cfg.saturation:
        hsv = tf.image.rgb_to_hsv(tf.clip_by_value(x, 0.0, FULL_SCALE) / FULL_SCALE)
        h, s, v = tf.unstack(hsv, axis=-1)
        if cfg.hue:
            h = h + tf.random.stateless_uniform(tf.stack([batch, 1, 1]), seeds[3], -cfg.hue, cfg.hue)
            h = h - tf.floor(h)  # hue wraps around
        if cfg.saturation:
            lo, hi = cfg.saturation
            s = tf.clip_by_value(s * tf.random.stateless_uniform(tf.stack([batch, 1, 1]), seeds[4], lo, hi), 0.0, 1.0)
        x = tf.image.hsv_to_rgb(tf.stack([h, s, v], axis=-1)) * FULL_SCALE
    if cfg.noise:
        x = x + tf.random.stateless_normal(tf.shape(x), seeds[5], stddev=cfg.noise * FULL_SCALE)
    return tf.clip_by_value(x, 0.0, FULL_SCALE)


# ------------------------------------------------------------------------------ datasets


def image_dataset(
    paths: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    size,
    *,
    batch_size: int,
    training: bool = False,
    cache: str = "memory",
    cache_path: str | Path | None = None,
    shuffle_buffer: int = 1000,
    seed: int = 0,
    augment: AugmentConfig | None = None,
    prefetch: bool = True,
    label_dtype=tf.float32,
) -> tf.data.Dataset:
    """(image float32 0..255, label) batches. Evaluation sets (`training=False`) are neither shuffled
    nor augmented, so predictions line up with `paths`."""
    paths = [str(p) for p in paths]
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths, tf.string), tf.constant(np.asarray(labels), label_dtype))
    )
    ds = ds.map(lambda p, y: (decode_and_resize(p, size), y), num_parallel_calls=AUTOTUNE, deterministic=True)
    if cache == "memory":
        ds = ds.cache()
    elif cache == "file":
        if cache_path is None:
            raise ValueError("cache='file' needs a cache_path")
        Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
        ds = ds.cache(str(cache_path))
    if training:
        ds = ds.shuffle(min(shuffle_buffer, max(1, len(paths))), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training and augment is not None and augment.active:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda xy, s: (augment_batch(xy[0], s, augment), xy[1]), num_parallel_calls=AUTOTUNE, deterministic=True
        )
    if prefetch:
        ds = ds.prefetch(AUTOTUNE)
    return ds


def array_dataset(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    training: bool = False,
    seed: int = 0,
    label_dtype=np.float32,
) -> tf.data.Dataset:
    """Batches of cached backbone features (the fast path): shuffled each epoch when training."""
    ds = tf.data.Dataset.from_tensor_slices((features.astype(np.float32), labels.astype(label_dtype)))
    if training:
        ds = ds.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(AUTOTUNE)
