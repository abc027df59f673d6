"""`sandbox lint`: every relaxation of the secure defaults, and risky choices, made visible.

Relaxations are found generically: any key whose model field says what it `relaxes` and whose value
differs from the default is reported. Specific checks add what a reviewer would flag by hand.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterator

from . import sources
from .compiled_dataclass import dataclass
from .profile.model import Profile

SEVERITIES = ("info", "warning", "danger")
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


def _system_path(mount) -> str | None:
    """The launcher's own rule (sandbox.sources), on the source as written and as it resolves
    here and now (the launch resolves it again, without following symlinks a sandbox could have
    planted)."""
    check = sources.system_path_reason if mount.mode == "rw" else sources.runtime_socket_reason
    for path in dict.fromkeys((mount.source, os.path.realpath(mount.source))):
        reason = check(path)
        if reason is not None:
            return reason
    return None


def _owner(path: str) -> tuple[int, ...]:
    """(uid, gid) of path as it resolves here, or () when it cannot be looked at."""
    try:
        info = os.stat(path)
    except OSError:
        return ()
    return info.st_uid, info.st_gid


def _specific(profile: Profile) -> Iterator[Finding]:
    for index, mount in enumerate(profile.filesystem.mounts):
        reason = _system_path(mount)
        if reason is not None:
            mode = "read-write" if mount.mode == "rw" else "into the sandbox"
            if mount.allow_system_path:
                yield Finding("danger", f"filesystem.mounts[{index}]",
                              f"{mount.source} is bound {mode} by allow_system_path = true: {reason}")
            else:
                yield Finding("danger", f"filesystem.mounts[{index}]",
                              f"{mount.source} would be bound {mode}: {reason}; the launch refuses it "
                              "unless the mount sets allow_system_path = true")
        elif mount.mode == "rw" and mount.idmap == "yes" and 0 in _owner(mount.source):
            yield Finding("warning", f"filesystem.mounts[{index}].idmap",
                          f"'yes' for {mount.source}, which belongs to root: a root launch refuses it (an "
                          "idmapped mount never maps the sandbox to host uid 0); give it to a build user")
        elif mount.mode == "rw" and mount.idmap == "auto" and 0 in _owner(mount.source):
            yield Finding("info", f"filesystem.mounts[{index}]",
                          f"{mount.source} belongs to root: a root launch binds it without an id mapping, "
                          "so the sandbox writes there only as its own host uid may (give it to a build user)")
    for cap in profile.capabilities.keep:
        if cap in DANGEROUS_CAPS:
            yield Finding("danger", "capabilities.keep", f"{cap} is broad enough to weaken the sandbox itself")
    yield from seccomp_findings(profile.seccomp)
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


_WIDENING_KEYS = {"default-action": "seccomp.default_action", "architecture": "seccomp.architectures"}


def seccomp_findings(policy) -> list[Finding]:
    """Every way `policy` is wider than the built-in default policy (sandbox.seccomp.diff), as
    findings: calls allowed for one reason are one finding (`@mount` is eleven calls, one risk)."""
    from .seccomp.builtin import BUILTINS
    if policy is not None and any(policy is make() or policy == make() for make in BUILTINS.values()):
        return []  # the built-in policies widen nothing (tests/test_seccomp_diff.py): no import
    from .seccomp.diff import widenings
    findings: list[Finding] = []
    allowed: dict[tuple[str, str], list] = {}
    for widening in widenings(policy):
        if widening.kind == "syscall":
            allowed.setdefault((widening.risk, widening.reason), []).append(widening)
        else:
            findings.append(Finding(widening.risk, _WIDENING_KEYS.get(widening.kind, "seccomp"), widening.message))
    for (risk, reason), group in allowed.items():
        if len(group) == 1:
            findings.append(Finding(risk, "seccomp", group[0].message))
            continue
        names = ", ".join(w.subject for w in group)
        findings.append(Finding(risk, "seccomp", f"{names} are allowed; the default policy denies them"
                                + (f": {reason}" if reason else "")))
    return sorted(findings, key=lambda f: f.severity != "danger")


def lint(profile: Profile) -> list[Finding]:
    findings = list(_relaxations(profile, Profile(), ""))
    findings += _specific(profile)
    order = {severity: index for index, severity in enumerate(reversed(SEVERITIES))}
    return sorted(findings, key=lambda f: order[f.severity])
