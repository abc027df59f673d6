"""Every set-up step fails cleanly (issue 13): each step of a launch, on both sides, made to fail as
the kernel would (sandbox/faults.py), gives one error naming the step and the errno, exit 125, no
traceback, an audit record, and leaves nothing behind; the launcher SIGKILLed at each point of the
protocol takes its sandbox with it and `gc` leaves nothing; a launcher at its own limits (no fds,
a full disk, no pids, no cgroup, no cache) says so in one line and never half-builds a sandbox."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid

import pytest

import sandbox
from sandbox import cgroups, faults
from sandbox.launcher import Launch

from conftest import processes_with, require, wait_until

# Steps every launch goes through when init is cloned straight into its namespaces (the default
# from a single-threaded caller without supplementary groups).
CLONED_STEPS = ["parent-death signal", "file descriptors", "wait for id maps", "user and group ids", "init",
                "mount", "hostname", "network", "rlimits", "wait for cgroup placement", "cgroup namespace",
                "fork workload", "session", "capabilities", "working directory", "no_new_privs", "landlock",
                "start gate", "seccomp"]
# ... and those of the intermediate process A (a threaded caller, or root with groups to drop).
INTERMEDIATE_STEPS = ["supplementary groups", "user namespace", "namespaces", "fork init"]
MOUNT_KINDS = ["bind", "tmpfs", "proc", "devpts", "symlink", "file", "mask", "readonly"]
PARENT_STEPS = ["cgroup", "idmapped mount", "pipes", "fork", "id map", "cgroup placement"]


@pytest.fixture(autouse=True)
def _machine():
    require("root", "userns")


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _last_audit_end() -> dict:
    with open(os.environ["SANDBOX_AUDIT_LOG"]) as handle:
        ends = [json.loads(line) for line in handle if '"end"' in line]
    return ends[-1]


def _expect_failure(step_name: str, reported_step: str, err: int = errno.EPERM, profile="untrusted", **options):
    fds_before = _fds()
    with faults.injected(step_name, err):
        with pytest.raises(sandbox.SetupError) as failure:
            sandbox.run(profile, ["/bin/true"], capture_output=True, **options)
    assert failure.value.step == reported_step, failure.value
    assert failure.value.errno == err, failure.value
    assert _fds() == fds_before  # every descriptor the launch opened is closed again
    end = _last_audit_end()
    assert end["exit_code"] == 125 and reported_step in end["error"], end
    return failure.value


@pytest.mark.parametrize("step_name", CLONED_STEPS)
def test_each_child_step_fails_cleanly(step_name):
    _expect_failure(step_name, step_name)


@pytest.mark.parametrize("step_name", INTERMEDIATE_STEPS + ["parent-death signal", "wait for id maps"])
def test_each_step_of_the_intermediate_process_fails_cleanly(step_name):
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)  # a second thread: the launch goes through A
    thread.start()
    try:
        _expect_failure(step_name, step_name)
    finally:
        stop.set()
        thread.join()


@pytest.mark.parametrize("kind", MOUNT_KINDS + ["pivot_root"])
def test_each_kind_of_mount_fails_cleanly(kind):
    name = kind if kind == "pivot_root" else f"mount:{kind}"
    failure = _expect_failure(name, "mount")
    assert (kind if kind == "pivot_root" else kind) in failure.message


@pytest.mark.parametrize("step_name", PARENT_STEPS)
def test_each_step_of_the_launcher_fails_cleanly(step_name):
    _expect_failure(step_name, step_name, errno.EAGAIN)


def test_the_subreaper_step_without_a_pid_namespace():
    profile = sandbox.profile_from_dict({"extends": "untrusted", "namespaces": {"pid": False},
                                         "filesystem": {"proc": False}})
    _expect_failure("child subreaper", "child subreaper", profile=profile)


def test_the_terminal_step():
    _expect_failure("terminal", "terminal", tty=True)


def test_a_failed_step_through_a_fork_server():
    with sandbox.ForkServer() as server:
        assert sandbox.run("untrusted", ["/bin/true"], fork_server=server).exit_code == 0  # started
        for step_name in ("user and group ids", "mount:bind", "landlock", "seccomp"):
            reported = "mount" if step_name.startswith("mount:") else step_name
            _expect_failure(step_name, reported, fork_server=server)
        assert sandbox.run("untrusted", ["/bin/true"], fork_server=server).exit_code == 0


def test_the_api_lifecycle_reports_the_step_at_create():
    with faults.injected("no_new_privs", errno.EINVAL):
        launch = Launch(sandbox.load_profile("untrusted"), ["/bin/true"])
        with pytest.raises(sandbox.SetupError) as failure:
            launch.create()
    assert failure.value.step == "no_new_privs" and launch.status == "deleted"


# ---------------------------------------------------------------- the same through the CLI

# The CLI's own code, run in a process of the test's with a fault injected: the only way in.
CLI_HARNESS = textwrap.dedent("""
    import sys
    from sandbox import faults
    step, err = sys.argv[1], int(sys.argv[2])
    faults.INJECTED[step] = err
    sys.argv = ["sandbox"] + sys.argv[3:]
    from sandbox.program import entry
    entry()
""")


@pytest.mark.parametrize("step_name", CLONED_STEPS + PARENT_STEPS + ["mount:bind", "pivot_root"])
def test_each_failure_is_one_line_and_125_from_the_cli(step_name):
    proc = subprocess.run([sys.executable, "-c", CLI_HARNESS, step_name, str(errno.EPERM), "run", "untrusted",
                           "--", "/bin/true"], capture_output=True, text=True, timeout=60)
    reported = "mount" if step_name.startswith("mount:") or step_name == "pivot_root" else step_name
    assert proc.returncode == 125, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"sandbox: {reported}: ") and lines[0].endswith("(EPERM)"), lines
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- the launcher killed at each point

KILL_HARNESS = textwrap.dedent("""
    import sys, threading
    import sandbox
    from sandbox import faults
    point, marker, via_a = sys.argv[1], sys.argv[2], sys.argv[3] == "a"
    if via_a:
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    faults.KILL_AT.add(point)
    command = "exit 0" if point == "exit" else "sleep 60"
    sandbox.run("untrusted", ["/bin/sh", "-c", f"{command} # {marker}"], capture_output=True)
""")


def _in_cgroup_of(launcher_pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cgroup") as handle:
                    if f"sandbox-{launcher_pid}-" in handle.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


@pytest.mark.parametrize("point,via", [("cgroup created", "clone"), ("spawned", "clone"), ("created", "clone"),
                                       ("exec", "clone"), ("exit", "clone"), ("spawned", "a"), ("ready", "a"),
                                       ("init_pid", "a"), ("created", "a")])
def test_a_launcher_killed_at_any_point_takes_its_sandbox_along(point, via):
    marker = f"killed-{uuid.uuid4().hex[:10]}"
    proc = subprocess.Popen([sys.executable, "-c", KILL_HARNESS, point, marker, via], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, stderr
    assert wait_until(lambda: not processes_with(marker) and not _in_cgroup_of(proc.pid), 10), \
        (processes_with(marker), _in_cgroup_of(proc.pid))
    cgroups.gc()  # (or any other launch's: each collects what dead launchers left)
    left = [path for path in cgroups.leaked() if f"sandbox-{proc.pid}-" in path]
    assert not left, left
    with open("/proc/self/mountinfo") as handle:
        assert marker not in handle.read()


# ---------------------------------------------------------------- the launcher's own host under pressure

PRESSURE_HARNESS = textwrap.dedent("""
    import os, resource, sys
    # What the run path imports, imported first: with few descriptors left, an import could not
    # open its file, and this test is about the launch, not about Python's start-up.
    import sandbox, sandbox.cli, sandbox.cli_run, sandbox.launcher, sandbox.cgroups, sandbox.audit, sandbox.lint
    import sandbox.profile.dump, sandbox.seccomp, sandbox.seccomp.compile, sandbox.program
    sandbox.cgroups.detect()
    sandbox.load_profile("untrusted")
    mode = sys.argv[1]
    if mode == "nofile":
        used = len(os.listdir("/proc/self/fd")) - 1
        resource.setrlimit(resource.RLIMIT_NOFILE, (used + 2, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    elif mode == "pids":
        group = sys.argv[2]
        with open(os.path.join(group, "cgroup.procs"), "w") as handle:
            handle.write(str(os.getpid()))
        with open(os.path.join(group, "pids.max"), "w") as handle:
            handle.write("1")
    sys.argv = ["sandbox"] + sys.argv[3:]
    from sandbox.program import entry
    entry()
""")


def test_a_launcher_out_of_descriptors_fails_in_one_line():
    proc = subprocess.Popen([sys.executable, "-c", PRESSURE_HARNESS, "nofile", "", "run", "untrusted", "--",
                             "/bin/true"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 125, stderr
    line = stderr.strip()
    # The first step that needs a descriptor says so: checking the bind sources, or the pipes.
    assert line.startswith("sandbox: ") and line.endswith("(EMFILE)") and "\n" not in line, stderr
    assert not [p for p in cgroups.leaked() if f"sandbox-{proc.pid}-" in p]


def test_a_launcher_whose_cgroup_is_at_its_pids_limit_fails_in_one_line():
    require("cgroup_v1")
    base = os.path.join("/sys/fs/cgroup/pids", f"sbxtest-callerpids-{uuid.uuid4().hex[:8]}")
    os.mkdir(base)
    try:
        proc = subprocess.Popen([sys.executable, "-c", PRESSURE_HARNESS, "pids", base, "run", "untrusted", "--",
                                 "/bin/true"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 125, stderr
        assert stderr.strip().startswith("sandbox: fork: "), stderr
        assert stderr.strip().endswith("(EAGAIN)") and len(stderr.strip().splitlines()) == 1, stderr
        leftovers = [name for name in os.listdir(base) if name.startswith("sandbox-")]
        assert not leftovers, leftovers
    finally:
        for name in os.listdir(base):
            if name.startswith("sandbox-"):
                os.rmdir(os.path.join(base, name))
        wait_until(lambda: not open(os.path.join(base, "cgroup.procs")).read().strip(), 5)
        os.rmdir(base)
    for hierarchy_leftover in [p for p in cgroups.leaked() if f"sandbox-{proc.pid}-" in p]:
        pytest.fail(f"left {hierarchy_leftover}")


def test_a_full_audit_log_filesystem_is_a_warning(tmp_path):
    require("system_python")
    log_dir = tmp_path / "full"
    log_dir.mkdir()
    script = (f"mount -t tmpfs -o size=16k tmpfs {log_dir} && head -c 16384 /dev/zero > {log_dir}/filler 2>/dev/null; "
              f"SANDBOX_AUDIT_LOG={log_dir}/audit.jsonl exec {sys.executable} -m sandbox run untrusted -- /bin/echo ran")
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ran\n"
    assert "audit log" in proc.stderr and "No space left on device" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unwritable_cache_directory_changes_nothing(sandbox_cli):
    proc = sandbox_cli("run", "untrusted", "--", "/bin/echo", "ran", env={"XDG_CACHE_HOME": "/proc/self"})
    assert proc.returncode == 0 and proc.stdout == "ran\n"
    assert proc.stderr == "", proc.stderr
