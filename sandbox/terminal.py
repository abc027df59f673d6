"""`--tty`: relay between the caller's terminal and a pty the workload opened in its own devpts.

The workload's side is made inside the sandbox (child.py), so its /dev/pts entry exists there and
its controlling terminal is not one of the host's. Here, the parent keeps the master: the caller's
terminal is put in raw mode (the pty inside does the line editing), its window size follows
SIGWINCH, and everything is restored on close.
"""
from __future__ import annotations

import fcntl
import os
import select
import signal
import termios
import threading
import tty


class Relay:
    def __init__(self, master: int, stdin: int = 0, stdout: int = 1):
        self.master, self.stdin, self.stdout = master, stdin, stdout
        self.saved = None
        self.stdin_open = master >= 0
        self.previous_winch = None
        if master < 0:
            return
        if os.isatty(stdin):
            self.saved = termios.tcgetattr(stdin)
            tty.setraw(stdin)
            self._copy_window_size()
            if threading.current_thread() is threading.main_thread():
                self.previous_winch = signal.signal(signal.SIGWINCH, lambda *_: self._copy_window_size())

    def _copy_window_size(self) -> None:
        try:
            size = fcntl.ioctl(self.stdin, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)
        except OSError:
            pass

    def watched(self) -> list[int]:
        if self.master < 0:
            return []
        return [self.master] + ([self.stdin] if self.stdin_open else [])

    def pump(self, fd: int) -> None:
        if fd == self.master:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every slave end is closed
                chunk = b""
            if chunk:
                os.write(self.stdout, chunk)
        elif fd == self.stdin:
            chunk = os.read(self.stdin, 65536)
            if chunk:
                os.write(self.master, chunk)
            else:
                self.stdin_open = False
                if self.saved is None:  # a pipe ended: send end-of-file, as a terminal user would
                    os.write(self.master, b"\x04")

    def close(self) -> None:
        if self.master < 0:
            return
        try:
            while select.select([self.master], [], [], 0)[0]:
                chunk = os.read(self.master, 65536)
                if not chunk:
                    break
                os.write(self.stdout, chunk)
        except OSError:
            pass
        if self.saved is not None:
            termios.tcsetattr(self.stdin, termios.TCSADRAIN, self.saved)
        if self.previous_winch is not None:
            signal.signal(signal.SIGWINCH, self.previous_winch)
        os.close(self.master)
        self.master = -1
