"""ctypes declarations for the syscalls no maintained library wraps.

Every wrapper raises OSError whose message names the call and its arguments,
so a failure deep in the child reads like ``mount('/usr', '/new/usr') failed``.
Python 3.11 has no os.unshare/os.setns, and nothing wraps pivot_root,
mount_setattr, open_tree, move_mount, seccomp or landlock_*.
"""
from __future__ import annotations

import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

_MACHINE = os.uname().machine  # platform.machine() without importing platform

# Syscall numbers for the calls glibc 2.36 (Debian 12) may not export.
_SYSCALLS = {
    "x86_64": {
        "pivot_root": 155, "seccomp": 317, "open_tree": 428, "move_mount": 429,
        "mount_setattr": 442, "landlock_create_ruleset": 444, "landlock_add_rule": 445,
        "landlock_restrict_self": 446, "clone3": 435, "pidfd_open": 434,
        "pidfd_send_signal": 424, "setns": 308, "unshare": 272, "keyctl": 250,
    },
    "aarch64": {
        "pivot_root": 41, "seccomp": 277, "open_tree": 428, "move_mount": 429,
        "mount_setattr": 442, "landlock_create_ruleset": 444, "landlock_add_rule": 445,
        "landlock_restrict_self": 446, "clone3": 435, "pidfd_open": 434,
        "pidfd_send_signal": 424, "setns": 268, "unshare": 97, "keyctl": 219,
    },
}[_MACHINE]

# clone/unshare flags
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

# mount flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOSYMFOLLOW = 256
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# new mount API
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000
AT_SYMLINK_NOFOLLOW = 0x100
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_IDMAP = 0x100000


def _fail(call: str, args: tuple) -> OSError:
    err = ctypes.get_errno()
    shown = ", ".join(repr(a.decode() if isinstance(a, bytes) else a) for a in args)
    return OSError(err, f"{call}({shown}) failed: {os.strerror(err)}")


def _fs(path):
    return os.fsencode(path) if path is not None else None


def raw_syscall(name: str, *args) -> int:
    """Call a syscall by name; raises OSError naming it on failure."""
    ret = libc.syscall(ctypes.c_long(_SYSCALLS[name]), *args)
    if ret < 0:
        raise _fail(name, args)
    return ret


def syscall_number(name: str) -> int:
    return _SYSCALLS[name]


# The GIL stays held across this one: the child must come back holding it, as the parent does.
_fork = ctypes.PyDLL(None, use_errno=True).fork
_fork.restype = ctypes.c_int


def fork_single_threaded() -> int:
    """fork(2) for a process that has only one thread (A, init, the fork server), as os.fork() but
    without Python's at-fork handlers: they repair what other threads left mid-way (locks, the
    thread table), of which there is none here, and they cost the child ~180 copy-on-write faults
    (~0.7 ms) in the launcher's address space. glibc's own fork handlers still run."""
    pid = _fork()
    if pid < 0:
        raise _fail("fork", ())
    return pid


class CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls",
        "set_tid", "set_tid_size", "cgroup")]


CLONE_PIDFD = 0x1000
CLONE_INTO_CGROUP = 0x200000000
_syscall_holding_gil = ctypes.PyDLL(None, use_errno=True).syscall
_syscall_holding_gil.restype = ctypes.c_long


def clone3_single_threaded(flags: int, cgroup_fd: int = -1) -> tuple[int, int]:
    """clone3(2) like fork() (same stack, SIGCHLD at exit), but into new namespaces at once, and
    with a pidfd: (pid, pidfd) in the parent, (0, -1) in the child. With cgroup_fd (a cgroup v2
    directory), the child starts in that cgroup. A raw system call, so glibc repairs nothing in
    the child: only for a process with a single thread, whose child runs our child side only (see
    only_thread())."""
    pidfd = ctypes.c_int(-1)
    if cgroup_fd >= 0:
        flags |= CLONE_INTO_CGROUP
    args = CloneArgs(flags=flags | CLONE_PIDFD, pidfd=ctypes.addressof(pidfd), exit_signal=17,  # SIGCHLD
                     cgroup=max(cgroup_fd, 0))
    pid = _syscall_holding_gil(ctypes.c_long(_SYSCALLS["clone3"]), ctypes.byref(args),
                               ctypes.c_size_t(ctypes.sizeof(args)))
    if pid < 0:
        raise _fail("clone3", (hex(flags),))
    return (pid, pidfd.value) if pid else (0, -1)


def thread_count() -> int:
    """The calling process's threads as the kernel counts them (0 when /proc cannot tell)."""
    with open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"Threads:"):
                return int(line.split()[1])
    return 0


def only_thread() -> bool:
    """True when the calling process has one thread: then no other thread can hold a lock that a
    child made without glibc's fork handlers would find held, nor start while we look."""
    return thread_count() == 1


def socket(family: int, kind: int, protocol: int = 0) -> int:
    """A bare socket descriptor (close-on-exec), for an ioctl handle."""
    fd = libc.socket(ctypes.c_int(family), ctypes.c_int(kind | os.O_CLOEXEC), ctypes.c_int(protocol))
    if fd < 0:
        raise _fail("socket", (family, kind, protocol))
    return fd


def unshare(flags: int) -> None:
    if libc.unshare(ctypes.c_int(flags)) != 0:
        raise _fail("unshare", (hex(flags),))


def setns(fd: int, nstype: int = 0) -> None:
    if libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
        raise _fail("setns", (fd, hex(nstype)))


def mount(source, target, fstype, flags: int = 0, data=None) -> None:
    if libc.mount(_fs(source), _fs(target), _fs(fstype), ctypes.c_ulong(flags), _fs(data)) != 0:
        raise _fail("mount", (source, target, fstype, hex(flags), data))


def umount2(target, flags: int = 0) -> None:
    if libc.umount2(_fs(target), ctypes.c_int(flags)) != 0:
        raise _fail("umount2", (target, flags))


def pivot_root(new_root, put_old) -> None:
    if libc.syscall(ctypes.c_long(_SYSCALLS["pivot_root"]), _fs(new_root), _fs(put_old)) != 0:
        raise _fail("pivot_root", (new_root, put_old))


def prctl(option: int, *args: int) -> None:
    """prctl() for the options python-prctl does not cover (ambient capabilities, numbered caps)."""
    padded = [ctypes.c_ulong(a) for a in args] + [ctypes.c_ulong(0)] * (4 - len(args))
    if libc.prctl(ctypes.c_int(option), *padded) != 0:
        raise _fail("prctl", (option, *args))


def sethostname(name: str) -> None:
    raw = name.encode()
    if libc.sethostname(raw, ctypes.c_size_t(len(raw))) != 0:
        raise _fail("sethostname", (name,))


def setdomainname(name: str) -> None:
    raw = name.encode()
    if libc.setdomainname(raw, ctypes.c_size_t(len(raw))) != 0:
        raise _fail("setdomainname", (name,))


KEYCTL_JOIN_SESSION_KEYRING = 1


def join_session_keyring(name: str) -> None:
    """A new session keyring of our own (keyctl(KEYCTL_JOIN_SESSION_KEYRING, name))."""
    raw_syscall("keyctl", ctypes.c_int(KEYCTL_JOIN_SESSION_KEYRING), ctypes.c_char_p(name.encode()))


def personality(persona: int) -> int:
    """personality(2); returns the previous persona."""
    ret = libc.personality(ctypes.c_ulong(persona))
    if ret == -1:
        raise _fail("personality", (hex(persona),))
    return ret


def open_tree(dirfd: int, path, flags: int) -> int:
    ret = libc.syscall(ctypes.c_long(_SYSCALLS["open_tree"]), ctypes.c_int(dirfd), _fs(path),
                       ctypes.c_uint(flags))
    if ret < 0:
        raise _fail("open_tree", (dirfd, path, hex(flags)))
    return ret


def move_mount(from_dirfd: int, from_path, to_dirfd: int, to_path, flags: int) -> None:
    ret = libc.syscall(ctypes.c_long(_SYSCALLS["move_mount"]), ctypes.c_int(from_dirfd),
                       _fs(from_path), ctypes.c_int(to_dirfd), _fs(to_path), ctypes.c_uint(flags))
    if ret < 0:
        raise _fail("move_mount", (from_dirfd, from_path, to_dirfd, to_path, hex(flags)))


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(dirfd: int, path, flags: int, attr_set: int = 0, attr_clr: int = 0,
                  propagation: int = 0, userns_fd: int = 0) -> None:
    attr = MountAttr(attr_set, attr_clr, propagation, userns_fd)
    ret = libc.syscall(ctypes.c_long(_SYSCALLS["mount_setattr"]), ctypes.c_int(dirfd), _fs(path),
                       ctypes.c_uint(flags), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    if ret < 0:
        raise _fail("mount_setattr", (dirfd, path, hex(flags), hex(attr_set)))


def pidfd_open(pid: int) -> int:
    return raw_syscall("pidfd_open", ctypes.c_int(pid), ctypes.c_uint(0))


# openat2: resolve a path with the dirfd as root, so symlinks cannot lead out of the sandbox.
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
MOVE_MOUNT_T_EMPTY_PATH = 0x40


class OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path, flags: int, resolve: int, mode: int = 0) -> int:
    how = OpenHow(flags, mode, resolve)
    ret = libc.syscall(ctypes.c_long(437), ctypes.c_int(dirfd), _fs(path), ctypes.byref(how),
                       ctypes.c_size_t(ctypes.sizeof(how)))
    if ret < 0:
        raise _fail("openat2", (dirfd, path))
    return ret


def overwrite(address: int, length: int, data: bytes) -> None:
    """Write data, then zeros, over length bytes of this process's memory at address (its own
    argv and environment strings: see child._shed_caller_identity)."""
    if length <= 0:
        return
    data = data[:length]
    ctypes.memset(ctypes.c_void_p(address), 0, length)
    ctypes.memmove(ctypes.c_void_p(address), data, len(data))
