"""The profile format described for machines and people, derived from the model.

`json_schema()` is a JSON Schema (draft 2020-12) of a profile file *as written* (before `extends`
is merged and variables are expanded), for editors and external checkers; the loader stays the
authority (it also checks what a schema cannot: existing paths, unique targets, cross-key rules).
`markdown_reference()` is the per-key reference in docs/profiles.md.

Both are generated from the dataclass fields of sandbox/profile/model.py and their metadata, so
they cannot disagree with the loader about which keys exist; tests check that the shipped
sandbox/schema/profile.schema.json and docs/profiles.md contain exactly what these functions give.
Regenerate both with scripts/gen-docs.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from . import load, model
from .dump import _value as _toml_value

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
UNLIMITED = ("unlimited", "none", "max")  # what load._optional reads as "no limit"
# A path as written: absolute, or starting with a variable such as ${CWD} (expanded on load).
PATH_PATTERN = r"^(/|\$\{[A-Za-z_][A-Za-z0-9_]*\})"
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*[KMGTPkmgtp]?([iI]?[bB]?)?\s*$"
DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"
ENV_NAME_PATTERN = load._ENV_NAME.pattern


def _ci(word: str) -> str:
    """A case-insensitive regex for `word` (JSON Schema regexes have no flags)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


def _hostname_pattern() -> str:
    lookahead = "(?=.{1,64}$)"
    assert lookahead in load._HOSTNAME.pattern, "load._HOSTNAME changed: update schema._hostname_pattern"
    return load._HOSTNAME.pattern.replace(lookahead, "")


def _caps_pattern() -> str:
    from .units import CAPABILITIES
    return "^(" + _ci("cap_") + ")?(" + "|".join(_ci(name) for name in CAPABILITIES) + ")$"


def _path(what: str) -> dict:
    return {"type": "string", "minLength": 1, "pattern": PATH_PATTERN,
            "description": f"{what}: absolute, or starting with a variable such as ${{CWD}}"}


def _unlimited(schema: dict) -> dict:
    return {"anyOf": [schema, {"enum": list(UNLIMITED)}]}


_SIZE = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": load.MAX_SIZE},
                   {"type": "string", "pattern": SIZE_PATTERN}]}
_DURATION = {"anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 366 * 86400},
                       {"type": "string", "pattern": DURATION_PATTERN}]}
_RLIMIT_VALUE = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": (1 << 63) - 1},
                           {"enum": ["unlimited", "infinity"]}]}
_ID = {"type": "integer", "minimum": 0, "maximum": load.MAX_ID}


def _kind_schema(kind: str, fld: dataclasses.Field) -> dict:
    """The JSON Schema of what the loader accepts for a key of this kind."""
    meta = fld.metadata
    if kind in ("str", "str?"):
        return {"type": "string"}
    if kind == "bool":
        return {"type": "boolean"}
    if kind in ("argv", "strings"):
        return {"type": "array", "items": {"type": "string"}}
    if kind == "env":
        return {"type": "object", "propertyNames": {"pattern": ENV_NAME_PATTERN},
                "additionalProperties": {"type": "string"}}
    if kind == "names":
        return {"type": "array", "items": {"type": "string", "pattern": ENV_NAME_PATTERN[:-1] + r"\*?$"}}
    if kind in ("id", "id?"):
        return dict(_ID)
    if kind == "int?":
        return _unlimited({"type": "integer", "minimum": 1, "maximum": 1 << 40})
    if kind == "hostname":
        return {"type": "string", "minLength": 1, "maxLength": 64, "pattern": _hostname_pattern()}
    if kind == "mode":
        return {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 0o7777},
                          {"type": "string", "pattern": "^[0-7]{1,5}$"}]}
    if kind == "target":
        return _path("a path inside the sandbox")
    if kind == "targets":
        return {"type": "array", "items": _path("a path inside the sandbox")}
    if kind == "source":
        return _path("a host path")
    if kind == "output":
        return {"anyOf": [{"const": "-"}, _path("a host path")]}
    if kind == "size":
        return json.loads(json.dumps(_SIZE))
    if kind == "size?":
        return _unlimited(json.loads(json.dumps(_SIZE)))
    if kind == "duration?":
        return _unlimited(json.loads(json.dumps(_DURATION)))
    if kind == "duration":
        return {"anyOf": [{"type": "number", "minimum": 0, "maximum": 3600},
                          {"type": "string", "pattern": DURATION_PATTERN}]}
    if kind == "cpus":
        return _unlimited({"type": "number", "minimum": 0.01, "maximum": 4096})
    if kind == "blockdev":
        return {"anyOf": [{"type": "string", "pattern": r"^\d+:\d+$"}, _path("a block device")]}
    if kind == "root":
        return {"anyOf": [{"const": "tmpfs"}, _path("a host directory")]}
    if kind == "devices":
        return {"type": "array", "items": {"enum": [*model.ALLOWED_DEVICES,
                                                    *(f"/dev/{d}" for d in model.ALLOWED_DEVICES)]}}
    if kind == "caps":
        from .units import CAPABILITY_NUMBERS
        return {"type": "array", "items": {"type": "string", "pattern": _caps_pattern()},
                "examples": [sorted(CAPABILITY_NUMBERS)[:3]]}
    if kind == "limitnames":
        return {"type": "array", "items": {"enum": list(model.LIMIT_NAMES)}}
    if kind == "rlimits":
        names = "^(" + _ci("rlimit_") + ")?(" + "|".join(_ci(n) for n in model.RLIMIT_NAMES) + ")$"
        return {"type": "object", "propertyNames": {"pattern": names},
                "additionalProperties": {"anyOf": [
                    json.loads(json.dumps(_RLIMIT_VALUE)),
                    {"type": "array", "minItems": 2, "maxItems": 2, "items": json.loads(json.dumps(_RLIMIT_VALUE))},
                ]}}
    if kind == "execpatterns":
        # '**' only as a whole last component
        return {"type": "array", "items": {**_path("a path or pattern inside the sandbox"),
                                           "pattern": r"^(?!.*(\*\*(?!$)|[^/]\*\*))" + PATH_PATTERN[1:]}}
    if kind == "secretname":
        return {"type": "string", "pattern": load._SECRET_NAME.pattern}
    if kind == "envname":
        return {"type": "string", "pattern": ENV_NAME_PATTERN}
    if kind == "enum":
        return {"enum": list(meta["choices"])}
    if kind == "segment":
        from ..net.spec import SEGMENT_NAME
        return {"anyOf": [{"const": ""}, {"type": "string", "pattern": SEGMENT_NAME.pattern}]}
    if kind in ("egress", "publish", "nameservers"):  # forms checked by the loader (sandbox/net/spec.py)
        examples = {"egress": ["index.example.com:443", "192.0.2.0/24", "198.51.100.7:5432/tcp", "53/udp"],
                    "publish": ["127.0.0.1:8080:80", "5353:53/udp"], "nameservers": ["192.0.2.53"]}[kind]
        return {"type": "array", "items": {"type": "string", "minLength": 1}, "examples": [examples]}
    if kind == "table":
        return _table_schema(type(fld.default_factory()))
    if kind == "tables":
        return {"type": "array", "items": _table_schema(meta["item"])}
    if kind == "seccomp":
        return seccomp_schema()
    raise ValueError(f"no schema for kind {kind!r} (field {fld.name}): add it to schema._kind_schema")


def _default(fld: dataclasses.Field) -> Any:
    """The field's default as TOML would write it, or None when it has none worth showing."""
    kind = fld.metadata["kind"]
    if kind == "table":
        return None
    value = fld.default_factory() if fld.default_factory is not dataclasses.MISSING else fld.default
    if value is None:
        return None
    return _toml_value(kind, value)


def _fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("kind") != "internal"]


def _table_schema(cls) -> dict:
    properties = {}
    for fld in _fields(cls):
        schema = _kind_schema(fld.metadata["kind"], fld)
        described = {**schema, "description": _description(fld)}
        default = _default(fld)
        if default is not None:
            described["default"] = default
        properties[fld.name] = described
    out: dict = {"type": "object", "properties": properties, "additionalProperties": False}
    required = [f.name for f in _fields(cls) if f.metadata.get("required")]
    if required:
        out["required"] = required
    return out


def _description(fld: dataclasses.Field) -> str:
    text = fld.metadata["doc"]
    if fld.metadata.get("relaxes"):
        text += f" Changing it relaxes isolation: {fld.metadata['relaxes']}."
    return text


# The [seccomp] section is parsed by sandbox.seccomp.policy; its keys are listed there, their forms here.
_ACTION = {"type": "string", "description": 'allow, errno, errno(EPERM), errno(38), kill-process, '
                                            'kill-thread, trap, log or notify'}
_SYSCALLS = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
             "description": "syscall names and @groups"}
_SECCOMP_KEYS = {
    "policy": {"type": "string", "default": "default",
               "description": "default, strict, unconfined, none, or a path to a .toml or .json policy"},
    "mode": {"enum": ["allowlist", "denylist"], "description": 'Only with policy = "none".'},
    "default_action": {**_ACTION, "description": "Action for calls no rule matches: " + _ACTION["description"]},
    "architectures": {"type": "array", "minItems": 1, "items": {"type": "string"},
                      "description": 'ABIs the filter accepts, e.g. ["native"]'},
    "allow": {**_SYSCALLS, "description": "Syscalls and @groups to allow."},
    "deny": {**_SYSCALLS, "description": "Syscalls and @groups to deny with deny_action."},
    "deny_action": {**_ACTION, "description": "What deny does (default errno(EPERM))."},
    "name": {"type": "string", "description": "Name shown in reports."},
}
_RULE_KEYS = {
    "syscalls": _SYSCALLS, "syscall": _SYSCALLS, "action": _ACTION,
    "args": {"type": "array", "maxItems": 6, "items": {"type": "object", "additionalProperties": False}},
    "comment": {"type": "string"},
}
_ARG_KEYS = {
    "index": {"type": "integer", "minimum": 0, "maximum": 5},
    "op": {"type": "string", "description": "eq, ne, lt, le, gt, ge, masked_eq (or ==, !=, <, <=, >, >=, &==)"},
    "value": {"type": "integer", "minimum": -(1 << 63), "maximum": (1 << 64) - 1},
    "mask": {"type": "integer", "minimum": -(1 << 63), "maximum": (1 << 64) - 1},
}


def seccomp_schema() -> dict:
    """A loose schema of [seccomp]: the keys sandbox.seccomp accepts, with their basic types."""
    from ..seccomp import policy
    args = {"type": "object", "properties": {k: dict(_ARG_KEYS.get(k, {})) for k in policy.ARG_KEYS},
            "required": ["index", "value"], "additionalProperties": False}
    rule_props = {k: json.loads(json.dumps(_RULE_KEYS.get(k, {}))) for k in policy.RULE_KEYS}
    if "args" in rule_props:
        rule_props["args"]["items"] = args
    rules = {"type": "array", "description": "Rules applied after allow and deny, in order.",
             "items": {"type": "object", "properties": rule_props, "required": ["action"],
                       "additionalProperties": False}}
    properties = {k: rules if k == "rules" else json.loads(json.dumps(_SECCOMP_KEYS.get(k, {})))
                  for k in policy.SECTION_KEYS}
    return {"type": "object", "properties": properties, "additionalProperties": False}


def json_schema() -> dict:
    """JSON Schema (draft 2020-12) of a profile file, generated from the model."""
    schema = _table_schema(model.Profile)
    return {"$schema": SCHEMA_DIALECT, "title": "sandbox profile",
            "description": "A sandbox profile (TOML). See docs/profiles.md. Generated from "
                           "sandbox/profile/model.py by sandbox.profile.schema; do not edit.",
            **schema}


def schema_text() -> str:
    """The shipped file's exact text."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------- markdown

_KIND_NAMES = {
    "str": "string", "str?": "string", "bool": "boolean", "argv": "array of strings", "strings": "array of strings",
    "env": "table of strings", "names": "array of variable names", "id": "integer id",
    "id?": "integer id", "int?": "integer or \"unlimited\"", "hostname": "hostname", "mode": "octal mode",
    "target": "path inside", "targets": "array of paths inside", "source": "host path",
    "output": "host path or \"-\"",
    "size": "size", "size?": "size or \"unlimited\"", "duration?": "duration or \"unlimited\"", "duration": "duration",
    "cpus": "number or \"unlimited\"", "root": "\"tmpfs\" or host directory",
    "devices": "array of device names", "caps": "array of capabilities",
    "limitnames": "array of limit names", "rlimits": "table of rlimits", "blockdev": "block device", "enum": "one of",
    "tables": "array of tables", "seccomp": "table", "execpatterns": "array of paths or patterns inside",
    "secretname": "file name", "envname": "variable name",
    "tables": "array of tables", "seccomp": "table", "segment": "segment name",
    "egress": "array of destinations", "publish": "array of published ports",
    "nameservers": "array of IPv4 addresses",
}


def _inline(value: Any) -> str:
    """A value in TOML inline syntax."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (int, float)):
        return repr(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_inline(v)}" for k, v in value.items()) + " }" if value else "{}"
    raise TypeError(type(value))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _type(fld: dataclasses.Field) -> str:
    kind = fld.metadata["kind"]
    if kind == "enum":
        return " or ".join(f"`{c}`" for c in fld.metadata["choices"])
    return _KIND_NAMES[kind]


def _rows(cls) -> list[str]:
    rows = ["| Key | Type | Default | Meaning |", "|---|---|---|---|"]
    for fld in _fields(cls):
        kind = fld.metadata["kind"]
        if kind in ("table", "tables", "seccomp"):  # each has a section of its own
            continue
        default = _default(fld)
        if default is None:
            shown = "required" if fld.metadata.get("required") else "unset"
            if cls is model.Mount and fld.name == "target":
                shown = "the source"
        else:
            shown = f"`{_cell(_inline(default))}`"
        meaning = fld.metadata["doc"]
        if fld.metadata.get("relaxes"):
            meaning += f" *Relaxes:* {fld.metadata['relaxes']}."
        rows.append(f"| `{fld.name}` | {_type(fld)} | {shown} | {_cell(meaning)} |")
    return rows


def markdown_reference() -> str:
    """Per-key tables for docs/profiles.md, one per TOML table, in model order."""
    out = ["### Top level", "", *_rows(model.Profile), ""]
    for fld in _fields(model.Profile):
        kind = fld.metadata["kind"]
        if kind == "table":
            cls = type(fld.default_factory())
            out += [f"### `[{fld.name}]`", "", fld.metadata["doc"], "", *_rows(cls), ""]
            for sub in _fields(cls):
                if sub.metadata["kind"] == "tables":
                    out += [f"#### `[[{fld.name}.{sub.name}]]`", "", sub.metadata["doc"], "",
                            *_rows(sub.metadata["item"]), ""]
        elif kind == "tables":  # a top-level array of tables: [[secrets]]
            out += [f"### `[[{fld.name}]]`", "", fld.metadata["doc"], "", *_rows(fld.metadata["item"]), ""]
        elif kind == "seccomp":
            from ..seccomp import policy
            out += [f"### `[{fld.name}]`", "", fld.metadata["doc"] + " Keys: "
                    + ", ".join(f"`{k}`" for k in policy.SECTION_KEYS)
                    + "; `[[seccomp.rules]]` entries take " + ", ".join(f"`{k}`" for k in policy.RULE_KEYS)
                    + ". Default: `policy = \"default\"`.", ""]
    return "\n".join(out).rstrip("\n") + "\n"


# docs/profiles.md holds markdown_reference() between these lines (scripts/gen-docs writes it).
BEGIN_MARK = "<!-- BEGIN GENERATED REFERENCE: scripts/gen-docs writes this section from sandbox/profile/model.py -->"
END_MARK = "<!-- END GENERATED REFERENCE -->"
