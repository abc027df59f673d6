"""`sandbox verify`: built-in profiles pass their own verification, and weakened sandboxes fail it."""
from __future__ import annotations

import json
import os

import pytest

from conftest import BUILD_USER, require

import sandbox
from sandbox.verify import verify_profile


def _statuses(report, prefix: str) -> set[str]:
    return {r["status"] for r in report.results if r["id"].startswith(prefix)}


def _weak(tmp_path, name: str, body: str):
    path = tmp_path / f"{name}.toml"
    path.write_text('extends = "untrusted"\n' + body)
    return sandbox.load_profile(str(path))


@pytest.fixture(autouse=True)
def _machine():
    require("userns", "system_python")


@pytest.mark.parametrize("name", sorted(sandbox.builtin_profile_names()))
def test_every_builtin_profile_passes_its_own_verification(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the ci profile binds the current directory
    if os.geteuid() == 0:
        os.chown(tmp_path, BUILD_USER, BUILD_USER)  # as a CI checkout would be
    report = verify_profile(sandbox.load_profile(name))
    failed = [r for r in report.results if r["status"] == "FAIL"]
    assert report.ok, failed
    assert len(report.results) > 100
    # inside and outside views both present
    assert any(r["id"].startswith("outside.") for r in report.results)
    assert _statuses(report, "fs.setid.") == {"PASS"}  # /tmp, /dev/shm (and ci's /workspace)
    if name == "ci":
        for check in ("fs.setid./workspace", "fs.write_owner./workspace", "mount.system_rw",
                      "outside.fs.write_owner./workspace"):
            assert _statuses(report, check) == {"PASS"}, check
        assert os.listdir(tmp_path) == []  # the probe's marker is gone


def test_a_writable_bind_where_setuid_bits_can_be_set_fails(tmp_path):
    """Without the filter the kernel lets a file's owner set its setuid bit: measured against the
    same profile with the default policy, the writable host mount FAILs."""
    data = tmp_path / "data"
    data.mkdir()
    if os.geteuid() == 0:
        os.chown(data, BUILD_USER, BUILD_USER)
    bind = f'[[filesystem.mounts]]\nsource = "{data}"\ntarget = "/data"\nmode = "rw"\n'
    weak = _weak(tmp_path, "nofilter", '[seccomp]\npolicy = "unconfined"\n' + bind)
    report = verify_profile(weak, against=_weak(tmp_path, "filtered", bind))
    assert _statuses(report, "fs.setid./data") == {"FAIL"}
    assert _statuses(report, "fs.setid./tmp") == {"WARN"}  # a tmpfs that dies with the sandbox
    assert _statuses(verify_profile(weak), "fs.setid./data") == {"WARN"}  # the profile's own choice
    assert os.listdir(data) == []


def test_kept_capabilities_fail_against_untrusted_and_skip_against_themselves(tmp_path):
    weak = _weak(tmp_path, "caps", '[capabilities]\nkeep = ["CAP_SYS_ADMIN"]\n')
    strict = verify_profile(weak, against=sandbox.load_profile("untrusted"))
    assert not strict.ok
    assert _statuses(strict, "caps.") == {"FAIL"}
    assert _statuses(strict, "outside.caps.") == {"FAIL"}
    own = verify_profile(weak)
    assert own.ok
    assert _statuses(own, "caps.") == {"SKIP"}  # visible as a relaxation, never a silent PASS


def test_no_seccomp_fails_the_seccomp_checks(tmp_path):
    weak = _weak(tmp_path, "noseccomp", '[seccomp]\npolicy = "unconfined"\n')
    report = verify_profile(weak, against=sandbox.load_profile("untrusted"))
    failed = {r["id"] for r in report.results if r["status"] == "FAIL"}
    assert {"seccomp.mode", "seccomp.denied.mount", "seccomp.unshare.newuser"} <= failed
    assert not any(i.startswith(("ns.", "caps.", "mount.")) for i in failed)


def test_host_network_fails_the_network_checks(tmp_path):
    weak = _weak(tmp_path, "hostnet", '[network]\nmode = "host"\n[namespaces]\nnetwork = false\n')
    report = verify_profile(weak, against=sandbox.load_profile("untrusted"))
    failed = {r["id"] for r in report.results if r["status"] == "FAIL"}
    assert {"ns.net", "net.canary_tcp", "net.interfaces"} <= failed
    own = verify_profile(weak)
    assert own.ok
    assert _statuses(own, "net.canary_tcp") == {"SKIP"}


def test_cli_verify_json_and_exit_status(sandbox_cli, tmp_path):
    done = sandbox_cli("verify", "--json", "untrusted")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["profile"] == "untrusted"
    assert all({"id", "status", "expected", "observed"} <= set(r) for r in data["results"])
    (tmp_path / "weak.toml").write_text('extends = "untrusted"\n[capabilities]\nkeep = ["NET_RAW"]\n')
    done = sandbox_cli("verify", str(tmp_path / "weak.toml"), "--against", "untrusted")
    assert done.returncode == 1
    assert "failed" in done.stdout.splitlines()[-1]


def test_cli_verify_exit_125_when_it_cannot_run(sandbox_cli, tmp_path):
    # no /usr inside: no python3 to run the probe with
    (tmp_path / "bare.toml").write_text('[limits]\npids = 64\n')
    done = sandbox_cli("verify", str(tmp_path / "bare.toml"))
    assert done.returncode == 125
    assert done.stderr.startswith("sandbox: ") and "Traceback" not in done.stderr


def test_run_verify_refuses_a_failing_sandbox_and_runs_a_good_one(sandbox_cli, tmp_path):
    done = sandbox_cli("run", "--verify", "untrusted", "--", "/bin/echo", "ran")
    assert done.returncode == 0 and done.stdout == "ran\n"


def test_probe_command_runs_on_the_host(sandbox_cli):
    done = sandbox_cli("probe", "--json")
    data = json.loads(done.stdout)
    statuses = {r["id"]: r["status"] for r in data["results"]}
    assert statuses["ns.pid"] in ("FAIL", "WARN")  # the bare host is not isolated
    assert done.returncode == 1


def test_terminal_injection_is_tried_on_the_callers_terminal(tmp_path):
    """Run from a terminal, the verifier leaves it on the probe's stderr: TIOCSTI is tried for real."""
    import os
    import subprocess
    import sys
    master, slave = os.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "sandbox", "verify", "--json", "untrusted"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=slave, timeout=60, start_new_session=True)
    finally:
        os.close(slave)
        os.close(master)
    results = {r["id"]: r for r in json.loads(done.stdout)["results"]}
    assert results["terminal.tiocsti"]["status"] == "PASS", results["terminal.tiocsti"]
