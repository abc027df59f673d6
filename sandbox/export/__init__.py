"""Export a profile to other tools' formats, and import an OCI bundle's config.json as a profile.

    sandbox export PROFILE --format oci -o DIR         config.json + rootfs/ (runc, crun, sandbox-runtime)
    sandbox export PROFILE --format kubernetes -o DIR  Pod, NetworkPolicy, RuntimeClass, seccomp JSON
    sandbox export PROFILE --format systemd -o DIR     NAME.service with the [Service] hardening + rootfs/
    sandbox import oci config.json -o profile.toml

Every translation returns its warnings: what the target cannot express is said, never dropped
silently. Each module is pure apart from `write_*`, which writes the files (see docs/oci.md,
"Export and import").
"""
from __future__ import annotations


class ExportError(ValueError):
    """The profile cannot be exported to this target at all (one line: what and why)."""


def prepare_output(directory: str) -> None:
    """Make `directory` for an export, or accept an existing one that is empty, a real directory
    (not a symlink) and this user's: a directory someone else controls could have entries swapped
    for symlinks while we write, and an export by root would then write wherever they point."""
    import os
    if os.path.islink(directory):
        raise ExportError(f"{directory} is a symlink: export into a new directory")
    if os.path.exists(directory):
        info = os.stat(directory)
        if info.st_uid != os.geteuid():
            raise ExportError(f"{directory} belongs to uid {info.st_uid}, not to this user: export into a new "
                              "directory")
        if os.listdir(directory):
            raise ExportError(f"{directory} exists and is not empty: export into a new directory")
    else:
        os.makedirs(directory, mode=0o755)


def write_file(path: str, text: str) -> None:
    """Create a new file (never through a symlink, never over an existing file)."""
    import os
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


class Warnings:
    """What a translation could not carry over, in the order found, without repeats."""

    def __init__(self):
        self.items = []

    def add(self, key: str, message: str) -> None:
        text = f"{key}: {message}" if key else message
        if text not in self.items:
            self.items.append(text)

    def __iter__(self):
        return iter(self.items)

    def __len__(self):
        return len(self.items)
