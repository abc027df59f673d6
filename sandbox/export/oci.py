"""Profile -> OCI runtime bundle (config.json, runtime-spec 1.x, and an empty rootfs layout).

The bundle is made from the same mount plan a launch uses (`mounts.build_plan`), so the order,
the masks and the read-only covers are the launcher's own:

    profile root on a tmpfs      root.path "rootfs" (an empty directory of the bundle), read-only
    [[filesystem.mounts]]        "bind" mounts: rbind, ro|rw, nosuid, nodev[, noexec], and their
                                 recursive forms (rro, rnosuid, ...) as the launcher's AT_RECURSIVE
    [[filesystem.tmpfs]]         "tmpfs" mounts with size and mode
    symlinks, small files        written into rootfs/ (a read-only root cannot get them later)
    mount points                 made in rootfs/ (a runtime in a user namespace cannot create them
                                 in a directory the host's root owns)
    /dev                         a tmpfs; the runtime adds null, zero, full, random, urandom, tty,
                                 ptmx and the fd links itself; extra devices in linux.devices;
                                 read-only afterwards through linux.readonlyPaths, as the launcher
                                 makes it (not recursively: /dev/pts and /dev/shm stay writable)

Identity: an OCI runtime in a user namespace needs container root mapped (runc creates its state
FIFO and its init runs as that id), and a rootless one can map only its caller. So the bundle maps
exactly one id each way, as a launch does, with container root as that id: `0 -> H` where H is
what `sandbox run` maps the sandbox user to (process.host_user, else 65534 for a rootful runtime,
else the exporting user's id with --rootless). The host sees the same unprivileged id with no
capabilities; inside, the workload's uid reads 0 instead of the profile's (a warning says so).

What the format cannot carry (Landlock, the audit trail, the timeout, environment passthrough,
the profile's own inside ids, argument exceptions in the seccomp policy) is a warning, and is also
recorded in `annotations` under "sandbox." so that `sandbox import oci` can restore it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat

from .. import mounts
from ..namespaces import creates_network_namespace
from ..profile.model import DEFAULT_DEVICES, NOBODY, SECRET_DIR, Profile
from . import ExportError, Warnings, bridge_warnings, monitor_warnings, prepare_output, write_file

OCI_VERSION = "1.0.2"  # runc 1.1 and crun accept it; nothing below needs a later version
ANNOTATION_PREFIX = "sandbox."
RLIM_INFINITY = (1 << 64) - 1
# The order runc and the launcher use: user first (the others are owned by it).
NAMESPACE_TYPES = (("user", "user"), ("mount", "mount"), ("pid", "pid"), ("network", "network"),
                   ("ipc", "ipc"), ("uts", "uts"), ("cgroup", "cgroup"), ("time", "time"))
# Targets for which runtimes that older than runtime-spec 1.1 support fail outright.
COMPAT_TARGETS = ("runc-1.1",)
# /dev entries every OCI runtime creates itself when /dev is a tmpfs (runtime-spec "Default Devices").
RUNTIME_DEV_LINKS = ("/dev/ptmx", "/dev/fd", "/dev/stdin", "/dev/stdout", "/dev/stderr")
SECURE_BIND = ("nosuid", "nodev")


def _mount_options(readonly: bool, noexec: bool, recursive: bool = True) -> list[str]:
    options = ["rbind" if recursive else "bind", "ro" if readonly else "rw", *SECURE_BIND]
    if noexec:
        options.append("noexec")
    if recursive:  # the launcher applies these with AT_RECURSIVE: sub-mounts of the source too
        options += ["rro" if readonly else "rrw", "rnosuid", "rnodev"] + (["rnoexec"] if noexec else [])
    return options


def _size_option(size: int) -> str:
    for unit, factor in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if size % factor == 0:
            return f"size={size // factor}{unit}"
    return f"size={size}"


def host_ids(profile: Profile, rootless: bool) -> tuple[int, int]:
    """The one host uid and gid of the bundle, as `namespaces.id_map_for` would pick them."""
    process = profile.process
    if rootless:
        uid = os.geteuid() if process.host_user is None else process.host_user
        gid = os.getegid() if process.host_group is None else process.host_group
        if uid == 0 and process.host_user is None:
            raise ExportError("--rootless exported by root: set process.host_user and process.host_group "
                              "to the ids of the user who will run the bundle")
    else:
        uid = NOBODY if process.host_user is None else process.host_user
        gid = NOBODY if process.host_group is None else process.host_group
    if uid == 0 or gid == 0:
        raise ExportError("the sandbox user must not map to host root")
    return uid, gid


def _is_under(path: str, parent: str) -> bool:
    return parent == "/" or path == parent or path.startswith(parent.rstrip("/") + "/")


def _device_entry(name: str, warnings: Warnings) -> dict | None:
    path = f"/dev/{name}"
    try:
        info = os.stat(path)
    except OSError:
        warnings.add("filesystem.devices", f"{path} does not exist here, so its numbers are unknown: left out")
        return None
    kind = "c" if stat.S_ISCHR(info.st_mode) else "b" if stat.S_ISBLK(info.st_mode) else None
    if kind is None:
        warnings.add("filesystem.devices", f"{path} is not a device node here: left out")
        return None
    return {"path": path, "type": kind, "major": os.major(info.st_rdev), "minor": os.minor(info.st_rdev),
            "fileMode": stat.S_IMODE(info.st_mode), "uid": 0, "gid": 0}


def _rlimits(profile: Profile, warnings: Warnings) -> list[dict]:
    import resource
    from ..rlimits import RLIMITS
    for name, _, hard in profile.limits.rlimits:
        current = resource.getrlimit(RLIMITS[name])[1]
        if current != resource.RLIM_INFINITY and (hard == -1 or hard > current):
            warnings.add("limits.rlimits", f"{name}: hard limit {'unlimited' if hard == -1 else hard} is above "
                         f"this machine's {current}: runc refuses to raise it (the launcher clamps it)")
    return [{"type": f"RLIMIT_{name.upper()}", "soft": RLIM_INFINITY if soft == -1 else soft,
             "hard": RLIM_INFINITY if hard == -1 else hard} for name, soft, hard in profile.limits.rlimits]


def env_list(profile: Profile, warnings: Warnings) -> list[str]:
    """The workload's environment as a launch without a terminal builds it, minus the host's."""
    from ..plan import build_env, with_terminal_type
    if profile.process.env_passthrough:
        warnings.add("process.env_passthrough", f"{list(profile.process.env_passthrough)}: a bundle's "
                     "environment is fixed when it is written; host variables are not copied in (they "
                     "would be written to disk)")
    env = with_terminal_type(build_env(profile, environ={}), tty=False)
    return [f"{name}={value}" for name, value in env.items()]


def seccomp_section(policy, warnings: Warnings, key: str = "seccomp") -> dict | None:
    """The policy as OCI LinuxSeccomp. Docker's profile format is OCI's core plus archMap and
    includes/excludes, which the Docker exporter never writes: its output is used as it is."""
    if policy is None:
        return None
    from ..seccomp import export_docker
    from .seccomp import expressible
    notes: list = []
    try:
        document = export_docker(expressible(policy)[0], warnings=notes)
    except ValueError as exc:
        raise ExportError(f"{key}: {exc}") from None
    for note in notes:
        warnings.add(key, note)
    section = {k: document[k] for k in ("defaultAction", "defaultErrnoRet", "architectures", "syscalls")
               if k in document}
    if any(entry.get("action") == "SCMP_ACT_NOTIFY" for entry in section.get("syscalls", ())):
        warnings.add(key, "notify actions need a listener (linux.seccomp.listenerPath) the bundle cannot name")
    return section


def seccomp_digest(section: dict | None) -> str:
    """Digest of a seccomp section, to tell on import whether it was edited since the export."""
    return hashlib.sha256(json.dumps(section, sort_keys=True).encode()).hexdigest()


def _resources(profile: Profile, devices: list[dict], warnings: Warnings) -> dict:
    from ..cgroups.limits import CPU_PERIOD_US, cpu_quota_us, weight_to_shares
    limits = profile.limits
    res: dict = {"devices": [{"allow": False, "access": "rwm"}]}
    # The runtime's default devices, then the profile's extras (runc's own spec does the same).
    for node in ("null", "zero", "full", "random", "urandom", "tty"):
        info = os.stat(f"/dev/{node}") if os.path.exists(f"/dev/{node}") else None
        if info is not None:
            res["devices"].append({"allow": True, "type": "c", "major": os.major(info.st_rdev),
                                   "minor": os.minor(info.st_rdev), "access": "rwm"})
    res["devices"].append({"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"})  # ptmx
    res["devices"].append({"allow": True, "type": "c", "major": 136, "access": "rwm"})  # pts
    for device in devices:
        res["devices"].append({"allow": True, "type": device["type"], "major": device["major"],
                               "minor": device["minor"], "access": "rwm"})
    memory: dict = {}
    if limits.memory is not None:
        memory["limit"] = limits.memory
        memory["swap"] = limits.memory + limits.swap  # OCI's swap is memory plus swap
    if memory:
        res["memory"] = memory
    if limits.memory_high is not None:
        res["unified"] = {"memory.high": str(limits.memory_high)}
        warnings.add("limits.memory_high", "written as linux.resources.unified (cgroup v2 only); a runtime "
                     "on cgroup v1 refuses the bundle")
    cpu: dict = {}
    if limits.cpus is not None:
        cpu.update(quota=cpu_quota_us(limits.cpus), period=CPU_PERIOD_US)
    if limits.cpu_weight is not None:
        cpu["shares"] = weight_to_shares(limits.cpu_weight)
        warnings.add("limits.cpu_weight", f"{limits.cpu_weight} written as cpu.shares {cpu['shares']} "
                     "(OCI's v1 form, what the launcher writes on v1); runtimes convert it to cpu.weight on "
                     "cgroup v2 by their own formula")
    if cpu:
        res["cpu"] = cpu
    if limits.pids is not None:
        res["pids"] = {"limit": limits.pids}
    block: dict = {}
    if limits.io_weight is not None:
        block["weight"] = max(10, min(1000, limits.io_weight))
        if block["weight"] != limits.io_weight:
            warnings.add("limits.io_weight", f"{limits.io_weight} is outside OCI's blockIO.weight range "
                         f"10-1000: written as {block['weight']}")
    for entry in limits.io_max:
        major, minor = (int(part) for part in entry.device.split(":"))
        for field, value in (("throttleReadBpsDevice", entry.read_bps), ("throttleWriteBpsDevice", entry.write_bps),
                             ("throttleReadIOPSDevice", entry.read_iops),
                             ("throttleWriteIOPSDevice", entry.write_iops)):
            if value is not None:
                block.setdefault(field, []).append({"major": major, "minor": minor, "rate": value})
    if block:
        res["blockIO"] = block
    return res


def _annotations(profile: Profile, seccomp: dict | None) -> dict[str, str]:
    """What config.json cannot say, for `sandbox import oci` (and readers) to restore."""
    from ..seccomp import to_toml_dict

    def js(value) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    p = ANNOTATION_PREFIX
    out = {f"{p}profile.name": profile.name}
    if profile.description:
        out[f"{p}profile.description"] = profile.description
    if profile.extends:  # lint judges a profile by its lineage (untrusted-class or not)
        out[f"{p}profile.extends"] = profile.extends
    out[f"{p}process"] = js({"user": profile.process.user, "group": profile.process.group,
                             "host_user": profile.process.host_user, "host_group": profile.process.host_group,
                             "env_passthrough": list(profile.process.env_passthrough),
                             "new_session": profile.process.new_session})
    # Only for the way back: with the host's network, namespaces.network may say it or not.
    out[f"{p}namespaces"] = js({"network": profile.namespaces.network})
    out[f"{p}landlock"] = js({"enabled": profile.landlock.enabled, "read": list(profile.landlock.read),
                              "write": list(profile.landlock.write), "best_effort": profile.landlock.best_effort})
    out[f"{p}audit"] = js({"enabled": profile.audit.enabled, "log": profile.audit.log,
                           "required": profile.audit.required, "syslog": profile.audit.syslog,
                           "syslog_socket": profile.audit.syslog_socket})
    if profile.exec.allow is not None:
        out[f"{p}exec"] = js({"allow": list(profile.exec.allow)})
    if profile.monitor != type(profile.monitor)():
        out[f"{p}monitor"] = js(dataclasses.asdict(profile.monitor))
    if profile.secrets:
        out[f"{p}secrets"] = js([{"name": s.name, "file": s.file, "env": s.env} for s in profile.secrets])
    out[f"{p}limits"] = js({"timeout": profile.limits.timeout, "kill_after": profile.limits.kill_after,
                            "required": list(profile.limits.required),
                            "optional": list(getattr(profile.limits, "optional", ())), "swap": profile.limits.swap})
    out[f"{p}filesystem"] = js({
        "root_size": profile.filesystem.root_size, "devices": list(profile.filesystem.devices),
        "dev_shm_size": profile.filesystem.dev_shm_size,
        # In the profile's order (the config lists mounts parents first): lint names them by index.
        "mounts": [{"target": m.target, "optional": m.optional, "idmap": m.idmap,
                    "allow_system_path": m.allow_system_path} for m in profile.filesystem.mounts]})
    if profile.seccomp is not None:
        out[f"{p}seccomp"] = js({"digest": seccomp_digest(seccomp), "policy": to_toml_dict(profile.seccomp,
                                                                                          inline=True)})
    return out


def _warn_lost(profile: Profile, user_inside: int, warnings: Warnings) -> None:
    bridge_warnings(profile, warnings, "the bundle")
    monitor_warnings(profile, warnings, "the bundle")
    if profile.landlock.enabled:
        warnings.add("landlock", "OCI has no Landlock: runc and crun do not restrict file access beneath the "
                     "mounts (sandbox-runtime may apply it from the sandbox.landlock annotation)")
    if profile.audit.enabled:
        warnings.add("audit", "an OCI runtime keeps no audit trail of launches; the engine's own events are "
                     "what remains")
    if profile.exec.allow is not None:
        warnings.add("exec.allow", "the executable allow list is Landlock's execute right: OCI cannot say it "
                     "(sandbox-runtime may apply it from the sandbox.exec annotation)")
    if profile.limits.timeout is not None:
        warnings.add("limits.timeout", f"{profile.limits.timeout:g}s: OCI has no wall-clock limit; the "
                     "engine must stop the container (podman run --timeout, a Pod's activeDeadlineSeconds)")
    if user_inside != profile.process.user or profile.process.group != user_inside:
        warnings.add("process.user", f"{profile.process.user}/{profile.process.group} inside: an OCI runtime "
                     "in a user namespace needs container root mapped, so the one mapped id is root inside: "
                     "the workload is uid 0 in its namespace, the same unprivileged host id, no capabilities")
    if not profile.process.new_session:
        warnings.add("process.new_session", "false: OCI runtimes always start the workload in a new session")


def oci_config(profile: Profile, argv=None, *, rootless: bool = False, compat: str | None = None,
               warnings: Warnings | None = None) -> tuple[dict, list]:
    """config.json for `profile` running `argv` (default: its command), and the rootfs layout as
    a list of (kind, path, value, mode): ("dir", p, None, 0o755), ("file", p, content, mode),
    ("link", p, points_to, None). Raises ExportError when the profile cannot be a bundle."""
    warnings = Warnings() if warnings is None else warnings
    ns, fs = profile.namespaces, profile.filesystem
    if compat is not None and compat not in COMPAT_TARGETS:
        raise ExportError(f"unknown --compat {compat!r} (known: {', '.join(COMPAT_TARGETS)})")
    if not ns.mount:
        raise ExportError("namespaces.mount = false cannot be exported: an OCI container always has its own "
                          "mount namespace and root")
    args = list(argv) if argv else list(profile.process.command)
    if not args:
        raise ExportError("the profile has no process.command: give the command after --")
    plan = mounts.build_plan(profile)
    layout: list = []
    oci_mounts: list[dict] = []
    masked: list[str] = []
    readonly: list[str] = []
    devices: list[dict] = []
    tmpfs_targets: list[str] = []
    bind_targets: list[str] = []
    present = {op.target for op in plan.operations if isinstance(op, mounts.Bind)}
    absent = [m for m in fs.mounts if m.target not in present]
    if absent:
        warnings.add("filesystem.mounts", "optional sources absent here are left out of the bundle: "
                     + ", ".join(m.source for m in absent))
    optional = [m.source for m in fs.mounts if m.optional and m.target in present]
    if optional:
        warnings.add("filesystem.mounts", "OCI mounts cannot be optional: these must exist where the bundle "
                     "runs: " + ", ".join(optional))
    for mount in fs.mounts:
        if mount.mode == "rw" and mount.idmap != "no" and mount.target in present and not rootless:
            warnings.add("filesystem.mounts", f"{mount.target}: no idmapped mount (runtime-spec 1.1 "
                         "mount idmaps are not written: runc 1.1 lacks them); the workload writes there "
                         "only where its host id may")
    if profile.image.ref or any(isinstance(op, getattr(mounts, "ImageRoot", ())) for op in plan.operations):
        raise ExportError(f"image.ref {profile.image.ref!r}: a profile that runs an image cannot be exported as a "
                          "bundle yet (its root is the image store's tree); export a profile without [image], "
                          "or use --format kubernetes, which names the image")
    if profile.secrets:
        warnings.add("secrets", f"{', '.join(s.name for s in profile.secrets)}: OCI has no secret files: the "
                     f"launcher writes them into a tmpfs at {SECRET_DIR} at each launch, and a bundle would have to "
                     "hold them on disk; left out (give them through the engine: podman --secret, a Pod's Secret "
                     "volume)")
    for op in plan.operations:
        if _is_under(op.target, SECRET_DIR):
            continue  # the secrets' tmpfs, files and read-only cover: left out (warned above)
        if isinstance(op, mounts.Bind) and op.devices:
            name = op.target.removeprefix("/dev/")
            if name not in DEFAULT_DEVICES:
                entry = _device_entry(name, warnings)
                if entry:
                    devices.append(entry)
            continue
        under_tmpfs = any(_is_under(op.target, t) and op.target != t for t in tmpfs_targets)
        if isinstance(op, mounts.Bind):
            is_dir = os.path.isdir(op.source)
            if not under_tmpfs:
                layout.append(("dir" if is_dir else "file", op.target, "" if not is_dir else None,
                           0o755 if is_dir else 0o644))
            oci_mounts.append({"destination": op.target, "type": "bind", "source": op.source,
                               "options": _mount_options(op.readonly, op.noexec)})
            bind_targets.append(op.target)
        elif isinstance(op, mounts.Tmpfs):
            if not under_tmpfs:
                layout.append(("dir", op.target, None, 0o755))
            options = ["nosuid", "noexec"] if op.target == "/dev" else ["nosuid", "nodev"]
            if op.noexec and "noexec" not in options:
                options.append("noexec")
            if op.target == "/dev/shm":
                options = ["nosuid", "nodev", "noexec"]
            options += [f"mode={op.mode:o}", _size_option(op.size)]
            oci_mounts.append({"destination": op.target, "type": "tmpfs", "source": "tmpfs" if op.target
                               != "/dev/shm" else "shm", "options": options})
            tmpfs_targets.append(op.target)
        elif isinstance(op, mounts.Proc):
            layout.append(("dir", op.target, None, 0o755))
            oci_mounts.append({"destination": "/proc", "type": "proc", "source": "proc",
                               "options": ["nosuid", "nodev", "noexec"]})
        elif isinstance(op, mounts.Devpts):
            oci_mounts.append({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]})
        elif isinstance(op, (mounts.Symlink, mounts.File)):
            if op.target in RUNTIME_DEV_LINKS:
                continue  # the runtime makes these in its /dev
            key = "filesystem.symlinks" if isinstance(op, mounts.Symlink) else "filesystem.files"
            covering = [t for t in tmpfs_targets + bind_targets if _is_under(op.target, t)]
            if covering:
                warnings.add(key, f"{op.target} lies in the mount at {covering[-1]}: a bundle can only hold "
                             "files in its root directory: left out")
                continue
            if isinstance(op, mounts.Symlink):
                layout.append(("link", op.target, op.points_to, None))
            else:
                layout.append(("file", op.target, op.content, op.mode))
        elif isinstance(op, mounts.Mask):
            masked.append(op.target)
        elif isinstance(op, mounts.ReadOnly):
            readonly.append(op.target)
        else:
            raise ExportError(f"the mount plan's {type(op).__name__} at {op.target} has no OCI form")
    if fs.dev:
        readonly.append("/dev")  # as the launcher: /dev itself, not its sub-mounts
        missing = [d for d in DEFAULT_DEVICES if d not in fs.devices]
        if missing:
            warnings.add("filesystem.devices", f"OCI runtimes always create {', '.join(DEFAULT_DEVICES)}: "
                         f"{', '.join(missing)} cannot be left out")
    if fs.root != "tmpfs":
        root = {"path": fs.root, "readonly": True}
        layout = []  # a host directory as root is never written to: mount points must exist in it
    else:
        root = {"path": "rootfs", "readonly": fs.readonly_root}
        if not fs.readonly_root:
            warnings.add("filesystem.readonly_root", "false: the bundle's root is the directory rootfs/ on the "
                         "host's disk, not a tmpfs: writes to it persist, and only ids that own it may write")
    if not ns.user and profile.process.user == 0:
        raise ExportError("process.user 0 without a user namespace would be host root")
    user: dict = {"uid": profile.process.user, "gid": profile.process.group, "umask": profile.process.umask}
    linux: dict = {}
    if ns.user:
        host_uid, host_gid = host_ids(profile, rootless)
        linux["uidMappings"] = [{"containerID": 0, "hostID": host_uid, "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": host_gid, "size": 1}]
        user.update(uid=0, gid=0)
    elif rootless:
        raise ExportError("namespaces.user = false cannot run rootless")
    _warn_lost(profile, user["uid"], warnings)
    namespaces = []
    for key, kind in NAMESPACE_TYPES:
        wanted = getattr(ns, key)
        if key == "network":
            wanted = creates_network_namespace(ns, profile.network.mode)
        if not wanted:
            continue
        if kind == "time" and compat == "runc-1.1":
            warnings.add("namespaces.time", "left out for runc 1.1, which does not know the time namespace: "
                         "the container shares the host's boot-time clock offsets")
            continue
        namespaces.append({"type": kind})
    linux["namespaces"] = namespaces
    caps = sorted(profile.capabilities.keep)
    process = {
        "terminal": False, "user": user, "args": args, "env": env_list(profile, warnings),
        "cwd": profile.process.cwd,
        "capabilities": {name: caps for name in ("bounding", "effective", "permitted", "inheritable",
                                                 "ambient")},
        "rlimits": _rlimits(profile, warnings), "noNewPrivileges": True,
    }
    seccomp = seccomp_section(profile.seccomp, warnings)
    if profile.seccomp is None:
        warnings.add("seccomp", "unconfined: the bundle has no system call filter either")
    linux["resources"] = _resources(profile, devices, warnings)
    if devices:
        linux["devices"] = devices
    linux["maskedPaths"] = masked
    linux["readonlyPaths"] = readonly
    if seccomp is not None:
        linux["seccomp"] = seccomp
    linux["rootfsPropagation"] = "private"
    config = {"ociVersion": OCI_VERSION, "process": process, "root": root, "mounts": oci_mounts}
    if ns.uts:
        config["hostname"] = profile.process.hostname
    config["linux"] = linux
    config["annotations"] = _annotations(profile, seccomp)
    return config, layout


def write_layout(root: str, layout: list) -> None:
    """Create the rootfs entries (parents first; nothing outside `root`, no symlink followed)."""
    os.mkdir(root, 0o755)  # new: never an existing directory or a symlink
    os.chmod(root, 0o755)
    for kind, path, value, mode in sorted(layout, key=lambda item: item[1].count("/")):
        full = os.path.join(root, path.lstrip("/"))
        parent = os.path.dirname(full)
        _make_dirs(root, parent)
        if os.path.lexists(full):
            continue
        if kind == "dir":
            os.mkdir(full, 0o755)
            os.chmod(full, mode)
        elif kind == "link":
            os.symlink(value, full)
        else:
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
            try:
                os.write(fd, (value or "").encode())
                os.fchmod(fd, mode)
            finally:
                os.close(fd)


def _make_dirs(root: str, path: str) -> None:
    relative = os.path.relpath(path, root)
    if relative == ".":
        return
    current = root
    for part in relative.split(os.sep):
        current = os.path.join(current, part)
        if os.path.islink(current):
            raise ExportError(f"rootfs: {current} is a symlink in the way of a mount point or file")
        if not os.path.isdir(current):
            os.mkdir(current, 0o755)


def write_bundle(profile: Profile, directory: str, argv=None, *, rootless: bool = False,
                 compat: str | None = None) -> list[str]:
    """Write DIR/config.json and DIR/rootfs; returns the warnings."""
    warnings = Warnings()
    config, layout = oci_config(profile, argv, rootless=rootless, compat=compat, warnings=warnings)
    prepare_output(directory)
    if config["root"]["path"] == "rootfs":
        write_layout(os.path.join(directory, "rootfs"), layout)
    write_file(os.path.join(directory, "config.json"), json.dumps(config, indent=2) + "\n")
    return list(warnings)
