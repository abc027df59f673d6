"""The `sandbox export` (oci, kubernetes, systemd) and `sandbox import oci` commands, behind cli.py."""
from __future__ import annotations

import os
import sys

from ..cli_run import EXIT_USAGE, echo, fail, warn
from . import ExportError


def _load(profile_name: str):
    from ..api import load_profile
    from ..errors import ProfileError, SandboxError
    try:
        return load_profile(profile_name)
    except ProfileError as exc:
        for problem in exc.problems:
            echo(f"sandbox: {problem}")
        sys.exit(exc.exit_code)
    except SandboxError as exc:
        fail(exc)


def _refuse(message: str) -> None:
    echo(f"sandbox: {message}")
    sys.exit(EXIT_USAGE)


def export_command(profile_name: str, argv: list, fmt: str, output: str | None, *, rootless: bool,
                   compat: str | None, image: str | None) -> None:
    if not output:
        _refuse(f"export --format {fmt}: -o DIR is required (the output is several files)")
    if os.path.exists(output) and not os.path.isdir(output):
        _refuse(f"export --format {fmt}: -o {output}: expected a directory, found a file")
    for option, value, formats in (("--rootless", rootless, ("oci", "systemd")), ("--compat", compat, ("oci",)),
                                   ("--image", image, ("kubernetes",))):
        if value and fmt not in formats:
            _refuse(f"export --format {fmt}: {option} applies only to --format {' or '.join(formats)}")
    profile = _load(profile_name)
    try:
        if fmt == "oci":
            from .oci import write_bundle
            warnings = write_bundle(profile, output, argv, rootless=rootless, compat=compat)
        elif fmt == "kubernetes":
            from .kubernetes import write_manifests
            warnings = write_manifests(profile, output, argv, image=image)
        else:
            from .systemd import write_unit
            warnings = write_unit(profile, output, argv, rootless=rootless)
    except ExportError as exc:
        _refuse(f"export --format {fmt}: {profile.name}: {exc}")
    for warning in warnings:
        warn(f"{fmt}: {warning}")


def import_oci_command(config_path: str, output: str | None) -> None:
    import json
    from .oci_import import import_oci, ImportError_
    try:
        text, warnings, findings = import_oci(config_path, output_name=output)
    except ImportError_ as exc:
        _refuse(f"import oci: {config_path}: {exc}")
    except (OSError, json.JSONDecodeError) as exc:
        _refuse(f"import oci: {config_path}: {getattr(exc, 'strerror', None) or exc}")
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    for warning in warnings:
        warn(f"import: {warning}")
    for finding in findings:
        if finding.severity != "info":
            echo(f"sandbox: lint: {finding}")
