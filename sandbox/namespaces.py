"""Namespaces: which to create, and the id maps the parent writes for the child's user namespace.

The workload never runs as host uid 0: when root launches, the sandbox user maps to an unprivileged
host id (NOBODY unless the profile names one); rootless, it maps to the caller's own ids.
"""
from __future__ import annotations

import errno
import os

from .compiled_dataclass import dataclass
from . import _libc
from .profile.model import NOBODY, Namespaces, Process

NAMESPACE_FLAGS = {
    "mount": _libc.CLONE_NEWNS, "pid": _libc.CLONE_NEWPID, "network": _libc.CLONE_NEWNET,
    "ipc": _libc.CLONE_NEWIPC, "uts": _libc.CLONE_NEWUTS, "time": _libc.CLONE_NEWTIME,
}
PROC_NAMES = {"user": "user", "mount": "mnt", "pid": "pid", "network": "net", "ipc": "ipc",
              "uts": "uts", "cgroup": "cgroup", "time": "time"}


def creates_network_namespace(namespaces: Namespaces, network_mode: str) -> bool:
    """Whether the sandbox gets a network namespace of its own: yes unless network.mode is "host".

    The one place this is decided, so that `mode = "host"` means the host's network however it is
    given (a profile key alone, `--network host`, the API). Every other mode ("none", and modes
    that add interfaces) needs a namespace of its own; `namespaces.network = false` is accepted
    only alongside "host" (profile/validate.py), where it says the same thing again.
    """
    return namespaces.network and network_mode != "host"


def unshare_flags(namespaces: Namespaces, network_mode: str) -> int:
    """Flags for the second unshare; user comes first (alone) and cgroup after placement."""
    flags = 0
    for name, flag in NAMESPACE_FLAGS.items():
        if name == "network":
            if creates_network_namespace(namespaces, network_mode):
                flags |= flag
        elif getattr(namespaces, name):
            flags |= flag
    return flags


@dataclass(frozen=True)
class IdMap:
    """One uid and one gid inside, each mapped to one id on the host."""

    inside_uid: int
    host_uid: int
    inside_gid: int
    host_gid: int

    def uid_map(self) -> str:
        return f"{self.inside_uid} {self.host_uid} 1\n"

    def gid_map(self) -> str:
        return f"{self.inside_gid} {self.host_gid} 1\n"


def id_map_for(process: Process) -> IdMap:
    """One id each way. Rootless callers may only map their own ids."""
    if os.geteuid() == 0:
        host_uid = process.host_user if process.host_user is not None else NOBODY
        host_gid = process.host_group if process.host_group is not None else NOBODY
    else:
        host_uid = os.geteuid() if process.host_user is None else process.host_user
        host_gid = os.getegid() if process.host_group is None else process.host_group
    if host_uid == 0 or host_gid == 0:
        raise ValueError("the sandbox user must not map to host root")
    return IdMap(process.user, host_uid, process.group, host_gid)


def write_id_maps(pid: int, idmap: IdMap) -> None:
    """Parent side: setgroups must be denied before an unprivileged gid_map is accepted."""
    setgroups = getattr(idmap, "setgroups", "deny")  # plan.IdMappings may allow it (privileged writer)
    for name, text in (("setgroups", setgroups), ("uid_map", idmap.uid_map()), ("gid_map", idmap.gid_map())):
        path = f"/proc/{pid}/{name}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                written = os.write(fd, text.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise OSError(exc.errno, f"{path}: {exc.strerror}") from None
        if written != len(text):
            raise OSError(errno.EIO, f"{path}: short write")


def namespace_inodes(pid: int | str = "self") -> dict[str, int]:
    """The inode of each namespace of a process, keyed by /proc/PID/ns names."""
    inodes = {}
    for name in PROC_NAMES.values():
        try:
            inodes[name] = os.stat(f"/proc/{pid}/ns/{name}").st_ino
        except OSError:
            pass
    return inodes


class MappingUserNamespace:
    """A throwaway user namespace holding one id mapping, for idmapped mounts.

    A forked helper unshares a user namespace and waits; we write its maps, open its ns file and
    let it go. The open fd keeps the namespace alive for mount_setattr(MOUNT_ATTR_IDMAP).
    """

    def __init__(self, uid_map: str, gid_map: str):
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # helper: no Python-level cleanup, just unshare and wait
            try:
                os.close(ready_r)
                os.close(go_w)
                _libc.unshare(_libc.CLONE_NEWUSER)
                os.write(ready_w, b"1")
                os.read(go_r, 1)
            finally:
                os._exit(0)
        os.close(ready_w)
        os.close(go_r)
        try:
            if os.read(ready_r, 1) != b"1":
                raise OSError(0, "id-mapping helper could not create a user namespace")
            for name, text in (("uid_map", uid_map), ("gid_map", gid_map)):
                with open(f"/proc/{pid}/{name}", "w") as handle:
                    handle.write(text)
            self.fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            os.close(go_w)
            os.close(ready_r)
            os.waitpid(pid, 0)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
