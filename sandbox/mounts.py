"""The sandbox's file system: a mount plan built from the profile (pure data), and its application.

Applying (child side, in the new user and mount namespaces, as pid 1 of the new pid namespace):

    make every mount private          host mount events stop at the sandbox
    tmpfs on /tmp, pivot_root into it  the host root is now /oldroot, the new root is built at /newroot
    apply each operation               binds via open_tree + mount_setattr + move_mount; the rest via mount
    remount the new root read-only
    detach /oldroot, pivot into /newroot, detach the old staging root

Every target is resolved with openat2(RESOLVE_IN_ROOT) against the new root, so a symlink inside a
bound host tree can never redirect a mount to a host path.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import field

from .compiled_dataclass import dataclass
from . import _libc
from .profile.model import MASKED_PROC_PATHS, READONLY_PROC_PATHS, Profile

STAGE = "/tmp"  # hidden by the staging tmpfs only inside our own mount namespace
NEWROOT = "/newroot"
OLDROOT = "/oldroot"
SECURE_ATTRS = _libc.MOUNT_ATTR_NOSUID | _libc.MOUNT_ATTR_NODEV


@dataclass(frozen=True)
class Bind:
    """A host path bound at target; read-only unless readonly is False."""

    source: str
    target: str
    readonly: bool = True
    noexec: bool = False
    devices: bool = False  # device nodes must stay usable (binds into /dev)
    idmap_fd: int = -1  # a detached idmapped tree made by the parent (root launches only)


@dataclass(frozen=True)
class Tmpfs:
    """A fresh tmpfs at target."""

    target: str
    size: int
    mode: int = 0o1777
    noexec: bool = False
    readonly: bool = False


@dataclass(frozen=True)
class Proc:
    """The new pid namespace's /proc."""

    target: str = "/proc"


@dataclass(frozen=True)
class Devpts:
    """A private devpts instance (its own ptys)."""

    target: str = "/dev/pts"


@dataclass(frozen=True)
class Symlink:
    """A symlink created in the new root."""

    target: str
    points_to: str


@dataclass(frozen=True)
class File:
    """A small file written into the new root (passwd, group, hosts...)."""

    target: str
    content: str
    mode: int = 0o644


@dataclass(frozen=True)
class Mask:
    """Hide a path: an empty read-only tmpfs on a directory, /dev/null on a file."""

    target: str


@dataclass(frozen=True)
class ReadOnly:
    """Remount an existing path read-only (recursively)."""

    target: str


@dataclass(frozen=True)
class MountPlan:
    """Everything the child does to build the root, in order; pure data made before fork."""

    root_source: str | None  # None: a fresh tmpfs
    root_size: int
    readonly_root: bool
    operations: tuple = field(default_factory=tuple)


def _depth(path: str) -> int:
    return 0 if path == "/" else path.count("/")


def build_plan(profile: Profile, idmap_fds: dict[str, int] | None = None,
               network_files: tuple | list = ()) -> MountPlan:
    """Profile -> ordered operations. Pure apart from checking which optional sources exist.
    network_files: (host file, path inside) pairs from sandbox.net, bound read-only last, over
    whatever the profile put there (a bind, never a write: /etc may be a host bind)."""
    fs = profile.filesystem
    idmap_fds = idmap_fds or {}
    mounts: list = []
    for mount in fs.mounts:
        if mount.optional and not os.path.lexists(mount.source):
            continue
        mounts.append(Bind(mount.source, mount.target, readonly=mount.mode == "ro", noexec=mount.noexec,
                           idmap_fd=idmap_fds.get(mount.target, -1)))
    for tmpfs in fs.tmpfs:
        mounts.append(Tmpfs(tmpfs.target, tmpfs.size, tmpfs.mode, tmpfs.noexec))
    if fs.proc:
        mounts.append(Proc())
    if fs.sys:
        mounts.append(Bind("/sys", "/sys", readonly=True, noexec=True))
    if fs.dev:
        mounts.append(Tmpfs("/dev", 1 << 20, 0o755, noexec=True))
    # Parents before children; stable, so the profile's order breaks ties.
    operations: list = sorted(mounts, key=lambda op: _depth(op.target))
    if fs.dev:
        operations += _dev_operations(fs.devices, fs.dev_shm_size)
    operations += [Symlink(s.target, s.points_to) for s in fs.symlinks]
    operations += [File(f.target, f.content, f.mode) for f in fs.files]
    if fs.proc:
        operations += [Mask(p) for p in MASKED_PROC_PATHS if p.startswith("/proc/")]
        operations += [ReadOnly(p) for p in READONLY_PROC_PATHS]
    if fs.sys:
        operations += [Mask(p) for p in MASKED_PROC_PATHS if p.startswith("/sys/")]
    operations += [Mask(p) for p in fs.masked_paths]
    operations += [ReadOnly(p) for p in fs.readonly_paths]
    operations += [Bind(source, target) for source, target in network_files]
    root = None if fs.root == "tmpfs" else fs.root
    return MountPlan(root, fs.root_size, fs.readonly_root, tuple(operations))


def _dev_operations(devices: tuple[str, ...], shm_size: int) -> list:
    ops: list = [Bind(f"/dev/{name}", f"/dev/{name}", readonly=False, noexec=True, devices=True)
                 for name in devices]
    ops += [Devpts(), Symlink("/dev/ptmx", "pts/ptmx"), Tmpfs("/dev/shm", shm_size, 0o1777, noexec=True),
            Symlink("/dev/fd", "/proc/self/fd"), Symlink("/dev/stdin", "/proc/self/fd/0"),
            Symlink("/dev/stdout", "/proc/self/fd/1"), Symlink("/dev/stderr", "/proc/self/fd/2")]
    return ops


# ---------------------------------------------------------------- child side

class MountError(OSError):
    """An operation failed; `target` says which, for the (step, errno, message) report."""


def _resolve(root_fd: int, path: str, create: str | None = None) -> int:
    """O_PATH fd of `path` inside root_fd; creates missing parents, and the node as `create`
    ('dir' or 'file') when missing."""
    relative = path.lstrip("/")
    if not relative:
        return os.dup(root_fd)
    flags = os.O_PATH | os.O_CLOEXEC
    resolve = _libc.RESOLVE_IN_ROOT | _libc.RESOLVE_NO_MAGICLINKS
    try:
        return _libc.openat2(root_fd, relative, flags, resolve)
    except OSError as exc:
        if exc.errno != errno.ENOENT or create is None:
            raise
    parent, _, name = relative.rpartition("/")
    parent_fd = _resolve(root_fd, parent, "dir")
    try:
        if create == "dir":
            os.mkdir(name, 0o755, dir_fd=parent_fd)
        else:
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644, dir_fd=parent_fd))
    except FileExistsError:
        raise MountError(errno.ELOOP, f"{path}: a dangling symlink is in the way") from None
    finally:
        os.close(parent_fd)
    return _libc.openat2(root_fd, relative, flags, resolve)


def _fd_path(fd: int) -> str:
    return f"{OLDROOT}/proc/self/fd/{fd}"


def _attach_tree(tree_fd: int, target_fd: int) -> None:
    _libc.move_mount(tree_fd, "", target_fd, "", _libc.MOVE_MOUNT_F_EMPTY_PATH | _libc.MOVE_MOUNT_T_EMPTY_PATH)


def _bind(root_fd: int, op: Bind) -> None:
    if op.idmap_fd >= 0:
        tree = op.idmap_fd
        is_dir = True
    else:
        tree = _open_host_tree(op.source)
        is_dir = stat.S_ISDIR(os.fstat(tree).st_mode)
    try:
        attrs = _libc.MOUNT_ATTR_NOSUID if op.devices else SECURE_ATTRS  # device nodes need dev
        attrs |= _libc.MOUNT_ATTR_RDONLY if op.readonly else 0
        attrs |= _libc.MOUNT_ATTR_NOEXEC if op.noexec else 0
        if attrs:
            _libc.mount_setattr(tree, "", _libc.AT_EMPTY_PATH | _libc.AT_RECURSIVE, attr_set=attrs)
        target = _resolve(root_fd, op.target, "dir" if is_dir else "file")
        try:
            _attach_tree(tree, target)
        finally:
            os.close(target)
    finally:
        if tree != op.idmap_fd:
            os.close(tree)


def _open_host_tree(source: str) -> int:
    """A detached copy of a host path, resolved as the host sees it (absolute symlinks included)."""
    old_root = os.open(OLDROOT, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _libc.openat2(old_root, source.lstrip("/") or ".", os.O_PATH | os.O_CLOEXEC, _libc.RESOLVE_IN_ROOT)
    finally:
        os.close(old_root)
    try:
        return _clone_tree(fd)
    finally:
        os.close(fd)


def _clone_tree(fd: int) -> int:
    return _libc.open_tree(fd, "", _libc.OPEN_TREE_CLONE | _libc.OPEN_TREE_CLOEXEC | _libc.AT_RECURSIVE
                           | _libc.AT_EMPTY_PATH)


def _mount_at(root_fd: int, target: str, fstype: str, flags: int, data: str | None) -> None:
    fd = _resolve(root_fd, target, "dir")
    try:
        _libc.mount(fstype, _fd_path(fd), fstype, flags, data)
    finally:
        os.close(fd)


def _remount_readonly(root_fd: int, target: str) -> None:
    fd = _resolve(root_fd, target)
    try:
        tree = _clone_tree(fd)
        try:
            _libc.mount_setattr(tree, "", _libc.AT_EMPTY_PATH | _libc.AT_RECURSIVE,
                                attr_set=_libc.MOUNT_ATTR_RDONLY | SECURE_ATTRS)
            _attach_tree(tree, fd)
        finally:
            os.close(tree)
    finally:
        os.close(fd)


def _mask(root_fd: int, target: str) -> None:
    try:
        fd = _resolve(root_fd, target)
    except FileNotFoundError:
        return  # nothing to hide
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            _libc.mount("tmpfs", _fd_path(fd), "tmpfs", _libc.MS_RDONLY | _libc.MS_NOSUID | _libc.MS_NODEV
                        | _libc.MS_NOEXEC, "size=4k,nr_inodes=1,mode=0555")
        else:
            null = _open_host_tree("/dev/null")
            try:
                _libc.mount_setattr(null, "", _libc.AT_EMPTY_PATH, attr_set=_libc.MOUNT_ATTR_RDONLY | SECURE_ATTRS
                                    | _libc.MOUNT_ATTR_NOEXEC)
                _attach_tree(null, fd)
            finally:
                os.close(null)
    finally:
        os.close(fd)


def _in_parent(root_fd: int, target: str, create) -> None:
    """create(parent_dir_fd, name) for the last component of target, its parents made inside."""
    parent, _, name = target.rpartition("/")
    parent_fd = _resolve(root_fd, parent or "/", "dir")
    try:
        create(parent_fd, name)
    finally:
        os.close(parent_fd)


def _write_file(root_fd: int, op: File) -> None:
    def create(parent_fd: int, name: str) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, op.mode,
                     dir_fd=parent_fd)
        try:
            os.write(fd, op.content.encode())
            os.fchmod(fd, op.mode)
        finally:
            os.close(fd)
    _in_parent(root_fd, op.target, create)


def _symlink(root_fd: int, op: Symlink) -> None:
    _in_parent(root_fd, op.target, lambda parent_fd, name: os.symlink(op.points_to, name, dir_fd=parent_fd))


def _apply_one(root_fd: int, op) -> None:
    secure = _libc.MS_NOSUID | _libc.MS_NODEV
    if isinstance(op, Bind):
        _bind(root_fd, op)
    elif isinstance(op, Tmpfs):
        flags = secure | (_libc.MS_NOEXEC if op.noexec else 0)
        _mount_at(root_fd, op.target, "tmpfs", flags, f"size={op.size},mode={op.mode:o}")
    elif isinstance(op, Proc):
        _mount_at(root_fd, op.target, "proc", secure | _libc.MS_NOEXEC, None)
    elif isinstance(op, Devpts):
        _mount_at(root_fd, op.target, "devpts", _libc.MS_NOSUID | _libc.MS_NOEXEC,
                  "newinstance,ptmxmode=0666,mode=620")
    elif isinstance(op, Symlink):
        _symlink(root_fd, op)
    elif isinstance(op, File):
        _write_file(root_fd, op)
    elif isinstance(op, Mask):
        _mask(root_fd, op.target)
    elif isinstance(op, ReadOnly):
        try:
            _remount_readonly(root_fd, op.target)
        except FileNotFoundError:
            pass
    else:
        raise TypeError(op)


def describe(op) -> str:
    kind = type(op).__name__.lower()
    source = getattr(op, "source", None)
    return f"{kind} {source} -> {op.target}" if source else f"{kind} {op.target}"


def enter_new_root(plan: MountPlan) -> None:
    """Build the root from the plan and pivot into it. Raises MountError naming the operation."""
    _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)
    _libc.mount("tmpfs", STAGE, "tmpfs", _libc.MS_NOSUID | _libc.MS_NODEV, "size=1M,mode=0755")
    os.mkdir(STAGE + NEWROOT)
    os.mkdir(STAGE + OLDROOT)
    _libc.pivot_root(STAGE, STAGE + OLDROOT)
    os.chdir("/")
    if plan.root_source is None:
        _libc.mount("tmpfs", NEWROOT, "tmpfs", _libc.MS_NOSUID | _libc.MS_NODEV,
                    f"size={plan.root_size},mode=0755")
    else:
        tree = _open_host_tree(plan.root_source)
        # A host directory as root is never written to: mount points in it must already exist.
        _libc.mount_setattr(tree, "", _libc.AT_EMPTY_PATH | _libc.AT_RECURSIVE,
                            attr_set=SECURE_ATTRS | _libc.MOUNT_ATTR_RDONLY)
        root_dir = os.open(NEWROOT, os.O_PATH | os.O_CLOEXEC)
        _attach_tree(tree, root_dir)
        os.close(root_dir)
        os.close(tree)
    root_fd = os.open(NEWROOT, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for op in plan.operations:
            try:
                _apply_one(root_fd, op)
            except OSError as exc:
                raise MountError(exc.errno or errno.EIO, f"{describe(op)}: {exc.strerror or exc}") from None
    finally:
        os.close(root_fd)
    if plan.readonly_root:
        _libc.mount_setattr(-100, NEWROOT, 0, attr_set=_libc.MOUNT_ATTR_RDONLY | SECURE_ATTRS)
    if any(isinstance(op, Devpts) for op in plan.operations):
        # /dev itself read-only once populated (not recursively: /dev/shm and /dev/pts stay
        # writable, and device nodes are writable on a read-only mount anyway).
        _libc.mount_setattr(-100, NEWROOT + "/dev", 0, attr_set=_libc.MOUNT_ATTR_RDONLY)
    _libc.umount2(OLDROOT, _libc.MNT_DETACH)
    os.chdir(NEWROOT)
    _libc.pivot_root(".", ".")
    _libc.umount2(".", _libc.MNT_DETACH)
    os.chdir("/")
