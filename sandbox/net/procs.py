"""Helper processes (pasta, relays, segment keepers) known by pid *and* start time, so that a
recorded pid that the kernel has since given to another process is never signalled."""
from __future__ import annotations

import os
import signal


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):
        return None  # a zombie has done its work
    return int(fields[19])


def identity(pid: int) -> list[int] | None:
    """[pid, start time], as recorded in the state files."""
    started = start_time(pid)
    return None if started is None else [pid, started]


def alive(recorded) -> bool:
    return bool(recorded) and start_time(recorded[0]) == recorded[1]


def stop(recorded, wait: float = 2.0) -> bool:
    """SIGKILL the recorded process if it is still the one recorded; True if it is gone now.
    Through a pidfd: opened first, then checked, so the pid cannot be reused in between."""
    if not recorded:
        return True
    pid, started = recorded
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:
        return not alive(recorded)
    try:
        if start_time(pid) != started:
            return True
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            return True
        import select
        select.select([pidfd], [], [], wait)  # readable once it has exited
        try:  # our own child (a relay or pasta started from this process): reap it
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return True
    finally:
        os.close(pidfd)
