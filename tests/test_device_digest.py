"""device/digest.py: the same sha256 as OpenSSL's, a comparison that is right, and no OpenSSL on the daemon's path."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from device.digest import equal, sha256
from device.files import sha256_file


@pytest.mark.parametrize("size", [0, 1, 55, 56, 64, 1000, 1 << 20])
def test_sha256_matches_openssl(size, tmp_path):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    f = tmp_path / "blob"
    f.write_bytes(data)
    assert sha256_file(f, chunk=4096) == hashlib.sha256(data).hexdigest()


def test_equal():
    token = b"s3cret-token-0123456789"
    assert equal(token, bytes(token))
    assert not equal(token, token[:-1] + b"8")
    assert not equal(token, token + b"0")
    assert not equal(b"", token)
    assert equal(b"", b"")


def test_daemon_path_loads_no_openssl():
    code = "import sys, device.config, device.daemon, device.manifest; print(' '.join(sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    modules = set(r.stdout.split())
    assert "device.daemon" in modules, r.stderr
    assert not modules & {"_hashlib", "_ssl", "hmac"}, modules & {"_hashlib", "_ssl", "hmac"}
