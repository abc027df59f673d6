"""Run options as a profile overrides table: the one translation shared by the command line
(`sandbox run/check/lint --memory 512M ...`) and the Python API (`sandbox.run(..., memory="512M")`).

The table is merged over the profile by the loader and validated with it, like one more profile
file, so an option is checked exactly as the key it sets; each key carries a label, and a problem
names the option that set it ("--memory", "keyword argument memory", "--set limits.pids") rather
than a file. Only the shape of an option (SRC[:DST[:MODE]], NAME=VALUE, KEY=VALUE) is checked here.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .errors import Problem, ProfileError
from .profile.load import ENTRY, ORIGINS, PASSTHROUGH_ADD

_BARE_KEY = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
BIND_KEYS = ("source", "target", "mode", "optional", "noexec", "idmap")


class _Labels:
    """How options are named in problems: `--memory` or `keyword argument memory`."""

    def __init__(self, style: str):
        if style not in ("cli", "api"):
            raise ValueError(f"style must be 'cli' or 'api', not {style!r}")
        self.cli = style == "cli"

    _FLAGS = {"binds": "bind", "settings": "set"}

    def __call__(self, name: str, detail: str = "") -> str:
        """`name` is the keyword argument's; the command line's option is said for it."""
        if self.cli:
            return f"--{self._FLAGS.get(name, name).replace('_', '-')}" + (f" {detail}" if detail else "")
        return f"keyword argument {name}" + (f"[{detail}]" if detail else "")


def _put(table: dict, path: tuple[str, ...], value: Any, label: str) -> None:
    """table[path...] = value, each table on the way labelling the key with `label`."""
    node = table
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node.setdefault(ORIGINS, {})[key] = node.get(ORIGINS, {}).get(key, label)
        node = child
    node[path[-1]] = value
    node.setdefault(ORIGINS, {})[path[-1]] = label


def parse_value(text: str) -> Any:
    """A command-line value as TOML reads it (`128`, `0.5`, `true`, `["a"]`, `"x"`), or the text
    itself when it is not a TOML value (`512M`, `host`): what `--set` and `--memory` take."""
    import tomllib
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _bad(label: str, expected: str, found: Any) -> ProfileError:
    return ProfileError(Problem(label, "", expected, repr(found)))


def _bind(spec: Any, label: str) -> dict:
    """SRC[:DST[:ro|rw]], (src, dst[, mode]) or a table of [[filesystem.mounts]] keys."""
    if isinstance(spec, (str, os.PathLike)):
        spec = os.fspath(spec)
        parts = spec.split(":")
        if len(parts) == 1:
            parts += [parts[0]]
        if len(parts) == 2:
            parts.append("ro")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise _bad(label, "SRC[:DST[:ro|rw]]", spec)
        entry: dict = {"source": parts[0], "target": parts[1], "mode": parts[2]}
    elif isinstance(spec, Mapping):
        entry = dict(spec)
    elif isinstance(spec, (tuple, list)) and 1 <= len(spec) <= 3:
        entry = dict(zip(("source", "target", "mode"), (os.fspath(p) if isinstance(p, os.PathLike) else p
                                                         for p in spec)))
        entry.setdefault("target", entry["source"])
    else:
        raise _bad(label, "SRC[:DST[:ro|rw]], a (source, target[, mode]) tuple or a table", spec)
    source = entry.get("source")
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if isinstance(source, str) and source and not source.startswith(("/", "$")):
        # A relative source means the caller's directory, as with cp or mount.
        source = os.path.abspath(source)
    if source is not None:
        entry["source"] = source
    entry[ORIGINS] = {key: label for key in entry}
    entry[ENTRY] = (label, "")
    return entry


def _env(items: Any, labels: _Labels, table: dict, notes: list[str]) -> None:
    """NAME=VALUE sets a variable; NAME alone (or NAME: None) passes the host's through by name."""
    if isinstance(items, Mapping):
        pairs = [(str(name), value, labels("env", str(name))) for name, value in items.items()]
    elif isinstance(items, (str, bytes)):
        raise _bad(labels("env"), "NAME=VALUE strings or a mapping of names to values", items)
    else:
        pairs = []
        for spec in items:
            if not isinstance(spec, str):
                raise _bad(labels("env"), "NAME=VALUE or NAME", spec)
            name, sep, value = spec.partition("=")
            pairs.append((name, value if sep else None, labels("env", spec if labels.cli else name)))
    passthrough: list[str] = []
    for name, value, label in pairs:
        if not name:
            raise _bad(label, "NAME=VALUE or NAME", name)
        if value is None:
            if name not in os.environ:
                notes.append(f"{label}: {name} is not set here, so it is not passed in")
            passthrough.append(name)
        else:
            _put(table, ("process", "env", name), value, label)
    if passthrough:
        _put(table, ("process", PASSTHROUGH_ADD), passthrough, labels("env"))


def _setting(key: str, value: Any, label: str, table: dict) -> None:
    parts = tuple(key.split("."))
    if not key or any(not part or not set(part) <= _BARE_KEY for part in parts):
        raise _bad(label, "a dotted profile key such as limits.memory", key)
    node = table
    for part in parts[:-1]:
        if part in node and not isinstance(node[part], dict):
            raise _bad(label, "a key not inside a value another option sets", key)
        node = node.get(part, {})
    _put(table, parts, value, label)


def run_overrides(*, binds=(), env=None, cwd=None, timeout=None, kill_after=None, image=None, network=None,
                  memory=None, cpus=None,
                  pids=None, limits: Mapping[str, Any] | None = None, settings=(),
                  events=None, stats_interval=None,
                  style: str = "api") -> tuple[dict, list[str]]:
    """The overrides table for load_profile(overrides=...), and notes for the caller to show.

    style "cli": values are the command line's strings (numbers and TOML values parsed as TOML:
    `--pids 64`), labels are option names; `settings` is a list of KEY=VALUE. style "api": values
    are Python values as given, labels are "keyword argument NAME"; `settings` is a mapping.
    """
    labels = _Labels(style)
    table: dict = {}
    notes: list[str] = []
    value = parse_value if labels.cli else (lambda v: v)
    for name, given in (("memory", memory), ("cpus", cpus), ("pids", pids), ("timeout", timeout),
                        ("kill_after", kill_after)):
        if given is not None:
            _put(table, ("limits", name), value(given) if isinstance(given, str) else given, labels(name))
    for name, given in (limits or {}).items():
        _put(table, ("limits", str(name)), given, labels("limits", str(name)))
    for index, spec in enumerate(binds or ()):
        label = labels("binds", spec if labels.cli else str(index))
        table.setdefault("filesystem", {}).setdefault("mounts", []).append(_bind(spec, label))
        table["filesystem"].setdefault(ORIGINS, {})["mounts"] = label
        table.setdefault(ORIGINS, {}).setdefault("filesystem", label)
    if image is not None:
        from .image.ref import ReferenceError, parse
        try:
            image = str(parse(os.fspath(image)))  # a local path given here means the caller's directory
        except ReferenceError:
            pass  # reported by the loader, with the option's label
        _put(table, ("image", "ref"), image, labels("image"))
    if env:
        _env(env, labels, table, notes)
    if cwd is not None:
        _put(table, ("process", "cwd"), os.fspath(cwd), labels("cwd"))  # relative: below the profile's
    if network is not None:
        _put(table, ("network", "mode"), network, labels("network"))
        if network != "host":  # any other mode needs a namespace of its own
            _put(table, ("namespaces", "network"), True, labels("network"))
    if events is not None:  # [monitor] events: "-" or a file, relative to the caller's directory
        events = os.fspath(events)
        if events != "-" and events and not events.startswith(("/", "$")):
            events = os.path.abspath(events)
        _put(table, ("monitor", "events"), events, labels("events"))
    if stats_interval is not None:
        _put(table, ("monitor", "stats_interval"),
             value(stats_interval) if isinstance(stats_interval, str) else stats_interval, labels("stats_interval"))
    if settings:
        if labels.cli:
            for spec in settings:
                key, sep, text = spec.partition("=")
                if not sep:
                    raise _bad(f"--set {spec}", "KEY=VALUE", spec)
                _setting(key.strip(), parse_value(text.strip()), f"--set {key.strip()}", table)
        else:
            for key, given in dict(settings).items():
                _setting(str(key), given, labels("settings", str(key)), table)
    return table, notes
