"""Frames from still images: a folder (sorted, optionally recursive) or a glob pattern.

Images are decoded with `device.crop.load_image_rgb`, the loader the parity test holds against
training, so a folder of training photos classifies here exactly as the conversion stage
verified it. Unreadable files are skipped with one warning each; a folder where not one file
can be read is an error (FaceedgeError: not retried), not an empty run.
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path
from typing import Annotated

import numpy as np

from device.errors import FaceedgeError
from device.sources.base import FrameSource, Pacer, SourceConfig, register_source
from device.validation import Meta

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


class ImagesConfig(SourceConfig, tag="images"):
    path: Annotated[str, Meta(description="a folder of images, or a glob pattern such as 'photos/*.jpg'")]
    recursive: bool = False
    loop: bool = False
    fps: Annotated[float, Meta(ge=0, description="0 = as fast as consumed")] = 0.0


def list_images(path: str, recursive: bool = False) -> list[Path]:
    p = Path(path).expanduser()
    if p.is_dir():
        it = p.rglob("*") if recursive else p.iterdir()
        files = [f for f in it if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    elif any(ch in path for ch in "*?["):
        files = [Path(f) for f in glob.glob(str(p), recursive=recursive) if Path(f).is_file()]
    elif p.is_file():
        files = [p]
    else:
        raise FaceedgeError(f"source.path {path!r}: no such file or folder")
    return sorted(files)


@register_source("images")
class ImagesSource(FrameSource):
    cfg: ImagesConfig

    def __init__(self, cfg: ImagesConfig) -> None:
        super().__init__(cfg)
        self.files: list[Path] = []
        self._i = 0
        self._pacer = Pacer(cfg.fps)
        self._bad: set[Path] = set()
        self._first_bad: str | None = None
        self._position: tuple[str | None, int | None] = (None, None)

    def open(self) -> None:
        self.files = list_images(self.cfg.path, self.cfg.recursive)
        if not self.files:
            raise FaceedgeError(f"source.path {self.cfg.path!r}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self._i = 0

    @property
    def live(self) -> bool:
        return False

    @property
    def paced(self) -> bool:
        return self.cfg.fps > 0

    def read(self, out: np.ndarray | None = None, timeout: float | None = None) -> np.ndarray | None:
        from device.crop import load_image_rgb

        while True:
            if self._i >= len(self.files):
                if len(self._bad) == len(self.files):
                    raise FaceedgeError(
                        f"source.path {self.cfg.path!r}: none of its {len(self.files)} image files "
                        f"could be read (first: {self._first_bad})"
                    )
                if not self.cfg.loop:
                    return None
                self._i = 0
            f = self.files[self._i]
            self._i += 1
            if f in self._bad:
                continue
            try:
                img = load_image_rgb(f)
            except Exception as e:  # noqa: BLE001 - one bad file must not stop a folder
                log.warning("skipping %s: %s", f, e)
                self._bad.add(f)
                if self._first_bad is None:
                    self._first_bad = f"{f.name}: {str(e).replace(str(f) + ': ', '')}"
                continue
            self._position = (self._name(f), self._i - 1)
            self._pacer.wait()
            if out is not None and out.shape == img.shape:
                np.copyto(out, img)
                return out
            return img

    def position(self) -> tuple[str | None, int | None]:
        return self._position

    def _name(self, f: Path) -> str:
        """The file's path below the configured folder (its name for a file or a glob)."""
        root = Path(self.cfg.path).expanduser()
        if root.is_dir():
            try:
                return f.relative_to(root).as_posix()
            except ValueError:
                pass
        return f.name

    def describe(self) -> str:
        return f"images {self.cfg.path} ({len(self.files)} files{', loop' if self.cfg.loop else ''})"
