"""`sandbox lint`: every relaxation of the secure defaults, and risky choices, made visible.

Relaxations are found generically: any key whose model field says what it `relaxes` and whose value
differs from the default is reported. Specific checks add what a reviewer would flag by hand.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

from .compiled_dataclass import dataclass
from .profile.model import Profile

SEVERITIES = ("info", "warning", "danger")
SENSITIVE_RW = ("/", "/etc", "/root", "/home", "/boot", "/proc", "/sys", "/dev", "/usr", "/var", "/run",
                "/var/run/docker.sock", "/run/docker.sock", "/run/containerd", "/var/lib/docker")
DANGEROUS_CAPS = {"CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_PTRACE", "CAP_SYS_RAWIO", "CAP_DAC_READ_SEARCH",
                  "CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON", "CAP_SYS_BOOT", "CAP_MAC_ADMIN", "CAP_SYS_TIME",
                  "CAP_SETFCAP", "CAP_MKNOD", "CAP_CHECKPOINT_RESTORE", "CAP_SYSLOG"}
SECRET_HINTS = ("TOKEN", "SECRET", "PASSWORD", "KEY", "AWS_", "GITHUB_", "SSH_AUTH_SOCK", "CREDENTIAL")


@dataclass(frozen=True)
class Finding:
    """One relaxation of the secure defaults, or one risky choice, at a profile key."""

    severity: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity:<7} {self.key}: {self.message}"


def _relaxations(obj, default, path: str) -> Iterator[Finding]:
    for fld in dataclasses.fields(obj):
        kind = fld.metadata.get("kind")
        value, base = getattr(obj, fld.name), getattr(default, fld.name)
        key = f"{path}.{fld.name}" if path else fld.name
        if kind == "table":
            yield from _relaxations(value, base, key)
        elif kind == "tables":
            for index, item in enumerate(value):
                yield from _entry_relaxations(item, f"{key}[{index}]")
        elif fld.metadata.get("relaxes") and value != base:
            if kind in ("names", "caps", "devices") and not set(value) - set(base):
                continue  # fewer than the default is no relaxation
            yield Finding("warning", key, f"{_show(value)}: {fld.metadata['relaxes']}")


def _entry_relaxations(item, key: str) -> Iterator[Finding]:
    """Relaxations inside one entry of an array of tables (a mount's mode = "rw", ...)."""
    for sub in dataclasses.fields(item):
        default = sub.default if sub.default is not dataclasses.MISSING else None
        if sub.metadata.get("relaxes") and getattr(item, sub.name) != default:
            where = getattr(item, "target", None) or getattr(item, "device", "")
            yield Finding("warning", f"{key}.{sub.name}",
                          f"{getattr(item, sub.name)!r} for {where}: {sub.metadata['relaxes']}")


def _show(value) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return repr(value)


def _specific(profile: Profile) -> Iterator[Finding]:
    for index, mount in enumerate(profile.filesystem.mounts):
        if mount.mode == "rw" and (mount.source in SENSITIVE_RW or mount.target in SENSITIVE_RW):
            yield Finding("danger", f"filesystem.mounts[{index}]",
                          f"{mount.source} is bound read-write: the workload can change the host system")
        if "docker.sock" in mount.source or "containerd" in mount.source:
            yield Finding("danger", f"filesystem.mounts[{index}]",
                          f"{mount.source} gives control of the container engine, i.e. host root")
    for cap in profile.capabilities.keep:
        if cap in DANGEROUS_CAPS:
            yield Finding("danger", "capabilities.keep", f"{cap} is broad enough to weaken the sandbox itself")
    if profile.seccomp is None:
        yield Finding("danger", "seccomp", "no system call filter: the whole kernel interface is exposed")
    else:
        mode = getattr(profile.seccomp, "mode", "")
        if mode == "denylist":
            yield Finding("warning", "seccomp", "a denylist policy allows every system call it does not name")
    for pattern in profile.process.env_passthrough:
        if pattern.endswith("*") or any(hint in pattern.upper() for hint in SECRET_HINTS):
            yield Finding("warning", "process.env_passthrough",
                          f"{pattern!r} may carry credentials into the sandbox")
    limits = profile.limits
    if limits.memory is None:
        yield Finding("warning", "limits.memory", "no memory limit: the workload can exhaust host memory")
    if limits.pids is None:
        yield Finding("warning", "limits.pids", "no process limit: a fork bomb reaches the host's limits")
    if limits.timeout is None:
        yield Finding("info", "limits.timeout", "no wall-clock limit")
    if profile.process.user == 0:
        yield Finding("info", "process.user", "the workload is root inside its namespace (never host root)")
    if profile.filesystem.root != "tmpfs":
        yield Finding("info", "filesystem.root", f"the host directory {profile.filesystem.root} is the root")
    yield from _network(profile)


def _network(profile: Profile) -> Iterator[Finding]:
    """What [network] opens: the host's stack, egress to anywhere, ports published beyond loopback."""
    from .net import spec
    network = profile.network
    if network.mode == "host":
        yield Finding("danger", "network.mode", "'host' shares the host's network stack: its loopback services, "
                      "abstract unix sockets and every address the host reaches")
        return
    if network.mode != "bridge":
        extra = [key for key in ("segment", "egress", "publish", "dns") if getattr(network, key)]
        for key in extra:
            yield Finding("info", f"network.{key}", f"has no effect unless network.mode = 'bridge'")
        return
    for index, text in enumerate(network.egress):
        entry = spec.parse_egress(text)
        key = f"network.egress[{index}]"
        if entry.anywhere and entry.ports is None:
            yield Finding("danger", key, f"{text!r} allows egress to anywhere, on every port")
        elif entry.anywhere:
            yield Finding("warning", key, f"{text!r} allows any destination on these ports")
        elif entry.network is not None and entry.network.overlaps(spec.LINK_LOCAL):
            yield Finding("danger", key, f"{text!r} reaches link-local addresses, among them cloud metadata "
                          "services (169.254.169.254) that hand out credentials")
        elif entry.network is not None and entry.network.prefixlen < 16:
            yield Finding("warning", key, f"{text!r} is a wide network ({entry.network.num_addresses} addresses)")
    for index, text in enumerate(network.publish):
        entry = spec.parse_publish(text)
        if entry.address == "0.0.0.0":
            yield Finding("danger", f"network.publish[{index}]", f"{text!r} listens on every host address: "
                          "other machines reach into the sandbox")
        elif not entry.loopback:
            yield Finding("warning", f"network.publish[{index}]", f"{text!r} listens on a non-loopback host "
                          f"address: whoever reaches {entry.address} reaches into the sandbox")


def lint(profile: Profile) -> list[Finding]:
    findings = list(_relaxations(profile, Profile(), ""))
    findings += _specific(profile)
    order = {severity: index for index, severity in enumerate(reversed(SEVERITIES))}
    return sorted(findings, key=lambda f: order[f.severity])
