"""The profile model and loader: secure defaults, built-ins, extends, variables, units."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from sandbox.errors import ProfileError
from sandbox.profile import load_profile, model
from sandbox.profile.load import MAX_EXTENDS_DEPTH, builtin_profile_names, profile_from_dict
from sandbox.seccomp import builtin_policy


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def load_text(tmp_path: Path, text: str, name: str = "p.toml") -> model.Profile:
    return load_profile(str(write(tmp_path, name, text)))


def problems_of(tmp_path: Path, text: str, name: str = "p.toml"):
    with pytest.raises(ProfileError) as info:
        load_text(tmp_path, text, name)
    return info.value.problems


# ---------------------------------------------------------------- defaults

def test_defaults_are_the_strongest_isolation():
    p = model.Profile()
    assert all(getattr(p.namespaces, f) for f in
               ("user", "mount", "pid", "network", "ipc", "uts", "cgroup", "time"))
    assert p.network.mode == "none"
    assert p.capabilities.keep == ()
    assert p.seccomp is not None and p.seccomp == builtin_policy("default")
    assert p.landlock.enabled
    assert p.filesystem.root == "tmpfs" and p.filesystem.readonly_root
    assert p.filesystem.mounts == () and not p.filesystem.sys
    assert p.process.user == model.NOBODY and p.process.group == model.NOBODY
    assert p.process.host_user is None and p.process.env_passthrough == () and p.process.new_session
    assert p.limits.memory == 1 << 30 and p.limits.swap == 0 and p.limits.pids == 512
    assert ("core", 0, 0) in p.limits.rlimits
    assert p.audit.enabled


def test_empty_file_gives_the_defaults(tmp_path):
    p = load_text(tmp_path, "", "empty.toml")
    assert p.replace(name="", source="", lineage=()) == model.Profile()
    assert p.name == "empty" and p.source == str(tmp_path / "empty.toml")
    assert p.lineage == (str(tmp_path / "empty.toml"),)


def test_every_relaxing_field_documents_what_it_relaxes():
    import dataclasses
    for cls in (model.Process, model.Namespaces, model.Mount, model.Filesystem, model.Network,
                model.Capabilities, model.Landlock, model.Audit):
        for f in dataclasses.fields(cls):
            assert f.metadata["doc"], (cls.__name__, f.name)
            if f.metadata["relaxes"]:
                assert f.metadata["relaxes"][0].islower()


@pytest.mark.parametrize("name", sorted(builtin_profile_names()))
def test_builtin_profile_loads(name):
    p = load_profile(name)
    assert p.name == name
    assert p.description
    assert p.network.mode == "none" and p.capabilities.keep == ()
    assert p.seccomp is not None


def test_builtins_include_untrusted_and_ci():
    assert {"untrusted", "ci"} <= set(builtin_profile_names())


def test_ci_extends_untrusted(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    ci = load_profile("ci")
    assert [Path(p).stem for p in ci.lineage] == ["ci", "untrusted"]
    workspace = [m for m in ci.filesystem.mounts if m.target == "/workspace"]
    assert workspace and workspace[0].source == str(tmp_path) and workspace[0].mode == "rw"
    assert [m.target for m in ci.filesystem.mounts][0] == "/usr"  # base entries first
    assert [t.size for t in ci.filesystem.tmpfs if t.target == "/tmp"] == [1 << 30]  # replaced by target
    assert len(ci.filesystem.tmpfs) == 1
    base_files = load_profile("untrusted").filesystem.files
    assert [f.target for f in ci.filesystem.files] == [f.target for f in base_files]  # inherited, in place
    nsswitch = {f.target: f.content for f in ci.filesystem.files}["/etc/nsswitch.conf"]
    assert "hosts: files dns" in nsswitch  # replaced by target: ci resolves names under --network host
    assert dict((n, s) for n, s, _ in ci.limits.rlimits) == {"core": 0, "nofile": 8192}


# ---------------------------------------------------------------- extends

BASE = """
    name = "base"
    description = "the base"
    [process]
    command = ["/bin/base"]
    cwd = "/base"
    env = { A = "1", B = "2" }
    [filesystem]
    devices = ["null", "zero"]
    [[filesystem.mounts]]
    source = "/usr"
    [[filesystem.mounts]]
    source = "/etc"
    target = "/etc"
    [[filesystem.tmpfs]]
    target = "/tmp"
    size = "32M"
    [limits]
    memory = "256M"
    pids = 64
    [capabilities]
    keep = ["chown"]
    [seccomp]
    allow = ["ptrace"]
    [[seccomp.rules]]
    syscalls = ["socket"]
    action = "errno(EAFNOSUPPORT)"
"""


def test_extends_tables_merge_scalars_and_arrays_replace(tmp_path):
    write(tmp_path, "base.toml", BASE)
    p = load_text(tmp_path, """
        extends = "base.toml"
        [process]
        command = ["/bin/child"]
        env = { B = "two", C = "3" }
        [filesystem]
        devices = ["tty"]
        [limits]
        memory = "1G"
        [capabilities]
        keep = ["kill"]
    """)
    assert p.name == "p" and p.description == ""  # a base's name and description are its own
    assert p.process.command == ("/bin/child",)
    assert p.process.cwd == "/base"  # scalars the child does not set stay the base's
    assert dict(p.process.env) == {"A": "1", "B": "two", "C": "3"}  # tables merge key by key
    assert p.filesystem.devices == ("tty",)  # arrays replace, never concatenate
    assert p.limits.memory == 1 << 30 and p.limits.pids == 64
    assert p.capabilities.keep == ("CAP_KILL",)
    assert p.extends == "base.toml"
    assert p.lineage == (str(tmp_path / "p.toml"), str(tmp_path / "base.toml"))


def test_extends_mounts_merge_by_target(tmp_path):
    write(tmp_path, "base.toml", BASE)
    p = load_text(tmp_path, """
        extends = "base.toml"
        [[filesystem.mounts]]
        source = "/etc"
        target = "/etc/"
        mode = "rw"
        [[filesystem.mounts]]
        source = "/var"
        [[filesystem.tmpfs]]
        target = "/tmp"
        size = "1G"
        [[filesystem.tmpfs]]
        target = "/run"
    """)
    mounts = [(m.source, m.target, m.mode) for m in p.filesystem.mounts]
    assert mounts == [("/usr", "/usr", "ro"), ("/etc", "/etc", "rw"), ("/var", "/var", "ro")]
    assert [(t.target, t.size) for t in p.filesystem.tmpfs] == [("/tmp", 1 << 30), ("/run", 64 << 20)]


def test_extends_replaced_entry_is_replaced_whole(tmp_path):
    write(tmp_path, "base.toml", BASE)
    problems = problems_of(tmp_path, """
        extends = "base.toml"
        [[filesystem.mounts]]
        target = "/etc"
        mode = "rw"
    """)
    # the child's first [[filesystem.mounts]], whatever its index in the merged list
    assert [(p.key, p.expected) for p in problems] == [("filesystem.mounts[0].source", "a value for 'source'")]
    assert problems[0].file == str(tmp_path / "p.toml")


def test_extends_seccomp_rules_append_and_lists_replace(tmp_path):
    write(tmp_path, "base.toml", BASE)
    p = load_text(tmp_path, """
        extends = "base.toml"
        [seccomp]
        allow = ["mincore"]
        [[seccomp.rules]]
        syscalls = ["mount"]
        action = "kill-process"
    """)
    comments_and_calls = [(r.comment, r.syscalls) for r in p.seccomp.rules[-3:]]
    assert comments_and_calls == [("allow list", ("mincore",)), ("", ("socket",)), ("", ("mount",))]
    assert all("ptrace" not in r.syscalls for r in p.seccomp.rules if r.comment == "allow list")


def test_extends_builtin_by_name_and_chain_of_three(tmp_path):
    write(tmp_path, "middle.toml", 'extends = "untrusted"\n[limits]\npids = 99\n')
    p = load_text(tmp_path, 'extends = "./middle.toml"\n[limits]\nmemory = "64M"\n')
    assert p.limits.pids == 99 and p.limits.memory == 64 << 20
    assert p.filesystem.mounts[0].target == "/usr"
    assert [Path(x).stem for x in p.lineage] == ["p", "middle", "untrusted"]


def test_extends_cycle_is_an_error_naming_the_chain(tmp_path):
    write(tmp_path, "a.toml", 'extends = "b.toml"\n')
    write(tmp_path, "b.toml", 'extends = "c.toml"\n')
    write(tmp_path, "c.toml", 'extends = "a.toml"\n')
    with pytest.raises(ProfileError) as info:
        load_profile(str(tmp_path / "a.toml"))
    (problem,) = info.value.problems
    assert problem.key == "extends" and "cycle" in problem.expected
    assert all(f"{n}.toml" in problem.found for n in "abc")
    assert problem.found.count("a.toml") == 2
    assert problem.found.index("a.toml") < problem.found.index("b.toml") < problem.found.index("c.toml")


def test_extends_self_is_a_cycle(tmp_path):
    problems = problems_of(tmp_path, 'extends = "p.toml"\n')
    assert "cycle" in problems[0].expected and problems[0].found.count("p.toml") == 2


def test_extends_depth_limit(tmp_path):
    for i in range(MAX_EXTENDS_DEPTH + 2):
        write(tmp_path, f"p{i}.toml", f'extends = "p{i + 1}.toml"\n' if i <= MAX_EXTENDS_DEPTH else "")
    with pytest.raises(ProfileError) as info:
        load_profile(str(tmp_path / "p0.toml"))
    assert info.value.problems[0].key == "extends"
    assert f"at most {MAX_EXTENDS_DEPTH}" in info.value.problems[0].expected
    # exactly the limit is fine
    write(tmp_path, f"p{MAX_EXTENDS_DEPTH - 1}.toml", "")
    assert len(load_profile(str(tmp_path / "p0.toml")).lineage) == MAX_EXTENDS_DEPTH


def test_extends_unknown_builtin_is_an_error_with_hint(tmp_path):
    problems = problems_of(tmp_path, 'extends = "untrustd"\n')
    assert problems[0].file == str(tmp_path / "p.toml") and problems[0].key == "extends"
    assert "did you mean 'untrusted'" in problems[0].hint


def test_extends_wrong_type(tmp_path):
    problems = problems_of(tmp_path, "extends = 3\n")
    assert [(p.key, p.found) for p in problems] == [("extends", "3")]


def test_overrides_merge_on_top(tmp_path):
    p = load_profile("untrusted", overrides={"limits": {"timeout": "30s"},
                                             "filesystem": {"mounts": [{"source": str(tmp_path), "target": "/w"}]}})
    assert p.limits.timeout == 30 and p.limits.memory == 512 << 20
    assert p.filesystem.mounts[-1].target == "/w" and p.filesystem.mounts[0].target == "/usr"


def test_profile_from_dict():
    p = profile_from_dict({"extends": "untrusted", "limits": {"pids": 7}})
    assert p.limits.pids == 7 and p.filesystem.mounts[0].target == "/usr"
    assert p.name == "" and p.description == ""


def test_name_defaults_to_the_stem_even_when_extending(tmp_path):
    p = load_text(tmp_path, 'extends = "ci"\n', "my-build.toml")
    assert p.name == "my-build" and p.description == ""


# ---------------------------------------------------------------- variables

def test_variables_expand(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = load_text(tmp_path, """
        [process.env]
        C = "${CWD}"
        H = "${HOME}"
        D = "${PROFILE_DIR}"
        U = "${UID}"
        G = "${GID}"
        LIT = "$${HOME}"
        DOLLAR = "$5 $PATH"
        BRACE = "${1}"
        [[filesystem.mounts]]
        source = "${PROFILE_DIR}"
        target = "/src"
    """)
    env = dict(p.process.env)
    assert env["C"] == str(tmp_path) and env["H"] == str(Path.home()) and env["D"] == str(tmp_path)
    assert env["U"] == str(os.getuid()) and env["G"] == str(os.getgid())
    assert env["LIT"] == "${HOME}" and env["DOLLAR"] == "$5 $PATH" and env["BRACE"] == "${1}"
    assert p.filesystem.mounts[0].source == str(tmp_path)


def test_profile_dir_is_the_directory_of_the_file_that_uses_it(tmp_path):
    (tmp_path / "base").mkdir()
    write(tmp_path / "base", "b.toml", '[process]\nenv = { BASE = "${PROFILE_DIR}" }\n')
    p = load_text(tmp_path, 'extends = "base/b.toml"\n[process.env]\nCHILD = "${PROFILE_DIR}"\n')
    assert dict(p.process.env) == {"BASE": str(tmp_path / "base"), "CHILD": str(tmp_path)}


def test_unknown_variable_is_an_error_with_hint(tmp_path):
    problems = problems_of(tmp_path, '[process]\ncwd = "${HOEM}/x"\nenv = { A = "${NOPE}" }\n')
    assert [p.key for p in problems] == ["process.cwd", "process.env.A"]  # once each, no follow-on errors
    by_key = {p.key: p for p in problems}
    assert by_key["process.cwd"].found == "${HOEM}" and "did you mean 'HOME'" in by_key["process.cwd"].hint
    assert "${CWD}" in by_key["process.cwd"].expected
    assert "process.env.A" in by_key


def test_host_environment_is_not_a_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "x")
    problems = problems_of(tmp_path, '[process]\nenv = { T = "${SECRET_TOKEN}" }\n')
    assert problems[0].key == "process.env.T"


# ---------------------------------------------------------------- units

@pytest.mark.parametrize("text, size", [
    ('"512M"', 512 << 20), ('"2G"', 2 << 30), ("1048576", 1 << 20), ('"1.5G"', 3 << 29),
    ('"64k"', 64 << 10), ('"1KiB"', 1024), ('"8 MB"', 8 << 20), ('"1P"', 1 << 50), ('"100"', 100),
])
def test_sizes(tmp_path, text, size):
    assert load_text(tmp_path, f"[filesystem]\nroot_size = 2097152\ndev_shm_size = {text}\n").filesystem.dev_shm_size == size


@pytest.mark.parametrize("text, seconds", [
    ('"30s"', 30), ('"5m"', 300), ('"1h"', 3600), ('"1d"', 86400), ('"250ms"', 0.25),
    ("90", 90), ("0.5", 0.5), ('"7"', 7),
])
def test_durations(tmp_path, text, seconds):
    assert load_text(tmp_path, f"[limits]\ntimeout = {text}\n").limits.timeout == seconds


@pytest.mark.parametrize("value", ['"unlimited"', '"none"', '"max"'])
def test_unlimited(tmp_path, value):
    p = load_text(tmp_path, f"[limits]\nmemory = {value}\npids = {value}\ntimeout = {value}\ncpus = {value}\n")
    assert (p.limits.memory, p.limits.pids, p.limits.timeout, p.limits.cpus) == (None, None, None, None)


def test_capability_names_are_normalised(tmp_path):
    p = load_text(tmp_path, '[capabilities]\nkeep = ["net_bind_service", "CAP_CHOWN", "Cap_Kill", "chown"]\n')
    assert p.capabilities.keep == ("CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE")


@pytest.mark.parametrize("table, expected", [
    ("{ nofile = 1024 }", ("nofile", 1024, 1024)),
    ("{ nofile = [512, 4096] }", ("nofile", 512, 4096)),
    ('{ NOFILE = [512, "unlimited"] }', ("nofile", 512, -1)),
    ('{ RLIMIT_STACK = "unlimited" }', ("stack", -1, -1)),
    ('{ core = "infinity" }', ("core", -1, -1)),
])
def test_rlimit_forms(tmp_path, table, expected):
    rlimits = load_text(tmp_path, f"[limits]\nrlimits = {table}\n").limits.rlimits
    assert expected in rlimits
    assert any(name == "core" for name, _, _ in rlimits)  # the default core = 0 stays unless overridden


def test_modes_octal_string_or_integer(tmp_path):
    p = load_text(tmp_path, '[process]\numask = "077"\n[[filesystem.tmpfs]]\ntarget = "/t"\nmode = 0o700\n')
    assert p.process.umask == 0o077 and p.filesystem.tmpfs[0].mode == 0o700


def test_mount_target_defaults_to_source_and_paths_normalise(tmp_path):
    p = load_text(tmp_path, '[[filesystem.mounts]]\nsource = "/usr/"\n[[filesystem.tmpfs]]\ntarget = "//a/./b/"\n')
    assert p.filesystem.mounts[0].target == "/usr" and p.filesystem.mounts[0].source == "/usr"
    assert p.filesystem.tmpfs[0].target == "/a/b"


def test_devices_accept_dev_prefix_and_dedupe(tmp_path):
    p = load_text(tmp_path, '[filesystem]\ndevices = ["/dev/null", "null", "net/tun"]\n')
    assert p.filesystem.devices == ("null", "net/tun")


def test_optional_mount_with_missing_source_is_fine(tmp_path):
    p = load_text(tmp_path, f'[[filesystem.mounts]]\nsource = "{tmp_path}/missing"\noptional = true\n')
    assert p.filesystem.mounts[0].optional
