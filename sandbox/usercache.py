"""The user's cache directory for things worth not recomputing at every start.

``$XDG_CACHE_HOME/sandbox/<kind>`` (default ``~/.cache/sandbox/<kind>``). What is stored there is
later trusted (compiled seccomp programs, compiled dataclass methods), so a directory is only read
or written when it belongs to the effective user and no one else can write into it; anything
that goes wrong makes the cache a miss, never an error.
"""
from __future__ import annotations

import os


def directory(kind: str) -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sandbox", kind)


def trusted(path: str) -> bool:
    """Only use a cache directory that no one else can write into."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def read(directory_path: str, name: str) -> bytes | None:
    """The entry's bytes, or None when it is missing or the directory is not trusted."""
    if not trusted(directory_path):
        return None
    try:
        with open(os.path.join(directory_path, name), "rb") as f:
            return f.read()
    except OSError:
        return None


def write(directory_path: str, name: str, data: bytes) -> None:
    """Store an entry atomically: readers see the old entry or the new one, never a part."""
    try:
        os.makedirs(directory_path, mode=0o700, exist_ok=True)
        if not trusted(directory_path):
            return
        import tempfile  # only when writing
        fd, tmp = tempfile.mkstemp(dir=directory_path, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(directory_path, name))
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass  # a cache that cannot be written is not an error
