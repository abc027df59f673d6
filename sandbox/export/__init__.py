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
