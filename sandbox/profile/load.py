"""Profile files -> Profile: find, read, follow `extends`, merge, expand variables, convert, validate.

All problems in a file are collected and raised together as one ProfileError; each names the file,
the key path (``filesystem.mounts[2].target``), what was expected and what was found.

Merge rules for `extends` (the base first, then each profile that extends it):
- `name` and `description` are not inherited: they describe the file that sets them;
- tables merge key by key; a scalar or a plain array in the child replaces the base's;
- arrays of tables that have a target (mounts, tmpfs, symlinks, files) merge by target: an entry with
  the same target replaces the base's entry in place, new targets are appended;
- other arrays of tables (seccomp.rules) are appended to the base's.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import tomllib
from typing import Any

from ..errors import Problem, ProfileError
from . import model
from .units import normalize_capability, parse_duration, parse_size

ORIGINS = "\0origins"  # per-table map key -> file that set it, so problems name the right file
# In each table of an array of tables: (file, its own key path there), e.g. the first
# [[filesystem.mounts]] of base.toml is (".../base.toml", "filesystem.mounts[0]") however many
# mounts the merged list has before it. Overrides give their label: ("--bind /a:/b", "").
ENTRY = "\0entry"
_INTERNAL = (ORIGINS, ENTRY)
MAX_EXTENDS_DEPTH = 16
_OWN_KEYS = ("name", "description")  # not inherited through extends
MAX_SIZE = 1 << 50  # 1 PiB: anything larger is a typo, not a limit
MAX_ID = (1 << 32) - 2
_VARIABLE = re.compile(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)\})")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOSTNAME = re.compile(r"^(?=.{1,64}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")
VARIABLES_DOC = {
    "CWD": "the directory `sandbox` was started in",
    "HOME": "the caller's home directory",
    "PROFILE_DIR": "the directory of the profile file that uses the variable",
    "UID": "the caller's uid",
    "GID": "the caller's gid",
}


# Paths are plain strings here: pathlib (with the urllib.parse and ipaddress it imports) would add
# ~3.5 ms to every `sandbox run`. The public functions still return Path objects.

def _profile_dirs() -> list[str]:
    dirs = [p for p in os.environ.get("SANDBOX_PROFILE_PATH", "").split(":") if p]
    dirs += [os.path.join(os.path.expanduser("~"), ".config/sandbox/profiles"), "/etc/sandbox/profiles"]
    package = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # .../sandbox
    shipped = os.path.join(package, "builtin_profiles")  # an install: the wheel maps profiles/ here
    if os.path.isdir(shipped):
        dirs.append(shipped)
    elif os.path.isfile(os.path.join(os.path.dirname(package), "pyproject.toml")):
        # A source checkout (editable install, or run from the tree): profiles/ is the source, so an
        # edit shows at once. Only beside a pyproject.toml: an installed package's parent is
        # site-packages, where a "profiles" directory would belong to some other distribution.
        dirs.append(os.path.join(os.path.dirname(package), "profiles"))
    return dirs


def _profile_files() -> dict[str, str]:
    found: dict[str, str] = {}
    for directory in _profile_dirs():
        try:
            names = sorted(n for n in os.listdir(directory) if n.endswith(".toml")) if os.path.isdir(directory) else []
        except OSError:  # e.g. a HOME we may not read after switching users
            continue
        for name in names:
            found.setdefault(_stem(name), _clean(os.path.join(directory, name)))
    return found


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _clean(path: str) -> str:
    """str(Path(path)): repeated slashes and '.' parts dropped, '..' kept (symlinks decide its meaning)."""
    parts = "/".join(part for part in path.split("/") if part not in ("", "."))
    return ("/" + parts if path.startswith("/") else parts) or "."


def _absolute(path: str) -> str:
    """str(Path(path).absolute())."""
    return _clean(path if path.startswith("/") else os.path.join(os.getcwd(), path))


def builtin_profile_dirs() -> list[Path]:
    from pathlib import Path
    return [Path(d) for d in _profile_dirs()]


def builtin_profile_names() -> dict[str, Path]:
    from pathlib import Path
    return {name: Path(path) for name, path in _profile_files().items()}


def is_path_like(name: str) -> bool:
    return "/" in name or name.endswith(".toml") or name.startswith(".")


def resolve_profile(name_or_path: str, relative_to: Path | None = None) -> Path:
    from pathlib import Path
    return Path(_resolve(name_or_path, None if relative_to is None else str(relative_to)))


def _resolve(name_or_path: str, relative_to: str | None = None) -> str:
    if is_path_like(name_or_path):
        path = os.path.expanduser(name_or_path)
        if not path.startswith("/") and relative_to is not None:
            path = os.path.join(relative_to, path)
        return _absolute(path)
    builtins = _profile_files()
    if name_or_path in builtins:
        return builtins[name_or_path]
    hint = _did_you_mean(name_or_path, builtins)
    raise ProfileError(Problem(name_or_path, "", "a profile file or a built-in profile name "
                               f"({', '.join(sorted(builtins)) or 'none installed'})",
                               f"'{name_or_path}'", hint))


def _did_you_mean(word: str, choices) -> str:
    import difflib  # only for an error
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""


def read_toml(path: str | Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ProfileError(Problem(str(path), "", "an existing profile file", "no such file")) from None
    except IsADirectoryError:
        raise ProfileError(Problem(str(path), "", "a profile file", "a directory")) from None
    except PermissionError:
        raise ProfileError(Problem(str(path), "", "a readable profile file", "permission denied")) from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(Problem(str(path), "", "valid TOML", str(exc))) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProfileError(Problem(str(path), "", "a UTF-8 TOML file", type(exc).__name__)) from None
    except OSError as exc:
        raise ProfileError(Problem(str(path), "", "a readable profile file", exc.strerror or str(exc))) from None


# ---------------------------------------------------------------- variables and origins

def _variables(path: str) -> dict[str, str]:
    return {"CWD": os.getcwd(), "HOME": _clean(os.path.expanduser("~")), "PROFILE_DIR": os.path.dirname(path) or ".",
            "UID": str(os.getuid()), "GID": str(os.getgid())}


def _expand(value: Any, variables: dict[str, str], file: str, key: str, problems: list[Problem]) -> Any:
    if isinstance(value, str):
        def substitute(match: re.Match) -> str:
            if match.group(1) == "$":
                return "$"
            name = match.group(2)
            if name not in variables:
                problems.append(Problem(file, key, f"a known variable ({', '.join('${%s}' % v for v in VARIABLES_DOC)})",
                                        "${%s}" % name, _did_you_mean(name, variables)))
                return match.group(0)
            return variables[name]
        return _VARIABLE.sub(substitute, value)
    if isinstance(value, list):
        out_list = [_expand(item, variables, file, f"{key}[{i}]", problems) for i, item in enumerate(value)]
        for i, item in enumerate(out_list):
            if isinstance(item, dict) and ENTRY not in item:
                item[ENTRY] = (file, f"{key}[{i}]")
        return out_list
    if isinstance(value, dict):
        # An overrides table may label its keys itself ("--memory", "keyword argument memory").
        labels = value.get(ORIGINS) or {}
        out = {k: _expand(v, variables, labels.get(k, file), _join(key, k), problems)
               for k, v in value.items() if k not in _INTERNAL}
        out[ORIGINS] = {k: labels.get(k, file) for k in value if k not in _INTERNAL}
        if ENTRY in value:
            out[ENTRY] = value[ENTRY]
        return out
    return value


def _merge(base: Any, child: Any) -> Any:
    if isinstance(base, dict) and isinstance(child, dict):
        merged = dict(base)
        origins = dict(base.get(ORIGINS, {}))
        for key, value in child.items():
            if key in _INTERNAL:
                continue
            merged[key] = _merge(base[key], value) if key in base else value
            origins[key] = child.get(ORIGINS, {}).get(key, origins.get(key))
        merged[ORIGINS] = origins
        return merged
    if _is_table_array(base) and _is_table_array(child):
        keyed = [_entry_key(item) for item in base]
        if all(k is not None for k in keyed) and all(_entry_key(item) is not None for item in child):
            merged_list = list(base)
            own: set = set()  # targets this file set: a second entry with one is a duplicate, kept
            for item in child:  # so that validation reports it rather than one silently winning
                key = _entry_key(item)
                if key in keyed and key not in own:
                    merged_list[keyed.index(key)] = item
                else:
                    merged_list.append(item)
                    keyed.append(key)
                own.add(key)
            return merged_list
        return list(base) + list(child)
    return child


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


def _entry_key(item: dict) -> str | None:
    key = item.get("target", item.get("source", item.get("name")))  # name: [[secrets]]
    return os.path.normpath(key) if isinstance(key, str) and key else None


# ---------------------------------------------------------------- the chain

def load_raw(name_or_path: str, *, overrides: dict | None = None) -> tuple[dict, str, list[str], list[Problem]]:
    """Follow the extends chain and merge it; returns (merged table, file, chain, problems)."""
    path = _resolve(name_or_path)
    chain: list[str] = []
    tables: list[dict] = []
    problems: list[Problem] = []
    current: str | None = path
    while current is not None:
        real = os.path.realpath(current)
        if real in [os.path.realpath(p) for p in chain]:
            cycle = " -> ".join(chain + [current])
            raise ProfileError(Problem(chain[-1], "extends", "a chain without cycles", cycle))
        if len(chain) >= MAX_EXTENDS_DEPTH:
            raise ProfileError(Problem(path, "extends", f"at most {MAX_EXTENDS_DEPTH} levels", f"{len(chain) + 1}"))
        raw = read_toml(current)
        chain.append(current)
        table = _expand(raw, _variables(current), current, "", problems)
        if chain[1:]:  # a base's name and description describe the base, not the profile loaded
            for key in _OWN_KEYS:
                table.pop(key, None)
        tables.append(table)
        parent = raw.get("extends")
        if parent is None:
            current = None
        elif not isinstance(parent, str) or not parent:
            problems.append(Problem(current, "extends", "a profile name or path (string)", _show(parent)))
            current = None
        else:
            try:
                current = _resolve(parent, relative_to=os.path.dirname(current))
            except ProfileError as exc:
                raise ProfileError(Problem(current, "extends", exc.problems[0].expected,
                                           exc.problems[0].found, exc.problems[0].hint)) from None
    merged: dict = {}
    for table in reversed(tables):
        merged = _merge(merged, table)
    if overrides:
        overrides = _expand(overrides, _variables(path), "command line", "", problems)
        merged = _merge(merged, _relative_to(merged, overrides))
    return merged, path, chain, problems


# Overrides key for host variable names to pass through in addition to the profile's own
# (`--env NAME`, `env={"NAME": None}`): env_passthrough itself replaces, as arrays do.
PASSTHROUGH_ADD = "\0env_passthrough_add"


def _relative_to(merged: dict, overrides: dict) -> dict:
    """What an override means relative to the profile: a relative cwd is below the profile's
    working directory (`--cwd src` under /workspace is /workspace/src), and variables passed
    through by name add to the profile's env_passthrough."""
    process = overrides.get("process")
    if not isinstance(process, dict):
        return overrides
    process = dict(process)
    base = merged.get("process") if isinstance(merged.get("process"), dict) else {}
    cwd = process.get("cwd")
    if isinstance(cwd, str) and cwd and not cwd.startswith("/") and "\0" not in cwd:
        base_cwd = base.get("cwd", model.Process().cwd)
        if isinstance(base_cwd, str) and base_cwd.startswith("/"):
            process["cwd"] = os.path.normpath(os.path.join(base_cwd, cwd))
    added = process.pop(PASSTHROUGH_ADD, None)
    if added:
        # The host's value, even where the profile sets one: drop the profile's own.
        env = base.get("env")
        if isinstance(env, dict) and any(name in env for name in added):
            merged["process"] = {**base, "env": {k: v for k, v in env.items() if k not in added}}
        names = process.get("env_passthrough", base.get("env_passthrough", []))
        names = list(names) if isinstance(names, list) else []
        process["env_passthrough"] = names + [n for n in added if n not in names]
        origins = dict(process.get(ORIGINS, {}))
        origins["env_passthrough"] = process.get(ORIGINS, {}).get(PASSTHROUGH_ADD, "command line")
        origins.pop(PASSTHROUGH_ADD, None)
        process[ORIGINS] = origins
    return {**overrides, "process": process}


def load_profile(name_or_path: str, *, overrides: dict | None = None) -> model.Profile:
    """Load a profile by built-in name or path. `overrides` is a table merged on top (run options,
    sandbox.options.run_overrides()); problems in it are labelled by the option that set the key."""
    merged, path, chain, problems = load_raw(name_or_path, overrides=overrides)
    builder = _Builder(path, problems)
    profile = builder.build(model.Profile, merged, "")
    if profile is not None:
        if not profile.name:
            profile = profile.replace(name=_stem(path))
        profile = profile.replace(source=path, lineage=tuple(chain))
        profile = _with_image(profile, merged, path, problems)
        from .validate import validate
        problems.extend(builder.locate(problem, merged) for problem in validate(profile, path))
    if problems:
        raise ProfileError(_printable(problems))
    return profile


def _with_image(profile: model.Profile, merged: dict, file: str, problems: list[Problem]) -> model.Profile:
    """[image] -> the image's root and process settings (sandbox/image/profile.py). The [process] keys
    any file of the chain or the command line sets override the image's config."""
    if not profile.image.ref or problems:
        return profile  # a broken profile pulls nothing
    from ..image.profile import ImageProblem, apply_image
    process = merged.get("process")
    explicit = {key for key in process if key != ORIGINS} if isinstance(process, dict) else set()
    try:
        return apply_image(profile, explicit)
    except ImageProblem as exc:
        problems.append(_blame(Problem(file, exc.key, exc.expected, exc.found, exc.hint), merged))
        return profile


_KEY_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _blame(problem: Problem, merged: dict) -> Problem:
    """Name the file of the extends chain that set the key a cross-key problem is about."""
    node: Any = merged
    origin = None
    for match in _KEY_PART.finditer(problem.key):
        name, index = match.group(1), match.group(2)
        if name is not None and isinstance(node, dict) and name in node:
            origin, node = node.get(ORIGINS, {}).get(name, origin), node[name]
        elif index is not None and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        else:
            return problem  # a default: the profile being loaded is the one to change
    return dataclasses.replace(problem, file=origin) if origin else problem


def with_overrides(profile: model.Profile, overrides: dict) -> model.Profile:
    """`profile` (already loaded) with an overrides table merged on top and everything validated
    again, as load_profile(overrides=...) does for a profile loaded by name."""
    from .dump import _escape, to_table
    source = profile.source or "<profile>"
    problems: list[Problem] = []
    table = _escape(to_table(profile))
    table.pop("extends", None)
    base = _expand(table, _variables(source), source, "", problems)
    merged = _merge(base, _relative_to(base, _expand(overrides, _variables(source), "command line", "",
                                                     problems)))
    builder = _Builder(source, problems)
    built = builder.build(model.Profile, merged, "")
    if built is not None:
        built = built.replace(source=profile.source, lineage=profile.lineage)
        from .validate import validate
        problems.extend(builder.locate(problem, merged) for problem in validate(built, source))
    if problems:
        raise ProfileError(_printable(problems))
    return built


def profile_from_dict(data: dict, source: str = "<dict>") -> model.Profile:
    """Build a profile from an in-memory table (no extends resolution beyond built-in names)."""
    problems: list[Problem] = []
    table = _expand(data, _variables(source), source, "", problems)
    if isinstance(data.get("extends"), str):
        base, _, chain, base_problems = load_raw(data["extends"])
        problems.extend(base_problems)
        table = _merge({k: v for k, v in base.items() if k not in _OWN_KEYS}, table)
    builder = _Builder(source, problems)
    profile = builder.build(model.Profile, table, "")
    if profile is not None:
        profile = _with_image(profile, table, source, problems)
        from .validate import validate
        problems.extend(builder.locate(problem, table) for problem in validate(profile, source))
    if problems:
        raise ProfileError(_printable(problems))
    return profile


# ---------------------------------------------------------------- conversion

def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        if all(isinstance(item, (str, int, float)) for item in value):
            text = "[" + ", ".join(_show(item) for item in value) + "]"
            if len(text) <= 60:
                return text
        return "an array"
    return repr(value)


class _Invalid(Exception):
    """A value the loader cannot use; `sub` extends the key path (``[2]``, ``.nofile``)."""

    def __init__(self, expected: str, found: str = "", hint: str = "", sub: str = ""):
        self.expected, self.found, self.hint, self.sub = expected, found, hint, sub


def _each(items: list, convert) -> list:
    """Convert each item of an array; a problem names the item's index."""
    out = []
    for index, item in enumerate(items):
        try:
            out.append(convert(item))
        except _Invalid as exc:
            exc.sub = f"[{index}]{exc.sub}"
            raise
    return out


def _check_path(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid(f"{what} (a non-empty string)", _show(value))
    if "\0" in value:
        raise _Invalid(f"{what} without NUL bytes", _show(value))
    if not value.startswith("/"):
        raise _Invalid(f"an absolute {what}", _show(value), "relative paths are ambiguous; use ${CWD} or ${PROFILE_DIR}")
    return value


def _target(value: Any) -> str:
    path = _check_path(value, "path inside the sandbox")
    if ".." in path.split("/"):
        raise _Invalid("a path inside the sandbox without '..'", _show(value))
    return os.path.normpath(path).replace("//", "/")


def _source(value: Any) -> str:
    return os.path.normpath(_check_path(value, "host path")).replace("//", "/")


def _output(value: Any) -> str:
    """Where a stream goes: "-" (standard output) or a host path."""
    if value == "-":
        return value
    return _source(value)


def _integer(value: Any, low: int, high: int, what: str = "an integer") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"{what} from {low} to {high}", _show(value))
    if not low <= value <= high:
        raise _Invalid(f"{what} from {low} to {high}", str(value))
    return value


def _size(value: Any) -> int:
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise _Invalid(str(exc), _show(value)) from None
    if size > MAX_SIZE:
        raise _Invalid("a size of at most 1P", _show(value))
    return size


def _optional(convert):
    def inner(value: Any):
        if value in ("unlimited", "none", "max"):
            return None
        return convert(value)
    return inner


def _grace(value: Any) -> float:
    """A duration that may be 0 (a grace period: 0 means none), at most an hour."""
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise _Invalid(str(exc), _show(value)) from None
    if seconds > 3600:
        raise _Invalid("a duration from 0 to 1h", _show(value))
    return seconds


def _duration(value: Any) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise _Invalid(str(exc), _show(value)) from None
    if seconds <= 0 or seconds > 366 * 86400:
        raise _Invalid("a duration above 0 and at most a year", _show(value))
    return seconds


def _string_list(value: Any, what: str = "strings") -> list[str]:
    if not isinstance(value, list):
        raise _Invalid(f"an array of {what}", _show(value))
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _Invalid(f"a string in an array of {what}", _show(item), sub=f"[{index}]")
    return value


def _argv(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise _Invalid("an array of strings", _show(value), 'e.g. ["/bin/sh", "-c", "make test"]')
    items = _string_list(value)
    if any(not item and index == 0 or "\0" in item for index, item in enumerate(items)):
        raise _Invalid("a command whose words contain no NUL bytes and whose first word is not empty", _show(value))
    return tuple(items)


def _env(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise _Invalid("a table of NAME = \"value\"", _show(value))
    pairs = []
    for name, text in value.items():
        if name in _INTERNAL:
            continue
        if not _ENV_NAME.match(name):
            raise _Invalid("variable names of letters, digits and _", repr(name))
        if not isinstance(text, str) or "\0" in text:
            raise _Invalid("a string without NUL bytes", _show(text), sub=f".{name}")
        pairs.append((name, text))
    return tuple(sorted(pairs))


def _names(value: Any) -> tuple[str, ...]:
    def name(item: str) -> str:
        if not _ENV_NAME.match(item.rstrip("*")) or "*" in item.rstrip("*"):
            raise _Invalid("variable names, optionally ending in *", repr(item))
        return item
    return tuple(_each(_string_list(value, "variable names"), name))


def _exec_patterns(value: Any) -> tuple[str, ...]:
    from ..execlist import check_pattern
    def pattern(item: str) -> str:
        try:
            return check_pattern(item)
        except ValueError as exc:
            raise _Invalid(str(exc), repr(item)) from None
    return tuple(dict.fromkeys(_each(_string_list(value, "paths or patterns"), pattern)))


_SECRET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def _secret_name(value: Any) -> str:
    if not isinstance(value, str) or not _SECRET_NAME.match(value):
        raise _Invalid("a file name of letters, digits, '.', '_' and '-' (at most 128, not starting with '.' "
                       "or '-')", _show(value))
    return value


def _env_name(value: Any) -> str:
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        raise _Invalid("a variable name of letters, digits and _", _show(value))
    return value


def _mode(value: Any) -> int:
    if isinstance(value, str):
        try:
            value = int(value, 8)
        except ValueError:
            raise _Invalid("an octal mode such as \"0755\"", _show(value)) from None
    return _integer(value, 0, 0o7777, "a mode")


def _hostname(value: Any) -> str:
    if not isinstance(value, str) or not _HOSTNAME.match(value):
        raise _Invalid("a hostname of letters, digits, '-' and '.', at most 64 characters", _show(value))
    return value


def _root(value: Any) -> str:
    if value == "tmpfs":
        return value
    path = _source(value)
    if not os.path.isdir(path):
        raise _Invalid("'tmpfs' or an existing host directory", _show(value))
    return path


def _devices(value: Any) -> tuple[str, ...]:
    def device(item: str) -> str:
        name = item.removeprefix("/dev/")
        if name not in model.ALLOWED_DEVICES:
            raise _Invalid(f"device names from {', '.join(model.ALLOWED_DEVICES)}", repr(item),
                           _did_you_mean(name, model.ALLOWED_DEVICES))
        return name
    return tuple(dict.fromkeys(_each(_string_list(value, "device names"), device)))


def _caps(value: Any) -> tuple[str, ...]:
    def capability(item: str) -> str:
        try:
            return normalize_capability(item)
        except ValueError as exc:
            from .units import CAPABILITY_NUMBERS
            raise _Invalid(str(exc), repr(item), _did_you_mean(item.upper() if item.upper().startswith("CAP_")
                                                              else "CAP_" + item.upper(), CAPABILITY_NUMBERS)) from None
    return tuple(sorted(set(_each(_string_list(value, "capability names"), capability))))


def _limit_names(value: Any) -> tuple[str, ...]:
    def limit(item: str) -> str:
        if item not in model.LIMIT_NAMES:
            raise _Invalid(f"limit names from {', '.join(model.LIMIT_NAMES)}", repr(item),
                           _did_you_mean(item, model.LIMIT_NAMES))
        return item
    return tuple(_each(_string_list(value, "limit names"), limit))


def _rlimit_value(value: Any) -> int:
    if value in ("unlimited", "infinity"):
        return -1
    return _integer(value, 0, (1 << 63) - 1, "a limit")


def _rlimits(value: Any) -> tuple[tuple[str, int, int], ...]:
    if not isinstance(value, dict):
        raise _Invalid("a table of name = value", _show(value))
    limits = {name: (soft, hard) for name, soft, hard in model.Limits().rlimits}
    problems: list[_Invalid] = []
    for name, item in value.items():
        if name in _INTERNAL:
            continue
        key = name.lower().removeprefix("rlimit_")
        if key not in model.RLIMIT_NAMES:
            problems.append(_Invalid(f"rlimit names from {', '.join(model.RLIMIT_NAMES)}", repr(name),
                                     _did_you_mean(key, model.RLIMIT_NAMES)))
            continue
        try:
            if isinstance(item, list):
                if len(item) != 2:
                    raise _Invalid("a value, \"unlimited\" or [soft, hard]", _show(item))
                soft, hard = _each(item, _rlimit_value)
                if hard != -1 and (soft == -1 or soft > hard):
                    raise _Invalid("a soft limit not above the hard limit", _show(item))
            else:
                soft = hard = _rlimit_value(item)
        except _Invalid as exc:
            exc.sub = f".{name}{exc.sub}"
            problems.append(exc)
            continue
        limits[key] = (soft, hard)
    if problems:
        raise _Invalids(problems)
    return tuple(sorted((name, soft, hard) for name, (soft, hard) in limits.items()))


def _block_device(value: Any) -> str:
    """'8:0' or a block device path -> 'MAJOR:MINOR' (what the cgroup files take)."""
    if isinstance(value, str) and re.fullmatch(r"\d+:\d+", value):
        return value
    if isinstance(value, str) and value.startswith("/"):
        try:
            info = os.stat(value)
        except OSError:
            raise _Invalid("an existing block device or \"MAJOR:MINOR\"", _show(value)) from None
        if stat.S_ISBLK(info.st_mode):
            return f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"
    raise _Invalid("a block device path or \"MAJOR:MINOR\"", _show(value))


def _cpus(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.01 <= value <= 4096:
        raise _Invalid("a number of cores from 0.01 to 4096", _show(value))
    return float(value)


def _enum(value: Any, choices: tuple[str, ...]) -> str:
    """One of `choices`, in any case ("RW" is "rw"), as capability and rlimit names are."""
    if isinstance(value, str):
        for choice in choices:
            if value.strip().lower() == choice:
                return choice
    raise _Invalid(" or ".join(repr(c) for c in choices), _show(value),
                   _did_you_mean(str(value).lower(), choices))


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid("a string", _show(value))
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("true or false", _show(value))
    return value


def _network_entries(parser: str, what: str):
    """An array of [network] entries, each parsed by sandbox.net.spec (one problem per bad entry)."""
    def convert(value: Any) -> tuple[str, ...]:
        from ..net import spec
        entries, bad = [], []
        for index, item in enumerate(_string_list(value, what)):
            try:
                parsed = getattr(spec, parser)(item)
            except spec.SpecError as exc:
                bad.append(_Invalid(str(exc), _show(item), sub=f"[{index}]"))
                continue
            entries.append(parsed if isinstance(parsed, str) else parsed.text)
        if bad:
            raise _Invalids(bad)
        return tuple(dict.fromkeys(entries))
    return convert


def _segment(value: Any) -> str:
    from ..net import spec
    if value == "":
        return value
    try:
        return spec.parse_segment(value)
    except spec.SpecError as exc:
        raise _Invalid(str(exc), _show(value)) from None


_CONVERTERS = {
    "str": _string, "str?": _string, "bool": _boolean, "argv": _argv, "env": _env, "names": _names,
    "id": lambda v: _integer(v, 0, MAX_ID, "an id"), "id?": lambda v: _integer(v, 0, MAX_ID, "an id"),
    "int?": _optional(lambda v: _integer(v, 1, 1 << 40)), "hostname": _hostname, "mode": _mode,
    "target": _target, "targets": lambda v: tuple(_each(_string_list(v, "paths"), _target)),
    "source": _source, "output": _output, "size": _size, "size?": _optional(_size), "duration?": _optional(_duration),
    "duration": _grace,
    "cpus": _optional(_cpus), "root": _root, "devices": _devices, "caps": _caps,
    "limitnames": _limit_names, "rlimits": _rlimits, "blockdev": _block_device,
    "execpatterns": _exec_patterns, "secretname": _secret_name, "envname": _env_name,
    "strings": lambda v: tuple(_string_list(v)),
    "segment": _segment, "egress": _network_entries("parse_egress", "destinations"),
    "publish": _network_entries("parse_publish", "published ports"),
    "nameservers": _network_entries("parse_dns", "name server addresses"),
}


class _Builder:
    def __init__(self, file: str, problems: list[Problem]):
        self.file = file
        self.problems = problems
        # key path of an array of tables -> (file, own key path) of each entry that was built,
        # in the order of the profile's tuple: what cross-key problems about entry N are about.
        self.entries: dict[str, list[tuple[str, str]]] = {}

    def _origin(self, table: dict, key: str, file: str | None = None) -> str:
        return table.get(ORIGINS, {}).get(key) or file or self.file

    def build(self, cls, table: Any, path: str, file: str | None = None, table_name: str | None = None):
        """`file` is where `table` came from when it is an entry of an array of tables (named
        `table_name` in messages: its `path` is its own position in that file)."""
        if not isinstance(table, dict):
            self.problems.append(Problem(file or self.file, path, "a table", _show(table)))
            return None
        fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("kind") != "internal"}
        table_name = table_name or path
        for key in table:
            if key not in _INTERNAL and key not in fields:
                self.problems.append(Problem(self._origin(table, key, file), _join(path, key), f"a known key of "
                                             f"[{table_name or 'top level'}]", repr(key),
                                             _did_you_mean(key, fields)))
        values = {}
        for name, fld in fields.items():
            key_path = _join(path, name)
            if name not in table:
                if fld.metadata.get("required"):
                    self.problems.append(Problem(file or self.file, key_path, f"a value for '{name}'", "nothing"))
                continue
            value = self._convert(fld, table[name], key_path, self._origin(table, name, file))
            if value is not _MISSING:
                values[name] = value
        if cls is model.Mount and "target" not in values and "source" in values:
            values["target"] = values["source"]
        if any(f.metadata.get("required") and n not in values for n, f in fields.items()):
            return None
        try:
            return cls(**values)
        except TypeError as exc:  # a required key missing: already reported
            self.problems.append(Problem(self.file, path, "a complete table", str(exc)))
            return None

    def _convert(self, fld, value: Any, key_path: str, origin: str):
        kind = fld.metadata["kind"]
        if kind not in ("table", "tables", "seccomp") and self._reported(origin, key_path):
            return _MISSING  # e.g. an unknown ${VARIABLE}: converting what is left would only repeat it
        try:
            if kind == "table":
                result = self.build(fld.default_factory().__class__, value, key_path)
                return _MISSING if result is None else result
            if kind == "tables":
                if not _is_table_array(value):
                    raise _Invalid("an array of tables", _show(value))
                built, located = [], []
                for i, item in enumerate(value):
                    # Named by the entry's own file and position there, not its merged index.
                    file, own = item.get(ENTRY) or (origin, f"{key_path}[{i}]")
                    entry = self.build(fld.metadata["item"], item, own, file, key_path)
                    if entry is not None:
                        built.append(entry)
                        located.append((file, own))
                self.entries[key_path] = located
                return tuple(built)
            if kind == "enum":
                return _enum(value, fld.metadata["choices"])
            if kind == "seccomp":
                from ..seccomp import parse_section
                policy, problems = parse_section(_strip_origins(value) if isinstance(value, dict) else value,
                                                 origin, key_path)
                self.problems.extend(_rules_located(problems, value, key_path))
                return _MISSING if problems else policy
            return _CONVERTERS[kind](value)
        except _Invalid as exc:
            self.problems.append(Problem(origin, key_path + exc.sub, exc.expected, exc.found, exc.hint))
            return _MISSING
        except _Invalids as many:  # every problem of the value, not only the first
            for exc in many.problems:
                self.problems.append(Problem(origin, key_path + exc.sub, exc.expected, exc.found, exc.hint))
            return _MISSING

    def _reported(self, file: str, key_path: str) -> bool:
        return any(p.file == file and (p.key == key_path or p.key.startswith((key_path + ".", key_path + "[")))
                   for p in self.problems)

    def locate(self, problem: Problem, merged: dict) -> Problem:
        """A cross-key problem (validate.py) named where the user wrote the key: an entry of an
        array of tables by its own file and position there (mentions of other entries too), any
        other key by the file of the extends chain that set it (_blame)."""
        match = _ENTRY_KEY.match(problem.key)
        if not match or match.group(1) not in self.entries:
            return _blame(problem, merged)
        located = self._entry(match.group(1), int(match.group(2)))
        if located is None:
            return _blame(problem, merged)
        file, own = located

        def mention(found: re.Match) -> str:
            other = self._entry(found.group(1), int(found.group(2)))
            if other is None:
                return found.group(0)
            where = _at(other[1], found.group(3))
            return where if other[0] == file else f"{where} of {other[0]}"
        found = _ENTRY_MENTION.sub(mention, problem.found)
        return dataclasses.replace(problem, file=file, key=_at(own, match.group(3)), found=found)

    def _entry(self, table_path: str, index: int) -> tuple[str, str] | None:
        entries = self.entries.get(table_path, [])
        return entries[index] if index < len(entries) else None


def _rules_located(problems: list[Problem], table: Any, key_path: str) -> list[Problem]:
    """[[seccomp.rules]] are appended through extends: a problem in rule N of the merged list is
    named by that rule's own file and position there."""
    rules = table.get("rules") if isinstance(table, dict) else None
    if not isinstance(rules, list):
        return problems
    prefix = re.compile(re.escape(key_path) + r"\.rules\[(\d+)\]")
    out = []
    for problem in problems:
        match = prefix.match(problem.key)
        index = int(match.group(1)) if match else -1
        entry = rules[index].get(ENTRY) if 0 <= index < len(rules) and isinstance(rules[index], dict) else None
        if entry:
            problem = dataclasses.replace(problem, file=entry[0], key=_at(entry[1], problem.key[match.end():]))
        out.append(problem)
    return out


_MISSING = object()
_ENTRY_KEY = re.compile(r"^([A-Za-z0-9_.]+)\[(\d+)\](.*)$")
_ENTRY_MENTION = re.compile(r"\b([a-z_]+\.[a-z_]+)\[(\d+)\]((?:\.[a-z_]+)?)")


def _at(own: str, rest: str) -> str:
    """An entry's own key path plus the rest of a key ("" own: an option, e.g. --bind)."""
    return (own + rest) if own else rest.lstrip(".")


class _Invalids(Exception):
    """Several values of one key the loader cannot use, each reported."""

    def __init__(self, problems: list[_Invalid]):
        self.problems = problems


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _join(path: str, key: str) -> str:
    """`path.key`, the key quoted as TOML would need it (``process."odd key"``)."""
    if not _BARE_KEY.match(key):
        key = json.dumps(key, ensure_ascii=False)
    return f"{path}.{key}" if path else key


def _printable(problems: list[Problem]) -> list[Problem]:
    """Problems render one per line: escape control characters in keys (e.g. from [seccomp]).
    A problem set by a run option loses hints that only make sense in a profile file."""
    out = []
    for p in problems:
        if _CONTROL.search(p.key):
            p = dataclasses.replace(p, key=_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", p.key))
        if is_option_label(p.file) and any(word in p.hint for word in _PROFILE_ONLY_HINTS):
            p = dataclasses.replace(p, hint="")
        out.append(p)
    return out


# Fixes a profile file can make and a command line or keyword argument cannot.
_PROFILE_ONLY_HINTS = ("${", "optional = true")


def is_option_label(origin: str) -> bool:
    """Did a run option (`--memory`, `keyword argument memory`, `--set KEY`) set the key?"""
    return origin.startswith("--") or origin.startswith("keyword argument") or origin == "command line"


def _strip_origins(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_origins(v) for k, v in value.items() if k not in _INTERNAL}
    if isinstance(value, list):
        return [_strip_origins(v) for v in value]
    return value
