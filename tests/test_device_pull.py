"""`device pull` (make pull) against a real sshd on 127.0.0.1 (tests/helpers/sshd.py) playing the Pi.

The "Pi" has crops in collect's layout; pull brings the new ones into data/<name>/ over ssh with the
deploy's options (key only, host key checked), never overwriting, skipping content already there
(also in .trash/, where `make label` puts removed crops).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT
from tests.helpers.sshd import keygen, start_sshd

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def pi(tmp_path):
    (tmp_path / "sshd").mkdir()
    server = start_sshd(tmp_path / "sshd")
    yield server
    server.stop()


def png(seed: int) -> bytes:
    import cv2

    img = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    return cv2.imencode(".png", img)[1].tobytes()


def put(root, rel: str, data: bytes) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def pull(pi, remote, out, *extra, known_hosts=None, key=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "device",
            "pull",
            "--hosts",
            pi.host,
            "--port",
            str(pi.port),
            "--ssh-key",
            str(key or pi.key),
            "--known-hosts",
            str(known_hosts or pi.known_hosts),
            "--remote-data",
            str(remote),
            "--out",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_pull_new_files_only_never_overwriting(pi, tmp_path):
    remote = pi.home / "faceedge" / "data" / "mine"
    for i in range(4):
        put(remote, f"open/alice/alice-1-{i:05d}.png", png(i))
    put(remote, "closed/alice/alice-2-00001.png", png(10))
    put(remote, "closed/alice/.alice-2-00002.png.tmp", b"half a file")  # collect's temporary: not pulled
    out = tmp_path / "data" / "mine"
    put(out, "open/alice/alice-1-00000.png", png(0))  # pulled before (same content)
    put(out, "open/alice/alice-1-00001.png", b"another file of the user's, same name")
    put(out, ".trash/open/alice/alice-1-00002.png", png(2))  # thrown away with make label: not back
    put(out, "closed/bob/moved.png", png(3))  # moved to another label and renamed: not back either

    p = pull(pi, remote, out)
    assert p.returncode == 0, p.stderr
    assert "2 new crops" in p.stdout and "(closed +1, open +1)" in p.stdout and "3 already there" in p.stdout
    assert (out / "closed/alice/alice-2-00001.png").read_bytes() == png(10)
    # the name was taken by another file: kept, the pulled one under the next name
    assert (out / "open/alice/alice-1-00001.png").read_bytes() == b"another file of the user's, same name"
    assert (out / "open/alice/alice-1-00001_2.png").read_bytes() == png(1)
    assert "1 under a new name" in p.stdout
    assert not (out / "open/alice/alice-1-00002.png").exists() and not (out / "open/alice/alice-1-00003.png").exists()
    assert not list(out.rglob("*.tmp"))

    # Collect went on: the next pull brings only what is new.
    put(remote, "open/alice/alice-3-00001.png", png(20))
    p = pull(pi, remote, out)
    assert p.returncode == 0, p.stderr
    assert "1 new crops" in p.stdout and "open +1" in p.stdout
    assert (out / "open/alice/alice-3-00001.png").read_bytes() == png(20)
    # nothing changed on the Pi
    assert len(list(remote.rglob("*.png"))) == 6


def test_unknown_host_key_is_refused_and_nothing_copied(pi, tmp_path):
    remote = pi.home / "crops"
    put(remote, "open/a/x.png", png(1))
    empty_known = tmp_path / "known_hosts_empty"
    empty_known.write_text("")
    out = tmp_path / "data" / "mine"
    p = pull(pi, remote, out, known_hosts=empty_known)
    assert p.returncode == 2
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "host key verification failed" in errors[0], p.stderr
    assert not list(out.rglob("*.png"))


def test_key_refused_and_missing_folder_are_one_line_errors(pi, tmp_path):
    other = keygen(tmp_path / "other_key", "not authorized")
    p = pull(pi, pi.home / "crops", tmp_path / "out", key=other)
    assert p.returncode == 2 and "ssh key refused" in p.stderr, p.stderr
    p = pull(pi, pi.home / "no-such-folder", tmp_path / "out")
    assert p.returncode == 2 and "no such folder" in p.stderr, p.stderr
    p = pull(pi, "../etc", tmp_path / "out")
    assert p.returncode == 2 and "--remote-data '../etc'" in p.stderr, p.stderr
