"""Doing things inside a segment's or a sandbox's namespaces, from the launcher.

Everything runs in a short-lived forked helper that joins the namespaces (a user namespace first,
when given: a rootless caller holds capabilities over a segment only from inside its user
namespace) and then makes a socket, runs a program or starts a long-lived one. The launcher itself
never changes namespace: setns() is per thread, and the caller's other threads (CI systems launch
from many) must not see it happen.

A netlink socket made in a namespace stays bound to it: the helper passes it back over SCM_RIGHTS
and the launcher drives pyroute2 with it (IPRoute(fileno=...)), as pyroute2's own NetNS does.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import socket
import struct

from .. import _libc, fds as inherited

NS_TYPES = {"user": _libc.CLONE_NEWUSER, "net": _libc.CLONE_NEWNET}
HELPER_TIMEOUT = 20.0


class NamespaceError(OSError):
    """A helper could not join a namespace or do its work: errno and what it was doing."""


def forked(keep: set[int]) -> None:
    """First thing in every helper: close what it inherited but does not need. The launcher may
    have other threads forking helpers at the same moment, and a copy of their pipe ends or of
    the state lock held here would keep them waiting for an EOF or a lock that never comes."""
    inherited.close_all_except({0, 1, 2} | keep)


def join(namespaces: list[tuple[str, str]], as_root: bool = False) -> None:
    """Join each (kind, path) in order. as_root: become uid and gid 0 of the user namespace just
    joined (a segment's helpers run as its root, which is an unprivileged host id)."""
    if as_root and os.geteuid() == 0:
        os.setgroups([])  # root's groups would follow into the namespace, unmapped but effective
    for kind, path in namespaces:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _libc.setns(fd, NS_TYPES[kind])
        except OSError as exc:
            raise NamespaceError(exc.errno, f"setns({kind}, {path}): {os.strerror(exc.errno)}") from None
        finally:
            os.close(fd)
    if as_root:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)


def _default_signals() -> None:
    """Python ignores SIGPIPE and SIGXFSZ, and ignored signals survive exec: give programs the
    defaults back (pasta even refuses to start when SIGPIPE is already ignored)."""
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _report_error(channel: socket.socket, exc: BaseException) -> None:
    err = getattr(exc, "errno", None) or 0
    message = getattr(exc, "strerror", None) if isinstance(exc, OSError) and not isinstance(exc, NamespaceError) \
        else None
    text = f"{message}" if message else str(exc) or type(exc).__name__
    channel.send(json.dumps({"error": [err, text]}).encode())


def call(namespaces: list[tuple[str, str]], work, *, as_root: bool = False) -> tuple[object, list[int]]:
    """Run work() in a forked helper inside `namespaces`; work returns (json-able, [fds]). Returns
    the value and the fds (now the caller's), or raises NamespaceError."""
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # helper: no return, no Python clean-up
        try:
            forked({child_end.fileno()})
            join(namespaces, as_root)
            value, fds = work()
            socket.send_fds(child_end, [json.dumps({"value": value}).encode()], fds)
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the launcher
            try:
                _report_error(child_end, exc)
            except BaseException:
                pass
        finally:
            os._exit(0)
    child_end.close()
    try:
        ready, _, _ = select.select([parent_end], [], [], HELPER_TIMEOUT)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            raise NamespaceError(errno.ETIMEDOUT, "a namespace helper did not answer")
        data, fds, _, _ = socket.recv_fds(parent_end, 65536, 16)
    finally:
        parent_end.close()
        os.waitpid(pid, 0)
    if not data:
        raise NamespaceError(errno.EIO, "a namespace helper died without a word")
    answer = json.loads(data)
    if "error" in answer:
        for fd in fds:
            os.close(fd)
        err, text = answer["error"]
        raise NamespaceError(err, text)
    return answer["value"], fds


def netlink_socket(namespaces: list[tuple[str, str]]) -> int:
    """A NETLINK_ROUTE socket of the network namespace in `namespaces` (the last net entry)."""
    def make():
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)  # as pyroute2's own
        return None, [sock.detach()]
    _, fds = call(namespaces, make)
    return fds[0]


def iproute(namespaces: list[tuple[str, str]]):
    """A pyroute2 IPRoute driving the network namespace in `namespaces`."""
    from pyroute2 import IPRoute
    fd = netlink_socket(namespaces)
    try:
        return IPRoute(fileno=fd)
    except BaseException:
        try:
            os.close(fd)
        except OSError:
            pass  # closed by IPRoute already
        raise


@contextlib.contextmanager
def netlink_errors():
    """pyroute2's NetlinkError (not an OSError) as an OSError with its errno."""
    from pyroute2.netlink.exceptions import NetlinkError
    try:
        yield
    except NetlinkError as exc:
        raise OSError(exc.code, os.strerror(exc.code) if exc.code else str(exc)) from None


def run(namespaces: list[tuple[str, str]], argv: list[str], stdin: bytes = b"", *, as_root: bool = False,
        timeout: float = HELPER_TIMEOUT) -> tuple[int, bytes, bytes]:
    """Run argv inside `namespaces` and wait: (exit status, stdout, stderr)."""
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(in_r, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            forked(set())
            join(namespaces, as_root)
            _default_signals()
            os.execv(argv[0], argv)
        except BaseException as exc:  # noqa: BLE001
            try:
                os.write(2, f"{argv[0]}: {exc}".encode())
            except OSError:
                pass
        finally:
            os._exit(127)
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    out, err = bytearray(), bytearray()
    try:
        pending_input = memoryview(stdin)
        open_fds = {out_r: out, err_r: err}
        writers = [in_w] if pending_input else []
        if not pending_input:
            os.close(in_w)
            in_w = -1
        import time
        deadline = time.monotonic() + timeout
        while open_fds or writers:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                raise NamespaceError(errno.ETIMEDOUT, f"{argv[0]} did not finish in {timeout:.0f} s")
            readable, writable, _ = select.select(list(open_fds), writers, [], left)
            for fd in readable:
                chunk = os.read(fd, 65536)
                if chunk:
                    open_fds[fd] += chunk
                else:
                    del open_fds[fd]
            if writable:
                try:
                    written = os.write(in_w, pending_input[:65536])
                except BrokenPipeError:
                    written = len(pending_input)
                pending_input = pending_input[written:]
                if not pending_input:
                    os.close(in_w)
                    in_w = -1
                    writers = []
    finally:
        for fd in (in_w, out_r, err_r):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), bytes(out), bytes(err)


def spawn_detached(namespaces: list[tuple[str, str]], argv: list[str], *, as_root: bool = False,
                   pass_fds: tuple[int, ...] = (), prepare=None, stderr_path: str | None = None,
                   executable: str | None = None, main=None, before_join=None) -> int:
    """Start argv inside `namespaces` as a daemon (a grandchild, reparented away from the launcher,
    in its own session): returns its pid once it has exec'd, or raises with the reason it could not.
    before_join() runs in it first, with the launcher's privileges; prepare() after the namespaces
    are joined, before exec. With main, no exec: main() runs in the forked copy (everything it
    needs already imported), then it exits."""
    report_r, report_w = os.pipe2(os.O_CLOEXEC)  # exec closes it: EOF means it went through
    pid = os.fork()
    if pid == 0:
        try:
            forked({report_w, *pass_fds})
            os.setsid()
            grandchild = os.fork()
            if grandchild:
                os.write(report_w, struct.pack("i", grandchild))
                os._exit(0)
            null = os.open("/dev/null", os.O_RDWR)
            log = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600) \
                if stderr_path else null
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.dup2(log, 2)
            forked({report_w, *pass_fds})
            for fd in pass_fds:
                os.set_inheritable(fd, True)
            if before_join is not None:
                before_join()
            join(namespaces, as_root)
            if prepare is not None:
                prepare()
            _default_signals()
            if main is not None:
                os.close(report_w)  # started: what happens next is main's to log
                report_w = -1
                main()
                os._exit(0)
            os.execv(executable or argv[0], argv)
        except BaseException as exc:  # noqa: BLE001
            try:
                message = json.dumps([getattr(exc, "errno", 0) or 0, str(exc)]).encode()
                os.write(report_w, b"E" + message)
            except BaseException:
                pass
        finally:
            os._exit(127)
    os.close(report_w)
    try:
        data = b""
        while True:
            ready, _, _ = select.select([report_r], [], [], HELPER_TIMEOUT)
            if not ready:
                raise NamespaceError(errno.ETIMEDOUT, f"{argv[0]} did not start")
            chunk = os.read(report_r, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(report_r)
        os.waitpid(pid, 0)
    if len(data) < 4:
        raise NamespaceError(errno.EIO, f"{argv[0]} could not be started")
    grandchild = struct.unpack("i", data[:4])[0]
    if data[4:5] == b"E":
        err, text = json.loads(data[5:])
        raise NamespaceError(err, f"{argv[0]}: {text}")
    return grandchild
