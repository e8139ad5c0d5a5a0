"""Dataset indexing and validation (train/data.py): layouts, bad files, errors."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from device.errors import FaceedgeError
from train.data import DatasetIndex, Record, index_dataset, read_skipped_csv, write_skipped_csv
from train.image_check import IMAGE_EXTENSIONS, check_image, inspect_image


def _pixels(seed: int = 0, size: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def write_image(path: Path, seed: int = 0, fmt: str | None = None, mode: str = "RGB", size: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(_pixels(seed, size))
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path, format=fmt or {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}[path.suffix.lower()])
    return path


def make_tree(root: Path, labels=("closed", "open"), persons=("ann", "bob"), n: int = 3, ext: str = ".jpg") -> Path:
    k = 0
    for lbl in labels:
        for p in persons:
            for i in range(n):
                write_image(root / lbl / p / f"{i}{ext}", seed=k)
                k += 1
    return root


# ---------------------------------------------------------------------------------------------
# One file at a time: each bad kind gets its own reason


def _bad_files(d: Path) -> dict[str, tuple[Path, str]]:
    """{name: (path, expected reason kind)} — one of every kind of bad file."""
    d.mkdir(parents=True, exist_ok=True)
    good = write_image(d / "good.jpg").read_bytes()
    png = write_image(d / "good.png").read_bytes()
    bmp = write_image(d / "good.bmp").read_bytes()
    (d / "good.jpg").unlink(), (d / "good.png").unlink(), (d / "good.bmp").unlink()
    files = {
        "zero.jpg": (b"", "zero-byte"),
        "text.jpg": (b"this is not a jpeg\n", "not-an-image"),
        "trunc.jpg": (good[: len(good) // 2], "truncated"),
        "no_eoi.jpg": (good[:-2], "truncated"),
        "trunc.png": (png[: len(png) // 2], "truncated"),
        "trunc.bmp": (bmp[: len(bmp) // 2], "truncated"),
        "notes.txt": (b"hello", "bad-extension"),
        "noext": (good, "bad-extension"),
        ".DS_Store": (b"\x00\x00\x00\x01Bud1", "hidden-file"),
        "._apple_double.jpg": (b"\x00\x05\x16\x07resource fork", "hidden-file"),
    }
    out = {}
    for name, (data, kind) in files.items():
        (d / name).write_bytes(data)
        out[name] = (d / name, kind)
    webp = d / "webp.jpg"
    Image.fromarray(_pixels()).save(webp, format="WEBP")
    out["webp.jpg"] = (webp, "unsupported-format")
    return out


def test_each_bad_kind_has_its_reason(tmp_path):
    for name, (path, kind) in _bad_files(tmp_path).items():
        reason = check_image(path)
        assert reason is not None and reason.split(":")[0] == kind, (name, reason)


def test_unreadable_file_is_skipped(tmp_path):
    dangling = tmp_path / "dangling.jpg"
    dangling.symlink_to(tmp_path / "gone.jpg")
    assert check_image(dangling).startswith("unreadable")
    if os.geteuid() != 0:  # root reads every file whatever its mode
        p = write_image(tmp_path / "locked.jpg")
        p.chmod(0)
        try:
            assert check_image(p).startswith("unreadable")
        finally:
            p.chmod(0o644)


@pytest.mark.parametrize(
    "mode,ext",
    [
        ("L", ".jpg"),
        ("L", ".png"),
        ("RGBA", ".png"),
        ("P", ".png"),
        ("LA", ".png"),
        ("CMYK", ".jpg"),
        ("RGB", ".bmp"),
        ("RGB", ".jpeg"),
    ],
)
def test_gray_rgba_palette_and_other_modes_are_accepted(tmp_path, mode, ext):
    assert check_image(write_image(tmp_path / f"x{ext}", mode=mode)) is None


def test_extension_case_and_content_mismatch_are_accepted(tmp_path):
    assert check_image(write_image(tmp_path / "UPPER.JPG")) is None
    # A PNG named .jpg decodes fine (the pipeline sniffs content); accepted and counted.
    mixed = write_image(tmp_path / "png_named.jpg", fmt="PNG")
    assert inspect_image(mixed) == (None, ("extension-mismatch",))
    assert check_image(mixed) is None


def test_exif_orientation_is_accepted_counted_and_warned(tmp_path, caplog):
    root = make_tree(tmp_path / "data", n=2)
    im = Image.fromarray(_pixels(5))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    p = root / "open" / "ann" / "phone.jpg"
    im.save(p, exif=exif)
    assert inspect_image(p) == (None, ("exif-orientation",))
    write_image(root / "closed" / "bob" / "png_named.jpg", fmt="PNG")
    with caplog.at_level(logging.WARNING, logger="train.data"):
        idx = index_dataset(root)
    assert idx.exif_rotated == 1 and str(p.resolve()) in {r.path for r in idx.records}
    assert idx.extension_mismatches == 1 and not idx.skipped
    assert "EXIF orientation" in caplog.text and "does not match their extension" in caplog.text


def test_index_skips_bad_files_and_lists_them(tmp_path):
    root = make_tree(tmp_path / "data", n=10)  # 40 good
    bad = _bad_files(root / "open" / "bob")
    idx = index_dataset(root, max_bad_fraction=0.5)
    assert len(idx.records) == 40
    skipped = dict(idx.skipped)
    assert set(skipped) == {str(p) for p, _ in bad.values()}
    for p, kind in bad.values():
        assert skipped[str(p)].startswith(kind + ":")
    assert idx.skipped_by_kind()["truncated"] == 4
    out = tmp_path / "skipped.csv"
    write_skipped_csv(idx, out)
    assert read_skipped_csv(out) == idx.skipped
    with open(out, newline="") as f:
        assert next(csv.reader(f)) == ["path", "reason"]


def test_too_many_bad_files_is_one_line_error_naming_root_count_fraction(tmp_path):
    root = make_tree(tmp_path / "data", n=5)  # 20 good
    (root / "open" / "ann" / "zero.jpg").write_bytes(b"")
    (root / "open" / "ann" / "trunc.jpg").write_bytes((root / "open" / "ann" / "0.jpg").read_bytes()[:100])
    # 2 of 22 = 9.1 %: over the default 5 %, under 10 %.
    skipped_csv = tmp_path / "out" / "skipped.csv"
    with pytest.raises(FaceedgeError) as e:
        index_dataset(root, skipped_csv=skipped_csv)
    msg = str(e.value)
    assert "\n" not in msg and str(root) in msg and "2 of 22" in msg and "9.1%" in msg
    assert str(skipped_csv) in msg and len(read_skipped_csv(skipped_csv)) == 2
    idx = index_dataset(root, max_bad_fraction=0.10)
    assert len(idx.records) == 20 and len(idx.skipped) == 2 and idx.bad_fraction == pytest.approx(2 / 22)


def test_error_without_skipped_csv_names_the_first_bad_file(tmp_path):
    root = make_tree(tmp_path / "data", n=2)
    bad = root / "closed" / "ann" / "bad.jpg"
    bad.write_bytes(b"nope")
    with pytest.raises(FaceedgeError, match="bad.jpg"):
        index_dataset(root)


# ---------------------------------------------------------------------------------------------
# Layouts


def test_label_person_layout(tmp_path, caplog):
    root = make_tree(tmp_path / "data", persons=("ann", "bob", "cy"), n=2)
    (root / "README.txt").write_text("ignored: files in the root are not part of a label")
    (root / ".cache").mkdir()
    write_image(root / "open" / "ann" / "session2" / "deep.png")  # nested below a person: still that person
    idx = index_dataset(str(root))
    assert isinstance(idx, DatasetIndex)
    assert idx.layout == "label/person" and idx.has_persons and idx.labels == ["closed", "open"]
    assert idx.source == str(root.resolve())
    assert idx.persons == ["ann", "bob", "cy"]
    assert idx.counts() == {"closed": 6, "open": 7}
    assert Record(str((root / "open" / "ann" / "session2" / "deep.png").resolve()), "open", "ann") in idx.records
    assert all(os.path.isabs(r.path) for r in idx.records)
    assert idx.records == sorted(idx.records, key=lambda r: (r.label, r.person, r.path))
    assert not idx.skipped


def test_files_directly_in_label_folder_of_person_layout_are_skipped(tmp_path):
    root = make_tree(tmp_path / "data", n=10)
    stray = write_image(root / "open" / "stray.jpg")
    idx = index_dataset(root)
    assert dict(idx.skipped)[str(stray)].startswith("not-in-person-folder")


def test_label_only_layout_warns(tmp_path, caplog):
    root = tmp_path / "flat"
    for i in range(3):
        write_image(root / "closed" / f"{i}.jpg", seed=i)
        write_image(root / "open" / f"{i}.png", seed=10 + i)
    with caplog.at_level(logging.WARNING, logger="train.data"):
        idx = index_dataset(root)
    assert idx.layout == "label" and not idx.has_persons
    assert all(r.person is None for r in idx.records) and len(idx.records) == 6
    assert "unseen-person evaluation is impossible" in caplog.text


def test_csv_layout(tmp_path):
    imgs = tmp_path / "imgs"
    a = write_image(imgs / "a.jpg", 1)
    b = write_image(imgs / "b.png", 2)
    c = write_image(tmp_path / "elsewhere" / "c.jpg", 3)
    (imgs / "bad.jpg").write_bytes(b"")
    lst = tmp_path / "lists" / "data.csv"
    lst.parent.mkdir()
    rows = [
        ["path", "label", "person", "extra"],
        ["../imgs/a.jpg", "open", "ann", "x"],
        ["../imgs/b.png", "closed", "", "x"],  # empty person → None
        [str(c), "closed", "bob", ""],  # absolute path
        ["../imgs/bad.jpg", "open", "bob", ""],
        ["../imgs/missing.jpg", "open", "bob", ""],
        ["../imgs/a.jpg", "open", "ann", ""],
    ]  # duplicate
    with open(lst, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    idx = index_dataset(lst, max_bad_fraction=1.0)
    assert idx.layout == "csv" and idx.has_persons and idx.labels == ["closed", "open"]
    assert set(idx.records) == {
        Record(str(a.resolve()), "open", "ann"),
        Record(str(b.resolve()), "closed", None),
        Record(str(c.resolve()), "closed", "bob"),
    }
    kinds = {Path(p).name: r.split(":")[0] for p, r in idx.skipped}
    assert kinds == {"bad.jpg": "zero-byte", "missing.jpg": "missing", "a.jpg": "duplicate"}


def test_csv_without_person_column(tmp_path):
    write_image(tmp_path / "a.jpg", 1)
    write_image(tmp_path / "b.jpg", 2)
    (tmp_path / "d.csv").write_text("path,label\na.jpg,x\nb.jpg,y\n")
    idx = index_dataset(tmp_path / "d.csv")
    assert not idx.has_persons and idx.labels == ["x", "y"]


# ---------------------------------------------------------------------------------------------
# Bad input: each a one-line FaceedgeError naming the path


def _one_line_error(fn, *names) -> str:
    with pytest.raises(FaceedgeError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for n in names:
        assert str(n) in msg, (n, msg)
    return msg


def test_missing_folder(tmp_path):
    _one_line_error(lambda: index_dataset(tmp_path / "nope"), tmp_path / "nope")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    msg = _one_line_error(lambda: index_dataset(tmp_path / "empty"), tmp_path / "empty")
    assert "empty" in msg


def test_folder_with_only_loose_files(tmp_path):
    write_image(tmp_path / "d" / "a.jpg")
    _one_line_error(lambda: index_dataset(tmp_path / "d"), tmp_path / "d")


def test_label_folder_without_images(tmp_path):
    root = make_tree(tmp_path / "data", n=2)
    (root / "blink").mkdir()
    _one_line_error(lambda: index_dataset(root), root / "blink")


def test_label_folder_whose_only_files_are_bad(tmp_path):
    root = make_tree(tmp_path / "data", n=20)
    (root / "squint" / "ann").mkdir(parents=True)
    (root / "squint" / "ann" / "x.jpg").write_bytes(b"")
    msg = _one_line_error(lambda: index_dataset(root), root / "squint")
    assert "no usable images" in msg


def test_single_label(tmp_path):
    root = make_tree(tmp_path / "data", labels=("open",), n=2)
    msg = _one_line_error(lambda: index_dataset(root), root)
    assert "'open'" in msg


def test_csv_missing_columns(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("file,label\na.jpg,x\n")
    msg = _one_line_error(lambda: index_dataset(p), p)
    assert "path" in msg


def test_csv_empty_label(tmp_path):
    write_image(tmp_path / "a.jpg")
    p = tmp_path / "d.csv"
    p.write_text("path,label,person\na.jpg,,ann\n")
    _one_line_error(lambda: index_dataset(p), p, "line 2")


def test_source_file_not_csv(tmp_path):
    p = write_image(tmp_path / "a.jpg")
    _one_line_error(lambda: index_dataset(p), p)


def test_bad_max_fraction(tmp_path):
    _one_line_error(lambda: index_dataset(tmp_path, max_bad_fraction=1.5), "max_bad_fraction")


# ---------------------------------------------------------------------------------------------


def test_allowed_ext_is_configurable(tmp_path):
    root = make_tree(tmp_path / "data", n=2)
    gif = root / "open" / "ann" / "anim.gif"
    Image.fromarray(_pixels()).save(gif)
    assert ".gif" not in IMAGE_EXTENSIONS
    assert str(gif) in dict(index_dataset(root, max_bad_fraction=1.0).skipped)
    idx = index_dataset(root, allowed_ext=IMAGE_EXTENSIONS + (".gif",))
    assert str(gif.resolve()) in {r.path for r in idx.records}


def test_threaded_and_serial_checks_agree(tmp_path):
    root = make_tree(tmp_path / "data", n=20)  # 80 files: above the thread-pool threshold
    _bad_files(root / "closed" / "ann")
    serial = index_dataset(root, max_bad_fraction=1.0, workers=1)
    threaded = index_dataset(root, max_bad_fraction=1.0, workers=4)
    assert serial.records == threaded.records and serial.skipped == threaded.skipped


def test_truncated_check_survives_global_load_truncated_flag(tmp_path, monkeypatch):
    from PIL import ImageFile

    root = make_tree(tmp_path / "data", n=20)
    t = root / "open" / "ann" / "t.jpg"
    t.write_bytes((root / "open" / "ann" / "0.jpg").read_bytes()[:200])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    idx = index_dataset(root)
    assert dict(idx.skipped)[str(t)].startswith("truncated")


@pytest.mark.slow
def test_every_accepted_file_decodes_with_tensorflow_and_truncated_ones_do_not(tmp_path):
    """The contract behind the checks: what we accept, tf.io.decode_image decodes (channels=3)."""
    tf = pytest.importorskip("tensorflow")
    d = tmp_path / "mix"
    accepted = [
        write_image(d / f"m{mode}{ext}", mode=mode)
        for mode, ext in [("L", ".jpg"), ("RGBA", ".png"), ("P", ".png"), ("CMYK", ".jpg"), ("RGB", ".bmp")]
    ]
    accepted.append(write_image(d / "png_named.jpg", fmt="PNG"))
    bad = _bad_files(tmp_path / "bad")
    for p in accepted:
        assert check_image(p) is None
        img = tf.io.decode_image(tf.io.read_file(str(p)), channels=3, expand_animations=False)
        assert img.shape == (24, 24, 3)
    for name, (p, kind) in bad.items():
        if kind in ("truncated", "zero-byte", "not-an-image"):
            with pytest.raises(tf.errors.InvalidArgumentError):
                tf.io.decode_image(tf.io.read_file(str(p)), channels=3, expand_animations=False)


def test_symlink_loop_is_walked_once(tmp_path):
    root = make_tree(tmp_path / "data", n=2)
    (root / "open" / "ann" / "loop").symlink_to(root / "open" / "ann")
    idx = index_dataset(root)
    assert idx.counts() == {"closed": 4, "open": 4}


def test_large_jpeg_fast_path_still_catches_truncation(tmp_path):
    big = np.kron(_pixels(3, 40), np.ones((30, 30, 1), np.uint8))  # 1200x1200
    for progressive in (False, True):
        p = tmp_path / f"big{progressive}.jpg"
        Image.fromarray(big).save(p, quality=90, progressive=progressive)
        assert check_image(p) is None
        t = tmp_path / f"big{progressive}_trunc.jpg"
        t.write_bytes(p.read_bytes()[: int(p.stat().st_size * 0.9)])
        assert check_image(t).startswith("truncated"), progressive


def test_unreadable_label_folder_is_one_line_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads every folder")
    root = make_tree(tmp_path / "data", n=2)
    (root / "open").chmod(0)
    try:
        _one_line_error(lambda: index_dataset(root), root / "open")
    finally:
        (root / "open").chmod(0o755)


def test_hidden_files_are_listed_but_not_counted_as_bad(tmp_path):
    """A folder copied from a Mac holds a "._name.jpg" resource fork per image: listed, not fatal."""
    root = make_tree(tmp_path / "data", n=5)
    forks = []
    for img in list(root.rglob("*.jpg")):
        fork = img.with_name("._" + img.name)
        fork.write_bytes(b"\x00\x05\x16\x07 Mac OS X resource fork")
        forks.append(str(fork))
    (root / "open" / "ann" / "bad.jpg").write_bytes(b"")
    idx = index_dataset(root, max_bad_fraction=0.05)  # 1 bad of 21: 4.8 %
    assert len(idx.records) == 20 and idx.n_bad == 1 and idx.bad_fraction == pytest.approx(1 / 21)
    assert {p for p, r in idx.skipped if r.startswith("hidden-file")} == set(forks)
