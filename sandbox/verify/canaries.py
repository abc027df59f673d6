"""Host-side canaries for the verifier: things the sandbox must NOT be able to see.

    with Canaries() as context:
        ...launch probe.py inside the sandbox with --context json.dumps(context)...

On entry it plants, on the host: a TCP listener on 127.0.0.1 (random port), a
listening abstract unix socket, a SysV shared-memory segment, a POSIX shm file
/dev/shm/sandbox-canary-XXXX, a sleeping canary process whose argv carries the
token, and an environment variable (set in os.environ so the sandbox launched
from this process would inherit it if the environment leaks). It also records
the host's namespace inodes, hostname and session id. The context dict it
yields is the probe's context schema (see probe.py's docstring); pass
``expect=`` to embed expectations derived from a profile.

Everything is torn down on exit, exceptions included: each canary registers
its own cleanup the moment it exists, so a failure half-way still cleans up.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import socket
import shutil
import subprocess
import time

from sandbox.namespaces import namespace_inodes

IPC_CREAT, IPC_EXCL, IPC_RMID = 0o1000, 0o2000, 0

_libc = ctypes.CDLL(None, use_errno=True)


class Canaries:
    """Context manager: plant the canaries, yield the probe context, remove them."""

    def __init__(self, expect: dict | None = None, set_env: bool = True, process: bool = True):
        self.expect = expect
        self.set_env = set_env
        self.process = process
        self.token = "sandbox-canary-" + secrets.token_hex(4)
        self.context: dict = {}
        self._stack = contextlib.ExitStack()

    # -- context manager -------------------------------------------------
    def __enter__(self) -> dict:
        try:
            self._plant()
        except BaseException:
            self._stack.close()
            raise
        return self.context

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def close(self) -> None:
        self._stack.close()

    # -- planting --------------------------------------------------------
    def _plant(self) -> None:
        ctx = self.context
        ctx["canary_token"] = self.token
        ctx["host_ns"] = namespace_inodes()  # the host's, for the probe to compare with
        ctx["host_hostname"] = socket.gethostname()
        ctx["host_sid"] = os.getsid(0)
        ctx["canary_tcp_port"] = self._tcp_listener()
        ctx["canary_abstract_socket"] = self._abstract_socket()
        key = self._sysv_shm()
        if key is not None:
            ctx["canary_sysv_shm_key"] = key
        name = self._posix_shm()
        if name is not None:
            ctx["canary_posix_shm"] = name
        if self.process:
            ctx["canary_pids"] = [self._process()]
        ctx["canary_env"] = self._env()
        if self.expect is not None:
            ctx["expect"] = self.expect

    def _tcp_listener(self) -> int:
        # The kernel completes handshakes into the backlog: no accept() needed.
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._stack.callback(s.close)
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        return s.getsockname()[1]

    def _abstract_socket(self) -> str:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._stack.callback(s.close)
        s.bind("\0" + self.token)
        s.listen(16)
        return self.token

    def _sysv_shm(self) -> int | None:
        # 0666 so "visible" shows as success, not EACCES, whatever the sandbox uid.
        for _ in range(8):
            key = secrets.randbelow(0x7FFFFFF0) + 1
            shmid = _libc.shmget(ctypes.c_int(key), ctypes.c_size_t(4096),
                                 ctypes.c_int(IPC_CREAT | IPC_EXCL | 0o666))
            if shmid >= 0:
                self._stack.callback(_libc.shmctl, ctypes.c_int(shmid), ctypes.c_int(IPC_RMID),
                                     None)
                return key
        return None

    def _posix_shm(self) -> str | None:
        if not os.path.isdir("/dev/shm"):
            return None
        path = f"/dev/shm/{self.token}"
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        os.close(fd)
        self._stack.callback(_unlink_quietly, path)
        return self.token

    def _process(self) -> int:
        # The token in argv lets the probe tell the canary from a same-numbered pid.
        # sleep(1) with the token as its argv[0]: no interpreter needed, so it works for callers
        # that may not run ours again (an unprivileged user of a venv under /root, say).
        proc = subprocess.Popen([self.token, "3600"], executable=shutil.which("sleep") or "/bin/sleep",
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                close_fds=True)
        self._stack.callback(_kill_and_reap, proc)
        _wait_for_argv(proc.pid, self.token)
        return proc.pid

    def _env(self) -> str:
        name = "SANDBOX_CANARY_" + self.token.rsplit("-", 1)[1].upper()
        self.context["canary_env_value"] = self.token
        if self.set_env:
            previous = os.environ.get(name)
            os.environ[name] = self.token
            self._stack.callback(_restore_env, name, previous)
        return name


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _wait_for_argv(pid: int, argv0: str, seconds: float = 1.0) -> None:
    """Popen returns once exec has closed its error pipe, a moment before the kernel sets up the
    new argv: until then /proc/<pid>/cmdline reads empty, and a probe looking that soon would miss
    the token."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0", 1)[0] == argv0.encode():
                    return
        except OSError:
            return
        time.sleep(0.001)


def _kill_and_reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _restore_env(name: str, previous: str | None) -> None:
    if previous is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = previous
