"""sha256 and a constant-time comparison, without loading OpenSSL.

`hashlib` and `hmac` load OpenSSL's libcrypto: 3.6 MB of resident memory on a daemon that hashes one
model file at start and compares one bearer token per request. CPython's own sha256 (the module
hashlib itself falls back to when built without OpenSSL) costs 0.03 MB and gives the same digests;
it is about 3x slower, which a daemon hashing a few MB once never notices. Bulk hashing on a desktop
(deploy bundles, `make pull`) may still use hashlib.
"""

from __future__ import annotations

try:  # CPython 3.12+
    from _sha2 import sha256
except ImportError:
    try:  # CPython 3.11
        from _sha256 import sha256
    except ImportError:  # another interpreter: OpenSSL's, same digests
        from hashlib import sha256

__all__ = ["equal", "sha256"]


def equal(a: bytes, b: bytes) -> bool:
    """`a == b` in a time that does not depend on where they differ (nor, beyond hashing, on their
    lengths): both are hashed to 32 bytes, and every byte of the digests is compared."""
    x, y = sha256(a).digest(), sha256(b).digest()
    diff = 0
    for p, q in zip(x, y):
        diff |= p ^ q
    return diff == 0
