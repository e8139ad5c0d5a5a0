"""device.crop: loading, resizing, the crop modes, and the face path (geometry with an injected
detector; the real Haar cascade on a blank frame and on a real photograph)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from device.crop import (
    CropConfig,
    Cropper,
    HaarDetector,
    Preparer,
    YuNetDetector,
    center_square,
    face_square,
    load_image_rgb,
    resize_to_input,
    save_image_rgb,
)
from device.errors import FaceedgeError
from device.validation import ValidationError

RNG = np.random.default_rng(7)


def rand_rgb(h: int, w: int) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


class FakeDetector:
    """Injected through the Detector protocol: returns fixed boxes and counts calls."""

    def __init__(self, boxes):
        self.boxes = list(boxes)
        self.calls = 0

    def detect(self, rgb):
        self.calls += 1
        return list(self.boxes)


# ----------------------------------------------------------------------------- loading


def test_load_png_roundtrip_is_exact_and_rgb_ordered(tmp_path):
    img = rand_rgb(23, 31)
    img[0, 0] = (255, 0, 0)  # pure red stays in channel 0 (RGB, not BGR)
    save_image_rgb(tmp_path / "a.png", img)
    back = load_image_rgb(tmp_path / "a.png")
    assert back.dtype == np.uint8 and back.shape == (23, 31, 3)
    assert np.array_equal(back, img)
    assert tuple(back[0, 0]) == (255, 0, 0)


def test_load_grey_and_rgba(tmp_path):
    grey = RNG.integers(0, 256, (10, 12), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    g = load_image_rgb(tmp_path / "g.png")
    assert g.shape == (10, 12, 3)
    assert all(np.array_equal(g[..., c], grey) for c in range(3))

    rgba = np.dstack([rand_rgb(8, 9), np.full((8, 9), 7, np.uint8)])  # nearly transparent
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    a = load_image_rgb(tmp_path / "a.png")
    assert np.array_equal(a, rgba[..., :3])  # alpha dropped, not composited (as tf decode_image)


def test_load_ignores_exif_orientation_like_tensorflow(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    img = rand_rgb(20, 40)
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = 6  # "rotate 90° CW to display"
    pil.save(tmp_path / "r.jpg", quality=95, exif=exif)
    out = load_image_rgb(tmp_path / "r.jpg")
    assert out.shape == (20, 40, 3)  # stored orientation, as tf.io.decode_image returns it


@pytest.mark.parametrize("content, words", [(None, "not found"), (b"", "empty"), (b"hello, not an image", "decode")])
def test_load_errors_name_the_file(tmp_path, content, words):
    p = tmp_path / "bad.jpg"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(FaceedgeError) as e:
        load_image_rgb(p)
    assert str(p) in str(e.value) and words in str(e.value)


def test_save_rejects_unknown_extension(tmp_path):
    with pytest.raises(FaceedgeError, match="unsupported image extension"):
        save_image_rgb(tmp_path / "x.webp", rand_rgb(4, 4))
    assert not list(tmp_path.iterdir())  # nothing half-written


# ----------------------------------------------------------------------------- resize


def test_resize_shapes_and_preallocated_out():
    img = rand_rgb(48, 64)
    out = np.zeros((32, 24, 3), np.uint8)
    r = resize_to_input(img, (32, 24), out=out)
    assert r is out and out.shape == (32, 24, 3)
    assert np.array_equal(out, cv2.resize(img, (24, 32), interpolation=cv2.INTER_LINEAR))
    # a non-contiguous view (a crop) resizes like its contiguous copy
    view = img[5:37, 10:42]
    assert np.array_equal(resize_to_input(view, (16, 16)), resize_to_input(np.ascontiguousarray(view), (16, 16)))
    # already the right size: returned as is, or copied into out
    assert resize_to_input(img, (48, 64)) is img
    buf = np.zeros_like(img)
    assert resize_to_input(img, (48, 64), out=buf) is buf and np.array_equal(buf, img)


def test_resize_values_half_pixel_bilinear():
    # 2x downscale with half-pixel centres = mean of each 2x2 block (what tf bilinear does)
    img = rand_rgb(8, 8)
    down = resize_to_input(img, (4, 4)).astype(float)
    ref = img.reshape(4, 2, 4, 2, 3).astype(float).mean(axis=(1, 3))
    assert np.abs(down - ref).max() <= 0.5
    # upscale of a 1x2 ramp 0 → 200 to width 4: samples at x = -0.25, 0.25, 0.75, 1.25 → 0, 50, 150, 200
    ramp = np.zeros((1, 2, 3), np.uint8)
    ramp[0, 1] = 200
    up = resize_to_input(ramp, (1, 4))[0, :, 0]
    assert up.tolist() == [0, 50, 150, 200]


def test_resize_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        resize_to_input(np.zeros((4, 4, 3), np.float32), (2, 2))
    with pytest.raises(ValueError, match="out buffer"):
        resize_to_input(rand_rgb(4, 4), (2, 2), out=np.zeros((3, 2, 3), np.uint8))


# ----------------------------------------------------------------------------- config


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValidationError) as e:
        CropConfig.model_validate({"mode": "face", "marjin": 0.2})
    assert e.value.loc == ("marjin",)
    with pytest.raises(ValidationError) as e:
        CropConfig(mode="corner")
    assert e.value.loc == ("mode",)
    with pytest.raises(ValidationError, match="yunet_model"):
        CropConfig(mode="face", detector="yunet")


def test_yunet_missing_file_names_key_and_file(tmp_path):
    missing = tmp_path / "face_detection_yunet_2023mar.onnx"
    with pytest.raises(FaceedgeError) as e:
        Cropper(CropConfig(mode="face", detector="yunet", yunet_model=str(missing)))
    assert "crop.yunet_model" in str(e.value) and str(missing) in str(e.value)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(FaceedgeError, match="cannot load"):
        YuNetDetector(CropConfig(mode="face", detector="yunet", yunet_model=str(bad)))


# ----------------------------------------------------------------------------- full / center


def test_full_center_crop_is_a_view_of_the_centre_square():
    img = rand_rgb(480, 640)
    r = Cropper(CropConfig())(img)
    assert r.box == (80, 0, 480, 480) and r.faces == 0
    assert np.shares_memory(r.image, img)  # no copy per frame
    assert np.array_equal(r.image, img[:, 80:560])
    tall = rand_rgb(300, 200)
    assert Cropper()(tall).box == (0, 50, 200, 200)
    square = rand_rgb(50, 50)
    assert Cropper()(square).image is square  # identity for square images (training crops)


def test_full_letterbox_and_stretch():
    img = rand_rgb(30, 50)
    r = Cropper(CropConfig(square="letterbox", pad_value=114))(img)
    assert r.image.shape == (50, 50, 3) and r.box == (0, 0, 50, 30)
    assert np.array_equal(r.image[10:40], img)
    assert (r.image[:10] == 114).all() and (r.image[40:] == 114).all()
    s = Cropper(CropConfig(square="stretch"))(img)
    assert s.image is img and s.box == (0, 0, 50, 30)


def test_center_mode_fraction():
    img = rand_rgb(480, 640)
    r = Cropper(CropConfig(mode="center", fraction=0.5))(img)
    assert r.box == (200, 120, 240, 240)
    assert np.array_equal(r.image, img[120:360, 200:440])
    assert center_square(10, 10, 1.0) == (0, 0, 10, 10)


# ----------------------------------------------------------------------------- face geometry (injected detector)


def test_face_square_geometry():
    # margin 0.25 on a 40x60 box: side = 60 * 1.5 = 90, centred on the box centre (120, 130)
    assert face_square((100, 100, 40, 60), (480, 640), 0.25) == (75, 85, 90, 90)
    # near the top-left corner: shifted inside, same size
    assert face_square((0, 0, 50, 50), (480, 640), 0.2) == (0, 0, 70, 70)
    # near the bottom-right corner
    assert face_square((600, 440, 40, 40), (480, 640), 0.5) == (560, 400, 80, 80)
    # larger than the frame: shrunk to min(H, W) and kept inside
    assert face_square((10, 10, 300, 300), (240, 320), 0.5) == (40, 0, 240, 240)  # centred on x=160


def test_face_mode_picks_largest_and_applies_margin():
    img = rand_rgb(240, 320)
    det = FakeDetector([(10, 10, 20, 20), (150, 80, 60, 60), (250, 150, 30, 30)])
    cropper = Cropper(CropConfig(mode="face", margin=0.1), detector=det)
    r = cropper(img)
    assert r.faces == 3
    assert r.box == (144, 74, 72, 72)  # 60 * 1.2 = 72 around centre (180, 110)
    assert r.image.shape == (72, 72, 3) and np.array_equal(r.image, img[74:146, 144:216])
    cropper(img)
    assert det.calls == 2 and cropper.detector is det  # built once, called per frame


def test_face_mode_no_face_skip_or_full():
    img = rand_rgb(240, 320)
    skip = Cropper(CropConfig(mode="face"), detector=FakeDetector([]))(img)
    assert skip.image is None and skip.box is None and skip.faces == 0
    full = Cropper(CropConfig(mode="face", on_no_face="full"), detector=FakeDetector([]))(img)
    assert full.box == (40, 0, 240, 240) and full.faces == 0


def test_cropper_rejects_non_rgb():
    with pytest.raises(ValueError, match="HxWx3"):
        Cropper()(np.zeros((10, 10), np.uint8))


# ----------------------------------------------------------------------------- the real Haar detector


def test_haar_finds_no_face_in_blank_or_smooth_frames():
    cropper = Cropper(CropConfig(mode="face"))
    assert isinstance(cropper.detector, HaarDetector)
    blank = np.full((480, 640, 3), 128, np.uint8)
    yy, xx = np.mgrid[0:480, 0:640]
    gradient = np.dstack([xx * 255 // 639, yy * 255 // 479, np.full_like(xx, 90)]).astype(np.uint8)
    for frame in (blank, gradient):
        r = cropper(frame)
        assert r.image is None and r.faces == 0


@pytest.fixture(scope="module")
def portrait():
    """A real photograph of a face: matplotlib's bundled sample `grace_hopper.jpg` (512x600)."""
    cbook = pytest.importorskip("matplotlib.cbook")
    return load_image_rgb(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def test_haar_detects_a_real_face(portrait):
    h, w = portrait.shape[:2]
    boxes = HaarDetector(CropConfig(mode="face")).detect(portrait)
    assert len(boxes) == 1
    x, y, bw, bh = boxes[0]
    # the face is in the upper middle of the portrait, 35-50 % of its width
    assert 0.3 * w < x + bw / 2 < 0.6 * w and 0.2 * h < y + bh / 2 < 0.5 * h
    assert 0.35 * w < bw < 0.5 * w
    r = Cropper(CropConfig(mode="face", margin=0.2))(portrait)
    assert r.faces == 1 and r.box[2] == r.box[3] == round(bw * 1.4)
    assert r.image.shape == (r.box[3], r.box[2], 3)


def test_haar_on_a_large_frame_maps_boxes_back(portrait):
    """Frames wider than detect_width are downscaled for detection; boxes come back in frame pixels."""
    det = HaarDetector(CropConfig(mode="face"))
    ((x0, y0, w0, _),) = det.detect(portrait)
    canvas = np.full((900, 1400, 3), 90, np.uint8)
    canvas[200 : 200 + portrait.shape[0], 700 : 700 + portrait.shape[1]] = portrait
    boxes = det.detect(canvas)
    assert len(boxes) == 1
    x, y, w, _ = boxes[0]
    # same face, offset by (700, 200); the coarser detection grid allows ~10 % slack
    assert abs((x + w / 2) - (x0 + w0 / 2 + 700)) < 0.1 * w0
    assert abs(y - (y0 + 200)) < 0.15 * w0 and abs(w - w0) < 0.15 * w0


def test_yunet_output_parsing_with_a_faithful_fake_net():
    """No YuNet ONNX file can be had offline, so the real cv2.FaceDetectorYN cannot run here. This
    fakes exactly the two calls the detector makes (setInputSize, detect → (n, Nx15 float32 | None))
    to check size handling, the mapping back from the downscaled copy and the min_size filter."""

    class FakeYN:
        def __init__(self, faces):
            self.faces, self.sizes, self.shapes = faces, [], []

        def setInputSize(self, size):
            self.sizes.append(size)

        def detect(self, bgr):
            self.shapes.append(bgr.shape)
            return (0, None) if self.faces is None else (len(self.faces), self.faces)

    def row(x, y, w, h, score=0.9):
        return [x, y, w, h, *([0.0] * 10), score]

    det = YuNetDetector.__new__(YuNetDetector)  # skip __init__: it needs the ONNX file
    det.detect_width, det.min_size, det._size = 480, 40, None
    det.net = FakeYN(np.array([row(100, 50, 60.4, 60), row(10, 10, 15, 15)], np.float32))
    frame = rand_rgb(720, 960)  # downscaled by 0.5 for detection
    assert det.detect(frame) == [(200, 100, 120, 120)]  # the 30 px face is below min_size once mapped back
    det.detect(frame)
    assert det.net.sizes == [(480, 360)] and det.net.shapes == [(360, 480, 3)] * 2  # set once per size
    det.net.faces = None
    assert det.detect(rand_rgb(240, 320)) == [] and det.net.sizes[-1] == (320, 240)


def test_preparer_takes_its_own_capture_thread_work_and_redoes_the_rest():
    """`frame_input`: a frame this preparer made in the capture thread is taken as is; a frame
    another (replaced) preparer made is cropped and resized again from its image, swapping a BGR
    image first; with no image left it is stale; face mode with no face has nothing to classify."""
    from device.sources.capture import Frame

    rgb = rand_rgb(40, 60)
    want = resize_to_input(Cropper(CropConfig())(rgb).image, (16, 16))
    preparer, replaced = Preparer(Cropper(CropConfig()), (16, 16)), Preparer(Cropper(CropConfig()), (16, 16))
    pixels, times = preparer.prepare(np.ascontiguousarray(rgb[..., ::-1]), None, bgr=True)
    np.testing.assert_array_equal(pixels, want)
    assert set(times) == {"crop", "resize"}
    made_here = Frame(None, 1, 0.0, 0.0, 1, prepared=pixels, prepared_by=preparer, prep_ms={"crop": 1.5, "resize": 2.5})
    taken = preparer.frame_input(made_here)
    assert taken.pixels is pixels and (taken.crop_ms, taken.resize_ms, taken.box) == (1.5, 2.5, None)
    bgr_frame = Frame(np.ascontiguousarray(rgb[..., ::-1]), 2, 0.0, 0.0, 1, prepared=pixels, prepared_by=replaced)
    bgr_frame.channel_order = "BGR"
    redone = preparer.frame_input(bgr_frame, out=np.empty((16, 16, 3), np.uint8))
    np.testing.assert_array_equal(redone.pixels, want)
    assert redone.box == (10, 0, 40, 40) and redone.skipped is None
    stale = preparer.frame_input(Frame(None, 3, 0.0, 0.0, 1, prepared=pixels, prepared_by=replaced))
    assert stale.pixels is None and stale.skipped == "stale"
    faces = Preparer(Cropper(CropConfig(mode="face", on_no_face="skip"), detector=FakeDetector([])), (16, 16))
    no_face = faces.image_input(rgb)
    assert no_face.pixels is None and no_face.skipped == "no_roi"
    assert faces.prepare(rgb)[0] is None
