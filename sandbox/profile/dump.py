"""Profile -> TOML table (the inverse of the loader), for `sandbox check` and the profile hash."""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import tomli_w

from .model import Profile
from .units import format_duration, format_size


def _value(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind in ("size", "size?"):
        return format_size(value)
    if kind == "duration?":
        return format_duration(value)
    if kind == "mode":
        return f"{value:04o}"
    if kind == "env":
        return dict(value)
    if kind == "rlimits":
        return {name: (soft if soft == hard else [soft, hard]) if soft != -1 or hard != -1 else "unlimited"
                for name, soft, hard in value}
    if kind == "seccomp":
        from ..seccomp import to_toml_dict
        return to_toml_dict(value)
    if isinstance(value, tuple):
        return [to_table(item) if dataclasses.is_dataclass(item) else item for item in value]
    if dataclasses.is_dataclass(value):
        return to_table(value)
    return value


def to_table(obj: Any) -> dict:
    table: dict = {}
    for fld in dataclasses.fields(obj):
        kind = fld.metadata.get("kind")
        if kind == "internal":
            continue
        value = _value(kind, getattr(obj, fld.name))
        if value is not None and value != {}:
            table[fld.name] = value
    return table


def to_toml(profile: Profile) -> str:
    table = to_table(profile)
    table.pop("extends", None)  # the resolved profile stands alone
    return tomli_w.dumps(table)


def profile_hash(profile: Profile) -> str:
    return hashlib.sha256(to_toml(profile).encode()).hexdigest()[:16]
