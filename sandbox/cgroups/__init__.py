"""Resource limits and whole-tree control for sandboxes, through cgroups v1, v2 or both.

    backend = detect()                      # once per process: which hierarchies, where we sit
    cgroup = create(limits)                 # before fork; raises LimitsUnavailable if required
    cgroup.add_process(child_pid)           # before the child runs anything of the workload
    ...child: enter_namespace()             # unshare(CLONE_NEWCGROUP): it sees itself at /
    cgroup.kill_all(); cgroup.stats()
    cgroup.destroy()                        # in finally

Sandbox cgroups are created only below the caller's own cgroup in each hierarchy and named
sandbox-<launcher pid>-<random>, so gc() can find the ones whose launcher died.
docs/cgroups.md describes the machines and fallbacks.
"""
from __future__ import annotations

import functools
import os
import re

from sandbox import _libc
from sandbox.errors import LimitsUnavailable

from . import _fs
from .detect import Backend, discover
from .group import SandboxCgroup
from .limits import CONTROLLER_OF, LIMIT_NAMES, CgroupLimits, CgroupStats, NotApplied
from .v2 import DELEGATE_HINT, V2Group

__all__ = ["Backend", "CgroupLimits", "CgroupStats", "SandboxCgroup", "create", "detect",
           "enter_namespace", "gc", "leaked"]

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@functools.cache
def detect() -> Backend:
    """This machine's cgroup setup as seen by this process (computed once)."""
    return discover()


def create(limits: CgroupLimits, *, name: str | None = None, backend: Backend | None = None) -> SandboxCgroup:
    """Make the sandbox's cgroup(s) and write its limits.

    A limit that cannot be applied becomes a line in .warnings; if it is in limits.required,
    LimitsUnavailable is raised instead and nothing is left behind.
    """
    backend = backend or detect()
    name = name or f"sandbox-{os.getpid()}-{os.urandom(4).hex()}"
    if not _NAME_RE.match(name) or name in (".", ".."):
        raise ValueError(f"bad cgroup name {name!r}")
    requested = [n for n in LIMIT_NAMES if n in limits.requested()]
    homes = {n: backend.controller_home(CONTROLLER_OF[n]) for n in requested}

    v1 = None
    if backend.v1:
        from .v1 import V1Group  # cgroupspy, and the logging it imports, only where v1 is in use
        v1 = V1Group.create(backend.v1, name)
    cgroup = SandboxCgroup(name, limits, backend.kind, v1)
    try:
        refused = _join_unified(cgroup, backend, {CONTROLLER_OF[n] for n in requested if homes[n] == "v2"})
        failures = _apply_limits(cgroup, backend, homes, refused)
        missing = [n for n in requested if n in failures and n in limits.required]
        if missing:
            reasons = "; ".join(f"{limits.describe(n)} cannot be applied: {failures[n]}" for n in missing)
            hint = f". To get one: {DELEGATE_HINT}" if backend.kind == "none" else ""
            raise LimitsUnavailable(f"required {reasons}{hint}")
    except BaseException:
        cgroup.destroy()
        raise
    return cgroup


def _join_unified(cgroup: SandboxCgroup, backend: Backend, wanted: set[str]) -> dict[str, str]:
    """Make the v2 directory; returns the controllers v2 refused to enable, with reasons."""
    if not backend.v2:
        return {}
    try:
        cgroup.v2, refused = V2Group.create(backend.v2, cgroup.name, wanted)
    except OSError as e:
        # On hybrid machines the unified tree only adds placement and cgroup.kill: not fatal.
        if not cgroup.v1 or wanted or isinstance(e, FileExistsError):
            raise
        cgroup.warnings.append(f"not placed in the unified hierarchy: {e}")
        return {}
    return refused


def _apply_limits(cgroup: SandboxCgroup, backend: Backend, homes: dict[str, str | None],
                  refused: dict[str, str]) -> dict[str, str]:
    """Write each requested limit where its controller lives; returns limit -> why it was not."""
    limits, failures = cgroup.limits, {}
    for limit, home in homes.items():
        controller = CONTROLLER_OF[limit]
        group = {"v1": cgroup.v1, "v2": cgroup.v2}.get(home)
        if group is None:
            failures[limit] = _unavailable_reason(backend, controller)
        elif home == "v2" and controller in refused:
            failures[limit] = refused[controller]
        else:
            try:
                caveat = group.apply(limits, limit)
            except NotApplied as e:
                failures[limit] = str(e)
                continue
            cgroup.applied.add(limit)
            if caveat:
                cgroup.warnings.append(f"{limits.describe(limit)}: {caveat}")
    by_reason: dict[str, list[str]] = {}
    for limit, reason in failures.items():
        by_reason.setdefault(reason, []).append(limits.describe(limit))
    for reason, described in by_reason.items():  # one line per cause, naming every limit it affects
        shown = ", ".join(d.replace(" limit ", " ", 1) for d in described)
        noun = "limit" if len(described) == 1 else "limits"
        cgroup.warnings.append(f"{noun} not applied ({shown}): {reason}")
    return failures


def _unavailable_reason(backend: Backend, controller: str) -> str:
    if backend.kind == "none":
        return "no writable cgroup (delegate one with systemd-run --user -p Delegate=yes ...)"
    where = [f"no writable v1 {'blkio' if controller == 'io' else controller} hierarchy"]
    if backend.v2:
        where.append(f"not in {backend.v2}/cgroup.controllers")
    return f"the {controller} controller is not available to us ({'; '.join(where)})"


def enter_namespace() -> None:
    """Child side, after add_process(): a new cgroup namespace rooted at the sandbox's cgroup."""
    _libc.unshare(_libc.CLONE_NEWCGROUP)


def leaked(backend: Backend | None = None) -> list[str]:
    """Every sandbox-<pid>-* cgroup currently present directly below our own cgroups."""
    backend = backend or detect()
    return [path for base in backend.bases() for path in _fs.sandbox_children(base)]


def gc(backend: Backend | None = None) -> list[str]:
    """Remove sandbox cgroups whose launcher is dead, killing their leftover tasks first.

    Returns the removed directories. A cgroup whose launcher pid is alive (or reused by an
    unrelated process) is kept: never guess about someone else's running sandbox.
    """
    backend = backend or detect()
    stale_names = {os.path.basename(p) for p in leaked(backend)
                   if not _fs.pid_alive(_fs.launcher_pid(os.path.basename(p)))}
    removed = []
    for name in sorted(stale_names):
        cgroup = SandboxCgroup.attach(backend, name)
        directories = cgroup.directories()
        left = cgroup.destroy()
        removed.extend(d for d in directories if d not in left)
    return removed
