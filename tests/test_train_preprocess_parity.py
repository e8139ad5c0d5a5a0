"""Preprocessing parity: for the same image file, the tensor the device feeds the model
(`load_image_rgb` → `Cropper(full)` → `resize_to_input`) and the one training feeds it
(`train.pipeline.decode_and_resize`) differ by at most 1 grey level.

What holds, and why (figures from this test on opencv-python-headless 4.13 / TensorFlow 2.21):

- Decoding is bit-identical (max |diff| = 0) for PNG, BMP, and JPEG (4:2:0, 4:4:4, grey) — JPEG
  only because training decodes with ``dct_method="INTEGER_ACCURATE"``: ``tf.io.decode_image``
  uses libjpeg's INTEGER_FAST IDCT, which differs from OpenCV's (and Pillow's) ISLOW by up to
  5 grey levels (measured here on q75-q90 JPEGs).
- Resizing differs by < 0.76 grey levels: both are half-pixel bilinear without antialiasing;
  OpenCV computes in 11-bit fixed point and rounds to uint8, TensorFlow keeps float32.
- Square files (what `crop-faces` writes): `full` mode's centre crop is the identity, so device
  and training agree whatever the resize factor (up or down, square or not).
- Non-square files: training resizes the whole file (a stretch). The device matches that only in
  ``square: stretch`` mode. In the default ``center_crop`` mode the device matches training on
  the file that `crop-faces --mode full` wrote from the same photo — the intended chain: raw
  photos → crop-faces (device Cropper) → training; camera frame → same Cropper → model.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from device.crop import CropConfig, Cropper, load_image_rgb, resize_to_input

tf = pytest.importorskip("tensorflow")
pipeline = pytest.importorskip("train.pipeline")
TOLERANCE = 1.0

# (h, w): square and not, smaller and larger than the model inputs below
IMAGE_SIZES = [(20, 20), (64, 64), (101, 101), (17, 23), (240, 320), (360, 270)]
INPUT_SIZES = [(32, 32), (96, 96), (24, 40)]
FORMATS = {
    "png": (".png", []),
    "jpg420": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]),
    "jpg444": (
        ".jpg",
        [cv2.IMWRITE_JPEG_QUALITY, 75, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444],
    ),
    "bmp": (".bmp", []),
}


def photo_like(h: int, w: int, seed: int) -> np.ndarray:
    """Gradients + texture + edges, so JPEG blocks, chroma subsampling and resize all matter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), 128 + 100 * np.sin(x / 3 + y / 5)], -1)
    img += rng.normal(0, 30, img.shape)
    img = cv2.GaussianBlur(img, (0, 0), 0.8)
    img[h // 3 : h // 2, w // 4 : w // 2] = (250, 30, 60)  # a saturated block: chroma edges
    return np.clip(img, 0, 255).astype(np.uint8)


def write(path, rgb, params):
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    return path


def device_tensor(path, size, cfg: CropConfig | None = None) -> np.ndarray:
    crop = Cropper(cfg or CropConfig(mode="full"))(load_image_rgb(path)).image
    return resize_to_input(crop, size).astype(np.float32)


def training_tensor(path, size) -> np.ndarray:
    return pipeline.decode_and_resize(tf.constant(str(path)), size).numpy()


def max_diff(a, b) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_decode_is_bit_identical(tmp_path, fmt):
    ext, params = FORMATS[fmt]
    for i, (h, w) in enumerate(IMAGE_SIZES):
        p = write(tmp_path / f"{i}{ext}", photo_like(h, w, i), params)
        # resize to the file's own size is the identity in tf.image.resize: this is the decode alone
        assert max_diff(load_image_rgb(p), training_tensor(p, (h, w))) == 0.0, (fmt, h, w)
    grey = tmp_path / f"grey{ext}"
    cv2.imwrite(str(grey), cv2.cvtColor(photo_like(40, 30, 9), cv2.COLOR_RGB2GRAY), params)
    assert max_diff(load_image_rgb(grey), training_tensor(grey, (40, 30))) == 0.0


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_square_files_full_mode(tmp_path, fmt):
    """Square files (crop-faces output): the default full mode agrees ≤ 1 level, up- and downscaled."""
    ext, params = FORMATS[fmt]
    worst = 0.0
    for i, (h, w) in enumerate(s for s in IMAGE_SIZES if s[0] == s[1]):
        p = write(tmp_path / f"{i}{ext}", photo_like(h, w, 10 + i), params)
        for size in INPUT_SIZES:
            worst = max(worst, max_diff(device_tensor(p, size), training_tensor(p, size)))
    assert 0.0 < worst <= TOLERANCE  # > 0: OpenCV rounds to uint8, TensorFlow does not


@pytest.mark.parametrize("fmt", ["png", "jpg420"])
def test_non_square_files_stretch_mode(tmp_path, fmt):
    ext, params = FORMATS[fmt]
    for i, (h, w) in enumerate(s for s in IMAGE_SIZES if s[0] != s[1]):
        p = write(tmp_path / f"{i}{ext}", photo_like(h, w, 20 + i), params)
        for size in INPUT_SIZES:
            d = max_diff(device_tensor(p, size, CropConfig(mode="full", square="stretch")), training_tensor(p, size))
            assert d <= TOLERANCE, (fmt, h, w, size, d)


def test_non_square_center_crop_matches_training_on_crop_faces_output(tmp_path):
    """Default full mode on a raw non-square photo == training on what crop-faces --mode full wrote."""
    from train import crop_faces

    raw = tmp_path / "raw" / "open" / "p1"
    raw.mkdir(parents=True)
    shapes = [s for s in IMAGE_SIZES if s[0] != s[1]]
    for i, (h, w) in enumerate(shapes):
        write(raw / f"{i}.jpg", photo_like(h, w, 30 + i), FORMATS["jpg420"][1])
    crop_faces.run(tmp_path / "raw", tmp_path / "ds", CropConfig(mode="full"))
    for i, (h, w) in enumerate(shapes):
        src, crop = raw / f"{i}.jpg", tmp_path / "ds" / "open" / "p1" / f"{i}.png"
        assert load_image_rgb(crop).shape == (min(h, w), min(h, w), 3)
        for size in INPUT_SIZES:
            d = max_diff(device_tensor(src, size), training_tensor(crop, size))
            assert d <= TOLERANCE, (h, w, size, d)
        # and what does NOT hold: training straight on the raw non-square file sees a stretched image
        assert max_diff(device_tensor(src, (32, 32)), training_tensor(src, (32, 32))) > 10


def test_parity_on_a_real_photograph(tmp_path):
    """A real JPEG from another encoder (matplotlib's sample portrait, 512x600, non-square)."""
    cbook = pytest.importorskip("matplotlib.cbook")
    p = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    assert max_diff(load_image_rgb(p), training_tensor(p, (600, 512))) == 0.0
    for size in [(32, 32), (96, 96), (224, 224)]:
        d = max_diff(device_tensor(p, size, CropConfig(square="stretch")), training_tensor(p, size))
        assert d <= TOLERANCE, (size, d)
