"""Observe a compiled filter on the real kernel, in a throw-away child process.

Used by the tests and meant for the verifier and `sandbox seccomp test`:

    probe(bpf, [("getpid", ()), ("unshare", (CLONE_NEWUSER,))])
    run_under(bpf, ["sh", "-c", "true"], capture_output=True)

Choose arguments so that an *allowed* call fails harmlessly (bad fd, NULL
pointer, invalid flag): a probe must never do damage if the filter let it through.
"""
from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import time

from ..compiled_dataclass import dataclass
from .. import _libc
from . import syscalls as _syscalls
from .bpf import load_bpf

PR_SET_NO_NEW_PRIVS = 38


@dataclass(frozen=True)
class Outcome:
    """One probed call: its return value and errno, or the signal that killed the child."""

    ret: int | None = None
    errno: int = 0
    signal: int | None = None

    @property
    def killed(self) -> bool:
        return self.signal is not None


def set_no_new_privs() -> None:
    if _libc.libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(err)}")


def confine_self(bpf: bytes, **load_flags) -> int | None:
    """no_new_privs, then the filter: what a sandboxed child does right before execve."""
    set_no_new_privs()
    return load_bpf(bpf, **load_flags)


def _number(call) -> int:
    if isinstance(call, int):
        return call
    nr = _syscalls.resolve(call)
    if nr < 0:
        raise ValueError(f"{call} is not a native syscall here")
    return nr


def _child(bpf: bytes, calls, wfd: int) -> None:
    try:
        confine_self(bpf)
    except OSError as exc:
        os.write(wfd, f"load {exc.errno}\n".encode())
        os._exit(3)
    for index, (nr, args) in enumerate(calls):
        ctypes.set_errno(0)
        ret = _libc.libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a & (2**64 - 1)) for a in args))
        err = ctypes.get_errno() if ret == -1 else 0
        os.write(wfd, f"{index} {ret} {err}\n".encode())
    os._exit(0)


def probe(bpf: bytes, calls, *, timeout: float = 10.0) -> list[Outcome]:
    """Run each (syscall name or number, args) under ``bpf`` in a forked child, in order.

    Calls after one that killed the child are reported with the same signal.
    """
    prepared = [(_number(name), tuple(args)) for name, args in calls]
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(rfd)
        try:
            _child(bpf, prepared, wfd)
        finally:
            os._exit(4)
    os.close(wfd)
    data, deadline = b"", time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([rfd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise TimeoutError("probe child did not finish")
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(rfd)
        _, status = os.waitpid(pid, 0)
    lines = data.decode().split("\n")
    if lines and lines[0].startswith("load "):
        err = int(lines[0].split()[1])
        raise OSError(err, f"loading the filter failed in the child: {os.strerror(err)}")
    results: list[Outcome] = []
    for line in lines:
        if line:
            _, ret, err = line.split()
            results.append(Outcome(int(ret), int(err)))
    killed_by = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    while len(results) < len(prepared):
        results.append(Outcome(signal=killed_by))
    return results


def run_under(bpf: bytes, argv, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run(argv) with ``bpf`` loaded in the child just before execve."""
    return subprocess.run(argv, preexec_fn=lambda: confine_self(bpf), **kwargs)
