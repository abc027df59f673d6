"""SandboxCgroup: one sandbox's cgroup, whichever hierarchies it spans (v1 dirs, a v2 dir, or none)."""
from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from sandbox.errors import SetupError

from . import _fs
from .detect import Backend
from .limits import CgroupLimits, CgroupStats
from .v2 import V2Group

if TYPE_CHECKING:
    from .v1 import V1Group  # imported where used: cgroupspy is needed only where v1 is in use


def _exited(pid: int) -> bool:
    """A process that has exited since it was placed (a detached launch's A leaves at once) is in
    no cgroup's list any more: that is no failed placement."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except OSError:
        return True


class SandboxCgroup:
    """Created by sandbox.cgroups.create(); see docs/cgroups.md for the launcher's call order.

    warnings lists every limit that was not applied (or applied with a caveat), in words.
    With no writable cgroup at all (`active` is False) every method is a harmless no-op and
    the launcher must rely on its PID namespace to reap the workload.
    """

    def __init__(self, name: str, limits: CgroupLimits, kind: str,
                 v1: V1Group | None = None, v2: V2Group | None = None):
        self.name, self.limits, self.kind = name, limits, kind
        self.v1, self.v2 = v1, v2
        self.warnings: list[str] = []
        self.applied: set[str] = set()
        self._sampled_pids_peak = 0
        self._final_stats: CgroupStats | None = None
        self._final_oom_killed = False
        self._destroyed = False

    @classmethod
    def attach(cls, backend: Backend, name: str) -> SandboxCgroup:
        """An existing sandbox cgroup called `name` below our cgroups (for gc)."""
        v1_dirs = {c: os.path.join(base, name) for c, base in backend.v1.items()
                   if os.path.isdir(os.path.join(base, name))}
        v2_dir = os.path.join(backend.v2, name) if backend.v2 else None
        v1 = None
        if v1_dirs:
            from .v1 import V1Group
            v1 = V1Group.attach(v1_dirs)
        return cls(name, CgroupLimits(), backend.kind, v1,
                   V2Group(v2_dir) if v2_dir and os.path.isdir(v2_dir) else None)

    # -- where it lives -------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.v1 is not None or self.v2 is not None

    @property
    def paths(self) -> dict[str, str]:
        """Hierarchy -> this sandbox's directory: v1 controller names, and "unified" for v2."""
        found = dict(self.v1.dirs) if self.v1 else {}
        if self.v2:
            found["unified"] = self.v2.path
        return found

    def directories(self) -> list[str]:
        return list(dict.fromkeys(self.paths.values()))

    def child_mounts(self) -> list[tuple[str, str, str]]:
        """(subdirectory of /sys/fs/cgroup, fstype, mount data) for a cgroupfs view inside the sandbox.

        Mounted by the child after unshare(CLONE_NEWCGROUP), each shows the sandbox's own cgroup
        as its root. "" means /sys/fs/cgroup itself (pure v2).
        """
        mounts = []
        if self.v1:
            shared: dict[str, list[str]] = {}  # co-mounted controllers (cpu,cpuacct) share one dir
            for controller, directory in self.v1.dirs.items():
                shared.setdefault(directory, []).append(controller)
            for controllers in shared.values():
                mounts.append((",".join(controllers), "cgroup", ",".join(controllers)))
        if self.v2:
            mounts.append(("unified" if self.v1 else "", "cgroup2", ""))
        return mounts

    # -- processes ------------------------------------------------------------------------

    def add_process(self, pid: int, unified: bool = True) -> None:
        """Place pid (not yet running the workload) in every hierarchy, or every v1 one (unified
        False: it was cloned into the v2 cgroup); checks it arrived.

        Raises SetupError; the launcher must then kill the child rather than release it.
        """
        try:
            if self.v2 and unified:
                self.v2.add_process(pid)
            if self.v1:
                self.v1.add_process(pid)
        except OSError as e:
            where = os.fsdecode(e.filename) if e.filename else "cgroup.procs"
            raise SetupError("cgroup placement", e.errno or 0, f"placing process {pid} in {where}: {e.strerror}") from e
        for directory in self.directories():
            members = _fs.read_or_none(os.path.join(directory, "cgroup.procs")) or ""
            if str(pid) not in members.split() and not _exited(pid):
                raise SetupError("cgroup placement", 0, f"process {pid} did not arrive in {directory}")

    def pids(self) -> list[int]:
        found = set(self.v2.pids()) if self.v2 else set()
        if self.v1:
            found.update(self.v1.pids())
        self._sampled_pids_peak = max(self._sampled_pids_peak, len(found))
        return sorted(found)

    def is_empty(self) -> bool:
        return not self.pids()

    def freeze(self) -> bool:
        """Stop every task; True when frozen (False: no freezer here)."""
        if self.v2 and self.v2.has_file("cgroup.freeze"):
            return self.v2.freeze()
        return bool(self.v1 and self.v1.freeze())

    def thaw(self) -> None:
        if self.v2:
            self.v2.thaw()
        if self.v1:
            self.v1.thaw()

    def kill_all(self, timeout_s: float = _fs.KILL_TIMEOUT_S) -> bool:
        """SIGKILL everything in the sandbox, daemons included; True once empty (bounded time)."""
        emptied = True
        if self.v2:  # cgroup.kill first: it reaches every task of the tree atomically
            emptied = self.v2.kill_all(timeout_s) and emptied
        if self.v1:
            emptied = self.v1.kill_all(timeout_s) and emptied
        return emptied

    # -- accounting -----------------------------------------------------------------------

    def oom_killed(self) -> bool:
        if self._destroyed:
            return self._final_oom_killed
        return any(group.oom_killed() for group in (self.v1, self.v2) if group is not None)

    def stats(self) -> CgroupStats:
        if self._destroyed:
            return self._final_stats or CgroupStats()
        merged: dict[str, object] = {}
        for group in (self.v1, self.v2):  # v1 holds the controllers on hybrid machines
            if group is None:
                continue
            for key, value in dataclasses.asdict(group.stats()).items():
                if merged.get(key) is None:
                    merged[key] = value
        if merged.get("pids_peak") is None and self.active:
            self.pids()
            merged["pids_peak"] = self._sampled_pids_peak
        return CgroupStats(**merged)

    # -- teardown -------------------------------------------------------------------------

    def destroy(self) -> list[str]:
        """Kill what is left and remove every directory. Idempotent, never raises for gone dirs.

        Returns the directories that could not be removed (they stay in warnings too, and the
        next gc() removes them once this launcher has exited). Final stats stay readable.
        """
        if self._destroyed or not self.active:
            self._destroyed = True
            return []
        self.kill_all()
        try:
            self._final_stats, self._final_oom_killed = self.stats(), self.oom_killed()
        except OSError:  # already removed from outside (gc, an administrator)
            pass
        left = [d for d in self.directories() if not _fs.remove_tree(d)]
        if left:
            self.warnings.append(f"cgroup(s) still busy after kill, left for gc: {', '.join(left)}")
        else:
            self._destroyed = True
        return left

    def __enter__(self) -> SandboxCgroup:
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    def __repr__(self) -> str:
        return f"<SandboxCgroup {self.name} {self.kind} {sorted(self.paths)}>"
