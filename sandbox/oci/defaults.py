"""What `sandbox-runtime spec` writes (a hardened default config.json) and `features` reports."""
from __future__ import annotations

import os

from .spec import (CAP_SETS, HOOK_STAGES, MOUNT_OPTIONS, NAMESPACE_TYPES, SECCOMP_FLAGS)

MASKED = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
          "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"]
READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def default_config(rootless: bool = False) -> dict:
    """runc's default spec, hardened: a read-only root, no_new_privs, three capabilities, every
    namespace (a user namespace too when rootless), and this project's default seccomp policy."""
    from ..seccomp import builtin_policy, export_docker
    namespaces = [{"type": kind} for kind in ("pid", "network", "ipc", "uts", "mount", "cgroup")]
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]
    linux: dict = {
        "namespaces": namespaces, "maskedPaths": MASKED, "readonlyPaths": READONLY,
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
    }
    if rootless:
        namespaces.append({"type": "user"})
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
        linux.pop("resources")
        for mount in mounts:
            if mount["destination"] == "/dev/pts":
                mount["options"] = [o for o in mount["options"] if not o.startswith("gid=")]
        mounts = [m for m in mounts if m["type"] != "cgroup"]
    warnings: list = []
    linux["seccomp"] = export_docker(builtin_policy("default"), warnings)
    return {
        "ociVersion": "1.2.0",
        "process": {
            "terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {name: list(DEFAULT_CAPS) for name in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "sandbox",
        "mounts": mounts,
        "linux": linux,
    }


def features() -> dict:
    """The runtime-spec features document: what this runtime can honour (anything else is refused)."""
    from ..profile.units import CAPABILITY_NUMBERS
    from ..seccomp import syscalls
    from ..cgroups import oci as oci_cgroups
    hierarchies = oci_cgroups.hierarchies()
    archs = ["SCMP_ARCH_" + syscalls.native_arch().upper()]
    if syscalls.native_arch() == "x86_64":
        archs += ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": list(HOOK_STAGES),
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": list(NAMESPACE_TYPES),
            "capabilities": sorted(CAPABILITY_NUMBERS, key=CAPABILITY_NUMBERS.get),
            "cgroup": {"v1": any(name not in ("", "unified") for name in hierarchies),
                       "v2": "" in hierarchies or "unified" in hierarchies,
                       "systemd": False, "systemdUser": False, "rdma": False},
            "seccomp": {
                "enabled": True,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE",
                            "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                              "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": archs,
                "knownFlags": list(SECCOMP_FLAGS) + ["SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                                                     "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
                "supportedFlags": list(SECCOMP_FLAGS),
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {"org.opencontainers.runc.checkpoint.enabled": "false",
                        "org.sandbox.runtime.version": "0.1.0"},
        "potentiallyUnsafeConfigAnnotations": [],
    }
