"""Command-line conveniences (issue 21, items 10 and 14): `--env NAME`, `--set KEY=VALUE`, the run
options on `check` and `lint` (they show what will run), lint dangers before a run and
`run --strict`, and `sandbox gc` saying when it had nothing to do."""
from __future__ import annotations

import json
import os

import pytest

from conftest import require


@pytest.fixture(autouse=True)
def _machine():
    require("userns")


def test_env_name_passes_the_host_value_through(sandbox_cli):
    done = sandbox_cli("run", "-q", "--env", "SBX_FROM_HOST", "--env", "HOME", "--env", "A=b", "untrusted", "--",
                       "/bin/sh", "-c", "echo $SBX_FROM_HOST,$HOME,$A",
                       env={"SBX_FROM_HOST": "yes", "HOME": "/host/home"})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "yes,/host/home,b\n"  # the host's HOME, over the profile's HOME = /tmp
    shown = sandbox_cli("check", "--env", "SBX_FROM_HOST", "untrusted", env={"SBX_FROM_HOST": "secret-value"})
    assert "secret-value" not in shown.stdout and '"SBX_FROM_HOST"' in shown.stdout  # by name, not value
    unset = sandbox_cli("run", "--env", "SBX_NOT_SET_ANYWHERE", "untrusted", "--", "/bin/true")
    assert unset.returncode == 0
    assert "sandbox: warning: --env SBX_NOT_SET_ANYWHERE: SBX_NOT_SET_ANYWHERE is not set here" in unset.stderr


def test_set_any_key_validated_like_the_file(sandbox_cli):
    done = sandbox_cli("run", "-q", "--set", "limits.rlimits.nofile=64", "--set", "process.hostname=box",
                       "untrusted", "--", "/bin/sh", "-c", "ulimit -n; hostname")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["64", "box"]
    bad = sandbox_cli("run", "--set", "process.hostnme=x", "--set", "limits.pids=many", "--set", "nodots",
                      "untrusted", "--", "/bin/true")
    assert bad.returncode == 125
    assert bad.stderr.splitlines() == ["sandbox: --set nodots: expected KEY=VALUE, found 'nodots'"]
    bad = sandbox_cli("check", "--set", "process.hostnme=x", "--set", "limits.pids=many", "untrusted")
    assert bad.returncode == 125
    assert sorted(bad.stderr.splitlines()) == [
        "sandbox: --set limits.pids: limits.pids: expected an integer from 1 to 1099511627776, found 'many'",
        "sandbox: --set process.hostnme: process.hostnme: expected a known key of [process], found 'hostnme' "
        "(did you mean 'hostname'?)"]


def test_check_and_lint_show_what_will_run(sandbox_cli):
    plain, relaxed = sandbox_cli("check", "untrusted"), sandbox_cli("check", "--network", "host", "--memory", "2G",
                                                                    "untrusted")
    assert 'mode = "none"' in plain.stdout and 'mode = "host"' in relaxed.stdout
    assert 'memory = "2G"' in relaxed.stdout
    linted = sandbox_cli("lint", "--json", "--network", "host", "--set", 'seccomp.allow=["ptrace"]', "untrusted")
    findings = {(f["severity"], f["key"]) for f in json.loads(linted.stdout)}
    assert ("warning", "network.mode") in findings and ("danger", "seccomp") in findings
    assert linted.returncode == 1


def test_command_line_and_profile_key_give_the_same_profile(tmp_path, sandbox_cli):
    path = tmp_path / "hostnet.toml"
    path.write_text('extends = "untrusted"\n[network]\nmode = "host"\n')
    by_key, by_option = sandbox_cli("check", str(path)), sandbox_cli("check", "--network", "host", "untrusted")
    assert by_key.returncode == by_option.returncode == 0, (by_key.stderr, by_option.stderr)
    # Nothing but the name differs: one key, one meaning (no extra namespaces.network = false).
    strip = lambda text: [line for line in text.splitlines() if not line.startswith(("name", "description"))]
    assert strip(by_key.stdout) == strip(by_option.stdout)


def test_run_warns_on_dangers_and_strict_refuses(sandbox_cli, world_dir):
    os.chown(world_dir, 1000, 1000)  # a build user's directory: root's is not idmapped (issue 20)
    marker = world_dir / "ran"
    args = ["--set", 'seccomp.allow=["ptrace"]', "--bind", f"{world_dir}:/out:rw", "untrusted", "--",
            "/bin/sh", "-c", "touch /out/ran"]
    warned = sandbox_cli("run", *args)
    assert warned.returncode == 0 and marker.exists()
    assert "sandbox: warning: danger: seccomp: ptrace is allowed" in warned.stderr
    marker.unlink()
    refused = sandbox_cli("run", "--strict", *args)
    assert refused.returncode == 125 and not marker.exists()
    assert refused.stderr.startswith("sandbox: --strict: the profile has 1 danger finding (sandbox lint): seccomp: ")
    assert sandbox_cli("run", "--strict", "untrusted", "--", "/bin/true").returncode == 0
    assert "danger" not in sandbox_cli("run", "-q", *args).stderr


def test_gc_says_when_there_is_nothing_to_collect(sandbox_cli):
    sandbox_cli("gc")  # whatever dead launchers left
    done = sandbox_cli("gc")
    assert done.returncode == 0 and done.stdout.startswith("nothing to collect")
