"""Safe-listed executables: `[exec] allow`, enforced by Landlock's execute right, on real runs."""
from __future__ import annotations

import json
import os
import textwrap

import pytest

from conftest import as_nobody, nobody_env, require

import sandbox
from sandbox import execlist, landlock
from sandbox.errors import ProfileError

LOADER = "/lib64/ld-linux-x86-64.so.2"
PYTHON = ["/usr/bin/python3*", LOADER]

# Run inside: tries each argv and reports its exit status or the errno that refused it.
TRY = textwrap.dedent("""
    import errno, json, os, subprocess, sys
    out = {}
    for argv in json.loads(sys.argv[1]):
        try:
            out[argv[0]] = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        except OSError as exc:
            out[argv[0]] = errno.errorcode[exc.errno]
    print(json.dumps(out))
""")


def _profile(allow, base="untrusted", **extra):
    return sandbox.profile_from_dict({"extends": base, "exec": {"allow": list(allow)}, **extra})


def _attempts(profile, argvs, **options):
    result = sandbox.run(profile, ["/usr/bin/python3", "-c", TRY, json.dumps(argvs)], capture_output=True,
                         **options)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result


@pytest.mark.parametrize("base", ["untrusted", "ci"])
def test_python3_runs_and_sh_is_refused_from_it(base, world_dir, monkeypatch):
    require("userns", "landlock", "system_python")
    monkeypatch.chdir(world_dir)  # ci binds the caller's directory at /workspace
    seen, _ = _attempts(_profile(PYTHON, base), [["/bin/sh", "-c", "true"], ["/usr/bin/python3", "-c", "0"],
                                                 ["/usr/bin/id"]])
    assert seen == {"/bin/sh": "EACCES", "/usr/bin/python3": 0, "/usr/bin/id": "EACCES"}


def test_without_the_list_everything_the_mounts_allow_runs():
    require("userns", "system_python")
    seen, _ = _attempts(sandbox.load_profile("untrusted"), [["/bin/sh", "-c", "true"]])
    assert seen == {"/bin/sh": 0}


def test_the_elf_interpreter_must_be_listed():
    require("userns", "landlock", "system_python")
    with pytest.raises(sandbox.ExecError) as caught:
        sandbox.run(_profile(["/usr/bin/python3*"]), ["/usr/bin/python3", "-c", "0"])
    assert caught.value.exit_code == 126


def test_a_script_needs_its_shebang_interpreter_listed(world_dir):
    require("userns", "landlock", "system_python")
    script = world_dir / "hello"
    script.write_text("#!/bin/sh\necho hello\n")
    script.chmod(0o755)
    bind = {"filesystem": {"mounts": [{"source": str(world_dir), "target": "/opt/tools"}]}}
    refused, _ = _attempts(_profile(PYTHON + ["/opt/tools/hello"], **bind), [["/opt/tools/hello"]])
    assert refused == {"/opt/tools/hello": "EACCES"}  # /bin/sh, its interpreter, is not listed
    ran, _ = _attempts(_profile(PYTHON + ["/opt/tools/hello", "/usr/bin/sh", "/usr/bin/dash"], **bind),
                       [["/opt/tools/hello"]])
    assert ran == {"/opt/tools/hello": 0}


def test_a_program_written_inside_cannot_run_even_under_a_writable_mount(world_dir, monkeypatch):
    """The attack the list exists for: download or write a program, then run it."""
    require("userns", "landlock", "system_python")
    monkeypatch.chdir(world_dir)
    code = textwrap.dedent("""
        import errno, os, shutil, subprocess
        out = {}
        for directory in ("/tmp", "/workspace", "/dev/shm"):
            path = directory + "/payload"
            try:
                shutil.copy("/usr/bin/true", path)
                os.chmod(path, 0o755)
                out[directory] = subprocess.run([path]).returncode
            except OSError as exc:
                out[directory] = errno.errorcode[exc.errno]
        print(out)
    """)
    result = sandbox.run(_profile(PYTHON, "ci"), ["/usr/bin/python3", "-c", code], capture_output=True)
    assert result.stdout.decode().strip() == "{'/tmp': 'EACCES', '/workspace': 'EACCES', '/dev/shm': 'EACCES'}"


def test_a_memfd_cannot_be_executed():
    """Landlock lets memfds through (an internal mount): the seccomp rule keeps them non-executable."""
    require("userns", "landlock", "seccomp", "system_python")
    code = textwrap.dedent("""
        import errno, os
        out = {}
        try:
            os.memfd_create("x", 0)
            out["plain"] = "created"
        except OSError as exc:
            out["plain"] = errno.errorcode[exc.errno]
        fd = os.memfd_create("sealed", 8)  # MFD_NOEXEC_SEAL: still usable as memory
        os.write(fd, open("/usr/bin/true", "rb").read())
        try:
            os.fchmod(fd, 0o755)
            out["chmod"] = "ok"
        except OSError as exc:
            out["chmod"] = errno.errorcode[exc.errno]
        pid = os.fork()
        if pid == 0:
            try:
                os.execve(fd, ["x"], {})
            except OSError as exc:
                os._exit(exc.errno)
        out["exec"] = errno.errorcode.get(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), "ran")
        print(out)
    """)
    result = sandbox.run(_profile(PYTHON), ["/usr/bin/python3", "-c", code], capture_output=True)
    assert result.stdout.decode().strip() == "{'plain': 'EPERM', 'chmod': 'EPERM', 'exec': 'EACCES'}", result.stderr
    # Without a list nothing changes for memfd users.
    plain = sandbox.run("untrusted", ["/usr/bin/python3", "-c", "import os; os.memfd_create('x', 0)"])
    assert plain.exit_code == 0


def test_a_tree_pattern_covers_files_created_later_but_not_a_directory_created_later(world_dir, monkeypatch):
    require("userns", "landlock", "system_python")
    monkeypatch.chdir(world_dir)
    (world_dir / "build").mkdir()
    for path in (world_dir, world_dir / "build"):
        os.chown(path, 1000, 1000)  # a build user's workspace: root's is not idmapped (issue 20)
    code = textwrap.dedent("""
        import errno, os, shutil, subprocess
        out = {}
        os.makedirs("/workspace/later", exist_ok=True)
        for path in ("/workspace/build/tool", "/workspace/later/tool"):
            shutil.copy("/usr/bin/true", path)
            os.chmod(path, 0o755)
            try:
                out[path] = subprocess.run([path]).returncode
            except OSError as exc:
                out[path] = errno.errorcode[exc.errno]
        print(out)
    """)
    profile = _profile(PYTHON + ["/workspace/build/**", "/workspace/later/**"], "ci")
    result = sandbox.run(profile, ["/usr/bin/python3", "-c", code], capture_output=True)
    assert result.stdout.decode().strip() == "{'/workspace/build/tool': 0, '/workspace/later/tool': 'EACCES'}"
    assert any("/workspace/later/** matches no existing directory" in w for w in result.warnings), result.warnings


def test_a_pattern_matching_nothing_is_a_warning_and_never_widens():
    require("userns", "landlock", "system_python")
    seen, result = _attempts(_profile(PYTHON + ["/nowhere/*"]), [["/bin/sh", "-c", "true"]])
    assert seen == {"/bin/sh": "EACCES"}
    assert any("/nowhere/* matches nothing inside the sandbox" in w for w in result.warnings)


def test_rootless_the_list_holds_too(rootless, nobody_dir):
    require("landlock", "system_python")
    profile = nobody_dir / "p.toml"
    profile.write_text('extends = "untrusted"\n[exec]\nallow = ["/usr/bin/python3*", "%s"]\n' % LOADER)
    done = as_nobody([rootless.sandbox, "run", str(profile), "--", "/usr/bin/python3", "-c", TRY,
                      json.dumps([["/bin/sh", "-c", "true"], ["/usr/bin/python3", "-c", "0"]])],
                     cwd=str(nobody_dir), timeout=60, env=nobody_env(nobody_dir))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"/bin/sh": "EACCES", "/usr/bin/python3": 0}


# ---------------------------------------------------------------- profile, rules, expansion

def test_patterns_are_checked_when_the_profile_loads():
    for bad, expected in (("usr/bin/make", "absolute"), ("/usr/**/make", "'**' only as the last component"),
                          ("/usr/bin/x**", "'**' only"), ("/usr/../bin/sh", "'..'")):
        with pytest.raises(ProfileError) as caught:
            _profile([bad])
        assert "exec.allow[0]" in str(caught.value) and expected in str(caught.value), str(caught.value)
    with pytest.raises(ProfileError, match="exec.allow: expected landlock.enabled = true"):
        _profile(PYTHON, landlock={"enabled": False})
    assert _profile(["/usr//bin/make", "/usr/bin/make"]).exec.allow == ("/usr/bin/make",)


def test_rules_strip_execute_everywhere_but_the_list():
    plain = landlock.rules_for(sandbox.load_profile("ci"))
    assert ("/", landlock.READ) in plain and ("/workspace", landlock.READ | landlock.WRITE) in plain
    listed = landlock.rules_for(_profile(["/usr/bin/make"], "ci"))
    assert all(access & landlock.ACCESS_FS_EXECUTE == 0 for _path, access, *kind in listed if not kind)
    assert listed[-1] == ("/usr/bin/make", landlock.ACCESS_FS_EXECUTE, landlock.PATTERN)
    assert landlock.rules_for(sandbox.profile_from_dict({"extends": "untrusted",
                                                          "landlock": {"enabled": False}})) is None


def test_expansion_in_a_tree(tmp_path):
    for name in ("python3", "python3.11", "python3-config", ".hidden3", "other"):
        (tmp_path / name).write_text("")
    (tmp_path / "python3.d").mkdir()
    matched, warnings = execlist.expand(f"{tmp_path}/python3*")
    assert [p for p, _ in matched] == [f"{tmp_path}/{n}" for n in ("python3", "python3-config", "python3.11")]
    assert not warnings  # the directory python3.d is never a match of '*'
    assert execlist.expand(f"{tmp_path}/**") == ([(str(tmp_path), True)], [])
    assert execlist.expand(f"{tmp_path}/python3.d")[1][0].endswith("write " + f"{tmp_path}/python3.d/** to allow "
                                                                   "what is beneath it")
    assert execlist.matches("/workspace/build/**", "/workspace/build/a/b")
    assert not execlist.matches("/usr/bin/python3*", "/usr/bin/sub/python3")


def test_interpreters_are_read_from_elf_and_shebang(tmp_path):
    require("system_python")
    assert execlist.interpreter_of(os.path.realpath("/usr/bin/python3")) == LOADER
    script = tmp_path / "s"
    script.write_text("#!/usr/bin/python3 -u\nprint(1)\n")
    assert execlist.interpreter_chain(str(script)) == ["/usr/bin/python3", LOADER]
    assert execlist.interpreter_of(str(tmp_path)) is None


# ---------------------------------------------------------------- verify and learn

def test_the_verifier_checks_the_list_and_catches_a_sandbox_that_does_not_hold():
    require("userns", "landlock", "seccomp", "system_python")
    from sandbox.verify import verify_profile
    listed = _profile(PYTHON)
    report = verify_profile(listed)
    checks = {r["id"]: r["status"] for r in report.results if r["id"].startswith("exec.")}
    assert checks == {"exec.unlisted": "PASS", "exec.written": "PASS", "exec.memfd": "PASS"}, report.render()
    # The same expectations against a sandbox without the list: every check fails.
    loose = verify_profile(sandbox.load_profile("untrusted"), against=listed)
    failed = {r["id"] for r in loose.results if r["status"] == "FAIL"}
    assert {"exec.unlisted", "exec.written", "exec.memfd"} <= failed


def test_the_verifier_adds_only_the_probes_own_interpreter():
    require("userns", "landlock", "system_python")
    from sandbox.verify import verify_profile
    report = verify_profile(_profile(["/usr/bin/true"]))
    assert any("the probe's own /usr/bin/python3" in w for w in report.warnings), report.warnings
    assert {r["id"]: r["status"] for r in report.results if r["id"] == "exec.unlisted"} == {"exec.unlisted": "PASS"}


def test_learn_proposes_the_list_and_the_learned_profile_enforces_it(tmp_path, sandbox_cli):
    require("userns", "landlock", "seccomp", "system_python")
    out = tmp_path / "learned.toml"
    command = ["/bin/sh", "-c", "python3 -c 'import subprocess; subprocess.run([\"ls\", \"/\"])' >/dev/null"]
    done = sandbox_cli("learn", "-o", str(out), "--", *command)
    assert done.returncode == 0, done.stderr
    learned = sandbox.load_profile(str(out))
    assert set(learned.exec.allow) == {"/bin/sh", "/usr/bin/python3", "/usr/bin/ls", LOADER}
    assert "executables" in done.stderr
    assert sandbox.run(learned, command).exit_code == 0
    refused = sandbox.run(learned, ["/bin/sh", "-c", "/usr/bin/id"], capture_output=True)
    assert refused.exit_code == 126 and b"Permission denied" in refused.stderr
