"""Load a policy named by path from a profile: a .toml [seccomp] table or a Docker .json."""
from __future__ import annotations

import json
import os
import tomllib

from ..errors import Problem
from .model import SeccompPolicy


def load_policy_file(path: str, depth: int = 1) -> tuple[SeccompPolicy | None, list[Problem]]:
    """A .toml file holds a [seccomp] table (or its keys at top level); .json is Docker's format."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        return None, [Problem(path, "", "a readable seccomp policy file", exc.strerror or str(exc))]
    if path.endswith(".json"):
        from .docker import import_docker
        try:
            return import_docker(json.loads(raw), name=os.path.basename(path)), []
        except (ValueError, TypeError, KeyError) as exc:
            return None, [Problem(path, "", "a Docker/OCI seccomp profile", str(exc))]
    try:
        doc = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return None, [Problem(path, "", "valid TOML", str(exc))]
    from .policy import parse_section
    if isinstance(doc.get("seccomp"), dict):
        return parse_section(doc["seccomp"], path, "seccomp", _depth=depth)
    return parse_section(doc, path, "", _depth=depth)
