"""`sandbox scan`: known problems in an image, a directory, or what a profile's sandbox sees.

One walk per tree: metadata checks on every entry, contents read only for credential-prone files
and package databases (see checks.py), then the SBOM, matched against an OSV database when one is
given, and, for images, the image's configuration. A scanner finds known problems; it is no proof
that an image is safe (docs/images.md says what is and is not looked at).
"""
from __future__ import annotations

import hashlib
import json
import os
import time

from ..errors import SandboxError
from . import checks, sbom, vulns
from .findings import (RANK, SEVERITIES, TOOL_VERSION, AllowlistError, Component, Finding, Report,
                       load_allowlist)
from .tree import DirectorySource, ImageSource

__all__ = ["Finding", "Report", "ScanError", "SEVERITIES", "gate", "run_scan", "scan_directory", "scan_image",
           "scan_profile"]


class ScanError(SandboxError):
    """A scan that could not run (bad target, allowlist or database)."""


def _walk(source, report: Report, top: str = "/", owners: bool = True) -> dict[str, bytes]:
    """Walk one source into the report; returns the package database files it collected."""
    files = checks.FileChecks(source.kind, source.image_root, top)
    packages: dict[str, bytes] = {}
    count = 0
    for entry in source.entries():
        count += 1
        files.check(entry)
        if entry.kind != "file":
            continue
        if sbom.wanted(entry.path, entry.kind):
            data = source.read(entry, 64 << 20)
            if data is not None:
                packages[entry.path] = data
        if checks.wants_content(entry):
            data = source.read(entry, checks.READ_LIMIT)
            if data:
                report.findings += checks.content_findings(entry.path, data)
    report.files += count
    passwd = groups = None
    if owners:  # judged by the tree's own /etc/passwd and /etc/group, when it has them
        passwd = checks.ids_from(source.read(_fake(f"{top.rstrip('/')}/etc/passwd"), 1 << 20))
        groups = checks.ids_from(source.read(_fake(f"{top.rstrip('/')}/etc/group"), 1 << 20))
    report.findings += files.finish(passwd, groups)
    report.notes += getattr(source, "errors", [])[:5]
    source.close()
    return packages


def _fake(path: str):
    from .tree import Entry
    return Entry(path, "file", 0, 0, 0)


def _finish(report: Report, packages: dict[str, bytes], vuln_db: str | None, allowlist: str | None,
            started: float) -> Report:
    report.components = sbom.components(_rebase(packages))
    if vuln_db:
        try:
            database = vulns.load_database(vuln_db)
        except FileNotFoundError:
            raise ScanError(f"scan: --vuln-db {vuln_db}: no such directory") from None
        report.vulnerability_db = os.path.abspath(vuln_db)
        report.findings += vulns.match(report.components, database)
    if allowlist:
        try:
            report.accept(load_allowlist(allowlist))
        except AllowlistError as exc:
            raise ScanError(f"scan: allowlist {exc}") from None
    report.sort()
    report.elapsed = time.monotonic() - started
    return report


def _rebase(packages: dict[str, bytes]) -> dict[str, bytes]:
    """Package databases keyed as the sbom module expects (/var/lib/dpkg/status...), whatever the
    mount point they were found under; the first of each path wins."""
    rebased: dict[str, bytes] = {}
    for path, data in packages.items():
        marker = next((m for m in (*sbom.DPKG_STATUS, *sbom.APK_INSTALLED, *sbom.OS_RELEASE) if path.endswith(m)),
                      None)
        if marker is None and sbom.DPKG_STATUS_DIR in path:
            marker = sbom.DPKG_STATUS_DIR + path.rsplit("/", 1)[1]
        rebased.setdefault(marker or path, data)
    return rebased


def scan_image(image, *, allowlist: str | None = None, vuln_db: str | None = None, target: str = "") -> Report:
    started = time.monotonic()
    report = Report(target or image.id, "image", image={"id": image.id, "config": image.config_digest,
                                                         "created": image.created,
                                                         "references": list(image.references)})
    packages = _walk(ImageSource(image), report)
    report.findings += checks.config_findings(image.config())
    return _finish(report, packages, vuln_db, allowlist, started)


def scan_directory(path: str, *, allowlist: str | None = None, vuln_db: str | None = None) -> Report:
    started = time.monotonic()
    if not os.path.isdir(path):
        raise ScanError(f"scan: {path}: not a directory")
    root = os.path.abspath(path)
    report = Report(root, "directory")
    # Locations are host paths here: the tree is on the host, and so is whatever handles it next.
    packages = _walk(DirectorySource(root, mount_at=root), report, top=root)
    return _finish(report, packages, vuln_db, allowlist, started)


def scan_profile(profile, *, allowlist: str | None = None, vuln_db: str | None = None) -> Report:
    """What the profile's sandbox would see: its image (or host root directory) and each bind
    source at its target. tmpfs start empty and /proc, /dev are the kernel's: not scanned."""
    started = time.monotonic()
    report = Report(profile.source or profile.name, "profile")
    packages: dict[str, bytes] = {}
    if profile.image.rootfs:
        from ..image.store import Store
        image = Store(profile.image.store or None).get(profile.image.digest)
        report.image = {"id": image.id, "config": image.config_digest, "created": image.created,
                        "references": list(image.references)}
        packages.update(_walk(ImageSource(image), report))
        report.findings += checks.config_findings(image.config())
    elif profile.filesystem.root != "tmpfs":
        packages.update(_walk(DirectorySource(profile.filesystem.root, mount_at="/"), report))
    for mount in profile.filesystem.mounts:
        if not os.path.lexists(mount.source):
            continue
        if os.path.isdir(mount.source):
            packages.update(_walk(DirectorySource(mount.source, mount_at=mount.target), report, top=mount.target,
                                  owners=False))
        else:
            report.files += 1
            source = DirectorySource(os.path.dirname(mount.source) or "/", mount_at=os.path.dirname(mount.target))
            data = None
            from .tree import Entry
            entry = Entry(mount.target, "file", 0, 0, 0, size=os.path.getsize(mount.source)
                          if os.path.isfile(mount.source) else 0)
            if checks.wants_content(entry):
                real = Entry(os.path.join(os.path.dirname(mount.target), os.path.basename(mount.source)), "file", 0, 0, 0)
                data = source.read(real, checks.READ_LIMIT)
            if data:
                report.findings += checks.content_findings(mount.target, data)
            source.close()
    return _finish(report, packages, vuln_db, allowlist, started)


def _looks_like_ref(text: str) -> bool:
    return text.startswith(("oci:", "oci-archive:", "docker-archive:", "docker://"))


def run_scan(target: str, *, allowlist: str | None = None, vuln_db: str | None = None, store=None) -> Report:
    """TARGET: an image reference, an image in the store (digest or prefix), a directory, or a profile."""
    from ..image.store import ImageError, Store
    store = store or Store()
    if _looks_like_ref(target):
        image = store.pull(target, allowed=None)
        return scan_image(image, allowlist=allowlist, vuln_db=vuln_db, target=target)
    if os.path.isdir(target):
        return scan_directory(target, allowlist=allowlist, vuln_db=vuln_db)
    text = target.removeprefix("sha256:")
    if len(text) >= 12 and all(c in "0123456789abcdef" for c in text):
        try:
            return scan_image(store.get(target), allowlist=allowlist, vuln_db=vuln_db, target=target)
        except ImageError:
            pass
    from ..profile import load_profile
    return scan_profile(load_profile(target), allowlist=allowlist, vuln_db=vuln_db)


def gate(image, threshold: str, *, allowlist: str | None = None, vuln_db: str | None = None, store=None) -> Report:
    """`[image] require_scan`: refuse an image with open findings at or above `threshold`. The
    report is cached beside the image, keyed by the scanner version, allowlist and database."""
    from ..image.store import ImageError
    key = hashlib.sha256(f"{TOOL_VERSION}\0{image.id}\0{_stamp(allowlist)}\0{_stamp(vuln_db, tree=True)}".encode())
    cache = os.path.join(image.path, f"scan-{key.hexdigest()[:16]}.json")
    report = None
    try:
        with open(cache, "rb") as handle:
            report = _report_from(json.load(handle))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if report is None:
        report = scan_image(image, allowlist=allowlist, vuln_db=vuln_db)
        try:
            tmp = f"{cache}.{os.getpid()}.tmp"
            with open(tmp, "w") as handle:
                handle.write(report.to_json())
            os.replace(tmp, cache)
        except OSError:
            pass
    failing = report.failing(threshold)
    if failing:
        first = failing[0]
        raise ImageError(f"{image.id[:19]}: {len(failing)} finding{'s' if len(failing) > 1 else ''} at or above "
                         f"{threshold} (image.require_scan), first: {first.severity} {first.rule} {first.location}: "
                         f"{first.detail}; see sandbox scan {image.id[7:19]}")
    return report


def _stamp(path: str | None, tree: bool = False) -> str:
    if not path:
        return ""
    try:
        if not tree:
            with open(path, "rb") as handle:
                return hashlib.sha256(handle.read()).hexdigest()
        parts = []
        for folder, _, names in os.walk(path):
            for name in sorted(names):
                info = os.stat(os.path.join(folder, name))
                parts.append(f"{folder}/{name}:{info.st_size}:{info.st_mtime_ns}")
        return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()
    except OSError:
        return "missing"


def _report_from(data: dict) -> Report:
    report = Report(data["target"], data["kind"], image=data.get("image", {}), files=data.get("files", 0),
                    elapsed=data.get("elapsed", 0.0), vulnerability_db=data.get("vulnerability_db", ""))
    report.findings = [Finding(**item) for item in data["findings"]]
    report.components = [Component(**{k: v for k, v in item.items() if k != "purl"}) for item in data["packages"]]
    return report


# Re-exported for the CLI's choices.
SEVERITY_RANK = RANK
