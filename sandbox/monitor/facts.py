"""Facts about a system call a sandboxed process is making, read while it waits for the seccomp
listener's answer: who (pids, uid), and what (the program and argv of an exec, the address of a
connect or bind, the socket of a listen or accept, the status of an exit_group).

Everything here is read from the caller's /proc entries and memory (/proc/PID/mem) or from a
duplicate of its socket (pidfd_getfd), by the launcher, which may: root, or the owner of the
sandbox's user namespace. These are observations, never decisions: a multithreaded caller can
change its memory between our read and the kernel's (TOCTOU), so nothing here ever decides what
a call may do (seccomp, Landlock and the network namespace do); see docs/monitoring.md.
"""
from __future__ import annotations

import ctypes
import os
import struct

from ..seccomp.learn import AT_EMPTY_PATH, AT_FDCWD, MAX_PATH, _signed32

MAX_ARGS = 256  # argv entries kept of an exec
MAX_ARG = 4096  # bytes kept of each
MAX_ARGV_BYTES = 64 << 10
_PIDFD_GETFD = 438  # the same number on every architecture (asm-generic)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, SOCK_SEQPACKET = 1, 2, 3, 5
FAMILIES = {AF_UNIX: "unix", AF_INET: "ipv4", AF_INET6: "ipv6", AF_NETLINK: "netlink"}


def _read(path: str, size: int = 4096) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, size)
    except OSError:
        return None
    finally:
        os.close(fd)


_STATUS_KEYS = (b"Name", b"Tgid", b"PPid", b"Uid", b"NStgid")


def status_of(tid: int) -> dict[str, str]:
    """The lines of /proc/TID/status we use (Name, Tgid, PPid, Uid, NStgid), by name."""
    text = _read(f"/proc/{tid}/status", 8192) or b""
    found = {}
    for key in _STATUS_KEYS:
        at = text.find(b"\n" + key + b":") if key != b"Name" else (0 if text.startswith(b"Name:") else -1)
        if at >= 0:
            start = text.index(b":", at + 1) + 1
            end = text.find(b"\n", start)
            found[key.decode()] = text[start:end if end >= 0 else None].decode(errors="replace").strip()
    return found


def inside_pid(levels: list[str], depth: int) -> int:
    """A pid as the sandbox sees it, from an NStgid line: the last level, when the process is in
    the sandbox's pid namespace (as deep as its processes); 0 when outside it (init's parent)."""
    if not levels or len(levels) != depth:
        return 0
    return int(levels[-1])


class Process:
    """Who made a call: host pid (the thread group's), pids inside, host uid. `known` maps host
    pids to their pids inside, from earlier events: a parent is seldom read twice."""

    __slots__ = ("tid", "host_pid", "pid", "ppid", "host_ppid", "host_uid", "name", "depth")

    def __init__(self, tid: int, known: dict[int, int] | None = None):
        status = status_of(tid)
        self.tid = tid
        self.host_pid = int(status.get("Tgid") or tid)
        levels = status.get("NStgid", "").split()
        self.depth = len(levels)
        self.pid = int(levels[-1]) if levels else self.host_pid
        self.host_ppid = int(status.get("PPid") or 0)
        if known is not None and self.host_ppid in known:
            self.ppid = known[self.host_ppid]
        else:
            parent_levels = status_of(self.host_ppid).get("NStgid", "").split() if self.host_ppid else []
            self.ppid = inside_pid(parent_levels, self.depth)
        uids = status.get("Uid", "").split()
        self.host_uid = int(uids[1]) if len(uids) > 1 else None  # the effective uid
        self.name = status.get("Name", "")

    def fields(self) -> dict:
        return {"pid": self.pid, "ppid": self.ppid, "host_pid": self.host_pid}


# ---------------------------------------------------------------- exec

def _read_memory(pid: int, address: int, size: int) -> bytes:
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = b""
        while len(data) < size:
            # page by page: the next page may not be mapped
            want = min(size - len(data), 4096 - (address + len(data)) % 4096)
            chunk = os.pread(fd, want, address + len(data))
            if not chunk:
                break
            data += chunk
            if len(chunk) < want:
                break
        return data
    finally:
        os.close(fd)


def _string_at(fd: int, address: int, limit: int = MAX_PATH) -> bytes:
    """The NUL-terminated string at `address` of an open /proc/PID/mem, page by page."""
    if not address:
        raise ValueError("NULL pointer")
    data = b""
    while len(data) < limit:
        chunk = os.pread(fd, min(limit - len(data), 4096 - (address + len(data)) % 4096), address + len(data))
        if not chunk:
            break
        data += chunk
        if b"\0" in chunk:
            break
    return data.split(b"\0", 1)[0]


def read_argv(fd: int, address: int) -> list[str]:
    """The NULL-terminated array of strings at `address` (native 64-bit pointers) in the process
    whose /proc/PID/mem is open as `fd`, bounded. The strings usually lie together (the caller
    built them so): one read of the pages they start in serves most of them."""
    if not address:
        return []
    pointers: list[int] = []
    data = b""
    while len(pointers) < MAX_ARGS:
        base = address + len(data)
        chunk = os.pread(fd, 4096 - base % 4096, base)
        if not chunk:
            break
        data += chunk
        count = len(data) // 8
        values = struct.unpack_from(f"={count}Q", data)
        if 0 in values:
            pointers = list(values[:values.index(0)])
            break
        pointers = list(values)
    pointers = pointers[:MAX_ARGS]
    if not pointers:
        return []
    window_start = min(pointers) & ~4095
    try:
        window = os.pread(fd, min(8192, max(pointers) + MAX_ARG - window_start), window_start)
    except OSError:  # a page of it is not mapped: string by string
        window = b""
    argv: list[str] = []
    total = 0
    for pointer in pointers:
        offset = pointer - window_start
        end = window.find(b"\0", offset) if 0 <= offset < len(window) else -1
        value = window[offset:end] if end >= 0 else _string_at(fd, pointer, MAX_ARG)
        total += len(value)
        argv.append(os.fsdecode(value))
        if total > MAX_ARGV_BYTES:
            argv.append("...")
            break
    return argv


def exec_request(tid: int, syscall: str, args) -> tuple[str, list[str]] | None:
    """What an execve/execveat asks to run: the path (made absolute) and argv, read from the
    caller's memory while it waits; None when the caller is gone. Whether the file exists is
    asked afterwards (exists_inside): that needs no waiting caller."""
    try:
        memory = os.open(f"/proc/{tid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except PermissionError:
        raise  # a process we may not read (see Watch.observe)
    except OSError:
        return None
    try:
        if syscall == "execve":
            path, dirfd, flags, argv_at = os.fsdecode(_string_at(memory, args[0])), AT_FDCWD, 0, args[1]
        else:
            path, dirfd, flags, argv_at = (os.fsdecode(_string_at(memory, args[1])), _signed32(args[0]),
                                           args[4], args[2])
        if not path and flags & AT_EMPTY_PATH:
            path = os.readlink(f"/proc/{tid}/fd/{dirfd}")
        elif not path.startswith("/"):
            base = os.readlink(f"/proc/{tid}/cwd" if dirfd == AT_FDCWD else f"/proc/{tid}/fd/{dirfd}")
            path = os.path.join(base, path)
        try:
            argv = read_argv(memory, argv_at)
        except OSError:
            argv = []
        return os.path.normpath(path), argv
    except (OSError, ValueError):
        return None
    finally:
        os.close(memory)


def exec_facts(tid: int, syscall: str, args, root: int = -1) -> dict | None:
    """exec_request and exists_inside at once: None for a file that is not there."""
    found = exec_request(tid, syscall, args)
    if found is None or not exists_inside(tid, found[0], root):
        return None
    return {"exe": found[0], "argv": found[1]}


def exists_inside(tid: int, path: str, root: int = -1) -> bool:
    """`path` names a file in the sandbox's root (symlinks resolved there, RESOLVE_IN_ROOT):
    `root` (the sandbox's, opened once: its processes cannot change root, holding no
    capability) or the caller's own."""
    from .. import _libc
    own = root < 0
    if own:
        try:
            root = os.open(f"/proc/{tid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return False
    try:
        fd = _libc.openat2(root, path.lstrip("/") or ".", os.O_PATH | os.O_CLOEXEC, _libc.RESOLVE_IN_ROOT)
    except OSError:
        return False
    finally:
        if own:
            os.close(root)
    os.close(fd)
    return True


# ---------------------------------------------------------------- network

def parse_sockaddr(data: bytes) -> dict:
    """family, address, port of a struct sockaddr (what connect and bind are given)."""
    if len(data) < 2:
        return {"family": "unknown"}
    (family,) = struct.unpack_from("=H", data)
    if family == AF_INET and len(data) >= 8:
        port = struct.unpack_from("!H", data, 2)[0]
        return {"family": "ipv4", "address": ".".join(str(b) for b in data[4:8]), "port": port}
    if family == AF_INET6 and len(data) >= 24:
        import ipaddress
        port = struct.unpack_from("!H", data, 2)[0]
        return {"family": "ipv6", "address": str(ipaddress.IPv6Address(data[8:24])), "port": port}
    if family == AF_UNIX:
        path = data[2:]
        if path[:1] == b"\0":  # abstract
            return {"family": "unix", "address": "@" + os.fsdecode(path[1:].rstrip(b"\0"))}
        return {"family": "unix", "address": os.fsdecode(path.split(b"\0", 1)[0])}
    if family == AF_NETLINK and len(data) >= 12:
        return {"family": "netlink", "address": str(struct.unpack_from("=I", data, 4)[0])}
    return {"family": FAMILIES.get(family, str(family))}


def _pidfd_getfd(pid: int, fd: int) -> int:
    pidfd = os.pidfd_open(pid)
    try:
        got = _libc.syscall(ctypes.c_long(_PIDFD_GETFD), ctypes.c_int(pidfd), ctypes.c_int(fd), ctypes.c_uint(0))
        if got < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return got
    finally:
        os.close(pidfd)


def socket_of(host_pid: int, fd: int) -> dict:
    """protocol and local address of a process's socket, from a duplicate of it (pidfd_getfd)."""
    import socket as _socket
    try:
        copy = _pidfd_getfd(host_pid, fd)
    except OSError:
        return {}
    try:
        sock = _socket.socket(fileno=copy)
    except OSError:
        os.close(copy)
        return {}
    try:
        facts = {"protocol": _protocol(sock.family, sock.type, sock.proto)}
        try:
            local = sock.getsockname()
        except OSError:
            local = None
        if sock.family in (_socket.AF_INET, _socket.AF_INET6) and isinstance(local, tuple):
            facts["local_address"], facts["local_port"] = local[0], local[1]
        elif sock.family == _socket.AF_UNIX and local:
            facts["local_address"] = local if isinstance(local, str) else "@" + os.fsdecode(local[1:])
        return facts
    finally:
        sock.close()


def _protocol(family: int, kind: int, proto: int) -> str:
    kind &= 0xF  # SOCK_NONBLOCK and SOCK_CLOEXEC are flags of the type
    if family in (AF_INET, AF_INET6):
        if kind == SOCK_STREAM:
            return "tcp" if proto in (0, 6) else "sctp" if proto == 132 else f"stream/{proto}"
        if kind == SOCK_DGRAM:
            return "udp" if proto in (0, 17) else "icmp" if proto in (1, 58) else f"dgram/{proto}"
        if kind == SOCK_RAW:
            return "raw"
        return f"type{kind}"
    if family == AF_UNIX:
        return {SOCK_STREAM: "unix-stream", SOCK_DGRAM: "unix-dgram", SOCK_SEQPACKET: "unix-seqpacket"}.get(kind, "unix")
    return FAMILIES.get(family, f"family{family}")


def network_facts(process: Process, syscall: str, args) -> dict:
    """What a connect, bind, listen, accept or accept4 is about: family, protocol, address, port
    (for listen and accept: the listening socket's own address; the peer of an accept is not
    known until the call returns, which seccomp does not show)."""
    fd = _signed32(args[0])
    facts: dict = {"fd": fd}
    if syscall in ("connect", "bind"):
        try:
            data = _read_memory(process.tid, args[1], min(int(args[2] & 0xFFFFFFFF), 128))
        except OSError:
            data = b""
        facts.update(parse_sockaddr(data))
    found = socket_of(process.host_pid, fd)
    if "protocol" in found:
        facts["protocol"] = found["protocol"]
    if syscall in ("listen", "accept", "accept4") and "local_address" in found:
        facts["address"] = found["local_address"]
        if "local_port" in found:
            facts["port"] = found["local_port"]
        facts.setdefault("family", "unix" if found["protocol"].startswith("unix") else
                         "ipv6" if ":" in str(found["local_address"]) else "ipv4")
    return facts


def destination(kind: str, facts: dict) -> str:
    """One line naming a network event for baselines: 'connect tcp 127.0.0.1:8080'."""
    protocol = facts.get("protocol") or facts.get("family") or "?"
    address = facts.get("address", "?")
    if "port" in facts:
        address = f"[{address}]:{facts['port']}" if ":" in str(address) else f"{address}:{facts['port']}"
    return f"{kind} {protocol} {address}"


# ---------------------------------------------------------------- exit

_TICKS = os.sysconf("SC_CLK_TCK")


def exit_facts(process: Process, args) -> dict:
    """exit_group(status): the status and the process's own cpu time (all its threads), read
    while it is still there."""
    facts: dict = {"status": int(args[0]) & 0xFF}
    text = _read(f"/proc/{process.host_pid}/stat")
    if text and b")" in text:
        fields = text.rsplit(b")", 1)[1].split()
        if len(fields) > 13:
            facts["cpu_user"] = round(int(fields[11]) / _TICKS, 3)
            facts["cpu_system"] = round(int(fields[12]) / _TICKS, 3)
    return facts
