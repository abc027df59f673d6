"""Lint as a gate: stable finding ids, weights, the exposure score, --max-score, credentials in env."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

import sandbox
from sandbox import lint
from sandbox.profile.model import Profile

ROOT = Path(__file__).resolve().parents[1]

# Ids once published keep their meaning: this list only grows. A failure here means an id was
# removed or renumbered; add new ids at the end instead.
PUBLISHED = [
    "SBX-NS-001", "SBX-NS-002", "SBX-NS-003", "SBX-NS-004", "SBX-NS-005", "SBX-NS-006", "SBX-NS-007",
    "SBX-NS-008", "SBX-NET-001", "SBX-FS-001", "SBX-FS-002", "SBX-FS-003", "SBX-FS-004", "SBX-FS-005",
    "SBX-FS-006", "SBX-FS-007", "SBX-CAP-001", "SBX-CAP-002", "SBX-SC-001", "SBX-SC-002", "SBX-LL-001",
    "SBX-PROC-001", "SBX-PROC-002", "SBX-PROC-003", "SBX-LIM-001", "SBX-LIM-002", "SBX-LIM-003",
    "SBX-AUD-001", "SBX-CRED-001", "SBX-CRED-002", "SBX-CRED-003", "SBX-EXEC-001", "SBX-EXEC-002",
    "SBX-EXEC-003", "SBX-EXEC-004", "SBX-EXEC-005", "SBX-EXEC-006",
]


def _lint(table: dict):
    return lint.lint(sandbox.profile_from_dict({"extends": "untrusted", **table}))


def _ids(table: dict) -> set[str]:
    return {f.id for f in _lint(table)}


def test_published_ids_stay_and_the_catalogue_is_well_formed():
    assert set(PUBLISHED) <= set(lint.CATALOGUE)
    for check in lint.CATALOGUE.values():
        area, number = check.id.rsplit("-", 1)
        assert check.id.startswith("SBX-") and number.isdigit() and len(number) == 3
        assert check.severity in lint.SEVERITIES and 0 <= check.weight <= 10 and check.title


def test_every_relaxing_key_has_an_id():
    def keys(cls, path=""):
        for fld in dataclasses.fields(cls):
            key = f"{path}.{fld.name}" if path else fld.name
            if fld.metadata.get("kind") == "table":
                yield from keys(type(fld.default_factory()), key)
            elif fld.metadata.get("kind") == "tables":
                yield from keys(fld.metadata["item"], key)
            elif fld.metadata.get("relaxes"):
                yield key
    missing = [key for key in keys(Profile) if key not in lint.RELAXATION_IDS]
    assert not missing, f"add these to lint.RELAXATION_IDS: {missing}"
    ids = [i for value in lint.RELAXATION_IDS.values() for i in (value.values() if isinstance(value, dict) else [value])]
    assert all(check_id in lint.CATALOGUE for check_id in ids)


def test_docs_list_every_id():
    text = (ROOT / "docs/lint.md").read_text()
    assert lint.CATALOGUE_BEGIN + "\n\n" + lint.catalogue_markdown() + "\n" + lint.CATALOGUE_END in text, \
        "docs/lint.md is stale: run scripts/gen-docs"


def test_findings_carry_id_and_weight():
    findings = _lint({"namespaces": {"user": False}, "capabilities": {"keep": ["SYS_ADMIN"]}})
    by_id = {f.id: f for f in findings}
    assert by_id["SBX-NS-001"].key == "namespaces.user" and by_id["SBX-NS-001"].weight == 6.0
    assert by_id["SBX-CAP-002"].severity == "danger" and by_id["SBX-CAP-001"].severity == "warning"
    assert "SBX-NS-001" in str(by_id["SBX-NS-001"])


def test_the_score_formula():
    finding = lint.finding
    assert lint.score([]) == 0.0 and lint.level(0.0) == "locked down"
    assert lint.score([finding("SBX-NS-001", "k", "m")]) == 6.0
    # two independent exposures: 10 * (1 - 0.4 * 0.7)
    assert lint.score([finding("SBX-NS-001", "k", "m"), finding("SBX-NS-004", "k", "m")]) == 7.2
    # one id found five times counts once
    assert lint.score([finding("SBX-FS-004", f"k{i}", "m") for i in range(5)]) == 1.5
    everything = [lint.finding(check_id, "k", "m") for check_id in lint.CATALOGUE]
    assert 9.9 <= lint.score(everything) <= 10.0 and lint.level(lint.score(everything)) == "unsafe"
    assert [lint.level(v) for v in (0.1, 2.0, 4.5, 6.0, 8.0)] == ["strong", "good", "medium", "exposed", "unsafe"]


def test_reference_scores_of_the_built_ins_and_of_typical_relaxations():
    assert lint.score(lint.lint(sandbox.load_profile("untrusted"))) == 0.8
    assert lint.score(lint.lint(sandbox.load_profile("ci"))) == 1.9
    assert lint.score(_lint({"namespaces": {"user": False}})) == 6.3
    # An engine socket is refused unless the mount allows it (no exposure: it never runs); allowed, host root.
    assert lint.score(_lint({"filesystem": {"mounts": [{"source": "/var/run/docker.sock", "optional": True}]}})) == 0.8
    assert lint.score(_lint({"filesystem": {"mounts": [{"source": "/var/run/docker.sock", "optional": True,
                                                        "allow_system_path": True}]}})) == 9.5


def test_score_and_gate_on_the_command_line(sandbox_cli, tmp_path):
    os.chown(tmp_path, 1000, 1000)  # ci's workspace: a build user's (a root-owned one adds SBX-FS-010)
    shown = sandbox_cli("lint", "--score", "ci", cwd=tmp_path)
    assert shown.returncode == 0 and "ci: exposure score 1.9/10 (strong)" in shown.stdout
    assert sandbox_cli("lint", "ci", "--max-score", "2", cwd=tmp_path).returncode == 0
    gated = sandbox_cli("lint", "ci", "--max-score", "1.5", cwd=tmp_path)
    assert gated.returncode == 1 and "above --max-score 1.5" in gated.stdout
    data = json.loads(sandbox_cli("lint", "ci", "--json", "--score", cwd=tmp_path).stdout)
    assert data["score"] == 1.9 and data["level"] == "strong"
    assert {f["id"] for f in data["findings"]} == {"SBX-FS-004", "SBX-EXEC-001"}
    plain = json.loads(sandbox_cli("lint", "ci", "--json", cwd=tmp_path).stdout)
    assert isinstance(plain, list) and plain[0]["id"] == "SBX-FS-004"
    assert sandbox_cli("lint", "ci", "--max-score", "11").returncode == 125


@pytest.mark.parametrize("name", ["GITHUB_TOKEN", "DB_PASSWORD", "AWS_REGION", "API_KEY", "MY_APIKEY",
                                  "CLIENT_SECRET", "SSH_PASSPHRASE", "NPM_AUTH"])
def test_credential_names_in_env_are_flagged(name):
    findings = [f for f in _lint({"process": {"env": {name: "x"}}}) if f.id == "SBX-CRED-002"]
    assert len(findings) == 1 and "[[secrets]]" in findings[0].message and findings[0].key == f"process.env.{name}"


@pytest.mark.parametrize("name", ["PATH", "HOME", "LANG", "PWD", "KEYMAP", "KEYBOARD_LAYOUT", "PASSTHROUGH_MODE"])
def test_ordinary_names_are_not(name):
    assert "SBX-CRED-002" not in _ids({"process": {"env": {name: "x"}}})


VALUES = {
    "AKIAIOSFODNN7EXAMPLE": "an AWS access key id",
    "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8": "a GitHub token",
    "xoxb-1234567890-abcdefghij": "a Slack token",
    "https://deploy:s3cret@git.example.com/repo": "a URL with a password",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U":
        "a JSON web token",
    "Zx8q2LmN4pR7tV1wY3bC6dF9gH0jK5": "a random-looking 30-character string",
}


@pytest.mark.parametrize("value", list(VALUES))
def test_credential_values_are_flagged_without_showing_them(value):
    findings = [f for f in _lint({"process": {"env": {"SETTING": value}}}) if f.id == "SBX-CRED-003"]
    assert len(findings) == 1 and VALUES[value] in findings[0].message
    assert value not in findings[0].message and value not in str(findings[0])


@pytest.mark.parametrize("value", ["C.UTF-8", "/usr/local/lib/python3.11/site-packages", "true",
                                   "0123456789abcdef0123456789abcdef01234567",  # a git commit
                                   "123e4567-e89b-12d3-a456-426614174000", "https://example.com/path?q=1",
                                   "Hello world, this is a sentence"])
def test_ordinary_values_are_not(value):
    assert "SBX-CRED-003" not in _ids({"process": {"env": {"SETTING": value}}})


def test_passthrough_of_credentials_is_flagged():
    assert "SBX-CRED-001" in _ids({"process": {"env_passthrough": ["AWS_*"]}})
    assert "SBX-CRED-001" in _ids({"process": {"env_passthrough": ["GITLAB_TOKEN"]}})
    assert "SBX-CRED-001" not in _ids({"process": {"env_passthrough": ["LANG"]}})


def test_exec_findings(tmp_path):
    assert "SBX-EXEC-001" in {f.id for f in lint.lint(sandbox.load_profile("untrusted"))}
    assert "SBX-EXEC-001" not in _ids({"exec": {"allow": ["/usr/bin/python3*"]}})
    plain = sandbox.profile_from_dict({"name": "other"})  # not untrusted-class: no finding
    assert "SBX-EXEC-001" not in {f.id for f in lint.lint(plain)}
    assert "SBX-EXEC-004" in _ids({"exec": {"allow": ["/**"]}})
    writable = [f for f in _lint({"exec": {"allow": ["/tmp/build/**", "/usr/bin/make"]}}) if f.id == "SBX-EXEC-003"]
    assert [f.key for f in writable] == ["exec.allow[0]"]
    runners = [f for f in _lint({"exec": {"allow": ["/usr/bin/python3*", "/bin/sh", "/usr/bin/true"]}})
               if f.id == "SBX-EXEC-002"]
    assert [f.key for f in runners] == ["exec.allow[0]", "exec.allow[1]"]
    unlisted = [f for f in _lint({"exec": {"allow": ["/usr/bin/python3"]}}) if f.id == "SBX-EXEC-006"]
    assert unlisted and "/lib64/ld-linux-x86-64.so.2" in unlisted[0].message
    assert "SBX-EXEC-005" in _ids({"exec": {"allow": ["/usr/bin/true"]}, "seccomp": {"policy": "unconfined"}})
