"""Per-process resource limits (setrlimit), applied in the sandbox child before execve.

Limits are given as (name, soft, hard) with -1 meaning unlimited. A hard limit
is never raised above the current one: an unprivileged caller cannot, and a
privileged one should not silently widen what its parent imposed. Such a
request is clamped to the current hard limit and reported as a warning.
"""
from __future__ import annotations

import errno
import os
import resource

RLIMITS: dict[str, int] = {
    "as": resource.RLIMIT_AS,
    "core": resource.RLIMIT_CORE,
    "cpu": resource.RLIMIT_CPU,
    "data": resource.RLIMIT_DATA,
    "fsize": resource.RLIMIT_FSIZE,
    # CPython does not export RLIMIT_LOCKS; 10 on every asm-generic arch (x86_64, aarch64).
    "locks": getattr(resource, "RLIMIT_LOCKS", 10),
    "memlock": resource.RLIMIT_MEMLOCK,
    "msgqueue": resource.RLIMIT_MSGQUEUE,
    "nice": resource.RLIMIT_NICE,
    "nofile": resource.RLIMIT_NOFILE,
    "nproc": resource.RLIMIT_NPROC,
    "rss": resource.RLIMIT_RSS,
    "rtprio": resource.RLIMIT_RTPRIO,
    "rttime": resource.RLIMIT_RTTIME,
    "sigpending": resource.RLIMIT_SIGPENDING,
    "stack": resource.RLIMIT_STACK,
}

UNLIMITED = -1
_INF = float("inf")


def _order(value: int) -> float:
    """Comparable form: RLIM_INFINITY (-1 in Python) sorts above every number."""
    return _INF if value == resource.RLIM_INFINITY or value < 0 else value


def _show(value: int) -> str:
    return "unlimited" if _order(value) == _INF else str(value)


def apply(limits: tuple[tuple[str, int, int], ...]) -> list[str]:
    """Set each (name, soft, hard) limit on the calling process; returns warnings.

    Raises ValueError for an unknown name or soft > hard, OSError naming the
    call when setrlimit itself fails (e.g. nofile above fs.nr_open).
    """
    warnings: list[str] = []
    for name, soft, hard in limits:
        if name not in RLIMITS:
            raise ValueError(f"unknown rlimit {name!r} (known: {', '.join(sorted(RLIMITS))})")
        for v in (soft, hard):
            if not isinstance(v, int) or v < -1:
                raise ValueError(f"rlimit {name}: invalid value {v!r} (use -1 for unlimited)")
        if _order(soft) > _order(hard):
            raise ValueError(f"rlimit {name}: soft {_show(soft)} above hard {_show(hard)}")
        res = RLIMITS[name]
        _, cur_hard = resource.getrlimit(res)
        if _order(hard) > _order(cur_hard):
            warnings.append(f"rlimit {name}: hard limit {_show(hard)} clamped to current "
                            f"hard limit {_show(cur_hard)}")
            hard = cur_hard
            if _order(soft) > _order(hard):
                soft = hard
        new = (resource.RLIM_INFINITY if soft == -1 else soft,
               resource.RLIM_INFINITY if hard == -1 else hard)
        try:
            resource.setrlimit(res, new)
        except (OSError, ValueError) as exc:
            # CPython turns EPERM/EINVAL into ValueError without an errno; recover it.
            err = getattr(exc, "errno", None) or (
                errno.EPERM if "not allowed" in str(exc) else errno.EINVAL)
            raise OSError(err, f"setrlimit({name}, {_show(new[0])}, {_show(new[1])}) failed: "
                          f"{os.strerror(err)}") from None
    return warnings


# --------------------------------------------------------------- when no cgroup applies a limit

# Since Linux 5.14 the process count RLIMIT_NPROC is checked against is kept per user namespace
# and uid (ucounts): set inside the sandbox's own user namespace, where the sandbox user is the
# only uid, it counts the sandbox's processes and threads and nothing else, the way pids.max does.
# Before 5.14 it counted every process of the host uid, shared with the caller and other sandboxes.
NPROC_PER_USER_NAMESPACE = (5, 14)


def _kernel_at_least(version: tuple[int, ...]) -> bool:
    release = os.uname().release.split("-")[0].split(".")
    try:
        return tuple(int(part) for part in release[:2]) >= version
    except ValueError:
        return False


def cgroup_fallback(unapplied: dict, limits: tuple[tuple[str, int, int], ...], *,
                    own_user_namespace: bool) -> tuple[tuple[tuple[str, int, int], ...], list[str]]:
    """What an unprivileged user can enforce instead of the cgroup limits in `unapplied` (limit
    name -> value, as in CgroupLimits: the limits the cgroup could not apply).

    Returns the rlimits to set in the sandbox (`limits` with these merged in, never raised) and
    one warning for each approximation:

    * pids -> RLIMIT_NPROC, in the sandbox's own user namespace on Linux >= 5.14 (see above):
      it bounds the sandbox's processes and threads as pids.max would;
    * memory -> RLIMIT_DATA: a bound on each process's private writable memory (heap, anonymous
      mappings, thread stacks), not on the sandbox as a whole; RLIMIT_AS was rejected, as it
      counts address space reserved but never used (Go, the JVM, sanitizers reserve gigabytes);
    * the others (cpus, cpu_weight, io, memory_high, swap) have no unprivileged counterpart.
    """
    merged = {name: (soft, hard) for name, soft, hard in limits}
    notes: list[str] = []

    def lower(name: str, value: int) -> None:
        soft, hard = merged.get(name, (UNLIMITED, UNLIMITED))
        merged[name] = (min(_order(soft), value), min(_order(hard), value))

    pids = unapplied.get("pids")
    if pids is not None:
        if not own_user_namespace:
            notes.append(f"pids limit {pids} not enforced: without a user namespace of its own, RLIMIT_NPROC "
                         "would count every process of the host user")
        elif not _kernel_at_least(NPROC_PER_USER_NAMESPACE):
            notes.append(f"pids limit {pids} not enforced: before Linux 5.14 RLIMIT_NPROC counts every "
                         "process of the host user, not the sandbox's")
        else:
            lower("nproc", int(pids))
            notes.append(f"pids limit {pids} enforced with RLIMIT_NPROC instead of a cgroup: it counts the "
                         "sandbox's processes and threads in its own user namespace")
    memory = unapplied.get("memory")
    if memory is not None:
        lower("data", int(memory))
        from .profile.units import format_size
        notes.append(f"memory limit {format_size(int(memory))} approximated with RLIMIT_DATA: each process's "
                     "private memory is bounded, the sandbox's total (and its tmpfs, shared memory) is not")
    out = tuple(sorted((name, -1 if soft == _INF else int(soft), -1 if hard == _INF else int(hard))
                       for name, (soft, hard) in merged.items()))
    return out, notes
