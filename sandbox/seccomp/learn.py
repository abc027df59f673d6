"""Learning mode: find out which denied calls a workload needs, and suggest a policy.

    bpf = compile_bpf(reporting_policy(base))           # notify instead of errno
    child: fd = confine_self(bpf, new_listener=True) ... execve
    parent: seen = Recorder(fd, base, learn=True).run_until(stop)   # calls proceed!
    policy, refused = suggest_policy(base, seen)

While learning, every call the base would deny is let through (the recorder
answers "continue"): run only trusted workloads this way.
"""
from __future__ import annotations

import os

from . import groups as _groups
from .model import ALLOW, Rule, SeccompPolicy
from .notify import Violation
from .plan import build_plan

# Never granted automatically: a person should decide about these.
NEVER_AUTO_ALLOW = ("@mount", "@module", "@reboot", "@raw-io", "@swap", "@clock", "@keyring",
                    "@debug", "@namespaces", "@cpu-emulation", "@io-uring", "bpf", "perf_event_open",
                    "userfaultfd", "clone3", "socketcall")


def suggest_policy(base: SeccompPolicy, seen: list[Violation]) -> tuple[SeccompPolicy, list[str]]:
    """``base`` plus an allow rule for the denied calls it is safe to grant.

    Returns (policy, refused): refused lists calls left denied, either sensitive
    (NEVER_AUTO_ALLOW) or restricted by arguments in ``base`` -- for those, write a
    [[seccomp.rules]] entry with the needed argument values by hand.
    """
    sensitive = set(_groups.expand(NEVER_AUTO_ALLOW))
    plans = build_plan(base)
    granted, refused = [], []
    for v in seen:
        if v.syscall in sensitive:
            refused.append(f"{v.syscall}: sensitive, decide by hand")
        elif v.syscall in plans and plans[v.syscall].cases:
            refused.append(f"{v.syscall}: restricted by arguments (first call: "
                           f"{', '.join(hex(a) for a in v.first_args[:3])})")
        elif v.syscall not in granted:
            granted.append(v.syscall)
    if not granted:
        return base, refused
    rule = Rule(tuple(sorted(granted)), ALLOW, comment="learned")
    return base.with_rules(rule, name=f"{base.name} (learned)"), refused


# Allowed while learning so the listener fd can reach the supervisor before anything is notified.
LEARNING_ALLOWED = ("sendmsg",)


def learning_policy(architectures: tuple[str, ...] = ("native",)) -> SeccompPolicy:
    """Notify on every system call (the supervisor lets each one proceed and records it)."""
    from .model import Action
    return SeccompPolicy("allowlist", Action("notify"), (Rule(LEARNING_ALLOWED, ALLOW, comment="fd hand-over"),),
                         architectures, "learning")


def minimal_policy(base: SeccompPolicy, seen: list[Violation], name: str = "learned") -> SeccompPolicy:
    """An allowlist of exactly the calls seen while learning.

    Calls whose meaning is in one argument (socket families, ioctl requests, prctl options,
    personality: notify.LEARNED_ARGUMENTS) are allowed only with the values seen, and only those
    values `base` allows too; clone keeps `base`'s rules (its flags differ between a thread and a
    process). Anything else that `base` restricts by argument keeps `base`'s rules."""
    from .builtin import low32_is
    from .notify import LEARNED_ARGUMENTS
    plans = build_plan(base)
    recorded = {v.syscall: v for v in seen}
    needed = set(recorded) | set(LEARNING_ALLOWED)
    restricted = {s for rule in base.rules if rule.args for s in _groups.expand(rule.syscalls)}
    narrowed = {s for s in needed & set(LEARNED_ARGUMENTS) if s != "clone" and recorded.get(s) and recorded[s].values}
    rules = [Rule(tuple(sorted(needed - restricted - narrowed)), ALLOW, comment="learned")]
    for syscall in sorted(narrowed):
        index, _ = LEARNED_ARGUMENTS[syscall]
        plan = plans.get(syscall)
        allowed = sorted(value for value in recorded[syscall].values
                         if plan is None or plan.decide(_args_with(index, value)).kind == "allow")
        otherwise = plan.fallback if plan is not None and plan.fallback.kind != "allow" else base.default_action
        rules.append(Rule((syscall,), otherwise, comment="learned: only the values seen"))
        rules += [Rule((syscall,), ALLOW, (low32_is(index, value),)) for value in allowed]
    # The base's rules, cut down to the argument-restricted calls the workload made, in order.
    for rule in base.rules:
        kept = set(_groups.expand(rule.syscalls)) & restricted & needed - narrowed
        if kept:
            rules.append(Rule(tuple(sorted(kept)), rule.action, rule.args, rule.comment))
    return SeccompPolicy("allowlist", base.default_action, tuple(rules), base.architectures, name)


def _args_with(index: int, value: int) -> tuple[int, ...]:
    args = [0] * 6
    args[index] = value
    return tuple(args)


# ---------------------------------------------------------------- executables (the [exec] allow list)

EXEC_CALLS = ("execve", "execveat")
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
MAX_PATH = 4096


def executed_paths(pid: int, syscall: str, args) -> list[str]:
    """For learning only: the file an execve/execveat notification is about to run, and the
    interpreters the kernel will load for it (ELF PT_INTERP, #! lines), as paths inside the
    sandbox; [] when the file does not exist there (a PATH search trying each directory).

    Read from the stopped caller's memory (/proc/PID/mem) and resolved in its root
    (/proc/PID/root, openat2 with RESOLVE_IN_ROOT), while the call waits for our answer. Learning
    trusts the workload: a path read this way could change before the kernel reads it, which is
    why nothing but learning uses it (the allow list itself is enforced by Landlock)."""
    from .. import execlist
    try:
        if syscall == "execve":
            path, dirfd, flags = _read_string(pid, args[0]), AT_FDCWD, 0
        else:
            path, dirfd, flags = _read_string(pid, args[1]), _signed32(args[0]), args[4]
        if not path and flags & AT_EMPTY_PATH:
            path = os.readlink(f"/proc/{pid}/fd/{dirfd}")
        elif not path.startswith("/"):
            base = os.readlink(f"/proc/{pid}/cwd" if dirfd == AT_FDCWD else f"/proc/{pid}/fd/{dirfd}")
            path = os.path.join(base, path)
        path = os.path.normpath(path)
        root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except (OSError, ValueError):
        return []
    try:
        opener = _opener_in(root)
        try:
            opener(path).close()
        except OSError:
            return []
        return [path] + execlist.interpreter_chain(path, opener)
    finally:
        os.close(root)


def _opener_in(root: int):
    from .. import _libc

    def opener(path: str):
        fd = _libc.openat2(root, path.lstrip("/") or ".", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK,
                           _libc.RESOLVE_IN_ROOT)
        handle = os.fdopen(fd, "rb")
        if not os.path.isfile(f"/proc/self/fd/{fd}"):
            handle.close()
            raise IsADirectoryError(path)
        return handle
    return opener


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _read_string(pid: int, address: int) -> str:
    """A NUL-terminated string at `address` in process `pid`."""
    if not address:
        raise ValueError("NULL path")
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = b""
        while len(data) < MAX_PATH:
            # Stop at page boundaries: the next page may not be mapped.
            chunk = os.pread(fd, 4096 - (address + len(data)) % 4096, address + len(data))
            if not chunk:
                break
            data += chunk
            if b"\0" in chunk:
                break
        return os.fsdecode(data.split(b"\0", 1)[0])
    finally:
        os.close(fd)


def proposed_exec_list(seen: list[Violation]) -> list[str]:
    """The [exec] allow list of a learning run: every file it executed, with its interpreters."""
    paths: set[str] = set()
    for violation in seen:
        if violation.syscall in EXEC_CALLS:
            paths.update(violation.paths)
    return sorted(paths)


# ---------------------------------------------------------------- network destinations (baselines)

def destination_of(pid: int, syscall: str, args) -> str | None:
    """For learning: what a connect/bind/listen/accept is about, as a baseline line
    ("connect tcp 127.0.0.1:8080"); None when it cannot be told. Read like executed_paths."""
    from ..monitor import facts
    try:
        found = facts.network_facts(facts.Process(pid), syscall, args)
    except (OSError, ValueError):
        return None
    if "address" not in found:
        return None
    return facts.destination("accept" if syscall == "accept4" else syscall, found)


def proposed_baseline(seen: list[Violation], argv=()) -> dict:
    """The baseline of a learning run (sandbox.monitor.baseline): every file it executed, with
    its interpreters, and every network destination it used."""
    from ..monitor.baseline import document
    destinations: set[str] = set()
    for violation in seen:
        destinations.update(_general(line) for line in violation.destinations)
    return document(proposed_exec_list(seen), destinations, argv)


def _ephemeral_ports() -> int:
    """The first port the kernel hands out for bind(0) and connect (ip_local_port_range)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _general(line: str) -> str:
    """A port the kernel chose (from the ephemeral range) differs at every run: learned as *."""
    head, sep, port = line.rpartition(":")
    if sep and port.isdigit() and int(port) >= _ephemeral_ports():
        return f"{head}:*"
    return line
