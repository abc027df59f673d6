"""Installed software: dpkg status, apk installed, Python dist-info, npm package.json.

Package databases are found during the same walk as everything else (`wanted`), then parsed.
"""
from __future__ import annotations

import json
import posixpath
import re

from .findings import Component

DPKG_STATUS = ("/var/lib/dpkg/status",)
DPKG_STATUS_DIR = "/var/lib/dpkg/status.d/"  # distroless images: one file a package
APK_INSTALLED = ("/lib/apk/db/installed",)
OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")


def wanted(path: str, kind: str) -> bool:
    """Does the SBOM need this file's contents?"""
    if kind != "file":
        return False
    if path.endswith(DPKG_STATUS + APK_INSTALLED + OS_RELEASE) or DPKG_STATUS_DIR in path:
        return True
    name = posixpath.basename(path)
    parent = posixpath.basename(posixpath.dirname(path))
    if name == "METADATA" and parent.endswith(".dist-info"):
        return True
    if name == "PKG-INFO" and parent.endswith(".egg-info"):
        return True
    if name == "package.json" and "/node_modules/" in path:
        rest = path.rsplit("/node_modules/", 1)[1]
        parts = rest.split("/")
        return len(parts) == 2 or (len(parts) == 3 and parts[0].startswith("@"))
    return False


def os_release(data: bytes | None) -> tuple[str, str]:
    if not data:
        return "", ""
    values = {}
    for line in data.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"')
    return values.get("ID", ""), values.get("VERSION_ID", "")


def _stanzas(text: str):
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        last = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and last:
                continue  # continuation lines (descriptions, conffiles)
            key, sep, value = line.partition(":")
            if sep:
                last = key.strip()
                fields[last] = value.strip()
        if fields:
            yield fields


def dpkg(path: str, data: bytes, distro: str, version: str) -> list[Component]:
    found = []
    for fields in _stanzas(data.decode("utf-8", "replace")):
        status = fields.get("Status", "install ok installed")
        if not status.endswith(" installed") or not fields.get("Package") or not fields.get("Version"):
            continue
        source = fields.get("Source", "").split(" ")[0] or fields["Package"]
        found.append(Component("deb", fields["Package"], fields["Version"], path, distro or "debian", version,
                               source, fields.get("Architecture", "")))
    return found


def apk(path: str, data: bytes, distro: str, version: str) -> list[Component]:
    found = []
    for block in re.split(r"\n\s*\n", data.decode("utf-8", "replace")):
        fields = {}
        for line in block.splitlines():
            if len(line) > 2 and line[1] == ":":
                fields.setdefault(line[0], line[2:])
        if fields.get("P") and fields.get("V"):
            found.append(Component("apk", fields["P"], fields["V"], path, distro or "alpine", version,
                                   fields.get("o", fields["P"]), fields.get("A", "")))
    return found


def python(path: str, data: bytes) -> list[Component]:
    name = version = ""
    for line in data.decode("utf-8", "replace").splitlines():
        if not line.strip():
            break  # headers end at the first blank line
        key, sep, value = line.partition(":")
        if key == "Name" and not name:
            name = value.strip()
        elif key == "Version" and not version:
            version = value.strip()
    if not name or not version:
        return []
    return [Component("pypi", re.sub(r"[-_.]+", "-", name).lower(), version, posixpath.dirname(path))]


def npm(path: str, data: bytes) -> list[Component]:
    try:
        document = json.loads(data)
    except ValueError:
        return []
    if not isinstance(document, dict) or not isinstance(document.get("name"), str) \
            or not isinstance(document.get("version"), str):
        return []
    return [Component("npm", document["name"], document["version"], posixpath.dirname(path))]


def components(files: dict[str, bytes]) -> list[Component]:
    """Every package the collected database files list."""
    distro, version = "", ""
    for path in OS_RELEASE:
        if path in files:
            distro, version = os_release(files[path])
            break
    found: list[Component] = []
    for path in sorted(files):
        data = files[path]
        if path in DPKG_STATUS or path.startswith(DPKG_STATUS_DIR):
            found += dpkg(path, data, distro, version)
        elif path in APK_INSTALLED:
            found += apk(path, data, distro, version)
        elif path.endswith(("/METADATA", "/PKG-INFO")):
            found += python(path, data)
        elif path.endswith("/package.json"):
            found += npm(path, data)
    return found
