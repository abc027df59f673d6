"""Profile -> TOML table (the inverse of the loader), for `sandbox check` and the profile hash."""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import tomli_w

from ..digest import sha256

from .model import Profile, per_profile
from .units import format_duration, format_size, parse_duration

# Kinds whose "no limit" is written "unlimited" (the loader reads it as None).
_UNLIMITED_KINDS = ("size?", "int?", "duration?", "cpus")
# A "$" the loader would read as the start of a variable or of "$$": written doubled.
_DOLLAR = re.compile(r"\$(?=[${])")


def _rlimit(value: int) -> int | str:
    return "unlimited" if value == -1 else value


def _value(kind: str, value: Any) -> Any:
    if kind == "seccomp":  # None is a value here: "unconfined", not "the default policy"
        from ..seccomp import to_toml_dict
        return to_toml_dict(value)
    if value is None:
        return None
    if kind in ("size", "size?"):
        return format_size(value)
    if kind in ("duration?", "duration"):
        text = format_duration(value)
        return text if parse_duration(text) == value else value  # e.g. 0.0004 s: as a number
    if kind == "mode":
        return f"{value:04o}"
    if kind == "env":
        return dict(value)
    if kind == "rlimits":
        return {name: _rlimit(soft) if soft == hard else [_rlimit(soft), _rlimit(hard)]
                for name, soft, hard in value}
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
        raw = getattr(obj, fld.name)
        if raw is None and kind in _UNLIMITED_KINDS and fld.default is not None:
            table[fld.name] = "unlimited"  # absent would mean the (limited) default
            continue
        value = _value(kind, raw)
        if value is not None and value != {}:
            table[fld.name] = value
    return table


def _escape(value: Any) -> Any:
    """Protect literal "${" and "$$" from the loader's variable expansion."""
    if isinstance(value, str):
        return _DOLLAR.sub("$$", value)
    if isinstance(value, list):
        return [_escape(item) for item in value]
    if isinstance(value, dict):
        return {key: _escape(item) for key, item in value.items()}
    return value


def to_toml(profile: Profile) -> str:
    """The profile as a TOML document that loads back to an equal profile (source and lineage aside)."""
    table = to_table(profile)
    table.pop("extends", None)  # the resolved profile stands alone
    return tomli_w.dumps(_escape(table))


@per_profile
def profile_hash(profile: Profile) -> str:
    """Hash of the resolved profile, recorded with every launch. Cached per profile: rendering it
    costs more than a warm launch's other bookkeeping together."""
    return sha256(to_toml(profile).encode()).hexdigest()[:16]
