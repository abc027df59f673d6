"""The runtime floor's seccomp filter: loaded below an engine's own filter (sandbox-runtime).

An engine's filter (Docker's, podman's, a Pod's seccompProfile) decides what a container may call;
the floor filter, loaded first, guarantees that whatever the engine's says, these stay denied. The
kernel runs every filter of a process and applies the most restrictive result (kill before errno
before allow; between two errnos the filter loaded last, the engine's, picks the number).

    floor_policy("default")   a denylist made of the built-in `default` policy's own rules for:
                              namespace creation (unshare, setns, clone with CLONE_NEW* flags;
                              clone3 ENOSYS), mounting (mount, umount, pivot_root, the new mount
                              API; chroot stays allowed: it changes no mount), bpf,
                              perf_event_open, the kernel keyring, userfaultfd, io_uring, kexec,
                              kernel modules, swap, raw I/O ports, open_by_handle_at, the LDT and
                              vm86; and the i386/x32 ABIs (the filter accepts the native ABI only:
                              a call from another kills the process), as `default` does.
    floor_policy("strict")    the built-in `strict` policy itself (an allowlist)

A container whose config.json has no filter gets the `default` policy as its filter instead (a
denylist under it would add nothing).
"""
from __future__ import annotations

import functools

from .builtin import default_policy, strict_policy
from .groups import expand
from .model import ALLOW, Rule, SeccompPolicy

# What the floor keeps denied, as `default` denies it (groups as sandbox.seccomp.groups defines them).
FLOOR_SYSCALLS = ("@mount", "@namespaces", "clone", "clone3", "bpf", "perf_event_open", "@keyring", "userfaultfd",
                  "@io-uring", "kexec_load", "kexec_file_load", "@module", "@swap", "@raw-io", "open_by_handle_at",
                  "@cpu-emulation")
NOT_DENIED = ("chroot",)  # in @mount, but it mounts nothing: sshd's privilege separation needs it


@functools.lru_cache(maxsize=None)
def floor_syscalls() -> frozenset[str]:
    return frozenset(set(expand(FLOOR_SYSCALLS)) - set(NOT_DENIED))


@functools.lru_cache(maxsize=None)
def floor_policy(name: str = "default") -> SeccompPolicy | None:
    """The floor filter's policy for a floor's `seccomp.floor` setting; None for "none"."""
    if name == "none":
        return None
    if name == "strict":
        return strict_policy()
    if name != "default":
        raise ValueError(f"unknown seccomp floor {name!r}")
    from .plan import build_plan
    wanted = floor_syscalls()
    rules = []
    for syscall, plan in sorted(build_plan(default_policy()).items()):
        if syscall not in wanted:
            continue
        rules.append(Rule((syscall,), plan.fallback, comment="the runtime floor (as `default` decides it)"))
        rules += [Rule((syscall,), action, conditions) for conditions, action in plan.cases]
    missing = wanted - {rule.syscalls[0] for rule in rules}
    if missing:  # `default` denies them by its default action: say so explicitly
        rules.insert(0, Rule(tuple(sorted(missing)), default_policy().default_action, comment="the runtime floor"))
    return SeccompPolicy("denylist", ALLOW, tuple(rules), ("native",), "floor")
