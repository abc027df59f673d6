"""The caller's terminal: relayed to a pty of the sandbox's own (`--tty`), and kept as it was.

`--tty`: the workload opens a pty in its own devpts (child.py), so its tty and controlling
terminal are not the host's, and passes the master out. Relay copies between the caller's
terminal and that master in a thread of its own, so that supervision (the timeout, the exit
status, signals) never waits on a terminal: a workload that stops reading its input, a caller's
terminal that is stopped or gone (EIO), or a closed pipe (EPIPE) only ends that direction of
the copy. The caller's terminal is put in raw mode (the pty inside does the line editing), its
window size follows SIGWINCH, and everything is restored by stop().

Without `--tty`, a workload given the caller's terminal as stdin, stdout or stderr shares its
settings and file status flags: saved_states() before the launch and restore() after it, on every
path, undo what it changed (echo, canonical mode, signals, O_NONBLOCK, output stopped by TCOOFF).
"""
from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import termios
import threading
import time
import tty

_CHUNK = 65536
_MAX_PENDING_INPUT = 1 << 16  # caller's input read ahead of a workload that does not read it
_GONE = (errno.EIO, errno.EPIPE, errno.EBADF, errno.ENXIO, errno.ECONNRESET)


class Relay:
    def __init__(self, master: int, stdin: int = 0, stdout: int = 1):
        self.master, self.stdin, self.stdout = master, stdin, stdout
        self.saved = None
        self.previous_winch = None
        self._pending = bytearray()  # caller's input not yet taken by the pty
        self._read_stdin = True
        self._write_stdout = True
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._error: str | None = None
        os.set_blocking(master, False)  # our own descriptor; the caller's are never made non-blocking
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            if os.isatty(stdin):
                self.saved = termios.tcgetattr(stdin)
                tty.setraw(stdin)
                self._copy_window_size()
                if threading.current_thread() is threading.main_thread():
                    self.previous_winch = signal.signal(signal.SIGWINCH, lambda *_: self._copy_window_size())
        except OSError:  # a terminal that is already gone: relay what we can
            self.saved = None

    def _copy_window_size(self) -> None:
        try:
            size = fcntl.ioctl(self.stdin, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)
        except OSError:
            pass

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sandbox-tty", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._copy_until_stopped()
            self._drain_output()
        except BaseException as exc:  # never into supervision: the relay just ends
            self._error = f"terminal relay stopped: {exc}"

    def _copy_until_stopped(self) -> None:
        master_open = True
        while not self._stopping:
            readers = [self._wake_r] + ([self.master] if master_open else [])
            if self._read_stdin and len(self._pending) < _MAX_PENDING_INPUT:
                readers.append(self.stdin)
            writers = [self.master] if self._pending and master_open else []
            readable, writable, _ = select.select(readers, writers, [])
            if self._wake_r in readable:
                return
            if self.master in readable and not self._from_master():
                master_open = False  # every slave end is closed: the workload is gone
            if self.stdin in readable:
                self._from_stdin()
            if self.master in writable:
                self._to_master()

    def _from_master(self) -> bool:
        try:
            chunk = os.read(self.master, _CHUNK)
        except BlockingIOError:
            return True
        except OSError:  # EIO: no slave end left
            return False
        if not chunk:
            return False
        self._to_stdout(chunk)
        return True

    def _to_stdout(self, chunk: bytes) -> None:
        """A blocking write, in this thread only: a stopped terminal holds the relay, not the launch."""
        if not self._write_stdout:
            return  # keep reading the master anyway, or the workload would block on its tty
        try:
            view = memoryview(chunk)
            while view:
                view = view[os.write(self.stdout, view):]
        except OSError as exc:
            if exc.errno not in _GONE:
                raise
            self._write_stdout = False

    def _from_stdin(self) -> None:
        try:
            chunk = os.read(self.stdin, _CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno not in _GONE:
                raise
            chunk = b""
        if chunk:
            self._pending += chunk
            return
        self._read_stdin = False
        if self.saved is None:  # a pipe ended: send end-of-file, as a terminal user would
            self._pending += b"\x04"

    def _to_master(self) -> None:
        try:
            written = os.write(self.master, self._pending)
        except BlockingIOError:
            return
        except OSError:
            self._pending.clear()
            self._read_stdin = False
            return
        del self._pending[:written]

    def _drain_output(self, seconds: float = 1.0) -> None:
        """What the workload wrote before it ended is still in the master: pass it on."""
        deadline = time.monotonic() + seconds
        while self._write_stdout and time.monotonic() < deadline:
            if not select.select([self.master], [], [], 0)[0] or not self._from_master():
                return

    def stop(self, timeout: float = 2.0) -> list[str]:
        """End the relay and give the caller's terminal back; returns warnings. Never blocks
        for longer than `timeout`, whatever the terminal does."""
        warnings = []
        self._stopping = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                warnings.append("the terminal took no more output: the rest of the workload's output was dropped")
        if self._error:
            warnings.append(self._error)
        if self.saved is not None:
            try:
                termios.tcsetattr(self.stdin, termios.TCSANOW, self.saved)
            except (OSError, termios.error):
                pass  # the terminal is gone
        if self.previous_winch is not None:
            signal.signal(signal.SIGWINCH, self.previous_winch)
            self.previous_winch = None
        if thread is None or not thread.is_alive():
            for fd in (self.master, self._wake_r, self._wake_w):
                os.close(fd)
        # else: a thread blocked in write() still uses them; they go with the process
        self.master = -1
        return warnings


# ---------------------------------------------------------------- terminals shared without --tty

def saved_states(fds) -> list[tuple[int, list, int]]:
    """(fd, termios attributes, file status flags) of each terminal among fds."""
    states, seen = [], set()
    for fd in fds:
        if fd in seen:
            continue
        seen.add(fd)
        try:
            if os.isatty(fd):
                states.append((fd, termios.tcgetattr(fd), fcntl.fcntl(fd, fcntl.F_GETFL)))
        except (OSError, termios.error):
            pass
    return states


def restore(states) -> list[str]:
    """Put each terminal back as saved_states() found it; warnings name what the workload changed."""
    warnings = []
    for fd, attributes, flags in states:
        changed = []
        try:
            if termios.tcgetattr(fd) != attributes:
                changed.append("settings")
                termios.tcsetattr(fd, termios.TCSANOW, attributes)
            if fcntl.fcntl(fd, fcntl.F_GETFL) != flags:
                changed.append("file status flags")
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
            termios.tcflow(fd, termios.TCOON)  # output stopped with TCOOFF (tcflow) resumes
        except (OSError, termios.error):
            continue  # the terminal is gone
        if changed:
            warnings.append(f"the workload changed the terminal's {' and '.join(changed)} (fd {fd}): restored")
    return warnings
