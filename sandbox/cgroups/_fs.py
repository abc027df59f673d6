"""Plain file operations on cgroupfs shared by both hierarchies: read, write, walk, kill, remove."""
from __future__ import annotations

import errno
import os
import re
import signal
import time

# sandbox-<launcher pid>-<anything>: the launcher pid tells gc whether its owner is gone.
NAME_RE = re.compile(r"^sandbox-(\d+)-[A-Za-z0-9_.-]+$")

RMDIR_RETRY_S = 2.0
KILL_TIMEOUT_S = 5.0


# os-level I/O: a buffered text file costs four more system calls per access (fstat, ioctl,
# lseek...), and a launch reads or writes some fifty cgroup files.
def read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def read_or_none(path: str) -> str | None:
    try:
        return read(path)
    except OSError:
        return None


def write(path: str, value: object) -> None:
    # One write() per value: cgroupfs acts on each write call separately.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
    except OSError as e:
        if e.filename is None:  # the kernel refused the value: say where
            raise OSError(e.errno, e.strerror, path) from None
        raise


def keyed(text: str | None) -> dict[str, int]:
    """'key value' lines (cpu.stat, memory.events, oom_control) -> dict."""
    result = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            result[parts[0]] = int(parts[1])
    return result


def int_or_none(text: str | None) -> int | None:
    if text is None or text.strip() in ("", "max"):
        return None
    return int(text)


def subtree(directory: str) -> list[str]:
    """directory and every cgroup below it, deepest first (the order rmdir needs)."""
    found = []
    for top, dirs, _files in os.walk(directory, topdown=False, onerror=lambda e: None):
        found.append(top)
    return found


def procs(directory: str) -> list[int]:
    """Every process in directory and the cgroups below it (a workload may make its own)."""
    pids = []
    for cgroup in subtree(directory):
        text = read_or_none(os.path.join(cgroup, "cgroup.procs")) or ""
        pids.extend(int(word) for word in text.split())
    return sorted(set(pids))


def signal_all(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def remove_tree(directory: str, deadline_s: float = RMDIR_RETRY_S) -> bool:
    """rmdir directory and its child cgroups; EBUSY (tasks still exiting) is retried briefly.

    True when nothing is left; a directory that is already gone counts as removed. Never raises:
    it runs in the launcher's finally.
    """
    try:
        os.rmdir(directory)  # the usual case: an empty leaf, no walk needed
        return True
    except FileNotFoundError:
        return True
    except OSError:
        pass  # children, tasks still exiting, or no permission: the walk below sorts it out
    deadline = time.monotonic() + deadline_s
    while True:
        busy = False
        for cgroup in subtree(directory):
            try:
                os.rmdir(cgroup)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    return False  # EPERM, EROFS...: retrying will not help; the caller reports it
                busy = True
        if not busy or not os.path.exists(directory):
            return not os.path.exists(directory)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def launcher_pid(name: str) -> int | None:
    match = NAME_RE.match(name)
    return int(match.group(1)) if match else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sandbox_children(base: str) -> list[str]:
    """The sandbox-<pid>-* cgroups directly below base."""
    try:
        names = os.listdir(base)
    except OSError:
        return []
    return sorted(os.path.join(base, n) for n in names
                  if NAME_RE.match(n) and os.path.isdir(os.path.join(base, n)))


def wait_until(predicate, timeout_s: float, step_s: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(step_s)
    return True
