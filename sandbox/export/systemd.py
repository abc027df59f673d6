"""Profile -> a systemd service unit with the equivalent [Service] hardening.

    DIR/NAME.service   the unit: ExecStart, identity, file system, namespaces, system call filter,
                       resource limits
    DIR/rootfs/        the same empty root layout as the OCI bundle (mount points, symlinks, small
                       files); the unit's RootDirectory=, with the binds on top

The root: a profile builds its root on an empty tmpfs from host binds. systemd's supported way to
show a service only what it lists is RootDirectory= plus BindReadOnlyPaths=/BindPaths= (the
`TemporaryFileSystem=/:ro` trick is not supported upstream), so the export writes the root layout
next to the unit, and ProtectSystem=strict keeps it read-only. The system call filter is the
policy's own list of names (not @groups whose content changes between systemd versions); the
argument rules become RestrictAddressFamilies= (socket families), RestrictNamespaces= (clone
flags, unshare, setns) and LockPersonality= (personality), which is what systemd offers for them.
"""
from __future__ import annotations

import os

from ..namespaces import creates_network_namespace
from ..profile.model import DEFAULT_DEVICES, MASKED_PROC_PATHS, READONLY_PROC_PATHS, SECRET_DIR, Profile
from . import Warnings, bridge_warnings, monitor_warnings, prepare_output, write_file
from .oci import oci_config, write_layout

_AF_NAMES = {1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6", 16: "AF_NETLINK", 17: "AF_PACKET", 4: "AF_IPX",
             5: "AF_APPLETALK", 9: "AF_X25", 15: "AF_KEY", 38: "AF_ALG", 40: "AF_VSOCK", 44: "AF_XDP",
             29: "AF_CAN", 31: "AF_BLUETOOTH", 21: "AF_RDS", 30: "AF_TIPC", 42: "AF_QIPCRTR"}
_RLIMIT_KEYS = {"as": "LimitAS", "core": "LimitCORE", "cpu": "LimitCPU", "data": "LimitDATA",
                "fsize": "LimitFSIZE", "locks": "LimitLOCKS", "memlock": "LimitMEMLOCK",
                "msgqueue": "LimitMSGQUEUE", "nice": "LimitNICE", "nofile": "LimitNOFILE", "nproc": "LimitNPROC",
                "rss": "LimitRSS", "rtprio": "LimitRTPRIO", "rttime": "LimitRTTIME",
                "sigpending": "LimitSIGPENDING", "stack": "LimitSTACK"}


def _quote(word: str) -> str:
    """A word of ExecStart=/Environment= (C-style quoting; '%' and '$' are systemd specifiers)."""
    word = word.replace("%", "%%").replace("$", "$$")
    if word and all(c.isalnum() or c in "-_./:=,+@" for c in word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _limit(value: int) -> str:
    return "infinity" if value == -1 else str(value)


def _block_device_path(device: str) -> str | None:
    try:
        with open(f"/sys/dev/block/{device}/uevent") as handle:
            for line in handle:
                if line.startswith("DEVNAME="):
                    return "/dev/" + line.split("=", 1)[1].strip()
    except OSError:
        return None
    return None


def seccomp_lines(policy, warnings: Warnings) -> list[str]:
    """SystemCallFilter= and the options that carry the policy's argument rules."""
    from ..seccomp.plan import build_plan
    if policy is None:
        warnings.add("seccomp", "unconfined: no SystemCallFilter=")
        return []
    lines = []
    plans = build_plan(policy)
    default = policy.default_action
    if policy.architectures == ("native",):
        lines.append("SystemCallArchitectures=native")
    else:
        lines.append("SystemCallArchitectures=" + " ".join(policy.architectures))
    restricted: dict[str, str] = {}  # syscall -> the option that carries its argument rules

    def allows(plan) -> bool:
        return plan.fallback.kind in ("allow", "log") or any(a.kind in ("allow", "log") for _, a in plan.cases)
    socket = plans.get("socket")
    if socket is not None and socket.cases and not allows_unconditionally(socket):
        families = sorted({c.value for conditions, action in socket.cases if action.kind == "allow"
                           for c in conditions if c.index == 0 and c.op == "masked_eq"})
        names = [_AF_NAMES.get(f, str(f)) for f in families]
        lines.append("RestrictAddressFamilies=" + (" ".join(names) if names else "none"))
        restricted["socket"] = restricted["socketpair"] = "RestrictAddressFamilies="
        if any(c.index != 0 for conditions, _ in socket.cases for c in conditions):
            warnings.add("seccomp", "socket: conditions beyond the family (netlink protocols, types) cannot be "
                         "said: RestrictAddressFamilies= allows the family")
    elif socket is not None and not allows(socket):
        lines.append("RestrictAddressFamilies=none")
    unshare = plans.get("unshare")
    if unshare is not None and unshare.fallback.denies and not unshare.cases:
        lines.append("RestrictNamespaces=yes")
        # clone's flag rule is what RestrictNamespaces= checks (and clone3 gets ENOSYS from it, as
        # from the policy); unshare and setns stay out of the allowlist, denied outright as by the policy.
        restricted.update({name: "RestrictNamespaces=" for name in ("clone", "clone3")})
    personality = plans.get("personality")
    if personality is not None and personality.cases:
        lines.append("LockPersonality=yes")
        restricted["personality"] = "LockPersonality="
    if default.kind == "errno":
        lines.append(f"SystemCallErrorNumber={_errno_name(default.errno)}")
    elif default.kind not in ("kill-process", "kill-thread", "allow"):
        warnings.add("seccomp", f"default action {default}: systemd kills or returns an errno: killed instead")
    if policy.mode == "allowlist":
        allowed = sorted(name for name, plan in plans.items() if allows(plan) or name in restricted)
        for name, plan in sorted(plans.items()):
            if name in restricted:
                continue
            if plan.cases and plan.fallback.kind == "allow":
                warnings.add("seccomp", f"{name}: argument exceptions to allow cannot be said in "
                             "SystemCallFilter=: allowed")
            elif plan.cases and plan.fallback.denies:
                warnings.add("seccomp", f"{name}: allowed only for some arguments: systemd cannot say that: "
                             "denied")
            elif not allows(plan) and plan.fallback != default:
                warnings.add("seccomp", f"{name}: {plan.fallback} becomes the default action {default}")
        lines += _wrapped("SystemCallFilter=", allowed)
    else:
        denied = []
        for name, plan in sorted(plans.items()):
            if name in restricted:
                continue
            if plan.fallback.denies:
                suffix = f":{_errno_name(plan.fallback.errno)}" if plan.fallback.kind == "errno" else ""
                denied.append(name + suffix)
                if plan.cases:
                    warnings.add("seccomp", f"{name}: argument exceptions cannot be said: denied")
            elif plan.cases:
                warnings.add("seccomp", f"{name}: denied only for some arguments: systemd cannot say that: allowed")
        lines += _wrapped("SystemCallFilter=~", denied)
    return lines


def allows_unconditionally(plan) -> bool:
    return plan.fallback.kind == "allow" and not plan.cases


def _errno_name(number: int) -> str:
    import errno
    return errno.errorcode.get(number, str(number))


def _wrapped(prefix: str, names: list[str], width: int = 100) -> list[str]:
    """Several assignments of one list key add up in systemd: keep lines readable."""
    lines, current = [], []
    for name in names:
        if current and len(prefix) + len(" ".join(current + [name])) > width:
            lines.append(prefix + " ".join(current))
            current = []
        current.append(name)
    if current:
        lines.append(prefix + " ".join(current))
    return lines


def unit_text(profile: Profile, argv=None, *, root_directory: str, rootless: bool = False,
              warnings: Warnings | None = None) -> tuple[str, list]:
    """The unit's text and the root layout (as oci_config's) it needs in `root_directory`."""
    warnings = Warnings() if warnings is None else warnings
    ns, fs, limits = profile.namespaces, profile.filesystem, profile.limits
    scratch = Warnings()  # the OCI translation's own warnings are not the unit's
    config, layout = oci_config(profile, argv, rootless=rootless, warnings=scratch)
    args = config["process"]["args"]
    service: list[str] = ["Type=exec", "ExecStart=" + " ".join(_quote(a) for a in args),
                          f"WorkingDirectory={profile.process.cwd}"]
    service += [f"Environment={_quote(item)}" for item in config["process"]["env"]]
    plain = [p for p in profile.process.env_passthrough if not p.endswith("*")]
    if plain:
        service.append("PassEnvironment=" + " ".join(plain))
    if len(plain) != len(profile.process.env_passthrough):
        warnings.add("process.env_passthrough", "prefix patterns (NAME*) cannot be passed: only plain names")
    service.append(f"UMask={profile.process.umask:04o}")
    # identity
    service.append("# Identity: never host root")
    if rootless:
        warnings.add("process.user", "a user unit (systemctl --user) runs as its user; the inside ids are that "
                     "user's under PrivateUsers=")
    elif profile.process.host_user is None:
        service.append("DynamicUser=yes")
        warnings.add("process.user", f"{profile.process.user} inside, host 65534: DynamicUser=yes gives the service "
                     "a fresh unprivileged uid instead, the same inside and out")
    else:
        service += [f"User={profile.process.host_user}", f"Group={profile.process.host_group or profile.process.host_user}"]
        if profile.process.user != profile.process.host_user:
            warnings.add("process.user", f"{profile.process.user} inside: under PrivateUsers= the inside uid is the "
                         "host uid")
    if ns.user:
        service.append("PrivateUsers=yes")
        warnings.add("namespaces.user", "PrivateUsers=yes also maps root to root (unused: the service never runs "
                     "as root); a profile maps host uid 0 nowhere")
    service += ["NoNewPrivileges=yes", "CapabilityBoundingSet=" + " ".join(sorted(profile.capabilities.keep)),
                "AmbientCapabilities=" + " ".join(sorted(profile.capabilities.keep)), "SecureBits=noroot-locked",
                "KeyringMode=private"]
    # file system
    service.append("# File system: the root layout beside this unit, host paths bound into it")
    service += [f"RootDirectory={root_directory}", "MountAPIVFS=yes", "ProtectSystem=strict", "ProtectHome=yes",
                "PrivateMounts=yes", "RestrictSUIDSGID=yes"]
    if not any(t.target == "/tmp" for t in fs.tmpfs):
        service.append("PrivateTmp=yes")
    for mount in fs.mounts:
        optional = "-" if mount.optional else ""
        spec = mount.source if mount.source == mount.target else f"{mount.source}:{mount.target}"
        service.append(("BindReadOnlyPaths=" if mount.mode == "ro" else "BindPaths=") + optional + spec)
        if mount.noexec:
            service.append(f"NoExecPaths={mount.target}")
    for tmpfs in fs.tmpfs:
        options = ["nosuid", "nodev"] + (["noexec"] if tmpfs.noexec else []) + [f"size={tmpfs.size}",
                                                                                  f"mode={tmpfs.mode:o}"]
        service.append(f"TemporaryFileSystem={tmpfs.target}:{','.join(options)}")
    if fs.dev:
        service.append("PrivateDevices=yes")
        for device in fs.devices:
            if device not in DEFAULT_DEVICES:
                service += [f"BindPaths=/dev/{device}", f"DeviceAllow=/dev/{device} rw"]
        missing = [d for d in DEFAULT_DEVICES if d not in fs.devices]
        if missing:
            warnings.add("filesystem.devices", f"PrivateDevices= always has {', '.join(DEFAULT_DEVICES)}")
    else:
        service.append("PrivateDevices=yes")
        warnings.add("filesystem.dev", "false: a unit always has a /dev; PrivateDevices=yes keeps it minimal")
    if fs.dev_shm_size != 64 << 20:
        warnings.add("filesystem.dev_shm_size", "PrivateDevices= sizes /dev/shm itself")
    if not fs.proc:
        warnings.add("filesystem.proc", "false: MountAPIVFS= mounts /proc (ProtectProc=invisible limits it)")
    if not fs.sys:
        warnings.add("filesystem.sys", "false: MountAPIVFS= mounts /sys (read-only under ProtectKernelTunables=)")
    # [[secrets]]: systemd's credentials, bound where the launcher puts them.
    for secret in profile.secrets:
        if secret.file:
            service += [f"LoadCredential={secret.name}:{secret.file}",
                        f"BindReadOnlyPaths=%d/{secret.name}:{SECRET_DIR}/{secret.name}"]
        else:
            warnings.add("secrets", f"{secret.name}: from the launcher's environment ({secret.env}); a unit "
                         "cannot take a secret from the environment without writing it in the unit: "
                         "use SetCredentialEncrypted= (systemd-creds) or a file")
    # [exec] allow: NoExecPaths=/ with ExecPaths= for plain paths and directories (/**).
    if profile.exec.allow is not None:
        paths = [p.removesuffix("/**") for p in profile.exec.allow]
        if all(not any(c in p for c in "*?[") for p in paths):
            service += ["NoExecPaths=/"] + _wrapped("ExecPaths=", paths)
        else:
            warnings.add("exec.allow", "patterns with * ? [..] inside a name cannot be said: ExecPaths= takes "
                         "paths; no executable allow list written")
    masked = [p for p in MASKED_PROC_PATHS if fs.proc or not p.startswith("/proc/")] + list(fs.masked_paths)
    service += _wrapped("InaccessiblePaths=", [f"-{p}" for p in masked])
    service += _wrapped("ReadOnlyPaths=", [f"-{p}" for p in list(READONLY_PROC_PATHS) + list(fs.readonly_paths)])
    if not fs.readonly_root:
        warnings.add("filesystem.readonly_root", "false: the root is the directory beside the unit, kept read-only "
                     "by ProtectSystem=strict")
    # kernel and namespaces
    service.append("# Namespaces and kernel interfaces")
    if creates_network_namespace(ns, profile.network.mode):
        service.append("PrivateNetwork=yes")
    if ns.ipc:
        service.append("PrivateIPC=yes")
    if ns.uts:
        service.append("ProtectHostname=yes")
        warnings.add("process.hostname", f"{profile.process.hostname!r}: ProtectHostname= keeps the host's name "
                     "unchangeable but cannot set another")
    if ns.pid:
        warnings.add("namespaces.pid", "systemd has no pid namespace: ProtectProc=invisible hides other users' "
                     "processes, the service's own cgroup holds its processes")
    if ns.cgroup:
        warnings.add("namespaces.cgroup", "systemd has no cgroup namespace option: ProtectControlGroups=yes "
                     "keeps the tree read-only")
    if ns.time:
        warnings.add("namespaces.time", "systemd has no time namespace option")
    service += ["ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectKernelLogs=yes",
                "ProtectControlGroups=yes", "ProtectClock=yes", "ProtectProc=invisible", "RestrictRealtime=yes"]
    service.append("# System calls")
    service += seccomp_lines(profile.seccomp, warnings)
    # resources
    service.append("# Resources")
    if limits.memory is not None:
        service += [f"MemoryMax={limits.memory}", f"MemorySwapMax={limits.swap}"]
    if limits.memory_high is not None:
        service.append(f"MemoryHigh={limits.memory_high}")
    if limits.pids is not None:
        service.append(f"TasksMax={limits.pids}")
    if limits.cpus is not None:
        service.append(f"CPUQuota={round(limits.cpus * 100)}%")
    if limits.cpu_weight is not None:
        service.append(f"CPUWeight={limits.cpu_weight}")
    if limits.io_weight is not None:
        service.append(f"IOWeight={limits.io_weight}")
    for entry in limits.io_max:
        path = _block_device_path(entry.device)
        if path is None:
            warnings.add("limits.io_max", f"{entry.device}: no block device of that number here")
            continue
        for key, value in (("IOReadBandwidthMax", entry.read_bps), ("IOWriteBandwidthMax", entry.write_bps),
                           ("IOReadIOPSMax", entry.read_iops), ("IOWriteIOPSMax", entry.write_iops)):
            if value is not None:
                service.append(f"{key}={path} {value}")
    for name, soft, hard in limits.rlimits:
        service.append(f"{_RLIMIT_KEYS[name]}={_limit(soft)}" + ("" if soft == hard else f":{_limit(hard)}"))
    if limits.timeout is not None:
        service.append(f"RuntimeMaxSec={limits.timeout:g}")
    service.append(f"TimeoutStopSec={limits.kill_after:g}")
    bridge_warnings(profile, warnings, "the unit")
    monitor_warnings(profile, warnings, "the unit")
    if profile.landlock.enabled:
        warnings.add("landlock", "systemd has no Landlock setting (the binds and ProtectSystem= are what remain)")
    if profile.audit.enabled:
        warnings.add("audit", "the journal records the unit's start and stop, not the sandbox's audit record")
    description = profile.description or f"sandbox profile {profile.name}"
    text = "\n".join([f"# Written by `sandbox export --format systemd` from the profile {profile.name!r}.",
                      "# What systemd cannot express was listed as warnings (see docs/oci.md).",
                      "[Unit]", f"Description={description}", "", "[Service]", *service, ""])
    return text, layout


def write_unit(profile: Profile, directory: str, argv=None, *, rootless: bool = False) -> list[str]:
    from .kubernetes import dns_name
    warnings = Warnings()
    root = os.path.abspath(os.path.join(directory, "rootfs"))
    text, layout = unit_text(profile, argv, root_directory=root, rootless=rootless, warnings=warnings)
    prepare_output(directory)
    if profile.filesystem.root == "tmpfs":
        write_layout(root, layout)
    else:
        text = text.replace(f"RootDirectory={root}", f"RootDirectory={profile.filesystem.root}")
    write_file(os.path.join(directory, f"{dns_name(profile.name or 'sandbox')}.service"), text)
    return list(warnings)

