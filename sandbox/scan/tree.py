"""What a scan walks: an image (its merged file index, contents from its root tree) or a host
directory (lstat, never following a symlink), each as one stream of entries.

Locations are the paths the sandbox would see: an image's files at their place in the image, a
directory's relative to it (or, for a profile, at the bind's target).
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from .. import _libc

_RESOLVE = _libc.RESOLVE_BENEATH | _libc.RESOLVE_NO_SYMLINKS | _libc.RESOLVE_NO_MAGICLINKS


@dataclass
class Entry:
    """One file of a scanned tree."""

    path: str  # where the sandbox sees it: absolute
    kind: str  # file, dir, symlink, char, block, fifo, socket
    mode: int
    uid: int
    gid: int
    size: int = 0
    link: str = ""
    capabilities: bool = False
    nlink: int = 1
    inode: tuple[int, int] | None = None
    blocks: int = 0


class Source:
    """A tree to scan: entries() and read(entry)."""

    kind = "directory"
    image_root = False  # an image's absolute symlinks resolve inside the image, not on the host

    root_fd = -1
    mount_at = ""

    def entries(self):
        raise NotImplementedError

    def root_path(self) -> str:
        """The host directory the entries' contents are read beneath."""
        raise NotImplementedError

    def read(self, entry: Entry, limit: int) -> bytes | None:
        if self.root_fd < 0:
            self.root_fd = os.open(self.root_path(), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        relative = entry.path[len(self.mount_at):].lstrip("/")
        return _read_beneath(self.root_fd, relative, limit)

    def close(self) -> None:
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1


class ImageSource(Source):
    """An image in the store: metadata as the layers said (setuid bits, owners and capabilities
    included, although the store keeps none of them), contents from its root tree."""

    kind = "image"
    image_root = True

    def __init__(self, image, mount_at: str = "/"):
        self.image = image
        self.files = image.files()
        self.mount_at = mount_at.rstrip("/")
        self.root_fd = -1

    def entries(self):
        for path, item in self.files.items():
            kind = {"hardlink": "file"}.get(item["type"], item["type"])
            yield Entry(f"{self.mount_at}/{path}", kind, item.get("mode", 0), item.get("uid", 0), item.get("gid", 0),
                        item.get("size", 0), item.get("link", "") if kind == "symlink" else "",
                        bool(item.get("capabilities")))

    def root_path(self) -> str:
        return self.image.rootfs


class DirectorySource(Source):
    """A host directory, walked with lstat; symlinks are reported, never followed; other file
    systems mounted below are not entered (they are not what the directory holds)."""

    def __init__(self, root: str, mount_at: str = "/"):
        self.root = os.path.abspath(root)
        self.mount_at = mount_at.rstrip("/")
        self.root_fd = -1
        self.errors: list[str] = []

    def entries(self):
        try:
            top = os.lstat(self.root)
        except OSError as exc:
            self.errors.append(f"{self.root}: {exc.strerror}")
            return
        if stat.S_ISDIR(top.st_mode):
            yield _entry(self.mount_at or "/", top)
        stack = [(self.root, self.mount_at)]
        device = top.st_dev
        while stack:
            directory, shown = stack.pop()
            try:
                iterator = os.scandir(directory)
            except OSError as exc:
                self.errors.append(f"{directory}: {exc.strerror}")
                continue
            with iterator:
                for item in iterator:
                    try:
                        info = item.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    path = f"{shown}/{item.name}"
                    entry = _entry(path, info)
                    if entry.kind == "symlink":
                        try:
                            entry.link = os.readlink(item.path)
                        except OSError:
                            pass
                    elif entry.kind == "file" and info.st_mode & 0o111 and _has_caps(item.path):
                        entry.capabilities = True
                    yield entry
                    if entry.kind == "dir" and info.st_dev == device:
                        stack.append((item.path, path))

    def root_path(self) -> str:
        return self.root


def _entry(path: str, info: os.stat_result) -> Entry:
    mode = info.st_mode
    kind = ("dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "symlink" if stat.S_ISLNK(mode)
            else "char" if stat.S_ISCHR(mode) else "block" if stat.S_ISBLK(mode) else "fifo" if stat.S_ISFIFO(mode)
            else "socket")
    return Entry(path, kind, stat.S_IMODE(mode), info.st_uid, info.st_gid, info.st_size, nlink=info.st_nlink,
                 inode=(info.st_dev, info.st_ino), blocks=info.st_blocks)


def _has_caps(path: str) -> bool:
    try:
        return bool(os.getxattr(path, "security.capability", follow_symlinks=False))
    except OSError:
        return False


def _read_beneath(root_fd: int, relative: str, limit: int) -> bytes | None:
    """A file's first `limit` bytes, opened beneath the tree without following any symlink."""
    try:
        fd = _libc.openat2(root_fd, relative, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY, _RESOLVE)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)
