"""The built-in policies: "default" and "strict".

default  An allowlist no weaker than Docker's default profile (every call it allows
         unconditionally, Docker allows too -- a test checks this), and stronger:
         no ptrace, process_vm_*, modify_ldt; namespaces can be neither
         created (clone flags, unshare) nor joined (setns); clone3 reports ENOSYS
         so glibc falls back to clone, whose flags BPF can read; sockets only for
         AF_UNIX, AF_INET, AF_INET6 and NETLINK_ROUTE, compared on the low 32 bits
         the kernel actually uses (Docker's 64-bit socket rule is bypassable);
         TIOCSTI/TIOCLINUX/TIOCSETD ioctls, memory-map-rewriting and mitigation-
         disabling prctls denied.
strict   For untrusted code: only local (AF_UNIX) sockets, no SysV IPC, no AIO,
         no scheduler/NUMA/mlock control, ioctl limited to
         terminal and file basics (others ENOTTY), prctl limited to a short list,
         no extended attributes set.

Both: no setuid or setgid bit on any file (chmod, fchmod, fchmodat, fchmodat2,
creat, mknod, mknodat, and open/openat with O_CREAT or O_TMPFILE: EPERM when the
mode carries S_ISUID or S_ISGID); openat2 reports ENOSYS (its mode is out of
BPF's reach), so callers fall back to openat. File capabilities
(security.capability) need CAP_SETFCAP, which a workload holds only when its
profile keeps it (see docs/threat-model.md); strict denies setxattr outright
(EOPNOTSUPP, as a file system without xattrs would).

Both deny with EPERM by default; calls from a foreign ABI kill the process.
"""
from __future__ import annotations

import errno
import functools
import os

from .model import ALLOW, EPERM, Action, ArgCondition, Rule, SeccompPolicy

# <linux/sched.h>: every CLONE_NEW* flag clone() can carry (CLONE_NEWTIME needs clone3).
CLONE_NAMESPACE_FLAGS = 0x7E020000
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, NETLINK_ROUTE = 1, 2, 10, 16, 0
TIOCSTI, TIOCLINUX, TIOCSETD = 0x5412, 0x541C, 0x5423
PR_SET_MM, PR_SET_SPECULATION_CTRL, PR_SET_IO_FLUSHER = 35, 53, 57
# personality(): Linux, PER_LINUX32, UNAME26 and both, and the 0xffffffff query.
SAFE_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
LOW32 = 0xFFFFFFFF


def errno_action(name: str) -> Action:
    return Action("errno", getattr(errno, name))


def low32_is(index: int, value: int) -> ArgCondition:
    """arg == value as the kernel sees an int/unsigned int argument (high bits ignored)."""
    return ArgCondition(index, "masked_eq", value, LOW32)


def _only_values(syscall: str, index: int, values, otherwise: Action, comment: str) -> list[Rule]:
    rules = [Rule((syscall,), otherwise, comment=comment)]
    rules += [Rule((syscall,), ALLOW, (low32_is(index, v),)) for v in values]
    return rules


def _never_values(syscall: str, index: int, values, action: Action, comment: str) -> list[Rule]:
    return [Rule((syscall,), action, (low32_is(index, v),), comment=comment) for v in values]


def has_bits(index: int, bits: int) -> ArgCondition:
    """All of `bits` set in argument `index` ((arg & bits) == bits)."""
    return ArgCondition(index, "masked_eq", bits, bits)


S_ISUID, S_ISGID = 0o4000, 0o2000
O_CREAT = os.O_CREAT
O_TMPFILE_BIT = os.O_TMPFILE & ~os.O_DIRECTORY  # __O_TMPFILE: O_TMPFILE without O_DIRECTORY
# Where each call takes the mode it gives a file: (syscall, mode argument).
MODE_SETTERS = (("chmod", 1), ("fchmod", 1), ("fchmodat", 2), ("fchmodat2", 2), ("creat", 1),
                ("mknod", 1), ("mknodat", 2))
# Calls that create a file with a mode only when their flags say so: (syscall, flags arg, mode arg).
MODE_CREATORS = (("open", 1, 2), ("openat", 2, 3))


def _no_setid_files() -> list[Rule]:
    """No setuid or setgid bit on any file, through any call that sets a mode (EPERM, which
    cp -p, install and tar report as "Operation not permitted"). A file the workload makes can
    belong on the host to a user other than the sandbox's (an idmapped workspace's owner): a
    setuid bit there would be that user's privilege for whoever runs the file next. Modes are
    16-bit (umode_t): the kernel ignores the bits a high-bit trick could set. openat2 passes its
    mode inside a struct BPF cannot read: ENOSYS, on which libc and programs that try openat2
    first (systemd, Rust and Go path libraries) fall back to openat."""
    rules = []
    for syscall, mode_arg in MODE_SETTERS:
        rules += [Rule((syscall,), EPERM, (has_bits(mode_arg, bit),), comment="no setuid/setgid files")
                  for bit in (S_ISUID, S_ISGID)]
    for syscall, flags_arg, mode_arg in MODE_CREATORS:
        rules += [Rule((syscall,), EPERM, (has_bits(flags_arg, create), has_bits(mode_arg, bit)),
                       comment="no setuid/setgid files created")
                  for create in (O_CREAT, O_TMPFILE_BIT) for bit in (S_ISUID, S_ISGID)]
    rules.append(Rule(("openat2",), errno_action("ENOSYS"),
                      comment="the mode is in memory BPF cannot read; ENOSYS makes callers use openat"))
    return rules


def _common_restrictions(socket_families, personalities) -> list[Rule]:
    """Argument rules shared by both policies; they must come after the allow rules."""
    eafnosupport = errno_action("EAFNOSUPPORT")
    rules = [
        Rule(("@namespaces",), EPERM, comment="no creating or joining namespaces"),
        Rule(("clone3",), errno_action("ENOSYS"),
             comment="flags live in memory BPF cannot read; ENOSYS makes glibc use clone()"),
        Rule(("clone",), EPERM, comment="no CLONE_NEW* flags"),
        Rule(("clone",), ALLOW, (ArgCondition(0, "masked_eq", 0, CLONE_NAMESPACE_FLAGS),)),
        Rule(("socketcall",), errno_action("ENOSYS"),
             comment="i386 multiplexer would bypass the socket family rules"),
        *_only_values("socket", 0, [f for f in socket_families if f != AF_NETLINK],
                      eafnosupport, "only these address families"),
        *_only_values("socketpair", 0, (AF_UNIX,), eafnosupport, "only AF_UNIX pairs"),
        *_only_values("personality", 0, personalities, EPERM, "no ASLR or exec-domain tricks"),
        *_no_setid_files(),
    ]
    if AF_NETLINK in socket_families:
        rules.append(Rule(("socket",), ALLOW, (low32_is(0, AF_NETLINK), low32_is(2, NETLINK_ROUTE)),
                          comment="netlink only for routing info (getaddrinfo, ip addr)"))
    return rules


_DEFAULT_ALLOWED = (
    "@default", "@basic-io", "@file-system", "@io-event", "@ipc", "@network-io", "@process",
    "@signal", "@timer", "@sync", "@memlock", "@aio", "@chown", "@setuid", "@pkey", "@sandbox",
    # From @system-service and @resources, as far as Docker allows them without capabilities:
    "capget", "capset", "copy_file_range", "fadvise64", "fadvise64_64", "getcpu", "getpriority",
    "getrandom", "ioctl", "ioprio_get", "ioprio_set", "name_to_handle_at", "readahead",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_getscheduler", "sched_rr_get_interval",
    "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
    "sched_setscheduler", "sendfile", "sendfile64", "setfsgid", "setfsgid32", "setfsuid",
    "setfsuid32", "setpgid", "setpriority", "setrlimit", "setsid", "splice", "sysinfo", "tee",
    "uname", "vmsplice", "adjtimex", "clock_adjtime", "clock_adjtime64", "fanotify_mark",
    "memfd_secret", "personality",
    # Architecture-specific calls Docker allows (cache maintenance for JITs, arm32 ABI):
    "cacheflush", "riscv_flush_icache", "arm_fadvise64_64", "arm_sync_file_range",
    "sync_file_range2", "breakpoint",
)


@functools.lru_cache(maxsize=None)
def default_policy() -> SeccompPolicy:
    rules = [
        Rule(_DEFAULT_ALLOWED, ALLOW, comment="ordinary programs"),
        Rule(("@debug", "@cpu-emulation", "@io-uring", "userfaultfd"), EPERM,
             comment="tracing, other processes' memory, LDT, io_uring, userfaultfd"),
        *_common_restrictions((AF_UNIX, AF_INET, AF_INET6, AF_NETLINK), SAFE_PERSONALITIES),
        *_never_values("ioctl", 1, (TIOCSTI, TIOCLINUX, TIOCSETD), EPERM,
                       "no faking terminal input, no line-discipline changes"),
        *_never_values("prctl", 0, (PR_SET_MM, PR_SET_SPECULATION_CTRL, PR_SET_IO_FLUSHER), EPERM,
                       "no rewriting mm fields or turning mitigations off"),
    ]
    return SeccompPolicy("allowlist", EPERM, tuple(rules), ("native",), "default")


# Terminal and file ioctls every-day tools need: TCGETS TCSETS TCSETSW TCSETSF TCFLSH
# TIOCGPGRP TIOCSPGRP TIOCGWINSZ TIOCSWINSZ FIONREAD FIONBIO TIOCGSID FIONCLEX FIOCLEX
# FIOASYNC TIOCGPTN TIOCSPTLCK FICLONE FS_IOC_GETFLAGS TCGETS2
STRICT_IOCTLS = (0x5401, 0x5402, 0x5403, 0x5404, 0x540B, 0x540F, 0x5410, 0x5413, 0x5414,
                 0x541B, 0x5421, 0x5429, 0x5450, 0x5451, 0x5452, 0x80045430, 0x40045431,
                 0x40049409, 0x80086601, 0x802C542A)
# PDEATHSIG set/get, DUMPABLE get/set, KEEPCAPS get, NAME set/get, SECCOMP get/set,
# CAPBSET_READ, TIMERSLACK set/get, CHILD_SUBREAPER set/get, NO_NEW_PRIVS set/get,
# GET_TID_ADDRESS, GET_THP_DISABLE, GET_SPECULATION_CTRL, SET_VMA
STRICT_PRCTLS = (1, 2, 3, 4, 7, 15, 16, 21, 22, 23, 29, 30, 36, 37, 38, 39, 40, 42, 52, 0x53564D41)

# Setting extended attributes; the names (security.capability...) are strings BPF cannot read.
# (setxattrat, Linux 6.13, is newer than libseccomp 2.5.4 knows: the ENOSYS prologue covers it.)
XATTR_SETTERS = ("setxattr", "lsetxattr", "fsetxattr")

_STRICT_ALLOWED = (
    "@default", "@basic-io", "@file-system", "@io-event", "@signal", "@timer", "@sync", "@pkey",
    "@sandbox", "@chown", "@setuid",  # credential changes are governed by capabilities
    "pipe", "pipe2", "memfd_create",
    "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt", "listen",
    "recvfrom", "recvmsg", "recvmmsg", "sendmsg", "sendmmsg", "sendto", "setsockopt", "shutdown",
    "socket", "socketpair",
    "clone", "execveat", "fork", "vfork", "wait4", "waitid", "kill", "tgkill", "tkill",
    "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_open", "pidfd_send_signal", "getrusage",
    "times", "setpgid", "setsid", "capget", "prctl", "personality", "ioctl",
    "getrandom", "copy_file_range", "fadvise64", "sendfile", "splice", "tee", "readahead",
    "getcpu", "getpriority", "setpriority", "sched_getaffinity", "sched_getparam",
    "sched_getscheduler", "sched_get_priority_max", "sched_get_priority_min",
    "sched_rr_get_interval", "sched_getattr", "sysinfo", "uname", "setrlimit",
)


@functools.lru_cache(maxsize=None)
def strict_policy() -> SeccompPolicy:
    rules = [
        Rule(_STRICT_ALLOWED, ALLOW, comment="local computation, files, pipes, unix sockets"),
        *_common_restrictions((AF_UNIX,), (0x0, 0xFFFFFFFF)),
        # EOPNOTSUPP, as on a file system without xattrs: cp -a, tar and shutil then go on (with EPERM,
        # cp -a fails on every file, since it sets POSIX ACLs through fsetxattr).
        Rule(XATTR_SETTERS, errno_action("EOPNOTSUPP"),
             comment="no extended attributes set (security.capability among them)"),
        *_only_values("ioctl", 1, STRICT_IOCTLS, errno_action("ENOTTY"),
                      "terminal and file basics only"),
        *_only_values("prctl", 0, STRICT_PRCTLS, EPERM, "harmless prctl options only"),
    ]
    return SeccompPolicy("allowlist", EPERM, tuple(rules), ("native",), "strict")


BUILTINS = {"default": default_policy, "strict": strict_policy}
