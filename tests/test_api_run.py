"""sandbox.run() takes what `sandbox run` takes, with subprocess's conventions (issue 21, item 9).
Real launches: each option is checked by what the workload sees."""
from __future__ import annotations

import os
import subprocess

import pytest

import sandbox
from conftest import require
from sandbox.options import run_overrides


@pytest.fixture(autouse=True)
def _machine():
    require("userns")


def out(result) -> str:
    assert result.exit_code == 0, (result, result.stderr)
    return result.stdout.decode() if isinstance(result.stdout, bytes) else result.stdout


def test_a_string_command_is_split_like_a_shell_would():
    result = sandbox.run("untrusted", "printf '[%s]' 'two words' $HOME \\*", capture_output=True)
    assert out(result) == "[two words][$HOME][*]"  # quotes and escapes, no expansion
    assert result.argv == ("printf", "[%s]", "two words", "$HOME", "*")
    with pytest.raises(ValueError):
        sandbox.run("untrusted", "   ")


def test_timeout_takes_a_duration():
    result = sandbox.run("untrusted", "sleep 30", timeout="500ms")
    assert result.timed_out and result.exit_code == 124
    with pytest.raises(sandbox.ProfileError) as info:
        sandbox.run("untrusted", "true", timeout="soon")
    assert str(info.value).startswith("keyword argument timeout: limits.timeout: expected ")


def test_env_sets_and_passes_through(monkeypatch):
    monkeypatch.setenv("SBX_HOST_VALUE", "from-host")
    result = sandbox.run("untrusted", ["/bin/sh", "-c", "echo $A,$SBX_HOST_VALUE,$HOME,$SBX_UNSET"],
                         env={"A": "1", "SBX_HOST_VALUE": None, "HOME": "/home/x", "SBX_UNSET": None},
                         capture_output=True, text=True)
    assert out(result) == "1,from-host,/home/x,\n"
    assert any("SBX_UNSET is not set here" in w for w in result.warnings)
    # a list of NAME=VALUE / NAME, as on the command line
    listed = sandbox.run("untrusted", ["/bin/sh", "-c", "echo $A,$SBX_HOST_VALUE"], env=["A=2", "SBX_HOST_VALUE"],
                         capture_output=True, text=True)
    assert out(listed) == "2,from-host\n"


def test_binds_in_every_form(world_dir, monkeypatch):
    tmp_path = world_dir
    (tmp_path / "f").write_text("data")
    os.chmod(tmp_path / "f", 0o644)
    monkeypatch.chdir(tmp_path)
    result = sandbox.run("untrusted", "cat /a/f /b/f /c/f /d", capture_output=True, binds=[
        f"{tmp_path}:/a", (str(tmp_path), "/b"), {"source": str(tmp_path), "target": "/c", "mode": "ro"},
        "f:/d",  # relative source: the caller's directory, as with cp
    ])
    assert out(result) == "data" * 4
    with pytest.raises(sandbox.ProfileError) as info:
        sandbox.run("untrusted", "true", binds=["/no/such/path:/x"])
    line = str(info.value)
    assert line.startswith("keyword argument binds[0]: source: expected an existing host path")
    assert "optional = true" not in line  # a profile-only fix is not suggested for an argument


def test_limit_overrides_are_enforced(tmp_path):
    require("root")
    result = sandbox.run("untrusted", ["/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 2 & done 2>&1; wait"],
                         pids=4, capture_output=True, text=True)
    assert "fork" in result.stdout.lower() or "resource" in result.stdout.lower(), result.stdout
    with pytest.raises(sandbox.ProfileError) as info:
        sandbox.run("untrusted", "true", memory="lots", cpus=0, pids=0)
    labels = sorted(p.file for p in info.value.problems)
    assert labels == ["keyword argument cpus", "keyword argument memory", "keyword argument pids"]
    limited = sandbox.run("untrusted", "cat /proc/self/limits", limits={"rlimits": {"nofile": 77}},
                          capture_output=True, text=True)
    assert any(line.startswith("Max open files") and line.split()[3:5] == ["77", "77"]
               for line in out(limited).splitlines())


def test_input_with_captured_output_never_deadlocks():
    data = os.urandom(3 << 20)  # far more than a pipe holds, both ways at once
    result = sandbox.run("untrusted", ["cat"], input=data, capture_output=True)
    assert result.exit_code == 0 and result.stdout == data
    text = sandbox.run("untrusted", ["tr", "a-z", "A-Z"], input="hello", capture_output=True, text=True)
    assert text.stdout == "HELLO"
    with pytest.raises(ValueError):
        sandbox.run("untrusted", ["cat"], input=b"x", stdin=0)


def test_check_raises_with_the_result():
    with pytest.raises(sandbox.CommandFailed) as info:
        sandbox.run("untrusted", "sh -c 'echo partial; exit 3'", check=True, capture_output=True)
    error = info.value
    assert isinstance(error, sandbox.SandboxError)
    assert error.returncode == error.result.exit_code == 3
    assert error.stdout == error.output == b"partial\n" and error.cmd == ["sh", "-c", "echo partial; exit 3"]
    assert sandbox.run("untrusted", "true", check=True).exit_code == 0


def test_streams_follow_subprocess():
    result = sandbox.run("untrusted", "sh -c 'echo out; echo err >&2'", stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    assert result.stdout == b"out\n" and result.stderr is None
    r, w = os.pipe()
    try:
        merged = sandbox.run("untrusted", "sh -c 'echo out; echo err >&2'", stdout=w, stderr=subprocess.STDOUT)
        os.close(w)
        w = -1
        assert merged.exit_code == 0 and os.read(r, 100) == b"out\nerr\n"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    with pytest.raises(ValueError):
        sandbox.run("untrusted", "true", capture_output=True, stdout=subprocess.PIPE)


def test_network_cwd_settings_and_report_violations():
    host_net = os.readlink("/proc/self/ns/net")
    result = sandbox.run("untrusted", ["/bin/sh", "-c", "readlink /proc/self/ns/net; pwd; hostname"],
                         network="host", cwd="sub/..", settings={"process.hostname": "box"},
                         capture_output=True, text=True)
    assert out(result).split() == [host_net, "/tmp", "box"]  # cwd relative to the profile's (/tmp)
    reported = sandbox.run("untrusted", "unshare -U true", report_violations=True)
    assert any(v["syscall"] == "unshare" for v in reported.violations)


def test_a_loaded_profile_takes_the_same_overrides():
    loaded = sandbox.load_profile("untrusted")
    result = sandbox.run(loaded, "cat /proc/self/limits", limits={"rlimits": {"nofile": 99}}, capture_output=True,
                         text=True)
    assert any(line.startswith("Max open files") and "99" in line for line in out(result).splitlines())
    table, _ = run_overrides(memory="256M", cwd="/", style="api")
    from sandbox.profile.load import with_overrides
    by_name = sandbox.load_profile("untrusted", overrides=table)
    assert with_overrides(loaded, table).replace(source="", lineage=()) == by_name.replace(source="", lineage=())
