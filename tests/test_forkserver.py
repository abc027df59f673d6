"""ForkServer: launches whose first process is forked by a helper give the same sandboxes as direct
ones, fall back when the caller's inheritable state differs, and leave nothing behind."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import uuid

import pytest

import sandbox
from sandbox.forkserver import process_state

from conftest import ROOT, as_nobody, nobody_env, processes_with, require, wait_until

PY = "/usr/bin/python3"

# What the workload sees of its isolation, as one JSON line.
PROBE = textwrap.dedent(r"""
    import json, os, socket
    st = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
    print(json.dumps({
        "ids": [os.getuid(), os.getgid(), os.getgroups()], "pid": os.getpid(), "ppid": os.getppid(),
        "uid_map": open("/proc/self/uid_map").read(),
        "status": {k: v.strip() for k, v in st.items()
                   if k.startswith(("Cap", "NoNewPrivs", "Seccomp", "SigIgn", "SigBlk"))},
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "mounts": sorted(l.split()[4] for l in open("/proc/self/mountinfo")),
        "hostname": socket.gethostname(), "cwd": os.getcwd(), "umask": os.umask(0),
        "env": dict(os.environ), "fds": sorted(int(f) for f in os.listdir("/proc/self/fd")),
    }))
""")


@pytest.fixture(autouse=True)
def _machine():
    require("userns")


@pytest.fixture
def server():
    with sandbox.ForkServer() as fork_server:
        yield fork_server
    assert fork_server.pid is None


def probe(**options) -> dict:
    result = sandbox.run("untrusted", [PY, "-c", PROBE], capture_output=True, **options)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result


def test_the_sandbox_is_the_same_as_a_direct_launch(server):
    direct, _ = probe()
    served, result = probe(fork_server=server)
    assert result.warnings == []
    assert served == direct
    assert served["pid"] == 2 and served["ppid"] == 1 and served["ids"][0] == 65534


def test_launches_go_through_the_server_and_it_reaps_them(server, monkeypatch):
    calls = []
    real = server.fork_intermediate
    monkeypatch.setattr(server, "fork_intermediate", lambda *a: calls.append(1) or real(*a))
    for code in (0, 3, 0):
        assert sandbox.run("untrusted", ["/bin/sh", "-c", f"exit {code}"], fork_server=server).exit_code == code
    assert len(calls) == 3
    children = f"/proc/{server.pid}/task/{server.pid}/children"
    assert wait_until(lambda: open(children).read().split() == [], 2.0), "the server kept children"


def test_streams_and_passed_descriptors_cross(server, tmp_path):
    stdin_r, stdin_w = os.pipe()
    extra_r, extra_w = os.pipe()
    os.write(stdin_w, b"from stdin\n")
    os.close(stdin_w)
    os.write(extra_w, b"from fd\n")
    os.close(extra_w)
    try:
        result = sandbox.run("untrusted", ["/bin/sh", "-c", f"cat; {PY} -c 'import os; print(os.read({extra_r}, 99).decode(), end=str())'; echo err >&2; "
                             "ls /proc/self/fd"],
                             stdin=stdin_r, capture_output=True, pass_fds=(extra_r,), fork_server=server)
    finally:
        os.close(stdin_r)
        os.close(extra_r)
    lines = result.stdout.decode().split("\n")
    assert lines[:2] == ["from stdin", "from fd"] and result.stderr == b"err\n"
    assert sorted(int(fd) for fd in lines[2:] if fd) == sorted({0, 1, 2, extra_r, 3})  # 3: ls's own


def test_timeout_kills_the_sandbox(server):
    marker = f"fs-timeout-{uuid.uuid4().hex[:8]}"
    result = sandbox.run("untrusted", ["/bin/sh", "-c", f"sleep 30; : {marker}"], timeout=0.5, fork_server=server)
    assert result.timed_out and result.exit_code == 124
    assert wait_until(lambda: not processes_with(marker), 2.0)


def test_seccomp_report_mode_passes_its_listener(server):
    result = sandbox.run("untrusted", [PY, "-c", "import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)"],
                         capture_output=True, seccomp_mode="report", fork_server=server)
    assert result.exit_code != 0
    assert any(v["syscall"] == "socket" for v in result.violations), result.violations


def test_a_different_caller_state_is_not_served(server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert server.differences() == []
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))
    try:
        assert server.differences() == ["RLIMIT_NOFILE"]
        result = sandbox.run("untrusted", ["/bin/true"], fork_server=server)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert result.exit_code == 0
    assert any("fork server not used" in w and "RLIMIT_NOFILE" in w for w in result.warnings), result.warnings


def test_state_covers_what_a_fork_inherits():
    state = process_state()
    assert {"Uid", "Gid", "Groups", "CapEff", "CapBnd", "NoNewPrivs", "Seccomp", "ns/user", "ns/mnt",
            "ns/pid_for_children", "RLIMIT_NOFILE", "root"} <= set(state)


def test_concurrent_launches_share_one_server(server):
    outputs, errors = {}, []

    def worker(n):
        try:
            for round_ in range(3):
                result = sandbox.run("untrusted", ["/bin/sh", "-c", f"echo {n}-{round_}"], capture_output=True,
                                     fork_server=server)
                outputs[(n, round_)] = result.stdout
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert outputs == {(n, r): f"{n}-{r}\n".encode() for n in range(4) for r in range(3)}


def test_closed_server_refuses_with_a_setup_error():
    server = sandbox.ForkServer()
    assert sandbox.run("untrusted", ["/bin/true"], fork_server=server).exit_code == 0
    pid = server.pid
    server.close()
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    with pytest.raises(sandbox.SetupError, match="fork server"):
        sandbox.run("untrusted", ["/bin/true"], fork_server=server)


def test_sandboxes_die_with_the_caller():
    """SIGKILL the caller: its server sees the end of its socket and exits; A's parent-death signal
    then takes each sandbox down."""
    marker = f"fs-orphan-{uuid.uuid4().hex[:10]}"
    script = textwrap.dedent(f"""
        import sys, threading, sandbox
        server = sandbox.ForkServer()
        threading.Thread(target=sandbox.run, args=("untrusted", ["/bin/sh", "-c", "echo ready; sleep 1000; : {marker}"]),
                         kwargs={{"fork_server": server}}, daemon=True).start()
        threading.Event().wait()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=str(ROOT))
    try:
        assert proc.stdout.readline() == b"ready\n"
        assert processes_with(marker)
        proc.kill()
        proc.wait()
        assert wait_until(lambda: not processes_with(marker), 3.0), "the sandbox outlived its caller"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)
        from sandbox import cgroups
        wait_until(lambda: not cgroups.gc() and not list(cgroups.leaked()), 2.0)


def test_rootless_caller(rootless, nobody_dir):
    script = textwrap.dedent("""
        import json, sandbox
        with sandbox.ForkServer() as server:
            result = sandbox.run("untrusted", ["/bin/sh", "-c", "id -u; cat /proc/self/uid_map"], capture_output=True,
                                 fork_server=server)
        print(json.dumps([result.exit_code, result.stdout.decode(), [w for w in result.warnings if "fork" in w]]))
    """)
    done = as_nobody([rootless.python, "-c", script], cwd=str(nobody_dir), env=nobody_env(nobody_dir))
    assert done.returncode == 0, done.stderr
    code, out, warnings = json.loads(done.stdout.splitlines()[-1])
    assert code == 0 and warnings == []
    assert out.split("\n")[0] == "65534" and out.split()[1:3] == ["65534", "65534"]


def test_a_caller_without_stdin():
    script = textwrap.dedent("""
        import os, sandbox
        os.close(0)
        listing = "ls -l /proc/self/fd | grep -c ' [0-9]* -> '; ls -l /proc/self/fd/0"
        direct = sandbox.run("untrusted", ["/bin/sh", "-c", listing], capture_output=True)
        with sandbox.ForkServer() as server:
            served = sandbox.run("untrusted", ["/bin/sh", "-c", listing], capture_output=True, fork_server=server)
        print((served.stdout, served.stderr, served.exit_code) == (direct.stdout, direct.stderr, direct.exit_code),
              served.warnings)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(ROOT))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True []"  # fd 0 stays closed, as in a direct launch


def test_failures_leave_no_descriptors_behind(server):
    sandbox.run("untrusted", ["/bin/true"], fork_server=server)
    caller, helper = len(os.listdir("/proc/self/fd")), len(os.listdir(f"/proc/{server.pid}/fd"))
    for n in range(12):
        argv = (["/nonexistent"] if n % 4 == 0 else ["/bin/sh", "-c", "sleep 5"] if n % 3 == 0
                else ["/bin/sh", "-c", f"exit {n % 3}"])
        try:
            sandbox.run("untrusted", argv, fork_server=server, capture_output=bool(n % 2),
                        timeout=0.2 if n % 3 == 0 else None)
        except sandbox.ExecError:
            pass
    assert len(os.listdir("/proc/self/fd")) == caller
    assert len(os.listdir(f"/proc/{server.pid}/fd")) == helper
    assert wait_until(lambda: open(f"/proc/{server.pid}/task/{server.pid}/children").read().split() == [], 2.0)


def test_single_threaded_fork_skips_pythons_at_fork_handlers():
    """_libc.fork_single_threaded (A, init and the server fork with it): a working Python child,
    without the at-fork handlers that only matter when other threads exist."""
    script = textwrap.dedent("""
        import os, sys
        from sandbox import _libc
        os.register_at_fork(after_in_child=lambda: os.write(1, b"handler ran\\n"))
        pid = _libc.fork_single_threaded()
        if pid == 0:
            os.write(1, ("child " + str(sum(range(10)))).encode() + b"\\n")
            os._exit(7)
        print("exit", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(ROOT))
    assert done.stdout.splitlines() == ["child 45", "exit 7"], done.stdout + done.stderr


def test_a_forked_copy_of_the_caller_launches_directly():
    """The copy shares the caller's socket to the server: it must not use it."""
    script = textwrap.dedent("""
        import os, sandbox
        server = sandbox.ForkServer()
        sandbox.run("untrusted", ["/bin/true"], fork_server=server)
        pid = os.fork()
        if pid == 0:
            result = sandbox.run("untrusted", ["/bin/sh", "-c", "exit 4"], fork_server=server)
            print(result.exit_code, [w for w in result.warnings if "fork server" in w], flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        print(sandbox.run("untrusted", ["/bin/true"], fork_server=server).warnings)
        server.close()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(ROOT))
    assert done.returncode == 0, done.stderr
    child, parent = done.stdout.splitlines()
    assert child == "4 ['fork server not used, forked directly: this process is a forked copy of the one that " \
                    "started the server']", child
    assert parent == "[]"
