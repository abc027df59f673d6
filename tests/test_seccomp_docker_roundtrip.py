"""Docker export and import keep what a workload can do (issue 21, item 3): round trips both ways,
checked by running the same socket calls on the kernel under the original and the round-tripped
profile. Sockets are only created and closed, never connected."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import require
from sandbox.seccomp import builtin_policy, evaluate, export_docker, import_docker

MOBY = Path("/work/shared/interop/moby-default-seccomp.json")
needs_moby = pytest.mark.skipif(not MOBY.exists(), reason="needs shared/interop/moby-default-seccomp.json")

# Each attempt prints "ok" or the errno name; raw syscalls so a family with high bits set is passed
# as is (Python's socket module would truncate it).
ATTEMPTS = r"""
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SOCKET, SOCKETPAIR = 41, 53
def attempt(nr, *args):
    ctypes.set_errno(0)
    fds = (ctypes.c_int * 2)()
    extra = [ctypes.byref(fds)] if nr == SOCKETPAIR else []
    ret = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args], *extra)
    if ret < 0:
        return errno.errorcode[ctypes.get_errno()]
    for fd in ([ret] if nr == SOCKET else list(fds)):
        os.close(fd)
    return "ok"
cases = [
    ("unix", SOCKET, 1, 1, 0), ("inet", SOCKET, 2, 2, 0), ("inet6", SOCKET, 10, 2, 0),
    ("netlink-route", SOCKET, 16, 3, 0), ("netlink-audit", SOCKET, 16, 3, 9),
    ("packet", SOCKET, 17, 2, 0), ("alg", SOCKET, 38, 5, 0), ("vsock", SOCKET, 40, 1, 0),
    ("vsock-high-bits", SOCKET, (1 << 32) | 40, 1, 0), ("unix-high-bits", SOCKET, (1 << 32) | 1, 1, 0),
    ("pair-unix", SOCKETPAIR, 1, 1, 0), ("pair-inet", SOCKETPAIR, 2, 1, 0),
]
print(" ".join(f"{name}={attempt(*args)}" for name, *args in cases))
"""


def outcomes(sandbox_cli, profile: str) -> dict[str, str]:
    done = sandbox_cli("run", "-q", profile, "--", "/usr/bin/python3", "-c", ATTEMPTS)
    assert done.returncode == 0, done.stderr
    return dict(item.split("=") for item in done.stdout.split())


@pytest.fixture(autouse=True)
def _machine():
    require("userns", "seccomp", "system_python")
    import os
    if os.uname().machine != "x86_64":
        pytest.skip("the attempts use x86_64 system call numbers")


def test_export_keeps_socket_families_as_conditions():
    warnings: list[str] = []
    exported = export_docker(builtin_policy("default"), warnings)
    socket_entries = [e for e in exported["syscalls"] if "socket" in e["names"]]
    assert all(e.get("args") for e in socket_entries)  # never an unconditional refusal
    assert not any(w.startswith("socket") for w in warnings)
    back = import_docker(json.loads(json.dumps(exported)))
    for args in ((1, 1, 0), (2, 1, 0), (10, 1, 0), (16, 3, 0), (16, 3, 9), (17, 3, 0), (40, 1, 0)):
        assert evaluate(back, "socket", args) == evaluate(builtin_policy("default"), "socket", args), args
    assert export_docker(back) == exported  # and a second trip changes nothing


@pytest.mark.parametrize("policy", ["default", "strict"])
def test_export_then_import_behaves_the_same_on_the_kernel(sandbox_cli, tmp_path, policy):
    original = tmp_path / f"{policy}.toml"
    original.write_text(f'extends = "untrusted"\n[seccomp]\npolicy = "{policy}"\n')
    exported, imported = tmp_path / "exported.json", tmp_path / "imported.toml"
    done = sandbox_cli("export", str(original), "--format", "docker-seccomp", "-o", str(exported))
    assert done.returncode == 0, done.stderr
    assert "socket" not in done.stderr  # nothing to say about sockets: exported exactly
    done = sandbox_cli("import", "docker-seccomp", str(exported), "-o", str(imported))
    assert done.returncode == 0, done.stderr
    before, after = outcomes(sandbox_cli, str(original)), outcomes(sandbox_cli, str(imported))
    assert after == before
    assert before["unix"] == before["pair-unix"] == "ok"
    assert before["packet"] == before["netlink-audit"] == before["vsock-high-bits"] == "EAFNOSUPPORT"
    assert before["unix-high-bits"] == "ok"  # the kernel reads AF_UNIX: allowed either way
    if policy == "default":
        assert before["inet"] == before["inet6"] == before["netlink-route"] == "ok"
    else:
        assert before["inet"] == before["netlink-route"] == "EAFNOSUPPORT"


@needs_moby
def test_import_then_export_of_docker_behaves_the_same_on_the_kernel(sandbox_cli, tmp_path):
    first, exported, second = tmp_path / "moby.toml", tmp_path / "moby-again.json", tmp_path / "moby-again.toml"
    assert sandbox_cli("import", "docker-seccomp", str(MOBY), "-o", str(first)).returncode == 0
    done = sandbox_cli("export", str(first), "--format", "docker-seccomp", "-o", str(exported))
    assert done.returncode == 0, done.stderr
    assert sandbox_cli("import", "docker-seccomp", str(exported), "-o", str(second)).returncode == 0
    before, after = outcomes(sandbox_cli, str(first)), outcomes(sandbox_cli, str(second))
    assert after == before
    # Docker's own rule: every family but AF_ALG (38) and AF_VSOCK (40), compared on 64 bits.
    assert before["unix"] == before["inet"] == before["netlink-audit"] == "ok"
    assert before["packet"] == "EPERM"  # allowed by the filter; the kernel wants CAP_NET_RAW
    assert before["alg"] == before["vsock"] == "EPERM"
    assert before["vsock-high-bits"] != "EPERM"  # Docker's 64-bit compare lets it reach the kernel
