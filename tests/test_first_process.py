"""A launch's first process: init itself, cloned straight into the new namespaces, when the
forking process has one thread and no supplementary groups; otherwise the intermediate A. Both
give the same sandbox, and whatever stops the clone (threads, root's groups, a container without
clone3) falls back to A."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import sandbox
from sandbox import child

from conftest import AS_NOBODY, nobody_env, require, wait_until

# Launches one sandbox whose workload reports what it is and then waits for a line on stdin, so
# that the test can look at the launcher's process tree meanwhile.
LAUNCHER = textwrap.dedent(r"""
    import os, sys, threading
    import sandbox
    mode = sys.argv[1]
    if mode == "threaded":
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    if mode == "no-clone3":  # as under Docker's default seccomp profile
        import pyseccomp
        refuse = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
        refuse.add_rule(pyseccomp.ERRNO(38), "clone3")  # ENOSYS
        refuse.load()
    script = ('import os; print(open("/proc/self/status").read().split("Groups:")[1].split(chr(10))[0].strip()'
              ' + "|" + str(os.getppid()), flush=True); input()')
    if mode == "cli":
        sys.argv = ["sandbox", "run", "-q", "untrusted", "--", "/usr/bin/python3", "-c", script]
        from sandbox.program import entry
        entry()
    if mode == "server":
        with sandbox.ForkServer() as server:
            result = sandbox.run("untrusted", ["/usr/bin/python3", "-c", script], fork_server=server)
            assert not result.warnings, result.warnings
            sys.exit(result.exit_code)
    result = sandbox.run("untrusted", ["/usr/bin/python3", "-c", script])
    sys.exit(result.exit_code)
""")


def _nspid(pid: int) -> list[str]:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("NSpid:"):
                return line.split()[1:]
    return []


def launch_and_look(mode: str, prefix: tuple[str, ...] = (), python: str = sys.executable, **popen) -> dict:
    """Run LAUNCHER in `mode`; while its workload waits, see what the launcher's first child is."""
    process = subprocess.Popen([*prefix, python, "-c", LAUNCHER, mode], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    try:
        line = process.stdout.readline().strip()
        assert line, process.stderr.read()
        groups, ppid = line.split("|")
        launcher = process.pid
        if mode == "server":  # the server is the launcher's child, and the sandbox the server's
            launcher = int(open(f"/proc/{launcher}/task/{launcher}/children").read().split()[0])
        children = open(f"/proc/{launcher}/task/{launcher}/children").read().split()
        assert len(children) == 1, children
        first = int(children[0])
        first_is_init = _nspid(first)[-1:] == ["1"]  # pid 1 of its own pid namespace
        process.stdin.write("\n")
        process.stdin.flush()
        assert process.wait(30) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            stream.close()
    return {"first_is_init": first_is_init, "groups": groups, "workload_ppid": int(ppid)}


@pytest.fixture(autouse=True)
def _machine():
    require("userns", "system_python")


def test_a_single_threaded_launcher_clones_init_directly():
    seen = launch_and_look("plain")
    assert seen["first_is_init"] and seen["workload_ppid"] == 1


def test_a_rootless_launcher_clones_init_directly(rootless, nobody_dir):
    seen = launch_and_look("plain", prefix=tuple(AS_NOBODY), python=rootless.python, cwd="/",
                           env=nobody_env(nobody_dir))
    assert seen["first_is_init"] and seen["workload_ppid"] == 1


def test_a_threaded_launcher_forks_the_intermediate():
    seen = launch_and_look("threaded")
    assert not seen["first_is_init"] and seen["workload_ppid"] == 1


def test_without_clone3_the_launch_falls_back_to_the_intermediate():
    require("seccomp")
    seen = launch_and_look("no-clone3")
    assert not seen["first_is_init"] and seen["workload_ppid"] == 1


def test_root_with_supplementary_groups_goes_through_the_intermediate_which_drops_them():
    require("root", "setpriv")
    seen = launch_and_look("plain", prefix=("setpriv", "--groups", "4,27", "--"))
    assert seen["groups"] == ""  # not even as the overflow gid: they were dropped before unshare
    assert not seen["first_is_init"]


@pytest.mark.parametrize("mode", ["cli", "server"])
def test_root_with_groups_still_clones_through_the_cli_or_a_fork_server(mode):
    """Both are processes of ours: they shed root's groups themselves (no sandbox gets them)."""
    require("root", "setpriv")
    seen = launch_and_look(mode, prefix=("setpriv", "--groups", "4,27", "--"))
    assert seen["groups"] == ""
    assert seen["first_is_init"] and seen["workload_ppid"] == 1


def test_root_without_groups_clones_and_the_workload_has_none():
    require("root", "setpriv")
    seen = launch_and_look("plain", prefix=("setpriv", "--clear-groups", "--"))
    assert seen["first_is_init"] and seen["groups"] == ""


def test_a_fork_server_clones_init_too():
    with sandbox.ForkServer() as server:
        seen = []
        real = server.fork_intermediate
        server.fork_intermediate = lambda *a: seen.append(real(*a)) or seen[-1]
        result = sandbox.run("untrusted", ["/bin/true"], fork_server=server)
        assert result.exit_code == 0 and result.warnings == []
        assert seen and seen[0][2] is True  # (pid, pidfd, cloned)


@pytest.mark.parametrize("parent_alive", [True, False])
def test_cloned_init_dies_if_its_parent_died_before_the_death_signal_was_armed(parent_alive):
    """Init is outside its parent's pid namespace (getppid() is 0): the parent's pidfd tells."""
    parent = subprocess.Popen(["sleep", "30"])
    pidfd = os.pidfd_open(parent.pid)
    try:
        if not parent_alive:
            parent.kill()
            assert wait_until(lambda: os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                              is not None, 5.0)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                ctx = _context(parent_pidfd=pidfd, message_fd=w)
                child._arm_parent_death_signal(ctx)
                os._exit(0)
            finally:
                os._exit(99)
        os.close(w)
        _, status = os.waitpid(pid, 0)
        os.close(r)
        assert os.waitstatus_to_exitcode(status) == (0 if parent_alive else child.SETUP_FAILED)
    finally:
        os.close(pidfd)
        if parent.poll() is None:
            parent.send_signal(signal.SIGKILL)
        parent.wait()


def _context(**fields) -> child.ChildContext:
    base = dict(argv=("/bin/true",), env={}, cwd="/", uid=0, gid=0, hostname=None, new_user_ns=False,
                unshare_flags=0, new_cgroup_ns=False, new_pid_ns=False, new_net_ns=False, plan=None,
                rlimits=(), umask=0o22, keep_caps=(), new_session=False, landlock_rules=None,
                landlock_best_effort=False, seccomp_bpf=None, message_fd=-1, go_fd=-1, placed_fd=-1,
                parent_pid=os.getpid())
    base.update(fields)
    return child.ChildContext(**base)


def test_the_same_sandbox_either_way():
    """What the workload sees does not depend on which first process made it."""
    probe = ("import json, os; st = open('/proc/self/status').read(); "
             "print(json.dumps([os.getpid(), os.getppid(), os.getuid(), os.getgroups(), "
             "open('/proc/self/uid_map').read(), [l for l in st.splitlines() if l.startswith(('Cap', 'NoNewPrivs', "
             "'Seccomp'))], sorted(l.split()[4] for l in open('/proc/self/mountinfo'))]))")
    outputs = []
    for mode in ("plain", "threaded"):
        code = textwrap.dedent(f"""
            import sys, threading, sandbox
            if {mode!r} == "threaded":
                threading.Thread(target=threading.Event().wait, daemon=True).start()
            r = sandbox.run("untrusted", ["/usr/bin/python3", "-c", {probe!r}], capture_output=True)
            sys.stdout.write(r.stdout.decode()); sys.exit(r.exit_code)
        """)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]


SPAWN = textwrap.dedent(r"""
    import json, os, sys
    from sandbox import child
    target = sys.argv[1]
    fd = os.open(target, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    ctx = child.ChildContext(
        argv=("/bin/true",), env={}, cwd="/", uid=0, gid=0, hostname=None, new_user_ns=False,
        unshare_flags=0, new_cgroup_ns=False, new_pid_ns=False, new_net_ns=False, plan=None, rlimits=(),
        umask=0o22, keep_caps=(), new_session=False, landlock_rules=None, landlock_best_effort=False,
        seccomp_bpf=None, message_fd=2, go_fd=go_r, placed_fd=-1, parent_pid=os.getpid())
    pid, pidfd, in_cgroup = child.spawn(ctx, lambda: os.close(go_w), os.fork, cgroup_fd=fd)
    where = open(f"/proc/{pid}/cgroup").read().split("0::")[1].split()[0]
    os.close(go_w)  # the child sees EOF instead of its go, and gives up
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"cloned": pidfd >= 0, "in_cgroup": in_cgroup, "where": where,
                      "status": os.waitstatus_to_exitcode(status)}))
""")


def _spawn_into(directory: str) -> dict:
    done = subprocess.run([sys.executable, "-c", SPAWN, directory], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_init_is_cloned_straight_into_the_sandboxs_v2_cgroup():
    from sandbox import cgroups
    base = cgroups.detect().v2
    if base is None:
        pytest.skip("no writable cgroup v2 directory here")
    target = os.path.join(base, f"sandbox-test-{os.getpid()}-clone-into")
    os.mkdir(target)
    try:
        seen = _spawn_into(target)
    finally:
        assert wait_until(lambda: not open(os.path.join(target, "cgroup.procs")).read(), 5.0)
        os.rmdir(target)
    assert seen["cloned"] and seen["in_cgroup"]
    assert seen["where"].endswith(os.path.basename(target))
    assert seen["status"] == child.SETUP_FAILED


def test_a_directory_that_is_no_cgroup_is_refused_by_the_kernel_and_init_starts_where_we_are(tmp_path):
    seen = _spawn_into(str(tmp_path))
    assert seen["cloned"] and not seen["in_cgroup"]
    assert seen["where"] == open("/proc/self/cgroup").read().split("0::")[1].split()[0]
    assert seen["status"] == child.SETUP_FAILED


def test_a_first_process_that_fails_before_its_steps_still_says_why():
    from sandbox import protocol
    message_r, message_w = os.pipe()

    def prepare():
        raise RuntimeError("broken on purpose")
    pid, pidfd, _ = child.spawn(_context(message_fd=message_w), prepare, os.fork)
    os.close(message_w)
    try:
        message = protocol.Reader(message_r).next(time.monotonic() + 10)
    finally:
        os.close(message_r)
        os.waitpid(pid, 0)
        if pidfd >= 0:
            os.close(pidfd)
    assert message["kind"] == protocol.ERROR and message["step"] == "start"
    assert "broken on purpose" in message["message"]


# A launch as on a pure cgroup v2 machine (most users' machines): the sandbox's cgroup exists only
# in the unified tree, as this hybrid host's v1 hierarchies are hidden from the launcher. Init is
# then cloned into it and nothing is written to any cgroup.procs.
PURE_V2 = textwrap.dedent(r"""
    import dataclasses, json, os, sys
    import sandbox
    from sandbox import cgroups, child
    hybrid = cgroups.detect()
    cgroups.detect = lambda: dataclasses.replace(hybrid, kind="v2", v1={})
    seen = {}
    real_spawn = child.spawn
    def spawn(*args, **kwargs):
        pid, pidfd, in_cgroup = real_spawn(*args, **kwargs)
        seen.update(in_cgroup=in_cgroup, cgroup=open(f"/proc/{pid}/cgroup").read())  # before its go
        return pid, pidfd, in_cgroup
    child.spawn = spawn
    writes = []
    real_write = cgroups._fs.write
    cgroups._fs.write = lambda path, value: writes.append(path) or real_write(path, value)
    result = sandbox.run("untrusted", ["/bin/sh", "-c", "exit 7"])
    print(json.dumps({**seen, "exit": result.exit_code, "procs_writes": [w for w in writes if "procs" in w],
                      "warnings": result.warnings}))
""")


def test_on_pure_v2_init_is_born_in_the_sandboxs_cgroup_and_nothing_is_migrated():
    from sandbox import cgroups
    if cgroups.detect().v2 is None:
        pytest.skip("no writable cgroup v2 directory here")
    done = subprocess.run([sys.executable, "-c", PURE_V2], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["exit"] == 7
    assert seen["in_cgroup"]
    unified = [line for line in seen["cgroup"].splitlines() if line.startswith("0::")][0]
    assert os.path.basename(unified).startswith("sandbox-")
    assert seen["procs_writes"] == []


def test_cgroup_priming_is_gone_from_the_kernel_once_stopped():
    """`sandbox run` primes the cgroup lock from a thread (sandbox/cgprime.py) and stops it before
    the launch: the thread must be gone as the kernel counts threads, or the launch forks A instead
    of cloning init (seen once under a loaded CI run). Checked where there is priming (v1)."""
    from sandbox import _libc, cgprime
    for _ in range(20):
        before = _libc.thread_count()
        cgprime.start()
        cgprime.stop()
        assert _libc.thread_count() == before
