"""Export a profile to other tools' formats, and import an OCI bundle's config.json as a profile.

    sandbox export PROFILE --format oci -o DIR         config.json + rootfs/ (runc, crun, sandbox-runtime)
    sandbox export PROFILE --format kubernetes -o DIR  Pod, NetworkPolicy, RuntimeClass, seccomp JSON
    sandbox export PROFILE --format systemd -o DIR     NAME.service with the [Service] hardening + rootfs/
    sandbox import oci config.json -o profile.toml

Every translation returns its warnings: what the target cannot express is said, never dropped
silently. Each module is pure apart from `write_*`, which writes the files (see docs/oci.md,
"Export and import").
"""
from __future__ import annotations


# Every profile key, and how the targets take it: a translation, or a warning when the profile moves
# it off its default (docs/oci.md has the tables). tests/test_export_oci.py fails when the model has a
# key this list lacks, so a new key gets a decision here before it can be dropped silently.
HANDLED_KEYS = {
    "name": "annotation; Pod name; unit name", "description": "annotation; Pod annotation; Description=",
    "extends": "annotation (lint lineage)",
    "process.command": "args; command; ExecStart=", "process.cwd": "cwd; workingDir; WorkingDirectory=",
    "process.env": "env", "process.env_passthrough": "warning; PassEnvironment=",
    "process.user": "container root + annotation; runAsUser; DynamicUser=/User=",
    "process.group": "as process.user", "process.host_user": "uidMappings; -; User=",
    "process.host_group": "gidMappings; -; Group=", "process.hostname": "hostname",
    "process.new_session": "warning when false", "process.umask": "user.umask; warning; UMask=",
    **{f"namespaces.{n}": "linux.namespaces; host*/hostUsers; Private*= or warning"
       for n in ("user", "mount", "pid", "network", "ipc", "uts", "cgroup", "time")},
    "filesystem.root": "root.path", "filesystem.root_size": "read-only root: not needed",
    "filesystem.readonly_root": "root.readonly; readOnlyRootFilesystem; ProtectSystem=strict",
    **{f"filesystem.mounts[].{k}": "bind mounts; warning (Pod); Bind*Paths="
       for k in ("source", "target", "mode", "optional", "noexec", "idmap", "allow_system_path")},
    **{f"filesystem.tmpfs[].{k}": "tmpfs mounts; emptyDir; TemporaryFileSystem="
       for k in ("target", "size", "mode", "noexec")},
    **{f"filesystem.symlinks[].{k}": "rootfs/; warning (Pod)" for k in ("target", "points_to")},
    **{f"filesystem.files[].{k}": "rootfs/; warning (Pod)" for k in ("target", "content", "mode")},
    "filesystem.dev": "/dev tmpfs; PrivateDevices=", "filesystem.devices": "linux.devices; warning; DeviceAllow=",
    "filesystem.dev_shm_size": "/dev/shm tmpfs; emptyDir", "filesystem.proc": "proc mount; warning",
    "filesystem.sys": "/sys bind; warning", "filesystem.masked_paths": "maskedPaths; warning; InaccessiblePaths=",
    "filesystem.readonly_paths": "readonlyPaths; warning; ReadOnlyPaths=",
    "network.mode": "no network namespace; hostNetwork/NetworkPolicy; PrivateNetwork=",
    **{f"network.{k}": "warning (segments are sandbox's own: docs/network.md)"
       for k in ("segment", "egress", "publish", "hostname_resolution", "dns")},
    "limits.memory": "memory.limit; limits.memory; MemoryMax=", "limits.swap": "memory.swap; warning; MemorySwapMax=",
    "limits.memory_high": "unified; warning; MemoryHigh=", "limits.cpus": "cpu quota; limits.cpu; CPUQuota=",
    "limits.cpu_weight": "cpu.shares; warning; CPUWeight=", "limits.pids": "pids.limit; warning; TasksMax=",
    "limits.io_weight": "blockIO.weight; warning; IOWeight=",
    **{f"limits.io_max[].{k}": "blockIO throttle; warning; IO*Max="
       for k in ("device", "read_bps", "write_bps", "read_iops", "write_iops")},
    "limits.timeout": "warning + annotation; activeDeadlineSeconds; RuntimeMaxSec=",
    "limits.kill_after": "annotation; terminationGracePeriodSeconds; TimeoutStopSec=",
    "limits.required": "annotation (runtimes always require)", "limits.optional": "annotation",
    "limits.rlimits": "process.rlimits; warning; Limit*=",
    "capabilities.keep": "five capability sets; capabilities.add; CapabilityBoundingSet=/AmbientCapabilities=",
    "seccomp": "linux.seccomp (+ annotation); Localhost profile; SystemCallFilter= and Restrict*=",
    **{f"landlock.{k}": "warning + annotation" for k in ("enabled", "read", "write", "best_effort")},
    **{f"audit.{k}": "warning + annotation" for k in ("enabled", "log", "required", "syslog", "syslog_socket")},
    "exec.allow": "warning + annotation; warning; NoExecPaths=/ExecPaths=",
    **{f"monitor.{k}": "warning + annotation (live events are the launcher's: docs/monitoring.md)"
       for k in ("events", "stats_interval", "baseline", "on_anomaly", "processes", "files")},
    **{f"secrets[].{k}": "warning + annotation; Secret volume; LoadCredential=" for k in ("name", "file", "env")},
    "image.ref": "refused (oci, systemd); the Pod's image", "image.digest": "the Pod's image pinned",
    **{f"image.{k}": "refused with image.ref (oci, systemd); warning (Pod)"
       for k in ("allowed_registries", "pull", "tls_verify", "setuid", "require_scan", "scan_allowlist", "vuln_db")},
}


def profile_keys() -> list[str]:
    """Every key of the profile model, dotted ("filesystem.mounts[].source"); internal ones left out."""
    import dataclasses
    from ..profile.model import Profile

    def walk(cls, prefix: str):
        for field in dataclasses.fields(cls):
            kind = field.metadata.get("kind")
            if kind == "internal":
                continue
            if kind == "table":
                yield from walk(field.default_factory, f"{prefix}{field.name}.")
            elif kind == "tables":
                yield from walk(field.metadata["item"], f"{prefix}{field.name}[].")
            else:
                yield prefix + field.name
    return list(walk(Profile, ""))


class ExportError(ValueError):
    """The profile cannot be exported to this target at all (one line: what and why)."""


def prepare_output(directory: str) -> None:
    """Make `directory` for an export, or accept an existing one that is empty, a real directory
    (not a symlink) and this user's: a directory someone else controls could have entries swapped
    for symlinks while we write, and an export by root would then write wherever they point."""
    import os
    if os.path.islink(directory):
        raise ExportError(f"{directory} is a symlink: export into a new directory")
    if os.path.exists(directory):
        info = os.stat(directory)
        if info.st_uid != os.geteuid():
            raise ExportError(f"{directory} belongs to uid {info.st_uid}, not to this user: export into a new "
                              "directory")
        if os.listdir(directory):
            raise ExportError(f"{directory} exists and is not empty: export into a new directory")
    else:
        os.makedirs(directory, mode=0o755)


def write_file(path: str, text: str) -> None:
    """Create a new file (never through a symlink, never over an existing file)."""
    import os
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def bridge_warnings(profile, warnings: "Warnings", target: str) -> None:
    """[network] bridge mode: segments, egress allowlists and published ports are the launcher's
    own (sandbox/net); no exported form carries them."""
    network = profile.network
    if network.mode != "bridge":
        return
    warnings.add("network.mode", f"'bridge' is sandbox's own: {target} gets a network namespace of its own "
                 "with loopback only; give it the network the engine or the cluster provides")
    for key in ("segment", "egress", "publish", "dns"):
        if getattr(network, key):
            warnings.add(f"network.{key}", f"not exported: {target} has no equivalent (docs/network.md)")


def monitor_warnings(profile, warnings: "Warnings", target: str) -> None:
    """[monitor]: live events and anomalies are observed by sandbox's launcher (its seccomp
    listener, the kernel's connectors); no exported form makes them."""
    monitor = profile.monitor
    if monitor.events is not None or monitor.baseline is not None:
        warnings.add("monitor", f"live events and baselines are sandbox's own: {target} makes none "
                     "(the engine's events, audit and metrics are what remain; docs/monitoring.md)")


class Warnings:
    """What a translation could not carry over, in the order found, without repeats."""

    def __init__(self):
        self.items = []

    def add(self, key: str, message: str) -> None:
        text = f"{key}: {message}" if key else message
        if text not in self.items:
            self.items.append(text)

    def __iter__(self):
        return iter(self.items)

    def __len__(self):
        return len(self.items)
