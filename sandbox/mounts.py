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

import dataclasses
import errno
import os
import stat
from dataclasses import field

from .compiled_dataclass import dataclass
from . import _libc, sources
from . import faults as _faults
from .profile.model import MASKED_PROC_PATHS, READONLY_PROC_PATHS, SECRET_DIR, Profile

STAGE = "/tmp"  # hidden by the staging tmpfs only inside our own mount namespace
NEWROOT = "/newroot"
OLDROOT = "/oldroot"
SECURE_ATTRS = _libc.MOUNT_ATTR_NOSUID | _libc.MOUNT_ATTR_NODEV


@dataclass(frozen=True)
class Bind:
    """A host path bound at target; read-only unless readonly is False.

    When root launches, the parent has already opened the source (sources.SourceTrees) and
    tree_fd is its detached copy (maybe idmapped). Otherwise the child walks `source` (the real
    path the parent resolved) under /oldroot following no symlink, and, given `identity`, checks
    it found the inode the parent checked."""

    source: str
    target: str
    readonly: bool = True
    noexec: bool = False
    devices: bool = False  # device nodes must stay usable (binds into /dev)
    tree_fd: int = -1  # a detached tree made by the parent (root launches only)
    identity: tuple[int, int] | None = None  # (st_dev, st_ino) the parent found at source

    @property
    def idmap_fd(self) -> int:
        """The name child.needed_fds() knows tree_fd by (it was only for idmapped trees once)."""
        return self.tree_fd


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
    """A small file written into the new root (passwd, group, hosts...), or a secret: content is
    then a secrets.SecretValue (bytes that print as <secret NAME>) and mode 0400."""

    target: str
    content: str | bytes
    mode: int = 0o644


@dataclass(frozen=True)
class Mask:
    """Hide a path: an empty read-only tmpfs on a directory, /dev/null on a file."""

    target: str


@dataclass(frozen=True)
class ReadOnly:
    """Remount an existing path read-only (recursively, and nosuid, nodev: a profile's). An OCI
    bundle's readonlyPaths are as runc makes them: the path alone (its submounts keep their own
    flags: /dev read-only, /dev/shm and /dev/pts writable), nothing added but read-only."""

    target: str
    recursive: bool = True
    secure: bool = True


@dataclass(frozen=True)
class Mount:
    """A mount as an OCI bundle gives it: a file system (fstype, source, data) or, fstype "bind",
    a host path. flags are MS_* (ro, nosuid, nodev, noexec, atime); propagation MS_UNBINDABLE or 0."""

    target: str
    fstype: str
    source: str
    flags: int = 0
    data: str = ""
    recursive: bool = False  # rbind
    copy_up: bool = False  # tmpcopyup: the tmpfs starts with what the directory held
    fallback_bind: str | None = None  # host path bound instead when the kernel refuses the file system
    propagation: int = 0
    idmap_fd: int = -1  # a bind's source, a detached tree the launcher opened as the host sees it


@dataclass(frozen=True)
class DeviceNode:
    """A device file: made with mknod, or, when bind_from is set (no right to mknod in a user
    namespace), the host's node bound over an empty file."""

    target: str
    kind: str  # "c", "b", "p" (fifo)
    major: int
    minor: int
    mode: int = 0o666
    uid: int = 0
    gid: int = 0
    bind_from: str | None = None


@dataclass(frozen=True)
class CgroupTree:
    """/sys/fs/cgroup showing only the sandbox's own cgroups: a tmpfs with each hierarchy's
    directory of the sandbox bound in (dirs: (name below target, host directory)); a single
    ("", dir) binds the directory at target itself (pure cgroup v2)."""

    target: str
    dirs: tuple[tuple[str, str], ...]
    readonly: bool = True


@dataclass(frozen=True)
class Directory:
    """A directory made in the new root if missing (a working directory)."""

    target: str
    mode: int = 0o755


@dataclass(frozen=True)
class ImageRoot:
    """A root made of a container image (sandbox/image): the image's merged tree, read-only, as the
    lower layer of an overlay whose upper layer is a tmpfs of `size`. Mount points and `dirs` are
    made in the tmpfs, and so are the workload's writes when the root is left writable: the
    store is never written. Root launches pass a detached copy the parent made (`idmap_fd`):
    read-only, nosuid, nodev, its on-disk owner (root) mapped to the sandbox's host user."""

    source: str
    size: int
    dirs: tuple[str, ...] = ()
    idmap_fd: int = -1
    target: str = "/"


@dataclass(frozen=True)
class MountPlan:
    """Everything the child does to build the root, in order; pure data made before fork."""

    root_source: str | ImageRoot | None  # None: a fresh tmpfs
    root_size: int
    readonly_root: bool
    operations: tuple = field(default_factory=tuple)
    # A profile's host root is always read-only, nosuid and nodev; an OCI bundle's rootfs is
    # the container's own: writable unless root.readonly, and its flags are the image's.
    root_as_given: bool = False


def _depth(path: str) -> int:
    return 0 if path == "/" else path.count("/")


def build_plan(profile: Profile, opened=None, network_files: tuple | list = ()) -> MountPlan:
    """Profile -> ordered operations. `opened` is the launcher's sources.SourceTrees (opened
    trees, resolved paths, missing optional sources); without it (the verifier's expectations)
    optional sources are looked up by name. (A plain {target: tree fd} dict is accepted too.)
    Pure apart from that and from where the audit log is (kept out). [[secrets]] are planned
    empty: their values are read when a launch starts, and put in by with_secrets().
    network_files: (host file, path inside) pairs from sandbox.net, bound read-only last, over
    whatever the profile put there (a bind, never a write: /etc may be a host bind)."""
    fs = profile.filesystem
    if isinstance(opened, dict):
        trees, resolved, missing = opened, {}, None
    else:
        trees = getattr(opened, "fds", None) or {}
        resolved = getattr(opened, "resolved", None) or {}
        missing = getattr(opened, "missing", None)
    mounts: list = []
    for mount in fs.mounts:
        if missing is not None and mount.target in missing:
            continue
        if missing is None and mount.optional and not os.path.lexists(mount.source):
            continue
        path, dev, ino = resolved.get(mount.target, (mount.source, None, None))
        mounts.append(Bind(path, mount.target, readonly=mount.mode == "ro", noexec=mount.noexec,
                           tree_fd=trees.get(mount.target, -1), identity=(dev, ino) if dev is not None else None))
    for tmpfs in fs.tmpfs:
        mounts.append(Tmpfs(tmpfs.target, tmpfs.size, tmpfs.mode, tmpfs.noexec))
    if fs.proc:
        mounts.append(Proc())
    if fs.sys:
        mounts.append(Bind("/sys", "/sys", readonly=True, noexec=True))
    if fs.dev:
        mounts.append(Tmpfs("/dev", 1 << 20, 0o755, noexec=True))
    mounts += _secret_mounts(profile)
    # Parents before children; stable, so the profile's order breaks ties.
    operations: list = sorted(mounts, key=lambda op: _depth(op.target))
    if fs.dev:
        operations += _dev_operations(fs.devices, fs.dev_shm_size)
    operations += [Symlink(s.target, s.points_to) for s in fs.symlinks]
    operations += [File(f.target, f.content, f.mode) for f in fs.files]
    operations += _secret_files(profile)
    if fs.proc:
        operations += [Mask(p) for p in MASKED_PROC_PATHS if p.startswith("/proc/")]
        operations += [ReadOnly(p) for p in READONLY_PROC_PATHS]
    if fs.sys:
        operations += [Mask(p) for p in MASKED_PROC_PATHS if p.startswith("/sys/")]
    operations += [Mask(p) for p in fs.masked_paths]
    operations += [ReadOnly(p) for p in fs.readonly_paths]
    operations += [Bind(source, target) for source, target in network_files]
    root = None if fs.root == "tmpfs" else fs.root
    operations += _audit_masks(profile, [op for op in mounts if isinstance(op, Bind)], root)
    if profile.image.rootfs:
        root = ImageRoot(profile.image.rootfs, fs.root_size, (profile.process.cwd,), trees.get("/", -1))
        # Listed first among the operations too, where child.needed_fds finds every fd of the plan.
        operations.insert(0, root)
    return MountPlan(root, fs.root_size, fs.readonly_root, tuple(operations))


def _audit_masks(profile: Profile, binds: list, root: str | None) -> list:
    """The audit trail is never visible inside: a bind of a directory above an audit log gets the
    log's directory (or, where the directory holds other things too, each audit file) masked; a
    bind of the log, or of anything inside its own directory, is refused."""
    from .audit import protected_paths
    sources = [(os.path.realpath(op.source), op.target, op.source) for op in binds]
    if root is not None:
        sources.append((os.path.realpath(root), "/", root))
    if not sources:
        return []
    directories, files = protected_paths(profile)
    masks: list = []
    for real, target, source in sources:
        for directory in directories:
            if real == directory or real.startswith(directory + "/"):
                from .errors import SetupError
                raise SetupError("audit", errno.EPERM, f"{source} is the audit log's directory {directory} or in it: "
                                 "the audit trail is never visible inside a sandbox")
        for path in files:
            if real == path:
                from .errors import SetupError
                raise SetupError("audit", errno.EPERM, f"{source} is the audit file {path}: the audit trail is "
                                 "never visible inside a sandbox")
        for path in directories + [f for f in files if os.path.dirname(f) not in directories]:
            if path.startswith(real.rstrip("/") + "/"):
                masks.append(Mask(os.path.join(target, os.path.relpath(path, real))))
    return masks


def _secret_mounts(profile: Profile) -> list:
    """[[secrets]]: a small tmpfs at /run/secrets, only the sandbox user may list it; its size
    is a bound (secrets.MAX_SIZE each), not memory taken."""
    if not profile.secrets:
        return []
    from .secrets import MAX_SIZE
    return [Tmpfs(SECRET_DIR, len(profile.secrets) * (MAX_SIZE + 4096) + 4096, 0o500, noexec=True)]


def _secret_files(profile: Profile) -> list:
    """Each secret as a 0400 file of the sandbox user (init writes it as that user), then the
    tmpfs read-only: the workload can read its secrets and change nothing there."""
    if not profile.secrets:
        return []
    files: list = [File(f"{SECRET_DIR}/{s.name}", b"", 0o400) for s in profile.secrets]
    return files + [ReadOnly(SECRET_DIR)]


def with_secrets(plan: MountPlan, values: dict) -> MountPlan:
    """The plan with each secret's file holding its value (secrets.read_values, at launch)."""
    if not values:
        return plan
    operations = tuple(dataclasses.replace(op, content=values[op.target[len(SECRET_DIR) + 1:]])
                       if isinstance(op, File) and op.target.startswith(SECRET_DIR + "/")
                       and op.target[len(SECRET_DIR) + 1:] in values else op for op in plan.operations)
    return dataclasses.replace(plan, operations=operations)


def with_trees(plan: MountPlan, tree_fds: dict[str, int]) -> MountPlan:
    """The plan with each bind whose target is in tree_fds attached from that detached tree (an
    idmapped copy the parent made) instead of its source path."""
    operations = tuple(dataclasses.replace(op, tree_fd=tree_fds[op.target])
                       if isinstance(op, Bind) and op.target in tree_fds else op for op in plan.operations)
    return dataclasses.replace(plan, operations=operations)


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
    tree = op.tree_fd if op.tree_fd >= 0 else _open_host_tree(op.source, op.identity)
    try:
        is_dir = stat.S_ISDIR(os.fstat(tree).st_mode)
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
        if tree != op.tree_fd:
            os.close(tree)


def _open_host_tree(source: str, identity: tuple[int, int] | None = None) -> int:
    """A detached copy of a host path, walked under /oldroot without following any symlink (the
    launcher resolved the path and judged its links already; a link here now is a swap since)."""
    old_root = os.open(OLDROOT, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        opened = sources.open_path(source, old_root, follow_root_links=False, hint_root=False)
    finally:
        os.close(old_root)
    try:
        if identity is not None and (opened.info.st_dev, opened.info.st_ino) != tuple(identity):
            raise MountError(errno.ESTALE, f"{source} was replaced after the launcher checked it")
        return _clone_tree(opened.fd)
    finally:
        os.close(opened.fd)


def _clone_tree(fd: int) -> int:
    return _libc.open_tree(fd, "", _libc.OPEN_TREE_CLONE | _libc.OPEN_TREE_CLOEXEC | _libc.AT_RECURSIVE
                           | _libc.AT_EMPTY_PATH)


def _mount_at(root_fd: int, target: str, fstype: str, flags: int, data: str | None) -> None:
    fd = _resolve(root_fd, target, "dir")
    try:
        _libc.mount(fstype, _fd_path(fd), fstype, flags, data)
    finally:
        os.close(fd)


def _remount_readonly(root_fd: int, target: str, recursive: bool = True, secure: bool = True) -> None:
    fd = _resolve(root_fd, target)
    try:
        tree = _clone_tree(fd)
        try:
            _libc.mount_setattr(tree, "", _libc.AT_EMPTY_PATH | (_libc.AT_RECURSIVE if recursive else 0),
                                attr_set=_libc.MOUNT_ATTR_RDONLY | (SECURE_ATTRS if secure else 0))
            _attach_tree(tree, fd)
        finally:
            os.close(tree)
    finally:
        os.close(fd)


def _mask(root_fd: int, target: str) -> None:
    try:
        fd = _resolve(root_fd, target)
    except (FileNotFoundError, PermissionError):
        return  # nothing to hide, or out of reach: init, with its capabilities, could not get there
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
            os.write(fd, op.content if isinstance(op.content, bytes) else op.content.encode())
            os.fchmod(fd, op.mode)
        finally:
            os.close(fd)
    _in_parent(root_fd, op.target, create)


def _symlink(root_fd: int, op: Symlink) -> None:
    _in_parent(root_fd, op.target, lambda parent_fd, name: os.symlink(op.points_to, name, dir_fd=parent_fd))


# ---------------------------------------------------------------- OCI kinds

_ATTR_OF_FLAG = {_libc.MS_RDONLY: _libc.MOUNT_ATTR_RDONLY, _libc.MS_NOSUID: _libc.MOUNT_ATTR_NOSUID,
                 _libc.MS_NODEV: _libc.MOUNT_ATTR_NODEV, _libc.MS_NOEXEC: _libc.MOUNT_ATTR_NOEXEC}
MOUNT_ATTR_NOATIME, MOUNT_ATTR_STRICTATIME, MOUNT_ATTR_NODIRATIME, MOUNT_ATTR__ATIME = 0x10, 0x20, 0x80, 0x70


def _mount_attrs(flags: int) -> tuple[int, int]:
    """(attr_set, attr_clr) for mount_setattr from MS_* flags."""
    attrs = 0
    for flag, attr in _ATTR_OF_FLAG.items():
        if flags & flag:
            attrs |= attr
    clear = 0
    if flags & (_libc.MS_NOATIME | _libc.MS_STRICTATIME | _libc.MS_RELATIME):
        clear = MOUNT_ATTR__ATIME
        attrs |= MOUNT_ATTR_NOATIME if flags & _libc.MS_NOATIME else 0
        attrs |= MOUNT_ATTR_STRICTATIME if flags & _libc.MS_STRICTATIME else 0
    attrs |= MOUNT_ATTR_NODIRATIME if flags & _libc.MS_NODIRATIME else 0
    return attrs, clear


def _bind_oci(root_fd: int, source: str, target: str, flags: int, recursive: bool) -> None:
    old_root = os.open(OLDROOT, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _libc.openat2(old_root, source.lstrip("/") or ".", os.O_PATH | os.O_CLOEXEC, _libc.RESOLVE_IN_ROOT)
    finally:
        os.close(old_root)
    try:
        tree = _libc.open_tree(fd, "", _libc.OPEN_TREE_CLONE | _libc.OPEN_TREE_CLOEXEC | _libc.AT_EMPTY_PATH
                               | (_libc.AT_RECURSIVE if recursive else 0))
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    try:
        attrs, clear = _mount_attrs(flags)
        if attrs or clear:
            _libc.mount_setattr(tree, "", _libc.AT_EMPTY_PATH | (_libc.AT_RECURSIVE if recursive else 0),
                                attr_set=attrs, attr_clr=clear)
        where = _resolve(root_fd, target, "dir" if is_dir else "file")
        try:
            _attach_tree(tree, where)
        finally:
            os.close(where)
    finally:
        os.close(tree)


def _attach_oci_tree(root_fd: int, tree: int, target: str, flags: int, recursive: bool) -> None:
    """A bind whose source the launcher opened (open_tree) with the host's view and credentials:
    a container's own user namespace may not be allowed to reach the source's path."""
    attrs, clear = _mount_attrs(flags)
    if attrs or clear:
        _libc.mount_setattr(tree, "", _libc.AT_EMPTY_PATH | (_libc.AT_RECURSIVE if recursive else 0),
                            attr_set=attrs, attr_clr=clear)
    where = _resolve(root_fd, target, "dir" if stat.S_ISDIR(os.fstat(tree).st_mode) else "file")
    try:
        _attach_tree(tree, where)
    finally:
        os.close(where)


def open_oci_bind_trees(plan: MountPlan) -> tuple[MountPlan, list[int]]:
    """Launcher side: the plan with each OCI bind's source opened now (a detached copy, as the
    host sees the path), and the descriptors to close once the child has them (runc 1.1 does the
    same for containers with a user namespace: their root may not reach the source's path)."""
    opened: list[int] = []
    operations = []
    try:
        for op in plan.operations:
            if isinstance(op, Mount) and op.fstype == "bind" and op.idmap_fd < 0:
                tree = _libc.open_tree(_libc.AT_FDCWD, op.source, _libc.OPEN_TREE_CLONE | _libc.OPEN_TREE_CLOEXEC
                                       | (_libc.AT_RECURSIVE if op.recursive else 0))
                opened.append(tree)
                op = dataclasses.replace(op, idmap_fd=tree)
            operations.append(op)
    except BaseException:
        for fd in opened:
            os.close(fd)
        raise
    return dataclasses.replace(plan, operations=tuple(operations)), opened


def _copy_tree(source_fd: int, target_fd: int) -> None:
    """tmpcopyup: what the directory held below a fresh tmpfs, copied into it (owners and modes kept)."""
    for entry in os.scandir(source_fd):
        info = entry.stat(follow_symlinks=False)
        name = entry.name
        if stat.S_ISDIR(info.st_mode):
            os.mkdir(name, info.st_mode & 0o7777, dir_fd=target_fd)
            sub_source = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=source_fd)
            sub_target = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=target_fd)
            try:
                _copy_tree(sub_source, sub_target)
            finally:
                os.close(sub_source)
                os.close(sub_target)
        elif stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(name, dir_fd=source_fd), name, dir_fd=target_fd)
        elif stat.S_ISREG(info.st_mode):
            src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=source_fd)
            dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                          info.st_mode & 0o7777, dir_fd=target_fd)
            try:
                while chunk := os.read(src, 1 << 20):
                    os.write(dst, chunk)
            finally:
                os.close(src)
                os.close(dst)
        else:
            continue  # sockets, fifos, device nodes: not copied
        os.chown(name, info.st_uid, info.st_gid, dir_fd=target_fd, follow_symlinks=False)
        if not stat.S_ISLNK(info.st_mode):
            os.chmod(name, info.st_mode & 0o7777, dir_fd=target_fd)


def _mount_oci(root_fd: int, op: Mount) -> None:
    if op.fstype == "bind" and op.idmap_fd >= 0:
        _attach_oci_tree(root_fd, op.idmap_fd, op.target, op.flags, op.recursive)
    elif op.fstype == "bind":
        _bind_oci(root_fd, op.source, op.target, op.flags, op.recursive)
    else:
        fd = _resolve(root_fd, op.target, "dir")
        try:
            below = os.open(_fd_path(fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if op.copy_up else -1
            try:
                try:
                    _libc.mount(op.source, _fd_path(fd), op.fstype, op.flags, op.data or None)
                except OSError as exc:
                    if op.fallback_bind is None or exc.errno not in (errno.EPERM, errno.EACCES, errno.EINVAL):
                        raise
                    # sysfs and mqueue of namespaces our user namespace does not own: the host's, bound
                    _bind_oci(root_fd, op.fallback_bind, op.target, op.flags, True)
                    return
                if below >= 0:
                    # `below`, opened before the mount, still shows the directory beneath it
                    new_top = _resolve(root_fd, op.target)
                    try:
                        top = os.open(_fd_path(new_top), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    finally:
                        os.close(new_top)
                    try:
                        _copy_tree(below, top)
                    finally:
                        os.close(top)
            finally:
                if below >= 0:
                    os.close(below)
        finally:
            os.close(fd)
    if op.propagation:
        where = _resolve(root_fd, op.target)
        try:
            _libc.mount(None, _fd_path(where), None, op.propagation)
        finally:
            os.close(where)


def _device_node(root_fd: int, op: DeviceNode) -> None:
    kinds = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}

    def create(parent_fd: int, name: str) -> None:
        try:
            os.unlink(name, dir_fd=parent_fd)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise OSError(errno.EISDIR, f"{op.target} is a directory") from None
        if op.bind_from is None:
            os.mknod(name, kinds[op.kind] | (op.mode & 0o7777), os.makedev(op.major, op.minor), dir_fd=parent_fd)
            os.chown(name, op.uid, op.gid, dir_fd=parent_fd, follow_symlinks=False)
            os.chmod(name, op.mode & 0o7777, dir_fd=parent_fd)  # just made by us: no symlink
        else:
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=parent_fd))
    _in_parent(root_fd, op.target, create)
    if op.bind_from is not None:
        _bind_oci(root_fd, op.bind_from, op.target, _libc.MS_NOSUID | _libc.MS_NOEXEC, False)


def _cgroup_tree(root_fd: int, op: CgroupTree) -> None:
    flags = _libc.MS_RDONLY if op.readonly else 0
    # A rootless container may have no cgroup of its own: then it sees none (an empty tmpfs),
    # never the host's tree.
    dirs = [(name, path) for name, path in op.dirs if os.path.isdir(OLDROOT + path)]
    if len(dirs) == 1 and dirs[0][0] == "":
        _bind_oci(root_fd, dirs[0][1], op.target, flags | SECURE_FLAGS, True)
        return
    _mount_at(root_fd, op.target, "tmpfs", SECURE_FLAGS, "mode=755,size=64k")
    for name, host_dir in dirs:
        _bind_oci(root_fd, host_dir, f"{op.target}/{name}", flags | SECURE_FLAGS, True)
    if op.readonly:
        top = _resolve(root_fd, op.target)
        try:
            _libc.mount_setattr(top, "", _libc.AT_EMPTY_PATH, attr_set=_libc.MOUNT_ATTR_RDONLY)
        finally:
            os.close(top)


SECURE_FLAGS = _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC


def _apply_one(root_fd: int, op) -> None:
    secure = _libc.MS_NOSUID | _libc.MS_NODEV
    if isinstance(op, Mount):
        _mount_oci(root_fd, op)
    elif isinstance(op, DeviceNode):
        _device_node(root_fd, op)
    elif isinstance(op, CgroupTree):
        _cgroup_tree(root_fd, op)
    elif isinstance(op, Directory):
        os.close(_resolve(root_fd, op.target, "dir"))
    elif isinstance(op, Bind):
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
    elif isinstance(op, ImageRoot):
        pass  # mounted first, by enter_new_root
    elif isinstance(op, ReadOnly):
        try:
            _remount_readonly(root_fd, op.target, op.recursive, op.secure)
        except FileNotFoundError:
            pass
    else:
        raise TypeError(op)


def _mount_image_root(root: ImageRoot) -> None:
    """The image's tree at /image in the staging tmpfs, an overlay of it at NEWROOT (see ImageRoot)."""
    tree = root.idmap_fd if root.idmap_fd >= 0 else _open_host_tree(root.source)
    try:
        _libc.mount_setattr(tree, "", _libc.AT_EMPTY_PATH | _libc.AT_RECURSIVE,
                            attr_set=SECURE_ATTRS | _libc.MOUNT_ATTR_RDONLY)
        os.mkdir("/image", 0o755)
        image_dir = os.open("/image", os.O_PATH | os.O_CLOEXEC)
        try:
            _attach_tree(tree, image_dir)
        finally:
            os.close(image_dir)
    finally:
        if tree != root.idmap_fd:
            os.close(tree)
    os.mkdir("/rw", 0o755)
    _libc.mount("tmpfs", "/rw", "tmpfs", _libc.MS_NOSUID | _libc.MS_NODEV, f"size={root.size},mode=0755")
    os.mkdir("/rw/upper", 0o755)
    os.mkdir("/rw/work", 0o755)
    options = "lowerdir=/image,upperdir=/rw/upper,workdir=/rw/work"
    try:
        # user.* xattrs: what an overlay mounted in a user namespace may write to its upper layer
        _libc.mount("overlay", NEWROOT, "overlay", _libc.MS_NOSUID | _libc.MS_NODEV, options + ",userxattr")
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        _libc.mount("overlay", NEWROOT, "overlay", _libc.MS_NOSUID | _libc.MS_NODEV, options)


def describe(op) -> str:
    kind = type(op).__name__.lower()
    source = getattr(op, "source", None)
    return f"{kind} {source} -> {op.target}" if source else f"{kind} {op.target}"


def enter_new_root(plan: MountPlan, faults: tuple = ()) -> None:
    """Build the root from the plan and pivot into it. Raises MountError naming the operation.
    `faults`: tests only (sandbox/faults.py), "mount:<kind>" or "pivot_root" fail as injected."""
    _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)
    _libc.mount("tmpfs", STAGE, "tmpfs", _libc.MS_NOSUID | _libc.MS_NODEV, "size=1M,mode=0755")
    os.mkdir(STAGE + NEWROOT)
    os.mkdir(STAGE + OLDROOT)
    _libc.pivot_root(STAGE, STAGE + OLDROOT)
    os.chdir("/")
    if plan.root_source is None:
        _libc.mount("tmpfs", NEWROOT, "tmpfs", _libc.MS_NOSUID | _libc.MS_NODEV,
                    f"size={plan.root_size},mode=0755")
    elif isinstance(plan.root_source, ImageRoot):
        try:
            _mount_image_root(plan.root_source)
        except OSError as exc:
            raise MountError(exc.errno or errno.EIO, f"image root {plan.root_source.source}: "
                                                     f"{exc.strerror or exc}") from None
    else:
        tree = _open_host_tree(plan.root_source)
        if not plan.root_as_given:
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
                if faults:
                    _faults.fail_if_injected(f"mount:{type(op).__name__.lower()}", faults)
                _apply_one(root_fd, op)
            except OSError as exc:
                raise MountError(exc.errno or errno.EIO, f"{describe(op)}: {exc.strerror or exc}") from None
        if isinstance(plan.root_source, ImageRoot):
            for path in plan.root_source.dirs:
                try:
                    os.close(_resolve(root_fd, path, "dir"))
                except OSError:
                    pass  # e.g. the fallback without an overlay: chdir will say what is missing
    finally:
        os.close(root_fd)
    if plan.readonly_root:
        _libc.mount_setattr(-100, NEWROOT, 0, attr_set=_libc.MOUNT_ATTR_RDONLY
                            | (0 if plan.root_as_given else SECURE_ATTRS))
    if any(isinstance(op, Devpts) for op in plan.operations):
        # /dev itself read-only once populated (not recursively: /dev/shm and /dev/pts stay
        # writable, and device nodes are writable on a read-only mount anyway).
        _libc.mount_setattr(-100, NEWROOT + "/dev", 0, attr_set=_libc.MOUNT_ATTR_RDONLY)
    _libc.umount2(OLDROOT, _libc.MNT_DETACH)
    os.chdir(NEWROOT)
    if faults:
        try:
            _faults.fail_if_injected("pivot_root", faults)
        except OSError as exc:
            raise MountError(exc.errno, f"pivot_root: {exc.strerror}") from None
    _libc.pivot_root(".", ".")
    _libc.umount2(".", _libc.MNT_DETACH)
    os.chdir("/")
