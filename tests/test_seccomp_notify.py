"""Violation reporting and learning through seccomp user notification, on the kernel."""
import ast
import ctypes
import errno
import os
import socket
import threading

import pytest

from sandbox import _libc
from sandbox.seccomp import Action, ArgCondition, Rule, SeccompPolicy, compile_bpf, default_policy
from sandbox.seccomp.learn import suggest_policy
from sandbox.seccomp.notify import Recorder, format_violations, reporting_policy
from sandbox.seccomp.plan import evaluate
from sandbox.seccomp.probe import confine_self

pytestmark = pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86_64 numbers")

POLICY = SeccompPolicy("allowlist", Action("errno", errno.ENOTRECOVERABLE), (
    Rule(("@default", "@basic-io", "sendmsg"), Action("allow")),
    Rule(("getppid",), Action("errno", errno.ESTALE)),
    Rule(("ioctl",), Action("allow")),
    Rule(("ioctl",), Action("errno", errno.EDOM), (ArgCondition(1, "eq", 0x1234),)),
), name="notify-test")


def call(name, *args):
    nr = {"getppid": 110, "uname": 63, "ioctl": 16, "mkdir": 83}[name]
    ret = _libc.libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a) for a in args))
    return ret if ret >= 0 else -ctypes.get_errno()


def run_reported(policy, *, learn):
    """Child: confine with a listener, hand the fd over, make some calls, report results."""
    parent_sock, child_sock = socket.socketpair()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            parent_sock.close()
            os.close(rfd)
            fd = confine_self(compile_bpf(reporting_policy(policy), use_cache=False), new_listener=True)
            socket.send_fds(child_sock, [b"x"], [fd])
            os.close(fd)
            results = [call("getppid"), call("uname", 0), call("uname", 0),
                       call("ioctl", 2**64 - 1, 0x1234, 0), call("ioctl", 2**64 - 1, 0x5401, 0)]
            os.write(wfd, repr(results).encode())
        finally:
            os._exit(0)
    child_sock.close()
    os.close(wfd)
    try:
        _, fds, _, _ = socket.recv_fds(parent_sock, 1, 1)
        stop = threading.Event()
        violations = Recorder(fds[0], policy, learn=learn).run_until(stop)
        results = ast.literal_eval(os.read(rfd, 4096).decode())
    finally:
        parent_sock.close()
        os.close(rfd)
        os.waitpid(pid, 0)
    return results, violations


def test_reporting_returns_the_policy_errnos_and_records_them():
    results, violations = run_reported(POLICY, learn=False)
    assert results == [-errno.ESTALE, -errno.ENOTRECOVERABLE, -errno.ENOTRECOVERABLE,
                       -errno.EDOM, -errno.EBADF]
    summary = {v.syscall: (v.count, v.action) for v in violations}
    assert summary == {"getppid": (1, "errno(ESTALE)"), "uname": (2, "errno(ENOTRECOVERABLE)"),
                       "ioctl": (1, "errno(EDOM)")}
    ioctl = next(v for v in violations if v.syscall == "ioctl")
    assert ioctl.first_args[1] == 0x1234 and ioctl.first_pid > 0
    assert "uname: errno(ENOTRECOVERABLE) x2" in format_violations(violations)


def test_learning_lets_calls_through_and_suggests_a_policy():
    results, violations = run_reported(POLICY, learn=True)
    assert results[0] > 0 and results[1] == -errno.EFAULT  # the real calls ran
    policy, refused = suggest_policy(POLICY, violations)
    assert evaluate(policy, "uname") == Action("allow") and evaluate(policy, "getppid") == Action("allow")
    assert any(r.startswith("ioctl: restricted by arguments") for r in refused)


def test_suggestions_never_grant_sensitive_calls():
    from sandbox.seccomp.notify import Violation
    policy, refused = suggest_policy(default_policy(), [Violation("mount", "errno(EPERM)", 1),
                                                        Violation("ptrace", "errno(EPERM)", 1)])
    assert policy == default_policy() and len(refused) == 2
