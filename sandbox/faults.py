"""Fault injection for the test suite: make one named step of a launch fail as the kernel would.

    from sandbox import faults
    with faults.injected("seccomp", errno.EPERM):
        sandbox.run(...)     # the workload's seccomp step fails with EPERM

Only a test can reach this: the table lives in the launching process's memory (the child
processes inherit it through fork), and nothing outside the process sets it: no environment
variable, file or option, so neither a workload nor an ordinary user can change a launch with it.
"""
from __future__ import annotations

import contextlib
import errno as _errno
import os

INJECTED: dict[str, int] = {}  # step name -> errno; checked by child.step and the parent's steps


def fail_if_injected(step_name: str) -> None:
    err = INJECTED.get(step_name)
    if err is not None:
        raise OSError(err, f"injected fault: {os.strerror(err)}")


@contextlib.contextmanager
def injected(step_name: str, err: int = _errno.EIO):
    INJECTED[step_name] = err
    try:
        yield
    finally:
        INJECTED.pop(step_name, None)
