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
from .. import _libc
from . import syscalls as _syscalls
from .model import Action, Rule, SeccompPolicy
from .plan import build_plan

NOTIFY = Action("notify")
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
# _IOWR('!', 0, struct seccomp_notif), _IOWR('!', 1, struct seccomp_notif_resp)
SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101


class _Data(ctypes.Structure):
    _fields_ = [("nr", ctypes.c_int), ("arch", ctypes.c_uint32),
                ("instruction_pointer", ctypes.c_uint64), ("args", ctypes.c_uint64 * 6)]


class _Notif(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("pid", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("data", _Data)]


class _Resp(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("val", ctypes.c_int64), ("error", ctypes.c_int32),
                ("flags", ctypes.c_uint32)]


def _notifying(action: Action) -> Action:
    return NOTIFY if action.kind == "errno" else action


def reporting_policy(policy: SeccompPolicy) -> SeccompPolicy:
    """The same policy with every errno denial (rules and default) turned into notify."""
    rules = tuple(Rule(r.syscalls, _notifying(r.action), r.args, r.comment) for r in policy.rules)
    return SeccompPolicy(policy.mode, _notifying(policy.default_action), rules,
                         policy.architectures, policy.name + " (reporting)")


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


# The argument that says what a call does: socket families, ioctl requests, clone flags, ...
# (index, mask); learning mode records each value seen so a learned policy can allow just those.
MAX_REPORTED_VALUES = 64  # distinct argument values kept per system call outside learn mode
LEARNED_ARGUMENTS = {"socket": (0, 0xFFFFFFFF), "socketpair": (0, 0xFFFFFFFF), "ioctl": (1, 0xFFFFFFFF),
                     "clone": (0, 0xFFFFFFFF), "personality": (0, 0xFFFFFFFF), "prctl": (0, 0xFFFFFFFF)}


class Recorder:
    """Answers and records the notifications of one listener fd (owns and closes it)."""

    def __init__(self, fd: int, policy: SeccompPolicy, *, learn: bool = False):
        self.fd, self.policy, self.learn = fd, policy, learn
        self._plans = build_plan(policy)
        self._seen: dict[str, Violation] = {}
        self._lock = threading.Lock()

    def _decide(self, name: str, args) -> Action:
        plan = self._plans.get(name)
        return plan.decide(args) if plan else self.policy.default_action

    def _answer(self, notif: _Notif) -> None:
        args = tuple(notif.data.args)
        name = _syscalls.name_of(notif.data.nr, notif.data.arch)
        action = self._decide(name, args)
        resp = _Resp(notif.id, 0, 0, 0)
        executed = ()
        if self.learn:
            resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE
            if name in ("execve", "execveat"):  # read while the caller waits for this answer
                from .learn import executed_paths
                executed = executed_paths(notif.pid, name, args)
        else:
            resp.error = -(action.errno if action.kind == "errno" else _errno.EPERM)
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
        # ENOENT: the caller died or was interrupted meanwhile; nothing to answer.
        if _libc.libc.ioctl(self.fd, ctypes.c_ulong(SECCOMP_IOCTL_NOTIF_SEND), ctypes.byref(resp)) < 0:
            if ctypes.get_errno() != _errno.ENOENT:
                raise OSError(ctypes.get_errno(), "SECCOMP_IOCTL_NOTIF_SEND failed")

    def _receive_one(self) -> None:
        notif = _Notif()
        if _libc.libc.ioctl(self.fd, ctypes.c_ulong(SECCOMP_IOCTL_NOTIF_RECV), ctypes.byref(notif)) < 0:
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
