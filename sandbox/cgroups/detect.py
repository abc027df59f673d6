"""Where this process sits in each cgroup hierarchy, and which of those places we may write to.

Sandbox cgroups are only ever created below the caller's own cgroup, so detection starts from
/proc/self/cgroup and maps each entry to a directory through the cgroup mounts in
/proc/self/mountinfo (whose root field tells which part of the hierarchy a mount shows).
"""
from __future__ import annotations

import os
import re
from dataclasses import field

from ..compiled_dataclass import dataclass

# The v1 controllers a sandbox joins. cpuset is left out on purpose: a new cpuset cgroup is
# unusable until cpuset.cpus/mems are filled in, and we do not restrict CPUs.
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer", "blkio")

# A leaf we may move the launcher into (v2 "no internal processes" rule), see v2.py.
LAUNCHER_LEAF = "sandbox-{pid}-launcher"


@dataclass(frozen=True)
class Mount:
    """A cgroup file system mount, from /proc/self/mountinfo."""

    mountpoint: str
    root: str  # the path inside the hierarchy this mount shows
    fstype: str  # "cgroup" or "cgroup2"
    controllers: frozenset[str]  # v1 only


@dataclass(frozen=True)
class Backend:
    """The cgroup setup of this machine as seen by this process.

    kind: "v2" (unified hierarchy), "v1" (legacy hierarchies only), "hybrid" (v1 controllers plus a
    unified tree we also join) or "none" (nothing writable: rootless without delegation).
    v1: controller -> our own cgroup directory in that hierarchy, writable ones only.
    v2: our own cgroup directory in the unified hierarchy if writable, else None.
    v2_controllers: controllers our v2 cgroup may hand to children (its cgroup.controllers).
    """

    kind: str
    v1: dict[str, str] = field(default_factory=dict)
    v2: str | None = None
    v2_controllers: frozenset[str] = frozenset()
    notes: tuple[str, ...] = ()

    def controller_home(self, controller: str) -> str | None:
        """'v1' or 'v2': which hierarchy enforces a controller for us; None if neither."""
        if controller == "io" and "blkio" in self.v1:
            return "v1"
        if controller in self.v1:
            return "v1"
        if self.v2 is not None and controller in self.v2_controllers:
            return "v2"
        return None

    def bases(self) -> list[str]:
        """Every distinct directory below which we create sandbox cgroups."""
        seen = list(dict.fromkeys(self.v1.values()))
        return seen + ([self.v2] if self.v2 else [])


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def cgroup_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[Mount]:
    mounts = []
    with open(mountinfo) as f:
        for line in f:
            before, _, after = line.partition(" - ")
            left, right = before.split(), after.split()
            if len(right) < 3 or right[0] not in ("cgroup", "cgroup2"):
                continue
            options = set(right[2].split(","))
            controllers = frozenset(options & set(V1_CONTROLLERS)) if right[0] == "cgroup" else frozenset()
            mounts.append(Mount(_unescape(left[4]), _unescape(left[3]), right[0], controllers))
    return mounts


def own_cgroups(proc_cgroup: str = "/proc/self/cgroup") -> tuple[dict[str, str], str | None]:
    """(v1 controller -> path in its hierarchy, v2 path or None) from /proc/self/cgroup."""
    v1, v2 = {}, None
    with open(proc_cgroup) as f:
        for line in f:
            hierarchy_id, controllers, path = line.rstrip("\n").split(":", 2)
            if hierarchy_id == "0" and controllers == "":
                v2 = path
            for controller in controllers.split(","):
                if controller in V1_CONTROLLERS:
                    v1[controller] = path
    return v1, v2


def _directory(mounts: list[Mount], path: str) -> str | None:
    """The directory showing hierarchy path `path` through one of `mounts`, if any mount does."""
    for mount in mounts:
        root = mount.root.rstrip("/")
        if path == mount.root or path.startswith(root + "/"):
            inside = path[len(root):].lstrip("/")
            directory = os.path.join(mount.mountpoint, inside) if inside else mount.mountpoint
            if os.path.isdir(directory):
                return directory.rstrip("/") or "/"
    return None


def writable(directory: str) -> bool:
    """We can create child cgroups here and move processes between them."""
    return os.access(directory, os.W_OK | os.X_OK) and os.access(
        os.path.join(directory, "cgroup.procs"), os.W_OK)


def _read_words(path: str) -> frozenset[str]:
    try:
        with open(path) as f:
            return frozenset(f.read().split())
    except OSError:
        return frozenset()


def discover() -> Backend:
    mounts = cgroup_mounts()
    v1_paths, v2_path = own_cgroups()
    notes = []

    v1 = {}
    for controller, path in v1_paths.items():
        candidates = [m for m in mounts if m.fstype == "cgroup" and controller in m.controllers]
        directory = _directory(candidates, path)
        if directory is None:
            notes.append(f"v1 {controller}: our cgroup {path} is not visible through any mount")
        elif writable(directory):
            v1[controller] = directory
        else:
            notes.append(f"v1 {controller}: {directory} is not writable by us")

    v2, v2_controllers = None, frozenset()
    unified = [m for m in mounts if m.fstype == "cgroup2"]
    if v2_path is not None and unified:
        # A launcher that moved itself into its own leaf still creates beside that leaf.
        if os.path.basename(v2_path) == LAUNCHER_LEAF.format(pid=os.getpid()):
            v2_path = os.path.dirname(v2_path)
        directory = _directory(unified, v2_path)
        if directory is None:
            notes.append(f"v2: our cgroup {v2_path} is not visible through any mount")
        elif writable(directory):
            v2 = directory
            v2_controllers = _read_words(os.path.join(directory, "cgroup.controllers"))
        else:
            notes.append(f"v2: {directory} is not writable by us")

    if v1:
        kind = "hybrid" if v2 else "v1"
    elif v2:
        kind = "v2"
    else:
        kind = "none"
    return Backend(kind, v1, v2, v2_controllers, tuple(notes))
