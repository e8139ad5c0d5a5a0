"""`make clean` / `make distclean` on a temporary copy of the project: only what the project
generated goes, never a user's photos or folders; distclean asks first (and refuses without a
terminal unless FORCE=1)."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT


def copy_project(dst: Path) -> Path:
    """The Makefile and what its clean targets run, nothing else (no venv: clean must not need one)."""
    dst.mkdir()
    shutil.copy2(ROOT / "Makefile", dst / "Makefile")
    (dst / "train").mkdir()
    shutil.copy2(ROOT / "train" / "clean.py", dst / "train" / "clean.py")
    return dst


def touch(p: Path, data: bytes = b"x") -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def populate(root: Path, outside: Path) -> dict[str, Path]:
    """A project tree as a user leaves it after `make data`, `make train`, photos of their own, ..."""
    p: dict[str, Path] = {}
    # generated: the sample dataset (its marker file is sample.json, written by `make data`)
    touch(root / "data" / "sample" / "sample.json", json.dumps({"seed": 0}).encode())
    touch(root / "data" / "sample" / "open" / "p00" / "img000.png")
    # the user's own photos and datasets: never touched
    p["photo"] = touch(root / "data" / "mine" / "open" / "alice" / "alice-0001.png", b"precious")
    p["faces"] = touch(root / "data" / "faces" / "closed" / "bob" / "x.jpg", b"precious")
    p["loose"] = touch(root / "data" / "notes.txt", b"precious")
    p["unmarked_sample"] = touch(root / "data" / "sample2" / "open" / "a.png", b"precious")  # no marker
    # generated: a finished training run, an interrupted one, a convert --out folder, runs/latest
    run = root / "runs" / "sample-20260101-000000"
    for name in ("config.yaml", "model_info.json", "metrics.json", "model.keras"):
        touch(run / name)
    touch(run / "export" / "int8" / "model.tflite")
    inc = root / "runs" / "sample-20260102-000000.incomplete"
    for name in ("config.yaml", "splits.csv", "state.json"):
        touch(inc / name)
    conv = root / "runs" / "log-run3"
    touch(conv / "convert.json")
    touch(conv / "export" / "int8" / "model.tflite")
    bench_model = root / "runs" / "bench-mobilenet_v2-224"  # make bench-model's folder
    touch(bench_model / "benchmodel.json")
    touch(bench_model / "export" / "int8" / "model.tflite")
    os.symlink("sample-20260101-000000", root / "runs" / "latest")
    # the user's things under runs/: a folder of notes, a run they linked in from elsewhere
    p["runs_notes"] = touch(root / "runs" / "my-notes" / "ideas.md", b"precious")
    p["half_like_run"] = touch(root / "runs" / "keep-me" / "config.yaml", b"precious")  # no model_info.json
    ext_run = outside / "big-run-elsewhere"
    for name in ("config.yaml", "model_info.json"):
        touch(ext_run / name, b"precious")
    os.symlink(ext_run, root / "runs" / "linked-run")
    p["ext_run"] = ext_run / "model_info.json"
    # caches
    touch(root / ".pytest_cache" / "v" / "cache" / "lastfailed")
    touch(root / "device" / "__pycache__" / "x.cpython-311.pyc")
    touch(root / ".bench" / "bench.json")
    # a venv and build leftovers: only distclean removes them
    touch(root / ".venv" / "bin" / "python")
    touch(root / ".venv-imx500" / "pyvenv.cfg")  # a side environment, its caches its own
    touch(root / ".venv-imx500" / "lib" / "site" / "__pycache__" / "m.cpython-311.pyc")
    touch(root / "faceedge.egg-info" / "PKG-INFO")
    return p


def assert_user_files_kept(p: dict[str, Path]) -> None:
    for key, path in p.items():
        assert path.is_file() and path.read_bytes() in (b"precious",), f"{key}: {path} was removed"


def make(root: Path, *targets: str, env: dict | None = None, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(root), *targets],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=stdin,
        env={**os.environ, **(env or {})},
    )


def test_clean_removes_only_what_the_project_generated(tmp_path):
    root = copy_project(tmp_path / "proj")
    user = populate(root, tmp_path / "elsewhere")
    p = make(root, "clean")
    assert p.returncode == 0, p.stdout + p.stderr
    assert_user_files_kept(user)
    assert not (root / "data" / "sample").exists()
    assert not (root / "runs" / "sample-20260101-000000").exists()
    assert not (root / "runs" / "sample-20260102-000000.incomplete").exists()
    assert not (root / "runs" / "log-run3").exists()
    assert not (root / "runs" / "bench-mobilenet_v2-224").exists()
    assert not os.path.lexists(root / "runs" / "latest")  # it pointed at a removed run
    assert os.path.islink(root / "runs" / "linked-run")  # a link the user made: kept, and not followed
    for cache in (".pytest_cache", ".bench", "device/__pycache__"):
        assert not (root / cache).exists(), cache
    assert (root / ".venv" / "bin" / "python").exists() and (root / "faceedge.egg-info").exists()
    assert (root / ".venv-imx500" / "lib" / "site" / "__pycache__" / "m.cpython-311.pyc").exists()
    assert "data/mine" in p.stdout and "kept" in p.stdout  # says what it left alone
    # idempotent: a second clean has nothing to do and still keeps everything
    p = make(root, "clean")
    assert p.returncode == 0, p.stderr
    assert_user_files_kept(user)


def test_clean_leaves_a_data_folder_of_photos_alone(tmp_path):
    """The README's `device collect --out data/mine` case: data/ holds only the user's photos."""
    root = copy_project(tmp_path / "proj")
    photo = touch(root / "data" / "mine" / "open" / "me" / "me-1.png", b"precious")
    p = make(root, "clean")
    assert p.returncode == 0, p.stderr
    assert photo.read_bytes() == b"precious"


def test_distclean_refuses_without_a_terminal(tmp_path):
    root = copy_project(tmp_path / "proj")
    user = populate(root, tmp_path / "elsewhere")
    p = make(root, "distclean")
    assert p.returncode != 0
    assert "FORCE=1" in p.stderr and "Traceback" not in p.stderr
    assert (root / ".venv" / "bin" / "python").exists() and (root / "data" / "sample").exists()
    assert_user_files_kept(user)

    p = make(root, "distclean", env={"FORCE": "1"})
    assert p.returncode == 0, p.stdout + p.stderr
    assert not (root / ".venv").exists() and not (root / "faceedge.egg-info").exists()
    assert not (root / ".venv-imx500").exists()
    assert not (root / "data" / "sample").exists() and not (root / "runs" / "log-run3").exists()
    assert_user_files_kept(user)


def _make_on_a_terminal(root: Path, answer: bytes) -> tuple[int, str]:
    """Run `make distclean` with a pty as its terminal and type `answer` at the prompt."""
    try:
        master, slave = pty.openpty()
    except OSError as e:  # e.g. a container without /dev/pts mounted
        pytest.skip(f"no pseudo-terminal to answer a prompt on ({e})")
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "-C", str(root), "distclean"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if k != "FORCE"},
    )
    os.close(slave)
    out, sent = b"", False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            if not sent and b"[y/N]" in out:
                os.write(master, answer)
                sent = True
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=30)
    os.close(master)
    return code, out.decode(errors="replace")


def test_distclean_asks_on_a_terminal(tmp_path):
    root = copy_project(tmp_path / "proj")
    user = populate(root, tmp_path / "elsewhere")
    code, out = _make_on_a_terminal(root, b"n\n")
    assert "[y/N]" in out and ".venv" in out  # lists what it would remove before asking
    assert code != 0 and (root / ".venv").exists() and (root / "data" / "sample").exists()
    code, out = _make_on_a_terminal(root, b"y\n")
    assert code == 0, out
    assert not (root / ".venv").exists() and not (root / "data" / "sample").exists()
    assert_user_files_kept(user)


@pytest.mark.parametrize("target", ["clean", "distclean"])
def test_clean_targets_are_listed_in_help(target):
    p = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "help"], capture_output=True, text=True, timeout=60
    )
    assert any(line.split()[:1] == [target] for line in p.stdout.splitlines()), p.stdout
