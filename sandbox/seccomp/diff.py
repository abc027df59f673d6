"""How a seccomp policy is wider than the built-in `default`: what `sandbox lint` reports and
`sandbox import docker-seccomp` prints.

    for widening in widenings(policy):          # baseline: default_policy()
        widening.kind      "syscall"         a call the default denies is allowed (maybe only for some arguments)
                           "arguments"       argument rules removed or widened (clone flags, socket families, ioctl...)
                           "architecture"    an ABI added (x86 and x32 on x86_64)
                           "default-action"  calls the policy does not name are allowed
                           "unconfined"      no filter at all
        widening.subject   the syscall, architecture or "default_action"
        widening.risk      "danger" or "warning"
        widening.message   one line: what is allowed now, against what the default does, and why it matters

Only widenings are reported: a policy that denies more (strict, a learned allowlist) has none. The
comparison is made on the resolved per-syscall decisions (plan.py), the same ones the compiler
emits, so rules written in any order, groups, Docker imports and inline policies compare alike.
Argument rules are compared on sample arguments built from every constant either policy tests
(and each flag bit of a mask, and the value with high bits set, as a 64-bit compare would miss):
an argument the policy allows and the default refuses is reported as a witness, named where the
meaning is known (AF_PACKET, CLONE_NEWUSER, TIOCSTI).
"""
from __future__ import annotations

import functools
import itertools

from ..compiled_dataclass import dataclass
from . import groups as _groups
from . import syscalls as _syscalls
from .model import Action, SeccompPolicy
from .plan import SyscallPlan, build_plan

KINDS = ("unconfined", "default-action", "architecture", "syscall", "arguments")

# What allowing these gives a workload; anything else allowed beyond the default is a warning.
_DANGEROUS_GROUPS = (
    ("@debug", "tracing other processes, reading or writing their memory, profiling the kernel"),
    ("@namespaces", "creating or joining namespaces: nested user namespaces open kernel code the "
                    "sandbox otherwise keeps out of reach"),
    ("@mount", "mounting file systems and changing the root"),
    ("@keyring", "the kernel keyring"),
    ("@io-uring", "io_uring: a large kernel attack surface whose operations seccomp never sees"),
    ("@module", "loading kernel code"),
    ("@reboot", "kexec and reboot: loading kernel code"),
    ("@raw-io", "raw I/O port and PCI access"),
)
_DANGEROUS_CALLS = {
    "bpf": "eBPF programs and maps: a large kernel attack surface",
    "userfaultfd": "stalling kernel page faults at will, a common exploit aid",
    "perf_event_open": "profiling the kernel: a large attack surface and a side channel",
    "clone3": "clone3's flags are in memory seccomp cannot read, so namespaces could be created",
    "socketcall": "the i386 socket multiplexer, which bypasses the socket family rules",
    "open_by_handle_at": "opening host files by handle, past the mount layout",
    "process_vm_readv": "reading other processes' memory",
    "process_vm_writev": "writing other processes' memory",
}
# Architectures whose system call tables a native process can reach (x86_64 runs both).
_REACHABLE_FOREIGN = {"x86_64": ("x86", "x32")}
_CLONE_NAMESPACE_FLAGS = {0x00020000: "CLONE_NEWNS", 0x02000000: "CLONE_NEWCGROUP",
                          0x04000000: "CLONE_NEWUTS", 0x08000000: "CLONE_NEWIPC",
                          0x10000000: "CLONE_NEWUSER", 0x20000000: "CLONE_NEWPID",
                          0x40000000: "CLONE_NEWNET"}
_IOCTLS = {0x5412: "TIOCSTI", 0x541C: "TIOCLINUX", 0x5423: "TIOCSETD"}
_PRCTLS = {35: "PR_SET_MM", 53: "PR_SET_SPECULATION_CTRL", 57: "PR_SET_IO_FLUSHER"}
_LOW32 = 0xFFFFFFFF
_MAX_SAMPLES = 50_000
_SHOWN = 24


@dataclass(frozen=True)
class Widening:
    """One way a policy allows more than the baseline (the built-in default)."""

    kind: str
    subject: str
    risk: str
    message: str
    reason: str = ""  # why it matters, when it is a danger ("tracing other processes, ...")


def _dangerous() -> dict[str, str]:
    out = {}
    for group, why in _DANGEROUS_GROUPS:
        for name in _groups.expand_group(group):
            out.setdefault(name, why)
    out.update(_DANGEROUS_CALLS)
    return out


def _allows(action: Action) -> bool:
    return action.kind in ("allow", "log")


def _arch_names(policy: SeccompPolicy) -> list[str]:
    native = _syscalls.native_arch()
    return list(dict.fromkeys(native if a == "native" else a for a in policy.architectures))


def widenings(policy: SeccompPolicy | None, baseline: SeccompPolicy | None = None) -> list[Widening]:
    """Every way `policy` allows more than `baseline` (default: the built-in default policy),
    most severe first; [] when it allows nothing more."""
    if baseline is None:
        from .builtin import default_policy
        baseline = default_policy()
    if policy is baseline:
        return []
    return list(_widenings(policy, baseline))


@functools.lru_cache(maxsize=32)  # lint runs at every launch (the audit record): policies repeat
def _widenings(policy: SeccompPolicy | None, baseline: SeccompPolicy) -> tuple[Widening, ...]:
    if policy is None:
        return (Widening("unconfined", "policy", "danger",
                         "no system call filter: the whole kernel interface is exposed",
                         "the whole kernel interface is exposed"),)
    found: list[Widening] = []
    if _allows(policy.default_action) and not _allows(baseline.default_action):
        found.append(Widening("default-action", "default_action", "danger",
                              f"{policy.default_action} for every call the policy does not name "
                              f"(default: {baseline.default_action}): new and rarely used system calls "
                              "reach the kernel"))
    native = _syscalls.native_arch()
    known = set(_arch_names(baseline))
    for arch in _arch_names(policy):
        if arch in known:
            continue
        reachable = arch in _REACHABLE_FOREIGN.get(native, ())
        found.append(Widening(
            "architecture", arch, "danger" if reachable else "warning",
            f"the {arch} ABI is accepted (default: {', '.join(sorted(known))} only): " +
            ("a second system call table a native process can enter (int $0x80 or the x32 bit), "
             "where filters have been bypassed before and compat code has had many kernel bugs"
             if reachable else "its calls are filtered by the same rules")))
    found += _syscall_widenings(policy, baseline)
    order = {kind: i for i, kind in enumerate(KINDS)}
    return tuple(sorted(found, key=lambda w: (w.risk != "danger", order[w.kind], w.subject)))


def _syscall_widenings(policy: SeccompPolicy, baseline: SeccompPolicy) -> list[Widening]:
    plans, base_plans = build_plan(policy), build_plan(baseline)
    names = set(plans) | set(base_plans)
    if _allows(policy.default_action):
        names |= set(_syscalls.native_table().values())
    dangerous = _dangerous()
    found = []
    for name in sorted(names):
        plan = plans.get(name) or SyscallPlan(policy.default_action)
        base = base_plans.get(name) or SyscallPlan(baseline.default_action)
        if (plan.fallback, plan.cases) == (base.fallback, base.cases):
            continue  # decided alike
        if _allows(base.fallback) and not base.cases:
            continue  # the default allows it outright: nothing to widen
        base_allows = _allows(base.fallback) or any(_allows(a) for _, a in base.cases)
        plan_allows = _allows(plan.fallback) or any(_allows(a) for _, a in plan.cases)
        if not plan_allows:
            continue
        why = dangerous.get(name, "")
        if not base_allows:
            when = "" if _allows(plan.fallback) else " when " + _cases_text(plan, allowing=True)
            found.append(Widening("syscall", name, "danger" if why else "warning",
                                  f"{name} is allowed{when}; the default denies it ({base.fallback})"
                                  + (f": {why}" if why else ""), why))
            continue
        indexes, pools = _pools(name, plan, base)
        witnesses = [args for args in _samples(indexes, pools)
                     if _allows(plan.decide(args)) and not _allows(base.decide(args))]
        if not witnesses:
            continue
        risk = "danger" if why or _creates_namespaces(name, witnesses) else "warning"
        if name == "clone" and risk == "danger":
            why = "clone may create namespaces (CLONE_NEW* flags)"
        if _allows(plan.fallback) and not plan.cases:
            what = f"{name} is allowed with any arguments; the default only " + _base_text(base)
        else:
            shown = _show_witnesses(name, witnesses, indexes, pools)
            more = f" and {len(shown) - _SHOWN} more" if len(shown) > _SHOWN else ""
            what = (f"{name} is allowed for arguments the default refuses: "
                    + "; ".join(shown[:_SHOWN]) + more)
        found.append(Widening("arguments", name, risk, what + (f": {why}" if why else ""), why))
    return found


def _base_text(base: SyscallPlan) -> str:
    if _allows(base.fallback):
        return "with these refused: " + _cases_text(base, allowing=False)
    return "when " + _cases_text(base, allowing=True)


def _cases_text(plan: SyscallPlan, *, allowing: bool) -> str:
    cases = [" and ".join(str(c) for c in conditions) for conditions, action in plan.cases
             if _allows(action) == allowing]
    text = " or ".join(f"({c})" if " and " in c else c for c in cases[:_SHOWN])
    return text + (f" or {len(cases) - _SHOWN} more" if len(cases) > _SHOWN else "")


def _indexes(*plans: SyscallPlan) -> list[int]:
    return sorted({c.index for plan in plans for conditions, _ in plan.cases for c in conditions})


def _pools(name: str, plan: SyscallPlan, base: SyscallPlan) -> tuple[list[int], list[list[int]]]:
    """The argument indexes either plan tests, and for each the values worth trying: every
    constant compared with, its neighbours, the same with high bits set, each bit of a mask."""
    indexes = _indexes(plan, base)
    values: dict[int, set[int]] = {i: {0, (1 << 64) - 1} for i in indexes}
    for conditions, _ in plan.cases + base.cases:
        for c in conditions:
            found = values[c.index]
            for v in (c.value, c.value + 1, c.value - 1):
                if 0 <= v < 1 << 64:
                    found.update((v, v | (1 << 32)))
            if c.mask is not None and c.mask != _LOW32:  # a flag mask (clone): each flag alone
                for bit in range(64):
                    if c.mask >> bit & 1:
                        found.update((1 << bit, c.value | (1 << bit)))
    if name in ("socket", "socketpair") and 0 in values:
        values[0].update(range(46))  # every address family the kernel knows
    return indexes, [sorted(values[i]) for i in indexes]


def _samples(indexes: list[int], pools: list[list[int]]):
    total = 1
    for pool in pools:
        total *= len(pool)
    if total > _MAX_SAMPLES:  # vary one argument at a time
        for index, pool in zip(indexes, pools):
            for value in pool:
                args = [0] * 6
                args[index] = value
                yield tuple(args)
        return
    for combo in itertools.product(*pools):
        args = [0] * 6
        for index, value in zip(indexes, combo):
            args[index] = value
        yield tuple(args)


def _show_witnesses(name: str, witnesses, indexes: list[int], pools: list[list[int]]) -> list[str]:
    """Witnesses grouped by the first argument tested: `arg0=17 (AF_PACKET)` when every value
    tried for the others is allowed too, else the first witness in full."""
    first, rest = indexes[0], indexes[1:]
    per_value: dict[int, list] = {}
    for args in witnesses:
        per_value.setdefault(args[first], []).append(args)
    everything = 1
    for pool in pools[1:]:
        everything *= len(pool)
    shown = []
    # Values with a name first (AF_PACKET says more than 0x100000029), then by value.
    for value, group in sorted(per_value.items(), key=lambda item: (not _label(name, first, item[0] & _LOW32), item[0])):
        if value > _LOW32 and value & _LOW32 in per_value and value != (1 << 64) - 1:
            continue  # the same value with high bits set: the low one says it
        if len(group) >= everything or not rest:
            shown.append(f"arg{first}={_show_value(name, first, value)}")
        else:
            shown.append(_show_args(name, group[0], indexes))
    return shown


def _creates_namespaces(name: str, witnesses) -> bool:
    if name not in ("clone", "unshare"):
        return False
    mask = sum(_CLONE_NAMESPACE_FLAGS)
    return any(args[0] & mask for args in witnesses)


def _show_args(name: str, args: tuple[int, ...], indexes: list[int]) -> str:
    return ", ".join(f"arg{i}={_show_value(name, i, args[i])}" for i in indexes)


def _show_value(name: str, index: int, value: int) -> str:
    label = _label(name, index, value & _LOW32)
    if value > _LOW32 and label:
        label += ", high bits set"
    shown = str(value) if value < 64 else hex(value)
    return f"{shown} ({label})" if label else shown


def _label(name: str, index: int, value: int) -> str:
    if name in ("socket", "socketpair") and index == 0:
        return _families().get(value, "")
    if name in ("clone", "unshare") and index == 0:
        return "|".join(flag for bit, flag in _CLONE_NAMESPACE_FLAGS.items() if value & bit)
    if name == "ioctl" and index == 1:
        return _IOCTLS.get(value, "")
    if name == "prctl" and index == 0:
        return _PRCTLS.get(value, "")
    return ""


def _families() -> dict[int, str]:
    import socket
    names = {int(f): f.name for f in socket.AddressFamily}
    names.update({38: "AF_ALG", 40: "AF_VSOCK"})  # not exported by every Python build
    return names


def describe(found: list[Widening]) -> list[str]:
    """One line per widening, for terminals: `danger  ptrace is allowed; ...`."""
    return [f"{w.risk:<7} {w.message}" for w in found]
