"""Cgroups at the paths an OCI bundle names (linux.cgroupsPath), with its linux.resources.

Unlike a profile's sandbox-<pid>-<random> cgroups below the launcher's own (which gc() collects
when their launcher dies), these live where the engine says, from the root of each hierarchy, as
runc's cgroupfs driver puts them, and outlive every runtime process: `sandbox-runtime delete`
removes them. Both forms of cgroupsPath are accepted:

    /libpod_parent/libpod-ID          a path from each hierarchy's root
    machine.slice:libpod:ID           systemd's slice:prefix:name; without systemd (as here) it is
                                      mapped to the path systemd would give it, as runc's fs
                                      driver does: /machine.slice/libpod-ID.scope

Every resource is written where its controller lives (a v1 hierarchy, or the unified tree); one
that cannot be applied is an error naming its field, never skipped.
"""
from __future__ import annotations

import errno
import os

from sandbox.errors import SandboxError, SetupError

from . import _fs
from .detect import cgroup_mounts
from .group import SandboxCgroup
from .limits import CgroupLimits
from .v2 import V2Group

# v1 hierarchies a container joins (what runc's fs driver joins, less those with no use here).
V1_JOINED = ("memory", "cpu", "cpuacct", "pids", "freezer", "blkio", "devices", "cpuset", "hugetlb",
             "net_cls", "net_prio", "perf_event", "rdma", "misc")


class ResourceError(SandboxError):
    """A resource that cannot be applied: `field` names it (linux.resources.memory.swap)."""

    exit_code = 1

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"config.json: {field}: {message}")


def path_of(cgroups_path: str, container_id: str) -> str:
    """The cgroupfs path for an OCI cgroupsPath (either form); the default is /sandbox-runtime/ID."""
    if not cgroups_path:
        return f"/sandbox-runtime/{container_id}"
    if ":" in cgroups_path and not cgroups_path.startswith("/"):
        parts = cgroups_path.split(":")
        if len(parts) != 3:
            raise ValueError("expected slice:prefix:name")
        slice_name, prefix, name = parts
        slice_name = slice_name or "system.slice"
        if not slice_name.endswith(".slice") or "/" in slice_name or "/" in prefix or "/" in name:
            raise ValueError(f"expected a systemd slice:prefix:name, found {cgroups_path!r}")
        unit = name if name.endswith(".slice") else f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
        return "/" + "/".join(_expand_slice(slice_name) + [unit])
    path = os.path.normpath("/" + cgroups_path.lstrip("/"))
    if ".." in path.split("/"):
        raise ValueError("a path without ..")
    if any(_fs.NAME_RE.match(part) for part in path.split("/")):
        # cgroups.gc() collects sandbox-<pid>-* cgroups whose launcher is gone: never a container's
        raise ValueError("a path without sandbox-<pid>-* names (reserved for sandbox run's own cgroups)")
    return path


def _expand_slice(slice_name: str) -> list[str]:
    """systemd's nesting: a-b-c.slice lives in /a.slice/a-b.slice/a-b-c.slice."""
    if slice_name == "-.slice":
        return []
    stem = slice_name[:-len(".slice")]
    parts = stem.split("-")
    return ["-".join(parts[:i + 1]) + ".slice" for i in range(len(parts))]


def hierarchies() -> dict[str, str]:
    """Each hierarchy's mount point, keyed by its directory name below /sys/fs/cgroup style
    ("memory", "cpu,cpuacct", ...; "unified" for cgroup v2 beside v1, "" for a pure v2 machine)."""
    found: dict[str, str] = {}
    v2 = None
    for mount in cgroup_mounts():
        if mount.root != "/":
            continue
        if mount.fstype == "cgroup2":
            v2 = mount.mountpoint
            continue
        controllers = sorted(_v1_controllers(mount.mountpoint))
        if controllers:
            found.setdefault(os.path.basename(mount.mountpoint), mount.mountpoint)
    if v2 is not None:
        found["unified" if found else ""] = v2
    return found


def _v1_controllers(mountpoint: str) -> set[str]:
    name = os.path.basename(mountpoint)
    return {c for c in name.split(",") if c in V1_JOINED}


def dirs_for(path: str) -> dict[str, str]:
    """Hierarchy name -> the directory of cgroup `path` in it (see hierarchies())."""
    return {name: os.path.join(mountpoint, path.lstrip("/")) for name, mountpoint in hierarchies().items()}


def attach(dirs: dict[str, str]) -> SandboxCgroup:
    """The SandboxCgroup of existing directories (hierarchy name -> directory), for the commands
    after create; those already gone are left out."""
    v1_dirs = {}
    v2 = None
    for name, directory in dirs.items():
        if not os.path.isdir(directory):
            continue
        if name in ("", "unified"):
            v2 = V2Group(directory)
        else:
            for controller in _v1_controllers(name):
                v1_dirs[controller] = directory
    v1 = None
    if v1_dirs:
        from .v1 import V1Group
        v1 = V1Group.attach(v1_dirs)
    kind = "hybrid" if v1 and v2 else "v1" if v1 else "v2" if v2 else "none"
    name = os.path.basename(next(iter(dirs.values()), "")) if dirs else ""
    return SandboxCgroup(name, CgroupLimits(), kind, v1, v2)


def create_at(path: str, resources: dict | None, *, required: bool | None = None) -> SandboxCgroup:
    """Make cgroup `path` in every hierarchy and apply `resources` (OCI linux.resources).

    Raises ResourceError for a resource that cannot be applied, OSError when the directories
    cannot be made (required; otherwise, rootless without delegation, a cgroup without
    directories is returned and the container relies on its pid namespace)."""
    if required is None:
        # Rootless (no delegated cgroup) the container may go without one, as with runc, unless
        # it asks for a limit: then the failure is an error.
        from ..oci.spec import rootless
        required = not rootless() or any(value for key, value in (resources or {}).items() if key != "devices")
    dirs = dirs_for(path)
    made: list[str] = []
    try:
        for name, directory in dirs.items():
            if os.path.isdir(directory):
                if _fs.procs(directory):
                    raise FileExistsError(errno.EEXIST, f"cgroup {directory} exists and has processes")
            else:
                _makedirs(directory, made, name)
    except OSError as exc:
        for directory in reversed(made):
            _fs.remove_tree(directory)
        if required:
            raise SetupError("cgroup", exc.errno or 0, f"{exc.filename or path}: {exc.strerror}") from None
        return attach({})
    cgroup = attach(dirs)
    try:
        apply(cgroup, resources or {})
    except BaseException:
        cgroup.destroy()
        raise
    return cgroup


def _makedirs(directory: str, made: list[str], hierarchy: str) -> None:
    parent = os.path.dirname(directory)
    if not os.path.isdir(parent):
        _makedirs(parent, made, hierarchy)
    os.mkdir(directory)
    made.append(directory)
    if "cpuset" in hierarchy.split(","):
        # A new cpuset cgroup is unusable until it has CPUs and memory nodes: its parent's.
        for name in ("cpuset.cpus", "cpuset.mems"):
            own = os.path.join(directory, name)
            if not _fs.read(own).strip():
                _fs.write(own, _fs.read(os.path.join(parent, name)).strip())


# ---------------------------------------------------------------- resources

def apply(cgroup: SandboxCgroup, resources: dict) -> None:
    """Write OCI linux.resources into the cgroup (create, and `update`)."""
    writer = _Writer(cgroup)
    memory = resources.get("memory") or {}
    if memory:
        writer.memory(memory)
    cpu = resources.get("cpu") or {}
    if cpu:
        writer.cpu(cpu)
    pids = resources.get("pids") or {}
    if pids.get("limit") is not None:
        limit = pids["limit"]
        writer.write("pids", "pids.max", "pids.max", "max" if limit <= 0 else limit, "pids.limit")
    block = resources.get("blockIO") or {}
    if block:
        writer.block_io(block)
    for index, entry in enumerate(resources.get("hugepageLimits") or ()):
        size = entry["pageSize"]
        writer.write("hugetlb", f"hugetlb.{size}.limit_in_bytes", f"hugetlb.{size}.max", entry["limit"],
                     f"hugepageLimits[{index}]")
    network = resources.get("network") or {}
    if network.get("classID") is not None:
        writer.write("net_cls", "net_cls.classid", None, network["classID"], "network.classID")
    for index, entry in enumerate(network.get("priorities") or ()):
        writer.write("net_prio", "net_prio.ifpriomap", None, f"{entry['name']} {entry['priority']}",
                     f"network.priorities[{index}]")
    if resources.get("rdma"):
        for device, limits in resources["rdma"].items():
            values = " ".join(f"{k}={limits[k]}" for k in ("hcaHandles", "hcaObjects") if limits.get(k) is not None)
            names = {"hcaHandles": "hca_handle", "hcaObjects": "hca_object"}
            for key, kernel_name in names.items():
                values = values.replace(key, kernel_name)
            writer.write("rdma", "rdma.max", "rdma.max", f"{device} {values}", f"rdma.{device}")
    devices = resources.get("devices")
    if devices:
        writer.devices(devices)
    for key, value in (resources.get("unified") or {}).items():
        writer.unified(key, value)


class _Writer:
    def __init__(self, cgroup: SandboxCgroup):
        self.cgroup = cgroup
        self.v1 = dict(cgroup.v1.dirs) if cgroup.v1 else {}
        self.v2 = cgroup.v2.path if cgroup.v2 else None
        v2_controllers = set()
        if self.v2:
            v2_controllers = set((_fs.read_or_none(os.path.join(self.v2, "cgroup.controllers")) or "").split())
        self.v2_controllers = v2_controllers

    def where(self, controller: str) -> str | None:
        """'v1' or 'v2' for the hierarchy that holds controller here; None if none does."""
        if controller in self.v1:
            return "v1"
        if self.v2 and controller in self.v2_controllers:
            return "v2"
        return None

    def write(self, controller: str, v1_file: str | None, v2_file: str | None, value, field: str) -> None:
        home = self.where(controller)
        filename = v1_file if home == "v1" else v2_file if home == "v2" else None
        if filename is None:
            raise ResourceError(f"linux.resources.{field}",
                                f"the {controller} controller is not available here"
                                + (" (cgroup v1 only)" if home == "v2" else ""))
        directory = self.v1[controller] if home == "v1" else self.v2
        try:
            _fs.write(os.path.join(directory, filename), value)
        except OSError as exc:
            raise ResourceError(f"linux.resources.{field}",
                                f"writing {value} to {os.path.join(directory, filename)}: {exc.strerror}") from None

    def memory(self, memory: dict) -> None:
        limit, swap = memory.get("limit"), memory.get("swap")
        home = self.where("memory")
        if memory.get("kernel") or memory.get("kernelTCP"):
            raise ResourceError("linux.resources.memory.kernel", "kernel memory limits are not supported "
                                "(deprecated, and gone from cgroup v2)")
        if home == "v1":
            # memsw must stay >= the limit: when both grow, write the swap total first.
            memsw = os.path.join(self.v1["memory"], "memory.memsw.limit_in_bytes")
            order = [("limit", limit), ("swap", swap)]
            current = _fs.int_or_none(_fs.read_or_none(memsw))
            if swap is not None and limit is not None and current is not None and swap > current:
                order.reverse()
            for name, value in order:
                if value is None:
                    continue
                if name == "swap" and not os.path.exists(memsw):
                    if value in (-1, limit):
                        continue  # no swap accounting here, and no swap beyond the limit asked for
                    raise ResourceError("linux.resources.memory.swap", "no swap accounting on this kernel "
                                        "(memory.memsw.limit_in_bytes is missing: boot with swapaccount=1)")
                self.write("memory", "memory.limit_in_bytes" if name == "limit" else "memory.memsw.limit_in_bytes",
                           None, value, f"memory.{name}")
        else:
            if limit is not None:
                self.write("memory", None, "memory.max", "max" if limit < 0 else limit, "memory.limit")
            if swap is not None:
                value = "max" if swap < 0 else max(0, swap - (limit or 0)) if limit and limit > 0 else swap
                self.write("memory", None, "memory.swap.max", value, "memory.swap")
        if memory.get("reservation") is not None:
            self.write("memory", "memory.soft_limit_in_bytes", "memory.low", memory["reservation"],
                       "memory.reservation")
        if memory.get("swappiness") is not None:
            self.write("memory", "memory.swappiness", None, memory["swappiness"], "memory.swappiness")
        if memory.get("disableOOMKiller"):
            self.write("memory", "memory.oom_control", None, 1, "memory.disableOOMKiller")
        if memory.get("useHierarchy") is not None:
            self.write("memory", "memory.use_hierarchy", None, int(bool(memory["useHierarchy"])),
                       "memory.useHierarchy")

    def cpu(self, cpu: dict) -> None:
        home = self.where("cpu")
        if cpu.get("shares"):
            shares = cpu["shares"]
            value = shares if home == "v1" else 1 + ((max(2, min(262144, shares)) - 2) * 9999) // 262142
            self.write("cpu", "cpu.shares", "cpu.weight", value, "cpu.shares")
        quota, period = cpu.get("quota"), cpu.get("period")
        if home == "v1":
            if period:
                self.write("cpu", "cpu.cfs_period_us", None, period, "cpu.period")
            if quota:
                self.write("cpu", "cpu.cfs_quota_us", None, quota, "cpu.quota")
            if cpu.get("burst") is not None:
                self.write("cpu", "cpu.cfs_burst_us", None, cpu["burst"], "cpu.burst")
        elif quota or period:
            self.write("cpu", None, "cpu.max", f"{'max' if not quota or quota < 0 else quota} {period or 100000}",
                       "cpu.quota")
        if cpu.get("realtimeRuntime"):
            self.write("cpu", "cpu.rt_runtime_us", None, cpu["realtimeRuntime"], "cpu.realtimeRuntime")
        if cpu.get("realtimePeriod"):
            self.write("cpu", "cpu.rt_period_us", None, cpu["realtimePeriod"], "cpu.realtimePeriod")
        if cpu.get("idle"):
            self.write("cpu", None, "cpu.idle", cpu["idle"], "cpu.idle")
        if cpu.get("cpus"):
            self.write("cpuset", "cpuset.cpus", "cpuset.cpus", cpu["cpus"], "cpu.cpus")
        if cpu.get("mems"):
            self.write("cpuset", "cpuset.mems", "cpuset.mems", cpu["mems"], "cpu.mems")

    def block_io(self, block: dict) -> None:
        home = self.where("blkio" if "blkio" in self.v1 else "io")
        controller = "blkio" if home == "v1" else "io"
        if block.get("weight"):
            directory = self.v1.get("blkio") or self.v2 or ""
            v1_file = "blkio.weight" if os.path.exists(os.path.join(directory, "blkio.weight")) else "blkio.bfq.weight"
            v2_file = "io.weight" if os.path.exists(os.path.join(directory, "io.weight")) else "io.bfq.weight"
            value = block["weight"] if home == "v1" else 1 + (block["weight"] - 10) * 9999 // 990
            self.write(controller, v1_file, v2_file if v2_file == "io.bfq.weight" else v2_file,
                       value if v2_file != "io.weight" else f"default {value}", "blockIO.weight")
        if block.get("leafWeight"):
            self.write(controller, "blkio.leaf_weight", None, block["leafWeight"], "blockIO.leafWeight")
        for index, entry in enumerate(block.get("weightDevice") or ()):
            device = f"{entry['major']}:{entry['minor']}"
            if entry.get("weight"):
                self.write(controller, "blkio.weight_device", "io.weight", f"{device} {entry['weight']}",
                           f"blockIO.weightDevice[{index}]")
            if entry.get("leafWeight"):
                self.write(controller, "blkio.leaf_weight_device", None, f"{device} {entry['leafWeight']}",
                           f"blockIO.weightDevice[{index}].leafWeight")
        for key, v1_file, v2_key in (("throttleReadBpsDevice", "blkio.throttle.read_bps_device", "rbps"),
                                     ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device", "wbps"),
                                     ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device", "riops"),
                                     ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device", "wiops")):
            for index, entry in enumerate(block.get(key) or ()):
                device = f"{entry['major']}:{entry['minor']}"
                value = f"{device} {entry['rate']}" if home == "v1" else f"{device} {v2_key}={entry['rate']}"
                self.write(controller, v1_file, "io.max", value, f"blockIO.{key}[{index}]")

    def devices(self, rules: list) -> None:
        """The device rules, in order: on v1 through the devices controller; on v2 as a BPF
        program attached to the cgroup (sandbox.cgroups.devices)."""
        if "devices" in self.v1:
            directory = self.v1["devices"]
            for index, rule in enumerate(rules):
                filename = "devices.allow" if rule.get("allow") else "devices.deny"
                line = device_rule_line(rule)
                try:
                    _fs.write(os.path.join(directory, filename), line)
                except OSError as exc:
                    raise ResourceError(f"linux.resources.devices[{index}]",
                                        f"writing {line!r} to {filename}: {exc.strerror}") from None
            return
        if self.v2:
            from .devices import attach_program
            try:
                attach_program(self.v2, rules)
            except OSError as exc:
                raise ResourceError("linux.resources.devices",
                                    f"the device program cannot be attached to {self.v2}: {exc.strerror or exc}") from None
            return
        raise ResourceError("linux.resources.devices", "no devices controller and no cgroup v2 here: the "
                            "device rules cannot be enforced")

    def unified(self, key: str, value: str) -> None:
        if not self.v2:
            raise ResourceError(f"linux.resources.unified.{key}", "no cgroup v2 hierarchy here")
        if "/" in key or key.startswith("."):
            raise ResourceError(f"linux.resources.unified.{key}", "not a cgroup file name")
        controller = key.split(".", 1)[0]
        if controller != "cgroup" and controller not in self.v2_controllers:
            raise ResourceError(f"linux.resources.unified.{key}",
                                f"the {controller} controller is not enabled in {self.v2}")
        try:
            _fs.write(os.path.join(self.v2, key), value)
        except OSError as exc:
            raise ResourceError(f"linux.resources.unified.{key}", f"writing {value!r}: {exc.strerror}") from None


def device_rule_line(rule: dict) -> str:
    kind = rule.get("type") or "a"
    major = "*" if rule.get("major") is None or rule.get("major") < 0 else rule["major"]
    minor = "*" if rule.get("minor") is None or rule.get("minor") < 0 else rule["minor"]
    return f"{kind} {major}:{minor} {rule.get('access') or 'rwm'}"


def is_frozen(cgroup: SandboxCgroup) -> bool:
    if cgroup.v1 and "freezer" in cgroup.v1.dirs:
        state = _fs.read_or_none(os.path.join(cgroup.v1.dirs["freezer"], "freezer.state")) or ""
        if state.strip() in ("FROZEN", "FREEZING"):
            return True
    if cgroup.v2:
        events = _fs.keyed(_fs.read_or_none(os.path.join(cgroup.v2.path, "cgroup.events")))
        return events.get("frozen") == 1
    return False
