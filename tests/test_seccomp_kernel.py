"""Compiled filters on the real kernel: each probe runs in a forked child that sets
no_new_privs, loads the filter and reports every call's result through a pipe.

Arguments are chosen so that a call the filter lets through fails harmlessly
(bad fd, NULL pointer, invalid flags); denied calls show the policy's errno.
"""
import errno
import os
import shutil
import signal
import subprocess

import pytest

from sandbox import _libc
from sandbox.seccomp import (Action, ArgCondition, Rule, SeccompPolicy, compile_bpf, default_policy,
                             load_bpf, strict_policy)
from sandbox.seccomp.probe import probe, run_under

pytestmark = pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86_64 syscall numbers")

E = errno
SIGSYS = signal.SIGSYS
LOW32 = 0xFFFFFFFF
HIGH = 1 << 32  # set in a 64-bit register, ignored by the kernel for int arguments
INVALID_SOCKET_TYPE = 999  # the kernel rejects it with EINVAL before looking at the family


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def check(policy, cases):
    """cases: [(syscall, args, expected errno | 'ok' | signal number)]."""
    outcomes = probe(compile_bpf(policy), [(name, args) for name, args, _ in cases])
    got = []
    for (name, args, want), outcome in zip(cases, outcomes):
        if outcome.killed:
            got.append(signal.Signals(outcome.signal))
        elif outcome.ret >= 0:
            got.append("ok")
        else:
            got.append(errno.errorcode[outcome.errno])
    wanted = [signal.Signals(w) if isinstance(w, signal.Signals) else
              (w if w == "ok" else errno.errorcode[w]) for _, _, w in cases]
    assert list(zip([c[0] for c in cases], got)) == list(zip([c[0] for c in cases], wanted))


def eno(name):
    return Action("errno", getattr(errno, name))


TEST_POLICY = SeccompPolicy("allowlist", eno("ENOTRECOVERABLE"), (
    Rule(("@default", "@basic-io"), Action("allow")),
    Rule(("getppid",), eno("ESTALE")),                                   # overrides @default
    Rule(("ioctl",), Action("allow")),                                   # allowed, except ...
    Rule(("ioctl",), eno("EDOM"), (ArgCondition(1, "masked_eq", 0x1234, LOW32),)),
    Rule(("fcntl",), eno("EXDEV")),                                      # denied, except ...
    Rule(("fcntl",), Action("allow"), (ArgCondition(1, "eq", 1),)),      # F_GETFD
    Rule(("dup",), Action("log")),
), name="test")


def test_actions_exceptions_and_default_on_the_kernel():
    check(TEST_POLICY, [
        ("getpid", (), "ok"),
        ("read", (-1, 0, 0), E.EBADF),
        ("getppid", (), E.ESTALE),
        ("ioctl", (-1, 0x1234, 0), E.EDOM),
        ("ioctl", (-1, HIGH | 0x1234, 0), E.EDOM),       # high bits do not slip past
        ("ioctl", (-1, 0x5401, 0), E.EBADF),
        ("fcntl", (-1, 1, 0), E.EBADF),
        ("fcntl", (-1, 2, 0), E.EXDEV),
        ("dup", (-1,), E.EBADF),                        # log: allowed
        ("uname", (0,), E.ENOTRECOVERABLE),             # not listed: default action
        ("mount", (0, 0, 0, 0, 0), E.ENOTRECOVERABLE),
        (462, (), E.ENOSYS),                            # newer than libseccomp: ENOSYS
        (0x40000000 | 39, (), SIGSYS),                  # x32 getpid: foreign ABI kills
        ("getpid", (), SIGSYS),                         # (never reached)
    ])


def test_denylist_and_kill_actions():
    policy = SeccompPolicy("denylist", Action("allow"), (
        Rule(("mkdir",), eno("ENOTSUP")),
        Rule(("getppid",), Action("kill-process")),
    ))
    check(policy, [("uname", (0,), E.EFAULT), ("mkdir", (0, 0), E.ENOTSUP),
                   ("mount", (0, 0, 0, 0, 0), E.EFAULT), ("getppid", (), SIGSYS)])
    trap = SeccompPolicy("denylist", Action("allow"), (Rule(("getppid",), Action("trap")),))
    check(trap, [("getpid", (), "ok"), ("getppid", (), SIGSYS)])


CLONE_NEWUSER, CLONE_NEWUTS, CLONE_FS, CLONE_SIGHAND = 0x10000000, 0x04000000, 0x200, 0x800
CLONE_THREAD = 0x10000
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, AF_ALG, AF_VSOCK = 1, 2, 10, 16, 17, 38, 40
NETLINK_AUDIT = 9
TIOCSTI, TIOCLINUX, TIOCSETD, TCGETS, FIONREAD = 0x5412, 0x541C, 0x5423, 0x5401, 0x541B
PR_SET_NAME, PR_SET_SPECULATION_CTRL, PR_SET_IO_FLUSHER = 15, 53, 57

# Shared by both built-in policies.
COMMON_CASES = [
    ("getpid", (), "ok"),
    ("read", (-1, 0, 0), E.EBADF),
    ("openat", (-100, 0, 0), E.EFAULT),
    ("unshare", (CLONE_NEWUTS,), E.EPERM),
    ("setns", (-1, 0), E.EPERM),
    ("clone", (CLONE_NEWUSER | CLONE_FS, 0, 0, 0, 0), E.EPERM),    # kernel would say EINVAL
    ("clone", (CLONE_THREAD, 0, 0, 0, 0), E.EINVAL),                # no CLONE_NEW*: passes
    ("clone3", (0, 0), E.ENOSYS),
    ("socket", (AF_UNIX, INVALID_SOCKET_TYPE, 0), E.EINVAL),
    ("socket", (AF_VSOCK, INVALID_SOCKET_TYPE, 0), E.EAFNOSUPPORT),
    ("socket", (HIGH | AF_VSOCK, INVALID_SOCKET_TYPE, 0), E.EAFNOSUPPORT),
    ("socket", (AF_ALG, INVALID_SOCKET_TYPE, 0), E.EAFNOSUPPORT),
    ("socket", (AF_PACKET, INVALID_SOCKET_TYPE, 0), E.EAFNOSUPPORT),
    ("socketpair", (AF_INET, 1, 0, 0), E.EAFNOSUPPORT),
    ("socketpair", (AF_UNIX, 1, 0, 0), E.EFAULT),
    ("ioctl", (-1, TCGETS, 0), E.EBADF),
    ("personality", (0xFFFFFFFF,), "ok"),
    ("personality", (0x0040000,), E.EPERM),                          # ADDR_NO_RANDOMIZE
    ("prctl", (PR_SET_NAME, 0, 0, 0, 0), E.EFAULT),
    ("prctl", (PR_SET_IO_FLUSHER, 999, 0, 0, 0), E.EPERM),          # kernel would say EINVAL
    ("keyctl", (-1, 0, 0, 0, 0), E.EPERM),
    ("add_key", (0, 0, 0, 0, 0), E.EPERM),
    ("bpf", (-1, 0, 0), E.EPERM),
    ("perf_event_open", (0, 0, -1, -1, 0), E.EPERM),
    ("userfaultfd", (-1,), E.EPERM),
    ("io_uring_setup", (0, 0), E.EPERM),
    ("mount", (0, 0, 0, 0, 0), E.EPERM),
    ("umount2", (0, 0), E.EPERM),
    ("pivot_root", (0, 0), E.EPERM),
    ("ptrace", (-1, 0, 0, 0), E.EPERM),
    ("process_vm_readv", (0, 0, 0, 0, 0, 0), E.EPERM),
    ("kexec_load", (0, 0, 0, 0xFFFFFFFF), E.EPERM),
    ("init_module", (0, 0, 0), E.EPERM),
    ("reboot", (0, 0, 0, 0), E.EPERM),
    ("swapoff", (0,), E.EPERM),
    ("modify_ldt", (0, 0, 0), E.EPERM),
    ("syslog", (-1, 0, 0), E.EPERM),
    (470, (), E.ENOSYS),
]


def test_default_policy_on_the_kernel():
    check(default_policy(), COMMON_CASES + [
        ("socket", (AF_INET, INVALID_SOCKET_TYPE, 0), E.EINVAL),
        ("socket", (AF_INET6, INVALID_SOCKET_TYPE, 0), E.EINVAL),
        ("socket", (AF_NETLINK, INVALID_SOCKET_TYPE, 0), E.EINVAL),
        ("socket", (AF_NETLINK, INVALID_SOCKET_TYPE, NETLINK_AUDIT), E.EAFNOSUPPORT),
        ("ioctl", (-1, TIOCSTI, 0), E.EPERM),
        ("ioctl", (-1, HIGH | TIOCSTI, 0), E.EPERM),
        ("ioctl", (-1, TIOCLINUX, 0), E.EPERM),
        ("ioctl", (-1, TIOCSETD, 0), E.EPERM),
        ("ioctl", (-1, 0x1234, 0), E.EBADF),
        ("personality", (0x0008,), "ok"),
        ("prctl", (PR_SET_SPECULATION_CTRL, 999, 0, 0, 0), E.EPERM),
    ])


def test_strict_policy_on_the_kernel():
    check(strict_policy(), COMMON_CASES + [
        ("socket", (AF_INET, INVALID_SOCKET_TYPE, 0), E.EAFNOSUPPORT),
        ("socket", (AF_NETLINK, INVALID_SOCKET_TYPE, 0), E.EAFNOSUPPORT),
        ("ioctl", (-1, TIOCSTI, 0), E.ENOTTY),
        ("ioctl", (-1, 0x1234, 0), E.ENOTTY),
        ("ioctl", (-1, FIONREAD, 0), E.EBADF),
        ("personality", (0x0008,), E.EPERM),
        ("msgget", (0, 0), E.EPERM),
        ("io_setup", (0, 0), E.EPERM),
        ("mlock", (0, 0), E.EPERM),
        ("prctl", (PR_SET_SPECULATION_CTRL, 999, 0, 0, 0), E.EPERM),
    ])


I386_GETPID = r"""
int main(void) {
    long ret;
    __asm__ volatile ("int $0x80" : "=a"(ret) : "a"(20L) : "memory");  /* i386 getpid */
    return ret > 0 ? 0 : 1;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_i386_int80_kills_the_process(tmp_path):
    (tmp_path / "int80.c").write_text(I386_GETPID)
    subprocess.run(["gcc", "-O1", "-o", str(tmp_path / "int80"), str(tmp_path / "int80.c")], check=True)
    if subprocess.run([str(tmp_path / "int80")]).returncode != 0:
        pytest.skip("kernel without i386 emulation")
    for policy in (default_policy(), strict_policy()):
        result = run_under(compile_bpf(policy), [str(tmp_path / "int80")])
        assert result.returncode == -SIGSYS, policy.name
    with_x86 = SeccompPolicy("allowlist", Action("errno", 1), default_policy().rules,
                             ("native", "x86"))
    assert run_under(compile_bpf(with_x86), [str(tmp_path / "int80")]).returncode == 0


def test_load_bpf_rejects_malformed_programs():
    for bad in (b"", b"1234567", b"\0" * 8 * 4097):
        with pytest.raises(ValueError):
            load_bpf(bad)


def test_syscall_numbers_agree_with_libc_table():
    from sandbox.seccomp import syscalls
    for name in ("seccomp", "unshare", "setns", "clone3", "pivot_root"):
        assert syscalls.resolve(name) == _libc.syscall_number(name)


# ---------------------------------------------------------------- no setuid/setgid files

S_IFREG, O_CREAT, O_RDWR = 0o100000, 0o100, 0o2
O_TMPFILE = 0o20200000
SETID_CASES = [  # a NULL path or fd -1: what the filter lets through fails harmlessly
    ("chmod", (0, 0o4755), E.EPERM),
    ("chmod", (0, 0o2755), E.EPERM),
    ("chmod", (0, 0o6755), E.EPERM),
    ("chmod", (0, HIGH | 0o4755), E.EPERM),            # high bits change nothing
    ("chmod", (0, 0o755), E.EFAULT),                   # an ordinary mode reaches the kernel
    ("chmod", (0, 0o1777), E.EFAULT),                  # sticky is fine
    ("fchmod", (-1, 0o4755), E.EPERM),
    ("fchmod", (-1, 0o644), E.EBADF),
    ("fchmodat", (-1, 0, 0o2755), E.EPERM),
    ("fchmodat", (-1, 0, 0o755), E.EFAULT),
    ("fchmodat2", (-1, 0, 0o4755, 0), E.EPERM),
    ("creat", (0, 0o4755), E.EPERM),
    ("creat", (0, 0o755), E.EFAULT),
    ("mknod", (0, S_IFREG | 0o4755, 0), E.EPERM),
    ("mknodat", (-1, 0, S_IFREG | 0o2755, 0), E.EPERM),
    ("open", (0, O_CREAT | O_RDWR, 0o4755), E.EPERM),
    ("open", (0, O_RDWR, 0o4755), E.EFAULT),           # no O_CREAT: the mode is not used
    ("openat", (-1, 0, O_CREAT | O_RDWR, 0o2755), E.EPERM),
    ("openat", (-1, 0, O_TMPFILE | O_RDWR, 0o4755), E.EPERM),
    ("openat", (-1, 0, O_CREAT | O_RDWR, 0o755), E.EFAULT),
    ("openat2", (-1, 0, 0, 24), E.ENOSYS),             # its mode is out of BPF's reach
]


def test_no_setid_files_on_the_kernel():
    check(default_policy(), SETID_CASES + [("setxattr", (0, 0, 0, 0, 0), E.EFAULT)])
    # strict: no xattrs set at all, reported as a file system without them would (cp -a goes on)
    check(strict_policy(), SETID_CASES + [("setxattr", (0, 0, 0, 0, 0), E.EOPNOTSUPP),
                                          ("fsetxattr", (-1, 0, 0, 0, 0), E.EOPNOTSUPP),
                                          ("lsetxattr", (0, 0, 0, 0, 0), E.EOPNOTSUPP)])


I386_CHMOD = r"""
#include <stdio.h>
#include <stdlib.h>
static char path[4096];  /* in a non-PIE binary: below 4 GiB, reachable by an i386 pointer */
int main(int argc, char **argv) {
    long ret;
    snprintf(path, sizeof path, "%s", argv[1]);
    __asm__ volatile ("int $0x80" : "=a"(ret) : "a"(15L), "b"((long)path), "c"(strtol(argv[2], 0, 8))
                      : "memory");  /* i386 chmod */
    printf("%ld\n", ret);
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_setid_rules_cover_the_i386_abi(tmp_path):
    """With "x86" among the architectures, libseccomp translates the same rules to i386 numbers;
    without it (the default), any int $0x80 call kills the process (test above)."""
    (tmp_path / "chmod32.c").write_text(I386_CHMOD)
    binary = tmp_path / "chmod32"
    subprocess.run(["gcc", "-O1", "-no-pie", "-o", str(binary), str(tmp_path / "chmod32.c")], check=True)
    target = tmp_path / "file"
    target.write_text("")
    if subprocess.run([str(binary), str(target), "644"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.skip("kernel without i386 emulation")
    for base in (default_policy(), strict_policy()):
        with_x86 = SeccompPolicy("allowlist", Action("errno", 1), base.rules, ("native", "x86"))
        bpf = compile_bpf(with_x86)
        for mode, want in (("4755", str(-E.EPERM)), ("2755", str(-E.EPERM)), ("755", "0")):
            done = run_under(bpf, [str(binary), str(target), mode], capture_output=True, text=True)
            assert done.stdout.strip() == want, (base.name, mode, done)
        assert not os.stat(target).st_mode & 0o6000
        assert run_under(compile_bpf(base), [str(binary), str(target), "4755"]).returncode == -SIGSYS
