"""The image store: content-addressed, verified on the way in, safe under concurrent pulls.

    STORE/                              /var/lib/sandbox/images (root), ~/.local/share/sandbox/images
      .lock                             flock: shared while pulling or using, exclusive for rm/prune
      blobs/sha256/HEX                  manifests and configs, verified
      layers/HEX/                       one per diff_id (the uncompressed layer's digest)
        tree/                           the layer unpacked (unpack.py), shared by every image using it
        index.json                      what the tar said: types, modes, ids, whiteouts, capabilities
      images/HEX/                       one per manifest digest
        image.json                      digests, layers, references, when pulled
        manifest.json, config.json      the verified blobs
        files.json                      the merged file index (for the scanner)
        rootfs/                         the image's root: hardlinks into layers/*/tree
        rootfs-setuid/                  the same with setuid/setgid bits back (only when asked)
        use.lock                        flock: shared while a sandbox runs the image
      refs.json                         reference -> manifest digest
      tmp/                              staging; everything appears by rename(2), whole or not at all

Every blob's SHA-256 and size is checked here against the digest that names it (skopeo checks
too; we do not rely on it), each layer's uncompressed digest against the config's diff_ids, and
the manifest against a pin. Objects are built under a per-object lock in tmp/ and renamed into
place, so two pulls of one image never see a half-made layer, and a killed pull leaves only tmp/.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager

from ..compiled_dataclass import dataclass
from ..errors import SandboxError
from . import ref as refs
from . import unpack

MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
SKOPEO_TIMEOUT = 3600.0
MAX_MANIFEST = 4 << 20


class ImageError(SandboxError):
    """An image could not be pulled, verified or used; the message is one line."""

    def __init__(self, message: str):
        super().__init__(f"image: {message}")


def default_root() -> str:
    explicit = os.environ.get("SANDBOX_IMAGE_STORE")
    if explicit:
        return os.path.abspath(explicit)
    if os.geteuid() == 0:
        return "/var/lib/sandbox/images"
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return os.path.join(data, "sandbox/images")


def sha256_file(path: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(1 << 20)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
    return "sha256:" + digest.hexdigest(), size


def _hex(digest: str) -> str:
    if not refs.DIGEST.match(digest or ""):
        raise ImageError(f"{digest!r} is not a sha256 digest")
    return digest.split(":", 1)[1]


@dataclass(frozen=True)
class Image:
    """An image in the store."""

    id: str  # the manifest digest
    config_digest: str
    index_digest: str  # the index it was chosen from, "" when pulled by manifest
    layers: tuple[str, ...]  # diff_ids, bottom first
    references: tuple[str, ...]
    created: str
    pulled: float
    size: int
    path: str

    @property
    def rootfs(self) -> str:
        return os.path.join(self.path, "rootfs")

    def config(self) -> dict:
        with open(os.path.join(self.path, "config.json"), "rb") as handle:
            return json.load(handle)

    def files(self) -> dict[str, dict]:
        with open(os.path.join(self.path, "files.json"), "rb") as handle:
            return json.load(handle)

    def digests(self) -> tuple[str, ...]:
        """Every digest that names this image and may pin it."""
        return tuple(d for d in (self.id, self.index_digest, self.config_digest) if d)


class Store:
    """One image store. Safe to use from many processes at once."""

    def __init__(self, root: str | None = None):
        self.root = root or default_root()

    # ------------------------------------------------------------ layout and locks

    def _path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def ensure(self) -> None:
        if not os.path.isdir(self.root):
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        # Private: images may hold what their owners would not publish (private registries).
        os.chmod(self.root, 0o700)
        for sub in ("blobs/sha256", "layers", "images", "tmp", "locks"):
            os.makedirs(self._path(sub), mode=0o700, exist_ok=True)

    @contextmanager
    def _lock(self, name: str, exclusive: bool = True, blocking: bool = True):
        fd = os.open(self._path("locks", name) if name != ".lock" else self._path(".lock"),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB)
            try:
                fcntl.flock(fd, flags)
            except BlockingIOError:
                raise ImageError(f"the store is busy ({name}): another sandbox process holds it") from None
            yield fd
        finally:
            os.close(fd)

    def _tmpdir(self, what: str) -> str:
        return tempfile.mkdtemp(prefix=f"{what}-{os.getpid()}-", dir=self._path("tmp"))

    # ------------------------------------------------------------ references

    def _read_refs(self) -> dict:
        try:
            with open(self._path("refs.json"), "rb") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return {}

    def _write_refs(self, table: dict) -> None:
        fd, tmp = tempfile.mkstemp(dir=self._path("tmp"), prefix="refs-")
        with os.fdopen(fd, "w") as handle:
            json.dump(table, handle, indent=1, sort_keys=True)
        os.replace(tmp, self._path("refs.json"))

    def _record_ref(self, name: str, image_id: str, fingerprint: str = "") -> None:
        with self._lock("refs"):
            table = self._read_refs()
            table[name] = {"digest": image_id, "fingerprint": fingerprint, "time": time.time()}
            self._write_refs(table)

    # ------------------------------------------------------------ lookup

    def images(self) -> list[Image]:
        found = []
        try:
            names = sorted(os.listdir(self._path("images")))
        except FileNotFoundError:
            return []
        table = self._read_refs()
        for name in names:
            image = self._load_image(name, table)
            if image is not None:
                found.append(image)
        return found

    def _load_image(self, hex_id: str, table: dict | None = None) -> Image | None:
        path = self._path("images", hex_id)
        try:
            with open(os.path.join(path, "image.json"), "rb") as handle:
                meta = json.load(handle)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None
        table = self._read_refs() if table is None else table
        names = tuple(sorted(n for n, v in table.items() if v.get("digest") == meta["id"]))
        return Image(id=meta["id"], config_digest=meta["config"], index_digest=meta.get("index", ""),
                     layers=tuple(meta["layers"]), references=names, created=meta.get("created", ""),
                     pulled=meta.get("pulled", 0.0), size=meta.get("size", 0), path=path)

    def get(self, name: str) -> Image:
        """An image by digest (any of its digests, or a unique prefix of 12+ hex digits) or reference."""
        text = name.removeprefix("sha256:")
        images = self.images()
        if len(text) >= 12 and all(c in "0123456789abcdef" for c in text):
            matches = [i for i in images if any(d.split(":")[1].startswith(text) for d in i.digests())]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise ImageError(f"{name}: ambiguous, {len(matches)} images match")
        try:
            wanted = str(refs.parse(name))
        except refs.ReferenceError:
            wanted = name
        for image in images:
            if wanted in image.references:
                return image
        raise ImageError(f"{name}: no such image in {self.root}")

    # ------------------------------------------------------------ pulling

    def pull(self, reference: str | refs.Reference, *, pin: str = "", allowed: tuple[str, ...] | None = None,
             tls_verify: bool = True, policy: str = "missing", log=None) -> Image:
        """Bring an image into the store (or find it there) and return it.

        `allowed`: the registry allowlist (None: no check, for an operator's explicit pull);
        `pin`: a digest the image must have (manifest, index or config digest);
        `policy`: "missing" uses what the store has for the reference, "always" asks the source
        again, "never" refuses to fetch anything."""
        ref = refs.parse(reference) if isinstance(reference, str) else reference
        if allowed is not None and not refs.registry_allowed(ref, allowed):
            raise ImageError(f"{ref}: registry {ref.host} is not in image.allowed_registries "
                             f"({', '.join(allowed) or 'empty: no registry is allowed'})")
        if pin:
            _hex(pin)
        self.ensure()
        with self._lock(".lock", exclusive=False):
            image = self._pull_locked(ref, pin, tls_verify, policy, log or (lambda message: None))
        if pin and pin not in image.digests():
            raise ImageError(f"{ref}: the image is {image.id} (config {image.config_digest}), not the pinned {pin}")
        return image

    def _known(self, ref: refs.Reference, fingerprint: str) -> Image | None:
        entry = self._read_refs().get(str(ref))
        if entry is None or entry.get("fingerprint", "") != fingerprint:
            return None
        return self._load_image(_hex(entry["digest"]))

    def _pull_locked(self, ref: refs.Reference, pin: str, tls_verify: bool, policy: str, log) -> Image:
        fingerprint = _fingerprint(ref)
        if ref.remote and ref.digest:  # by digest: the store is authoritative once it has it
            for image in self.images():
                if ref.digest in image.digests():
                    self._record_ref(str(ref), image.id)
                    return self._load_image(_hex(image.id))
        elif policy != "always":
            known = self._known(ref, fingerprint)
            if known is not None and (not pin or pin in known.digests()):
                return known
        if policy == "never":
            raise ImageError(f"{ref}: not in the store and image.pull = \"never\"")
        if pin and not ref.remote:
            for image in self.images():  # a pinned local image already stored: nothing to copy
                if pin in image.digests() and str(ref) in image.references:
                    return image
        index_digest, manifest_digest = "", ""
        if ref.remote:
            index_digest, manifest_digest = self._resolve_remote(ref, tls_verify, log)
            # A pin naming the config digest can only be checked once fetched: pull() checks it.
            existing = self._load_image(_hex(manifest_digest))
            if existing is not None:
                self._record_ref(str(ref), existing.id)
                return self._load_image(_hex(manifest_digest))
        staging = self._tmpdir("pull")
        try:
            copy = os.path.join(staging, "copy")
            self._skopeo_copy(ref, manifest_digest, copy, tls_verify, log)
            image = self._import(copy, expected=manifest_digest, index_digest=index_digest, log=log)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._record_ref(str(ref), image.id, fingerprint)
        return self._load_image(_hex(image.id))

    def _resolve_remote(self, ref: refs.Reference, tls_verify: bool, log) -> tuple[str, str]:
        """(index digest or "", manifest digest) of a registry reference, from its raw manifest."""
        log(f"resolving {ref}")
        raw = _skopeo(["inspect", "--raw", "--no-tags", f"--tls-verify={'true' if tls_verify else 'false'}",
                       ref.skopeo_name()])
        if len(raw) > MAX_MANIFEST:
            raise ImageError(f"{ref}: a manifest of {len(raw)} bytes")
        top = "sha256:" + hashlib.sha256(raw).hexdigest()
        if ref.digest and top != ref.digest:
            raise ImageError(f"{ref}: the registry answered with manifest {top}")
        document = _json(raw, f"{ref}: manifest")
        if _is_index(document):
            return top, _choose_platform(document, str(ref))
        return "", top

    def _skopeo_copy(self, ref: refs.Reference, manifest_digest: str, dest: str, tls_verify: bool, log) -> None:
        log(f"copying {ref}")
        args = ["copy", "--quiet"]
        if ref.remote:
            args += [f"--src-tls-verify={'true' if tls_verify else 'false'}", "--preserve-digests"]
        elif ref.kind != "docker-archive":
            args += ["--preserve-digests"]
        _skopeo(args + [ref.skopeo_name(manifest_digest), f"dir:{dest}"])

    # ------------------------------------------------------------ import (our own verification)

    def import_dir(self, directory: str, *, expected: str = "", log=None) -> Image:
        """Import a skopeo `dir:` copy (manifest.json and blobs named by their hex digest)."""
        self.ensure()
        with self._lock(".lock", exclusive=False):
            return self._import(directory, expected=expected, index_digest="", log=log or (lambda m: None))

    def _import(self, directory: str, *, expected: str, index_digest: str, log) -> Image:
        manifest_path = os.path.join(directory, "manifest.json")
        with open(manifest_path, "rb") as handle:
            raw = handle.read(MAX_MANIFEST + 1)
        if len(raw) > MAX_MANIFEST:
            raise ImageError("a manifest larger than 4 MiB")
        manifest_digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if expected and manifest_digest != expected:
            raise ImageError(f"the copied manifest is {manifest_digest}, not {expected}")
        manifest = _json(raw, "manifest")
        if _is_index(manifest):
            digest = _choose_platform(manifest, "index")
            raise ImageError(f"an index where a manifest was expected (choose {digest})")
        if manifest.get("schemaVersion") != 2 or not isinstance(manifest.get("layers"), list) \
                or not isinstance(manifest.get("config"), dict):
            raise ImageError("not an image manifest of schema version 2 (schema 1 images carry no digests)")
        existing = self._load_image(_hex(manifest_digest))
        if existing is not None:
            return existing
        config_desc = manifest["config"]
        config_digest = config_desc.get("digest", "")
        config_blob = self._verified_blob(directory, config_desc, "config")
        with open(config_blob, "rb") as handle:
            config = _json(handle.read(MAX_MANIFEST), "config")
        rootfs = config.get("rootfs") or {}
        diff_ids = rootfs.get("diff_ids")
        if rootfs.get("type") != "layers" or not isinstance(diff_ids, list) or len(diff_ids) != len(manifest["layers"]):
            raise ImageError("the config's rootfs.diff_ids do not match the manifest's layers")
        for diff_id in diff_ids:
            _hex(diff_id)
        size = 0
        for position, (descriptor, diff_id) in enumerate(zip(manifest["layers"], diff_ids), 1):
            blob = self._verified_blob(directory, descriptor, f"layer {position}")
            size += descriptor.get("size", 0)
            self._store_layer(blob, diff_id, position, log)
        return self._store_image(manifest_digest, raw, config_digest, config_blob, config, diff_ids,
                                 index_digest, size)

    def _verified_blob(self, directory: str, descriptor: dict, what: str) -> str:
        digest, size = descriptor.get("digest", ""), descriptor.get("size")
        hex_digest = _hex(digest)
        for name in (hex_digest, hex_digest + ".tar"):
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                break
        else:
            raise ImageError(f"{what} {digest}: missing from the copy")
        actual, actual_size = sha256_file(path)
        if actual != digest:
            raise ImageError(f"{what}: blob {digest} has content {actual}: refused (tampered or corrupt)")
        if isinstance(size, int) and size != actual_size:
            raise ImageError(f"{what}: blob {digest} is {actual_size} bytes, the manifest says {size}")
        return path

    def _store_layer(self, blob: str, diff_id: str, position: int, log) -> None:
        final = self._path("layers", _hex(diff_id))
        if os.path.isdir(final):
            return
        with self._lock("layer-" + _hex(diff_id)):
            if os.path.isdir(final):  # another pull made it while we waited
                return
            log(f"unpacking layer {position} {diff_id[:19]}")
            staging = self._tmpdir("layer")
            try:
                os.mkdir(os.path.join(staging, "tree"), 0o755)
                try:
                    actual, entries = unpack.unpack_layer(blob, os.path.join(staging, "tree"))
                except (unpack.HostileLayer, unpack.LayerError) as exc:
                    raise ImageError(f"layer {position} refused: {exc}") from None
                if actual != diff_id:
                    raise ImageError(f"layer {position}: uncompressed content {actual} is not the config's "
                                     f"diff_id {diff_id}: refused")
                unpack.write_index(os.path.join(staging, "index.json"), entries)
                os.rename(staging, final)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise

    def _store_image(self, manifest_digest, raw_manifest, config_digest, config_blob, config, diff_ids,
                     index_digest, size) -> Image:
        hex_id = _hex(manifest_digest)
        final = self._path("images", hex_id)
        with self._lock("image-" + hex_id):
            if not os.path.isdir(final):
                staging = self._tmpdir("image")
                try:
                    indexes = []
                    for diff_id in diff_ids:
                        with open(self._path("layers", _hex(diff_id), "index.json"), "rb") as handle:
                            indexes.append(json.load(handle))
                    try:
                        view = unpack.merged_view(indexes)
                    except unpack.HostileLayer as exc:
                        raise ImageError(f"layers refused: {exc}") from None
                    os.mkdir(os.path.join(staging, "rootfs"), 0o755)
                    unpack.merge([self._path("layers", _hex(d), "tree") for d in diff_ids], view,
                                 os.path.join(staging, "rootfs"))
                    with open(os.path.join(staging, "files.json"), "w") as handle:
                        json.dump(view, handle, separators=(",", ":"))
                    with open(os.path.join(staging, "manifest.json"), "wb") as handle:
                        handle.write(raw_manifest)
                    shutil.copyfile(config_blob, os.path.join(staging, "config.json"))
                    for blob_digest, source in ((manifest_digest, os.path.join(staging, "manifest.json")),
                                                (config_digest, config_blob)):
                        target = self._path("blobs", "sha256", _hex(blob_digest))
                        if not os.path.exists(target):
                            tmp = target + f".{os.getpid()}.tmp"
                            shutil.copyfile(source, tmp)
                            os.replace(tmp, target)
                    meta = {"id": manifest_digest, "config": config_digest, "index": index_digest,
                            "layers": list(diff_ids), "created": str(config.get("created", "")),
                            "pulled": time.time(), "size": size}
                    with open(os.path.join(staging, "image.json"), "w") as handle:
                        json.dump(meta, handle, indent=1)
                    open(os.path.join(staging, "use.lock"), "w").close()
                    os.rename(staging, final)
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise
        return self._load_image(hex_id)

    # ------------------------------------------------------------ using

    def rootfs(self, image: Image, *, setuid: bool = False) -> str:
        """The image's root tree; with setuid, the variant whose setuid/setgid files keep their bits."""
        if not setuid:
            return image.rootfs
        final = os.path.join(image.path, "rootfs-setuid")
        if os.path.isdir(final):
            return final
        with self._lock("image-" + _hex(image.id)):
            if not os.path.isdir(final):
                staging = self._tmpdir("setuid")
                try:
                    os.chmod(staging, 0o755)
                    view = image.files()
                    unpack.merge([self._path("layers", _hex(d), "tree") for d in image.layers], view, staging,
                                 setuid=True)
                    os.rename(staging, final)
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise
        return final

    def hold(self, image: Image) -> int:
        """A shared lock on the image for as long as the returned fd is open: rm and prune leave it."""
        fd = os.open(os.path.join(image.path, "use.lock"), os.O_RDONLY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_SH)
        return fd

    # ------------------------------------------------------------ removing

    def remove(self, name: str, *, force: bool = False) -> Image:
        self.ensure()
        with self._lock(".lock"):
            image = self.get(name)
            self._remove_image(image, force)
            with self._lock("refs"):
                table = self._read_refs()
                self._write_refs({k: v for k, v in table.items() if v.get("digest") != image.id})
            return image

    def _remove_image(self, image: Image, force: bool) -> None:
        fd = os.open(os.path.join(image.path, "use.lock"), os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not force:
                    raise ImageError(f"{image.id}: in use by a running sandbox (use --force to remove anyway)") \
                        from None
            doomed = self._path("tmp", f"rm-{os.getpid()}-{_hex(image.id)}")
            os.rename(image.path, doomed)  # gone from the store at once, deleted at leisure
            shutil.rmtree(doomed, ignore_errors=True)
        finally:
            os.close(fd)

    def prune(self, *, all_images: bool = False) -> list[str]:
        """Remove layers no image uses, leftovers of killed pulls, unreferenced images (with
        all_images, every image not in use). Returns what was removed."""
        removed: list[str] = []
        if not os.path.isdir(self.root):
            return removed
        self.ensure()
        with self._lock(".lock"):
            table = self._read_refs()
            referenced = {v.get("digest") for v in table.values()}
            for image in self.images():
                if all_images or image.id not in referenced:
                    try:
                        self._remove_image(image, force=False)
                        removed.append(image.id)
                    except ImageError:
                        pass
            if all_images or removed:
                kept = {i.id for i in self.images()}
                self._write_refs({k: v for k, v in table.items() if v.get("digest") in kept})
            used = {d for image in self.images() for d in image.layers}
            for name in os.listdir(self._path("layers")):
                if "sha256:" + name not in used:
                    shutil.rmtree(self._path("layers", name), ignore_errors=True)
                    removed.append("layer sha256:" + name)
            for name in os.listdir(self._path("tmp")):  # under the exclusive lock: no pull is running
                path = self._path("tmp", name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
            for name in os.listdir(self._path("blobs", "sha256")):
                if not any(name in (_hex(i.id), _hex(i.config_digest)) for i in self.images()):
                    os.unlink(self._path("blobs", "sha256", name))
        return removed


def _fingerprint(ref: refs.Reference) -> str:
    """Local sources change in place: a reference is reused only while its file is unchanged."""
    if ref.remote:
        return ""
    path = os.path.join(ref.path, "index.json") if ref.kind == "oci" else ref.path
    try:
        info = os.stat(path)
    except OSError:
        return ""
    return f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"


def _is_index(document: dict) -> bool:
    return document.get("mediaType") in INDEX_TYPES or ("manifests" in document and "layers" not in document)


def _choose_platform(index: dict, what: str) -> str:
    machine = os.uname().machine
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
            "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)
    for entry in index.get("manifests") or ():
        platform = entry.get("platform") or {}
        if platform.get("os", "linux") == "linux" and platform.get("architecture") == arch:
            return _checked(entry.get("digest", ""))
    raise ImageError(f"{what}: no linux/{arch} image in the index")


def _checked(digest: str) -> str:
    _hex(digest)
    return digest


def _json(raw: bytes, what: str) -> dict:
    try:
        document = json.loads(raw)
    except ValueError:
        raise ImageError(f"{what}: not JSON") from None
    if not isinstance(document, dict):
        raise ImageError(f"{what}: not a JSON object")
    return document


def _skopeo(args: list[str]) -> bytes:
    program = shutil.which("skopeo")
    if program is None:
        raise ImageError("skopeo is not installed (apt-get install skopeo)")
    try:
        done = subprocess.run([program, *args], stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=SKOPEO_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise ImageError(f"skopeo {args[0]}: no answer within {SKOPEO_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        text = message[-1] if message else f"exit {done.returncode}"
        raise ImageError(f"skopeo {args[0]} {args[-2] if args[0] == 'copy' else args[-1]}: {_short(text)}")
    return done.stdout


def _short(text: str) -> str:
    text = text.replace('time="', "").strip()
    for marker in ('level=fatal msg="', "level=error msg=\""):
        if marker in text:
            text = text.split(marker, 1)[1].rstrip('"')
    return text[:400]
