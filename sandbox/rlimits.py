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
