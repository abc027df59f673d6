"""Checks across keys, after every key has been converted on its own. Each check returns problems."""
from __future__ import annotations

import os
from typing import Callable, Iterator

from ..errors import Problem
from .model import Profile

MIN_MEMORY = 4 << 20


def _targets(profile: Profile) -> Iterator[tuple[str, str]]:
    fs = profile.filesystem
    for kind, items in (("mounts", fs.mounts), ("tmpfs", fs.tmpfs), ("symlinks", fs.symlinks),
                        ("files", fs.files)):
        for index, item in enumerate(items):
            yield f"filesystem.{kind}[{index}].target", item.target


def check_bind_sources(profile: Profile, file: str) -> Iterator[Problem]:
    for index, mount in enumerate(profile.filesystem.mounts):
        if not mount.optional and not os.path.lexists(mount.source):
            yield Problem(file, f"filesystem.mounts[{index}].source", "an existing host path",
                          repr(mount.source) + " does not exist", "set optional = true to skip it when missing")


def check_targets(profile: Profile, file: str) -> Iterator[Problem]:
    seen: dict[str, str] = {}
    for key, target in _targets(profile):
        if target == "/":
            yield Problem(file, key, "a path below the sandbox root", "'/'", "use filesystem.root for the root itself")
        elif target in seen:
            yield Problem(file, key, "a target used once", repr(target) + f" is also {seen[target]}")
        seen.setdefault(target, key)


def check_sizes(profile: Profile, file: str) -> Iterator[Problem]:
    limits, fs = profile.limits, profile.filesystem
    if limits.memory is not None and limits.memory < MIN_MEMORY:
        yield Problem(file, "limits.memory", "at least 4M", str(limits.memory))
    if limits.memory is None and limits.swap:
        yield Problem(file, "limits.swap", "a memory limit alongside a swap limit", "limits.memory unset")
    if fs.root_size < (1 << 20):
        yield Problem(file, "filesystem.root_size", "at least 1M", str(fs.root_size))
    for index, tmpfs in enumerate(fs.tmpfs):
        if tmpfs.size <= 0:
            yield Problem(file, f"filesystem.tmpfs[{index}].size", "a size above 0", str(tmpfs.size))
    for index, item in enumerate(fs.files):
        if len(item.content) > (1 << 20):
            yield Problem(file, f"filesystem.files[{index}].content", "at most 1M of content",
                          f"{len(item.content)} bytes", "bind a host file instead")
    if limits.cpu_weight is not None and not 1 <= limits.cpu_weight <= 10000:
        yield Problem(file, "limits.cpu_weight", "a weight from 1 to 10000", str(limits.cpu_weight))
    if limits.io_weight is not None and not 1 <= limits.io_weight <= 10000:
        yield Problem(file, "limits.io_weight", "a weight from 1 to 10000", str(limits.io_weight))
    for index, entry in enumerate(limits.io_max):
        if (entry.read_bps, entry.write_bps, entry.read_iops, entry.write_iops) == (None,) * 4:
            yield Problem(file, f"limits.io_max[{index}]", "at least one of read_bps, write_bps, read_iops, "
                          "write_iops", "none")


def check_required_limits(profile: Profile, file: str) -> Iterator[Problem]:
    for name in profile.limits.required:
        if getattr(profile.limits, name) in (None, ()):
            yield Problem(file, "limits.required", f"limits.{name} to be set when it is required", "unset")
    for name in profile.limits.optional:
        if name in profile.limits.required:
            yield Problem(file, "limits.optional", "limits that are not also required", repr(name),
                          "a limit is either required (refuse to run without it) or optional")


def check_namespace_consistency(profile: Profile, file: str) -> Iterator[Problem]:
    ns, fs = profile.namespaces, profile.filesystem
    if profile.network.mode != "host" and not ns.network:
        # A network mode other than "host" lives in a namespace of its own (namespaces.py).
        yield Problem(file, "namespaces.network", f"true when network.mode is '{profile.network.mode}'",
                      "false", "set network.mode = \"host\" to share the host network")
    if not ns.mount and (fs.mounts or fs.tmpfs or fs.files or fs.symlinks or fs.root != "tmpfs"):
        yield Problem(file, "namespaces.mount", "true when [filesystem] builds a root", "false")
    if fs.proc and not ns.pid and ns.mount:
        yield Problem(file, "filesystem.proc", "false when namespaces.pid is false",
                      "true", "a /proc of the host pid namespace would show every host process")
    if not ns.user and profile.process.user == 0:
        yield Problem(file, "process.user", "a user other than 0 when namespaces.user is false", "0",
                      "without a user namespace, user 0 would be host root")
    if not ns.user and os.geteuid() != 0:
        yield Problem(file, "namespaces.user", "true for a launch by a user other than root", "false")


def check_host_ids(profile: Profile, file: str) -> Iterator[Problem]:
    process = profile.process
    for key, value in (("process.host_user", process.host_user), ("process.host_group", process.host_group)):
        if value == 0:
            yield Problem(file, key, "a host id other than 0", "0",
                          "a workload that is host root can write root-owned host files")


def check_exec(profile: Profile, file: str) -> Iterator[Problem]:
    if profile.exec.allow is not None and not profile.landlock.enabled:
        yield Problem(file, "exec.allow", "landlock.enabled = true (the kernel enforces the list with Landlock)",
                      "landlock.enabled = false")


def check_secrets(profile: Profile, file: str) -> Iterator[Problem]:
    from .model import SECRET_DIR
    seen: dict[str, int] = {}
    for index, secret in enumerate(profile.secrets):
        key = f"secrets[{index}]"
        if (secret.file is None) == (secret.env is None):
            yield Problem(file, key, "exactly one of file = \"/host/path\" or env = \"VARIABLE\"",
                          "both" if secret.file is not None else "neither")
        if secret.name in seen:
            yield Problem(file, f"{key}.name", "a name used once", f"{secret.name!r} is also secrets[{seen[secret.name]}]")
        seen.setdefault(secret.name, index)
    if not profile.secrets:
        return
    if not profile.namespaces.mount:
        yield Problem(file, "secrets", "namespaces.mount = true (secrets are files on a tmpfs inside)", "false")
    for key, target in _targets(profile):
        if target == SECRET_DIR or target.startswith(SECRET_DIR + "/"):
            yield Problem(file, key, f"a target outside {SECRET_DIR} (it holds the [[secrets]])", repr(target))


def check_audit(profile: Profile, file: str) -> Iterator[Problem]:
    if profile.audit.required and not profile.audit.enabled:
        yield Problem(file, "audit.required", "audit.enabled = true when the audit record is required", "false")


def check_network(profile: Profile, file: str) -> Iterator[Problem]:
    network = profile.network  # (a namespace of its own: check_namespace_consistency)
    if not network.publish:
        return  # sandbox.net.spec (and ipaddress, ~2 ms) only for the profiles that publish
    from ..net.spec import parse_publish
    seen: dict[tuple, int] = {}
    for index, text in enumerate(network.publish):
        entry = parse_publish(text)
        key = (entry.address, entry.host_port, entry.protocol)
        if key in seen:
            yield Problem(file, f"network.publish[{index}]", "each host address and port published once",
                          f"{text!r} repeats network.publish[{seen[key]}]")
        seen.setdefault(key, index)


CHECKS: tuple[Callable[[Profile, str], Iterator[Problem]], ...] = (
    check_bind_sources, check_targets, check_sizes, check_required_limits,
    check_namespace_consistency, check_host_ids, check_exec, check_secrets, check_audit, check_network,
)


def validate(profile: Profile, file: str) -> list[Problem]:
    return [problem for check in CHECKS for problem in check(profile, file)]
