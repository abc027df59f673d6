"""Violation reporting through seccomp user notification (Linux >= 5.5).

    reporting = reporting_policy(policy)          # errno denials become "notify"
    bpf = compile_bpf(reporting)
    child:  fd = confine_self(bpf, new_listener=True); send fd to the parent; execve
    parent: violations = Recorder(fd, policy).run_until(stop_event)

The Recorder answers each notification with the errno the original policy would
have returned, so the workload sees the same results as without reporting, and
records the syscall name, a count and the first arguments. With ``learn=True``
it lets every call proceed instead (SECCOMP_USER_NOTIF_FLAG_CONTINUE): that is
for learning what a workload needs and is no sandbox at all.
Kill and trap actions are kept as they are; they are not reported here.
"""
from __future__ import annotations

import ctypes
import errno as _errno
import os
import select
import threading
import time
from dataclasses import field

from ..compiled_dataclass import dataclass
from . import syscalls as _syscalls
from .model import Action, Rule, SeccompPolicy
from .plan import build_plan

NOTIFY = Action("notify")
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
# _IOWR('!', 0, struct seccomp_notif), _IOWR('!', 1, struct seccomp_notif_resp)
SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101
SECCOMP_IOCTL_NOTIF_ID_VALID = 0x40082102  # _IOW('!', 2, __u64)


class _Data(ctypes.Structure):
    _fields_ = [("nr", ctypes.c_int), ("arch", ctypes.c_uint32),
                ("instruction_pointer", ctypes.c_uint64), ("args", ctypes.c_uint64 * 6)]


class _Notif(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("pid", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("data", _Data)]


class _Resp(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("val", ctypes.c_int64), ("error", ctypes.c_int32),
                ("flags", ctypes.c_uint32)]


# ioctl with its argument types declared once: the listener's thread calls it two or three times
# for every notification, and ctypes' per-call guessing is measurable there.
_ioctl = ctypes.CDLL(None, use_errno=True).ioctl
_ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_ioctl.restype = ctypes.c_int
_NOTIF_SIZE = ctypes.sizeof(_Notif)


def _notifying(action: Action) -> Action:
    return NOTIFY if action.kind == "errno" else action


def reporting_policy(policy: SeccompPolicy) -> SeccompPolicy:
    """The same policy with every errno denial (rules and default) turned into notify."""
    rules = tuple(Rule(r.syscalls, _notifying(r.action), r.args, r.comment) for r in policy.rules)
    return SeccompPolicy(policy.mode, _notifying(policy.default_action), rules,
                         policy.architectures, policy.name + " (reporting)")


def _reported(action: Action) -> Action:
    return NOTIFY if action.kind == "errno" and action.errno != _errno.ENOSYS else action


def _observed(action: Action) -> Action:
    return NOTIFY if action.kind in ("allow", "log", "notify") else action


def observing_policy(policy: SeccompPolicy | None, observed) -> SeccompPolicy:
    """For live events (sandbox.monitor): `policy` reporting its denials, and notifying on the
    `observed` calls wherever it would let them run, which the listener then answers with
    SECCOMP_USER_NOTIF_FLAG_CONTINUE. Kill and trap rules stay as they are. The decision the
    listener applies is always the original policy's (Recorder._decide), so the workload sees
    exactly what it would without observation. None (unconfined): allow all, observe those."""
    if policy is None:
        return SeccompPolicy("denylist", Action("allow"), (Rule(tuple(sorted(observed)), NOTIFY, comment="observed"),),
                             ("native",), "unconfined (observed)")
    # Denials are reported live, but not the ENOSYS answers: those (clone3, openat2, socketcall)
    # are how a policy makes libc fall back to a call it can inspect, made at every fork, and
    # each notification stops its caller until the launcher answers.
    rules = tuple(Rule(r.syscalls, _reported(r.action), r.args, r.comment) for r in policy.rules)
    base = SeccompPolicy(policy.mode, _reported(policy.default_action), rules, policy.architectures, policy.name)
    plans = build_plan(base)
    rules = list(base.rules)
    for name in sorted(observed):
        if not _syscalls.is_known(name):
            continue
        plan = plans.get(name)
        if plan is None:
            if base.default_action.kind in ("allow", "log"):
                rules.append(Rule((name,), NOTIFY, comment="observed"))
            continue  # the default already notifies (a reported denial) or kills
        # Appended last, an unconditional rule replaces what came before for this call; the
        # conditional cases follow it, so the plan is the same with allow turned into notify.
        rules.append(Rule((name,), _observed(plan.fallback), comment="observed"))
        rules += [Rule((name,), _observed(action), conditions) for conditions, action in plan.cases]
    return SeccompPolicy(base.mode, base.default_action, tuple(rules), base.architectures,
                         policy.name + " (observed)")


@dataclass
class Violation:
    """A denied syscall: how often, and the first call's pid and arguments."""

    syscall: str
    action: str
    count: int = 0
    first_pid: int = 0
    first_args: tuple[int, ...] = ()
    first_seen: float = field(default_factory=time.monotonic)
    # For the calls whose meaning is in one argument (LEARNED_ARGUMENTS): every value seen.
    values: set[int] = field(default_factory=set)
    # Learning, execve/execveat: the files executed and their interpreters (learn.executed_paths).
    paths: set[str] = field(default_factory=set)
    # Learning, connect/bind/listen/accept: "connect tcp 127.0.0.1:8080" (monitor.facts.destination).
    destinations: set[str] = field(default_factory=set)


# The argument that says what a call does: socket families, ioctl requests, clone flags, ...
# (index, mask); learning mode records each value seen so a learned policy can allow just those.
MAX_REPORTED_VALUES = 64  # distinct argument values kept per system call outside learn mode
LEARNED_ARGUMENTS = {"socket": (0, 0xFFFFFFFF), "socketpair": (0, 0xFFFFFFFF), "ioctl": (1, 0xFFFFFFFF),
                     "clone": (0, 0xFFFFFFFF), "personality": (0, 0xFFFFFFFF), "prctl": (0, 0xFFFFFFFF)}


LEARNED_DESTINATIONS = ("connect", "bind", "listen", "accept", "accept4")
ALLOWED = Action("allow")


class Recorder:
    """Answers and records the notifications of one listener fd (owns and closes it).

    One listener per filter (the kernel allows no second one in a chain), so this one thread
    serves every use: report mode answers denials with the policy's errno; learning answers
    CONTINUE to every call; with an `observer` (sandbox.monitor.Watch, live events), the calls it
    observes are answered CONTINUE where the policy allows them, the policy's errno where it
    denies them, after the observer has read their facts while the caller waits."""

    def __init__(self, fd: int, policy: SeccompPolicy | None, *, learn: bool = False, observer=None,
                 kill=None):
        self.fd, self.policy, self.learn = fd, policy, learn
        self.observer = observer
        self.kill = kill  # called (before answering) when the observer says the sandbox must end
        self._observed = observer.syscalls if observer is not None else frozenset()
        self._plans = build_plan(policy) if policy is not None else {}
        self._seen: dict[str, Violation] = {}
        self._lock = threading.Lock()
        self._names: dict[tuple[int, int], str] = {}
        self._notif = _Notif()
        self._resp = _Resp()
        self._id = ctypes.c_uint64()

    def _decide(self, name: str, args) -> Action:
        if self.policy is None:
            return ALLOWED
        plan = self._plans.get(name)
        return plan.decide(args) if plan else self.policy.default_action

    def _answer(self, notif: _Notif) -> None:
        args = tuple(notif.data.args)
        key = (notif.data.nr, notif.data.arch)
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = _syscalls.name_of(*key)
        action = self._decide(name, args)
        resp = self._resp
        resp.id, resp.val, resp.error, resp.flags = notif.id, 0, 0, 0
        executed = ()
        destination = None
        denied = not self.learn and action.kind not in ("allow", "log", "notify")
        if self.learn or not denied:
            resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE
        else:
            resp.error = -(action.errno if action.kind == "errno" else _errno.EPERM)
        if self.learn and name in ("execve", "execveat"):  # read while the caller waits for this answer
            from .learn import executed_paths
            executed = executed_paths(notif.pid, name, args)
        elif self.learn and name in LEARNED_DESTINATIONS:
            from .learn import destination_of
            destination = destination_of(notif.pid, name, args)
        if self.observer is not None and (denied or name in self._observed):
            try:
                notif_id = notif.id
                end_now = self.observer.observe(notif.pid, name, args, action, self.learn,
                                                lambda: self._still_waiting(notif_id))
            except Exception:  # an observation that fails must never stop the workload
                end_now = False
            if end_now and self._still_waiting(notif_id) and self.kill is not None:
                self.kill()  # before the answer: the call never runs
        if not (self.learn or denied):
            self._send(resp)
            if self.observer is not None:
                try:
                    self.observer.after_answer()
                except Exception:
                    pass
            return
        with self._lock:
            v = self._seen.get(name)
            if v is None:
                v = self._seen[name] = Violation(name, str(action), 0, notif.pid, args)
            v.count += 1
            if name in LEARNED_ARGUMENTS:
                index, mask = LEARNED_ARGUMENTS[name]
                # A report keeps a bounded sample: a workload must not grow the launcher at will
                # (200,000 socket(100+i) calls would otherwise keep 200,000 values). Learning is
                # for trusted runs, and needs every value.
                if self.learn or len(v.values) < MAX_REPORTED_VALUES:
                    v.values.add(args[index] & mask)
            v.paths.update(executed)  # learning only: see learn.executed_paths
            if destination:
                v.destinations.add(destination)
        self._send(resp)

    def _send(self, resp: _Resp) -> None:
        # ENOENT: the caller died or was interrupted meanwhile; nothing to answer.
        if _ioctl(self.fd, SECCOMP_IOCTL_NOTIF_SEND, ctypes.addressof(resp)) < 0:
            if ctypes.get_errno() != _errno.ENOENT:
                raise OSError(ctypes.get_errno(), "SECCOMP_IOCTL_NOTIF_SEND failed")

    def _still_waiting(self, notif_id: int) -> bool:
        """The notification is still pending: its caller has not died (so its pid named it)."""
        self._id.value = notif_id
        return _ioctl(self.fd, SECCOMP_IOCTL_NOTIF_ID_VALID, ctypes.addressof(self._id)) == 0

    def _receive_one(self) -> None:
        notif = self._notif
        ctypes.memset(ctypes.addressof(notif), 0, _NOTIF_SIZE)  # the kernel wants it zeroed
        if _ioctl(self.fd, SECCOMP_IOCTL_NOTIF_RECV, ctypes.addressof(notif)) < 0:
            err = ctypes.get_errno()
            if err in (_errno.ENOENT, _errno.EINTR):
                return
            raise OSError(err, "SECCOMP_IOCTL_NOTIF_RECV failed")
        self._answer(notif)

    def run_until(self, stop_event: threading.Event, poll_interval: float = 0.1) -> list[Violation]:
        """Serve notifications until ``stop_event`` is set or every filtered task is gone."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        try:
            while not stop_event.is_set():
                for _, events in poller.poll(int(poll_interval * 1000)):
                    if events & select.POLLIN:
                        self._receive_one()
                    elif events & (select.POLLHUP | select.POLLERR):
                        return self.violations()
        finally:
            os.close(self.fd)
        return self.violations()

    def violations(self) -> list[Violation]:
        with self._lock:
            return sorted(self._seen.values(), key=lambda v: v.first_seen)


def format_violations(violations: list[Violation]) -> str:
    """One line per denied syscall, for the end-of-run report."""
    return "\n".join(f"{v.syscall}: {v.action} x{v.count} (first: pid {v.first_pid}, "
                     f"args {', '.join(hex(a) for a in v.first_args[:3])})" for v in violations)
