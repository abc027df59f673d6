"""`--result-json` (issue 21, item 6): checked before anything is launched, a record for every
outcome (setup errors included, with the error and its step), `-` for standard output."""
from __future__ import annotations

import json
import os

import pytest

from conftest import require


@pytest.fixture(autouse=True)
def _machine():
    require("userns")


def record_of(path) -> dict:
    return json.loads(path.read_text())


def test_a_run_and_its_record(sandbox_cli, tmp_path):
    path = tmp_path / "r.json"
    done = sandbox_cli("run", "--result-json", str(path), "untrusted", "--", "/bin/sh", "-c", "exit 3")
    assert done.returncode == 3
    record = record_of(path)
    assert record["exit_code"] == 3 and record["error"] is None and record["profile_name"] == "untrusted"


@pytest.mark.parametrize("argv, code, step", [
    (["/no/such/command"], 127, "exec"),
    (["/usr/lib/os-release"], 126, "exec"),  # a file, not executable
])
def test_exec_errors_leave_a_record(sandbox_cli, tmp_path, argv, code, step):
    path = tmp_path / "r.json"
    done = sandbox_cli("run", "--result-json", str(path), "untrusted", "--", *argv)
    assert done.returncode == code
    record = record_of(path)
    assert record["exit_code"] == code and record["error"]["step"] == step
    assert record["error"]["errno"] and argv[0] in record["error"]["message"]


def test_setup_and_profile_errors_leave_a_record(sandbox_cli, tmp_path):
    path = tmp_path / "r.json"
    done = sandbox_cli("run", "--result-json", str(path), "--cwd", "/no/such/dir", "untrusted", "--", "/bin/true")
    assert done.returncode == 125
    record = record_of(path)
    assert record["exit_code"] == 125 and record["error"]["step"] == "working directory"
    done = sandbox_cli("run", "--result-json", str(path), "--memory", "lots", "untrusted", "--", "/bin/true")
    assert done.returncode == 125
    record = record_of(path)
    assert record["error"]["step"] == "profile"
    assert record["error"]["problems"] == [line.removeprefix("sandbox: ") for line in done.stderr.splitlines()]


def test_an_unwritable_path_is_refused_before_the_launch(sandbox_cli, world_dir, tmp_path):
    marker = world_dir / "ran"
    done = sandbox_cli("run", "--result-json", str(tmp_path / "no" / "such" / "dir" / "r.json"),
                       "--bind", f"{world_dir}:/out:rw", "untrusted", "--", "/bin/sh", "-c", "touch /out/ran")
    assert done.returncode == 125 and not marker.exists()
    assert done.stderr.startswith("sandbox: --result-json ") and "cannot write" in done.stderr


def test_dash_is_standard_output(sandbox_cli, tmp_path):
    done = sandbox_cli("run", "--result-json", "-", "untrusted", "--", "/bin/sh", "-c", "echo from-workload; exit 2",
                       cwd=tmp_path)
    assert done.returncode == 2
    assert json.loads(done.stdout)["exit_code"] == 2  # stdout holds the record only ...
    assert "from-workload" in done.stderr  # ... the workload's own output went to stderr
    assert not os.path.exists(tmp_path / "-")
    failed = sandbox_cli("run", "--result-json", "-", "untrusted", "--", "/no/such/command", cwd=tmp_path)
    assert failed.returncode == 127 and json.loads(failed.stdout)["error"]["step"] == "exec"
    assert sandbox_cli("run", "--result-json", "-", "--tty", "untrusted", "--", "/bin/true").returncode == 125
