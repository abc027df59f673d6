"""The parent's part of an image root when root launches (called by the launcher before the fork).

The store is private to root (0700), so the sandbox's host user cannot reach the image's tree by
path. The parent, still host root, opens a detached copy (open_tree) and makes it read-only,
nosuid and nodev, with an id mapping from the tree's on-disk owner (root: the store writes
everything as root) to the sandbox's host user: inside, the image's files belong to the sandbox
user instead of the overflow id. The mapping reaches host uid 0 only *as a source*: nothing can be
written through the mount (read-only before it is ever attached, and the overlay above it writes
to a tmpfs), so no file can be created or changed as host root through it.
"""
from __future__ import annotations

import os

from .. import _libc, namespaces
from ..errors import SetupError

READONLY_ATTRS = _libc.MOUNT_ATTR_RDONLY | _libc.MOUNT_ATTR_NOSUID | _libc.MOUNT_ATTR_NODEV


def open_root_tree(profile, idmap) -> int:
    """A detached, read-only copy of the profile's image root, idmapped when the kernel allows."""
    source = profile.image.rootfs
    try:
        tree = _libc.open_tree(_libc.AT_FDCWD, source, _libc.OPEN_TREE_CLONE | _libc.OPEN_TREE_CLOEXEC
                               | _libc.AT_RECURSIVE)
    except OSError as exc:
        raise SetupError("image root", exc.errno or 0, f"{source}: {exc.strerror}") from None
    try:
        # Read-only first: the tree is never writable, not even before the id mapping is set.
        _libc.mount_setattr(tree, "", _libc.AT_EMPTY_PATH | _libc.AT_RECURSIVE, attr_set=READONLY_ATTRS)
        owner = os.stat(source)
        if owner.st_uid != idmap.host_uid and profile.namespaces.user:
            userns = namespaces.MappingUserNamespace(f"{owner.st_uid} {idmap.host_uid} 1\n",
                                                     f"{owner.st_gid} {idmap.host_gid} 1\n")
            try:
                _libc.mount_setattr(tree, "", _libc.AT_EMPTY_PATH | _libc.AT_RECURSIVE,
                                    attr_set=_libc.MOUNT_ATTR_IDMAP | READONLY_ATTRS, userns_fd=userns.fd)
            except OSError:
                pass  # no idmapped mounts here: the image's files show as the overflow id, read as "others"
            finally:
                userns.close()
    except OSError as exc:
        os.close(tree)
        raise SetupError("image root", exc.errno or 0, f"{source}: {exc.strerror}") from None
    return tree
