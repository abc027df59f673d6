"""Fault injection for the test suite: make one named step of a launch fail as the kernel would,
or end the launcher at a named point, to prove every failure is reported and cleaned up.

    from sandbox import faults
    with faults.injected("seccomp", errno.EPERM):
        sandbox.run(...)     # the workload's seccomp step fails with EPERM: SetupError("seccomp", EPERM)
    with faults.killed_at("created"):
        sandbox.run(...)     # the launcher SIGKILLs itself when the workload reports "created"

Step names are child.step's ("landlock", "mount", ...), the mount plan's operations ("mount:bind",
"mount:tmpfs", ..., "pivot_root") and the parent's own ("cgroup", "idmapped mount", "pipes",
"fork", "id map", "cgroup placement"). Kill points are the parent's checkpoints ("cgroup created",
"spawned") and the names of the messages it receives ("ready", "init_pid", "created", "exec", "exit").

Only a test can reach this: the tables live in the launching process's memory, and the child
processes get them through fork or, from a fork server, in the launch's ChildContext, which only
the launching process builds. No environment variable, file or option sets them, so neither a
workload nor an ordinary user can change a launch with them.
"""
from __future__ import annotations

import contextlib
import errno as _errno
import os
import signal

INJECTED: dict[str, int] = {}  # step name -> errno
KILL_AT: set[str] = set()  # checkpoint names at which the launcher kills itself


def error_for(step_name: str, table=None) -> OSError | None:
    err = (INJECTED if table is None else dict(table)).get(step_name)
    return None if err is None else OSError(err, f"injected fault: {os.strerror(err)}")


def fail_if_injected(step_name: str, table=None) -> None:
    exc = error_for(step_name, table)
    if exc is not None:
        raise exc


def checkpoint(name: str) -> None:
    """The launcher is at `name`: a test that asked for it gets a launcher killed right here."""
    if name in KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def injected(step_name: str, err: int = _errno.EIO):
    INJECTED[step_name] = err
    try:
        yield
    finally:
        INJECTED.pop(step_name, None)


@contextlib.contextmanager
def killed_at(name: str):
    KILL_AT.add(name)
    try:
        yield
    finally:
        KILL_AT.discard(name)
