"""`make clean` / `make distclean`: remove what the project generated, never what a user made.

Stdlib only (it runs with the system python3, with or without .venv). Run from the project root::

    python3 train/clean.py              # make clean
    python3 train/clean.py --dist       # make distclean: also .venv and build leftovers; asks first

What counts as generated, and so is removed:

- under ``data/``: a folder directly in it that holds ``sample.json``, the marker `make data`
  (``train/sample_data.py``) writes into every sample dataset — the same rule `make data` uses to
  replace its own earlier output. Anything else under ``data/`` (your photos, ``device collect``
  output, ``crop-faces`` output) is kept.
- under ``runs/``: a folder directly in it that a project command wrote, recognised by the files that
  command always writes: a training run (``config.yaml`` + ``model_info.json``), an interrupted
  training run (``*.incomplete`` with ``config.yaml`` + ``state.json``), a ``convert --out`` folder
  (``convert.json`` + ``export/``), a ``make bench-model`` folder (``benchmodel.json`` + ``export/``);
  and ``runs/latest`` when it is a symlink left pointing at nothing.
  Symlinks are removed as links, never followed: a run you linked in from elsewhere stays whole.
- caches: ``.pytest_cache``, ``.bench``, ``__pycache__`` folders outside the virtual environments.
- ``--dist`` adds ``.venv``, ``.venv-imx500``, ``.venv-mediapipe``, ``*.egg-info``, ``build/`` and
  ``dist/``; it lists everything it would remove and asks ``[y/N]`` on a terminal, and refuses
  without one unless ``FORCE=1`` is set.

Exit status: 0 done (or nothing to do), 1 refused or declined.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

SAMPLE_MARKER = "sample.json"
RUN_MARKERS = (("config.yaml", "model_info.json"), ("convert.json", "export"), ("benchmodel.json", "export"))
INCOMPLETE_MARKERS = ("config.yaml", "state.json")
INCOMPLETE_SUFFIX = ".incomplete"
CACHES = (".pytest_cache", ".bench")
DIST_ONLY = (".venv", ".venv-imx500", ".venv-mediapipe", "build", "dist")  # what make setup builds


def _is_real_dir(p: Path) -> bool:
    return p.is_dir() and not p.is_symlink()


def _children(p: Path) -> list[Path]:
    try:
        return sorted(p.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def is_sample_dataset(p: Path) -> bool:
    return _is_real_dir(p) and (p / SAMPLE_MARKER).is_file()


def is_generated_run(p: Path) -> bool:
    if not _is_real_dir(p):
        return False
    if p.name.endswith(INCOMPLETE_SUFFIX) and all((p / m).exists() for m in INCOMPLETE_MARKERS):
        return True
    return any(all((p / m).exists() for m in markers) for markers in RUN_MARKERS)


def plan(root: Path, *, dist: bool) -> tuple[list[Path], list[Path]]:
    """(paths to remove, paths under data/ and runs/ that are kept), relative to nothing: absolute."""
    remove: list[Path] = []
    kept: list[Path] = []
    data, runs = root / "data", root / "runs"
    for p in _children(data):
        (remove if is_sample_dataset(p) else kept).append(p)
    run_removed: set[str] = set()
    links: list[Path] = []
    for p in _children(runs):
        if p.is_symlink():
            links.append(p)
        elif is_generated_run(p):
            remove.append(p)
            run_removed.add(p.name)
        else:
            kept.append(p)
    for link in links:  # `runs/latest` (written by train fit) once its target is gone; any other link is the user's
        target = os.readlink(link)
        dangling = not link.exists() or (os.sep not in target and target in run_removed)
        (remove if link.name == "latest" and dangling else kept).append(link)
    for name in CACHES:
        if os.path.lexists(root / name):
            remove.append(root / name)
    for dirpath, dirnames, _files in os.walk(root):
        top = Path(dirpath).relative_to(root).parts[:1]
        # data and runs have their own rules above; a virtual environment (any name: `VENV=`, the side envs)
        # is distclean's, whole, and its caches are its own.
        if top and (top[0] in (".git", "data", "runs") or (root / top[0] / "pyvenv.cfg").exists()):
            dirnames[:] = []
            continue
        if "__pycache__" in dirnames:
            remove.append(Path(dirpath) / "__pycache__")
            dirnames.remove("__pycache__")
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
    if dist:
        remove += [root / n for n in DIST_ONLY if os.path.lexists(root / n)]
        remove += [p for p in _children(root) if p.name.endswith(".egg-info") and _is_real_dir(p)]
    return remove, kept


def remove_path(p: Path) -> None:
    if p.is_symlink() or not p.is_dir():
        p.unlink()
    else:
        shutil.rmtree(p)


def _rmdir_if_empty(p: Path) -> None:
    try:
        p.rmdir()
    except OSError:
        pass


def confirm(paths: list[Path], root: Path) -> bool:
    """Ask on the terminal; False without one unless FORCE=1."""
    if os.environ.get("FORCE") == "1":
        return True
    if not sys.stdin.isatty():
        print(
            "distclean: refusing without a terminal to ask on; run `make distclean FORCE=1` to remove "
            + ", ".join(str(p.relative_to(root)) for p in paths),
            file=sys.stderr,
        )
        return False
    print("distclean will remove:")
    for p in paths:
        print(f"  {p.relative_to(root)}")
    try:
        answer = input("Remove these? [y/N] ")
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="train/clean.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dist", action="store_true", help="also .venv and build leftovers (asks first)")
    ap.add_argument("--root", type=Path, default=Path.cwd(), help="project root (default: here)")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    if not (root / "Makefile").is_file():
        print(f"clean: {root} is not the project root (no Makefile)", file=sys.stderr)
        return 1
    remove, kept = plan(root, dist=args.dist)
    if args.dist and remove and not confirm(remove, root):
        print("distclean: nothing removed", file=sys.stderr)
        return 1
    for p in remove:
        remove_path(p)
        print(f"removed {p.relative_to(root)}")
    for d in ("runs", "data"):
        _rmdir_if_empty(root / d)
    if kept:
        print("kept (not generated by the project): " + ", ".join(str(p.relative_to(root)) for p in kept))
    if not remove:
        print("nothing to remove")
    return 0


if __name__ == "__main__":
    sys.exit(main())
