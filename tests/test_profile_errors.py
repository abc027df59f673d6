"""Profile errors: each names the file, the key path, what was expected and what was found; all at once."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sandbox.errors import Problem, ProfileError
from sandbox.profile import load_profile


def load_text(tmp_path: Path, text: str, name: str = "p.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return load_profile(str(path))


def problems_of(tmp_path: Path, text: str, name: str = "p.toml") -> list[Problem]:
    with pytest.raises(ProfileError) as info:
        load_text(tmp_path, text, name)
    problems = info.value.problems
    assert problems
    for problem in problems:  # every problem is complete
        assert problem.file and problem.expected
        assert problem.found, problem
    return problems


def only(tmp_path, text) -> Problem:
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1, problems
    assert problems[0].file == str(tmp_path / "p.toml")
    return problems[0]


@pytest.mark.parametrize("text, key, expected, found", [
    # relative and odd paths
    ('[[filesystem.mounts]]\nsource = "usr"\n', "filesystem.mounts[0].source", "absolute", "'usr'"),
    ('[[filesystem.mounts]]\nsource = "/usr"\ntarget = "usr"\n', "filesystem.mounts[0].target", "absolute", "'usr'"),
    ('[[filesystem.tmpfs]]\ntarget = "/a/../etc"\n', "filesystem.tmpfs[0].target", "'..'", "'/a/../etc'"),
    ('[[filesystem.tmpfs]]\ntarget = "/"\n', "filesystem.tmpfs[0].target", "below the sandbox root", "'/'"),
    ('[[filesystem.tmpfs]]\ntarget = ""\n', "filesystem.tmpfs[0].target", "non-empty", "''"),
    ('[process]\ncwd = "tmp"\n', "process.cwd", "absolute", "'tmp'"),
    ('[landlock]\nwrite = ["/ok", "rel"]\n', "landlock.write[1]", "absolute", "'rel'"),
    ('[filesystem]\nroot = "/nonexistent-root-dir"\n', "filesystem.root", "existing host directory", "'/nonexistent-root-dir'"),
    # missing sources and required keys
    ('[[filesystem.mounts]]\nsource = "/nonexistent/x"\n', "filesystem.mounts[0].source", "an existing host path", "does not exist"),
    ('[[filesystem.mounts]]\ntarget = "/x"\n', "filesystem.mounts[0].source", "a value for 'source'", "nothing"),
    ('[[filesystem.symlinks]]\ntarget = "/x"\n', "filesystem.symlinks[0].points_to", "a value for 'points_to'", "nothing"),
    # sizes
    ('[limits]\nmemory = -1\n', "limits.memory", "not negative", "-1"),
    ('[limits]\nmemory = 0\n', "limits.memory", "at least 4M", "0"),
    ('[limits]\nmemory = "1000000T"\n', "limits.memory", "at most 1P", "'1000000T'"),
    ('[limits]\nmemory = "lots"\n', "limits.memory", "512M", "'lots'"),
    ('[limits]\nmemory = "%s"\n' % ("9" * 400), "limits.memory", "at most 1P", "'999"),
    ('[[filesystem.tmpfs]]\ntarget = "/t"\nsize = 0\n', "filesystem.tmpfs[0].size", "above 0", "0"),
    ('[filesystem]\nroot_size = "1K"\n', "filesystem.root_size", "at least 1M", "1024"),
    ('[limits]\nswap = "1G"\nmemory = "unlimited"\n', "limits.swap", "memory limit", "unset"),
    ('[limits]\ncpus = 0\n', "limits.cpus", "0.01 to 4096", "0"),
    ('[limits]\ncpus = nan\n', "limits.cpus", "0.01 to 4096", "nan"),
    ('[limits]\ncpu_weight = 20000\n', "limits.cpu_weight", "1 to 10000", "20000"),
    ('[limits]\npids = 0\n', "limits.pids", "from 1", "0"),
    # durations
    ('[limits]\ntimeout = "5 minutes"\n', "limits.timeout", "30s or 5m", "'5 minutes'"),
    ('[limits]\ntimeout = 0\n', "limits.timeout", "above 0", "0"),
    ('[limits]\ntimeout = -5\n', "limits.timeout", "not negative", "-5"),
    ('[limits]\ntimeout = nan\n', "limits.timeout", "finite", "nan"),
    ('[limits]\ntimeout = inf\n', "limits.timeout", "finite", "inf"),
    ('[limits]\ntimeout = "400d"\n', "limits.timeout", "at most a year", "'400d'"),
    # names
    ('[process]\nhostname = "bad_host!"\n', "process.hostname", "hostname", "'bad_host!'"),
    ('[process]\nhostname = "%s"\n' % ("a" * 65), "process.hostname", "at most 64", "'aaa"),
    ('[process]\nhostname = "-x"\n', "process.hostname", "hostname", "'-x'"),
    ('[capabilities]\nkeep = ["CAP_SYS_ADMN"]\n', "capabilities.keep[0]", "capability name", "'CAP_SYS_ADMN'"),
    ('[filesystem]\ndevices = ["sda"]\n', "filesystem.devices[0]", "device names", "'sda'"),
    ('[limits]\nrequired = ["memroy"]\n', "limits.required[0]", "limit names", "'memroy'"),
    ('[limits]\nrlimits = { nofiles = 10 }\n', "limits.rlimits", "rlimit names", "'nofiles'"),
    ('[limits]\nrlimits = { nofile = [10, 5] }\n', "limits.rlimits.nofile", "soft limit not above", "[10, 5]"),
    ('[limits]\nrlimits = { nofile = [10] }\n', "limits.rlimits.nofile", "[soft, hard]", "[10]"),
    ('[limits]\nrlimits = { nofile = -1 }\n', "limits.rlimits.nofile", "a limit from 0", "-1"),
    ('[process]\nenv = { "BAD-NAME" = "x" }\n', "process.env", "variable names", "'BAD-NAME'"),
    ('[process]\nenv = { A = 1 }\n', "process.env.A", "a string", "1"),
    ('[limits]\nrlimits = { NOFILE = [1, "lots"] }\n', "limits.rlimits.NOFILE[1]", "a limit from 0", "'lots'"),
    ('[landlock]\nread = ["/a", 7]\n', "landlock.read[1]", "a string", "7"),
    ('[process]\nenv_passthrough = ["A*B"]\n', "process.env_passthrough[0]", "optionally ending in *", "'A*B'"),
    ('[process]\nuser = -1\n', "process.user", "an id from 0", "-1"),
    ('[process]\nhost_user = 0\n', "process.host_user", "other than 0", "0"),
    ('[process]\numask = "0999"\n', "process.umask", "octal mode", "'0999'"),
    ('[process]\numask = 0o17777\n', "process.umask", "a mode from 0", "8191"),
    # enums
    ('[network]\nmode = "bridged"\n', "network.mode", "'none' or 'host' or 'bridge'", "'bridged'"),
    ('[[filesystem.mounts]]\nsource = "/usr"\nmode = "rwx"\n', "filesystem.mounts[0].mode", "'ro' or 'rw'", "'rwx'"),
    # wrong types
    ('[process]\ncommand = "/bin/sh -c x"\n', "process.command", "an array of strings", "'/bin/sh -c x'"),
    ('[process]\ncommand = ["/bin/sh", 1]\n', "process.command[1]", "a string in an array of strings", "1"),
    ('[process]\nnew_session = "yes"\n', "process.new_session", "true or false", "'yes'"),
    ('[namespaces]\npid = 1\n', "namespaces.pid", "true or false", "1"),
    ('[process]\nuser = "nobody"\n', "process.user", "an id", "'nobody'"),
    ('[process]\nuser = true\n', "process.user", "an id", "true"),
    ('process = "x"\n', "process", "a table", "'x'"),
    ('[filesystem]\nmounts = { source = "/usr" }\n', "filesystem.mounts", "an array of tables", "a table"),
    ('[filesystem]\nmounts = ["/usr"]\n', "filesystem.mounts", "an array of tables", "['/usr']"),
    ('name = 3\n', "name", "a string", "3"),
    ('[limits]\nmemory = true\n', "limits.memory", "512M", "true"),
    ('[limits]\nmemory = 1.5\n', "limits.memory", "512M", "1.5"),
    # cross-key checks
    ('[namespaces]\nnetwork = false\n', "namespaces.network", "network.mode is 'none'", "false"),
    ('[namespaces]\npid = false\n', "filesystem.proc", "false when namespaces.pid is false", "true"),
    ('[limits]\nrequired = ["cpus"]\n', "limits.required", "limits.cpus to be set", "unset"),
    ('[[filesystem.files]]\ntarget = "/f"\ncontent = "%s"\n' % ("x" * (1 << 20 | 1)),
     "filesystem.files[0].content", "at most 1M", "bytes"),
    # seccomp (parsed by sandbox.seccomp, reported the same way)
    ('[seccomp]\npolicy = "defualt"\n', "seccomp.policy", "default", "'defualt'"),
])
def test_problem_names_file_key_expected_found(tmp_path, text, key, expected, found):
    problem = only(tmp_path, text)
    assert problem.key == key
    assert expected in problem.expected
    assert found in problem.found
    line = str(problem)
    assert line.startswith(f"{tmp_path / 'p.toml'}: {key}: expected ")
    assert ", found " in line and "\n" not in line


def test_all_problems_in_a_file_are_reported_at_once(tmp_path):
    problems = problems_of(tmp_path, """
        nmae = "x"
        [process]
        hostname = "no way"
        user = -3
        [[filesystem.mounts]]
        source = "/usr"
        [[filesystem.mounts]]
        source = "/nonexistent-source"
        [[filesystem.mounts]]
        source = "/bin"
        target = "rel"
        [[filesystem.tmpfs]]
        target = "/usr"
        [limits]
        memory = "x"
        [capabilities]
        keep = ["fly"]
        [network]
        mode = "nat"
        [seccomp]
        allow = ["nosuchcall"]
    """)
    keys = [p.key for p in problems]
    assert set(keys) >= {"nmae", "process.hostname", "process.user", "filesystem.mounts[1].source",
                         "filesystem.mounts[2].target", "filesystem.tmpfs[0].target", "limits.memory",
                         "capabilities.keep[0]", "network.mode", "seccomp.allow[0]"}, keys
    assert {p.file for p in problems} == {str(tmp_path / "p.toml")}
    error = ProfileError(problems)
    assert len(str(error).splitlines()) == len(problems)
    assert f"(and {len(problems) - 1} more problems)" in error.one_line()


def test_duplicate_targets_name_both(tmp_path):
    problems = problems_of(tmp_path, """
        [[filesystem.mounts]]
        source = "/usr"
        [[filesystem.tmpfs]]
        target = "/usr/"
        [[filesystem.files]]
        target = "/usr"
    """)
    assert [(p.key, p.found) for p in problems] == [
        ("filesystem.tmpfs[0].target", "'/usr' is also filesystem.mounts[0].target"),
        ("filesystem.files[0].target", "'/usr' is also filesystem.mounts[0].target")]


def test_missing_bind_source_hints_optional(tmp_path):
    problem = only(tmp_path, f'[[filesystem.mounts]]\nsource = "{tmp_path}/nope"\n')
    assert "optional = true" in problem.hint


def test_relative_path_hints_variables(tmp_path):
    assert "${CWD}" in only(tmp_path, '[[filesystem.mounts]]\nsource = "./src"\n').hint


@pytest.mark.parametrize("text, key, hint", [
    ("nmae = 'x'\n", "nmae", "did you mean 'name'?"),
    ("[proces]\n", "proces", "did you mean 'process'?"),
    ("[process]\nhostnme = 'x'\n", "process.hostnme", "did you mean 'hostname'?"),
    ("[filesystem]\nreadonly_rot = true\n", "filesystem.readonly_rot", "did you mean 'readonly_root'?"),
    ("[[filesystem.mounts]]\nsource = '/usr'\ntarge = '/x'\n", "filesystem.mounts[0].targe", "did you mean 'target'?"),
    ("[limits]\nmemroy = '1G'\n", "limits.memroy", "did you mean 'memory'?"),
    ("[limits]\nrlimits = { nofiles = 1 }\n", "limits.rlimits", "did you mean 'nofile'?"),
    ("[capabilities]\nkeep = ['net_bind_servce']\n", "capabilities.keep[0]", "did you mean 'CAP_NET_BIND_SERVICE'?"),
    ("[network]\nmode = 'hots'\n", "network.mode", "did you mean 'host'?"),
    ("[filesystem]\ndevices = ['nul']\n", "filesystem.devices[0]", "did you mean 'null'?"),
])
def test_unknown_names_get_did_you_mean(tmp_path, text, key, hint):
    problem = only(tmp_path, text)
    assert problem.key == key and problem.hint == hint


def test_unknown_key_without_a_close_match_has_no_hint(tmp_path):
    problem = only(tmp_path, "[process]\nzzzzqqq = 1\n")
    assert problem.key == "process.zzzzqqq" and problem.hint == "" and "a known key of [process]" in problem.expected


# ---------------------------------------------------------------- files of the extends chain

def test_errors_in_a_base_name_the_base_file(tmp_path):
    (tmp_path / "base.toml").write_text('[limits]\nmemory = "lots"\n[process]\nhostnme = "x"\n'
                                        '[[filesystem.mounts]]\nsource = "/nonexistent-base-src"\n')
    problems = problems_of(tmp_path, 'extends = "base.toml"\n[limits]\npids = "many"\n')
    files = {p.key: p.file for p in problems}
    assert files == {"limits.memory": str(tmp_path / "base.toml"), "process.hostnme": str(tmp_path / "base.toml"),
                     "filesystem.mounts[0].source": str(tmp_path / "base.toml"),
                     "limits.pids": str(tmp_path / "p.toml")}


def test_child_override_of_a_bad_base_value_is_blamed_on_the_child(tmp_path):
    (tmp_path / "base.toml").write_text('[limits]\nmemory = "1G"\n')
    problem = problems_of(tmp_path, 'extends = "base.toml"\n[limits]\nmemory = 1\n')[0]
    assert problem.file == str(tmp_path / "p.toml") and problem.key == "limits.memory"


def test_cross_key_problem_of_a_default_is_blamed_on_the_loaded_file(tmp_path):
    (tmp_path / "base.toml").write_text('[namespaces]\npid = false\n')
    problem = problems_of(tmp_path, 'extends = "base.toml"\n')[0]
    assert problem.key == "filesystem.proc" and problem.file == str(tmp_path / "p.toml")


def test_syntax_error_in_a_base_names_the_base(tmp_path):
    (tmp_path / "base.toml").write_text("[limits\n")
    problem = problems_of(tmp_path, 'extends = "base.toml"\n')[0]
    assert problem.file == str(tmp_path / "base.toml") and problem.expected == "valid TOML"


# ---------------------------------------------------------------- files themselves

def test_toml_syntax_error(tmp_path):
    problem = only(tmp_path, "[process]\nhostname = \n")
    assert problem.key == "" and problem.expected == "valid TOML" and "line 2" in problem.found


def test_duplicate_key_is_a_syntax_error(tmp_path):
    assert only(tmp_path, "name = 'a'\nname = 'b'\n").expected == "valid TOML"


def test_not_utf8(tmp_path):
    (tmp_path / "p.toml").write_bytes(b'name = "\xff"\n')
    with pytest.raises(ProfileError) as info:
        load_profile(str(tmp_path / "p.toml"))
    assert info.value.problems[0].file == str(tmp_path / "p.toml")


def test_missing_file(tmp_path):
    with pytest.raises(ProfileError) as info:
        load_profile(str(tmp_path / "nope.toml"))
    (problem,) = info.value.problems
    assert problem.file == str(tmp_path / "nope.toml") and problem.found == "no such file"


def test_a_directory(tmp_path):
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(ProfileError) as info:
        load_profile(str(tmp_path / "dir.toml"))
    assert info.value.problems[0].found == "a directory"
    with pytest.raises(ProfileError) as info:
        load_profile(str(tmp_path) + "/")
    assert info.value.problems[0].found == "a directory"


def test_unknown_builtin_name_with_hint():
    with pytest.raises(ProfileError) as info:
        load_profile("untrustd")
    (problem,) = info.value.problems
    assert problem.file == "untrustd" and problem.found == "'untrustd'"
    assert "untrusted" in problem.expected and problem.hint == "did you mean 'untrusted'?"


def test_unknown_builtin_name_without_close_match():
    with pytest.raises(ProfileError) as info:
        load_profile("zzzzzz")
    assert info.value.problems[0].hint == ""
    assert "built-in profile name" in info.value.problems[0].expected


def test_problem_rendering():
    assert str(Problem("f.toml", "a.b", "x", "y", "z")) == "f.toml: a.b: expected x, found y (z)"
    assert str(Problem("f.toml", "", "x")) == "f.toml: expected x"
    assert ProfileError(Problem("f", "k", "e", "g")).one_line() == "f: k: expected e, found g"
    assert ProfileError([Problem("f", "k", "e"), Problem("f", "j", "e")]).one_line().endswith("(and 1 more problem)")
