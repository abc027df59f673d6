"""How a seccomp policy is wider than `default`: sandbox.seccomp.diff, `sandbox lint`, and the same
diff printed by `sandbox import docker-seccomp` (issue 21, items 2 and 14). The widenings lint
reports are checked against what the kernel then lets through."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import sandbox
from conftest import require
from sandbox.lint import lint
from sandbox.seccomp import builtin_policy, import_docker, parse_section, widenings
from sandbox.seccomp.learn import minimal_policy
from sandbox.seccomp.notify import Violation

MOBY = Path("/work/shared/interop/moby-default-seccomp.json")
needs_moby = pytest.mark.skipif(not MOBY.exists(), reason="needs shared/interop/moby-default-seccomp.json")


def policy(table: dict):
    parsed, problems = parse_section(table, "test.toml")
    assert not problems, problems
    return parsed


def by_subject(found):
    return {w.subject: w for w in found}


def test_built_in_and_learned_policies_widen_nothing():
    assert widenings(builtin_policy("default")) == []
    assert widenings(builtin_policy("strict")) == []
    seen = [Violation("socket", "notify", 1, 2, (2, 1, 0, 0, 0, 0), values=(2,)),
            Violation("read", "notify", 1, 2, (0,) * 6), Violation("clone", "notify", 1, 2, (0x11,) * 6)]
    assert widenings(minimal_policy(builtin_policy("default"), seen)) == []


def test_the_issues_loosened_policy_is_dangerous():
    found = by_subject(widenings(policy({"allow": ["ptrace", "bpf", "unshare"],
                                         "architectures": ["native", "x86", "x32"]})))
    for name in ("ptrace", "bpf", "unshare"):
        assert found[name].kind == "syscall" and found[name].risk == "danger", found[name]
    assert found["x86"].kind == found["x32"].kind == "architecture"
    assert found["x86"].risk == found["x32"].risk == "danger"
    assert "setns" not in found  # only what was widened


def test_argument_rules_removed_or_widened():
    found = by_subject(widenings(policy({"allow": ["ioctl", "clone"], "rules": [
        {"syscall": "socket", "action": "allow",
         "args": [{"index": 0, "op": "masked_eq", "mask": 0xFFFFFFFF, "value": 17}]}]})))
    assert found["clone"].kind == "arguments" and found["clone"].risk == "danger"
    assert "CLONE_NEW" in found["clone"].message and "any arguments" in found["clone"].message
    assert found["ioctl"].kind == "arguments" and found["ioctl"].risk == "warning"
    assert "0x5412" in found["ioctl"].message                      # TIOCSTI no longer refused
    assert found["socket"].kind == "arguments" and "AF_PACKET" in found["socket"].message
    assert "AF_INET" not in found["socket"].message.replace("AF_INET6", "")  # allowed by both


def test_a_64_bit_compare_is_a_widening():
    """Docker's `family > 40` lets 0x100000028 through, which the kernel reads as AF_VSOCK."""
    found = by_subject(widenings(policy({"rules": [
        {"syscall": "socket", "action": "allow", "args": [{"index": 0, "op": "gt", "value": 40}]}]})))
    assert "AF_VSOCK, high bits set" in found["socket"].message


def test_default_action_allow_is_dangerous():
    found = widenings(policy({"policy": "none", "mode": "denylist", "deny": ["@mount"]}))
    assert found[0].kind == "default-action" and found[0].risk == "danger"
    subjects = by_subject(found)
    assert subjects["ptrace"].risk == "danger" and "mount" not in subjects
    assert widenings(None)[0].kind == "unconfined"


def test_lint_reports_each_widening_and_fails(sandbox_cli, tmp_path):
    path = tmp_path / "loose.toml"
    path.write_text('extends = "untrusted"\n[seccomp]\nallow = ["ptrace", "bpf", "unshare"]\n'
                    'architectures = ["native", "x86", "x32"]\n')
    findings = lint(sandbox.load_profile(str(path)))
    dangers = [f for f in findings if f.severity == "danger"]
    assert {f.key for f in dangers} == {"seccomp", "seccomp.architectures"}
    text = "\n".join(f.message for f in dangers)
    for word in ("ptrace", "bpf", "unshare", "x86 ABI", "x32 ABI"):
        assert word in text
    done = sandbox_cli("lint", str(path))
    assert done.returncode == 1 and "5 danger" in done.stdout


def test_what_lint_calls_a_widening_is_what_the_kernel_lets_through(sandbox_cli, tmp_path):
    require("userns", "seccomp")
    path = tmp_path / "loose.toml"
    path.write_text('extends = "untrusted"\n[seccomp]\nallow = ["unshare"]\n')
    assert any("unshare" in f.message for f in lint(sandbox.load_profile(str(path))) if f.severity == "danger")
    assert sandbox_cli("run", str(path), "--", "unshare", "-U", "true").returncode == 0
    assert sandbox_cli("run", "untrusted", "--", "unshare", "-U", "true").returncode != 0


@needs_moby
def test_import_prints_the_diff_and_why_names_were_not_imported(sandbox_cli, tmp_path):
    out = tmp_path / "docker.toml"
    done = sandbox_cli("import", "docker-seccomp", str(MOBY), "-o", str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert all(line.startswith("sandbox: ") for line in lines)
    not_imported = [line for line in lines if "not imported:" in line]
    reasons = {}
    import_docker(str(MOBY), reasons=reasons)
    assert reasons and all(reasons.values())
    for name in reasons:  # each name is listed with its reason
        assert any(name in line and "libseccomp" in line for line in not_imported)
    assert any("allows more than the default policy" in line for line in lines)
    linted = sandbox_cli("lint", "--json", str(out))
    assert linted.returncode == 1
    for finding in json.loads(linted.stdout):
        if finding["key"].startswith("seccomp"):
            assert any(finding["message"] in line for line in lines), finding


@needs_moby
def test_an_imported_docker_profile_that_verify_fails_does_not_lint_clean(sandbox_cli, tmp_path):
    """Every seccomp check verify fails on the import is a danger lint reports."""
    require("userns", "seccomp", "system_python")
    out = tmp_path / "docker.toml"
    assert sandbox_cli("import", "docker-seccomp", str(MOBY), "-o", str(out)).returncode == 0
    verified = sandbox_cli("verify", "--json", str(out), timeout=180)
    failed = [r["id"] for r in json.loads(verified.stdout)["results"]
              if r["status"] == "FAIL" and r["layer"] == "seccomp"]
    assert failed, "the moby profile allows ptrace: verify must fail on it"
    dangers = " ".join(f.message for f in lint(sandbox.load_profile(str(out))) if f.severity == "danger")
    for check in failed:
        word = {"seccomp.i386": "x86 ABI", "seccomp.x32": "x32 ABI"}.get(check, check.rsplit(".", 1)[-1])
        assert word in dangers, (check, dangers)
