"""The kernel's process events connector (netlink, NETLINK_CONNECTOR / CN_IDX_PROC): fork and exit
of every process on the host, for root (CAP_NET_ADMIN in the initial user namespace).

Used for what seccomp notification cannot see: processes that never exec (a fork that only
computes) and processes that end without exit_group (killed by a signal). The connector reports
the whole host, so the monitor keeps the set of the sandbox's processes: init and its children at
the start, then every fork whose parent is in the set.

Three structs over the standard library's AF_NETLINK socket: pyroute2's ProcEventSocket (0.9)
wraps the socket in an asyncio loop that buffers messages out of select()'s sight, and its import
costs ~180 ms; nothing here needs more than struct.
"""
from __future__ import annotations

import os
import socket
import struct

NETLINK_CONNECTOR = 11
CN_IDX_PROC = CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN, PROC_CN_MCAST_IGNORE = 1, 2
PROC_EVENT_FORK, PROC_EVENT_EXEC, PROC_EVENT_EXIT = 0x1, 0x2, 0x80000000
PROC_EVENT_NONZERO_EXIT = 0x20000000  # a filter bit only: such exits arrive as PROC_EVENT_EXIT
NLMSG_DONE = 3
_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_EVENT = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
_HEADER = _NLMSG.size + _CN_MSG.size


class ProcEvents:
    """A listening connector socket; `fileno()` for select, `read()` for the events it holds:
    ("fork", parent_tgid, child_pid, child_tgid), ("exec", pid, tgid),
    ("exit", pid, tgid, wait_status, parent_tgid)."""

    def __init__(self, exits: bool = True):
        self.exits = exits
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_CONNECTOR)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self.sock.bind((0, CN_IDX_PROC))
            self.filtered = self._listen()
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def _listen(self) -> bool:
        """Listen to forks and non-zero exits only where the kernel filters (Linux >= 6.6; exits
        with status 0 come through exit_group anyway), else to every event. A filtering socket
        gets no acknowledgement (the kernel filters that too), so the version decides."""
        try:
            major, minor = (int(part) for part in os.uname().release.split(".")[:2])
        except ValueError:
            major, minor = 0, 0
        if (major, minor) >= (6, 6):
            self._control(PROC_CN_MCAST_LISTEN, PROC_EVENT_FORK | (PROC_EVENT_NONZERO_EXIT if self.exits else 0))
            return True
        self._control(PROC_CN_MCAST_LISTEN)
        return False

    def _control(self, operation: int, events: int | None = None) -> None:
        payload = struct.pack("=I", operation) if events is None else struct.pack("=II", operation, events)
        message = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
        self.sock.send(_NLMSG.pack(_NLMSG.size + len(message), NLMSG_DONE, 0, 0, os.getpid()) + message)

    def read(self) -> tuple[list[tuple], int]:
        """(events, lost): every event waiting; lost counts overruns (ENOBUFS)."""
        events, lost = [], 0
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return events, lost
            except OSError as exc:
                if exc.errno == 105:  # ENOBUFS: the kernel dropped events for us
                    lost += 1
                    continue
                return events, lost
            offset = 0
            while offset + _HEADER + _EVENT.size <= len(data):
                length = _NLMSG.unpack_from(data, offset)[0]
                what = _EVENT.unpack_from(data, offset + _HEADER)[0]
                body = offset + _HEADER + _EVENT.size
                if what == PROC_EVENT_FORK:
                    _ppid, ptgid, cpid, ctgid = struct.unpack_from("=IIII", data, body)
                    events.append(("fork", ptgid, cpid, ctgid))
                elif what == PROC_EVENT_EXEC:
                    pid, tgid = struct.unpack_from("=II", data, body)
                    events.append(("exec", pid, tgid))
                elif what == PROC_EVENT_EXIT:
                    pid, tgid, code, _signal, _ppid, ptgid = struct.unpack_from("=IIIIII", data, body)
                    events.append(("exit", pid, tgid, code, ptgid))
                if length <= 0:
                    break
                offset += (length + 3) & ~3

    def close(self) -> None:
        try:
            self._control(PROC_CN_MCAST_IGNORE)
        except OSError:
            pass
        self.sock.close()
