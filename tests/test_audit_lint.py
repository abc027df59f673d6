"""The audit trail of launches and `sandbox lint`."""
from __future__ import annotations

import json

from conftest import require

import sandbox
from sandbox.lint import lint


def test_lint_reports_every_relaxation(tmp_path):
    path = tmp_path / "loose.toml"
    path.write_text('extends = "untrusted"\n[network]\nmode = "host"\n[namespaces]\nnetwork = false\n'
                    '[capabilities]\nkeep = ["SYS_ADMIN"]\n[seccomp]\npolicy = "unconfined"\n'
                    '[process]\nenv_passthrough = ["AWS_*"]\n'
                    f'[[filesystem.mounts]]\nsource = "{tmp_path}"\ntarget = "/data"\nmode = "rw"\n')
    findings = {(f.severity, f.key) for f in lint(sandbox.load_profile(str(path)))}
    assert ("warning", "network.mode") in findings
    assert ("warning", "namespaces.network") in findings
    assert ("danger", "capabilities.keep") in findings
    assert ("danger", "seccomp") in findings
    assert ("warning", "process.env_passthrough") in findings
    assert any(key.startswith("filesystem.mounts[") and key.endswith(".mode") for _, key in findings)


def test_lint_of_untrusted_finds_no_relaxation(sandbox_cli):
    done = sandbox_cli("lint", "untrusted")
    assert done.returncode == 0
    assert "0 danger, 0 warnings" in done.stdout
    assert sandbox_cli("lint", "--strict", "ci").returncode == 1  # its rw workspace is a relaxation


def test_lint_exit_status_on_danger(sandbox_cli, tmp_path):
    (tmp_path / "p.toml").write_text('extends = "untrusted"\n[seccomp]\npolicy = "unconfined"\n')
    done = sandbox_cli("lint", "--json", str(tmp_path / "p.toml"))
    assert done.returncode == 1
    assert any(f["severity"] == "danger" for f in json.loads(done.stdout))


def test_every_launch_is_audited(sandbox_cli, tmp_path):
    require("userns")
    log = tmp_path / "audit.jsonl"
    env = {"SANDBOX_AUDIT_LOG": str(log)}
    assert sandbox_cli("run", "untrusted", "--", "/bin/sh", "-c", "exit 7", env=env).returncode == 7
    assert sandbox_cli("run", "untrusted", "--", "/no/such/command", env=env).returncode == 127
    records = [json.loads(line) for line in log.read_text().splitlines()]
    starts = [r for r in records if r["event"] == "start"]
    ends = {r["id"]: r for r in records if r["event"] == "end"}
    assert len(starts) == 2 and len(ends) == 2
    assert starts[0]["argv"] == ["/bin/sh", "-c", "exit 7"] and starts[0]["profile"] == "untrusted"
    assert ends[starts[0]["id"]]["exit_code"] == 7
    assert "error" in ends[starts[1]["id"]] and ends[starts[1]["id"]]["exit_code"] == 127
    assert len(starts[0]["profile_hash"]) == 16
    shown = sandbox_cli("audit", "--log", str(log))
    assert "exit 7" in shown.stdout and "untrusted" in shown.stdout


def test_audit_failures_only_warn_and_audit_can_be_switched_off(tmp_path, monkeypatch):
    require("userns")
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("SANDBOX_AUDIT_LOG", str(tmp_path / "a-file" / "audit.jsonl"))  # ENOTDIR, even for root
    result = sandbox.run("untrusted", ["/bin/true"])
    assert result.exit_code == 0 and any("audit log" in w for w in result.warnings)
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("SANDBOX_AUDIT_LOG", str(log))
    quiet = sandbox.profile_from_dict({"extends": "untrusted", "audit": {"enabled": False}})
    assert sandbox.run(quiet, ["/bin/true"]).exit_code == 0
    assert not log.exists()
