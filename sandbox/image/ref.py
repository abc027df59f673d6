"""Image references: the forms `sandbox` accepts, and the registry allowlist.

    oci:DIR[:TAG]                           an OCI image layout on disk
    oci-archive:FILE[:TAG]                  the same, as a tar file
    docker-archive:FILE                     `docker save` output
    docker://HOST[:PORT]/NAME[:TAG|@sha256:HEX]   a registry, pulled through skopeo

A registry reference always names its host: there is no implicit docker.io, so the allowlist
(`[image] allowed_registries`) is matched against exactly what is pulled.
"""
from __future__ import annotations

import os
import re

from ..compiled_dataclass import dataclass

LOCAL_KINDS = ("oci", "oci-archive", "docker-archive")
KINDS = LOCAL_KINDS + ("docker",)
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HOST = re.compile(r"^(localhost|\[[0-9a-fA-F:]+\]|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+|[A-Za-z0-9-]+)(:[0-9]{1,5})?$")
_NAME_PART = re.compile(r"^[a-z0-9]+([._-]+[a-z0-9]+)*$")


class ReferenceError(ValueError):
    """A reference that cannot be used; the message says what was expected."""


@dataclass(frozen=True)
class Reference:
    """A parsed image reference."""

    kind: str  # one of KINDS
    path: str = ""  # oci, oci-archive, docker-archive: absolute host path
    host: str = ""  # docker: registry host[:port]
    name: str = ""  # docker: repository path below the host
    tag: str = ""  # oci/oci-archive: the layout's ref name; docker: the tag
    digest: str = ""  # docker: @sha256:...

    @property
    def remote(self) -> bool:
        return self.kind == "docker"

    def __str__(self) -> str:
        if self.kind == "docker":
            text = f"docker://{self.host}/{self.name}"
            if self.tag:
                text += f":{self.tag}"
            if self.digest:
                text += f"@{self.digest}"
            return text
        return f"{self.kind}:{self.path}" + (f":{self.tag}" if self.tag else "")

    def skopeo_name(self, digest: str = "") -> str:
        """The reference as skopeo takes it; with `digest`, that exact manifest."""
        if self.kind == "docker":
            base = f"docker://{self.host}/{self.name}"
            if digest:
                return f"{base}@{digest}"
            return base + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")
        return str(self)

    @property
    def repository(self) -> str:
        """HOST/NAME, what allowed_registries entries are matched against."""
        return f"{self.host}/{self.name}" if self.kind == "docker" else ""


def parse(text: str, *, base_dir: str | None = None) -> Reference:
    """Parse a reference; local paths are made absolute against base_dir (default: the cwd)."""
    if not isinstance(text, str) or not text or "\0" in text or any(c.isspace() for c in text):
        raise ReferenceError("an image reference without spaces, e.g. oci:DIR:TAG or docker://HOST/NAME:TAG")
    kind, sep, rest = text.partition(":")
    if not sep or kind not in KINDS:
        raise ReferenceError("a reference starting with oci:, oci-archive:, docker-archive: or docker://")
    if kind == "docker":
        return _parse_docker(text, rest)
    path, _, tag = rest.partition(":")
    if not path:
        raise ReferenceError(f"{kind}:PATH with a path")
    if kind == "docker-archive" and tag:
        raise ReferenceError("docker-archive:FILE (one image per archive, without a tag)")
    if tag and not _TAG.match(tag):
        raise ReferenceError(f"a tag of letters, digits, '_', '.' and '-' after {kind}:{path}:")
    path = os.path.normpath(os.path.join(base_dir or os.getcwd(), os.path.expanduser(path)))
    return Reference(kind, path=path, tag=tag)


def _parse_docker(text: str, rest: str) -> Reference:
    if not rest.startswith("//"):
        raise ReferenceError("docker://HOST/NAME[:TAG|@sha256:...]")
    rest = rest[2:]
    host, slash, remainder = rest.partition("/")
    if not slash or not remainder or not _HOST.match(host) or not ("." in host or ":" in host
                                                                    or host == "localhost" or host.startswith("[")):
        raise ReferenceError("docker://HOST/NAME with the registry's host named (e.g. "
                             "docker://registry.example.com/team/app:1.0; there is no implicit docker.io)")
    digest = ""
    if "@" in remainder:
        remainder, _, digest = remainder.partition("@")
        if not DIGEST.match(digest):
            raise ReferenceError("@sha256: followed by 64 lower-case hex digits")
    tag = ""
    last = remainder.rsplit("/", 1)[-1]
    if ":" in last:
        remainder, _, tag = remainder.rpartition(":")
        if not _TAG.match(tag):
            raise ReferenceError("a tag of letters, digits, '_', '.' and '-'")
    parts = remainder.split("/")
    if not all(_NAME_PART.match(part) for part in parts):
        raise ReferenceError("a repository name of lower-case letters, digits and separators ('.', '_', '-', '/')")
    if not tag and not digest:
        tag = "latest"
    return Reference("docker", host=host.lower(), name=remainder, tag=tag, digest=digest)


def registry_allowed(ref: Reference, allowed: tuple[str, ...] | list[str]) -> bool:
    """Local forms always; a registry reference when HOST/NAME equals an entry or lies below it.
    An entry is HOST[:PORT] or HOST[:PORT]/PATH (a repository prefix, matched whole components)."""
    if not ref.remote:
        return True
    repository = ref.repository
    for entry in allowed:
        entry = entry.strip().rstrip("/").lower().removeprefix("docker://")
        if entry and (repository.lower() == entry or repository.lower().startswith(entry + "/")):
            return True
    return False


def check_allowed_entry(entry: str) -> str:
    """Validate one allowed_registries entry; returns it normalized or raises ReferenceError."""
    text = entry.strip().rstrip("/").removeprefix("docker://")
    host, _, path = text.partition("/")
    if not _HOST.match(host) or (path and not all(_NAME_PART.match(p) for p in path.split("/"))):
        raise ReferenceError("HOST[:PORT] or HOST[:PORT]/REPOSITORY-PREFIX")
    return text.lower()
