"""Idmapped trees for a container with a host id range of its own (the floor's user namespace).

The container's ids 0..size-1 are host ids base..base+size-1. Files keep their on-disk owners,
shown to the container through idmapped mounts (MOUNT_ATTR_IDMAP). An idmapping is written like a
uid_map, "disk-id host-id count": a file owned by disk-id appears inside as the container id whose
host id is host-id, and a file the container makes as that id is written as disk-id.

    the rootfs, and what the engine made for this container alone, and read-only binds:
        "0 base size": on-disk N is container N, both ways (what runc shows and writes)
    a read-write volume (any other bind), never disk 0 (sources.py's rule):
        the workload runs as root and the source belongs to U:G (neither 0):
            "U base 1" + identity for 1..size-1 but U: container root writes as the volume's owner,
            and container uid U, which is root's on this volume, is left out
        otherwise: identity for 1..size-1; container root has no id on this volume (its writes fail)

An overlayfs root (what podman, Docker and containerd hand over) cannot be idmapped itself: the
overlay is made again, by the runtime, from the engine's own layers, each an idmapped mount
(overlayfs takes layers by file descriptor, Linux 6.13). Same lower, upper and work directories,
so the engine's storage gets the writes as it would have from its own mount.
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat

from .. import _libc

FSCONFIG_SET_FLAG, FSCONFIG_SET_STRING, FSCONFIG_SET_FD, FSCONFIG_CMD_CREATE = 0, 1, 5, 6
FSOPEN_CLOEXEC, FSMOUNT_CLOEXEC = 1, 1
_NR = {"x86_64": {"fsopen": 430, "fsconfig": 431, "fsmount": 432},
       "aarch64": {"fsopen": 430, "fsconfig": 431, "fsmount": 432}}[os.uname().machine]
# Overlay options (the engine's) passed on as they are; the layers are given by descriptor.
LAYER_KEYS = ("lowerdir", "lowerdir+", "upperdir", "workdir", "datadir+")


def _syscall(name: str, *args) -> int:
    ret = _libc.libc.syscall(ctypes.c_long(_NR[name]), *args)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return ret


def _fsconfig(fd: int, command: int, key: str | None = None, value: str | None = None, aux: int = 0) -> None:
    _syscall("fsconfig", ctypes.c_int(fd), ctypes.c_uint(command), key.encode() if key else None,
             value.encode() if value is not None else None, ctypes.c_int(aux))


# ---------------------------------------------------------------- mappings

def identity(base: int, size: int) -> str:
    return f"0 {base} {size}\n"


def volume_lines(base: int, size: int, owner: int | None) -> str:
    """A read-write volume's idmapping of one kind (uid or gid): see the module's docstring."""
    if owner is None:
        return f"1 {base + 1} {size - 1}\n" if size > 1 else ""
    lines = [f"{owner} {base} 1"]
    if owner < size:
        if owner > 1:
            lines.append(f"1 {base + 1} {owner - 1}")
        if owner < size - 1:
            lines.append(f"{owner + 1} {base + owner + 1} {size - owner - 1}")
    elif size > 1:
        lines.append(f"1 {base + 1} {size - 1}")
    return "\n".join(lines) + "\n"


def never_host_root(lines: str) -> bool:
    """Whether no disk id 0 appears: writes there never land as host root."""
    for line in lines.splitlines():
        disk, _host, count = (int(n) for n in line.split())
        if disk <= 0 < disk + count:
            return False
    return True


class Namespaces:
    """One throwaway user namespace per distinct mapping (sandbox.namespaces.MappingUserNamespace)."""

    def __init__(self):
        self._made: dict[tuple[str, str], object] = {}

    def fd(self, uid_lines: str, gid_lines: str) -> int:
        key = (uid_lines, gid_lines)
        if key not in self._made:
            from ..namespaces import MappingUserNamespace
            self._made[key] = MappingUserNamespace(uid_lines, gid_lines)
        return self._made[key].fd

    def close(self) -> None:
        for made in self._made.values():
            made.close()
        self._made.clear()


# ---------------------------------------------------------------- binds

def idmapped_clone(fd: int, recursive: bool, userns_fd: int) -> int:
    """A detached copy of the tree at fd (O_PATH), idmapped. Raises OSError (EINVAL: the file
    system cannot be idmapped)."""
    tree = _libc.open_tree(fd, "", _libc.OPEN_TREE_CLONE | _libc.OPEN_TREE_CLOEXEC | _libc.AT_EMPTY_PATH
                           | (_libc.AT_RECURSIVE if recursive else 0))
    try:
        _libc.mount_setattr(tree, "", _libc.AT_EMPTY_PATH | (_libc.AT_RECURSIVE if recursive else 0),
                            attr_set=_libc.MOUNT_ATTR_IDMAP, userns_fd=userns_fd)
    except BaseException:
        os.close(tree)
        raise
    return tree


def plain_clone(fd: int, recursive: bool) -> int:
    return _libc.open_tree(fd, "", _libc.OPEN_TREE_CLONE | _libc.OPEN_TREE_CLOEXEC | _libc.AT_EMPTY_PATH
                           | (_libc.AT_RECURSIVE if recursive else 0))


# ---------------------------------------------------------------- the root

def _unescape(text: str) -> str:
    """mountinfo's octal escapes (\\040 for a space...)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1:i + 4].isdigit():
            out.append(chr(int(text[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def mount_of(path: str) -> dict | None:
    """The mount whose mount point is exactly `path` (the topmost), from /proc/self/mountinfo:
    {"fstype", "source", "options": [super options], "flags": [mount options]}; None if path is
    not a mount point."""
    found = None
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            left, _, right = line.rstrip("\n").partition(" - ")
            fields = left.split()
            if len(fields) < 6 or _unescape(fields[4]) != path:
                continue
            kind, source, *rest = right.split(" ")
            found = {"fstype": kind, "source": source, "options": _split_options(rest[0] if rest else ""),
                     "flags": fields[5].split(",")}
    return found


def _split_options(text: str) -> list[str]:
    """Super options split at the commas that separate them (a backslash escapes one)."""
    options, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == ",":
            options.append("".join(current))
            current = []
        else:
            current.append(ch)
    if current:
        options.append("".join(current))
    return options


def _split_layers(text: str) -> list[str]:
    """lowerdir's layers: ':' separates, '\\:' is a colon in a name, '::' starts data-only layers
    (refused here: the caller says what it cannot rebuild)."""
    layers, current, i = [], [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in ":,\\":
            current.append(text[i + 1])
            i += 2
            continue
        if text[i] == ":":
            if i + 1 < len(text) and text[i + 1] == ":":
                raise ValueError("data-only lower layers ('::')")
            layers.append("".join(current))
            current = []
        else:
            current.append(text[i])
        i += 1
    layers.append("".join(current))
    return [_unescape(layer) for layer in layers]


def overlay_layers(info: dict, root: str) -> dict:
    """{"lower": [...], "upper": path|None, "work": path|None, "options": [(key, value|None)]} of an
    overlay mount, relative layer paths resolved (an engine that mounts from its storage directory
    gives them relative to it: containers/storage and Docker's overlay2 to the parent of
    <id>/merged, containerd to the parent of <n>/fs). Raises ValueError for what cannot be read."""
    lower: list[str] = []
    upper = work = None
    options = []
    for option in info["options"]:
        key, sep, value = option.partition("=")
        if key == "lowerdir":
            lower += _split_layers(value)
        elif key == "lowerdir+":
            lower.append(_unescape(value))
        elif key == "datadir+":
            raise ValueError("data-only lower layers (datadir+)")
        elif key == "upperdir":
            upper = _unescape(value)
        elif key == "workdir":
            work = _unescape(value)
        elif key in ("rw", "ro", "volatile") or (key == "fsync" and value == "volatile"):
            continue  # (volatile: the engine's choice for its own mount; ours syncs)
        else:
            options.append((key, _unescape(value) if sep else None))
    if not lower:
        raise ValueError("an overlay without lower layers")
    relative = [p for p in lower + [upper, work] if p and not p.startswith("/")]
    if relative:
        bases = []
        for absolute in (upper, work, *lower):
            if absolute and absolute.startswith("/"):
                bases.append(os.path.dirname(os.path.dirname(absolute)))
        bases.append(os.path.dirname(os.path.dirname(root)))
        for base in dict.fromkeys(bases):
            if _engine_directory(base) and all(os.path.isdir(os.path.join(base, p)) for p in relative):
                resolve = (lambda p, base=base: p if p is None or p.startswith("/") else os.path.join(base, p))
                lower, upper, work = [resolve(p) for p in lower], resolve(upper), resolve(work)
                break
        else:
            raise ValueError(f"relative layer paths ({relative[0]}...) not found under the engine's storage")
    return {"lower": lower, "upper": upper, "work": work, "options": options}


def _engine_directory(path: str) -> bool:
    """A directory only root could have made there (its owner root, writable by no one else)."""
    try:
        info = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == 0 and not info.st_mode & 0o022


def open_root(root: str, userns_fd: int, mounter: tuple[int, int]) -> tuple[int, str, str | None]:
    """(a detached tree for the container's root, how it was made, the overlay work directory made
    for it or None). A plain directory: an
    idmapped clone of it. An overlay mount: a new overlay of the same layers, each idmapped (made
    in a forked helper with a mount namespace of its own, where the layers are attached long
    enough to be given to overlayfs, opened as `mounter`, the container root's host ids). Raises
    OSError or ValueError saying what failed."""
    info = mount_of(root)
    if info is None or info["fstype"] != "overlay":
        fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return idmapped_clone(fd, True, userns_fd), f"idmapped clone of {root}", None
        finally:
            os.close(fd)
    layers = overlay_layers(info, root)
    if layers["upper"]:
        # A work directory of our own beside the engine's: overlayfs refuses a second mount on a
        # work directory a volatile mount (podman run --rm) has marked, and two overlays should
        # not share one. Removed at delete (remove_workdir), and with the layer by the engine.
        layers["work"] = workdir_for(layers["upper"])
        remove_workdir(layers["work"])
        os.mkdir(layers["work"], 0o700)
    try:
        tree = _overlay_in_helper(layers, userns_fd, info["flags"], mounter)
    except BaseException:
        if layers["upper"]:
            remove_workdir(layers["work"])
        raise
    return tree, (f"overlay rebuilt from the engine's layers, each idmapped ({len(layers['lower'])} lower"
                  f"{', upper' if layers['upper'] else ''})"), layers["work"] if layers["upper"] else None


WORKDIR_NAME = "sandbox-runtime-work"


def workdir_for(upper: str) -> str:
    return os.path.join(os.path.dirname(upper), WORKDIR_NAME)


def remove_workdir(path: str) -> None:
    """Our overlay work directory (only what overlayfs put there: its own empty directories)."""
    if os.path.basename(path) != WORKDIR_NAME:
        return
    import shutil
    try:
        for sub, dirs, _files in os.walk(path):
            for name in dirs:
                os.chmod(os.path.join(sub, name), 0o700)  # overlayfs makes work/work mode 000
        shutil.rmtree(path)
    except FileNotFoundError:
        pass


def _overlay_in_helper(layers: dict, userns_fd: int, flags: list[str], mounter: tuple[int, int]) -> int:
    import socket
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            try:
                fd = _make_overlay(layers, userns_fd, flags, mounter)
                socket.send_fds(theirs, [b"ok"], [fd])
            except OSError as exc:
                theirs.sendall(f"{exc.errno or 0} {exc.strerror or exc}".encode(errors="replace"))
            except BaseException as exc:  # noqa: BLE001 - say what happened rather than die silently
                theirs.sendall(f"0 {type(exc).__name__}: {exc}".encode(errors="replace"))
        finally:
            os._exit(0)
    theirs.close()
    try:
        message, fds, _, _ = socket.recv_fds(ours, 4096, 1)
    finally:
        ours.close()
        os.waitpid(pid, 0)
    if message == b"ok" and fds:
        return fds[0]
    for fd in fds:
        os.close(fd)
    number, _, text = message.decode(errors="replace").partition(" ")
    raise OSError(int(number) if number.isdigit() else 0, text or "the overlay helper failed")


def _as_mounter(host_uid: int, host_gid: int) -> None:
    """The overlay's own operations (its work directory, copy-up) run with the credentials of
    whoever opened it, through the idmapped layers, where host root has no id: open it with the
    file system ids of the container's root (which the layers map to disk 0), keeping every
    capability (a change of fsuid clears the file-system ones from the effective set)."""
    import prctl
    _libc.libc.setfsgid(host_gid)
    _libc.libc.setfsuid(host_uid)
    if os.getuid() == 0:
        for name in ("chown", "dac_override", "dac_read_search", "fowner", "fsetid", "mknod", "linux_immutable"):
            setattr(prctl.cap_effective, name, True)


def _make_overlay(layers: dict, userns_fd: int, flags: list[str], mounter: tuple[int, int]) -> int:
    """In the helper, in a mount namespace of its own: the layers' directories opened (the engine's
    paths), then each cloned, idmapped and attached in a private staging tmpfs (mounted after they
    are open: it may hide them), and given to overlayfs by descriptor."""
    # (upperdir and workdir must be on one mount: their common parent is attached, once)
    trees = [([("lowerdir+", "")], path) for path in layers["lower"]]
    if layers["upper"]:
        parent = os.path.commonpath([layers["upper"], layers["work"]])
        trees.append(([("upperdir", os.path.relpath(layers["upper"], parent)),
                       ("workdir", os.path.relpath(layers["work"], parent))], parent))
    _libc.unshare(_libc.CLONE_NEWNS)
    _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)
    opened = [(keys, os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)) for keys, path in trees]
    stage = "/tmp"
    _libc.mount("tmpfs", stage, "tmpfs", _libc.MS_NOSUID | _libc.MS_NODEV, "mode=0700,size=64k")
    _as_mounter(*mounter)
    fs = _syscall("fsopen", b"overlay", ctypes.c_uint(FSOPEN_CLOEXEC))
    for index, (keys, fd) in enumerate(opened):
        tree = idmapped_clone(fd, False, userns_fd)
        where = os.path.join(stage, str(index))
        os.mkdir(where, 0o700)
        _libc.move_mount(tree, "", _libc.AT_FDCWD, where, _libc.MOVE_MOUNT_F_EMPTY_PATH)
        os.close(tree)
        for key, below in keys:
            attached = os.open(os.path.join(where, below) if below else where,
                               os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            _fsconfig(fs, FSCONFIG_SET_FD, key, None, attached)
            os.close(attached)
    for key, value in layers["options"]:
        if value is None:
            _fsconfig(fs, FSCONFIG_SET_FLAG, key)
        else:
            _fsconfig(fs, FSCONFIG_SET_STRING, key, value)
    try:
        _fsconfig(fs, FSCONFIG_CMD_CREATE)
    except OSError as exc:
        detail = _fs_log(fs)
        raise OSError(exc.errno, f"overlay: {detail or exc.strerror}") from None
    attrs = 0
    for flag, attr in (("nodev", _libc.MOUNT_ATTR_NODEV), ("nosuid", _libc.MOUNT_ATTR_NOSUID),
                       ("noexec", _libc.MOUNT_ATTR_NOEXEC)):
        if flag in flags:
            attrs |= attr
    return _syscall("fsmount", ctypes.c_int(fs), ctypes.c_uint(FSMOUNT_CLOEXEC), ctypes.c_uint(attrs))


def _fs_log(fs: int) -> str:
    lines = []
    while True:
        try:
            lines.append(os.read(fs, 4096).decode(errors="replace").strip())
        except OSError:
            return "; ".join(line[2:] if line[:2] in ("e ", "w ", "i ") else line for line in lines)


def idmap_supported_error(exc: OSError) -> bool:
    """Whether mount_setattr refused an idmapping because of the file system."""
    return exc.errno in (errno.EINVAL, errno.EPERM, errno.EOPNOTSUPP)
