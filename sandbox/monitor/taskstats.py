"""Per-process exit accounting from the kernel's taskstats (generic netlink "TASKSTATS"), for root:
each exiting task's status, cpu time and ids, delivered asynchronously to a listener registered for
the CPUs (TASKSTATS_CMD_ATTR_REGISTER_CPUMASK; CAP_NET_ADMIN in the initial user namespace).

Why not seccomp's exit_group: every notification stops the caller until the launcher answers,
and a build's processes are short; taskstats costs the workload nothing (the kernel fills one
message per exiting task), also sees processes killed by a signal, and gives the same cpu time.
Rootless launches, which may not register, use exit_group notifications instead.

struct taskstats (linux/taskstats.h) is append-only: the offsets used here hold since version 1,
ac_tgid (offset 368) since version 12; the kernel's own version is checked on every message.
"""
from __future__ import annotations

import os
import socket
import struct

NETLINK_GENERIC = 16
GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 16, 3, 1, 2
TASKSTATS_CMD_GET = 1
TASKSTATS_CMD_ATTR_REGISTER_CPUMASK, TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK = 3, 4
TASKSTATS_TYPE_PID, TASKSTATS_TYPE_TGID, TASKSTATS_TYPE_STATS = 1, 2, 3
TASKSTATS_TYPE_AGGR_PID, TASKSTATS_TYPE_AGGR_TGID = 4, 5
NLM_F_REQUEST, NLM_F_ACK = 1, 4
_NLMSG = struct.Struct("=IHHII")
_GENL = struct.Struct("=BBH")
_ATTR = struct.Struct("=HH")
MIN_VERSION = 12  # ac_tgid


def _attribute(kind: int, data: bytes) -> bytes:
    length = _ATTR.size + len(data)
    return _ATTR.pack(length, kind) + data + b"\0" * (-length % 4)


def _attributes(data: bytes, offset: int, end: int):
    while offset + _ATTR.size <= end:
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size:
            return
        yield kind, offset + _ATTR.size, offset + length
        offset += (length + 3) & ~3


class ExitStats:
    """A registered taskstats socket; `read()` gives what exited since the last read:
    ("pid", pid, tgid, wait_status, utime_us, stime_us) for each task and ("tgid", tgid,
    utime_us, stime_us) for the end of a thread group of several threads."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_GENERIC)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self.sock.bind((0, 0))
            self.sock.settimeout(2)
            self.family = self._family()
            self.mask = f"0-{os.cpu_count() - 1}".encode() + b"\0"
            self._request(self.family, TASKSTATS_CMD_GET, _attribute(TASKSTATS_CMD_ATTR_REGISTER_CPUMASK, self.mask),
                          ack=True)
            self.sock.setblocking(False)
        except (OSError, ValueError):
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def _request(self, family: int, command: int, payload: bytes, ack: bool = False) -> bytes:
        body = _GENL.pack(command, 1, 0) + payload
        self.sock.send(_NLMSG.pack(_NLMSG.size + len(body), family, NLM_F_REQUEST | (NLM_F_ACK if ack else 0),
                                   1, 0) + body)
        if not ack:
            return b""
        while True:
            reply = self.sock.recv(65536)
            length, kind = _NLMSG.unpack_from(reply)[:2]
            if kind == 2:  # NLMSG_ERROR: the acknowledgement, or the error
                error = -struct.unpack_from("=i", reply, _NLMSG.size)[0]
                if error:
                    raise OSError(error, f"taskstats: {os.strerror(error)}")
                return reply

    def _family(self) -> int:
        body = _GENL.pack(CTRL_CMD_GETFAMILY, 1, 0) + _attribute(CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0")
        self.sock.send(_NLMSG.pack(_NLMSG.size + len(body), GENL_ID_CTRL, NLM_F_REQUEST, 1, 0) + body)
        reply = self.sock.recv(65536)
        kind = _NLMSG.unpack_from(reply)[1]
        if kind == 2:
            error = -struct.unpack_from("=i", reply, _NLMSG.size)[0]
            raise OSError(error, "no taskstats in this kernel")
        for attribute, start, _end in _attributes(reply, _NLMSG.size + _GENL.size, len(reply)):
            if attribute == CTRL_ATTR_FAMILY_ID:
                return struct.unpack_from("=H", reply, start)[0]
        raise ValueError("taskstats: no family id")

    def read(self) -> tuple[list[tuple], int]:
        """(exits, lost): everything waiting; lost counts overruns (ENOBUFS)."""
        found, lost = [], 0
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return found, lost
            except OSError as exc:
                if exc.errno == 105:  # ENOBUFS
                    lost += 1
                    continue
                return found, lost
            offset = 0
            while offset + _NLMSG.size <= len(data):
                length = _NLMSG.unpack_from(data, offset)[0]
                if length < _NLMSG.size:
                    break
                self._parse(data, offset + _NLMSG.size + _GENL.size, offset + length, found)
                offset += (length + 3) & ~3

    @staticmethod
    def _parse(data: bytes, start: int, end: int, found: list) -> None:
        for kind, first, last in _attributes(data, start, end):
            if kind not in (TASKSTATS_TYPE_AGGR_PID, TASKSTATS_TYPE_AGGR_TGID):
                continue
            ident, stats = None, None
            for inner, at, stop in _attributes(data, first, last):
                if inner in (TASKSTATS_TYPE_PID, TASKSTATS_TYPE_TGID):
                    ident = struct.unpack_from("=I", data, at)[0]
                elif inner == TASKSTATS_TYPE_STATS and stop - at >= 376:
                    stats = at
            if ident is None or stats is None or struct.unpack_from("=H", data, stats)[0] < MIN_VERSION:
                continue
            utime, stime = struct.unpack_from("=QQ", data, stats + 152)
            if kind == TASKSTATS_TYPE_AGGR_PID:
                status = struct.unpack_from("=I", data, stats + 4)[0]
                tgid = struct.unpack_from("=I", data, stats + 368)[0]
                found.append(("pid", ident, tgid, status, utime, stime))
            else:
                found.append(("tgid", ident, utime, stime))

    def close(self) -> None:
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(0.5)
            self._request(self.family, TASKSTATS_CMD_GET, _attribute(TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK, self.mask))
        except OSError:
            pass
        self.sock.close()
