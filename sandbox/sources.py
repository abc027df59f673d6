"""Bind sources: each host path opened once, without following a symlink a sandbox could have made.

A sandbox with a read-write bind can leave anything in it: `out -> /srv/secret`, or `pkg`
replaced by a symlink. Resolving a later run's source the ordinary way (stat, open_tree on a
path) would follow that link with the launcher's privileges, bind whatever it names, and, with an
idmapped mount, give the sandbox the target's owner. So every source is walked here one
component at a time (`O_PATH | O_NOFOLLOW`, relative to the directory opened before it), and a
symlink is followed only when nobody but root could have written it:

    the link is owned by uid 0, and
    its directory is owned by uid 0 and writable by no one else,
    or is sticky (like /tmp: only the link's owner, root, can remove or replace it there) and the
    link has a single name (a hard link of some root symlink, made by anyone, is not root's choice).

Anything else is refused with one line naming the source, the link, its owner and the real path
to give instead. Ownership (for the id-mapping decision) is read with fstat from the very fd that
is cloned into the sandbox (`open_tree(fd, "", AT_EMPTY_PATH | OPEN_TREE_CLONE)`): nothing is
looked up twice by name.

Who walks (see docs/architecture.md, "Bind sources"):

* the launcher, always, on the host, before any process exists: it checks every source
  (symlinks, system paths, runtime sockets), and when root launches it also clones each source
  into a detached tree (idmapped where that is safe), so the child never resolves a profile's
  host path again;
* the child, in rootless launches only (open_tree of a host-namespace fd fails inside the new
  mount namespace): it walks the path the launcher resolved, under /oldroot, following no symlink
  at all, and checks it found the very inode the launcher checked.

`${CWD}` counts as a source like any other. The kernel's idea of the current directory has its
symlinks resolved already: when the shell's `$PWD` names the same directory by another path, the
user got there through symlinks, and that path is the one walked (so `cd pkg`, where an earlier
run replaced `pkg` by a symlink, is refused like `--bind ./pkg`).
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import field

from . import _libc
from .compiled_dataclass import dataclass
from .errors import SetupError

MAX_SYMLINKS = 40  # as the kernel's own limit on nested links

# Never bound read-write unless the profile names the exact path with allow_system_path = true.
# Trees: the directory and everything below it. Exact: only the directory itself (a project in
# /home/alice/src or /srv/build is fine; /home, the one holding every user's files, is not; a
# volume in /var/lib/docker/volumes is fine, the engine's whole state is not).
SYSTEM_TREES = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/boot", "/dev", "/proc", "/sys", "/run",
                "/var/spool/cron")
SYSTEM_TREE_PREFIXES = ("/lib",)  # /lib32, /lib64, /libx32, /libexec... as trees too
SYSTEM_DIRS = ("/", "/var", "/root", "/home", "/tmp", "/var/tmp", "/var/lib", "/srv", "/opt", "/mnt",
               "/media", "/var/lib/docker", "/var/lib/containerd", "/var/lib/containers", "/var/lib/kubelet",
               "/var/lib/lxd")
# Whoever can talk to one of these is host root: never bound, in any mode, unless allowed by name.
RUNTIME_SOCKETS = ("docker.sock", "containerd.sock", "podman.sock", "crio.sock", "cri-dockerd.sock",
                   "buildkitd.sock", "dockershim.sock", "containerd-shim.sock", "lxd.socket")


def system_path_reason(path: str) -> str | None:
    """Why `path` (already resolved) must not be bound read-write, or None."""
    path = os.path.normpath(path) if path else path
    if path in SYSTEM_DIRS:
        return "the root directory" if path == "/" else f"{path} is a system directory"
    top = "/" + path.split("/")[1] if path.count("/") >= 1 else path
    for tree in SYSTEM_TREES:
        if path == tree or path.startswith(tree + "/"):
            return f"{path} is a system directory" if path == tree else f"{path} is inside {tree}"
    if any(top.startswith(prefix) for prefix in SYSTEM_TREE_PREFIXES):
        return f"{path} is a system directory" if path == top else f"{path} is inside {top}"
    return runtime_socket_reason(path)


def runtime_socket_reason(path: str) -> str | None:
    """Why `path` must not be bound at all (a container runtime's control socket), or None."""
    if os.path.basename(path) in RUNTIME_SOCKETS:
        return f"{path} is a container runtime socket (whoever can talk to it is host root)"
    return None


class SourceError(OSError):
    """A source that cannot be opened safely. str() is the one line for the user."""

    def __init__(self, err: int, message: str):
        super().__init__(err, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Opened:
    """An O_PATH fd of a source (the caller closes it), where it really is, and what it is."""

    fd: int
    path: str  # the real path, every symlink resolved (relative to the root walked from)
    info: os.stat_result = field(compare=False)
    followed: tuple[tuple[str, str], ...] = ()  # (link, what it points to), root's links only


def _owner(uid: int) -> str:
    try:
        import pwd
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (KeyError, ImportError):
        return f"uid {uid}"


def untrusted_link(link: os.stat_result, directory: os.stat_result) -> str | None:
    """Why a symlink must not be followed (who else could have written it), or None."""
    if link.st_uid != 0:
        return f"is owned by {_owner(link.st_uid)}"
    if directory.st_uid != 0:
        return f"is in a directory owned by {_owner(directory.st_uid)}"
    if directory.st_mode & 0o022:
        if not directory.st_mode & stat.S_ISVTX:
            return "is in a directory others can write to"
        if link.st_nlink != 1:
            return "is a hard link in a sticky directory others can write to"
    return None


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def open_path(path: str, root_fd: int | None = None, *, follow_root_links: bool = True,
              hint_root: bool = True) -> Opened:
    """Walk `path` from `root_fd` (the host's / by default), component by component, following
    only symlinks that root made in a directory only root can change (see untrusted_link), or none
    at all with follow_root_links=False. Absolute link targets start again at root_fd (as
    RESOLVE_IN_ROOT), '..' never climbs above it. Raises SourceError (ENOENT, ENOTDIR, ELOOP,
    EACCES...) naming what stopped it."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) if root_fd is None else \
        os.dup(root_fd)
    stack: list[tuple[int, str]] = [(root, "")]  # directories walked so far, with their real paths
    pending = _components(path)
    followed: list[tuple[str, str]] = []
    try:
        while pending:
            name = pending.pop(0)
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop()[0])
                continue
            parent_fd, parent_path = stack[-1]
            here = f"{parent_path}/{name}"
            try:
                fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
            except OSError as exc:
                raise SourceError(exc.errno or errno.EIO, f"{path}: {here}: {exc.strerror}") from None
            info = os.fstat(fd)
            if stat.S_ISLNK(info.st_mode):
                try:
                    target = os.readlink("", dir_fd=fd)
                    why = untrusted_link(info, os.fstat(parent_fd)) if follow_root_links else \
                        "is not followed here (the launcher resolved this path already)"
                finally:
                    os.close(fd)
                if why is not None:
                    raise SourceError(errno.ELOOP, _refusal(path, here, target, why, hint_root))
                followed.append((here, target))
                if len(followed) > MAX_SYMLINKS:
                    raise SourceError(errno.ELOOP, f"{path}: too many levels of symbolic links")
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop()[0])
                pending[:0] = _components(target)
                continue
            if pending and not stat.S_ISDIR(info.st_mode):
                os.close(fd)
                raise SourceError(errno.ENOTDIR, f"{path}: {here}: Not a directory")
            stack.append((fd, here))
        fd, real = stack.pop()
        return Opened(fd, real or "/", os.fstat(fd), tuple(followed))
    finally:
        for fd, _ in stack:
            os.close(fd)


def _refusal(path: str, link: str, target: str, why: str, hint_root: bool) -> str:
    text = (f"{path}: the symlink {link} (-> {target}) {why}; a symlink a sandbox could have left "
            "behind is never followed")
    if hint_root:
        real = os.path.realpath(path)
        text += f"; if it is meant, give the real path instead: {real}"
    return text


def logical_path(source: str, cwd: str | None = None, pwd: str | None = None) -> str:
    """The path the user named for `source` when it is in the current directory: `$PWD` in place
    of os.getcwd() when both name the same directory (the user got there through symlinks, which
    must be judged too). Otherwise `source` itself."""
    try:
        cwd = os.getcwd() if cwd is None else cwd
    except OSError:
        return source
    pwd = os.environ.get("PWD") if pwd is None else pwd
    if not pwd or not pwd.startswith("/") or pwd == cwd:
        return source
    if source != cwd and (cwd == "/" or not source.startswith(cwd + "/")):
        return source  # (below "/", every absolute path would match: only "/" itself counts)
    try:
        here, there = os.stat(cwd), os.stat(pwd)
    except OSError:
        return source
    if (here.st_dev, here.st_ino) != (there.st_dev, there.st_ino):
        return source  # a stale $PWD (set by a shell, then chdir() by a program): no information
    return pwd.rstrip("/") + source[len(cwd):] if source != cwd else pwd


def writable_by(info: os.stat_result, uid: int, gid: int) -> bool:
    """Whether host uid/gid (no supplementary groups: the sandbox has none) may create files in
    a directory with this owner and mode, by its mode bits (ACLs are not considered)."""
    return _permitted(info, uid, gid, 0o2)


def _permitted(info: os.stat_result, uid: int, gid: int, bit: int) -> bool:
    """Mode-bit check of `bit` (4 read, 2 write, 1 search) for uid/gid without other groups."""
    if info.st_uid == uid:
        return bool(info.st_mode & (bit << 6))
    if info.st_gid == gid:
        return bool(info.st_mode & (bit << 3))
    return bool(info.st_mode & bit)


# ---------------------------------------------------------------- the launcher's side

_CLONE = _libc.OPEN_TREE_CLONE | _libc.OPEN_TREE_CLOEXEC | _libc.AT_RECURSIVE | _libc.AT_EMPTY_PATH


class SourceTrees:
    """Every bind source of a profile, checked (and, when root launches, opened) before the fork.

    open(profile, idmap) walks each source (open_path), refuses untrusted symlinks, system paths
    bound read-write and runtime sockets, and decides the id mapping of read-write binds; when root
    launches it clones each source into a detached tree (idmapped where decided). Afterwards:

        fds       target -> detached tree fd, for the mount plan (root launches); close() closes
        resolved  target -> (real path, st_dev, st_ino): what the child walks and checks when it
                  has no tree (rootless launches, or where the launcher could not clone)
        missing   targets of optional mounts whose source does not exist (skipped)
        idmaps    target -> (uid, gid) that the sandbox's writes there belong to on disk, for the
                  binds that are idmapped (never 0)
        warnings  for Result.warnings
    """

    def __init__(self):
        self.fds: dict[str, int] = {}
        self.resolved: dict[str, tuple[str, int, int]] = {}
        self.missing: set[str] = set()
        self.idmaps: dict[str, tuple[int, int]] = {}
        self.warnings: list[str] = []

    def open(self, profile, idmap, *, clone: bool | None = None) -> None:
        """clone: make the detached trees (default: when root launches). The verifier passes
        False to learn what a launch would decide without opening anything."""
        if not profile.namespaces.mount:
            return
        clone = os.geteuid() == 0 if clone is None else clone
        root_launch = os.geteuid() == 0
        for index, mount in enumerate(profile.filesystem.mounts):
            opened = self._open_source(profile, index, mount)
            if opened is None:
                continue
            try:
                self._check_system_path(profile, index, mount, opened)
                self.resolved[mount.target] = (opened.path, opened.info.st_dev, opened.info.st_ino)
                mapping = self._id_mapping(profile, mount, opened, idmap) \
                    if root_launch and profile.namespaces.user else None
                if not clone:
                    if mapping is not None:
                        self.idmaps[mount.target] = mapping
                    continue
                tree = self._tree(mount, opened, idmap, mapping)
                if tree is not None:
                    self.fds[mount.target] = tree
            finally:
                os.close(opened.fd)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    # -------------------------------------------------------------- each step

    @staticmethod
    def _where(profile, index: int, mount) -> str:
        cwd = " (the current directory)" if mount.source == _getcwd() else ""
        return f"{mount.source}{cwd}, bound at {mount.target} by {profile.name or 'the profile'}'s " \
               f"filesystem.mounts[{index}]"

    def _open_source(self, profile, index: int, mount) -> Opened | None:
        try:
            return open_path(logical_path(mount.source))
        except SourceError as exc:
            if exc.errno in (errno.ENOENT, errno.EACCES) and mount.optional:  # as unreachable as missing
                self.missing.add(mount.target)
                return None
            raise SetupError("bind source", exc.errno or 0, f"{exc} (for {self._where(profile, index, mount)})") \
                from None

    def _check_system_path(self, profile, index: int, mount, opened: Opened) -> None:
        reason = system_path_reason(opened.path) if mount.mode == "rw" else runtime_socket_reason(opened.path)
        if reason is None or (mount.allow_system_path and opened.path == mount.source):
            return
        really = f" (really {opened.path})" if opened.path != mount.source else ""
        mode = "read-write" if mount.mode == "rw" else "into a sandbox"
        fix = "run from a project directory" if mount.source == _getcwd() else "bind a directory of its own"
        raise SetupError("bind source", errno.EPERM,
                         f"{self._where(profile, index, mount)}{really}: {reason}; refusing to bind it {mode}; "
                         f"{fix}, or name this exact path in a profile mount with allow_system_path = true")

    def _id_mapping(self, profile, mount, opened: Opened, idmap) -> tuple[int, int] | None:
        """(disk uid, disk gid) that the sandbox user's host ids become on the disk of this bind,
        or None for no idmapped mount. Never 0: a source that belongs to root (uid or gid 0) is
        bound as it is. (Mapping only the uid would not do: the kernel refuses writes to an inode
        whose uid or gid the mount does not map, the bind's own root included.)"""
        info = opened.info
        if mount.mode != "rw" or mount.idmap == "no" or not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
            return None
        if info.st_uid == 0 or info.st_gid == 0:
            whose = "root" if info.st_uid == 0 else "group root (gid 0)"
            fix = (f"give it to a build user (chown -R USER:GROUP {opened.path}) or set "
                   "process.host_user/host_group to its owner")
            if mount.idmap == "yes":
                raise SetupError("idmapped mount", errno.EPERM,
                                 f"{opened.path} (read-write at {mount.target}) belongs to {whose}, and an idmapped "
                                 "mount of it would make the files the sandbox writes there root's on the host "
                                 f"(setuid-root files included); {fix}")
            cwd = profile.process.cwd
            if stat.S_ISDIR(info.st_mode) and not _permitted(info, idmap.host_uid, idmap.host_gid, 0o1) \
                    and (cwd == mount.target or cwd.startswith(mount.target.rstrip("/") + "/")):
                raise SetupError("bind source", errno.EACCES,
                                 f"{opened.path} (read-write at {mount.target}, the working directory) belongs to "
                                 f"{whose}, so it is bound without an id mapping, and the sandbox's host uid "
                                 f"{idmap.host_uid} cannot enter it; {fix}")
            if not writable_by(info, idmap.host_uid, idmap.host_gid):
                self.warnings.append(
                    f"{opened.path} (read-write at {mount.target}) belongs to {whose}, so it is bound without "
                    f"an id mapping and the sandbox writes there as host uid {idmap.host_uid}, which may not "
                    f"write to it; {fix}")
            return None
        if mount.idmap == "auto" and (info.st_uid, info.st_gid) == (idmap.host_uid, idmap.host_gid):
            return None
        return info.st_uid, info.st_gid

    def _tree(self, mount, opened: Opened, idmap, mapping: tuple[int, int] | None) -> int | None:
        try:
            tree = _libc.open_tree(opened.fd, "", _CLONE)
        except OSError as exc:
            # Not allowed to clone here (root without CAP_SYS_ADMIN, in a container): the child
            # walks the resolved path itself, as in a rootless launch.
            if mapping is not None:
                self._idmap_failed(mount, opened, idmap, exc)
            return None
        if mapping is None:
            return tree
        try:
            _idmap_tree(tree, mapping, idmap)
        except OSError as exc:
            try:
                self._idmap_failed(mount, opened, idmap, exc)
            except BaseException:
                os.close(tree)
                raise
            return tree  # mount_setattr changes nothing when it fails: a plain clone
        self.idmaps[mount.target] = mapping
        return tree

    def _idmap_failed(self, mount, opened: Opened, idmap, exc: OSError) -> None:
        if mount.idmap == "yes":
            raise SetupError("idmapped mount", exc.errno or 0, f"{opened.path}: {exc.strerror}") from None
        self.warnings.append(f"{opened.path}: idmapped mount unavailable ({exc.strerror}); files written "
                             f"there belong to host uid {idmap.host_uid}")


def _idmap_tree(tree: int, mapping: tuple[int, int], idmap) -> None:
    """Give a detached tree an id mapping: disk uid/gid `mapping` <-> the sandbox's host ids."""
    from . import namespaces
    uid, gid = mapping
    if uid == 0 or gid == 0 or idmap.host_uid == 0 or idmap.host_gid == 0:
        raise AssertionError("an idmapped mount must never reach host uid or gid 0")
    userns = namespaces.MappingUserNamespace(f"{uid} {idmap.host_uid} 1\n", f"{gid} {idmap.host_gid} 1\n")
    try:
        _libc.mount_setattr(tree, "", _libc.AT_EMPTY_PATH | _libc.AT_RECURSIVE,
                            attr_set=_libc.MOUNT_ATTR_IDMAP | _libc.MOUNT_ATTR_NOSUID | _libc.MOUNT_ATTR_NODEV,
                            userns_fd=userns.fd)
    finally:
        userns.close()


def _getcwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:
        return None
