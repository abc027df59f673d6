"""An image, translated into the same Profile the launcher runs: nothing downstream knows images.

`apply_image(profile)` pulls (or finds) the image the profile names, then returns a profile whose

* image.rootfs is the image's root tree in the store (mounts.build_plan makes it the read-only
  root, with the profile's tmpfs and binds on top) and image.digest the digest it resolved to;
* process takes the image config's Env, WorkingDir, Entrypoint + Cmd and User wherever the
  profile (its file, the files it extends, the command line) leaves the key unset; env merges per
  variable, the profile's value winning. A User by name is looked up in the image's own
  /etc/passwd and /etc/group. It is a uid *inside*: the id map still sends it to an unprivileged
  host id (never host root);
* filesystem leaves out what would cover the image with the host's system: a bind of a host path
  onto that same path (/usr, /etc/ld.so.cache...), a symlink or a file, wherever the image has
  that path. These are how a profile builds a root from the host; with an image, the image's own
  files win. Where the image lacks the path they stay (a busybox image without /usr gets the
  profile's /usr); binds to other targets (workspaces) and every tmpfs always stay.

Everything else of the profile (namespaces, seccomp, limits, network, Landlock) is untouched.
"""
from __future__ import annotations

import os
import weakref

from .. import _libc
from ..profile import model
from . import ref as refs
from .store import Image, ImageError, Store

PROCESS_KEYS = ("command", "cwd", "env", "user", "group")


class ImageProblem(ValueError):
    """A profile key that cannot be used with an image: key, expected, found."""

    def __init__(self, key: str, expected: str, found: str = "", hint: str = ""):
        super().__init__(f"{key}: expected {expected}")
        self.key, self.expected, self.found, self.hint = key, expected, found, hint


def check(profile: model.Profile) -> refs.Reference:
    """The profile's [image] keys, checked without touching the store."""
    image = profile.image
    try:
        ref = refs.parse(image.ref, base_dir=os.path.dirname(profile.source) if profile.source else None)
    except refs.ReferenceError as exc:
        raise ImageProblem("image.ref", str(exc), repr(image.ref)) from None
    if image.digest and not refs.DIGEST.match(image.digest):
        raise ImageProblem("image.digest", "sha256: followed by 64 lower-case hex digits", repr(image.digest))
    for index, entry in enumerate(image.allowed_registries):
        try:
            refs.check_allowed_entry(entry)
        except refs.ReferenceError as exc:
            raise ImageProblem(f"image.allowed_registries[{index}]", str(exc), repr(entry)) from None
    if not refs.registry_allowed(ref, image.allowed_registries):
        raise ImageProblem("image.allowed_registries", f"an entry allowing {ref.repository}",
                           repr(list(image.allowed_registries)) if image.allowed_registries else "none",
                           "registries are denied unless listed")
    if profile.filesystem.root != "tmpfs":
        raise ImageProblem("filesystem.root", "'tmpfs' with an image (the image is the root)",
                           repr(profile.filesystem.root))
    if not profile.namespaces.mount:
        raise ImageProblem("namespaces.mount", "true with an image (its root needs a mount namespace)", "false")
    return ref


def explicit_process_keys(profile: model.Profile) -> set[str]:
    """For a profile made in code: the [process] keys that differ from the defaults."""
    default = model.Process()
    return {key for key in PROCESS_KEYS if getattr(profile.process, key) != getattr(default, key)}


def apply_image(profile: model.Profile, explicit: set[str] | None = None, *, store: Store | None = None,
                log=None) -> model.Profile:
    """The profile with its image resolved and applied (see the module docstring).

    `explicit`: the [process] keys the profile sets (default: those that differ from the defaults).
    Raises ImageProblem for keys that cannot work, ImageError when the image cannot be had."""
    if not profile.image.ref:
        return profile
    ref = check(profile)
    settings = profile.image
    store = store or Store()
    image = store.pull(ref, pin=settings.digest, allowed=settings.allowed_registries,
                       tls_verify=settings.tls_verify, policy=settings.pull, log=log)
    rootfs = store.rootfs(image, setuid=settings.setuid)
    if settings.require_scan != "none":
        from ..scan import gate
        gate(image, settings.require_scan, allowlist=settings.scan_allowlist, vuln_db=settings.vuln_db,
             store=store)
    explicit = explicit_process_keys(profile) if explicit is None else set(explicit)
    process = _process(profile.process, image, rootfs, explicit)
    view = image.files()
    filesystem = _filesystem(profile.filesystem, view)
    resolved = profile.replace(process=process, filesystem=filesystem,
                               image=_replace(settings, digest=settings.digest or image.id, rootfs=rootfs,
                                              store=store.root))
    _hold(resolved, store, image)
    return resolved


def _replace(obj, **changes):
    import dataclasses
    return dataclasses.replace(obj, **changes)


def _hold(profile: model.Profile, store: Store, image: Image) -> None:
    """While the profile lives, the image is in use: `sandbox image rm` and prune leave it alone."""
    try:
        fd = store.hold(image)
    except OSError:
        return
    try:
        weakref.finalize(profile, os.close, fd)
    except TypeError:
        os.close(fd)


def _process(process: model.Process, image: Image, rootfs: str, explicit: set[str]) -> model.Process:
    config = image.config().get("config") or {}
    changes: dict = {}
    image_env = {}
    for item in config.get("Env") or ():
        if isinstance(item, str) and "=" in item and "\0" not in item:
            name, _, value = item.partition("=")
            if name:
                image_env[name] = value
    if image_env:
        merged = dict(image_env)
        merged.update(dict(process.env))
        changes["env"] = tuple(sorted(merged.items()))
    if "cwd" not in explicit and isinstance(config.get("WorkingDir"), str) and config["WorkingDir"].startswith("/"):
        changes["cwd"] = os.path.normpath(config["WorkingDir"])
    if "command" not in explicit:
        command = [*(config.get("Entrypoint") or ()), *(config.get("Cmd") or ())]
        if command and all(isinstance(word, str) and "\0" not in word for word in command) and command[0]:
            changes["command"] = tuple(command)
    if "user" not in explicit or "group" not in explicit:
        uid, gid = image_user(rootfs, config.get("User") or "")
        if "user" not in explicit:
            changes["user"] = uid
        if "group" not in explicit:
            changes["group"] = gid
    return _replace(process, **changes)


def image_user(rootfs: str, spec: str) -> tuple[int, int]:
    """The image's User as (uid, gid) inside: names from its own passwd and group files; no User
    means root inside (uid 0, which the id map sends to an unprivileged host id)."""
    if not isinstance(spec, str) or not spec:
        return 0, 0
    user, _, group = spec.partition(":")
    passwd = _read_table(rootfs, "etc/passwd")
    groups = _read_table(rootfs, "etc/group")
    uid = gid = None
    if user.isdigit():
        uid = int(user)
        entry = next((row for row in passwd if len(row) > 3 and row[2] == user), None)
        gid = int(entry[3]) if entry and entry[3].isdigit() else 0
    else:
        entry = next((row for row in passwd if row and row[0] == user and len(row) > 3), None)
        if entry is None or not entry[2].isdigit() or not entry[3].isdigit():
            raise ImageError(f"the image's User {spec!r}: no user {user!r} in its /etc/passwd")
        uid, gid = int(entry[2]), int(entry[3])
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            row = next((row for row in groups if row and row[0] == group and len(row) > 2), None)
            if row is None or not row[2].isdigit():
                raise ImageError(f"the image's User {spec!r}: no group {group!r} in its /etc/group")
            gid = int(row[2])
    if uid > (1 << 32) - 2 or gid > (1 << 32) - 2:
        raise ImageError(f"the image's User {spec!r}: an id out of range")
    return uid, gid


def read_image_file(rootfs: str, path: str, limit: int = 1 << 20) -> bytes | None:
    """A file of the image, its symlinks resolved inside the image's root (never on the host)."""
    root = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _libc.openat2(root, path.lstrip("/"), os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK,
                           _libc.RESOLVE_IN_ROOT | _libc.RESOLVE_NO_MAGICLINKS | _libc.RESOLVE_NO_XDEV)
    except OSError:
        return None
    finally:
        os.close(root)
    try:
        import stat
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    finally:
        os.close(fd)


def _read_table(rootfs: str, path: str) -> list[list[str]]:
    data = read_image_file(rootfs, path)
    if data is None:
        return []
    return [line.split(":") for line in data.decode("utf-8", "replace").splitlines() if line and not line.startswith("#")]


def _filesystem(fs: model.Filesystem, view: dict) -> model.Filesystem:
    def image_has(target: str) -> bool:
        return target.lstrip("/") in view

    mounts = tuple(m for m in fs.mounts if not (m.source == m.target and image_has(m.target)))
    symlinks = tuple(s for s in fs.symlinks if not image_has(s.target))
    files = tuple(f for f in fs.files if not image_has(f.target))
    return _replace(fs, mounts=mounts, symlinks=symlinks, files=files)
