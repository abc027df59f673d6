"""Network namespace helpers for the sandbox child.

A fresh network namespace has only ``lo``, and it is down: nothing, not even
127.0.0.1, is reachable until it is brought up. We do that with two ioctls
rather than running ``ip link set lo up``, because the launch path must not
spawn processes.
"""
from __future__ import annotations

import fcntl
import os
import struct

from . import _libc

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFNAMSIZ = 16
AF_INET = 2
SOCK_DGRAM = 2
# struct ifreq: char ifr_name[IFNAMSIZ]; union { short ifr_flags; ... } (24 bytes).
# Flags are read as unsigned so bit 15 round-trips without sign games.
_IFREQ = "16sH22x"


def _ioctl(fd: int, request: int, name: str, buf: bytes, call: str) -> bytes:
    try:
        return fcntl.ioctl(fd, request, buf)
    except OSError as exc:
        raise OSError(exc.errno, f"ioctl({call}, {name!r}) failed: {os.strerror(exc.errno)}") from None


def set_up(name: str) -> None:
    """Set IFF_UP on interface ``name`` (needs CAP_NET_ADMIN in its namespace)."""
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ:
        raise ValueError(f"invalid interface name {name!r}")
    # Any socket in the namespace will do as the ioctl handle; a datagram one is cheapest. A bare
    # descriptor: the socket module costs the launcher's start-up ~2 ms, for nothing else here.
    sock = _libc.socket(AF_INET, SOCK_DGRAM)
    try:
        got = _ioctl(sock, SIOCGIFFLAGS, name, struct.pack(_IFREQ, raw, 0), "SIOCGIFFLAGS")
        flags = struct.unpack(_IFREQ, got)[1]
        if flags & IFF_UP:
            return
        new = struct.pack(_IFREQ, raw, flags | IFF_UP)
        _ioctl(sock, SIOCSIFFLAGS, name, new, "SIOCSIFFLAGS")
    finally:
        os.close(sock)


def bring_up_loopback() -> None:
    """Bring ``lo`` up in the current (typically freshly unshared) network namespace."""
    set_up("lo")


def interfaces() -> list[str]:
    """Names of the interfaces visible in the current network namespace."""
    import socket
    return [name for _, name in socket.if_nameindex()]
