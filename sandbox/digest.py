"""SHA-256 for the run path (profile digests, the seccomp program cache, the audit chain).

hashlib, as everywhere: an earlier version imported CPython's private `_sha256` module to avoid
loading OpenSSL (~2 ms), but that name changed in Python 3.12 (`_sha2`), and a private module of
the standard library is no foundation (docs/performance.md, "Tricks and verdicts").
"""
from hashlib import sha256

__all__ = ["sha256"]
