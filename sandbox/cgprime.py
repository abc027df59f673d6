"""Hide the RCU grace period of the first cgroup migration behind work the launcher does anyway.

Writing a pid to cgroup.procs write-locks the kernel's global cgroup_threadgroup_rwsem, a percpu
rwsem: unless a writer was active within the last grace period, the writer first waits for an
RCU grace period (synchronize_rcu: 5-15 ms measured on a 2-core VM), far more than everything
else a launch does in the kernel. Later writers ride on the same "writer active" state for about
one more grace period.

So, while the launcher imports, parses the profile and builds its plan, a background thread writes
the launcher's own pid into the cgroup.procs of the cgroup it already is in: a migration to where
it is, which changes nothing but pays the grace period early. The sandbox's real cgroup.procs
writes then find the lock warm (~0.2 ms instead of ~10 ms). The priming stops (stop()) before the
sandbox's cgroups are created, since creating them may move the launcher (cgroups.v2._vacate);
the window left is about one grace period, more than the few ms from there to the placement.

Not on a pure cgroup v2 machine: there the sandbox's init is cloned straight into its cgroup
(CLONE_INTO_CGROUP, child.spawn), which takes the lock only for reading, and no migration follows.

Best effort throughout: no cgroupfs, no permission, a cgroup that refuses (EBUSY for a v2 cgroup
with controllers enabled below it), anything else: the thread just ends and nothing changes.
The cost while it runs is the kernel's favordynmods trade-off (forks and exits on the host take
the rwsem's slow path for a few ms); writes are spaced 3 ms apart and capped in number.
"""
from __future__ import annotations

import os
import threading
import time

_INTERVAL_S = 0.003
_MAX_WRITES = 200  # about 0.6 s of priming at most, should stop() never come
_state: dict = {}


def _own_cgroup_procs() -> str | None:
    """cgroup.procs of the cgroup this process is in: unified hierarchy first, else a v1 one."""
    try:
        with open("/proc/self/cgroup") as f:
            memberships = [line.rstrip("\n").split(":", 2) for line in f]
        with open("/proc/self/mountinfo") as f:
            mounts = f.read().splitlines()
    except OSError:
        return None
    where: dict[str, tuple[str, str]] = {}  # "" for cgroup2, else the v1 controller list
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or fields[3] != "/":
            continue  # only mounts of a hierarchy's root map /proc/self/cgroup paths directly
        if tail[0] == "cgroup2":
            where.setdefault("", (fields[4], ""))
        elif tail[0] == "cgroup":
            options = set(tail[2].split(","))
            where.setdefault(",".join(sorted(options)), (fields[4], tail[2]))
    for hierarchy in sorted(memberships, key=lambda m: m[1] != ""):  # v2 ("0::") first
        if len(hierarchy) != 3 or not hierarchy[2].startswith("/"):
            continue
        _, controllers, path = hierarchy
        if controllers == "":
            mount = where.get("")
        else:
            wanted = set(controllers.split(","))
            mount = next((m for key, m in where.items() if key and wanted <= set(key.split(","))), None)
        if mount is not None:
            return os.path.join(mount[0], path.lstrip("/"), "cgroup.procs")
    return None


def _only_v2() -> bool:
    try:
        with open("/proc/self/cgroup") as f:
            return all(line.startswith("0::") for line in f)
    except OSError:
        return True  # no cgroups to place anything in


def _prime(stop: threading.Event) -> None:
    pid = str(os.getpid()).encode()
    for _ in range(_MAX_WRITES):
        if stop.is_set():
            return
        path = _own_cgroup_procs()  # re-read each time: never move ourselves anywhere else
        if path is None:
            return
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)
        except OSError:
            return
        stop.wait(_INTERVAL_S)


def start() -> None:
    """Begin priming (idempotent; only for launchers with cgroups to place sandboxes in)."""
    if _state.get("thread") is not None or os.environ.get("SANDBOX_NO_CGROUP_PRIMING") or _only_v2():
        return
    from ._libc import thread_count
    threads_before = thread_count()
    stop = threading.Event()
    thread = threading.Thread(target=_prime, args=(stop,), name="sandbox-cgroup-priming", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # no thread to be had (the caller's cgroup at its pids limit): only slower
        return
    _state.update(thread=thread, stop=stop, threads_before=threads_before)


def stop() -> None:
    """End priming before the launcher creates (and may move into) cgroups; waits for the thread
    to be gone from the kernel too. join() returns once the thread has let go of Python, a moment
    before its OS thread exits, and a launcher that still counts two threads then forks an extra
    process (child.spawn) where it could have cloned init directly."""
    thread = _state.pop("thread", None)
    if thread is None:
        return
    _state.pop("stop").set()
    thread.join()
    from ._libc import thread_count
    threads_before = _state.pop("threads_before")
    for _ in range(200):  # ~20 ms at most; it is usually gone at the first look
        if thread_count() <= threads_before:
            return
        time.sleep(0.0001)
