"""The seccomp engine through the launcher and the CLI: import, export, show, violations, learning."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import require

import sandbox

MOBY = Path(__file__).resolve().parents[2] / "shared/interop/moby-default-seccomp.json"
ATTEMPT_MOUNT = ("import ctypes; l = ctypes.CDLL(None, use_errno=True); "
                 "r = l.mount(b'none', b'/tmp', b'tmpfs', 0, None); print(r, ctypes.get_errno())")


@pytest.fixture(autouse=True)
def _machine():
    require("userns", "seccomp", "system_python")


def test_imported_docker_profile_runs_and_denies_like_docker(sandbox_cli, tmp_path):
    if not MOBY.exists():
        pytest.skip("shared/interop/moby-default-seccomp.json is not beside the repository")
    out = tmp_path / "moby.toml"
    done = sandbox_cli("import", "docker-seccomp", str(MOBY), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert 'extends = "untrusted"' in out.read_text()
    assert sandbox_cli("check", str(out)).returncode == 0
    # Docker allows an ordinary workload and refuses mount() to a process without CAP_SYS_ADMIN: EPERM.
    done = sandbox_cli("run", str(out), "--", "/usr/bin/python3", "-c", ATTEMPT_MOUNT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["-1", "1"]
    done = sandbox_cli("run", str(out), "--", "/bin/sh", "-c", "echo ok | tr a-z A-Z")
    assert done.stdout == "OK\n"


def test_export_round_trips_through_import(sandbox_cli, tmp_path):
    exported = tmp_path / "policy.json"
    done = sandbox_cli("export", "untrusted", "--format", "docker-seccomp", "-o", str(exported))
    assert done.returncode == 0
    data = json.loads(exported.read_text())
    assert data["defaultAction"] == "SCMP_ACT_ERRNO" and data["syscalls"]
    profile = tmp_path / "back.toml"
    assert sandbox_cli("import", "docker-seccomp", str(exported), "-o", str(profile)).returncode == 0
    assert sandbox_cli("run", str(profile), "--", "/bin/true").returncode == 0


def test_import_of_garbage_is_a_clean_error(sandbox_cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"defaultAction": 42}')
    done = sandbox_cli("import", "docker-seccomp", str(bad))
    assert done.returncode == 125 and done.stderr.startswith("sandbox: ") and "Traceback" not in done.stderr


def test_seccomp_show_and_bpf_export(sandbox_cli, tmp_path):
    done = sandbox_cli("seccomp", "show", "untrusted", "--bpf", str(tmp_path / "f.bpf"))
    assert done.returncode == 0 and "allowlist" in done.stdout
    assert (tmp_path / "f.bpf").stat().st_size % 8 == 0 and (tmp_path / "f.bpf").stat().st_size > 0
    assert "if ($syscall ==" in sandbox_cli("seccomp", "show", "--pfc", "untrusted").stdout


def test_violations_are_reported_by_name_count_and_arguments(sandbox_cli):
    result = sandbox.run("untrusted", ["/usr/bin/python3", "-c", ATTEMPT_MOUNT + "; " + ATTEMPT_MOUNT],
                         capture_output=True, seccomp_mode="report")
    assert result.exit_code == 0
    assert result.stdout.split() == [b"-1", b"1", b"-1", b"1"]  # the workload still sees the policy's errno
    mount = [v for v in result.violations if v["syscall"] == "mount"]
    assert mount and mount[0]["count"] == 2 and mount[0]["action"] == "errno(EPERM)"
    done = sandbox_cli("run", "--report-violations", "untrusted", "--", "/bin/sh", "-c", "unshare -U true; true")
    assert "sandbox: denied: unshare x1" in done.stderr


def test_learned_profile_runs_its_workload_and_denies_others(sandbox_cli, tmp_path):
    learned = tmp_path / "learned.toml"
    done = sandbox_cli("learn", "-o", str(learned), "--", "/bin/sh", "-c", "echo learned; ls / >/dev/null")
    assert done.returncode == 0, done.stderr
    assert "learned" in done.stderr
    text = learned.read_text()
    assert 'extends = "untrusted"' in text and "allowlist" in text
    again = sandbox_cli("run", str(learned), "--", "/bin/sh", "-c", "echo learned; ls / >/dev/null")
    assert again.returncode == 0 and again.stdout == "learned\n"
    # python needs system calls the shell never made: the learned policy refuses them
    other = sandbox_cli("run", str(learned), "--", "/usr/bin/python3", "-c", "import socket; socket.socket()")
    assert other.returncode != 0


def test_learning_narrows_socket_families_and_ioctls_to_those_used(sandbox_cli, tmp_path):
    learned = tmp_path / "net.toml"
    uses_inet = "import socket; socket.socket(socket.AF_INET).close(); print('ok')"
    assert sandbox_cli("learn", "-o", str(learned), "--", "/usr/bin/python3", "-c", uses_inet).returncode == 0
    shown = sandbox_cli("seccomp", "show", str(learned)).stdout
    assert "socket       allow if arg0 & 0xffffffff == 0x2" in shown
    assert sandbox_cli("run", str(learned), "--", "/usr/bin/python3", "-c", uses_inet).stdout == "ok\n"
    inet6 = sandbox_cli("run", str(learned), "--", "/usr/bin/python3", "-c",
                        "import socket; socket.socket(socket.AF_INET6)")
    assert inet6.returncode == 1 and "Address family not supported" in inet6.stderr
