"""[[secrets]]: readable inside at /run/secrets/NAME, absent from every output and log we can collect."""
from __future__ import annotations

import json
import os
import pickle
import textwrap

import pytest

from conftest import ROOT, as_nobody, nobody_env, require

import sandbox
from sandbox.errors import ProfileError
from sandbox.secrets import SecretValue

FILE_VALUE = "file-secret-7Qx93LmPz1Vb"
ENV_VALUE = "env-secret-Kd82hhWq0Zr4"

# Run inside: everything the workload can see of its secrets and of the environments around it.
INSIDE = textwrap.dedent("""
    import json, os, stat
    out = {"files": {}, "environ": {}}
    for name in sorted(os.listdir("/run/secrets")):
        path = "/run/secrets/" + name
        info = os.stat(path)
        out["files"][name] = {"value": open(path).read(), "mode": oct(stat.S_IMODE(info.st_mode)),
                              "uid": info.st_uid, "gid": info.st_gid}
    for pid in ("1", "self"):
        try:
            out["environ"][pid] = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
        except OSError as exc:
            out["environ"][pid] = "unreadable: " + exc.strerror
    out["env"] = dict(os.environ)
    for what, attempt in (("write", lambda: open("/run/secrets/from_file", "w")),
                          ("create", lambda: open("/run/secrets/new", "w")),
                          ("chmod", lambda: os.chmod("/run/secrets/from_file", 0o644))):
        try:
            attempt()
            out[what] = "ok"
        except OSError as exc:
            out[what] = exc.strerror
    print(json.dumps(out))
""")


@pytest.fixture
def secret_setup(world_dir, monkeypatch):
    """A profile with one secret from a file and one from the launcher's environment."""
    secret_file = world_dir / "token"
    secret_file.write_text(FILE_VALUE)
    secret_file.chmod(0o600)
    monkeypatch.setenv("WATCH_TEST_SECRET", ENV_VALUE)
    profile = world_dir / "secret.toml"
    profile.write_text(textwrap.dedent(f"""
        extends = "untrusted"
        [process]
        env_passthrough = ["WATCH_TEST_*"]   # must not carry the secret's variable in
        [[secrets]]
        name = "from_file"
        file = "{secret_file}"
        [[secrets]]
        name = "from_env"
        env = "WATCH_TEST_SECRET"
    """))
    return profile, secret_file


def _assert_no_secret(*texts):
    for text in texts:
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        assert FILE_VALUE not in text and ENV_VALUE not in text


def test_a_secret_is_a_read_only_file_inside_and_nowhere_else(secret_setup, tmp_path, sandbox_cli):
    require("userns", "system_python")
    profile, _ = secret_setup
    log = tmp_path / "audit.jsonl"
    env = {"SANDBOX_AUDIT_LOG": str(log)}
    result_json = tmp_path / "result.json"
    done = sandbox_cli("run", "--result-json", str(result_json), str(profile), "--", "/usr/bin/python3", "-c",
                       INSIDE, env=env)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["files"] == {
        "from_env": {"value": ENV_VALUE, "mode": "0o400", "uid": 65534, "gid": 65534},
        "from_file": {"value": FILE_VALUE, "mode": "0o400", "uid": 65534, "gid": 65534}}
    assert seen["write"] == seen["create"] == seen["chmod"] == "Read-only file system"
    # Inside, nowhere else: not the environment, not init's
    _assert_no_secret(json.dumps(seen["environ"]), json.dumps(seen["env"]))
    assert "WATCH_TEST_SECRET" not in seen["env"]
    # Outside: stderr, the result JSON, the audit log, check and lint
    _assert_no_secret(done.stderr, result_json.read_text(), log.read_text())
    start = json.loads(log.read_text().splitlines()[0])
    assert start["secrets"] == ["from_file", "from_env"]
    for command in (("check", str(profile)), ("lint", str(profile)), ("lint", "--json", "--score", str(profile)),
                    ("audit", "--log", str(log), "--json")):
        shown = sandbox_cli(*command, env=env)
        assert shown.returncode in (0, 1), shown.stderr
        _assert_no_secret(shown.stdout, shown.stderr)
    assert 'name = "from_env"' in sandbox_cli("check", str(profile)).stdout


def test_failing_launches_name_the_secret_never_its_value(secret_setup, tmp_path, sandbox_cli):
    require("userns")
    profile, secret_file = secret_setup
    log = tmp_path / "audit.jsonl"
    env = {"SANDBOX_AUDIT_LOG": str(log)}
    result_json = tmp_path / "result.json"
    # the workload fails
    done = sandbox_cli("run", "--result-json", str(result_json), str(profile), "--", "/no/such/command", env=env)
    assert done.returncode == 127
    _assert_no_secret(done.stdout, done.stderr, log.read_text())
    # the source is gone: exit 125, named, nothing launched
    done = sandbox_cli("run", str(profile), "--", "/bin/true", env={**env, "WATCH_TEST_SECRET": ENV_VALUE,
                                                                   "PATH": os.environ["PATH"]})
    assert done.returncode == 0
    missing = dict(os.environ)
    missing.pop("WATCH_TEST_SECRET")
    missing["SANDBOX_AUDIT_LOG"] = str(log)
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "sandbox", "run", str(profile), "--", "/bin/true"],
                          capture_output=True, text=True, env=missing, timeout=60)
    assert proc.returncode == 125
    assert proc.stderr == ("sandbox: secrets: <secret from_env>: the launcher's environment has no variable "
                           "WATCH_TEST_SECRET (ENOENT)\n")
    secret_file.unlink()
    done = sandbox_cli("run", str(profile), "--", "/bin/true", env=env)
    assert done.returncode == 125 and f"<secret from_file>: {secret_file}: No such file" in done.stderr
    _assert_no_secret(done.stderr, log.read_text())
    ends = [json.loads(line) for line in log.read_text().splitlines() if '"end"' in line]
    assert "<secret from_file>" in ends[-1]["error"]


def test_the_value_is_read_at_each_launch(secret_setup):
    require("userns")
    profile, secret_file = secret_setup
    loaded = sandbox.load_profile(str(profile))
    first = sandbox.run(loaded, ["/bin/cat", "/run/secrets/from_file"], capture_output=True)
    secret_file.write_text("rotated")
    second = sandbox.run(loaded, ["/bin/cat", "/run/secrets/from_file"], capture_output=True)
    assert (first.stdout, second.stdout) == (FILE_VALUE.encode(), b"rotated")


def test_rootless_secrets_work_and_stay_out_of_the_environments(rootless, nobody_dir):
    require("system_python")
    (nobody_dir / "token").write_text(FILE_VALUE)
    os.chown(nobody_dir / "token", 65534, 65534)
    (nobody_dir / "token").chmod(0o400)
    profile = nobody_dir / "p.toml"
    profile.write_text(f'extends = "untrusted"\n[landlock]\nenabled = false\n'
                       f'[[secrets]]\nname = "from_file"\nfile = "{nobody_dir}/token"\n'
                       f'[[secrets]]\nname = "from_env"\nenv = "WATCH_TEST_SECRET"\n')
    done = as_nobody([rootless.sandbox, "run", str(profile), "--", "/usr/bin/python3", "-c", INSIDE],
                     cwd=str(nobody_dir), timeout=60, env=nobody_env(nobody_dir, WATCH_TEST_SECRET=ENV_VALUE))
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert {name: f["value"] for name, f in seen["files"].items()} == {"from_env": ENV_VALUE, "from_file": FILE_VALUE}
    # Init's environment (a copy of the launcher's, with the variable) is blanked and closed,
    # Landlock or not.
    assert seen["environ"]["1"].startswith("unreadable")
    _assert_no_secret(json.dumps(seen["environ"]), json.dumps(seen["env"]), done.stderr,
                      (nobody_dir / "audit.jsonl").read_text())


def test_secret_entries_are_checked_when_the_profile_loads(tmp_path):
    def problems(*secrets, **extra):
        with pytest.raises(ProfileError) as caught:
            sandbox.profile_from_dict({"extends": "untrusted", "secrets": list(secrets), **extra})
        return str(caught.value)
    assert "exactly one of file" in problems({"name": "a"})
    assert "exactly one of file" in problems({"name": "a", "file": "/etc/hostname", "env": "X"})
    assert "a name used once" in problems({"name": "a", "env": "X"}, {"name": "a", "env": "Y"})
    assert "secrets[0].name" in problems({"name": "../x", "env": "X"})
    assert "secrets[0].env" in problems({"name": "a", "env": "1X"})
    assert "outside /run/secrets" in problems({"name": "a", "env": "X"},
                                              filesystem={"tmpfs": [{"target": "/run/secrets"}]})
    assert "namespaces.mount" in problems({"name": "a", "env": "X"}, namespaces={"mount": False},
                                          filesystem={"mounts": [], "tmpfs": [], "files": [], "symlinks": []})


def test_extends_replaces_a_secret_by_name(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text('extends = "untrusted"\n[[secrets]]\nname = "a"\nenv = "OLD"\n')
    child = tmp_path / "child.toml"
    child.write_text('extends = "base.toml"\n[[secrets]]\nname = "a"\nenv = "NEW"\n[[secrets]]\nname = "b"\nenv = "B"\n')
    assert [(s.name, s.env) for s in sandbox.load_profile(str(child)).secrets] == [("a", "NEW"), ("b", "B")]


def test_a_secret_value_prints_as_its_name():
    value = SecretValue(b"hunter2", "db")
    assert (repr(value), str(value), f"{value}", "%s" % value, json.dumps({"v": value}, default=str)) == \
        ("<secret db>", "<secret db>", "<secret db>", "<secret db>", '{"v": "<secret db>"}')
    again = pickle.loads(pickle.dumps(value))
    assert bytes(again) == b"hunter2" and again.name == "db"


def test_the_examples_in_the_docs_load(tmp_path):
    """The [exec] and [[secrets]] examples of docs/monitoring.md and docs/profiles.md stay valid."""
    import re
    blocks = []
    for doc in ("docs/monitoring.md", "docs/profiles.md"):
        text = (ROOT / doc).read_text()
        blocks += [b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "[exec]" in b or "[[secrets]]" in b]
    assert len(blocks) >= 3
    for index, block in enumerate(blocks):
        path = tmp_path / f"example{index}.toml"
        path.write_text(block if "extends" in block else 'extends = "untrusted"\n' + block)
        # example paths need not exist on this machine: only their form is checked here
        path.write_text(path.read_text().replace('file = "/etc/ci/deploy_key"', f'file = "{path}"'))
        sandbox.load_profile(str(path))
