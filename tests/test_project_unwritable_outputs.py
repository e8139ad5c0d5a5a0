"""Output folders that cannot be written: one `error:` line naming the folder, never a traceback,
and before any slow start-up (`train fit` checks its runs_dir before TensorFlow is imported).

"Cannot be written" for real: a read-only bind mount for root (file modes do not stop root), mode
0555 for anyone else (tests/helpers/tools.run_with_readonly), and a regular file where a folder is expected.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, tools

PY = sys.executable
# `train fit` must not import TensorFlow before it has checked where it will write: with the
# modules made unimportable, an import before the check is an ImportError traceback.
NO_TF = (
    "import sys; sys.modules['tensorflow'] = sys.modules['keras'] = None; "
    "from train.cli import main; sys.exit(main(sys.argv[1:]))"
)


def one_line_error(p, *names: str) -> str:
    err = p.stderr.strip()
    assert p.returncode == 2, p.stdout[-1000:] + p.stderr[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err[-3000:]
    for n in names:
        assert n in lines[0], lines[0]
    return lines[0]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}


def collect_argv(out: Path) -> list[str]:
    return [
        PY,
        "-m",
        "device",
        "collect",
        "--label",
        "open",
        "--person",
        "alice",
        "--out",
        str(out),
        "--source",
        "synthetic",
        "--count",
        "3",
        "--min_sharpness",
        "0",
        "--min_change",
        "0",
    ]


def test_collect_into_a_read_only_folder(tmp_path):
    ro = tmp_path / "dataset"
    ro.mkdir()
    p = tools.run_with_readonly(ro, collect_argv(ro), capture_output=True, text=True, timeout=120, env=env(), cwd=ROOT)
    line = one_line_error(p, str(ro))
    assert "not writable" in line
    assert list(ro.iterdir()) == []


def test_collect_where_a_file_is_in_the_way(tmp_path):
    f = tmp_path / "dataset"
    f.write_text("not a folder")
    import subprocess

    p = subprocess.run(collect_argv(f / "sub"), capture_output=True, text=True, timeout=120, env=env(), cwd=ROOT)
    one_line_error(p, str(f))
    assert f.read_text() == "not a folder"


@pytest.fixture(scope="module")
def sample_data(tmp_path_factory) -> Path:
    import subprocess

    out = tmp_path_factory.mktemp("sample") / "data"
    subprocess.run(
        [PY, "-m", "train", "data", "--out", str(out), "--persons", "4", "--images-per-person", "6", "--size", "48"],
        check=True,
        capture_output=True,
        timeout=300,
        env=env(),
        cwd=ROOT,
    )
    return out


@pytest.mark.parametrize("where", ["folder", "inside"])
def test_train_fit_with_a_read_only_runs_dir(tmp_path, sample_data, where):
    ro = tmp_path / "runs"
    ro.mkdir()
    runs_dir = ro if where == "folder" else ro / "more" / "runs"
    argv = [
        PY,
        "-c",
        NO_TF,
        "fit",
        "--config",
        str(ROOT / "configs" / "sample.yaml"),
        "--set",
        f"data.root={sample_data}",
        "--set",
        f"run.runs_dir={runs_dir}",
    ]
    p = tools.run_with_readonly(ro, argv, capture_output=True, text=True, timeout=300, env=env(), cwd=ROOT)
    line = one_line_error(p, str(runs_dir), "run.runs_dir")
    assert "not writable" in line
    assert list(ro.iterdir()) == []


@pytest.mark.slow
def test_convert_on_a_read_only_run(tmp_path):
    from tests.helpers.tiny_run import make_tiny_run

    run = make_tiny_run(tmp_path)
    before = sorted(p.name for p in run.iterdir())
    p = tools.run_with_readonly(
        run,
        [PY, "-m", "convert", "--run", str(run), "--variants", "float32"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env(),
        cwd=ROOT,
    )
    line = one_line_error(p, str(run))
    assert "not writable" in line
    assert sorted(p.name for p in run.iterdir()) == before
