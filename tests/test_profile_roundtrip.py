"""Round trips (profile -> TOML -> profile) and garbage in (bytes, random TOML): never a traceback."""
from __future__ import annotations

import dataclasses
import os
import string
import tempfile
import tomllib

import pytest
import tomli_w
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sandbox.errors import ProfileError
from sandbox.profile import load_profile, model
from sandbox.profile.dump import to_table, to_toml
from sandbox.profile.load import MAX_ID, builtin_profile_names
from sandbox.profile.units import CAPABILITY_NUMBERS
from sandbox.profile.validate import validate
from sandbox.seccomp import builtin_policy, parse_section

# SANDBOX_HYPOTHESIS_EXAMPLES=2000 for a longer hunt.
SETTINGS = settings(max_examples=int(os.environ.get("SANDBOX_HYPOTHESIS_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _strip(profile: model.Profile) -> model.Profile:
    return profile.replace(source="", lineage=(), extends=None)


def _load_text(text: str | bytes, suffix: str = ".toml") -> model.Profile:
    with tempfile.TemporaryDirectory(prefix="sandbox-roundtrip-") as directory:
        path = os.path.join(directory, "generated" + suffix)
        with open(path, "wb") as handle:
            handle.write(text.encode() if isinstance(text, str) else text)
        return load_profile(path)


# ---------------------------------------------------------------- strategies for valid profiles

SEGMENT = st.from_regex(r"[a-z0-9_][a-z0-9._-]{0,6}", fullmatch=True)
TARGET = st.lists(SEGMENT, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
TRICKY = st.sampled_from(["$", "$$", "${HOME}", "$${HOME}", "${1}", "a$", "${", "\\", '"', "'''", "\n", "é", "\t"])
TEXT = st.lists(st.one_of(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                                  max_size=8), TRICKY), max_size=4).map("".join)
ENV_NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
HOSTNAME = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]{1,5}){0,2}", fullmatch=True)
MODE = st.integers(0, 0o7777)
SIZE = st.one_of(st.integers(0, 1 << 50), st.integers(0, 1 << 20).map(lambda n: n << 10),
                 st.integers(1, 4096).map(lambda n: n << 20))
EXISTING = ["/usr", "/etc", "/tmp", "/var", "/bin"]
SECCOMP = [builtin_policy("default"), builtin_policy("strict"), None,
           parse_section({"allow": ["ptrace"], "deny": ["mount"], "deny_action": "kill-process",
                          "rules": [{"syscalls": ["socket"], "action": "errno(EAFNOSUPPORT)",
                                     "args": [{"index": 0, "op": "masked_eq", "mask": 0xFFFFFFFF, "value": 40}],
                                     "comment": "no $$vsock"}]}, "x.toml")[0],
           parse_section({"policy": "none", "mode": "denylist", "deny": ["@mount"], "name": "mine ${X}"}, "x.toml")[0]]
assert all(p is not None for p in SECCOMP[3:])


def maybe(strategy):
    return st.one_of(st.none(), strategy)


@st.composite
def filesystems(draw, mount_ns: bool):
    if not mount_ns:
        return model.Filesystem(root="tmpfs")
    targets = draw(st.lists(TARGET, unique=True, max_size=8))
    kinds = draw(st.lists(st.sampled_from(["mounts", "tmpfs", "symlinks", "files"]),
                          min_size=len(targets), max_size=len(targets)))
    items = {"mounts": [], "tmpfs": [], "symlinks": [], "files": []}
    for target, kind in zip(targets, kinds):
        if kind == "mounts":
            optional = draw(st.booleans())
            source = draw(st.sampled_from(EXISTING) if not optional else st.one_of(st.sampled_from(EXISTING), TARGET))
            items[kind].append(model.Mount(source=source, target=target, mode=draw(st.sampled_from(["ro", "rw"])),
                                           optional=optional, noexec=draw(st.booleans()),
                                           idmap=draw(st.sampled_from(["auto", "yes", "no"]))))
        elif kind == "tmpfs":
            items[kind].append(model.Tmpfs(target=target, size=draw(st.integers(1, 1 << 40)), mode=draw(MODE),
                                           noexec=draw(st.booleans())))
        elif kind == "symlinks":
            items[kind].append(model.Symlink(target=target, points_to=draw(TEXT)))
        else:
            items[kind].append(model.File(target=target, content=draw(TEXT), mode=draw(MODE)))
    devices = draw(st.lists(st.sampled_from(model.ALLOWED_DEVICES), unique=True))
    return model.Filesystem(
        root=draw(st.sampled_from(["tmpfs", "tmpfs", "/usr"])), root_size=draw(st.integers(1 << 20, 1 << 40)),
        readonly_root=draw(st.booleans()), mounts=tuple(items["mounts"]), tmpfs=tuple(items["tmpfs"]),
        symlinks=tuple(items["symlinks"]), files=tuple(items["files"]), dev=draw(st.booleans()),
        devices=tuple(devices), dev_shm_size=draw(SIZE), proc=draw(st.booleans()), sys=draw(st.booleans()),
        masked_paths=tuple(draw(st.lists(TARGET, max_size=3))),
        readonly_paths=tuple(draw(st.lists(TARGET, max_size=3))))


@st.composite
def limits(draw):
    memory = draw(maybe(st.integers(4 << 20, 1 << 50)))
    rlimits = {"core": (0, 0)}
    for name in draw(st.lists(st.sampled_from(model.RLIMIT_NAMES), unique=True, max_size=4)):
        hard = draw(st.one_of(st.just(-1), st.integers(0, (1 << 63) - 1)))
        soft = draw(st.one_of(st.just(hard), st.integers(0, hard if hard != -1 else (1 << 63) - 1)))
        rlimits[name] = (soft, hard)
    values = dict(
        memory=memory, swap=draw(SIZE) if memory is not None else 0, memory_high=draw(maybe(SIZE)),
        cpus=draw(maybe(st.floats(0.01, 4096))), cpu_weight=draw(maybe(st.integers(1, 10000))),
        pids=draw(maybe(st.integers(1, 1 << 40))), io_weight=draw(maybe(st.integers(1, 10000))),
        timeout=draw(maybe(st.one_of(st.floats(0, 366 * 86400, exclude_min=True),
                                     st.integers(1, 1000).map(float), st.sampled_from([0.25, 90.0, 3600.0])))),
        rlimits=tuple(sorted((name, soft, hard) for name, (soft, hard) in rlimits.items())))
    values["io_max"] = tuple(draw(st.lists(st.builds(
        model.IoLimit, device=st.tuples(st.integers(0, 4095), st.integers(0, 1 << 20)).map(lambda d: f"{d[0]}:{d[1]}"),
        read_bps=maybe(SIZE), write_bps=st.integers(1, 1 << 40), read_iops=maybe(st.integers(1, 1 << 40)),
        write_iops=maybe(st.integers(1, 1 << 40))), max_size=2)))
    values["required"] = tuple(draw(st.lists(st.sampled_from([n for n in model.LIMIT_NAMES
                                                              if values[n] not in (None, ())] or ["memory"]),
                                             max_size=3)))
    return model.Limits(**values)


@st.composite
def profiles(draw):
    namespaces = model.Namespaces(**{f.name: draw(st.sampled_from([True, True, True, False]))
                                     for f in dataclasses.fields(model.Namespaces)})
    network = draw(st.sampled_from(["none", "host"]))
    command = draw(st.one_of(st.just(()), st.lists(TEXT, min_size=1, max_size=3).filter(lambda c: c[0]).map(tuple)))
    env = draw(st.dictionaries(ENV_NAME, TEXT, max_size=4))
    process = model.Process(
        command=command, cwd=draw(st.one_of(st.just("/"), TARGET)), env=tuple(sorted(env.items())),
        env_passthrough=tuple(draw(st.lists(ENV_NAME.map(lambda n: n + draw(st.sampled_from(["", "*"]))),
                                            max_size=3))),
        user=draw(st.integers(0, MAX_ID)), group=draw(st.integers(0, MAX_ID)),
        host_user=draw(maybe(st.integers(1, MAX_ID))), host_group=draw(maybe(st.integers(1, MAX_ID))),
        hostname=draw(HOSTNAME), new_session=draw(st.booleans()), umask=draw(MODE))
    profile = model.Profile(
        name=draw(TEXT.filter(bool)), description=draw(TEXT), process=process, namespaces=namespaces,
        filesystem=draw(filesystems(namespaces.mount)), network=model.Network(mode=network), limits=draw(limits()),
        capabilities=model.Capabilities(keep=tuple(sorted(draw(st.sets(st.sampled_from(sorted(CAPABILITY_NUMBERS)),
                                                                        max_size=4))))),
        seccomp=draw(st.sampled_from(SECCOMP)),
        landlock=model.Landlock(enabled=draw(st.booleans()), read=tuple(draw(st.lists(TARGET, max_size=2))),
                                write=tuple(draw(st.lists(TARGET, max_size=2))), best_effort=draw(st.booleans())),
        audit=model.Audit(enabled=draw(st.booleans()), log=draw(TEXT)))
    assume(not validate(profile, "generated"))
    return profile


@SETTINGS
@given(profiles())
def test_roundtrip_generated_profiles(profile):
    text = to_toml(profile)
    loaded = _load_text(text)
    assert _strip(loaded) == _strip(profile), text
    assert to_toml(loaded) == text  # and the output is stable


@pytest.mark.parametrize("name", sorted(builtin_profile_names()))
def test_roundtrip_builtin_profiles(name):
    original = load_profile(name)
    assert _strip(_load_text(to_toml(original))) == _strip(original)


def test_roundtrip_defaults():
    assert _strip(_load_text(to_toml(model.Profile(name="x")))) == model.Profile(name="x")


@pytest.mark.parametrize("changes, expected", [
    ({"limits": model.Limits(memory=None, pids=None)}, {"memory": "unlimited", "pids": "unlimited"}),
    ({"limits": model.Limits(timeout=0.0004)}, {"timeout": 0.0004}),
    ({"limits": model.Limits(timeout=90.0)}, {"timeout": "90s"}),
    ({"limits": model.Limits(rlimits=(("core", 0, 0), ("nofile", 10, -1)))},
     {"rlimits": {"core": 0, "nofile": [10, "unlimited"]}}),
])
def test_dump_forms_that_used_to_lose_information(changes, expected):
    profile = model.Profile(name="x", **changes)
    table = tomllib.loads(to_toml(profile))["limits"]
    assert {k: table[k] for k in expected} == expected
    assert _strip(_load_text(to_toml(profile))) == profile


def test_dump_escapes_dollars():
    profile = model.Profile(name="x", process=model.Process(env=(("A", "${HOME}"), ("B", "$$"), ("C", "$PATH"))))
    assert tomllib.loads(to_toml(profile))["process"]["env"] == {"A": "$${HOME}", "B": "$$$", "C": "$PATH"}
    assert _strip(_load_text(to_toml(profile))) == profile


def test_to_table_keeps_unset_optional_keys_out():
    assert "timeout" not in to_table(model.Profile())["limits"]
    assert "host_user" not in to_table(model.Profile())["process"]


# ---------------------------------------------------------------- garbage in

def _outcome(text: str | bytes) -> None:
    try:
        profile = _load_text(text)
    except ProfileError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert isinstance(problem.file, str) and problem.expected
            assert "\n" not in str(problem), problem  # one line each, whatever the input
        exc.one_line()
    else:
        assert isinstance(profile, model.Profile)


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_give_a_profile_or_a_profile_error(data):
    _outcome(data)


@SETTINGS
@given(st.text(alphabet=string.printable, max_size=200))
def test_random_text_gives_a_profile_or_a_profile_error(text):
    _outcome(text)


def _keys_of(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("kind") != "internal"]


SECTION_KEYS = {f.name: _keys_of(type(f.default_factory())) for f in dataclasses.fields(model.Profile)
                if f.metadata.get("kind") == "table"}
SECTION_KEYS["seccomp"] = ["policy", "mode", "default_action", "architectures", "allow", "deny", "deny_action",
                           "rules", "name", "syscalls", "action", "args", "index", "op", "value", "mask"]
ITEM_KEYS = sorted({k for cls in (model.Mount, model.Tmpfs, model.Symlink, model.File) for k in _keys_of(cls)})
ALL_KEYS = sorted({*_keys_of(model.Profile), *ITEM_KEYS, *(k for v in SECTION_KEYS.values() for k in v)})
SCALARS = st.one_of(
    st.integers(-(1 << 63), (1 << 63) - 1), st.sampled_from([0, 1, -1, 65534, 1 << 40, 4096]),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), TEXT,
    st.sampled_from(["/usr", "/tmp", "relative", "${CWD}", "${NOPE}", "unlimited", "512M", "-1G", "5m", "ro", "rw",
                     "tmpfs", "none", "host", "default", "strict", "unconfined", "CAP_KILL", "net_admin",
                     "errno(EPERM)", "allow", "@mount", "ptrace", "0755", "..", "/a/../b", "/", "", "\0",
                     "nofile", "core", "masked_eq", "native", "allowlist"]),
    st.dates(), st.times())
KEYS = st.one_of(st.sampled_from(ALL_KEYS), st.text(max_size=6))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(KEYS, inner, max_size=4)), max_leaves=12)


@st.composite
def toml_documents(draw):
    document = {}
    for section in draw(st.lists(st.sampled_from([*SECTION_KEYS, "name", "description", "junk"]), max_size=5)):
        if section in SECTION_KEYS:
            keys = st.one_of(st.sampled_from(SECTION_KEYS[section]), KEYS)
            table = draw(st.dictionaries(keys, VALUES, max_size=5))
            for key in ("mounts", "tmpfs", "symlinks", "files", "rules"):
                if key in table and draw(st.booleans()):
                    table[key] = draw(st.lists(st.dictionaries(st.sampled_from([*ITEM_KEYS, *SECTION_KEYS["seccomp"]]),
                                                               VALUES, max_size=4), max_size=3))
            document[section] = draw(st.one_of(st.just(table), VALUES)) if section != "filesystem" else table
        else:
            document[section] = draw(VALUES)
    return document


@SETTINGS
@given(toml_documents())
def test_random_toml_gives_a_profile_or_a_profile_error(document):
    try:
        text = tomli_w.dumps(document)
    except (TypeError, ValueError):  # e.g. a value TOML cannot express
        assume(False)
    _outcome(text)


@SETTINGS
@given(toml_documents())
def test_random_overrides_give_a_profile_or_a_profile_error(document):
    try:
        load_profile("untrusted", overrides=document)
    except ProfileError as exc:
        assert exc.problems
