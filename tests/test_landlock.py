"""Landlock against the real kernel. Every restriction happens in a forked child
(Landlock domains are irrevocable), which reports back through a pipe."""
from __future__ import annotations

import ctypes
import errno
import os
import shutil
import socket
import tempfile

import pytest

from sandbox import landlock

from conftest import attempt, run_in_child

ABI = landlock.abi_version()
needs = lambda n: pytest.mark.skipif(ABI < n, reason=f"needs landlock ABI {n}, have {ABI}")  # noqa: E731
_libc = ctypes.CDLL(None, use_errno=True)


def set_no_new_privs() -> None:
    if _libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")






def write_file(path: str, data: str = "x") -> None:
    with open(path, "w") as f:
        f.write(data)


def read_file(path: str) -> str:
    with open(path) as f:
        return f.read()


@pytest.fixture
def dirs():
    a, b = tempfile.mkdtemp(prefix="ll-a-"), tempfile.mkdtemp(prefix="ll-b-")
    write_file(os.path.join(a, "f"), "hello")
    write_file(os.path.join(b, "existing"), "data")
    yield a, b
    shutil.rmtree(a, ignore_errors=True)
    shutil.rmtree(b, ignore_errors=True)


def test_abi_version_and_bundles():
    assert ABI >= 1  # this VM has Landlock; abi_version() returns 0 elsewhere
    assert landlock.READ & landlock.WRITE == 0
    assert landlock.READ | landlock.WRITE == landlock.ACCESS_FS_ALL
    assert landlock.WRITE & landlock.ACCESS_FS_REFER
    assert landlock.WRITE & landlock.ACCESS_FS_TRUNCATE
    assert landlock.WRITE & landlock.ACCESS_FS_IOCTL_DEV
    assert landlock.handled_fs(1) == (1 << 13) - 1
    assert landlock.handled_fs(0) == 0
    assert landlock.handled_fs(99) == landlock.ACCESS_FS_ALL


def test_unsupported_kernel(monkeypatch):
    monkeypatch.setattr(landlock, "abi_version", lambda: 0)
    assert landlock.restrict([("/", landlock.READ)]) == [
        "landlock unsupported by this kernel: file access not restricted"]
    with pytest.raises(OSError, match="landlock unsupported"):
        landlock.restrict([("/", landlock.READ)], best_effort=False)


@needs(1)
def test_filesystem(dirs):
    a, b = dirs
    missing = os.path.join(b, "no-such-dir")
    outside = "/etc/hostname" if os.path.exists("/etc/hostname") else "/etc/passwd"

    def child():
        set_no_new_privs()
        warnings = landlock.restrict([(a, landlock.READ), (b, landlock.WRITE),
                                      (missing, landlock.READ)])
        return {
            "warnings": warnings,
            "read_a": attempt(lambda: read_file(os.path.join(a, "f"))),
            "list_a": attempt(lambda: os.listdir(a)),
            "write_a": attempt(lambda: write_file(os.path.join(a, "new"))),
            "append_a": attempt(lambda: write_file(os.path.join(a, "f"))),
            "write_b": attempt(lambda: write_file(os.path.join(b, "out"), "y")),
            "read_b": attempt(lambda: read_file(os.path.join(b, "existing"))),
            "mkdir_b": attempt(lambda: os.mkdir(os.path.join(b, "sub"))),
            "read_outside": attempt(lambda: read_file(outside)),
            "truncate_a": attempt(lambda: os.truncate(os.path.join(a, "f"), 0)),
        }

    res = run_in_child(child)
    assert res["warnings"] == [f"landlock: {missing}: does not exist, rule skipped"]
    assert res["read_a"] == res["list_a"] == "ok"
    assert res["write_a"] == res["append_a"] == "EACCES"
    assert res["write_b"] == res["mkdir_b"] == "ok"
    assert res["read_b"] == "EACCES"  # WRITE alone does not grant reading
    assert res["read_outside"] == "EACCES"
    if ABI >= 3:
        assert res["truncate_a"] == "EACCES"
    assert read_file(os.path.join(b, "out")) == "y"
    assert read_file(os.path.join(a, "f")) == "hello"


@needs(1)
def test_file_rule_is_masked(dirs):
    """Directory-only rights on a file path are dropped instead of failing (EINVAL)."""
    a, _ = dirs
    f = os.path.join(a, "f")

    def child():
        set_no_new_privs()
        w = landlock.restrict([(f, landlock.READ | landlock.WRITE)])
        return {"warnings": w, "read": attempt(lambda: read_file(f)),
                "write": attempt(lambda: write_file(f, "bye")),
                "sibling": attempt(lambda: write_file(os.path.join(a, "g")))}

    res = run_in_child(child)
    assert res == {"warnings": [], "read": "ok", "write": "ok", "sibling": "EACCES"}


@needs(6)
def test_scope_signals():
    def child(scope):
        def run():
            set_no_new_privs()
            landlock.restrict([], scope_signals=scope, scope_abstract_unix=False)
            return {"parent": attempt(lambda: os.kill(os.getppid(), 0)),
                    "self": attempt(lambda: os.kill(os.getpid(), 0))}
        return run

    assert run_in_child(child(True)) == {"parent": "EPERM", "self": "ok"}
    assert run_in_child(child(False)) == {"parent": "ok", "self": "ok"}


@needs(6)
def test_scope_abstract_unix():
    name = f"\0sandbox-test-landlock-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(name)
        server.listen(4)

        def child(scope):
            def run():
                set_no_new_privs()
                landlock.restrict([], scope_signals=False, scope_abstract_unix=scope)
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    return attempt(lambda: s.connect(name))
            return run

        assert run_in_child(child(True)) == "EPERM"
        assert run_in_child(child(False)) == "ok"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs(4)
def test_network():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        lport = server.getsockname()[1]
        bport = _free_port()

        def child(**kw):
            def run():
                set_no_new_privs()
                w = landlock.restrict([], handle_network=True, **kw)
                out = {"warnings": w}
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    out["bind"] = attempt(lambda: s.bind(("127.0.0.1", bport)))
                with socket.socket() as s:
                    out["connect"] = attempt(lambda: s.connect(("127.0.0.1", lport)))
                return out
            return run

        assert run_in_child(child()) == {"warnings": [], "bind": "EACCES", "connect": "EACCES"}
        assert run_in_child(child(tcp_bind_ports=[bport], tcp_connect_ports=[lport])) == {
            "warnings": [], "bind": "ok", "connect": "ok"}


def test_invalid_port():
    with pytest.raises(ValueError, match="port"):
        landlock.restrict([], handle_network=True, tcp_bind_ports=[70000])


@needs(1)
def test_old_abi_warns(monkeypatch):
    """On an ABI 1 kernel, network and scopes degrade to warnings (or raise when strict)."""
    monkeypatch.setattr(landlock, "abi_version", lambda: 1)
    with pytest.raises(OSError, match="ABI 1 < 4"):
        landlock.restrict([], handle_network=True, best_effort=False)

    def child():
        set_no_new_privs()
        return landlock.restrict([("/", landlock.READ)], handle_network=True)

    warnings = run_in_child(child)
    assert len(warnings) == 2
    assert "TCP bind/connect not restricted" in warnings[0]
    assert "not scoped" in warnings[1]


@needs(1)
def test_requires_no_new_privs():
    import prctl

    def child():
        # Without CAP_SYS_ADMIN and without no_new_privs the kernel must refuse.
        prctl.cap_effective.sys_admin = False
        try:
            landlock.restrict([("/", landlock.READ)])
        except OSError as exc:
            return [exc.errno, str(exc)]
        return None

    err, msg = run_in_child(child)
    assert err == errno.EPERM
    assert "landlock_restrict_self" in msg and "no_new_privs" in msg
