"""The sandboxed process's life: exit codes, timeouts, signals, reaping, death of the launcher,
standard streams and the CLI's overrides. Real launches only."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

import sandbox
from sandbox import cgroups

from conftest import require, wait_until

PY = "/usr/bin/python3"


@pytest.fixture(autouse=True)
def _machine():
    require("userns")


def run(argv, profile="untrusted", **options):
    return sandbox.run(profile, argv, capture_output=True, **options)


def _processes_with(marker: str) -> list[int]:
    """Live (non-zombie) host processes whose argv contains `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read()
            with open(f"/proc/{entry}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(entry))
    return found


def _in_pid_namespace(inode: int) -> list[int]:
    """Live host processes in the pid namespace with this inode."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/pid").st_ino != inode:
                continue
            with open(f"/proc/{entry}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        found.append(int(entry))
    return found


def _session(pid: int) -> int | None:
    """The session id of pid; None when it has exited meanwhile (short-lived subshells do)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[3])
    except FileNotFoundError:
        return None


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "sandbox", "run", *args]


# ---------------------------------------------------------------- exit codes

def test_exit_code_is_the_workloads():
    assert run(["/bin/sh", "-c", "exit 0"]).exit_code == 0
    result = run(["/bin/sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (result.exit_code, result.signal, result.timed_out) == (7, None, False)
    assert (result.stdout, result.stderr) == (b"out\n", b"err\n")  # capture_output


def test_death_by_signal_is_128_plus_n():
    result = run(["/bin/sh", "-c", "kill -TERM $$"])
    assert (result.exit_code, result.signal) == (128 + signal.SIGTERM, signal.SIGTERM)
    result = run(["/bin/sh", "-c", "kill -KILL $$"])
    assert (result.exit_code, result.signal) == (128 + signal.SIGKILL, signal.SIGKILL)


def test_workload_starts_with_default_signal_dispositions():
    """Python ignores SIGPIPE and SIGXFSZ for itself; the workload must not inherit that."""
    result = run(["/bin/sh", "-c", "grep -E '^Sig(Ign|Blk)' /proc/self/status; yes | head -1"])
    out = result.stdout.decode()
    assert "SigIgn:\t0000000000000000" in out and "SigBlk:\t0000000000000000" in out, out
    assert result.exit_code == 0 and b"Broken pipe" not in result.stderr, result.stderr  # yes died of SIGPIPE


def test_missing_command_is_127(sandbox_cli):
    with pytest.raises(sandbox.ExecError) as info:
        run(["/no/such/command"])
    assert info.value.exit_code == 127
    assert "/no/such/command: command not found" in str(info.value)
    with pytest.raises(sandbox.ExecError) as info:
        run(["no-such-command-on-path"])
    assert info.value.exit_code == 127
    proc = sandbox_cli("run", "untrusted", "--", "/no/such/command")
    assert proc.returncode == 127
    assert proc.stderr == "sandbox: /no/such/command: command not found (ENOENT)\n"


def test_non_executable_is_126(sandbox_cli):
    with pytest.raises(sandbox.ExecError) as info:
        run(["/etc/passwd"])  # a profile file, mode 0644
    assert info.value.exit_code == 126
    assert "/etc/passwd: not executable (mode 0644)" in str(info.value)  # what the file is, not just the errno
    proc = sandbox_cli("run", "untrusted", "--", "/etc/passwd")
    assert proc.returncode == 126
    assert proc.stderr.startswith("sandbox: /etc/passwd: not executable (mode 0644)") and proc.stderr.count("\n") == 1


def test_timeout_kills_the_whole_tree_including_daemons():
    marker = f"daemon-{uuid.uuid4().hex[:10]}"
    daemon = f"{PY} -c 'import time; time.sleep(100)' {marker}"
    started = time.monotonic()
    result = run(["/bin/sh", "-c", f"({daemon} &) ; sleep 30"], timeout=1)
    elapsed = time.monotonic() - started
    assert result.timed_out and result.exit_code == 124
    assert elapsed < 3.0, f"took {elapsed:.2f}s"
    assert wait_until(lambda: not _processes_with(marker), 2.0), "the double-forked daemon survived"


def test_setup_error_is_125_with_the_step_and_path(world_dir, sandbox_cli):
    profile = sandbox.profile_from_dict({"extends": "untrusted", "filesystem": {"mounts": [
        {"source": str(world_dir), "target": "/usr/sbx_cannot_exist"}]}})
    with pytest.raises(sandbox.SetupError) as info:
        run(["/bin/true"], profile)
    assert info.value.step == "mount"
    assert "/usr/sbx_cannot_exist" in info.value.message
    assert info.value.exit_code == 125
    proc = sandbox_cli("run", "--bind", f"{world_dir}:/usr/sbx_cannot_exist", "untrusted", "--", "/bin/true")
    assert proc.returncode == 125
    assert proc.stderr.startswith("sandbox: mount: ") and "/usr/sbx_cannot_exist" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- signals and process lifetime

def test_sigterm_to_the_launcher_reaches_the_workload():
    workload = "trap 'echo trapped-term; exit 3' TERM; echo ready; sleep 30 & wait"
    proc = subprocess.Popen(_cli("untrusted", "--", "/bin/sh", "-c", workload), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out == "trapped-term\n", err
    assert proc.returncode == 3


def test_api_forwards_signals_and_restores_handlers():
    """sandbox.run() in the main thread relays SIGUSR1 (sent to ourselves once the workload says it
    is ready) to the workload, and puts the caller's handlers back afterwards."""
    import threading
    before = signal.getsignal(signal.SIGUSR1)
    read_fd, write_fd = os.pipe()
    output = []

    def watch():
        with open(read_fd, "rb") as stream:
            for line in stream:
                output.append(line)
                if line == b"ready\n":
                    os.kill(os.getpid(), signal.SIGUSR1)  # the launcher is forwarding by now
    thread = threading.Thread(target=watch)
    thread.start()
    try:
        result = sandbox.run("untrusted", ["/bin/sh", "-c", "trap 'echo got-usr1; exit 9' USR1; echo ready; "
                                           "sleep 20 & wait"], stdout=write_fd, timeout=15)
    finally:
        os.close(write_fd)
        thread.join(5)
    assert result.exit_code == 9 and output == [b"ready\n", b"got-usr1\n"]
    assert signal.getsignal(signal.SIGUSR1) is before


def test_orphans_are_reaped_by_init():
    script = textwrap.dedent("""
        import json, os, time
        for _ in range(20):
            pid = os.fork()
            if pid == 0:          # middle process: leaves an orphan behind and exits
                if os.fork() == 0:
                    time.sleep(0.05)
                    os._exit(0)
                os._exit(0)
            os.waitpid(pid, 0)
        time.sleep(0.5)           # the orphans have exited by now; init must have reaped them
        zombies, alive = [], []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
                (zombies if fields[0] == "Z" else alive).append(int(entry))
        print(json.dumps([sorted(zombies), sorted(alive)]))
    """)
    result = run([PY, "-c", script])
    assert result.exit_code == 0, result.stderr
    zombies, alive = json.loads(result.stdout)
    assert zombies == [], "orphans were not reaped"
    assert alive == [1, 2], "init and the workload should be all that is left"


def test_background_children_die_with_the_workload():
    marker = f"bg-{uuid.uuid4().hex[:10]}"
    result = run(["/bin/sh", "-c", f"{PY} -c 'import time; time.sleep(100)' {marker} & "
                                    f"({PY} -c 'import time; time.sleep(100)' {marker} &); exit 5"], timeout=20)
    assert result.exit_code == 5 and not result.timed_out
    assert wait_until(lambda: not _processes_with(marker), 2.0), "background children outlived the workload"


def test_sandbox_dies_with_the_launcher():
    """SIGKILL the launcher: the parent-death signal must take the whole sandbox down."""
    marker = f"orphaned-{uuid.uuid4().hex[:10]}"
    workload = f"echo ready; ({PY} -c 'import time; time.sleep(1000)' &) ; sleep 1000; : {marker}"
    proc = subprocess.Popen(_cli("untrusted", "--", "/bin/sh", "-c", workload), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    inode = None
    try:
        assert proc.stdout.readline() == b"ready\n"
        shells = [pid for pid in _processes_with(marker)
                  if open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"/bin/sh")]
        assert shells
        inode = os.stat(f"/proc/{shells[0]}/ns/pid").st_ino
        assert inode != os.stat("/proc/self/ns/pid").st_ino
        assert wait_until(lambda: len(_in_pid_namespace(inode)) >= 4, 3.0)  # init, sh, sleep, python
        # the workload leads a session of its own, not the launcher's
        leaders = [pid for pid in shells if _session(pid) == pid]
        assert len(leaders) == 1 and _session(leaders[0]) != os.getsid(proc.pid)
        proc.kill()
        proc.wait()
        assert wait_until(lambda: not _in_pid_namespace(inode), 2.0), \
            f"still running after the launcher died: {_in_pid_namespace(inode)}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if inode is not None:
            for pid in _in_pid_namespace(inode):
                os.kill(pid, signal.SIGKILL)
        proc.stdout.close()
        proc.stderr.close()
        # the killed launcher could not remove its cgroup; the next launch would, do it now
        wait_until(lambda: not [p for p in cgroups.gc()] and not list(cgroups.leaked()), 2.0)


# ---------------------------------------------------------------- standard streams

def test_stdin_stdout_stderr_pass_through(tmp_path):
    data = b"line one\nline two\n" * 1000
    source = tmp_path / "in"
    source.write_bytes(data)
    with open(source, "rb") as stdin, open(tmp_path / "out", "wb") as stdout, \
            open(tmp_path / "err", "wb") as stderr:
        result = sandbox.run("untrusted", ["/bin/sh", "-c", "cat; echo to-stderr >&2"], stdin=stdin,
                             stdout=stdout, stderr=stderr)
    assert result.exit_code == 0
    assert (tmp_path / "out").read_bytes() == data
    assert (tmp_path / "err").read_bytes() == b"to-stderr\n"
    assert result.stdout is None and result.stderr is None


def test_capture_output_large(tmp_path):
    result = run([PY, "-c", "import sys; sys.stdout.write('x' * 300000); sys.stderr.write('y' * 70000)"])
    assert result.exit_code == 0
    assert result.stdout == b"x" * 300000 and result.stderr == b"y" * 70000


def test_cli_streams(sandbox_cli):
    proc = sandbox_cli("run", "-q", "untrusted", "--", "/bin/sh", "-c", "tr a-z A-Z; echo err >&2",
                       input="hello sandbox\n")
    assert proc.returncode == 0
    assert proc.stdout == "HELLO SANDBOX\n"
    assert proc.stderr == "err\n"


# ---------------------------------------------------------------- CLI overrides

def test_cli_env_bind_cwd(sandbox_cli, world_dir):
    data = world_dir / f"bind-{uuid.uuid4().hex[:8]}"
    data.mkdir(mode=0o755)
    (data / "file").write_text("bound content")
    os.chmod(data / "file", 0o644)
    rw = world_dir / f"rw-{uuid.uuid4().hex[:8]}"
    rw.mkdir()
    os.chmod(rw, 0o777)  # root's, without an id mapping: the sandbox writes as others may
    proc = sandbox_cli("run", "-q", "--env", "FOO=bar baz", "--bind", f"{data}:/data", "--bind", f"{rw}:/out:rw",
                       "--cwd", "/data", "untrusted", "--", "/bin/sh", "-c",
                       'echo "$FOO"; pwd; cat file; echo; echo x > file 2>/dev/null || echo ro; '
                       'echo written > /out/new && echo rw-ok')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "bar baz\n/data\nbound content\nro\nrw-ok\n"
    assert (rw / "new").read_text() == "written\n"
    assert (data / "file").read_text() == "bound content"


def test_cli_timeout(sandbox_cli):
    started = time.monotonic()
    proc = sandbox_cli("run", "-q", "--timeout", "1s", "untrusted", "--", "/bin/sh", "-c", "sleep 30")
    assert proc.returncode == 124
    assert "timeout" in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - started < 5


def test_cli_network_host_shares_the_host_stack(sandbox_cli):
    host_net = os.stat("/proc/self/ns/net").st_ino
    script = "import os, socket; print(os.stat('/proc/self/ns/net').st_ino); print(len(socket.if_nameindex()))"
    proc = sandbox_cli("run", "-q", "--network", "host", "untrusted", "--", PY, "-c", script)
    assert proc.returncode == 0, proc.stderr
    inode, count = proc.stdout.split()
    assert int(inode) == host_net and int(count) == len(socket_if_names())
    proc = sandbox_cli("run", "-q", "--network", "none", "untrusted", "--", PY, "-c", script)
    assert proc.returncode == 0, proc.stderr
    inode, count = proc.stdout.split()
    assert int(inode) != host_net and count == "1"


def socket_if_names():
    import socket
    return socket.if_nameindex()


@pytest.mark.parametrize("spec", ["a:b:c:d", "/usr:/x:rx", ":/x", "/usr::rw"])
def test_cli_malformed_bind_is_one_line_125(sandbox_cli, spec):
    proc = sandbox_cli("run", "--bind", spec, "untrusted", "--", "/bin/true")
    assert proc.returncode == 125
    assert proc.stderr.startswith("sandbox: ") and "--bind" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("spec", ["=x", "BAD-NAME=x"])
def test_cli_malformed_env_is_one_line_125(sandbox_cli, spec):
    proc = sandbox_cli("run", "--env", spec, "untrusted", "--", "/bin/true")
    assert proc.returncode == 125
    assert proc.stderr.startswith(f"sandbox: --env {spec}: ") and proc.stderr.count("\n") == 1


def test_bad_working_directory_names_the_path(sandbox_cli):
    with pytest.raises(sandbox.SetupError) as info:
        run(["/bin/true"], sandbox.profile_from_dict({"extends": "untrusted", "process": {"cwd": "/no/such/dir"}}))
    assert info.value.step == "working directory" and "/no/such/dir" in info.value.message
    proc = sandbox_cli("run", "--cwd", "/no/such/dir", "untrusted", "--", "/bin/true")
    assert proc.returncode == 125
    assert proc.stderr == "sandbox: working directory: /no/such/dir: No such file or directory (ENOENT)\n"


def test_pass_fds_cross_and_nothing_else():
    read_fd, write_fd = os.pipe()
    other_r, other_w = os.pipe()
    os.set_inheritable(other_w, True)  # inheritable, but not asked for: must not cross
    try:
        script = textwrap.dedent(f"""
            import os
            os.write({write_fd}, b"through-the-fd\\n")
            try:
                os.write({other_w}, b"x")
                print("open")
            except OSError:
                print("closed")
            print(*sorted(int(fd) for fd in os.listdir("/proc/self/fd")))
        """)
        try:
            result = run([PY, "-c", script], pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
        passed = os.read(read_fd, 100)
    finally:
        for fd in (read_fd, other_r, other_w):
            os.close(fd)
    assert result.exit_code == 0, result.stderr
    assert passed == b"through-the-fd\n"
    verdict, fds = result.stdout.decode().splitlines()
    assert verdict == "closed", "an fd that was not passed reached the workload"
    fds = {int(fd) for fd in fds.split()}
    assert write_fd in fds
    assert len(fds - {0, 1, 2, write_fd}) <= 1, fds  # listdir's own directory fd


def test_captured_output_survives_concurrent_launches(tmp_path):
    """Under load the output pipes can reach EOF before the message pipe; the captured output must
    not be dropped then (it was: exit status right, stdout and stderr empty)."""
    script = tmp_path / "loop.py"
    script.write_text(textwrap.dedent("""
        import sandbox
        lost = 0
        for i in range(12):
            r = sandbox.run("untrusted", ["/bin/sh", "-c", f"echo out-{i}; echo err-{i} >&2; exit 3"],
                            capture_output=True)
            lost += (r.exit_code, r.stdout, r.stderr) != (3, f"out-{i}\\n".encode(), f"err-{i}\\n".encode())
        print(lost)
    """))
    procs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert out.strip() == "0", f"{out.strip()} of 12 runs lost captured output"
