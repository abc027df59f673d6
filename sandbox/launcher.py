"""The parent side of a launch: prepare, fork, map ids, place in the cgroup, supervise, clean up.

Everything that can fail without the child is done before the fork (profile checked, seccomp filter
compiled, mount plan built, cgroup created, idmapped trees opened), so most errors are reported
before any process exists. See protocol.py for the message sequence and child.py for the steps.
"""
from __future__ import annotations

import _thread
import errno
import fnmatch
import os
import select
import signal
import threading
import time
from dataclasses import field

from .compiled_dataclass import dataclass
from . import _libc, child, landlock, mounts, namespaces, protocol, terminal
from .errors import ExecError, SandboxError, SetupError
from .profile.model import DEFAULT_PATH, Profile

SETUP_TIMEOUT = 30.0  # seconds for the child to get from fork to exec; a hang here is a bug
EXIT_TIMEOUT = 124
EXIT_SETUP = 125


@dataclass
class Result:
    """What a sandboxed run did and used."""

    exit_code: int
    signal: int | None = None
    timed_out: bool = False
    oom_killed: bool = False
    wall_time: float = 0.0
    cpu_user: float | None = None
    cpu_system: float | None = None
    memory_peak: int | None = None
    pids_peak: int | None = None
    warnings: list[str] = field(default_factory=list)
    profile_name: str = ""
    profile_hash: str = ""
    argv: tuple[str, ...] = ()
    stdout: bytes | None = None
    stderr: bytes | None = None
    violations: list = field(default_factory=list)
    network: dict | None = None  # bridge mode: segment, address, egress as resolved (sandbox.net)

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        data.pop("stdout")
        data.pop("stderr")
        data["argv"] = list(self.argv)
        return data


def build_env(profile: Profile, environ: dict | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    env = {"PATH": DEFAULT_PATH, "HOME": profile.process.cwd}
    for pattern in profile.process.env_passthrough:
        for name, value in environ.items():
            if fnmatch.fnmatchcase(name, pattern):
                env[name] = value
    env.update(profile.process.env)
    return env


def _with_terminal_type(env: dict[str, str], tty: bool) -> dict[str, str]:
    """With --tty the caller's terminal is the workload's: its TERM describes it (unless the
    profile says otherwise); without one, programs are told there is no capable terminal."""
    if "TERM" not in env:
        env["TERM"] = os.environ.get("TERM", "dumb") if tty else "dumb"
    return env


def landlock_rules(profile: Profile) -> tuple | None:
    if not profile.landlock.enabled:
        return None
    fs = profile.filesystem
    writable = [m.target for m in fs.mounts if m.mode == "rw"] + [t.target for t in fs.tmpfs]
    if fs.dev:
        writable.append("/dev")
    if not fs.readonly_root:
        writable.append("/")
    rules = [("/", landlock.READ)]
    rules += [(path, landlock.READ | landlock.WRITE) for path in writable + list(profile.landlock.write)]
    rules += [(path, landlock.READ) for path in profile.landlock.read]
    return tuple(rules)


class _IdmappedTrees:
    """Detached, idmapped copies of rw bind sources, made while we are still host root."""

    def __init__(self):
        self.fds: dict[str, int] = {}
        self.warnings: list[str] = []

    def open(self, profile: Profile, idmap: namespaces.IdMap) -> None:
        if os.geteuid() != 0 or not profile.namespaces.user:
            return
        for mount in profile.filesystem.mounts:
            if mount.mode != "rw" or mount.idmap == "no" or not os.path.isdir(mount.source):
                continue
            info = os.stat(mount.source)
            if info.st_uid == idmap.host_uid and mount.idmap == "auto":
                continue
            try:
                self.fds[mount.target] = self._idmapped_tree(mount.source, info.st_uid, info.st_gid, idmap)
            except OSError as exc:
                if mount.idmap == "yes":
                    raise SetupError("idmapped mount", exc.errno or 0, f"{mount.source}: {exc.strerror}") from None
                self.warnings.append(f"{mount.source}: idmapped mount unavailable ({exc.strerror}); files "
                                     f"written there belong to host uid {idmap.host_uid}")

    @staticmethod
    def _idmapped_tree(source: str, owner_uid: int, owner_gid: int, idmap: namespaces.IdMap) -> int:
        # On disk owner -> the sandbox user's host id, so the workload may write and what it writes
        # lands on disk as the owner's.
        userns = namespaces.MappingUserNamespace(f"{owner_uid} {idmap.host_uid} 1\n",
                                                 f"{owner_gid} {idmap.host_gid} 1\n")
        try:
            tree = _libc.open_tree(_libc.AT_FDCWD, source, _libc.OPEN_TREE_CLONE | _libc.OPEN_TREE_CLOEXEC
                                   | _libc.AT_RECURSIVE)
            try:
                _libc.mount_setattr(tree, "", _libc.AT_EMPTY_PATH | _libc.AT_RECURSIVE,
                                    attr_set=_libc.MOUNT_ATTR_IDMAP | mounts.SECURE_ATTRS, userns_fd=userns.fd)
            except OSError:
                os.close(tree)
                raise
            return tree
        finally:
            userns.close()

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


class Launch:
    """One run of a profile. Use sandbox.run() unless you need the pieces."""

    def __init__(self, profile: Profile, argv: list[str] | tuple[str, ...] | None = None, *,
                 timeout: float | None = None, stdin=None, stdout=None, stderr=None, capture_output=False,
                 tty: bool = False, pass_fds: tuple[int, ...] = (), forward_signals: bool = True,
                 seccomp_mode: str | None = None, fork_server=None):
        self.profile = profile
        self.argv = tuple(argv) if argv else profile.process.command
        if not self.argv:
            raise SetupError("command", errno.EINVAL, "no command given and the profile has no process.command")
        self.timeout = timeout if timeout is not None else profile.limits.timeout
        self.capture_output = capture_output
        self.stdio = tuple(_fileno(s) for s in (stdin, stdout, stderr))
        self.tty = tty
        self.pass_fds = tuple(pass_fds)
        self.forward_signals = forward_signals
        if seccomp_mode not in (None, "report", "learn"):
            raise ValueError(f"seccomp_mode must be None, 'report' or 'learn', not {seccomp_mode!r}")
        if seccomp_mode == "report" and profile.seccomp is None:
            seccomp_mode = None  # nothing is denied, so nothing to report
        self.seccomp_mode = seccomp_mode
        self.recorded: list = []
        self.warnings: list[str] = []
        self.init_pid: int | None = None
        self._terminal = None
        self._channel = None
        self.child_pid: int | None = None
        self.fork_server = fork_server  # a forkserver.ForkServer, or None: fork from this process
        self._pidfd = -1  # the first process's, when the fork server made it (then not our child)
        self._cloned = False  # the first process is init itself (child.spawn)
        self._in_cgroup = False  # and was cloned into the sandbox's v2 cgroup
        self._release_error: SandboxError | None = None
        self.network = None  # sandbox.net.Attachment in bridge mode

    # ------------------------------------------------------------ preparation (no child yet)

    def _filter_policy(self):
        policy = self.profile.seccomp
        if self.seccomp_mode == "learn":
            from .seccomp.learn import learning_policy
            return learning_policy(policy.architectures if policy is not None else ("native",))
        if self.seccomp_mode == "report":
            from .seccomp.notify import reporting_policy
            return reporting_policy(policy)
        return policy

    def _compile_seccomp(self) -> bytes | None:
        policy = self._filter_policy()
        if policy is None:
            return None
        from .seccomp import compile_bpf
        try:
            return compile_bpf(policy)
        except (OSError, ValueError) as exc:
            raise SetupError("seccomp", getattr(exc, "errno", 0) or 0, f"cannot compile the filter: {exc}") from None

    def _context(self, idmap, trees, message_fd, go_fd, placed_fd, stdio, channel_fd=-1) -> child.ChildContext:
        profile = self.profile
        ns = profile.namespaces
        return child.ChildContext(
            argv=self.argv, env=_with_terminal_type(build_env(profile), self.tty), cwd=profile.process.cwd,
            uid=profile.process.user,
            gid=profile.process.group, hostname=profile.process.hostname if ns.uts else None,
            new_user_ns=ns.user, unshare_flags=namespaces.unshare_flags(ns), new_cgroup_ns=ns.cgroup,
            new_pid_ns=ns.pid, new_net_ns=ns.network and profile.network.mode != "host",
            plan=mounts.build_plan(profile, trees.fds, network_files=self.network.files if self.network else ())
            if ns.mount else None, join_userns_fd=self.network.userns_fd if self.network else -1,
            rlimits=profile.limits.rlimits, umask=profile.process.umask, keep_caps=profile.capabilities.keep,
            new_session=profile.process.new_session, landlock_rules=landlock_rules(profile),
            landlock_best_effort=profile.landlock.best_effort,
            seccomp_bpf=self._compile_seccomp(), message_fd=message_fd, go_fd=go_fd, placed_fd=placed_fd,
            parent_pid=os.getpid(),
            pass_fds=self.pass_fds, tty=self.tty, stdio=stdio, channel_fd=channel_fd,
            seccomp_listener=self.seccomp_mode is not None)

    # ------------------------------------------------------------ the run

    def run(self) -> Result:
        # The CLI starts cgroup priming before its imports (see cgprime.py); it is stopped before
        # the fork. Not started here: a warm API launch reaches the placement too soon to gain.
        from . import cgprime
        try:
            return self._run(cgprime)
        finally:
            cgprime.stop()  # idempotent; normally already stopped before the fork

    def _run(self, cgprime) -> Result:
        from . import cgroups
        started = time.monotonic()
        profile = self.profile
        try:
            idmap = namespaces.id_map_for(profile.process)
        except ValueError as exc:
            raise SetupError("id map", errno.EPERM, str(exc)) from None
        cgroups.gc()
        cgroup = cgroups.create(_cgroup_limits(profile))
        self.warnings += list(getattr(cgroup, "warnings", ()))
        trees = _IdmappedTrees()
        # Every fd we open is closed exactly once: with concurrent launches from threads, a second
        # close would hit whatever another thread has opened under the same number meanwhile.
        self._owned: set[int] = set()
        try:
            trees.open(profile, idmap)
            self.warnings += trees.warnings
            from . import net
            self.network = net.prepare(profile)
            if self.network is not None:
                self.warnings += self.network.warnings
            message_r, message_w = self._pipe()
            go_r, go_w = self._pipe()
            placed_r, placed_w = self._pipe()
            stdio, capture = self._stdio_pipes()
            channel_parent, channel_child = (_socketpair() if self.seccomp_mode or self.tty else (None, None))
            ctx = self._context(idmap, trees, message_w, go_r, placed_r, stdio,
                                channel_child.fileno() if channel_child else -1)
            cgprime.stop()  # no thread may be running at fork
            pid = self._start_first_process(ctx, (message_r, go_w, placed_w), cgroup)
            self.child_pid = pid
            if self._cloned:
                # Init waits for nothing else, and every page we touch before this is a
                # copy-on-write fault while init shares them: its maps first.
                self._release_error = self._release(pid, idmap, go_w)
            for fd in [message_w, go_r, placed_r] + [fd for fd in stdio if fd is not None and fd in capture.values()]:
                self._close(fd)
            trees.close()
            if channel_child is not None:
                channel_child.close()
            self._channel = channel_parent
            try:
                result = self._supervise(pid, idmap, cgroup, protocol.Reader(message_r), go_w, placed_w, capture)
            finally:
                if channel_parent is not None:
                    channel_parent.close()
        finally:
            for fd in list(self._owned):
                self._close(fd)
            trees.close()
            if self.network is not None:
                self.network.detach()
            cgroup.destroy()  # keeps the final figures: read once, after the last process is gone
            try:
                stats = cgroup.stats()
                oom = cgroup.oom_killed()
            except Exception:
                stats, oom = None, False
        result.wall_time = time.monotonic() - started
        result.oom_killed = result.oom_killed or oom
        if stats is not None:
            result.cpu_user = getattr(stats, "cpu_user_s", None)
            result.cpu_system = getattr(stats, "cpu_system_s", None)
            result.memory_peak = getattr(stats, "memory_peak_bytes", None)
            result.pids_peak = getattr(stats, "pids_peak", None)
        result.warnings = self.warnings
        result.network = self.network.record if self.network is not None else None
        result.profile_name = profile.name
        result.argv = self.argv
        return result

    def _start_first_process(self, ctx: child.ChildContext, parent_ends: tuple[int, ...], cgroup) -> int:
        """Start the launch's first process, A or (self._cloned) init itself, maybe already in
        the sandbox's v2 cgroup (self._in_cgroup): see child.spawn."""
        cgroup_fd = -1
        if cgroup.v2 is not None:
            cgroup_fd = os.open(cgroup.v2.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            self._owned.add(cgroup_fd)
        try:
            return self._spawn(ctx, parent_ends, cgroup_fd)
        finally:
            self._close(cgroup_fd)

    def _spawn(self, ctx: child.ChildContext, parent_ends: tuple[int, ...], cgroup_fd: int) -> int:
        server = self.fork_server
        if server is not None:
            from .forkserver import ForkServerError
            try:
                refusal = server.refusal()
                if refusal is None:
                    pid, self._pidfd, self._cloned, self._in_cgroup = server.fork_intermediate(
                        ctx, child.needed_fds(ctx), cgroup_fd)
                    self._owned.add(self._pidfd)
                    return pid
            except ForkServerError as exc:
                raise SetupError("fork server", exc.errno or 0, exc.strerror or str(exc)) from None
            self.warnings.append(f"fork server not used, forked directly: {refusal}")

        def prepare():
            for fd in parent_ends:
                os.close(fd)
        pid, pidfd, self._in_cgroup = child.spawn(ctx, prepare, os.fork, cgroup_fd=cgroup_fd)
        if pidfd >= 0:
            os.close(pidfd)  # our own child: waited for by pid, which stays its own until then
            self._cloned = True
        return pid

    def _signal_intermediate(self, pid: int, signum: int) -> None:
        try:
            if self._pidfd >= 0:
                signal.pidfd_send_signal(self._pidfd, signum)  # not our child: its pid may be reused
            else:
                os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def _wait_intermediate(self, pid: int) -> None:
        if self._pidfd < 0:
            os.waitpid(pid, 0)
            return
        select.select([self._pidfd], [], [])  # readable once it has exited; the server reaps it
        self._close(self._pidfd)
        self._pidfd = -1

    def _pipe(self) -> tuple[int, int]:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        self._owned.update((read_fd, write_fd))
        return read_fd, write_fd

    def _close(self, fd: int) -> None:
        if fd in self._owned:
            self._owned.discard(fd)
            os.close(fd)

    def _stdio_pipes(self):
        stdio = list(self.stdio)
        capture: dict[str, int] = {}
        if self.capture_output:
            wanted = ("stdout", "stderr") if self.capture_output is True else (self.capture_output,)
            for index, name in ((1, "stdout"), (2, "stderr")):
                if name not in wanted:
                    continue
                read_fd, write_fd = self._pipe()
                stdio[index] = write_fd
                capture[name] = write_fd
                capture[name + "_read"] = read_fd
        return tuple(stdio), capture

    def _supervise(self, pid, idmap, cgroup, reader, go_w, placed_w, capture) -> Result:
        result = Result(exit_code=EXIT_SETUP)
        setup_deadline = time.monotonic() + SETUP_TIMEOUT
        # The first process's placement starts at once, beside its own set-up: a cgroup.procs
        # write may wait for an RCU grace period, and this way the wait overlaps init's root.
        placer = _Placer(cgroup, pid, unified=not self._in_cgroup)
        try:
            return self._supervise_placed(pid, idmap, cgroup, reader, go_w, placed_w, capture, placer,
                                          result, setup_deadline)
        finally:
            placer.join()

    def _supervise_placed(self, pid, idmap, cgroup, reader, go_w, placed_w, capture, placer, result,
                          setup_deadline) -> Result:
        error = None
        status = None
        if self._cloned:  # in its user namespace from birth: released right after the clone
            error = self._release_error
        else:
            message = reader.next(setup_deadline)
            error = _error_from(message) if message is None or message["kind"] != protocol.READY else \
                self._release(pid, idmap, go_w)
        placement_error = None
        if self._cloned and error is None:
            self.init_pid = pid
            placement_error = self._place(cgroup, placer, placed_w)
        outputs = {capture[n + "_read"]: bytearray() for n in ("stdout", "stderr") if n in capture}
        # _next_event forgets a pipe at its EOF (del outputs[fd]), and that EOF can come before the
        # message pipe's: keep our own references to the buffers, or the output is lost.
        collected = dict(outputs)
        previous = self._install_signal_forwarding()
        deadline = None
        exec_seen = False
        try:
            while error is None or not reader.eof:
                now = time.monotonic()
                if exec_seen and self.timeout and deadline is None:
                    deadline = now + self.timeout
                limit = deadline if exec_seen else setup_deadline
                message = self._next_event(reader, outputs, limit)
                if message is None:
                    if reader.eof:
                        break
                    if limit is not None and time.monotonic() >= limit:
                        if exec_seen:
                            result.timed_out = True
                        else:
                            error = error or SetupError("setup", errno.ETIMEDOUT, "the sandbox did not start in time")
                        self._kill(pid, cgroup)
                        limit = None
                        deadline = float("inf")
                        setup_deadline = None
                    continue
                kind = message["kind"]
                if kind == protocol.INIT_PID:
                    self.init_pid = message["pid"]
                    # Kept aside: when init failed meanwhile, its own report (next) says more.
                    placement_error = self._place(cgroup, placer, placed_w)
                elif kind == protocol.EXEC:
                    exec_seen = True
                    if self.tty:
                        self._terminal = terminal.Relay(self._receive_fd(b"T"))
                    if self.seccomp_mode:
                        self._start_recorder()
                elif kind == protocol.EXIT:
                    status = message["status"]
                elif kind == protocol.WARNING:
                    self.warnings.append(message["message"])
                elif kind == protocol.ERROR:
                    if error is None:
                        error = _error_from(message, self.argv[0])
            self._drain(outputs)
            error = error or placement_error
        finally:
            self._restore_signals(previous)
            if error is not None or result.timed_out:
                self._kill(pid, cgroup)
            self._wait_intermediate(pid)
            self._stop_recorder(result)
        if "stdout_read" in capture:
            result.stdout = bytes(collected.get(capture["stdout_read"], b""))
        if "stderr_read" in capture:
            result.stderr = bytes(collected.get(capture["stderr_read"], b""))
        if error is not None:
            raise error
        if result.timed_out:
            result.exit_code = EXIT_TIMEOUT
        elif status is not None:
            if os.WIFSIGNALED(status):
                result.signal = os.WTERMSIG(status)
                result.exit_code = 128 + result.signal
            else:
                result.exit_code = os.waitstatus_to_exitcode(status)
        else:
            # init died without a word: killed from outside (OOM, or a signal to the whole tree)
            result.signal = signal.SIGKILL
            result.exit_code = 128 + signal.SIGKILL
        return result

    def _release(self, pid: int, idmap, go_w: int) -> SandboxError | None:
        """Write the first process's id maps, then let it go on."""
        try:
            if self.profile.namespaces.user:
                (self.network or namespaces).write_id_maps(pid, idmap)
            os.write(go_w, protocol.GO)
            return None
        except OSError as exc:
            return SetupError("id map", exc.errno or 0, exc.strerror or str(exc))
        finally:
            self._close(go_w)

    def _place(self, cgroup, placer: "_Placer", placed_w: int) -> SandboxError | None:
        """Once the first process is placed, move B (init) too unless it was B, then release B:
        it forks the workload only after this, so nothing of the workload runs outside the cgroup."""
        try:
            placer.join()
            if placer.error is not None:
                raise placer.error
            if self.init_pid != placer.pid:
                cgroup.add_process(self.init_pid)  # forked before A was placed, most likely
            if self.network is not None:
                self.network.attach(self.init_pid)
            os.write(placed_w, protocol.GO)
            return None
        except OSError as exc:
            return SetupError("cgroup", exc.errno or 0, exc.strerror or str(exc))
        except SandboxError as exc:
            return exc
        finally:
            self._close(placed_w)

    def _start_recorder(self) -> None:
        """Receive the workload's seccomp listener and serve it in a thread (report/learn modes)."""
        from .seccomp.notify import Recorder
        listener = self._receive_fd(b"L")
        if listener < 0:
            self.warnings.append("seccomp listener not received: violations are not reported")
            return
        policy = self._filter_policy() if self.seccomp_mode == "learn" else self.profile.seccomp
        recorder = Recorder(listener, policy, learn=self.seccomp_mode == "learn")
        self._recorder_stop = threading.Event()
        self._recorder_thread = threading.Thread(target=recorder.run_until, args=(self._recorder_stop,),
                                                 name="sandbox-seccomp", daemon=True)
        self._recorder = recorder
        self._recorder_thread.start()

    def _receive_fd(self, tag: bytes) -> int:
        """The next fd the workload passes on the channel, which must carry `tag`; -1 if none comes."""
        ready, _, _ = select.select([self._channel], [], [], 10.0)
        if not ready:
            return -1
        import socket  # imported by _socketpair() already
        message, received, _, _ = socket.recv_fds(self._channel, 16, 1)
        if message != tag or not received:
            for fd in received:
                os.close(fd)
            return -1
        return received[0]

    def _stop_recorder(self, result: Result) -> None:
        thread = getattr(self, "_recorder_thread", None)
        if thread is None:
            return
        self._recorder_stop.set()
        thread.join(timeout=5)
        self.recorded = self._recorder.violations()
        result.violations = [{"syscall": v.syscall, "action": v.action, "count": v.count,
                              "first_pid": v.first_pid, "first_args": [hex(a) for a in v.first_args[:6]]}
                             for v in self.recorded]

    def _next_event(self, reader, outputs, limit):
        """A protocol message, relaying captured output and the terminal while waiting."""
        while True:
            if b"\n" in reader.buffer or reader.eof:
                return reader.next(limit)
            relay = self._terminal
            watch = [reader.fd] + list(outputs) + (relay.watched() if relay else [])
            timeout = None if limit is None or limit == float("inf") else max(0.0, limit - time.monotonic())
            try:
                ready, _, _ = select.select(watch, [], [], timeout)
            except InterruptedError:
                continue
            if not ready:
                return None
            for fd in ready:
                if fd == reader.fd:
                    chunk = os.read(fd, 65536)
                    if chunk:
                        reader.buffer += chunk
                    else:
                        reader.eof = True
                elif fd in outputs:
                    chunk = os.read(fd, 65536)
                    if chunk:
                        outputs[fd] += chunk
                    else:
                        del outputs[fd]
                elif relay:
                    relay.pump(fd)

    def _drain(self, outputs):
        for fd in list(outputs):
            while True:
                ready, _, _ = select.select([fd], [], [], 5.0)
                chunk = os.read(fd, 65536) if ready else b""
                if not chunk:
                    break
                outputs[fd] += chunk
        if self._terminal:
            self._terminal.close()
            self._terminal = None

    def _kill(self, pid: int, cgroup) -> None:
        try:
            cgroup.kill_all()
        except Exception:
            pass
        if self.init_pid:
            try:
                os.kill(self.init_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._signal_intermediate(pid, signal.SIGKILL)

    def _install_signal_forwarding(self):
        if not self.forward_signals or threading.current_thread() is not threading.main_thread():
            return None
        previous = {}

        def forward(signum, _frame):
            if self.init_pid:
                try:
                    os.kill(self.init_pid, signum)
                except ProcessLookupError:
                    pass
            elif self.child_pid:
                self._signal_intermediate(self.child_pid, signum)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                       signal.SIGUSR2):
            previous[signum] = signal.signal(signum, forward)
        return previous

    @staticmethod
    def _restore_signals(previous) -> None:
        for signum, handler in (previous or {}).items():
            signal.signal(signum, handler)


class _Placer:
    """Writes the first process's pid into the sandbox's cgroup in a thread (started after the
    fork: no thread may run at fork time). join() before touching the cgroup again."""

    def __init__(self, cgroup, pid: int, unified: bool = True):
        self.pid = pid
        self.error: BaseException | None = None
        self._done = _thread.allocate_lock()
        if not unified and cgroup.v1 is None:
            return  # cloned into its only cgroup: nothing to do
        self._done.acquire()
        # A bare thread: threading.Thread.start() waits until the thread has run, ~1 ms when
        # the child keeps the other core busy, and that delayed the id maps the child waits for.
        _thread.start_new_thread(self._run, (cgroup, pid, unified))

    def _run(self, cgroup, pid: int, unified: bool) -> None:
        try:
            cgroup.add_process(pid, unified)
        except BaseException as exc:  # reported by _place, in the launching thread
            self.error = exc
        finally:
            self._done.release()

    def join(self) -> None:
        with self._done:  # held until _run is over; taking it again later returns at once
            pass


def _socketpair():
    import socket  # only for the launches that pass descriptors back (tty, seccomp reports): ~2 ms
    return socket.socketpair()


def _fileno(stream) -> int | None:
    if stream is None:
        return None
    if isinstance(stream, int):
        return stream
    return stream.fileno()


def _error_from(message: dict | None, argv0: str = "") -> SandboxError:
    if message is None:
        return SetupError("setup", 0, "the sandbox process exited before reporting (see above)")
    if message.get("step") == "exec":
        return ExecError(argv0, message.get("errno") or errno.ENOEXEC)
    step, err = message.get("step", "setup"), message.get("errno") or 0
    text = message.get("message", "")
    hint = SETUP_HINTS.get((step, err))
    return SetupError(step, err, f"{text}; {hint}" if hint else text)


# What to do about the failures a machine's configuration causes, next to the step that meets them.
SETUP_HINTS = {
    ("user namespace", errno.EPERM): "user namespaces are not allowed for this user here: check the sysctls "
        "user.max_user_namespaces and, on Ubuntu, kernel.apparmor_restrict_unprivileged_userns",
    ("user namespace", errno.ENOSPC): "the limit on user namespaces is reached: raise user.max_user_namespaces",
    ("user namespace", errno.EINVAL): "this process cannot create a user namespace (is it threaded, "
        "or inside a chroot?)",
    ("namespaces", errno.EPERM): "a namespace could not be created in the new user namespace; inside another "
        "container, it may forbid nesting (set the matching namespaces.* = false to run without)",
    ("namespaces", errno.ENOSPC): "a namespace limit is reached: see the user.max_*_namespaces sysctls",
}


def _cgroup_limits(profile: Profile):
    from .cgroups import CgroupLimits
    limits = profile.limits
    return CgroupLimits(memory=limits.memory, swap=limits.swap, memory_high=limits.memory_high,
                        cpus=limits.cpus, cpu_weight=limits.cpu_weight, pids=limits.pids,
                        io_weight=limits.io_weight, required=frozenset(limits.required),
                        io_max=tuple((e.device, e.read_bps, e.write_bps, e.read_iops, e.write_iops)
                                     for e in limits.io_max))


def run(profile: Profile | str, argv=None, **options) -> Result:
    """Run `argv` (default: the profile's command) in a sandbox built from `profile`.

    Options: timeout, stdin, stdout, stderr (fds or files), capture_output (True, or "stdout" or
    "stderr" for one of them), tty, pass_fds,
    forward_signals, fork_server (a ForkServer, for callers that launch many sandboxes from a big
    process: see sandbox.forkserver). Raises ProfileError, SetupError, ExecError (see sandbox.errors).
    """
    if isinstance(profile, str):
        from .profile import load_profile
        profile = load_profile(profile)
    from .audit import AuditRecord
    from .profile.dump import profile_hash
    digest = profile_hash(profile)
    launch = Launch(profile, argv, **options)
    audit = AuditRecord(profile, launch.argv, digest)
    try:
        result = launch.run()
    except SandboxError as exc:
        audit.finish(error=exc)
        raise
    result.profile_hash = digest
    audit.finish(result)
    if audit.warning:
        result.warnings.append(audit.warning)
    return result
