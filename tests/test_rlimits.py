"""setrlimit wrapper; limits are applied in forked children so pytest keeps its own."""
from __future__ import annotations

import errno
import os
import resource
import signal
import tempfile

import pytest

from sandbox import rlimits

from conftest import run_in_child

INF = resource.RLIM_INFINITY




def test_names_cover_contract():
    assert set(rlimits.RLIMITS) == set(
        "as core cpu data fsize locks memlock msgqueue nice nofile nproc rss rtprio rttime "
        "sigpending stack".split())
    assert rlimits.RLIMITS["nofile"] == resource.RLIMIT_NOFILE
    assert sorted(rlimits.RLIMITS.values()) == list(range(16))  # Linux resources 0..15


def test_apply_and_fsize_enforced():
    fd, path = tempfile.mkstemp(prefix="rlimit-")
    os.close(fd)
    mib = 1 << 20

    def child():
        warnings = rlimits.apply((("core", 0, 0), ("nofile", 64, 128), ("fsize", mib, mib)))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of dying
        fd = os.open(path, os.O_WRONLY)
        try:
            at_limit = os.pwrite(fd, b"x", mib - 1)
            try:
                os.pwrite(fd, b"x", mib)
                past = "ok"
            except OSError as exc:
                past = errno.errorcode[exc.errno]
        finally:
            os.close(fd)
        return {"warnings": warnings,
                "core": resource.getrlimit(resource.RLIMIT_CORE),
                "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
                "fsize": resource.getrlimit(resource.RLIMIT_FSIZE),
                "at_limit": at_limit, "past": past}

    try:
        res = run_in_child(child)
    finally:
        os.unlink(path)
    assert res == {"warnings": [], "core": [0, 0], "nofile": [64, 128],
                   "fsize": [mib, mib], "at_limit": 1, "past": "EFBIG"}


def test_hard_limit_never_raised():
    def child():
        resource.setrlimit(resource.RLIMIT_NOFILE, (32, 64))
        w1 = rlimits.apply((("nofile", 32, 1000),))
        after1 = resource.getrlimit(resource.RLIMIT_NOFILE)
        w2 = rlimits.apply((("nofile", -1, -1),))
        after2 = resource.getrlimit(resource.RLIMIT_NOFILE)
        return {"w1": w1, "after1": after1, "w2": w2, "after2": after2}

    res = run_in_child(child)
    assert res["w1"] == ["rlimit nofile: hard limit 1000 clamped to current hard limit 64"]
    assert res["after1"] == [32, 64]
    assert res["w2"] == ["rlimit nofile: hard limit unlimited clamped to current hard limit 64"]
    assert res["after2"] == [64, 64]  # soft follows the clamped hard limit


def test_unlimited_and_lowering():
    def child():
        start = resource.getrlimit(resource.RLIMIT_CORE)
        if start[1] != INF:
            return None
        w = rlimits.apply((("core", -1, -1), ("stack", 8 << 20, -1)))
        return {"w": w, "core": resource.getrlimit(resource.RLIMIT_CORE),
                "stack": resource.getrlimit(resource.RLIMIT_STACK)}

    res = run_in_child(child)
    if res is None:
        pytest.skip("core hard limit is not unlimited here")
    assert res["w"] == []
    assert res["core"] == [INF, INF]
    assert res["stack"][0] == 8 << 20


def test_invalid_input_rejected_before_any_change():
    before = resource.getrlimit(resource.RLIMIT_CORE)
    with pytest.raises(ValueError, match="unknown rlimit 'bogus'"):
        rlimits.apply((("bogus", 1, 1),))
    with pytest.raises(ValueError, match="soft 10 above hard 5"):
        rlimits.apply((("core", 10, 5),))
    with pytest.raises(ValueError, match="soft unlimited above hard 5"):
        rlimits.apply((("core", -1, 5),))
    with pytest.raises(ValueError, match="invalid value"):
        rlimits.apply((("core", -2, 5),))
    assert resource.getrlimit(resource.RLIMIT_CORE) == before


def test_setrlimit_failure_names_call(monkeypatch):
    def fail(res, new):
        raise ValueError("not allowed to raise maximum limit")

    monkeypatch.setattr(resource, "setrlimit", fail)
    with pytest.raises(OSError, match=r"setrlimit\(nofile, 10, 20\) failed") as ei:
        rlimits.apply((("nofile", 10, 20),))
    assert ei.value.errno == errno.EPERM


def test_locks_is_settable():
    def child():
        rlimits.apply((("locks", 5, 10),))
        return resource.getrlimit(rlimits.RLIMITS["locks"])

    assert run_in_child(child) == [5, 10]
