"""Unpacking layers safely, and merging them into an image's root tree.

A layer is a tar stream written by whoever built the image: it is hostile until proven otherwise.
Python's tarfile parses it (streaming, never `extractall`); a strict filter of our own refuses
what has no place in a layer, and every write goes through a directory fd opened with
openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV), so no path, symlink or race can
lead outside the layer's tree:

    absolute member names, '..' components        refused (the layer is rejected)
    writing beneath a symlink (a/b with a a link)  refused
    hardlinks                                      only to a regular file of the same layer
    symlinks                                       kept as data (resolved inside the sandbox's root,
                                                   never followed here); reported by the scanner
    device nodes                                   never created; recorded for the scanner
    setuid/setgid bits                             stripped on disk; recorded (the image's setuid
                                                   variant restores them on copies, see store.py)
    file capabilities and other xattrs             never set; capabilities recorded
    owners                                         never applied: on disk everything belongs to the
                                                   store's owner; the tar's ids are recorded
    whiteouts (.wh.NAME) and opaque dirs           recorded, applied when layers are merged, as the
    (.wh..wh..opq)                                 OCI image spec says

Each layer's tree is unpacked once and shared: an image's root (`rootfs/`) is a tree of
hardlinks into its layers' trees, built by `merge()`, with whiteouts applied.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile

from .. import _libc

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_ENTRIES = 2_000_000
MAX_NAME = 4096
_RESOLVE = _libc.RESOLVE_BENEATH | _libc.RESOLVE_NO_SYMLINKS | _libc.RESOLVE_NO_MAGICLINKS | _libc.RESOLVE_NO_XDEV
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
CAPS_XATTR = "SCHILY.xattr.security.capability"


class HostileLayer(ValueError):
    """A layer that tries something no honest layer does; the whole layer is refused."""


class LayerError(ValueError):
    """A layer that cannot be used (corrupt, wrong digest, unsupported compression)."""


# ---------------------------------------------------------------- streams

class _HashingReader:
    """A file-like wrapper hashing what is read through it (the layer's diff_id)."""

    def __init__(self, raw):
        self.raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def _decompressed(blob):
    """(stream, closer) for a layer blob, by its magic bytes (media types are often wrong)."""
    magic = blob.read(4)
    blob.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=blob, mode="rb"), None
    if magic == b"\x28\xb5\x2f\xfd":
        zstd = shutil.which("zstd")
        if zstd is None:
            raise LayerError("a zstd-compressed layer and no zstd program to read it (install zstd, "
                             "or convert the image with skopeo copy --dest-compress-format gzip)")
        process = subprocess.Popen([zstd, "-dcq"], stdin=blob, stdout=subprocess.PIPE)
        return process.stdout, process
    return blob, None


# ---------------------------------------------------------------- the filter

def _clean_name(name: str, what: str) -> str:
    """A member name as a relative path of plain components, or HostileLayer."""
    if "\0" in name or len(name) > MAX_NAME:
        raise HostileLayer(f"{what} {name[:80]!r}: not a path")
    if name.startswith("/"):
        raise HostileLayer(f"{what} {name!r}: an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise HostileLayer(f"{what} {name!r}: a '..' component")
    return "/".join(parts)


def layer_filter(member: tarfile.TarInfo) -> dict:
    """The strict filter: a member -> an index entry (what the layer says), or HostileLayer."""
    path = _clean_name(member.name, "member")
    base = path.rsplit("/", 1)[-1]
    entry: dict = {"path": path, "mode": member.mode & 0o7777, "uid": member.uid, "gid": member.gid,
                   "mtime": int(member.mtime) if member.mtime else 0}
    if base.startswith(WHITEOUT):
        hidden = base[len(WHITEOUT):]
        if base == OPAQUE:
            entry.update(type="opaque", path=path.rpartition("/")[0])
        elif not hidden or hidden in (".", "..") or hidden.startswith(WHITEOUT):
            raise HostileLayer(f"whiteout {member.name!r}: names nothing a layer below can hold")
        else:
            entry.update(type="whiteout", path=(path.rpartition("/")[0] + "/" + hidden).lstrip("/"))
        return entry
    if not path:
        entry["type"] = "dir"  # the layer's own root ("./"): its mode is the root's
        return entry
    if member.isdir():
        entry["type"] = "dir"
    elif member.isreg():
        entry.update(type="file", size=member.size)
    elif member.issym():
        if not member.linkname or "\0" in member.linkname or len(member.linkname) > MAX_NAME:
            raise HostileLayer(f"symlink {member.name!r}: an empty or invalid target")
        entry.update(type="symlink", link=member.linkname)
    elif member.islnk():
        entry.update(type="hardlink", link=_clean_name(member.linkname, f"hardlink {member.name!r} to"))
        if entry["link"] == path or not entry["link"]:
            raise HostileLayer(f"hardlink {member.name!r}: to itself")
    elif member.ischr() or member.isblk():
        entry.update(type="char" if member.ischr() else "block", major=member.devmajor, minor=member.devminor)
    elif member.isfifo():
        entry["type"] = "fifo"
    else:
        raise HostileLayer(f"member {member.name!r}: an unknown tar entry type {member.type!r}")
    caps = member.pax_headers.get(CAPS_XATTR) if member.pax_headers else None
    if caps:
        entry["capabilities"] = caps.encode("latin-1", "replace").hex()
    return entry


# ---------------------------------------------------------------- writing beneath a root fd

class _Tree:
    """Writes beneath one directory, never through a symlink, never onto another file system."""

    def __init__(self, root: str, *, rootless: bool):
        self.root_fd = os.open(root, _DIR_FLAGS)
        self.rootless = rootless
        self.dir_modes: dict[str, int] = {}
        self.files: dict[str, tuple[int, int]] = {}  # regular files made here: path -> (dev, ino)
        self.implicit: dict[str, None] = {}  # directories made because a member lay beneath them

    def close(self) -> None:
        os.close(self.root_fd)

    def open_dir(self, path: str, create: bool = True) -> int:
        """fd of directory `path` (relative), made with its parents when missing (implicit dirs)."""
        if not path:
            return os.dup(self.root_fd)
        try:
            return _libc.openat2(self.root_fd, path, _DIR_FLAGS, _RESOLVE)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EXDEV, errno.ENOTDIR):
                raise HostileLayer(f"{path!r}: a member beneath a symlink or a file (a write through a link)") \
                    from None
            if exc.errno != errno.ENOENT or not create:
                raise
        parent, _, name = path.rpartition("/")
        parent_fd = self.open_dir(parent)
        try:
            try:
                os.mkdir(name, 0o700, dir_fd=parent_fd)
                self.dir_modes.setdefault(path, 0o755)
                self.implicit[path] = None
            except FileExistsError:
                pass
            return self._open_child_dir(parent_fd, name, path)
        finally:
            os.close(parent_fd)

    def _open_child_dir(self, parent_fd: int, name: str, path: str) -> int:
        try:
            return _libc.openat2(parent_fd, name, _DIR_FLAGS, _RESOLVE)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
                raise HostileLayer(f"{path!r}: a member beneath a symlink or a file (a write through a link)") \
                    from None
            raise

    def remove(self, parent_fd: int, name: str) -> None:
        """Remove whatever `name` is (a later member replaces an earlier one), never following links."""
        try:
            info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(name, dir_fd=parent_fd)  # fd-based on Linux: safe against symlink races
        else:
            os.unlink(name, dir_fd=parent_fd)


def _write_member(tree: _Tree, tar: tarfile.TarFile, member: tarfile.TarInfo, entry: dict) -> None:
    kind = entry["type"]
    path = entry["path"]
    mode = entry["mode"] & 0o1777  # setuid and setgid never reach the disk
    if tree.rootless:  # we must be able to read what we store (and traverse, and later merge)
        mode |= 0o700 if kind == "dir" else 0o400
    if kind == "dir" and not path:
        tree.dir_modes[""] = mode
        return
    parent, _, name = path.rpartition("/")
    parent_fd = tree.open_dir(parent)
    try:
        if kind == "dir":
            try:
                info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
                if not stat.S_ISDIR(info.st_mode):
                    tree.remove(parent_fd, name)
                    os.mkdir(name, 0o700, dir_fd=parent_fd)
            except FileNotFoundError:
                os.mkdir(name, 0o700, dir_fd=parent_fd)
            tree.dir_modes[path] = mode
            tree.implicit.pop(path, None)
            return
        tree.remove(parent_fd, name)
        tree.files.pop(path, None)
        if kind == "file":
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=parent_fd)
            try:
                source = tar.extractfile(member)
                remaining = member.size
                while remaining > 0:
                    chunk = source.read(min(remaining, 1 << 20))
                    if not chunk:
                        raise LayerError(f"{path!r}: the layer ends inside the file")
                    os.write(fd, chunk)
                    remaining -= len(chunk)
                os.fchmod(fd, mode)
                info = os.fstat(fd)
                tree.files[path] = (info.st_dev, info.st_ino)
            finally:
                os.close(fd)
        elif kind == "symlink":
            os.symlink(entry["link"], name, dir_fd=parent_fd)
        elif kind == "hardlink":
            _hardlink(tree, parent_fd, name, entry)
        elif kind == "fifo":
            os.mkfifo(name, mode, dir_fd=parent_fd)
        # char/block: recorded only; never created
        if kind in ("file", "fifo", "symlink", "hardlink"):
            os.utime(name, (entry["mtime"], entry["mtime"]), dir_fd=parent_fd, follow_symlinks=False)
    finally:
        os.close(parent_fd)


def _hardlink(tree: _Tree, parent_fd: int, name: str, entry: dict) -> None:
    target = entry["link"]
    expected = tree.files.get(target)
    if expected is None:
        raise HostileLayer(f"hardlink {entry['path']!r} to {target!r}: not a regular file earlier in this layer")
    target_parent, _, target_name = target.rpartition("/")
    source_fd = tree.open_dir(target_parent, create=False)
    try:
        info = os.stat(target_name, dir_fd=source_fd, follow_symlinks=False)
        if (info.st_dev, info.st_ino) != expected or not stat.S_ISREG(info.st_mode):
            raise HostileLayer(f"hardlink {entry['path']!r} to {target!r}: the target changed")
        os.link(target_name, name, src_dir_fd=source_fd, dst_dir_fd=parent_fd, follow_symlinks=False)
        tree.files[entry["path"]] = expected
    finally:
        os.close(source_fd)


def unpack_layer(blob_path: str, dest: str, *, rootless: bool | None = None) -> tuple[str, list[dict]]:
    """Unpack one layer blob into the empty directory `dest`; returns (diff_id, index entries).

    The diff_id is the SHA-256 of the uncompressed tar, computed here while reading: the caller
    compares it with the image config's rootfs.diff_ids."""
    rootless = os.geteuid() != 0 if rootless is None else rootless
    entries: list[dict] = []
    tree = _Tree(dest, rootless=rootless)
    closer = None
    try:
        with open(blob_path, "rb") as blob:
            stream, closer = _decompressed(blob)
            reader = _HashingReader(stream)
            try:
                with tarfile.open(fileobj=reader, mode="r|", errorlevel=2) as tar:
                    for member in tar:
                        if len(entries) >= MAX_ENTRIES:
                            raise LayerError(f"more than {MAX_ENTRIES} entries in one layer")
                        entry = layer_filter(member)
                        entries.append(entry)
                        if entry["type"] not in ("whiteout", "opaque"):
                            _write_member(tree, tar, member, entry)
                    reader.drain()  # the tar's end padding belongs to the diff_id too
            except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib_error()) as exc:
                raise LayerError(f"not a readable tar layer: {exc}") from None
        if closer is not None and closer.wait() != 0:
            raise LayerError("zstd could not decompress the layer")
        closer = None
        entries.extend({"path": path, "type": "dir", "mode": 0o755, "uid": 0, "gid": 0, "implicit": True}
                       for path in tree.implicit)
        _apply_dir_modes(tree)
    finally:
        if closer is not None:
            closer.kill()
            closer.wait()
        tree.close()
    return "sha256:" + reader.hash.hexdigest(), entries


def zlib_error():
    import zlib
    return zlib.error


def _apply_dir_modes(tree: _Tree) -> None:
    """Directories get their modes last (deepest first): a read-only directory in the layer must not
    stop us filling it."""
    for path in sorted(tree.dir_modes, key=lambda p: p.count("/"), reverse=True):
        fd = tree.open_dir(path, create=False) if path else os.dup(tree.root_fd)
        try:
            os.fchmod(fd, tree.dir_modes[path])
        finally:
            os.close(fd)


# ---------------------------------------------------------------- merging layers

class MergeError(HostileLayer):
    """Layers that do not stack (an implicit directory over a symlink of a lower layer)."""


def merged_view(layers: list[list[dict]]) -> dict[str, dict]:
    """Apply layers bottom first, as the OCI image spec says: whiteouts and opaque directories hide
    what lower layers hold; an entry replaces a lower one (a non-directory its whole subtree).
    Returns path -> entry, each entry with "layer": its index."""
    view: dict[str, dict] = {}
    children: dict[str, set[str]] = {"": set()}

    def drop(path: str) -> None:
        entry = view.pop(path, None)
        if entry is None:
            return
        parent = path.rpartition("/")[0]
        children.get(parent, set()).discard(path)
        for child in list(children.pop(path, ())):
            drop(child)

    def add(path: str, entry: dict) -> None:
        view[path] = entry
        children.setdefault(path.rpartition("/")[0], set()).add(path)
        if entry["type"] == "dir":
            children.setdefault(path, set())

    for index, entries in enumerate(layers):
        for entry in entries:  # whiteouts and opaque markers hide lower layers only
            if entry["type"] == "whiteout":
                drop(entry["path"])
            elif entry["type"] == "opaque":
                for child in list(children.get(entry["path"], ())):
                    drop(child)
        for entry in sorted((e for e in entries if e["type"] not in ("whiteout", "opaque")),
                            key=lambda e: e["path"].count("/")):
            path = entry["path"]
            if not path:
                continue
            parent = path.rpartition("/")[0]
            if parent and (view.get(parent) or {}).get("type") != "dir":
                raise MergeError(f"layer {index + 1}: {path!r} lies beneath {parent!r}, which a layer below "
                                 "holds as a non-directory (a write through a symlink)")
            lower = view.get(path)
            if entry.get("implicit"):
                if lower is not None and lower["type"] != "dir":
                    raise MergeError(f"layer {index + 1}: files beneath {path!r}, which a layer below holds as "
                                     f"a {lower['type']} (a write through a symlink)")
                if lower is not None:
                    continue
            if lower is not None and (lower["type"] != "dir" or entry["type"] != "dir"):
                drop(path)
            add(path, {**entry, "layer": index})
    return view


def merge(layer_trees: list[str], view: dict[str, dict], dest: str, *, setuid: bool = False) -> None:
    """Build an image's root in the empty directory `dest`: directories made, everything else
    hardlinked from its layer's tree (shared, never copied) or, with `setuid`, files that carry
    setuid/setgid bits in the image copied and given them back."""
    root_fd = os.open(dest, _DIR_FLAGS)
    layer_fds = [os.open(tree, _DIR_FLAGS) for tree in layer_trees]
    dir_fds: dict[str, int] = {"": root_fd}
    dir_modes: list[tuple[str, int]] = []
    try:
        for path in sorted(view, key=lambda p: (p.count("/"), p)):
            entry = view[path]
            parent, _, name = path.rpartition("/")
            parent_fd = dir_fds[parent]  # present: merged_view puts every parent first as a directory
            kind = entry["type"]
            if kind == "dir":
                os.mkdir(name, 0o700, dir_fd=parent_fd)
                dir_fds[path] = _libc.openat2(parent_fd, name, _DIR_FLAGS, _RESOLVE)
                dir_modes.append((path, entry["mode"] & 0o1777))
                continue
            if kind in ("char", "block"):
                continue
            layer_fd = layer_fds[entry["layer"]]
            if setuid and kind in ("file", "hardlink") and entry["mode"] & 0o6000:
                _copy_with_mode(layer_fd, path, parent_fd, name, entry["mode"] & 0o7777)
                continue
            os.link(path, name, src_dir_fd=layer_fd, dst_dir_fd=parent_fd, follow_symlinks=False)
        for path, mode in dir_modes:
            os.fchmod(dir_fds[path], mode | (0o700 if os.geteuid() != 0 else 0))
        os.fchmod(root_fd, 0o755)
    finally:
        for fd in set(dir_fds.values()) | set(layer_fds):
            os.close(fd)


def _copy_with_mode(layer_fd: int, path: str, parent_fd: int, name: str, mode: int) -> None:
    source = _libc.openat2(layer_fd, path, os.O_RDONLY | os.O_CLOEXEC, _RESOLVE)
    try:
        target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=parent_fd)
        try:
            while True:
                chunk = os.read(source, 1 << 20)
                if not chunk:
                    break
                os.write(target, chunk)
            os.fchmod(target, mode)
        finally:
            os.close(target)
    finally:
        os.close(source)


def write_index(path: str, entries) -> None:
    with open(path, "w") as handle:
        json.dump(entries, handle, separators=(",", ":"))
