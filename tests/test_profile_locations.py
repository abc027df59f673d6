"""Where a problem is (issue 21, items 11 and 14): an entry of an array of tables is named by its
own file and position there, whatever the merged list looks like; a run option names itself and
gets no profile-only advice; every problem is reported; enum values take any case."""
from __future__ import annotations

import textwrap

import pytest

import sandbox
from sandbox.errors import ProfileError
from sandbox.profile import load_profile
from sandbox.options import run_overrides


def problems(path, overrides=None) -> list:
    with pytest.raises(ProfileError) as info:
        load_profile(str(path), overrides=overrides)
    return info.value.problems


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_an_entry_is_named_by_its_own_position_in_its_own_file(tmp_path):
    base = write(tmp_path / "base.toml", """
        [[filesystem.mounts]]
        source = "/usr"
        [[filesystem.mounts]]
        source = "/nonexistent-in-base"
    """)
    child = write(tmp_path / "child.toml", """
        extends = "base.toml"
        [[filesystem.mounts]]
        source = "relative"
        target = "/r"
        [[filesystem.mounts]]
        source = "/nonexistent-in-child"
        target = "/c"
        [[filesystem.tmpfs]]
        target = "/c"
    """)
    found = {(p.file, p.key) for p in problems(child)}
    assert found == {
        (str(base), "filesystem.mounts[1].source"),    # base's second mount, merged index 1
        (str(child), "filesystem.mounts[0].source"),   # child's first mount, merged index 2
        (str(child), "filesystem.mounts[1].source"),   # child's second mount: not shifted by the first
        (str(child), "filesystem.tmpfs[0].target"),
    }, found
    duplicate = next(p for p in problems(child) if p.key == "filesystem.tmpfs[0].target")
    assert duplicate.found == "'/c' is also filesystem.mounts[1].target"


def test_one_entry_one_index(tmp_path):
    """A broken entry is dropped before the cross-key checks: the next one keeps its own index."""
    path = write(tmp_path / "p.toml", """
        extends = "untrusted"
        [[filesystem.mounts]]
        source = "/usr"
        target = "/a"
        mode = "sideways"
        [[filesystem.mounts]]
        source = "/nonexistent-b"
        target = "/b"
    """)
    keys = sorted(p.key for p in problems(path))
    assert keys == ["filesystem.mounts[0].mode", "filesystem.mounts[1].source"], keys


def test_a_target_twice_in_one_file_is_reported(tmp_path):
    path = write(tmp_path / "p.toml", """
        [[filesystem.mounts]]
        source = "/usr"
        target = "/x"
        [[filesystem.mounts]]
        source = "/etc"
        target = "/x"
    """)
    (problem,) = problems(path)
    assert (problem.key, problem.found) == ("filesystem.mounts[1].target", "'/x' is also filesystem.mounts[0].target")


def test_every_rlimit_problem_is_reported_with_the_others(tmp_path):
    path = write(tmp_path / "p.toml", """
        [limits]
        memory = "1K"
        rlimits = { nofile = -1, stack = [10, 5], nofiles = 3 }
    """)
    keys = sorted(p.key for p in problems(path))
    assert keys == ["limits.memory", "limits.rlimits", "limits.rlimits.nofile", "limits.rlimits.stack"], keys


def test_options_name_themselves_and_get_no_profile_advice(tmp_path):
    cli, _ = run_overrides(binds=["/nonexistent-src:/x"], cwd="tmp/../..", memory="lots", style="cli")
    found = {p.file: p for p in problems("untrusted", cli)}
    assert set(found) == {"--bind /nonexistent-src:/x", "--memory"}, found
    assert found["--bind /nonexistent-src:/x"].key == "source" and found["--bind /nonexistent-src:/x"].hint == ""
    api, _ = run_overrides(binds=[{"source": "relative", "target": "/x", "optinal": True}], style="api")
    found = {(p.file, p.key): p for p in problems("untrusted", api)}
    assert set(found) == {("keyword argument binds[0]", "optinal"), ("keyword argument binds[0]", "source")}
    assert found["keyword argument binds[0]", "optinal"].hint == "did you mean 'optional'?"
    assert found["keyword argument binds[0]", "source"].found.endswith("/relative' does not exist")  # made absolute


def test_relative_cwd_is_below_the_profiles_working_directory():
    table, _ = run_overrides(cwd="src/pkg", style="cli")
    assert load_profile("ci", overrides=table).process.cwd == "/workspace/src/pkg"
    table, _ = run_overrides(cwd="..", style="cli")
    assert load_profile("ci", overrides=table).process.cwd == "/"


def test_enum_values_take_any_case_like_capability_names(tmp_path):
    path = write(tmp_path / "p.toml", """
        [[filesystem.mounts]]
        source = "/usr"
        mode = "RW"
        idmap = "No"
        [network]
        mode = "Host"
        [capabilities]
        keep = ["net_bind_service"]
    """)
    profile = load_profile(str(path))
    assert (profile.filesystem.mounts[0].mode, profile.filesystem.mounts[0].idmap) == ("rw", "no")
    assert profile.network.mode == "host" and profile.capabilities.keep == ("CAP_NET_BIND_SERVICE",)
    assert sandbox.profile_from_dict({"network": {"mode": "NONE"}}).network.mode == "none"


def test_seccomp_rules_appended_through_extends_are_named_in_their_file(tmp_path):
    write(tmp_path / "base.toml", """
        [[seccomp.rules]]
        syscalls = ["read"]
        action = "allow"
    """)
    child = write(tmp_path / "child.toml", """
        extends = "base.toml"
        [[seccomp.rules]]
        syscalls = ["no_such_call"]
        action = "allow"
    """)
    (problem,) = problems(child)
    assert (problem.file, problem.key) == (str(child), "seccomp.rules[0].syscalls[0]")
