"""Landlock: unprivileged, stackable access control applied to the calling thread.

Call order in the sandbox child (single-threaded, after fork):
    setuid/capability drop -> PR_SET_NO_NEW_PRIVS -> landlock.restrict() -> seccomp -> execve

``restrict()`` requires no_new_privs to be set already (the kernel refuses
landlock_restrict_self with EPERM otherwise, unless the caller has CAP_SYS_ADMIN
in its user namespace). Landlock must come before seccomp, since the seccomp
filter may deny the landlock_* syscalls themselves.

Rights unknown to the running kernel are dropped from the handled set: a
right that is not handled is simply not restricted, which is what best-effort
means for Landlock (ABI 1 kernels, for example, cannot restrict truncate()).
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat
from typing import Iterable

from ._libc import libc, syscall_number
from . import execlist

# --- syscall flags ----------------------------------------------------------
LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
LANDLOCK_RULE_PATH_BENEATH = 1
LANDLOCK_RULE_NET_PORT = 2

# --- filesystem access rights ---------------------------------------------
# ABI 1
ACCESS_FS_EXECUTE = 1 << 0
ACCESS_FS_WRITE_FILE = 1 << 1
ACCESS_FS_READ_FILE = 1 << 2
ACCESS_FS_READ_DIR = 1 << 3
ACCESS_FS_REMOVE_DIR = 1 << 4
ACCESS_FS_REMOVE_FILE = 1 << 5
ACCESS_FS_MAKE_CHAR = 1 << 6
ACCESS_FS_MAKE_DIR = 1 << 7
ACCESS_FS_MAKE_REG = 1 << 8
ACCESS_FS_MAKE_SOCK = 1 << 9
ACCESS_FS_MAKE_FIFO = 1 << 10
ACCESS_FS_MAKE_BLOCK = 1 << 11
ACCESS_FS_MAKE_SYM = 1 << 12
ACCESS_FS_REFER = 1 << 13      # ABI 2: rename/link across directories
ACCESS_FS_TRUNCATE = 1 << 14   # ABI 3
ACCESS_FS_IOCTL_DEV = 1 << 15  # ABI 5: ioctl on character/block devices

# --- network access rights (ABI 4) -----------------------------------------
ACCESS_NET_BIND_TCP = 1 << 0
ACCESS_NET_CONNECT_TCP = 1 << 1

# --- scopes (ABI 6) ----------------------------------------------------------
LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
LANDLOCK_SCOPE_SIGNAL = 1 << 1

_FS_ABI1 = (1 << 13) - 1
# All filesystem rights known at each ABI version (index = ABI).
_FS_BY_ABI = {
    1: _FS_ABI1,
    2: _FS_ABI1 | ACCESS_FS_REFER,
    3: _FS_ABI1 | ACCESS_FS_REFER | ACCESS_FS_TRUNCATE,
    4: _FS_ABI1 | ACCESS_FS_REFER | ACCESS_FS_TRUNCATE,
}
_FS_BY_ABI[5] = _FS_BY_ABI[4] | ACCESS_FS_IOCTL_DEV
ACCESS_FS_ALL = _FS_BY_ABI[5]
ACCESS_NET_ALL = ACCESS_NET_BIND_TCP | ACCESS_NET_CONNECT_TCP
SCOPE_ALL = LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL

# Rights meaningful on a non-directory; the kernel rejects a path-beneath rule
# on a file that carries directory-only rights (EINVAL).
ACCESS_FILE = (ACCESS_FS_EXECUTE | ACCESS_FS_WRITE_FILE | ACCESS_FS_READ_FILE
               | ACCESS_FS_TRUNCATE | ACCESS_FS_IOCTL_DEV)

READ = ACCESS_FS_READ_FILE | ACCESS_FS_READ_DIR | ACCESS_FS_EXECUTE
WRITE = ACCESS_FS_ALL & ~READ

# A rule's optional third element: the path is an [exec] allow pattern, expanded in the workload
# after pivot_root (execlist.expand), each match granted the rule's access.
PATTERN = "pattern"


def rules_for(profile) -> tuple | None:
    """The Landlock rules of a profile: (path, access) pairs, and (pattern, access, PATTERN) for
    [exec] allow; None when Landlock is off. Derived from the mounts: everything readable, the rw
    binds, tmpfs mounts, /dev and landlock.write writable. Without an exec list every readable
    path is executable too (as the mounts allow); with one, execute is granted only on what the
    patterns match, and nowhere else, in particular not on anything writable."""
    if not profile.landlock.enabled:
        return None
    fs = profile.filesystem
    writable = [m.target for m in fs.mounts if m.mode == "rw"] + [t.target for t in fs.tmpfs]
    if fs.dev:
        writable.append("/dev")
    if not fs.readonly_root:
        writable.append("/")
    allow = profile.exec.allow
    strip = ACCESS_FS_EXECUTE if allow is not None else 0
    rules: list[tuple] = [("/", READ & ~strip)]
    rules += [(path, (READ | WRITE) & ~strip) for path in writable + list(profile.landlock.write)]
    rules += [(path, READ & ~strip) for path in profile.landlock.read]
    if allow is not None:
        rules += [(pattern, ACCESS_FS_EXECUTE, PATTERN) for pattern in allow]
    return tuple(rules)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64),
                ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the UAPI struct is __attribute__((packed)): 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


def _syscall(name: str, *args) -> int:
    ret = libc.syscall(ctypes.c_long(syscall_number(name)), *args)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name} failed: {os.strerror(err)}")
    return ret


def abi_version() -> int:
    """The Landlock ABI of the running kernel; 0 when unsupported or disabled."""
    try:
        return _syscall("landlock_create_ruleset", None, ctypes.c_size_t(0),
                        ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    except OSError as exc:
        # ENOSYS: not built in; EOPNOTSUPP: built in but disabled at boot (lsm=).
        if exc.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
            return 0
        raise


def handled_fs(abi: int) -> int:
    """Filesystem rights the kernel at ``abi`` can restrict."""
    if abi <= 0:
        return 0
    return _FS_BY_ABI.get(abi, ACCESS_FS_ALL)


def _ports(ports: Iterable[int], what: str) -> list[int]:
    out = []
    for p in ports:
        if not isinstance(p, int) or not 0 <= p <= 65535:
            raise ValueError(f"landlock: invalid {what} port {p!r}")
        out.append(p)
    return out


def restrict(rules: list[tuple[str, int]], *, handle_network: bool = False,
             tcp_bind_ports: Iterable[int] = (), tcp_connect_ports: Iterable[int] = (),
             scope_signals: bool = True, scope_abstract_unix: bool = True,
             best_effort: bool = True) -> list[str]:
    """Confine the calling thread (and its future children) with Landlock.

    ``rules`` are (path, access) pairs: access beneath ``path`` is allowed,
    every other handled filesystem access is denied. A (pattern, access, PATTERN) triple is an
    [exec] allow pattern, expanded here (execlist.expand) and granted on each match; such a rule
    is never best-effort: an allowlist that cannot be enforced refuses to run. With ``handle_network``
    TCP bind/connect is denied except on the listed ports. Scopes deny
    signalling processes and connecting to abstract unix sockets outside the
    new domain. Requires no_new_privs (see module docstring).

    Paths are resolved now, in the caller's mount namespace: call this after
    pivot_root, with paths as the workload will see them. A missing path is
    skipped with a warning; any other open() failure raises.

    Returns warning strings for what could not be enforced. With
    ``best_effort=False`` anything requested but unsupported raises OSError.
    """
    bind_ports = _ports(tcp_bind_ports, "tcp bind")
    connect_ports = _ports(tcp_connect_ports, "tcp connect")
    warnings: list[str] = []

    def degrade(err: int, msg: str) -> None:
        if not best_effort:
            raise OSError(err, f"landlock: {msg}")
        warnings.append(msg)

    abi = abi_version()
    if abi == 0:
        if any(len(rule) > 2 for rule in rules):
            raise OSError(errno.EOPNOTSUPP, "landlock unsupported by this kernel: the [exec] allowlist "
                          "cannot be enforced")
        degrade(errno.EOPNOTSUPP, "landlock unsupported by this kernel: file access not restricted")
        return warnings

    attr = _RulesetAttr(handled_fs(abi), 0, 0)
    if handle_network:
        if abi >= 4:
            attr.handled_access_net = ACCESS_NET_ALL
        else:
            degrade(errno.EOPNOTSUPP, f"landlock ABI {abi} < 4: TCP bind/connect not restricted")
    scoped = ((LANDLOCK_SCOPE_SIGNAL if scope_signals else 0)
              | (LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET if scope_abstract_unix else 0))
    if scoped:
        if abi >= 6:
            attr.scoped = scoped
        else:
            degrade(errno.EOPNOTSUPP,
                    f"landlock ABI {abi} < 6: signals/abstract unix sockets not scoped")

    # Older kernels reject a bigger struct only if the unknown tail is non-zero,
    # so passing the full struct is safe once unsupported fields are cleared.
    ruleset_fd = _syscall("landlock_create_ruleset", ctypes.byref(attr),
                          ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    try:
        for path, access, *kind in rules:
            if kind:  # an [exec] allow pattern, expanded in this (the workload's) view
                matched, notes = execlist.expand(path)
                warnings += notes
                for match, _directory in matched:
                    _add_path_rule(ruleset_fd, match, access, attr.handled_access_fs, warnings)
            else:
                _add_path_rule(ruleset_fd, path, access, attr.handled_access_fs, warnings)
        if attr.handled_access_net:
            for rights, ports in ((ACCESS_NET_BIND_TCP, bind_ports),
                                  (ACCESS_NET_CONNECT_TCP, connect_ports)):
                for port in ports:
                    net = _NetPortAttr(rights, port)
                    try:
                        _syscall("landlock_add_rule", ctypes.c_int(ruleset_fd),
                                 ctypes.c_int(LANDLOCK_RULE_NET_PORT), ctypes.byref(net),
                                 ctypes.c_uint32(0))
                    except OSError as exc:
                        raise OSError(exc.errno, f"landlock_add_rule(port {port}) failed: "
                                      f"{os.strerror(exc.errno)}") from None
        try:
            _syscall("landlock_restrict_self", ctypes.c_int(ruleset_fd), ctypes.c_uint32(0))
        except OSError as exc:
            hint = " (no_new_privs must be set first)" if exc.errno == errno.EPERM else ""
            raise OSError(exc.errno, f"landlock_restrict_self failed: "
                          f"{os.strerror(exc.errno)}{hint}") from None
    finally:
        os.close(ruleset_fd)
    return warnings


def _add_path_rule(ruleset_fd: int, path: str, access: int, handled: int,
                   warnings: list[str]) -> None:
    try:
        # O_PATH: we only need a handle on the inode; follows symlinks to the target.
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        warnings.append(f"landlock: {path}: does not exist, rule skipped")
        return
    except OSError as exc:
        raise OSError(exc.errno, f"landlock: open({path!r}) failed: {os.strerror(exc.errno)}") from None
    try:
        allowed = access & handled
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            allowed &= ACCESS_FILE
        if not allowed:
            # The kernel rejects an empty rule (ENOMSG); it would grant nothing anyway.
            warnings.append(f"landlock: {path}: no applicable access rights, rule skipped")
            return
        rule = _PathBeneathAttr(allowed, fd)
        try:
            _syscall("landlock_add_rule", ctypes.c_int(ruleset_fd),
                     ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH), ctypes.byref(rule),
                     ctypes.c_uint32(0))
        except OSError as exc:
            raise OSError(exc.errno, f"landlock_add_rule({path!r}, {hex(allowed)}) failed: "
                          f"{os.strerror(exc.errno)}") from None
    finally:
        os.close(fd)
