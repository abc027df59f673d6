"""A fork server: each launch's first process is forked by a small helper, not by the caller.

A launch forks three processes in a chain (child.py), and every fork copies the forking process's
page tables: the cost grows with the caller's size. A warm launch measured 12 ms from a 22 MB
process and 28 ms from a 440 MB one, and after each fork the caller takes a copy-on-write fault
on every page it writes. A CI system that launches many sandboxes from one big process can start a
ForkServer once: a fresh interpreter that holds only the child side and forks the launches' first
process (A) on request. Everything else stays in the caller: profile, cgroups, id maps, supervision.

    with sandbox.ForkServer() as server:
        for job in jobs:
            sandbox.run(profile, job, fork_server=server)

**What the sandbox inherits.** A forked process inherits its parent's credentials, capabilities,
no_new_privs, seccomp filters, namespaces, resource limits, root directory and security label;
through a server, those are the server's. So at each launch the caller compares its own with the
server's (``process_state()``, read in both) and, when they differ, forks directly and says so in
the result's warnings. Root's supplementary groups are the exception: no sandbox gets them, so a
root server sheds its own at start (its sandboxes' init can then be cloned directly, see
child.spawn) and they are not compared. Everything else a launch depends on is set explicitly
by the child side (environment, umask, working directory, file descriptors, signal dispositions). The cgroup is not
compared: A runs in the server's cgroup (the caller's) only until the caller moves it into the
sandbox's own.

**Protocol**, over a SOCK_SEQPACKET socket pair, one request per launch: the caller sends the pickled
ChildContext and the numbers and close-on-exec flags of the descriptors it names, with those
descriptors attached (SCM_RIGHTS); the server starts the launch's first process (child.spawn: init
cloned into the namespaces, or A when the caller's groups need dropping), which puts them back at
the numbers the context uses, and answers with its pid, whether it was cloned, and a pidfd for it.
It is the server's child, so the caller signals it and waits for its end through the pidfd, never
by pid (the server reaps it, and a pid can be reused). The server exits when the caller closes
its end or dies; each first process has the server as its parent-death signal source, so its
sandbox dies with it.
"""
from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading

_MAX_MESSAGE = 1 << 20
_MAX_FDS = 250  # SCM_MAX_FD is 253
# Compared at each launch: what a forked process inherits and the child side does not reset.
_STATUS_FIELDS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
                  "Seccomp", "Seccomp_filters")


def process_state() -> dict:
    """What a process forked by the calling thread would inherit and the sandbox does not reset."""
    import resource
    state = {}
    with open("/proc/thread-self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in _STATUS_FIELDS:
                state[key] = value.strip()
    for name in sorted(os.listdir("/proc/self/ns")):
        state["ns/" + name] = os.readlink("/proc/self/ns/" + name)
    limits = {}
    for name in sorted(n for n in dir(resource) if n.startswith("RLIMIT_")):
        limits.setdefault(getattr(resource, name), name)  # one name each (RLIMIT_OFILE is NOFILE)
    for number, name in limits.items():
        state[name] = resource.getrlimit(number)
    root = os.stat("/proc/self/root/")
    state["root"] = (root.st_dev, root.st_ino)
    try:
        with open("/proc/thread-self/attr/current") as f:
            state["lsm"] = f.read().strip("\0\n")
    except OSError:
        pass
    return state


def _effective_uid(state: dict) -> int | None:
    fields = state.get("Uid", "").split()
    return int(fields[1]) if len(fields) > 1 else None


class ForkServerError(OSError):
    pass


class ForkServer:
    """A helper process that forks the sandboxes' first process (see the module's docstring).

    Started at the first launch that uses it (after that launch has set up its cgroup, so that
    the helper sits where the caller sits), stopped by close() or at the end of a with block.
    Safe to share between threads.
    """

    def __init__(self):
        self._owner = os.getpid()  # a forked copy of the caller must not talk on the same socket
        self._lock = threading.Lock()
        self._process = None  # subprocess.Popen
        self._socket = None  # socket.socket
        self._state: dict | None = None
        self._closed = False

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def refusal(self) -> str | None:
        """Why a launch from the calling thread must not go through the server; None if it may."""
        if os.getpid() != self._owner:
            return "this process is a forked copy of the one that started the server"
        differences = self.differences()
        if differences:
            return f"{', '.join(differences)} differ between this process and the server"
        return None

    def differences(self) -> list[str]:
        """What differs between the calling thread and the server, of what a fork inherits."""
        with self._lock:
            self._start()
            state = self._state
        mine = process_state()
        differ = {key for key in set(mine) | set(state) if mine.get(key) != state.get(key)}
        if _effective_uid(mine) == 0:
            differ.discard("Groups")  # root's never reach a sandbox: the server has shed its own
        return sorted(differ)

    def fork_intermediate(self, ctx, fds: set[int], cgroup_fd: int = -1) -> tuple[int, int, bool, bool]:
        """Start a launch's first process with ``ctx`` in the server (child.spawn): A, or init
        itself when cloned, then maybe into the v2 cgroup ``cgroup_fd``; returns (pid, pidfd,
        cloned, in_cgroup). ``fds`` are the descriptors ctx names (child.needed_fds), sent along
        and put back at the same numbers."""
        flags_of = {fd: _fd_flags(fd) for fd in sorted({*fds, cgroup_fd} - {-1})}
        numbers = [fd for fd, flags in flags_of.items() if flags is not None]  # a closed stdin stays closed
        if len(numbers) > _MAX_FDS:
            raise ForkServerError(0, f"{len(numbers)} descriptors to pass, more than {_MAX_FDS}")
        flags = [bool(flags_of[fd] & fcntl.FD_CLOEXEC) for fd in numbers]
        import pickle  # here, not at the top: the CLI imports this module and never uses a server
        import socket
        message = pickle.dumps((ctx, numbers, flags, cgroup_fd), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._start()
            try:
                socket.send_fds(self._socket, [message], numbers)
                reply, received, _, _ = socket.recv_fds(self._socket, 65536, 1)
            except OSError as exc:
                raise ForkServerError(exc.errno or 0, f"the fork server does not answer: {exc.strerror}") from None
        if not reply:
            raise ForkServerError(0, "the fork server has exited")
        answer = pickle.loads(reply)
        if "error" in answer:
            for fd in received:
                os.close(fd)
            raise ForkServerError(answer.get("errno", 0), f"the fork server could not fork: {answer['error']}")
        if len(received) != 1:
            raise ForkServerError(0, "the fork server sent no pidfd")
        return answer["pid"], received[0], answer["cloned"], answer["in_cgroup"]

    def _start(self) -> None:
        if self._process is not None:
            return
        if self._closed:
            raise ForkServerError(0, "the fork server is closed")
        import pickle
        import socket
        import subprocess
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = (f"import sys; sys.path.insert(0, {package_parent!r}); "
                f"from sandbox.forkserver import serve; serve({theirs.fileno()})")
        try:
            # -I: neither the caller's PYTHON* variables nor its working directory shape the helper.
            # The interpreter that runs us, by /proc/self/exe: its path may not be open to us (a
            # caller that dropped root), and argv[0] still finds the same environment (venv).
            self._process = subprocess.Popen([sys.executable, "-I", "-c", code], executable="/proc/self/exe",
                                             pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, cwd="/",
                                             start_new_session=True)  # no terminal signals: they are the caller's
        finally:
            theirs.close()
        reply = ours.recv(_MAX_MESSAGE)  # its state, once it is ready
        if not reply:
            ours.close()
            self._process.wait()
            self._process = None
            raise ForkServerError(0, "the fork server failed to start (see its message above)")
        self._socket = ours
        self._state = pickle.loads(reply)

    def close(self) -> None:
        """Stop the server. Sandboxes it forked that still run are killed with it."""
        with self._lock:
            self._closed = True
            if self._socket is not None:
                self._socket.close()
                self._socket = None
            if self._process is not None:
                self._process.wait()
                self._process = None


def _fd_flags(fd: int) -> int | None:
    try:
        return fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError:
        return None


# ---------------------------------------------------------------------------- the server

def serve(fd: int) -> None:
    """The helper's main loop: one fork per request, until the caller goes away."""
    import gc
    import pickle
    import select
    import socket
    from . import child
    # Nothing the server built is ever collected: a collection in a forked child would write to
    # every object's header and copy the pages they sit in.
    gc.disable()
    gc.freeze()
    child.shed_root_groups()  # so that init can be cloned for a root caller too
    sock = socket.socket(fileno=fd)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the loop (set_wakeup_fd)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    sock.send(pickle.dumps(process_state()))
    while True:
        ready, _, _ = select.select([sock, wake_r], [], [])
        if wake_r in ready:
            while os.read(wake_r, 4096) == 4096:
                pass
            _reap()
        if sock in ready:
            try:
                message, received, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, _MAX_FDS)
            except ConnectionError:
                message, received = b"", []
            if not message:
                return  # the caller closed its end or died: our children's parent-death signal follows
            try:
                _send_reply(sock, *_fork(child, message, received, (sock.fileno(), wake_r, wake_w)))
            except OSError:
                return


def _fork(child, message: bytes, received: list[int], own_fds: tuple[int, ...]):
    import dataclasses
    import pickle
    try:
        ctx, numbers, flags, cgroup_number = pickle.loads(message)
        if len(numbers) != len(received):
            raise OSError(0, "descriptors lost in transit")
        cgroup_fd = received[numbers.index(cgroup_number)] if cgroup_number in numbers else -1
        ctx = dataclasses.replace(ctx, parent_pid=os.getpid())

        def prepare():
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # A waits for its own child
            _put_back(received, numbers, flags, own_fds)
        # The server never starts a thread: its children may skip the fork handlers.
        pid, pidfd, in_cgroup = child.spawn(ctx, prepare, child._libc.fork_single_threaded,
                                            pidfd_above=max([*received, *numbers, *own_fds, 2]) + 1,
                                            cgroup_fd=cgroup_fd)
        cloned = pidfd >= 0
        if not cloned:
            pidfd = os.pidfd_open(pid)  # A cannot have been reaped yet: only this loop reaps
        return [pickle.dumps({"pid": pid, "cloned": cloned, "in_cgroup": in_cgroup})], [pidfd], pidfd
    except Exception as exc:
        return [pickle.dumps({"error": str(exc), "errno": getattr(exc, "errno", 0) or 0})], [], -1
    finally:
        for fd in received:
            os.close(fd)


def _send_reply(sock, parts, fds, pidfd) -> None:
    import socket
    socket.send_fds(sock, parts, fds)
    if pidfd >= 0:
        os.close(pidfd)


def _put_back(received: list[int], numbers: list[int], flags: list[bool], own_fds: tuple[int, ...]) -> None:
    """In A: move each received descriptor to the number it had in the caller."""
    base = max([*received, *numbers, *own_fds, 2]) + 1
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, base) for fd in received]  # out of the way first
    for fd in received:
        os.close(fd)
    for fd, number, cloexec in zip(moved, numbers, flags):
        os.dup2(fd, number, inheritable=not cloexec)
        os.close(fd)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
