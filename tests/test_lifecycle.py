"""The launch as a lifecycle: create (the workload held at the start gate), start, wait, delete, in
one process and, detached, across processes as the OCI runtime uses it. Real launches only."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import sandbox
from sandbox import cgroups, faults, protocol
from sandbox.launcher import Launch

from conftest import require, wait_until

PY = "/usr/bin/python3"


@pytest.fixture(autouse=True)
def _machine():
    require("userns")


def _ci_profile(directory):
    os.chown(directory, 1000, 1000)  # a build user's workspace: root's is not idmapped (issue 20)
    return sandbox.profile_from_dict({"extends": "ci", "filesystem": {"mounts": [
        {"source": str(directory), "target": "/workspace", "mode": "rw"}]}})


def test_the_workload_waits_at_the_gate_until_start(world_dir):
    profile = _ci_profile(world_dir)
    launch = Launch(profile, ["/bin/sh", "-c", "echo ran > /workspace/marker"], capture_output=True)
    launch.create()
    try:
        assert launch.status == "created" and launch.init_pid
        time.sleep(0.3)
        assert not (world_dir / "marker").exists()  # set up, but not run
        launch.start()
        result = launch.wait()
    finally:
        launch.delete()
    assert result.exit_code == 0, result
    assert (world_dir / "marker").read_text() == "ran\n"
    assert launch.status == "deleted"


def test_delete_of_a_created_sandbox_leaves_nothing(world_dir):
    launch = Launch(_ci_profile(world_dir), ["/bin/sh", "-c", "touch /workspace/never"])
    launch.create()
    init = launch.init_pid
    launch.delete()
    assert not (world_dir / "never").exists()
    assert wait_until(lambda: not os.path.exists(f"/proc/{init}"), 5)
    launch.delete()  # idempotent


def test_a_step_of_the_workload_that_fails_before_created_is_reported_by_create():
    with faults.injected("landlock", errno.EPERM):
        launch = Launch(sandbox.load_profile("untrusted"), ["/bin/true"])
        with pytest.raises(sandbox.SetupError) as failure:
            launch.create()
    assert failure.value.step == "landlock" and failure.value.errno == errno.EPERM
    assert launch.status == "deleted"


def test_the_lifecycle_refuses_steps_out_of_order():
    launch = Launch(sandbox.load_profile("untrusted"), ["/bin/true"])
    with pytest.raises(RuntimeError):
        launch.wait()
    with pytest.raises(RuntimeError):
        launch.start()
    launch.create(start=True)
    with pytest.raises(RuntimeError):
        launch.start()
    assert launch.wait().exit_code == 0
    launch.delete()


# ---------------------------------------------------------------- detached, across processes

_CREATOR = textwrap.dedent("""
    import json, os, sys
    import sandbox
    from sandbox.launcher import Launch
    fifo, name, argv, report = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
    gate = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    launch = Launch(sandbox.load_profile("untrusted"), argv, detached=True, start_gate=gate, cgroup_name=name)
    try:
        launch.create()
    except sandbox.SandboxError as exc:
        open(report, "w").write(json.dumps({"error": exc.one_line()}))
        sys.exit(125)
    open(report, "w").write(json.dumps({"init": launch.init_pid}))
    launch.delete()  # releases what this process holds; the sandbox lives on
""")

_ENGINE = textwrap.dedent("""
    # What an engine's monitor (conmon, containerd's shim) does around a runtime: it is the
    # subreaper that inherits the sandbox's init when the creating process exits.
    import ctypes, json, os, subprocess, sys, time
    ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
    fifo, name, argv, start_delay = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    # The sandbox keeps the creator's stdio (as a container keeps conmon's pipes): not ours to wait on.
    created = subprocess.run([sys.executable, "-c", sys.argv[5], fifo, name, argv, fifo + ".json"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report = json.loads(open(fifo + ".json").read()) if os.path.exists(fifo + ".json") else {}
    report["creator_exit"] = created.returncode
    if "init" in report:
        time.sleep(start_delay)
        report["alive_before_start"] = os.path.exists(f"/proc/{report['init']}")
        with open(fifo, "wb", buffering=0) as gate:  # what `sandbox-runtime start` does
            gate.write(b"g")
        pid, status = os.waitpid(report["init"], 0)
        report["status"] = os.waitstatus_to_exitcode(status)
    print(json.dumps(report))
""")


def _engine(tmp_path, argv, start_delay=0.2):
    fifo = tmp_path / "exec.fifo"
    os.mkfifo(fifo, 0o600)
    name = f"sbxtest-detached-{os.getpid()}-{os.urandom(3).hex()}"
    try:
        proc = subprocess.run([sys.executable, "-c", _ENGINE, str(fifo), name, json.dumps(argv), str(start_delay),
                               _CREATOR], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)
    finally:
        backend = cgroups.detect()
        cgroups.SandboxCgroup.attach(backend, name).destroy()


def test_a_detached_sandbox_outlives_its_creator_and_starts_from_another_process(tmp_path):
    report = _engine(tmp_path, ["/bin/sh", "-c", "exit 7"])
    assert report["creator_exit"] == 0, report
    assert report["alive_before_start"], report  # init waits for the gate with its creator gone
    assert report["status"] == 7, report  # init's exit status is the workload's


def test_a_detached_sandbox_reports_a_missing_command_at_create(tmp_path):
    report = _engine(tmp_path, ["/no/such/command"])
    assert report["creator_exit"] == 125
    assert "command not found" in report["error"], report


def test_a_detached_sandbox_killed_by_a_signal_exits_128_plus_n(tmp_path):
    report = _engine(tmp_path, ["/bin/sh", "-c", "kill -TERM $$"])
    assert report["status"] == 128 + signal.SIGTERM, report


# ---------------------------------------------------------------- timeouts: TERM, grace, KILL

def test_timeout_gives_sigterm_and_a_grace_period_first():
    script = "trap 'echo flushed; exit 3' TERM; while :; do sleep 0.05; done"
    result = sandbox.run("untrusted", ["/bin/sh", "-c", script], capture_output=True, timeout=0.5, kill_after=5)
    assert result.timed_out and result.exit_code == 124
    assert b"flushed" in result.stdout


def test_timeout_kills_what_ignores_sigterm_after_kill_after():
    started = time.monotonic()
    result = sandbox.run("untrusted", ["/bin/sh", "-c", "trap '' TERM; sleep 30"], capture_output=True,
                         timeout=0.3, kill_after=0.5)
    assert result.timed_out and result.exit_code == 124
    assert time.monotonic() - started < 10


def test_kill_after_is_a_profile_key():
    profile = sandbox.profile_from_dict({"extends": "untrusted", "limits": {"timeout": "1s", "kill_after": "0"}})
    assert profile.limits.kill_after == 0
    result = sandbox.run(profile, ["/bin/sh", "-c", "trap 'echo late' TERM; sleep 30"], capture_output=True)
    assert result.timed_out and b"late" not in result.stdout


# ---------------------------------------------------------------- the launcher's own memory

def test_captured_output_is_capped_and_the_result_says_so():
    result = sandbox.run("untrusted", ["/bin/sh", "-c", "head -c 50000000 /dev/zero; echo done >&2"],
                         capture_output=True, max_output=1 << 20)
    assert result.exit_code == 0
    assert len(result.stdout) == 1 << 20 and result.stdout_truncated
    assert result.stderr == b"done\n" and not result.stderr_truncated
    assert any("truncated" in w for w in result.warnings)


def test_output_beyond_the_cap_can_kill_instead():
    result = sandbox.run("untrusted", ["/bin/sh", "-c", "head -c 50000000 /dev/zero; sleep 30"],
                         capture_output=True, max_output=1 << 20, on_output_limit="kill")
    assert result.exit_code == 128 + signal.SIGKILL and result.stdout_truncated
    assert any("exceeded max_output" in w for w in result.warnings)


def test_a_big_output_does_not_grow_the_launcher():
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = sandbox.run("untrusted", ["/bin/sh", "-c", "head -c 300000000 /dev/zero"], capture_output=True)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert result.stdout_truncated
    assert grown_kib < 3 * (sandbox.launcher.DEFAULT_MAX_OUTPUT >> 10), grown_kib


def test_reported_violations_keep_a_bounded_sample():
    from sandbox.seccomp.notify import MAX_REPORTED_VALUES
    launch = Launch(sandbox.load_profile("untrusted"), [PY, "-c", textwrap.dedent("""
        import socket
        for family in range(100, 3100):
            try:
                socket.socket(family, socket.SOCK_STREAM)
            except OSError:
                pass
    """)], seccomp_mode="report", capture_output=True)
    result = launch.run()
    assert result.exit_code == 0, result.stderr
    socket_calls = [v for v in launch.recorded if v.syscall == "socket"]
    assert socket_calls and socket_calls[0].count >= 3000
    assert len(socket_calls[0].values) <= MAX_REPORTED_VALUES


# ---------------------------------------------------------------- init holds nothing of the caller

def test_init_shows_a_neutral_command_line_and_no_environment(monkeypatch):
    monkeypatch.setenv("SBX_CALLER_SECRET", "hunter2-caller-env")
    script = textwrap.dedent("""
        import json, os
        def read(path):
            try:
                return open(path, "rb").read().decode("latin-1")
            except OSError as exc:
                return f"error {exc.errno}"
        status = dict(l.split(":", 1) for l in open("/proc/1/status").read().splitlines() if ":" in l)
        print(json.dumps({"cmdline": read("/proc/1/cmdline"), "environ": read("/proc/1/environ"),
                          "mem": read("/proc/1/mem")[:10], "caps": status["CapEff"].strip(),
                          "bounding": status["CapBnd"].strip()}))
    """)
    result = sandbox.run("untrusted", [PY, "-c", script, "--deploy-token=hunter2-argv"], capture_output=True)
    seen = json.loads(result.stdout)
    assert seen["cmdline"].rstrip("\0") == "sandbox-init"
    assert "hunter2" not in json.dumps(seen)
    assert seen["environ"].startswith("error") or not seen["environ"].strip("\0")
    assert seen["mem"].startswith("error")
    assert int(seen["caps"], 16) == 0 and int(seen["bounding"], 16) == 0


def test_the_cli_caller_arguments_do_not_reach_the_sandbox(sandbox_cli):
    proc = sandbox_cli("run", "--env", "TOKEN=hunter2-cli", "untrusted", "--", "/bin/sh", "-c",
                       "tr '\\0' ' ' < /proc/1/cmdline")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "sandbox-init"


# ---------------------------------------------------------------- the pids limit

def test_hitting_the_pids_limit_is_reported():
    require("cgroup_v1")
    profile = sandbox.profile_from_dict({"extends": "untrusted", "limits": {"pids": 8}})
    result = sandbox.run(profile, ["/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 1 & done; wait"],
                         capture_output=True, timeout=20)
    assert result.pids_limit_hit, result
    assert any("process limit reached (8)" in w for w in result.warnings)
    assert result.to_dict()["pids_limit_hit"] is True


def test_the_protocol_has_a_created_message():
    assert protocol.CREATED == "created"
