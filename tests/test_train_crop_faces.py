"""train crop-faces: the device's Cropper over a raw <label>/<person>/ tree (real Haar detector)."""

from __future__ import annotations

import csv
import shutil

import cv2
import numpy as np
import pytest

from device.crop import CropConfig, Cropper, load_image_rgb, save_image_rgb
from device.errors import FaceedgeError
from train import crop_faces


@pytest.fixture(scope="module")
def portrait_path():
    cbook = pytest.importorskip("matplotlib.cbook")
    return cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)  # a real face photograph


@pytest.fixture
def raw(tmp_path, portrait_path):
    """raw/open/alice/{face.jpg, sub/face2.jpg}, raw/closed/bob/{blank.png, broken.jpg, notes.txt}"""
    root = tmp_path / "raw"
    (root / "open" / "alice" / "sub").mkdir(parents=True)
    (root / "closed" / "bob").mkdir(parents=True)
    shutil.copy(portrait_path, root / "open" / "alice" / "face.jpg")
    shutil.copy(portrait_path, root / "open" / "alice" / "sub" / "face2.jpg")
    cv2.imwrite(str(root / "closed" / "bob" / "blank.png"), np.full((120, 160, 3), 128, np.uint8))
    (root / "closed" / "bob" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "closed" / "bob" / "notes.txt").write_text("not an image, ignored")
    return root


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_face_crops_mirror_the_tree_and_list_skips(raw, tmp_path, portrait_path):
    out = tmp_path / "ds"
    res = crop_faces.run(raw, out, CropConfig(mode="face", margin=0.2), workers=2)
    assert (res.count("cropped"), res.count("no-face"), res.count("unreadable")) == (2, 1, 1)
    crop = out / "open" / "alice" / "face.png"
    assert crop.is_file() and (out / "open" / "alice" / "sub" / "face2.png").is_file()
    assert not (out / "closed").exists()  # nothing written for the skipped images
    # the file holds exactly what the device's Cropper cuts from the photo (PNG is lossless)
    expected = Cropper(CropConfig(mode="face", margin=0.2))(load_image_rgb(portrait_path))
    got = load_image_rgb(crop)
    assert got.shape[0] == got.shape[1] and np.array_equal(got, expected.image)

    skipped = {r["path"]: r["reason"] for r in read_csv(out / crop_faces.SKIPPED_NAME)}
    assert set(skipped) == {str(raw / "closed" / "bob" / "blank.png"), str(raw / "closed" / "bob" / "broken.jpg")}
    assert skipped[str(raw / "closed" / "bob" / "blank.png")].startswith("no-face")
    assert skipped[str(raw / "closed" / "bob" / "broken.jpg")].startswith("unreadable")
    report = {r["src"]: r for r in read_csv(out / crop_faces.REPORT_NAME)}
    row = report[str(raw / "open" / "alice" / "face.jpg")]
    assert row["status"] == "cropped" and row["faces"] == "1"
    assert (int(row["x"]), int(row["y"]), int(row["w"]), int(row["h"])) == expected.box
    assert len(report) == 4  # notes.txt is not an image source


def test_rerun_keeps_existing_unless_overwrite(raw, tmp_path):
    out = tmp_path / "ds"
    crop_faces.run(raw, out, CropConfig(mode="face"))
    target = out / "open" / "alice" / "face.png"
    stamp = target.stat().st_mtime_ns
    again = crop_faces.run(raw, out, CropConfig(mode="face"))
    assert again.count("exists") == 2 and again.count("cropped") == 0 and target.stat().st_mtime_ns == stamp
    forced = crop_faces.run(raw, out, CropConfig(mode="face"), overwrite=True)
    assert forced.count("cropped") == 2


def test_full_mode_writes_centre_squares_and_jpeg(tmp_path):
    src = tmp_path / "raw" / "a" / "p"
    src.mkdir(parents=True)
    img = np.random.default_rng(0).integers(0, 256, (60, 100, 3), dtype=np.uint8)
    save_image_rgb(src / "x.png", img)
    save_image_rgb(src / "x.jpg", img)  # same stem: the second in sorted order keeps its suffix in the name
    out = tmp_path / "ds"
    crop_faces.run(tmp_path / "raw", out, CropConfig(mode="full"))
    assert np.array_equal(load_image_rgb(out / "a" / "p" / "x_png.png"), img[:, 20:80])  # from x.png, lossless
    from_jpeg = load_image_rgb(out / "a" / "p" / "x.png")
    assert from_jpeg.shape == (60, 60, 3) and np.array_equal(from_jpeg, load_image_rgb(src / "x.jpg")[:, 20:80])
    crop_faces.run(tmp_path / "raw", tmp_path / "dsj", CropConfig(mode="full"), fmt="jpg")
    assert load_image_rgb(tmp_path / "dsj" / "a" / "p" / "x.jpg").shape == (60, 60, 3)


def test_config_file_with_crop_block_and_errors(tmp_path):
    cfg = tmp_path / "device.yaml"
    cfg.write_text("source: {type: synthetic}\ncrop:\n  mode: center\n  fraction: 0.5\n")
    assert crop_faces.load_crop_config(cfg) == CropConfig(mode="center", fraction=0.5)
    no_crop = tmp_path / "device2.yaml"
    no_crop.write_text("log_level: DEBUG\n")  # a device config without crop: → the device's default crop
    assert crop_faces.load_crop_config(no_crop) == CropConfig()
    plain = tmp_path / "crop.yaml"
    plain.write_text("mode: face\nmargin: 0.3\n")
    assert crop_faces.load_crop_config(plain).margin == 0.3
    bad = tmp_path / "bad.yaml"
    bad.write_text("crop:\n  mode: face\n  marjin: 0.3\n")
    with pytest.raises(FaceedgeError) as e:
        crop_faces.load_crop_config(bad)
    assert str(bad) in str(e.value) and "crop.marjin" in str(e.value)
    with pytest.raises(FaceedgeError, match="not found"):
        crop_faces.load_crop_config(tmp_path / "missing.yaml")


def test_bad_arguments(raw, tmp_path):
    with pytest.raises(FaceedgeError, match="must not be inside"):
        crop_faces.run(raw, raw / "open" / "crops")
    with pytest.raises(FaceedgeError, match="no such folder"):
        crop_faces.run(tmp_path / "nope", tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FaceedgeError, match="no images"):
        crop_faces.run(empty, tmp_path / "out")


def test_cli_through_python_m_train(raw, tmp_path, capsys):
    from train.cli import main

    out = tmp_path / "ds"
    rc = main(
        ["crop-faces", "--src", str(raw), "--out", str(out), "--mode", "face", "--margin", "0.1", "--workers", "1"]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "2 cropped" in printed and "1 without a face" in printed and "1 unreadable" in printed
    side = load_image_rgb(out / "open" / "alice" / "face.png").shape[0]
    box = next(r for r in read_csv(out / crop_faces.REPORT_NAME) if r["status"] == "cropped")
    assert side == int(box["w"])
    rc = main(["crop-faces", "--src", str(raw), "--out", str(out), "--margin", "5"])
    assert rc == 2 and "error: --margin" in capsys.readouterr().err
    rc = main(["crop-faces", "--src", str(raw), "--out", str(out), "--min_size", "4"])  # the old spelling
    assert rc == 2 and "error: --min-size" in capsys.readouterr().err  # named as --help shows it
