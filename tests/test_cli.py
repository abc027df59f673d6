"""The `sandbox` command's profile commands and error path, in-process (CliRunner) and for real.

Nothing here launches a sandbox: `run` is only driven with profiles that must be refused.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sandbox.cli import main
from sandbox.profile import load_profile
from sandbox.profile.schema import json_schema

BAD = """\
[process]
hostnme = "x"
user = -1
[[filesystem.mounts]]
source = "relative/path"
[limits]
memory = 0
"""


def _strip(profile):
    return profile.replace(source="", lineage=(), extends=None)


def _reload(text: str, tmp_path: Path):
    path = tmp_path / "resolved.toml"
    path.write_text(text)
    return load_profile(str(path))


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _assert_clean_failure(stderr: str, stdout: str = "") -> list[str]:
    assert "Traceback" not in stderr and "Traceback" not in stdout
    lines = stderr.splitlines()
    assert lines and all(line.startswith("sandbox: ") for line in lines), stderr
    return lines


# ---------------------------------------------------------------- in-process

@pytest.mark.parametrize("name", ["untrusted", "ci"])
def test_check_prints_toml_that_reloads_to_the_same_profile(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("check", name)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert _strip(_reload(result.stdout, tmp_path)) == _strip(load_profile(name))


def test_check_output_is_stable(tmp_path):
    first = invoke("check", "untrusted").stdout
    path = tmp_path / "again.toml"
    path.write_text(first)
    assert invoke("check", str(path)).stdout == first


def test_check_bad_profile_lists_every_problem(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    result = invoke("check", str(path))
    assert result.exit_code == 125
    assert result.stdout == ""
    lines = _assert_clean_failure(result.stderr)
    assert len(lines) == 4
    for key in ("process.hostnme", "process.user", "filesystem.mounts[0].source", "limits.memory"):
        assert any(line.startswith(f"sandbox: {path}: {key}: expected ") for line in lines), (key, lines)
    assert "did you mean 'hostname'?" in result.stderr


def test_check_names_the_base_file_for_its_problems(tmp_path):
    (tmp_path / "base.toml").write_text('[limits]\nmemory = "lots"\n')
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n')
    result = invoke("check", str(tmp_path / "child.toml"))
    assert result.exit_code == 125
    assert _assert_clean_failure(result.stderr) == [
        f"sandbox: {tmp_path / 'base.toml'}: limits.memory: expected a size such as 512M or 2G, found 'lots'"]


@pytest.mark.parametrize("target, found", [("missing.toml", "no such file"), ("adir", "a directory")])
def test_check_unreadable_profiles(tmp_path, target, found):
    (tmp_path / "adir").mkdir()
    result = invoke("check", str(tmp_path / target))
    assert result.exit_code == 125
    (line,) = _assert_clean_failure(result.stderr)
    assert str(tmp_path / target) in line and found in line


def test_check_syntax_error(tmp_path):
    (tmp_path / "broken.toml").write_text("[process\n")
    result = invoke("check", str(tmp_path / "broken.toml"))
    assert result.exit_code == 125
    (line,) = _assert_clean_failure(result.stderr)
    assert "expected valid TOML" in line and "line 1" in line


def test_check_unknown_builtin_suggests():
    result = invoke("check", "untrustd")
    assert result.exit_code == 125
    (line,) = _assert_clean_failure(result.stderr)
    assert "did you mean 'untrusted'?" in line


def test_profiles_lists_builtins_with_descriptions():
    result = invoke("profiles")
    assert result.exit_code == 0
    rows = {line.split()[0]: line.split(None, 1)[1] for line in result.stdout.splitlines()}
    assert rows["untrusted"] == load_profile("untrusted").description
    assert rows["ci"] == load_profile("ci").description


def test_schema_prints_the_schema():
    result = invoke("schema")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == json_schema()


def test_run_with_a_bad_profile_launches_nothing(tmp_path, monkeypatch):
    audit = tmp_path / "audit.jsonl"
    monkeypatch.setenv("SANDBOX_AUDIT_LOG", str(audit))
    (tmp_path / "bad.toml").write_text(BAD)
    result = invoke("run", "--bind", f"{tmp_path}:/out:rw", str(tmp_path / "bad.toml"),
                    "--", "/bin/sh", "-c", "touch /out/ran")
    assert result.exit_code == 125
    lines = _assert_clean_failure(result.stderr)  # every problem, one line each, as `check` shows them
    assert len(lines) == 4 and all(str(tmp_path / "bad.toml") in line for line in lines)
    assert not (tmp_path / "ran").exists() and not audit.exists()


@pytest.mark.parametrize("args", [["--bogus"], ["check", "--bogus", "untrusted"], ["profiles", "extra"],
                                  ["nosuchcommand"], ["check"]])
def test_usage_errors_exit_125(args):
    result = invoke(*args)
    assert result.exit_code == 125
    assert _assert_clean_failure(result.stderr)


def test_help():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("check", "profiles", "schema", "run"):
        assert command in result.stdout


# ---------------------------------------------------------------- the real command

def test_real_check_untrusted_reloads(sandbox_cli, tmp_path):
    result = sandbox_cli("check", "untrusted")
    assert result.returncode == 0, result.stderr
    assert _strip(_reload(result.stdout, tmp_path)) == _strip(load_profile("untrusted"))


def test_real_check_bad_profile(sandbox_cli, tmp_path):
    (tmp_path / "bad.toml").write_text(BAD)
    result = sandbox_cli("check", "bad.toml", cwd=tmp_path)
    assert result.returncode == 125
    lines = _assert_clean_failure(result.stderr)
    assert len(lines) == 4
    assert all(str(tmp_path / "bad.toml") in line for line in lines)
    assert any("limits.memory" in line for line in lines)


def test_real_profiles_and_schema(sandbox_cli):
    profiles = sandbox_cli("profiles")
    assert profiles.returncode == 0
    assert any(line.startswith("untrusted ") and "isolation" in line for line in profiles.stdout.splitlines())
    assert any(line.startswith("ci ") and "Build jail" in line for line in profiles.stdout.splitlines())
    schema = sandbox_cli("schema")
    assert schema.returncode == 0 and json.loads(schema.stdout)["title"] == "sandbox profile"


def test_real_run_with_bad_profile_launches_nothing(sandbox_cli, tmp_path):
    (tmp_path / "bad.toml").write_text(BAD)
    audit = tmp_path / "audit.jsonl"
    result = sandbox_cli("run", "--bind", f"{tmp_path}:/out:rw", "bad.toml", "--", "/bin/sh", "-c", "touch /out/ran",
                         cwd=tmp_path, env={"SANDBOX_AUDIT_LOG": str(audit)})
    assert result.returncode == 125
    _assert_clean_failure(result.stderr)
    assert result.stdout == ""
    assert not (tmp_path / "ran").exists() and not audit.exists()


def test_real_unknown_option(sandbox_cli):
    result = sandbox_cli("--no-such-option")
    assert result.returncode == 125
    assert _assert_clean_failure(result.stderr) == ["sandbox: No such option '--no-such-option'."]


def test_python_m_sandbox_help(sandbox_cli):
    result = sandbox_cli("--help")
    assert result.returncode == 0 and result.stderr == ""
    assert "Usage:" in result.stdout and "check" in result.stdout


def test_schema_output_is_the_shipped_file():
    shipped = Path(__file__).resolve().parents[1] / "sandbox/schema/profile.schema.json"
    assert invoke("schema").stdout == shipped.read_text()
