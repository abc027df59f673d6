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
