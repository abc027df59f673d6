"""The JSON Schema and the docs reference are generated from the model and cannot drift from it."""
from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path

import pytest

from sandbox.profile import load_profile, model
from sandbox.profile.dump import to_table, to_toml
from sandbox.profile.load import builtin_profile_names
from sandbox.profile.schema import (BEGIN_MARK, DURATION_PATTERN, END_MARK, SIZE_PATTERN, json_schema,
                                    markdown_reference, schema_text)
from sandbox.profile.units import parse_duration, parse_size

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "sandbox/schema/profile.schema.json"
DOC = ROOT / "docs/profiles.md"

# ---------------------------------------------------------------- a validator for the subset we emit

ANNOTATIONS = {"$schema", "title", "description", "default", "examples"}
ASSERTIONS = {"type", "enum", "const", "pattern", "minLength", "maxLength", "minimum", "maximum",
              "exclusiveMinimum", "items", "minItems", "maxItems", "properties", "additionalProperties",
              "propertyNames", "required", "anyOf"}
TYPES = {
    "object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def errors(schema: dict, value, path: str = "$") -> list[str]:
    """Every way `value` fails `schema` (JSON Schema 2020-12, the keywords in ASSERTIONS)."""
    out: list[str] = []
    unknown = set(schema) - ANNOTATIONS - ASSERTIONS
    assert not unknown, f"validator does not implement {unknown} (at {path})"
    if "type" in schema and not TYPES[schema["type"]](value):
        return [f"{path}: not {schema['type']}: {value!r}"]
    if "enum" in schema and not any(value == c and type(value) is type(c) for c in schema["enum"]):
        out.append(f"{path}: {value!r} not in {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        out.append(f"{path}: {value!r} != {schema['const']!r}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", float("inf")):
            out.append(f"{path}: length of {value!r}")
    if TYPES["number"](value):
        if value < schema.get("minimum", float("-inf")) or value > schema.get("maximum", float("inf")):
            out.append(f"{path}: {value!r} out of range")
        if "exclusiveMinimum" in schema and not value > schema["exclusiveMinimum"]:
            out.append(f"{path}: {value!r} not above {schema['exclusiveMinimum']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", float("inf")):
            out.append(f"{path}: {len(value)} items")
        if "items" in schema:
            for i, item in enumerate(value):
                out += errors(schema["items"], item, f"{path}[{i}]")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                out.append(f"{path}: missing {key}")
        for key, item in value.items():
            if "propertyNames" in schema:
                out += errors(schema["propertyNames"], key, f"{path}.{key} (name)")
            if key in properties:
                out += errors(properties[key], item, f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                out.append(f"{path}: unknown key {key!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                out += errors(schema["additionalProperties"], item, f"{path}.{key}")
    if "anyOf" in schema:
        branches = [errors(branch, value, path) for branch in schema["anyOf"]]
        if all(branches):
            out.append(f"{path}: matches no alternative: " + "; ".join(b[0] for b in branches))
    return out


def _walk(schema):
    yield schema
    for key, item in schema.items():
        if key in ("properties",):
            for sub in item.values():
                yield from _walk(sub)
        elif isinstance(item, dict) and key not in ("default", "examples"):
            yield from _walk(item)
        elif key == "anyOf":
            for sub in item:
                yield from _walk(sub)


# ---------------------------------------------------------------- the shipped files

def test_shipped_schema_is_generated():
    assert SHIPPED.read_text() == schema_text(), "run scripts/gen-docs after changing the model"


def test_schema_is_json_and_says_its_dialect():
    schema = json.loads(SHIPPED.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False


def test_validator_implements_every_keyword_the_schema_uses():
    used = set().union(*(set(node) for node in _walk(json_schema())))
    assert used <= ANNOTATIONS | ASSERTIONS, used - ANNOTATIONS - ASSERTIONS
    for node in _walk(json_schema()):
        if "pattern" in node:
            re.compile(node["pattern"])


def test_every_model_field_is_in_the_schema():
    schema = json_schema()

    def check(cls, node):
        names = [f.name for f in dataclasses.fields(cls) if f.metadata["kind"] != "internal"]
        assert list(node["properties"]) == names
        assert node["additionalProperties"] is False
        for f in dataclasses.fields(cls):
            if f.metadata["kind"] == "table":
                check(type(f.default_factory()), node["properties"][f.name])
            elif f.metadata["kind"] == "tables":
                check(f.metadata["item"], node["properties"][f.name]["items"])
            if f.metadata["kind"] != "internal":
                assert node["properties"][f.name]["description"].startswith(f.metadata["doc"])
    check(model.Profile, schema)


def test_seccomp_section_lists_the_keys_the_seccomp_package_accepts():
    from sandbox.seccomp import policy
    section = json_schema()["properties"]["seccomp"]
    assert list(section["properties"]) == list(policy.SECTION_KEYS)
    assert list(section["properties"]["rules"]["items"]["properties"]) == list(policy.RULE_KEYS)


def test_schema_defaults_are_the_model_defaults():
    schema = json_schema()
    defaults = to_table(model.Profile())
    for section in ("process", "namespaces", "filesystem", "network", "limits", "landlock", "audit"):
        for key, value in defaults[section].items():
            assert schema["properties"][section]["properties"][key].get("default") == value, (section, key)
    assert schema["properties"]["limits"]["properties"]["memory"]["default"] == "1G"
    assert schema["properties"]["seccomp"]["properties"]["policy"]["default"] == "default"


@pytest.mark.parametrize("name", sorted(builtin_profile_names()))
def test_builtin_profiles_validate_as_written_and_resolved(name):
    path = builtin_profile_names()[name]
    assert errors(json_schema(), tomllib.loads(path.read_text())) == []
    resolved = tomllib.loads(to_toml(load_profile(name)))
    assert errors(json_schema(), resolved) == []


def test_default_profile_validates():
    assert errors(json_schema(), tomllib.loads(to_toml(model.Profile()))) == []


@pytest.mark.parametrize("document", [
    {"bogus": 1},
    {"process": {"hostnme": "x"}},
    {"process": {"hostname": "-bad-"}},
    {"process": {"user": -1}},
    {"filesystem": {"mounts": [{"target": "/x"}]}},          # source required
    {"filesystem": {"mounts": [{"source": "relative"}]}},
    {"filesystem": {"mounts": [{"source": "/x", "mode": "rwx"}]}},
    {"filesystem": {"devices": ["sda"]}},
    {"limits": {"memory": "lots"}},
    {"limits": {"timeout": 0}},
    {"limits": {"rlimits": {"files": 1}}},
    {"limits": {"rlimits": {"nofile": [1, 2, 3]}}},
    {"capabilities": {"keep": ["CAP_FLY"]}},
    {"network": {"mode": "bridged"}},
    {"network": {"segment": "Not A Name"}},
    {"seccomp": {"polcy": "default"}},
    {"seccomp": {"rules": [{"action": "allow", "argz": []}]}},
])
def test_schema_rejects(document):
    assert errors(json_schema(), document)


@pytest.mark.parametrize("document", [
    {"filesystem": {"mounts": [{"source": "${CWD}", "target": "/w", "mode": "rw"}]}},
    {"limits": {"memory": "unlimited", "timeout": "90s", "rlimits": {"NOFILE": [10, "unlimited"]}}},
    {"capabilities": {"keep": ["net_bind_service", "CAP_CHOWN", "Cap_Kill"]}},
    {"process": {"umask": "0077", "env_passthrough": ["LC_*"]}},
    {"seccomp": {"policy": "strict", "rules": [{"syscalls": ["socket"], "action": "errno",
                                               "args": [{"index": 0, "value": 1}]}]}},
])
def test_schema_accepts(document):
    assert errors(json_schema(), document) == []


@pytest.mark.parametrize("text", ["0", "512", "512M", "2G", "1.5g", "1KiB", "4 MB", " 8k "])
def test_size_pattern_agrees_with_the_parser(text):
    assert re.search(SIZE_PATTERN, text)
    parse_size(text)


@pytest.mark.parametrize("text", ["30s", "5m", "250ms", "2h", "1d", "90", "1.5s"])
def test_duration_pattern_agrees_with_the_parser(text):
    assert re.search(DURATION_PATTERN, text)
    parse_duration(text)


@pytest.mark.parametrize("text", ["", "M", "-1M", "1X", "1.M"])
def test_size_pattern_rejects_what_the_parser_rejects(text):
    assert not re.search(SIZE_PATTERN, text)
    with pytest.raises(ValueError):
        parse_size(text)


# ---------------------------------------------------------------- docs

def test_docs_contain_the_generated_reference_verbatim():
    text = DOC.read_text()
    assert BEGIN_MARK + "\n\n" + markdown_reference() + "\n" + END_MARK in text, \
        "docs/profiles.md is stale: run scripts/gen-docs"


def test_reference_covers_every_key():
    reference = markdown_reference()

    def check(cls):
        for f in dataclasses.fields(cls):
            kind = f.metadata["kind"]
            if kind == "table":
                assert f"### `[{f.name}]`" in reference
                check(type(f.default_factory()))
            elif kind == "tables":
                assert f".{f.name}]]`" in reference or f"`[[{f.name}]]`" in reference  # nested or top level
                check(f.metadata["item"])
            elif kind == "seccomp":
                assert "### `[seccomp]`" in reference
            elif kind != "internal":
                assert f"| `{f.name}` |" in reference, f.name
    check(model.Profile)


def test_docs_name_every_variable_and_builtin_profile():
    from sandbox.profile.load import VARIABLES_DOC
    text = DOC.read_text()
    for name in VARIABLES_DOC:
        assert "${%s}" % name in text
    for name in ("untrusted", "ci"):
        assert f"**`{name}`**" in text


def test_docs_examples_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    examples = re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S)
    assert len(examples) >= 3
    for i, example in enumerate(examples):
        path = tmp_path / f"example{i}.toml"
        path.write_text(example)
        profile = load_profile(str(path))
        assert profile.lineage[0] == str(path)
        assert errors(json_schema(), tomllib.loads(example)) == []
