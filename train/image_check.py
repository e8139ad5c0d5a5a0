"""Check one image file the way the training pipeline will need it: one read, one full decode.

Files that are empty, unreadable, not an image, truncated, of a format TensorFlow cannot decode, or
named with a non-image extension get a skip reason (its kind, then ": detail"); grayscale, palette
and RGBA images are accepted (the pipeline decodes with ``channels=3``). Accepted files can carry
notes (content type differs from the extension, an EXIF rotation) that indexing counts and logs.
"""

from __future__ import annotations

import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

from PIL import Image, ImageFile, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")
# What tf.io.decode_image decodes (as Pillow names the formats). WebP, TIFF, HEIC... are not.
TF_DECODABLE_FORMATS = {"JPEG": (".jpg", ".jpeg"), "PNG": (".png",), "BMP": (".bmp",), "GIF": (".gif",)}

# Skip reasons start with one of these kinds (then ": detail"), so they can be counted.
ZERO_BYTE = "zero-byte"
BAD_EXTENSION = "bad-extension"
NOT_IMAGE = "not-an-image"
TRUNCATED = "truncated"
UNSUPPORTED = "unsupported-format"
UNREADABLE = "unreadable"
# Hidden files (.DS_Store, macOS "._name.jpg" resource forks, ...) are listed as skipped but are not
# counted as bad: a folder copied from a Mac can hold one "._" file per image.
HIDDEN = "hidden-file"

# Notes on accepted files (counted and logged, not skipped).
NOTE_EXT_MISMATCH = "extension-mismatch"  # e.g. a PNG named .jpg: decode_image goes by content
NOTE_EXIF_ORIENTATION = "exif-orientation"  # rotated/mirrored by EXIF: decode_image ignores the tag


def check_image(path: str | os.PathLike, allowed_ext: Iterable[str] = IMAGE_EXTENSIONS) -> str | None:
    """Return None if `path` is an image the training pipeline can decode, else the skip reason."""
    return inspect_image(path, allowed_ext)[0]


def inspect_image(
    path: str | os.PathLike, allowed_ext: Iterable[str] = IMAGE_EXTENSIONS
) -> tuple[str | None, tuple[str, ...]]:
    """(skip reason or None, notes on an accepted file) for one file.

    One read of the file, one full decode. Thread-safe (Pillow releases the GIL while decoding).
    """
    return _inspect(Path(path), tuple(e.lower() for e in allowed_ext))


def _inspect(p: Path, allowed: tuple[str, ...]) -> tuple[str | None, tuple[str, ...]]:
    notes: list[str] = []
    if p.name.startswith("."):
        return f"{HIDDEN}: {p.name!r} is a hidden (system or metadata) file", ()
    ext = p.suffix.lower()
    if ext not in allowed:
        shown = ext or p.name
        return f"{BAD_EXTENSION}: {shown!r} is not an image extension ({', '.join(allowed)})", ()
    try:
        data = p.read_bytes()
    except OSError as e:
        return f"{UNREADABLE}: {e.strerror or e}", ()
    if not data:
        return f"{ZERO_BYTE}: empty file", ()
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            if fmt not in TF_DECODABLE_FORMATS:
                return f"{UNSUPPORTED}: {fmt} cannot be decoded by the training pipeline (JPEG, PNG, BMP, GIF only)", ()
            w, h = im.size
            if fmt == "JPEG" and im.getexif().get(0x0112, 1) not in (1, None):  # 0x0112 = Orientation
                notes.append(NOTE_EXIF_ORIENTATION)
            if fmt == "JPEG" and max(w, h) > 512:
                # Big photos: let libjpeg decode at 1/2..1/8 scale. Every entropy-coded byte is still
                # read, so truncation is still caught; about twice as fast on 12 MP files.
                im.draft(None, (max(1, w // 8), max(1, h // 8)))
            im.load()  # full decode; truncated data raises (LOAD_TRUNCATED_IMAGES is False)
    except UnidentifiedImageError:
        return f"{NOT_IMAGE}: content is not a recognised image", ()
    except Image.DecompressionBombError as e:
        return f"{UNSUPPORTED}: {e}", ()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e).replace("\n", " ")
        if "truncated" in msg.lower() or isinstance(e, EOFError):
            return f"{TRUNCATED}: {msg}", ()
        return f"{NOT_IMAGE}: corrupt image data ({msg})", ()
    if w < 1 or h < 1:
        return f"{NOT_IMAGE}: image has no pixels ({w}x{h})", ()
    if ext not in TF_DECODABLE_FORMATS[fmt]:
        notes.append(NOTE_EXT_MISMATCH)
    return None, tuple(notes)


def check_all(
    paths: list[str], allowed: tuple[str, ...], workers: int | None
) -> list[tuple[str | None, tuple[str, ...]]]:
    """inspect_image of every path (lower-case `allowed` extensions), in threads for many files."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone switched it on globally; we need it off
        log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES was True; truncated images would pass — switching it off")
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    if workers is None:
        workers = min(8, (os.cpu_count() or 1) * 2)
    if workers <= 1 or len(paths) < 64:
        return [_inspect(Path(p), allowed) for p in paths]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="faceedge-check") as pool:
        return list(pool.map(lambda p: _inspect(Path(p), allowed), paths, chunksize=32))
