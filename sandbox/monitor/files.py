"""Files written under a sandbox's read-write binds, through fanotify mount marks (root only).

The mark is on the sandbox's own mount of each bind (reached through init's root, resolved with
RESOLVE_IN_ROOT), so only writes through the sandbox's view are reported, none of the host's to the
same files. Each event is a FAN_CLOSE_WRITE: a file opened for writing was closed (many writes,
one event; events for the same file still queued are merged by the kernel). fanotify opens the
file for us to name it (readlink of the event's descriptor gives the path inside the sandbox).

Rootless gets nothing here: an unprivileged fanotify group (Linux >= 5.13) may only mark inodes,
not mounts, and an inode mark sees the entries of one directory, not a tree; inotify is just as
shallow and racy for a tree that the workload itself creates. See docs/monitoring.md.
"""
from __future__ import annotations

import ctypes
import os
import struct

FAN_CLOEXEC, FAN_NONBLOCK, FAN_CLASS_NOTIF = 0x1, 0x2, 0x0
FAN_MARK_ADD, FAN_MARK_MOUNT = 0x1, 0x10
FAN_CLOSE_WRITE, FAN_Q_OVERFLOW = 0x8, 0x4000
FAN_NOFD = -1
_METADATA = struct.Struct("=IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


class FileWatch:
    """A fanotify group marking the given mounts of a running sandbox."""

    def __init__(self, init_pid: int, targets: list[str]):
        from .. import _libc as libc
        self.fd = _check(_libc.fanotify_init(FAN_CLOEXEC | FAN_NONBLOCK | FAN_CLASS_NOTIF,
                                             os.O_RDONLY | os.O_CLOEXEC | os.O_LARGEFILE | os.O_NONBLOCK),
                         "fanotify_init")
        self.marked: list[str] = []
        self.skipped: list[str] = []
        try:
            # Held until close(): the sandbox's mount namespace outlives its last process, so the
            # events read after it (the last files closed) still name paths inside, not paths
            # relative to a mount that was detached meanwhile.
            self.namespace = os.open(f"/proc/{init_pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(self.fd)
            raise
        try:
            root = os.open(f"/proc/{init_pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            os.close(self.fd)
            os.close(self.namespace)
            raise
        try:
            for target in targets:
                try:
                    handle = libc.openat2(root, target.lstrip("/") or ".", os.O_PATH | os.O_CLOEXEC,
                                          libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS)
                except OSError as exc:
                    self.skipped.append(f"{target}: {exc.strerror or exc}")
                    continue
                try:
                    # fanotify_mark takes no O_PATH descriptor as its object; its magic link works.
                    _check(_libc.fanotify_mark(self.fd, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_CLOSE_WRITE, -100,
                                               f"/proc/self/fd/{handle}".encode()), "fanotify_mark")
                    self.marked.append(target)
                except OSError as exc:
                    self.skipped.append(f"{target}: {exc.strerror or exc}")
                finally:
                    os.close(handle)
        finally:
            os.close(root)

    def fileno(self) -> int:
        return self.fd

    def read(self) -> tuple[list[tuple[int, str]], bool]:
        """([(writer's host pid, path inside)], overflowed): every event waiting."""
        found, overflow = [], False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return found, overflow
            except OSError:
                return found, overflow
            if not data:
                return found, overflow
            offset = 0
            while offset + _METADATA.size <= len(data):
                length, _vers, _reserved, _meta, mask, fd, pid = _METADATA.unpack_from(data, offset)
                if mask & FAN_Q_OVERFLOW:
                    overflow = True
                if fd >= 0:
                    try:
                        found.append((pid, os.readlink(f"/proc/self/fd/{fd}")))
                    except OSError:
                        pass
                    finally:
                        os.close(fd)
                if length <= 0:
                    break
                offset += length

    def close(self) -> None:
        for fd in (self.fd, self.namespace):
            if fd >= 0:
                os.close(fd)
        self.fd = self.namespace = -1
