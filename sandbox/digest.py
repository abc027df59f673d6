"""SHA-256 without OpenSSL's start-up cost.

hashlib prefers OpenSSL, and loading libcrypto takes ~2 ms of every `sandbox run`, which only
hashes a profile and a seccomp program of a few kB. CPython's built-in implementation gives the
same digests (tests/test_cold_path.py compares them) and loads in ~0.15 ms; hashlib is the
fallback for a build without it.
"""
try:
    from _sha2 import sha256  # Python 3.12+
except ImportError:
    try:
        from _sha256 import sha256  # Python 3.11
    except ImportError:
        from hashlib import sha256

__all__ = ["sha256"]
