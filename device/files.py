"""Files written safely: atomic replacement, the umask a plain open() would honour, a writable
folder checked before any slow start-up, and the sha256 every manifest and bundle records."""

from __future__ import annotations

import os
from pathlib import Path

from device.digest import sha256
from device.errors import FaceedgeError


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fsynced_temp(path: Path, data: bytes, mode: int | None = None) -> str:
    """`data` in a new temporary file beside `path` (its folder made if missing), fsynced, `mode`
    set when given; its name. Nothing is left behind when writing fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    import tempfile  # here, not at the top: with random, shutil, bz2 and lzma ~0.8 MB the daemon never needs

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return tmp


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over `path`."""
    # mkstemp makes the file 0600; give it the mode a plain open() would have (0666 & ~umask).
    tmp = _fsynced_temp(Path(path), data, mode=0o666 & ~current_umask())
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def require_writable_dir(path: str | os.PathLike, what: str) -> None:
    """A FaceedgeError naming `what` and `path` unless new files can be made in the folder `path`
    (or, when it does not exist yet, in its nearest existing parent, where it would be created).

    access(2), so read-only mounts and immutable folders count as unwritable, for root too. Used
    before any slow start-up, so a command that cannot write its output says so at once.
    """
    p = Path(path).absolute()
    probe = p
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise FaceedgeError(f"{what} {path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        try:
            ro = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
        except OSError:
            ro = False
        why = "read-only file system" if ro else "permission denied"
        where = "" if probe == p else f" (in {probe})"
        raise FaceedgeError(f"{what} {path}: not writable{where}: {why}")


def current_umask() -> int:
    """The process umask, read without changing it (os.umask() would, briefly, for every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def link_new(src: str | os.PathLike, dst: str | os.PathLike, *, move: bool = False) -> Path:
    """Give the file `src` the name `dst`, or the next free ``<stem>_<n><suffix>``; never overwrites.

    A hard link (atomic, and it fails when the name exists); where the filesystem has no hard links
    (FAT/exFAT media, another filesystem), the name is reserved with O_EXCL and `src` is moved there
    (`move`) or copied into it. Returns the name used.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    candidate = dst
    for n in range(2, 100_000):
        try:
            os.link(src, candidate)
            return candidate
        except FileExistsError:
            candidate = dst.with_name(f"{dst.stem}_{n}{dst.suffix}")
            continue
        except OSError:  # no hard links here
            pass
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            candidate = dst.with_name(f"{dst.stem}_{n}{dst.suffix}")
            continue
        if move:
            os.close(fd)
            os.replace(src, candidate)
        else:
            with os.fdopen(fd, "wb") as f, open(src, "rb") as s:
                import shutil

                shutil.copyfileobj(s, f)
        return candidate
    raise FaceedgeError(f"{dst}: no free file name")


def write_new(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path`, or to `path` with the next free number (`link_new`), never
    overwriting a file: a temporary file, fsynced, then given its name."""
    path = Path(path)
    tmp = _fsynced_temp(path, data)
    try:
        return link_new(tmp, path, move=True)
    finally:
        _unlink_quietly(tmp)
