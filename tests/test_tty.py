"""`--tty`: the workload gets a terminal of its own, inside its own /dev/pts."""
from __future__ import annotations

import os
import select
import subprocess
import sys
import time

from conftest import require


def _read_until(fd: int, needle: bytes, timeout: float = 10.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    return data


def test_interactive_shell_on_a_fresh_pty():
    require("userns")
    master, slave = os.openpty()  # plays the caller's terminal
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "run", "--tty", "-q", "untrusted", "--", "/bin/sh", "-i"],
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        assert b"$" in _read_until(master, b"$ ")
        os.write(master, b"tty; test -t 0 && echo INTERACTIVE; echo $((6*7))\r")
        out = _read_until(master, b"42")
        assert b"/dev/pts/0" in out  # the sandbox's own devpts, not a host pty
        assert b"INTERACTIVE" in out
        os.write(master, b"exit 5\r")
        assert proc.wait(timeout=10) == 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_tty_without_a_terminal_on_the_caller_side(sandbox_cli):
    require("userns")
    done = subprocess.run([sys.executable, "-m", "sandbox", "run", "--tty", "-q", "untrusted", "--",
                           "/bin/sh", "-c", "tty; read line; echo got $line"], input=b"hello\n",
                          capture_output=True, timeout=30)
    assert done.returncode == 0
    assert b"/dev/pts/0" in done.stdout and b"got hello" in done.stdout


# ---------------------------------------------------------------- a terminal never stops supervision

def test_a_workload_that_stops_reading_its_input_cannot_block_the_timeout(tmp_path):
    """issue 22.3: 1 MiB of input to a workload that reads none; the pty fills, the timeout holds."""
    require("userns")
    started = time.monotonic()
    proc = subprocess.run(
        ["/bin/sh", "-c", f"head -c 1048576 /dev/zero | {sys.executable} -m sandbox run --tty --timeout 3s "
                          "--kill-after 1s untrusted -- sh -c 'stty raw -echo; sleep 12; exit 7'"],
        capture_output=True, timeout=40)
    elapsed = time.monotonic() - started
    assert proc.returncode == 124, proc.stderr
    assert elapsed < 10, elapsed


def test_the_callers_terminal_going_away_does_not_stop_supervision():
    """issue 22.3: the caller's terminal is closed (an ssh drop) while the workload ignores SIGHUP."""
    require("userns")
    master, slave = os.openpty()
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "run", "--tty", "--timeout", "5s", "--kill-after", "1s",
                             "untrusted", "--", "/bin/sh", "-c", "trap '' HUP; echo READY; sleep 30"],
                            stdin=slave, stdout=slave, stderr=subprocess.PIPE, start_new_session=True)
    os.close(slave)
    try:
        assert b"READY" in _read_until(master, b"READY")
        time.sleep(0.5)
        os.close(master)  # the terminal is gone
        master = -1
        code = proc.wait(timeout=30)
        err = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if master >= 0:
            os.close(master)
    assert code == 124, err
    assert time.monotonic() - started < 15
    assert "Input/output error" not in err and "Traceback" not in err


def test_a_closed_output_pipe_does_not_stop_supervision():
    """issue 22.3: stdout piped into `head -c 1` (EPIPE) behaves as any other run."""
    require("userns")
    proc = subprocess.run(["/bin/sh", "-c", f"{sys.executable} -m sandbox run --tty untrusted -- "
                           "sh -c 'yes | head -c 200000; sleep 1; exit 3' | head -c 1 >/dev/null; echo ${{PIPESTATUS:-}}"],
                          capture_output=True, timeout=40)
    assert b"Traceback" not in proc.stderr and b"Input/output" not in proc.stderr, proc.stderr


# ---------------------------------------------------------------- without --tty, the terminal is given back

def test_a_workload_cannot_change_the_callers_terminal_for_good():
    """issue 22.4: given the caller's terminal as stdio, a workload clears ECHO/ICANON/ISIG, sets
    O_NONBLOCK on the shared file description and stops output with TCOOFF; all of it is undone."""
    require("userns")
    import fcntl
    import termios
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    flags_before = fcntl.fcntl(slave, fcntl.F_GETFL)
    hostile = ("import fcntl, os, termios; "
               "a = termios.tcgetattr(0); a[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG); "
               "termios.tcsetattr(0, termios.TCSANOW, a); "
               "fcntl.fcntl(0, fcntl.F_SETFL, fcntl.fcntl(0, fcntl.F_GETFL) | os.O_NONBLOCK); "
               "termios.tcflow(1, termios.TCOOFF)")
    try:
        proc = subprocess.run([sys.executable, "-m", "sandbox", "run", "untrusted", "--", "/usr/bin/python3", "-c",
                               hostile], stdin=slave, stdout=slave, stderr=subprocess.PIPE, timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert b"changed the terminal" in proc.stderr  # and said so
        assert termios.tcgetattr(slave) == before
        assert fcntl.fcntl(slave, fcntl.F_GETFL) == flags_before
        os.write(slave, b"still-flowing\n")  # output was resumed: the write does not hang
        assert b"still-flowing" in _read_until(master, b"still-flowing", 5)
    finally:
        os.close(master)
        os.close(slave)
