"""The tamper-evident audit trail: a hash chain that concurrent launchers extend and `audit verify` checks."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import as_nobody, require, run_in_child

import sandbox
from sandbox import audit



def _copy_log(log: Path, into: Path) -> Path:
    """The log's files (rotated ones and head too) copied, for one tampering each."""
    into.mkdir()
    for name in os.listdir(log.parent):
        if name.startswith(log.name):
            shutil.copy(log.parent / name, into / name)
    return into / log.name


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _verify(sandbox_cli, log: Path):
    return sandbox_cli("audit", "verify", "--log", str(log))


@pytest.fixture
def chained_log(tmp_path, sandbox_cli):
    """A log written by 32 launches at once (each `sandbox run` its own process)."""
    require("userns")
    log = tmp_path / "logs" / "audit.jsonl"
    env = {**os.environ, "SANDBOX_AUDIT_LOG": str(log)}
    procs = [subprocess.Popen([sys.executable, "-m", "sandbox", "run", "untrusted", "--", "/bin/sh", "-c",
                               f"exit {i % 4}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for i in range(32)]
    for i, proc in enumerate(procs):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == i % 4, err
    return log


def test_32_concurrent_launches_chain_and_verify(chained_log, sandbox_cli):
    records = [json.loads(line) for line in _lines(chained_log)]
    assert [r["seq"] for r in records] == list(range(1, 65))
    assert records[0]["prev"] == "0" * 64
    for before, after in zip(records, records[1:]):
        assert after["prev"] == audit.line_hash(json.dumps(before, sort_keys=True, separators=(",", ":")).encode())
    starts = {r["id"] for r in records if r["event"] == "start"}
    assert starts == {r["id"] for r in records if r["event"] == "end"} and len(starts) == 32
    done = _verify(sandbox_cli, chained_log)
    assert done.returncode == 0, done.stderr
    assert "intact: 64 records (seq 1-64) in 1 file" in done.stdout


def test_a_changed_byte_a_removed_line_and_a_swapped_pair_are_each_named(chained_log, tmp_path, sandbox_cli):
    # one changed byte (an exit status 3 -> 4: still valid JSON)
    changed = _copy_log(chained_log, tmp_path / "changed")
    lines = _lines(changed)
    index = next(i for i, line in enumerate(lines) if b'"exit_code":3' in line and i > 10)
    lines[index] = lines[index].replace(b'"exit_code":3', b'"exit_code":4')
    changed.write_bytes(b"".join(lines))
    done = _verify(sandbox_cli, changed)
    assert done.returncode == 1
    assert f"audit.jsonl:{index + 1} (seq {index + 1})" in done.stderr and "changed" in done.stderr, done.stderr

    # a byte that breaks the JSON
    broken = _copy_log(chained_log, tmp_path / "broken")
    data = bytearray(broken.read_bytes())
    data[len(_lines(broken)[0]) + 5] ^= 0x20
    broken.write_bytes(bytes(data))
    done = _verify(sandbox_cli, broken)
    assert done.returncode == 1 and "audit.jsonl:2" in done.stderr and "changed" in done.stderr, done.stderr

    # one removed line
    removed = _copy_log(chained_log, tmp_path / "removed")
    lines = _lines(removed)
    del lines[20]
    removed.write_bytes(b"".join(lines))
    done = _verify(sandbox_cli, removed)
    assert done.returncode == 1
    assert "audit.jsonl:21 (seq 22)" in done.stderr and "(seq 21) was removed" in done.stderr, done.stderr

    # one swapped pair
    swapped = _copy_log(chained_log, tmp_path / "swapped")
    lines = _lines(swapped)
    lines[30], lines[31] = lines[31], lines[30]
    swapped.write_bytes(b"".join(lines))
    done = _verify(sandbox_cli, swapped)
    assert done.returncode == 1
    assert "audit.jsonl:31 (seq 32)" in done.stderr and "reordered" in done.stderr, done.stderr

    # the last line removed: only the head knows
    truncated = _copy_log(chained_log, tmp_path / "truncated")
    truncated.write_bytes(b"".join(_lines(truncated)[:-1]))
    done = _verify(sandbox_cli, truncated)
    assert done.returncode == 1 and "records seq 64-64 were removed from the end" in done.stderr, done.stderr

    # the last line changed
    last = _copy_log(chained_log, tmp_path / "last")
    lines = _lines(last)
    lines[-1] = lines[-1].replace(b'"event":"end"', b'"event":"End"')
    last.write_bytes(b"".join(lines))
    done = _verify(sandbox_cli, last)
    assert done.returncode == 1 and "audit.jsonl:64 (seq 64)" in done.stderr and "changed" in done.stderr

    # and the JSON form of the outcome
    done = sandbox_cli("audit", "verify", "--json", "--log", str(swapped))
    assert done.returncode == 1 and json.loads(done.stdout)["ok"] is False


def test_an_append_after_tampering_keeps_the_evidence(tmp_path):
    """The writer chains on from its head, not from whatever the log now ends with."""
    log = audit.AuditLog(str(tmp_path / "audit.jsonl"))
    for i in range(4):
        log.append({"event": "start", "id": str(i)})
    path = Path(log.path)
    path.write_bytes(b"".join(_lines(path)[:-1]))  # the last record removed ...
    log.append({"event": "start", "id": "after"})  # ... then a launch
    outcome = audit.verify(log.path)
    assert not outcome.ok and "(seq 5)" in outcome.problem and "(seq 4) was removed" in outcome.problem


def test_rotation_chains_files_and_a_missing_file_is_detected(tmp_path):
    log = audit.AuditLog(str(tmp_path / "audit.jsonl"), max_bytes=400, keep=0)
    for i in range(20):
        log.append({"event": "start", "id": f"{i:04d}", "argv": ["/bin/true"]})
    files = audit.family(log.path)
    assert len(files) >= 4 and files[-1] == log.path and files[0].endswith(".1")
    for previous, current in zip(files, files[1:]):
        first = json.loads(Path(current).read_bytes().splitlines()[0])
        assert first["prev_file"] == os.path.basename(previous)
    outcome = audit.verify(log.path)
    assert outcome.ok and outcome.records == 20 and len(outcome.files) == len(files), outcome.problem
    assert [r["id"] for r in audit.read(log.path, rotated=True)] == [f"{i:04d}" for i in range(20)]
    os.unlink(files[1])
    outcome = audit.verify(log.path)
    assert not outcome.ok and "audit.jsonl.2 is missing" in outcome.problem


def test_rotation_keeps_the_newest_files_and_verify_notes_the_cut(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDBOX_AUDIT_MAX_BYTES", "300")
    monkeypatch.setenv("SANDBOX_AUDIT_KEEP", "2")
    log = audit.AuditLog(str(tmp_path / "audit.jsonl"))
    for i in range(30):
        log.append({"event": "start", "id": f"{i:04d}"})
    assert len(audit.family(log.path)) == 3
    outcome = audit.verify(log.path)
    assert outcome.ok, outcome.problem
    assert any("removed by rotation" in note for note in outcome.notes)
    assert outcome.last_seq == 30


def test_a_log_from_before_the_chain_is_continued(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text('{"event": "start", "id": "old"}\n{"event": "end", "id": "old"}\n')
    audit.AuditLog(str(path)).append({"event": "start", "id": "new"})
    outcome = audit.verify(str(path))
    assert outcome.ok and outcome.records == 1
    assert outcome.notes == ["2 records before the hash chain began are not protected by it"]


def test_a_short_write_is_taken_back(tmp_path):
    """A full file system (here RLIMIT_FSIZE) must not leave half a record in the chain."""
    log = audit.AuditLog(str(tmp_path / "audit.jsonl"))
    log.append({"event": "start", "id": "first"})

    def fill():
        import resource
        size = os.path.getsize(log.path)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 50, size + 50))
        try:
            log.append({"event": "start", "id": "x" * 200})
        except OSError as exc:
            return exc.errno
        return 0
    assert run_in_child(fill) != 0
    log.append({"event": "start", "id": "third"})
    outcome = audit.verify(log.path)
    assert outcome.ok and outcome.records == 2, outcome.problem


def test_a_directory_others_can_write_is_refused(tmp_path):
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    with pytest.raises(OSError, match="writable by no one else"):
        audit.AuditLog(str(directory / "audit.jsonl")).append({"event": "start"})
    # Sticky (like /tmp): others cannot replace our files there, but a file they made is refused.
    directory.chmod(0o1777)
    audit.AuditLog(str(directory / "audit.jsonl")).append({"event": "start"})
    planted = directory / "other.jsonl"
    planted.write_text("")
    os.chown(planted, 65534, 65534)
    with pytest.raises(OSError, match="not a file of uid"):
        audit.AuditLog(str(planted)).append({"event": "start"})
    planted = tmp_path / "own"
    planted.mkdir(mode=0o750)
    (planted / "audit.jsonl").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        audit.AuditLog(str(planted / "audit.jsonl")).append({"event": "start"})
    assert not (tmp_path / "elsewhere").exists()


# ---------------------------------------------------------------- the audit command

def test_audit_lists_and_filters(tmp_path, sandbox_cli):
    require("userns")
    log = tmp_path / "audit.jsonl"
    env = {"SANDBOX_AUDIT_LOG": str(log)}
    assert sandbox_cli("run", "untrusted", "--", "/bin/true", env=env).returncode == 0
    # an old launch, as if from yesterday: its records say when they were written
    stale = audit.AuditLog(str(log))
    stale.append({"event": "start", "id": "old", "time": "2000-01-01T00:00:00.000Z", "profile": "ci",
                  "argv": ["old"], "user": "root"})
    stale.append({"event": "end", "id": "old", "time": "2000-01-01T00:00:01.000Z", "exit_code": 3})
    done = sandbox_cli("audit", "--log", str(log), "--json")
    assert [json.loads(line)["argv"] for line in done.stdout.splitlines()] == [["/bin/true"], ["old"]]
    recent = sandbox_cli("audit", "--since", "1h", "--json", env=env)
    shown = [json.loads(line) for line in recent.stdout.splitlines()]
    assert [r["argv"] for r in shown] == [["/bin/true"]] and shown[0]["end"]["exit_code"] == 0
    assert "exit 3" in sandbox_cli("audit", "--log", str(log), "--profile", "ci").stdout
    assert sandbox_cli("audit", "--log", str(log), "--since", "1999-12-31T00:00", "-n", "1").stdout.count("\n") == 1
    bad = sandbox_cli("audit", "--log", str(log), "--since", "yesterday")
    assert bad.returncode == 125 and "--since" in bad.stderr
    assert sandbox_cli("audit", "verify", "--log", str(tmp_path / "nothing.jsonl")).returncode == 125


# ---------------------------------------------------------------- syslog, required, hidden

def test_records_are_forwarded_to_syslog(tmp_path):
    require("userns")
    address = str(tmp_path / "log.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    receiver.settimeout(5)
    try:
        log = tmp_path / "audit.jsonl"
        profile = sandbox.profile_from_dict({"extends": "untrusted", "audit": {
            "log": str(log), "syslog": True, "syslog_socket": address}})
        result = sandbox.run(profile, ["/bin/true"])
        assert result.exit_code == 0 and not result.warnings
        messages = [receiver.recv(65536), receiver.recv(65536)]
    finally:
        receiver.close()
    lines = log.read_bytes().splitlines()
    for message, line in zip(messages, lines):
        assert message.startswith(b"<86>sandbox[") and message.endswith(b"]: " + line)
    # No listener: the launch goes on, with a warning.
    os.unlink(address)
    result = sandbox.run(profile, ["/bin/true"])
    assert result.exit_code == 0 and any("not sent to syslog" in w for w in result.warnings)


def test_audit_required_refuses_to_launch_without_a_start_record(world_dir, sandbox_cli):
    require("userns")
    (world_dir / "a-file").write_text("")
    unwritable = world_dir / "a-file" / "audit.jsonl"  # ENOTDIR, even for root
    out = world_dir / "out"
    out.mkdir()
    os.chown(out, 1000, 1000)  # a build user's directory: root's is not idmapped (issue 20)
    profile = world_dir / "p.toml"
    profile.write_text(f'extends = "untrusted"\n[audit]\nrequired = true\nlog = "{unwritable}"\n'
                       f'[[filesystem.mounts]]\nsource = "{out}"\ntarget = "/out"\nmode = "rw"\n')
    done = sandbox_cli("run", str(profile), "--", "/bin/sh", "-c", "touch /out/ran")
    assert done.returncode == 125 and not (out / "ran").exists()
    assert done.stderr.count("\n") == 1 and str(unwritable) in done.stderr and "audit.required" in done.stderr
    with pytest.raises(sandbox.SetupError) as caught:
        sandbox.run(str(profile), ["/bin/true"])
    assert caught.value.step == "audit"
    # The default: a warning, and the launch runs.
    profile.write_text(profile.read_text().replace("required = true", "required = false"))
    done = sandbox_cli("run", str(profile), "--", "/bin/sh", "-c", "touch /out/ran")
    assert done.returncode == 0 and (out / "ran").exists() and "audit log" in done.stderr
    bad = sandbox.profile_from_dict
    with pytest.raises(sandbox.ProfileError, match="audit.required"):
        bad({"extends": "untrusted", "audit": {"required": True, "enabled": False}})


def test_the_audit_log_is_never_visible_inside(world_dir, sandbox_cli):
    require("userns")
    logs = world_dir / "state" / "sandbox"
    env = {"SANDBOX_AUDIT_LOG": str(logs / "audit.jsonl")}
    (world_dir / "state" / "note").parent.mkdir(exist_ok=True)
    (world_dir / "state" / "note").write_text("visible")
    show = "ls -A /host/state/sandbox; cat /host/state/note; cat /host/state/sandbox/audit.jsonl"
    for mode in ("ro", "rw"):
        done = sandbox_cli("run", "--bind", f"{world_dir}:/host:{mode}", "untrusted", "--", "/bin/sh", "-c", show,
                           env=env)
        assert done.stdout == "visible" and "No such file" in done.stderr, (done.stdout, done.stderr)
    for source in (logs, logs / "audit.jsonl"):
        done = sandbox_cli("run", "--bind", f"{source}:/x", "untrusted", "--", "/bin/true", env=env)
        assert done.returncode == 125 and "never visible inside a sandbox" in done.stderr, done.stderr
    # A log directory that does not exist yet is made and hidden before the workload could make it.
    fresh = {"SANDBOX_AUDIT_LOG": str(world_dir / "fresh" / "sandbox" / "audit.jsonl")}
    quiet = world_dir / "quiet.toml"
    quiet.write_text('extends = "untrusted"\n[audit]\nenabled = false\n')
    done = sandbox_cli("run", "--bind", f"{world_dir}:/host:rw", str(quiet), "--", "/bin/sh", "-c",
                       "mkdir /host/fresh/sandbox/planted", env=fresh)
    assert done.returncode == 1 and "Read-only file system" in done.stderr, done.stderr
    # A log in a directory it shares: the files are hidden one by one.
    shared = world_dir / "shared"
    shared.mkdir(mode=0o755)
    (shared / "data").write_text("data")
    env = {"SANDBOX_AUDIT_LOG": str(shared / "audit.jsonl")}
    assert sandbox_cli("run", "untrusted", "--", "/bin/true", env=env).returncode == 0
    done = sandbox_cli("run", "--bind", f"{shared}:/s:rw", "untrusted", "--", "/bin/sh", "-c",
                       "cat /s/data; echo; stat -c %F /s/audit.jsonl; cat /s/audit.jsonl; echo x >> /s/audit.jsonl",
                       env=env)
    # /dev/null on a nodev mount: there, unopenable
    assert done.stdout.splitlines() == ["data", "character special file"], done.stderr
    assert done.stderr.count("Permission denied") == 2
    assert audit.verify(str(shared / "audit.jsonl")).ok


def test_rootless_the_log_is_hidden_from_a_workload_of_the_same_uid(rootless, nobody_dir):
    """Rootless, the workload is the caller's uid: only the mask keeps it off the log."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(nobody_dir)}  # the default log: ~/.local/state/sandbox
    first = as_nobody([rootless.sandbox, "run", "untrusted", "--", "/bin/true"], cwd=str(nobody_dir), env=env,
                      timeout=60)
    assert first.returncode == 0, first.stderr
    assert (nobody_dir / ".local/state/sandbox/audit.jsonl").exists()
    done = as_nobody([rootless.sandbox, "run", "--bind", f"{nobody_dir}:/home:rw", "untrusted", "--", "/bin/sh",
                      "-c", "ls -A /home/.local/state/sandbox; echo forged >> /home/.local/state/sandbox/audit.jsonl"],
                     cwd=str(nobody_dir), env=env, timeout=60)
    assert done.stdout == "" and "Read-only file system" in done.stderr, (done.stdout, done.stderr)
    verified = as_nobody([rootless.sandbox, "audit", "verify"], cwd=str(nobody_dir), env=env, timeout=60)
    assert verified.returncode == 0 and "intact: 4 records" in verified.stdout, verified.stderr
