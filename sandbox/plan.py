"""The launch plan: everything one launch needs, as plain data, computed before any process exists.

A profile is what people write; a plan is what the launcher runs. `plan_for(profile, argv)` compiles
a profile into one, and a front end that is not a profile (an OCI bundle's config.json, an image)
compiles into the same plan, so every front end shares one launcher and one list of child steps:

    profile.toml --load--> Profile --plan_for--> LaunchPlan --Launch(plan)--> create, start, wait, delete
    config.json  --------------------------------^

The plan holds no descriptors and no pids: those belong to one launch (launcher.Launch), which
turns the plan into a child.ChildContext when it forks.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import os
from typing import Any

from .compiled_dataclass import dataclass
from . import landlock, namespaces
from .profile.model import DEFAULT_PATH, Profile, per_profile

DEFAULT_KILL_AFTER = 3.0  # seconds between SIGTERM and SIGKILL on timeout (limits.kill_after)


@dataclass(frozen=True)
class LaunchPlan:
    """One sandbox, as the launcher and its child steps need it (see the module's docstring)."""

    name: str  # the profile's name, or a container's id
    argv: tuple[str, ...]
    env: dict
    cwd: str
    uid: int  # inside the sandbox
    gid: int
    umask: int
    id_map: Any  # namespaces.IdMap, or None without a user namespace
    new_user_ns: bool
    unshare_flags: int  # the namespaces made besides user and cgroup (see namespaces.unshare_flags)
    new_cgroup_ns: bool
    new_pid_ns: bool
    new_net_ns: bool  # and loopback brought up in it
    mounts: Any  # mounts.MountPlan without descriptors, None without a mount namespace; from a
    # profile, None: the launch builds it at create from the bind sources it checked (sources.py)
    hostname: str | None  # None: no UTS namespace
    rlimits: tuple
    keep_caps: tuple[str, ...]
    new_session: bool
    landlock_rules: tuple | None
    landlock_best_effort: bool
    seccomp: Any  # seccomp.SeccompPolicy, or None for no filter
    cgroup_limits: Any  # cgroups.CgroupLimits
    timeout: float | None
    kill_after: float
    profile: Profile | None = None  # what it came from, for the audit trail, lint and idmapped binds
    # What a profile never asks for and an OCI bundle may (sandbox/oci compiles config.json into
    # these); the defaults are a profile's launch. See child.ChildContext for where each acts.
    join_namespaces: tuple = ()  # (CLONE_NEW* flag, path): joined with setns before any is made
    init_ids: tuple[int, int] | None = None  # (uid, gid) init takes in its user namespace
    init_caps: tuple[str, ...] | None = None  # what init keeps once the workload runs; None: a profile's rule
    groups: tuple[int, ...] | None = None  # supplementary groups; None: none, and never set
    capability_sets: Any = None  # CapabilitySets: the five sets as given, instead of keep_caps
    no_new_privs: bool = True
    sysctls: tuple = ()  # (name, value) of namespaced sysctls
    domainname: str | None = None
    oom_score_adj: int | None = None
    personality: int | None = None
    time_offsets: str | None = None  # "monotonic S NS\nboottime S NS\n": init makes the time namespace
    cgroup_path: str | None = None  # an absolute cgroup path (OCI cgroupsPath) instead of a sandbox-* name
    cgroup_resources: Any = None  # OCI linux.resources, applied by sandbox.cgroups.oci
    seccomp_log: bool = False  # SECCOMP_FILTER_FLAG_LOG
    new_keyring: str | None = None  # the workload joins a new session keyring of this name
    seccomp_agent: tuple[str, str] | None = None  # OCI (listenerPath, listenerMetadata): the listener's destination
    annotations: dict | None = None  # an OCI bundle's, for the policy that checks a plan (org.sandbox.*)

    def replace(self, **changes) -> "LaunchPlan":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class CapabilitySets:
    """The five capability sets of an OCI process, as names (CAP_*)."""

    bounding: tuple[str, ...] = ()
    effective: tuple[str, ...] = ()
    inheritable: tuple[str, ...] = ()
    permitted: tuple[str, ...] = ()
    ambient: tuple[str, ...] = ()


@dataclass(frozen=True)
class IdMappings:
    """Id maps of any number of ranges (container id, host id, size), as OCI bundles give them.
    `setgroups` is what /proc/PID/setgroups gets: "deny" unless the writer is privileged."""

    uid_ranges: tuple[tuple[int, int, int], ...]
    gid_ranges: tuple[tuple[int, int, int], ...]
    setgroups: str = "deny"

    def uid_map(self) -> str:
        return "".join(f"{inside} {host} {size}\n" for inside, host, size in self.uid_ranges)

    def gid_map(self) -> str:
        return "".join(f"{inside} {host} {size}\n" for inside, host, size in self.gid_ranges)

    def host_uid_of(self, uid: int) -> int | None:
        for inside, host, size in self.uid_ranges:
            if inside <= uid < inside + size:
                return host + uid - inside
        return None


def build_env(profile: Profile, environ: dict | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    env = {"PATH": DEFAULT_PATH, "HOME": profile.process.cwd}
    hidden = {secret.env for secret in profile.secrets if secret.env}  # [[secrets]]: a file, never a variable
    for pattern in profile.process.env_passthrough:
        for name, value in environ.items():
            if fnmatch.fnmatchcase(name, pattern) and name not in hidden:
                env[name] = value
    env.update(profile.process.env)
    return env


def with_terminal_type(env: dict[str, str], tty: bool) -> dict[str, str]:
    """With --tty the caller's terminal is the workload's: its TERM describes it (unless the
    profile says otherwise); without one, programs are told there is no capable terminal."""
    if "TERM" not in env:
        env["TERM"] = os.environ.get("TERM", "dumb") if tty else "dumb"
    return env


def cgroup_limits(profile: Profile):
    from .cgroups import CgroupLimits
    limits = profile.limits
    return CgroupLimits(memory=limits.memory, swap=limits.swap, memory_high=limits.memory_high,
                        cpus=limits.cpus, cpu_weight=limits.cpu_weight, pids=limits.pids,
                        io_weight=limits.io_weight, required=frozenset(limits.required),
                        io_max=tuple((e.device, e.read_bps, e.write_bps, e.read_iops, e.write_iops)
                                     for e in limits.io_max))


def _seccomp(profile: Profile):
    """The profile's policy; under an [exec] allow list, with memfd_create limited to
    MFD_NOEXEC_SEAL (Landlock cannot see memfds: see execlist.memfd_hardened)."""
    if profile.exec.allow is None:
        return profile.seccomp
    from .execlist import memfd_hardened
    return memfd_hardened(profile.seccomp)


@per_profile
def _profile_plan(profile: Profile) -> LaunchPlan:
    """The parts of a profile's plan that do not depend on one launch's command or terminal
    (kept while the profile lives: CI systems launch the same profile many times)."""
    ns = profile.namespaces
    id_map = namespaces.id_map_for(profile.process) if ns.user else None
    return LaunchPlan(
        name=profile.name, argv=profile.process.command, env=build_env(profile), cwd=profile.process.cwd,
        uid=profile.process.user, gid=profile.process.group, umask=profile.process.umask, id_map=id_map,
        new_user_ns=ns.user, unshare_flags=namespaces.unshare_flags(ns, profile.network.mode),
        new_cgroup_ns=ns.cgroup, new_pid_ns=ns.pid,
        new_net_ns=namespaces.creates_network_namespace(ns, profile.network.mode),
        mounts=None,
        hostname=profile.process.hostname if ns.uts else None, rlimits=profile.limits.rlimits,
        keep_caps=profile.capabilities.keep, new_session=profile.process.new_session,
        landlock_rules=landlock.rules_for(profile), landlock_best_effort=profile.landlock.best_effort,
        seccomp=_seccomp(profile), cgroup_limits=cgroup_limits(profile), timeout=profile.limits.timeout,
        kill_after=profile.limits.kill_after, profile=profile)


def plan_for(profile: Profile, argv=None, *, tty: bool = False) -> LaunchPlan:
    """The plan that runs `argv` (default: the profile's command) under `profile`.

    Raises ValueError when the profile's ids would map the sandbox to host root."""
    base = _profile_plan(profile)
    # No mount plan here: the launch makes it from the bind sources as it checked and opened them
    # (sandbox/sources.py), at create.
    return base.replace(argv=tuple(argv) if argv else base.argv, env=with_terminal_type(dict(base.env), tty))
