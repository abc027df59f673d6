"""The child side of a launch, in the order the steps happen. Nothing here returns.

    intermediate (A)   parent-death signal, new session, drop supplementary groups,
                       unshare(user) -> parent writes id maps and places us in the cgroup,
                       unshare(mount, pid, net, ipc, uts, time, cgroup), fork init
                       (skipped when the forking process has one thread and no supplementary
                       groups to drop: it then makes init with clone3() straight into the new
                       namespaces, and init does A's remaining steps, see run_cloned_init)
    init (B)           pid 1 of the new pid namespace: a neutral command line, build the root and
                       pivot_root into it, hostname, loopback, rlimits, fork the workload, drop
                       its own capabilities, then reap and forward signals
    workload (C)       close inherited fds, new session, ids, capabilities, no_new_privs,
                       Landlock, "created", wait at the start gate, seccomp (last: it may forbid
                       everything after it), exec

Each step runs inside `step(name)`: any exception becomes an (step, errno, message) report to the
parent and the process exits 125 at once, skipping Python's clean-up (os._exit), as every child here
must, so that nothing the launcher holds (buffers, atexit handlers, cgroup objects) runs twice.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import select
import signal
import termios

import prctl


# Everything the child needs is imported here, in the parent: after pivot_root the host's files,
# including this package, are out of reach.
from .compiled_dataclass import dataclass
from . import _libc, capabilities, execfail, faults, fds, landlock, mounts, network, protocol, rlimits
from .profile.model import DEFAULT_PATH
from .seccomp import load_bpf

SETUP_FAILED = 125
PR_SET_CHILD_SUBREAPER = 36
PR_SET_DUMPABLE = 4
INIT_TITLE = b"sandbox-init"  # what /proc/1/cmdline shows inside
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                     signal.SIGUSR2, signal.SIGCONT, signal.SIGWINCH)
_RESET_SIGNALS = tuple(int(s) for s in (*FORWARDED_SIGNALS, signal.SIGPIPE, signal.SIGXFSZ))


@dataclass(frozen=True)
class ChildContext:
    """Everything the child needs, prepared by the parent before fork (so failures happen early)."""

    argv: tuple[str, ...]
    env: dict
    cwd: str
    uid: int
    gid: int
    hostname: str | None  # None: keep the host's (no UTS namespace)
    new_user_ns: bool
    unshare_flags: int  # everything but user and cgroup
    new_cgroup_ns: bool
    new_pid_ns: bool
    new_net_ns: bool
    plan: mounts.MountPlan | None  # None: no mount namespace
    rlimits: tuple
    umask: int
    keep_caps: tuple[str, ...]
    new_session: bool
    landlock_rules: tuple | None
    landlock_best_effort: bool
    seccomp_bpf: bytes | None
    message_fd: int
    go_fd: int
    placed_fd: int  # one byte from the parent once A and B are in the sandbox's cgroup
    parent_pid: int
    parent_pidfd: int = -1  # cloned init only: the forking process, to know it is still there
    pass_fds: tuple[int, ...] = ()
    tty: bool = False  # a fresh pty from the sandbox's own devpts; its master goes to the parent
    stdio: tuple = (None, None, None)  # fds to become 0, 1, 2; None keeps the launcher's
    seccomp_listener: bool = False  # report or learn: hand the notification fd to the parent
    channel_fd: int = -1  # unix socket to pass fds to the parent: b"T" pty master, b"L" seccomp listener
    gate_fd: int = -1  # the start gate: the workload execs once one byte can be read from it
    detached: bool = False  # the launcher leaves after "created" (OCI runtime): no parent-death signal
    # What only some front ends ask for (the OCI runtime); the defaults are a profile's launch.
    join_ns_fds: tuple = ()  # (fd, CLONE_NEW* flag): namespaces joined by path, before any is made
    init_uid: int | None = None  # the ids init takes in a new user namespace (default: uid, gid)
    init_gid: int | None = None
    init_caps: tuple[str, ...] | None = None  # None: init drops every capability only in a user namespace
    groups: tuple[int, ...] | None = None  # the workload's supplementary groups; None: none set
    cap_sets: object = None  # plan.CapabilitySets: the five sets as given, instead of keep_caps
    no_new_privs: bool = True
    sysctls: tuple = ()  # (name, value), written by init through the host's /proc in the new namespaces
    domainname: str | None = None
    oom_score_adj: int | None = None
    personality: int | None = None
    time_offsets: str | None = None  # /proc/self/timens_offsets text: init makes the time namespace
    hooks_fd: int = -1  # init waits for one byte here before building the root (createRuntime hooks)
    start_hooks: tuple = ()  # (path, args, env, timeout) run by the workload past the gate (startContainer)
    hook_state: str = ""  # the OCI state JSON those hooks read on stdin
    seccomp_log: bool = False
    new_keyring: str | None = None  # a session keyring of this name (OCI: the host's is not shared)
    seccomp_agent: bool = False  # OCI listenerPath: the filter's listener goes to the launcher before "created"
    agent_fd: int = -1  # exec only: the socket the listener goes out on
    faults: tuple = ()  # tests only: (step, errno) pairs from sandbox.faults, made to fail
    join_userns_fd: int = -1  # rootless bridge: the segment's user namespace, which ours must descend from
    seccomp_floor_bpf: bytes | None = None  # the runtime floor's filter, loaded before seccomp_bpf (below it)
    landlock_scoped: bool = True  # signals and abstract sockets scoped to the Landlock domain


class _StepFailed(Exception):
    pass


class step:
    """``with step(ctx, name):`` turns any exception into a (step, errno, message) report to the
    parent, then _StepFailed. A class rather than @contextmanager: the generators cost a launch's
    freshly forked children ~70 more copy-on-write faults over their ~26 steps (~0.5 ms)."""

    __slots__ = ("_ctx", "_name")

    def __init__(self, ctx: ChildContext, name: str):
        self._ctx, self._name = ctx, name

    def __enter__(self) -> None:
        if self._ctx.faults:  # tests only (sandbox/faults.py): this step fails as the kernel would
            try:
                faults.fail_if_injected(self._name, self._ctx.faults)
            except OSError as exc:
                self.__exit__(OSError, exc, None)  # reports it and raises _StepFailed

    def __exit__(self, kind, exc, _traceback) -> bool:
        if kind is None or kind is _StepFailed or not issubclass(kind, Exception):
            return False
        if isinstance(exc, OSError):
            # Name the path when there is one ("working directory: /nope: No such file or directory").
            where = f"{exc.filename}: " if exc.filename else ""
            _report(self._ctx, self._name, exc.errno or 0, where + (exc.strerror or str(exc)))
        else:  # a bug must still reach the parent as a message, not a hang
            _report(self._ctx, self._name, 0, f"{kind.__name__}: {exc}")
        raise _StepFailed from None


def _report(ctx: ChildContext, step_name: str, err: int, message: str, **extra) -> None:
    """An error to the parent; after a detached launch's parent has gone, to stderr instead."""
    if ctx.message_fd >= 0:
        protocol.send_error(ctx.message_fd, step_name, err, message, **extra)
        return
    name = f" ({errno.errorcode.get(err, err)})" if err else ""
    try:
        os.write(2, f"sandbox: {step_name}: {message}{name}\n".encode(errors="replace"))
    except OSError:
        pass


def _die(code: int = SETUP_FAILED):
    os._exit(code)


def spawn(ctx: ChildContext, prepare, fork, pidfd_above: int = 0, cgroup_fd: int = -1) -> tuple[int, int, bool]:
    """Start a launch's first process: (pid, pidfd, in_cgroup), the pidfd -1 unless it was
    cloned. When the calling process may, that is init itself, made by clone3() straight into the
    new namespaces, one process and one fork fewer than A, and, given cgroup_fd (the sandbox's
    cgroup v2 directory), straight into that cgroup (in_cgroup): no migration to wait for later.
    Otherwise A, made by ``fork``. ``prepare()`` runs first in the child; its descriptors stay
    below ``pidfd_above``."""
    # Joining namespaces by path takes setns() before the others exist, and a sandbox on a segment
    # joins the segment's user namespace first (rootless bridge): only A can.
    parent_pidfd = (_own_pidfd(pidfd_above) if _may_clone() and not ctx.join_ns_fds and ctx.join_userns_fd < 0
                    else -1)
    if parent_pidfd >= 0:
        cloned_ctx = dataclasses.replace(ctx, parent_pidfd=parent_pidfd)
        pid, pidfd, in_cgroup = -1, -1, False
        for target in dict.fromkeys((cgroup_fd, -1)):  # the cgroup may refuse: then without it
            try:
                pid, pidfd = _libc.clone3_single_threaded(clone_flags(ctx), target)
                in_cgroup = target >= 0
                break
            except OSError as exc:
                if exc.errno == errno.ENOSYS:  # no clone3 here (old kernel, or a container's filter)
                    _clone_refused.append(exc)
                    break
        if pid == 0:
            try:
                _prepare(prepare, ctx)
                run_cloned_init(cloned_ctx)
            finally:
                os._exit(SETUP_FAILED)
        os.close(parent_pidfd)
        if pid > 0:
            return pid, pidfd, in_cgroup
        # else A, which then reports the namespace that failed, if one did
    pid = fork()
    if pid == 0:
        try:
            _prepare(prepare, ctx)
            run_intermediate(ctx)
        finally:
            os._exit(SETUP_FAILED)  # whatever happens, never return into the caller
    return pid, -1, False


def _prepare(prepare, ctx: ChildContext) -> None:
    try:
        prepare()
    except BaseException as exc:  # a bug: say so rather than die without a word
        protocol.send_error(ctx.message_fd, "start", getattr(exc, "errno", 0) or 0, f"{type(exc).__name__}: {exc}")
        raise


_clone_refused: list = []


def _may_clone() -> bool:
    # Root's supplementary groups must go before the user namespace exists, which only A can do.
    try:
        return (not _clone_refused and (os.geteuid() != 0 or not os.getgroups()) and _libc.only_thread())
    except OSError:  # no /proc: we cannot tell whether other threads exist
        return False


def shed_root_groups() -> None:
    """For a process of ours that launches as root (the CLI, the fork server): drop its own
    supplementary groups, which no sandbox gets anyway, so that _may_clone() holds."""
    if os.geteuid() == 0 and os.getgroups():
        try:
            os.setgroups([])
        except OSError:
            pass  # root of a user namespace that denies it: A then drops them its own way


def _own_pidfd(above: int) -> int:
    """A pidfd of this process at a number >= above, for init to watch; -1 without pidfds."""
    try:
        own = os.pidfd_open(os.getpid())
    except OSError:  # a kernel before 5.3: clone3 is missing too
        return -1
    try:
        return fcntl.fcntl(own, fcntl.F_DUPFD_CLOEXEC, above)
    finally:
        os.close(own)


def clone_flags(ctx: ChildContext) -> int:
    return ctx.unshare_flags | (_libc.CLONE_NEWUSER if ctx.new_user_ns else 0)


def run_intermediate(ctx: ChildContext):
    """Process A: still in the host pid namespace; becomes the parent of the sandbox's init."""
    try:
        with step(ctx, "parent-death signal"):
            _arm_parent_death_signal(ctx)
            os.setsid()  # terminal signals go to the launcher only, which forwards them once
        with step(ctx, "file descriptors"):
            # We never exec, so close-on-exec does not protect us: a pipe end the caller holds
            # open here would, for one, keep the workload's stdin from ever seeing EOF.
            fds.close_all_except(needed_fds(ctx))
        with step(ctx, "supplementary groups"):
            if os.geteuid() == 0:
                os.setgroups([])  # host groups would otherwise follow us in, unmapped but effective
        if ctx.join_ns_fds:
            with step(ctx, "join namespaces"):
                _join_namespaces(ctx)
        if ctx.new_user_ns:
            with step(ctx, "user namespace"):
                if ctx.join_userns_fd >= 0:  # see sandbox/net/segment.py
                    _libc.setns(ctx.join_userns_fd, _libc.CLONE_NEWUSER)
                _libc.unshare(_libc.CLONE_NEWUSER)
        protocol.send(ctx.message_fd, protocol.READY)
        _take_sandbox_ids(ctx)
        with step(ctx, "namespaces"):
            _libc.unshare(ctx.unshare_flags)
        with step(ctx, "fork init"):
            pid = _libc.fork_single_threaded()
        if pid == 0:
            run_init(ctx)
        protocol.send(ctx.message_fd, protocol.INIT_PID, pid=pid)
        os.close(ctx.message_fd)
        os.close(ctx.placed_fd)
        if ctx.detached:
            _die(0)  # init is left to whoever reaps orphans here (the engine's monitor), as with runc
        _, status = os.waitpid(pid, 0)
        _die(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status) else SETUP_FAILED)
    except _StepFailed:
        _die()
    except BaseException:
        _die()


def _join_namespaces(ctx: ChildContext) -> None:
    """setns() into the namespaces given by path (a pod's network, say), the user namespace first:
    joining the others then needs capabilities in it."""
    ordered = sorted(ctx.join_ns_fds, key=lambda item: item[1] != _libc.CLONE_NEWUSER)
    for fd, nstype in ordered:
        _libc.setns(fd, nstype)
        os.close(fd)


def run_cloned_init(ctx: ChildContext):
    """Process B made by clone3() already in every new namespace, the forking process's only
    thread having had no supplementary groups (which only A could drop: setgroups is denied in
    the user namespace). Does what A would have done after its fork, then becomes init."""
    try:
        with step(ctx, "parent-death signal"):
            _arm_parent_death_signal(ctx)
            os.setsid()
        with step(ctx, "file descriptors"):
            fds.close_all_except(needed_fds(ctx))
        _take_sandbox_ids(ctx)
        os.close(ctx.parent_pidfd)
    except _StepFailed:
        _die()
    except BaseException:
        _die()
    run_init(ctx)


def _take_sandbox_ids(ctx: ChildContext) -> None:
    """Wait until the parent has written our id maps, then become the sandbox user."""
    with step(ctx, "wait for id maps"):
        if os.read(ctx.go_fd, 1) != protocol.GO:
            _die()
        os.close(ctx.go_fd)
    if not ctx.new_user_ns and ctx.init_uid is None:
        return  # (a user namespace joined by path with init_ids: init takes them there too)
    with step(ctx, "user and group ids"):
        # Host root is unmapped inside: files it creates would fail with EOVERFLOW. As the
        # sandbox user we keep every capability in our own namespace (it is not ns-root
        # that changes), so the root can be built; the workload drops them later. An OCI
        # container maps its own root: init becomes that (init_uid), and the workload changes later.
        uid = ctx.uid if ctx.init_uid is None else ctx.init_uid
        gid = ctx.gid if ctx.init_gid is None else ctx.init_gid
        if ctx.groups is not None:
            try:
                os.setgroups([])  # allowed when a privileged parent wrote the maps
            except PermissionError:
                pass  # setgroups denied in this user namespace: there are none to drop
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    with step(ctx, "parent-death signal"):
        # The kernel clears the parent-death signal whenever the effective ids change
        # (commit_creds), which they just did when root launched (host 0 -> 65534).
        # Without re-arming it, a SIGKILLed launcher leaves the whole sandbox running.
        _arm_parent_death_signal(ctx)


def _arm_parent_death_signal(ctx: ChildContext) -> None:
    """SIGKILL when our parent (launcher or fork server) dies, and exit now if it already has.
    A asks getppid(); a cloned init's parent is outside its pid namespace (getppid() is 0), so
    it asks the parent's pidfd instead (readable once it has exited). A detached sandbox (the
    OCI runtime) outlives the process that created it: nothing to arm."""
    if ctx.detached:
        return
    capabilities.set_parent_death_signal(signal.SIGKILL)
    if ctx.parent_pidfd >= 0:
        gone = bool(select.select([ctx.parent_pidfd], [], [], 0)[0])
    else:
        gone = os.getppid() != ctx.parent_pid
    if gone:
        _die()


def needed_fds(ctx: ChildContext) -> set[int]:
    """The descriptors A keeps: the standard ones and every one ctx names."""
    needed = {0, 1, 2, ctx.message_fd, ctx.go_fd, ctx.placed_fd, ctx.gate_fd, ctx.channel_fd, ctx.parent_pidfd,
              ctx.join_userns_fd, ctx.hooks_fd, *ctx.pass_fds, *(fd for fd, _ in ctx.join_ns_fds)}
    needed.update(fd for fd in ctx.stdio if fd is not None)
    if ctx.plan is not None:
        needed.update(op.idmap_fd for op in ctx.plan.operations if getattr(op, "idmap_fd", -1) >= 0)
    return {fd for fd in needed if fd >= 0}


def run_init(ctx: ChildContext):
    """Process B: pid 1 inside. Builds the root, then stays as the reaper."""
    try:
        if ctx.time_offsets is not None:
            with step(ctx, "time namespace"):
                # Offsets can only be set before a process enters (the workload will be the first).
                # Our /proc files are ours only while we are dumpable, which the change of ids may
                # have undone: dumpable for this one write, while nothing of the container exists
                # yet (init becomes non-dumpable for good before it forks the workload).
                _libc.unshare(_libc.CLONE_NEWTIME)
                _while_dumpable(_write_proc, "/proc/self/timens_offsets", ctx.time_offsets)
        with step(ctx, "init"):
            if not ctx.detached:
                capabilities.set_parent_death_signal(signal.SIGKILL)
            identity = _caller_identity_area()  # read from the host's /proc, while it is there
            if ctx.start_hooks:
                # The hooks' state names init's pid as the host sees it: the host's /proc, still ours.
                ctx = dataclasses.replace(ctx, hook_state=ctx.hook_state.replace(
                    '"pid": 0', f'"pid": {int(os.readlink("/proc/self"))}', 1))
        children_fd = -1
        if not ctx.new_pid_ns:
            with step(ctx, "child subreaper"):
                # Orphans come to us instead of the host's init, to be killed when the workload ends.
                _libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
                children_fd = os.open(f"/proc/self/task/{os.getpid()}/children", os.O_RDONLY | os.O_CLOEXEC)
        if ctx.oom_score_adj is not None:
            with step(ctx, "oom score"):
                # Dumpable for the write (our /proc files are root's otherwise, unreachable in a user
                # namespace); nothing of the container exists yet to make use of it.
                _while_dumpable(_write_proc, "/proc/self/oom_score_adj", str(ctx.oom_score_adj))
        if ctx.sysctls:
            with step(ctx, "sysctl"):
                # Through the host's /proc, still ours: each entry is of the namespaces we are in.
                for name, value in ctx.sysctls:
                    _write_proc("/proc/sys/" + name.replace(".", "/"), value)
        if ctx.hooks_fd >= 0:
            with step(ctx, "hooks"):
                # Our namespaces exist; the launcher runs the createRuntime/createContainer hooks now.
                protocol.send(ctx.message_fd, protocol.HOOKS)
                if os.read(ctx.hooks_fd, 1) != protocol.GO:
                    _die()
                os.close(ctx.hooks_fd)
        if ctx.plan is not None:
            with step(ctx, "mount"):
                try:
                    mounts.enter_new_root(ctx.plan, ctx.faults)
                except mounts.MountError as exc:
                    _report(ctx, "mount", exc.errno or 0, exc.strerror or str(exc))
                    raise _StepFailed from None
        if ctx.hostname is not None:
            with step(ctx, "hostname"):
                _libc.sethostname(ctx.hostname)
        if ctx.domainname is not None:
            with step(ctx, "domainname"):
                _libc.setdomainname(ctx.domainname)
        if ctx.new_net_ns:
            with step(ctx, "network"):
                network.bring_up_loopback()
        with step(ctx, "rlimits"):
            for warning in rlimits.apply(ctx.rlimits) or ():
                protocol.send(ctx.message_fd, protocol.WARNING, message=warning)
        with step(ctx, "wait for cgroup placement"):
            # The parent moves A and us into the sandbox's cgroup while we built the root (a
            # cgroup.procs write can wait ~10 ms for an RCU grace period); nothing of the
            # workload runs before it is done.
            if os.read(ctx.placed_fd, 1) != protocol.GO:
                _die()
            os.close(ctx.placed_fd)
        with step(ctx, "init"):
            # Before any process of the workload exists; not sooner, for the launcher, which runs as
            # the same user when rootless, may still open /proc/<init>/ns/* until it has placed us
            # (a segment's interface is attached then).
            _shed_caller_identity(identity)
        if ctx.new_cgroup_ns:
            with step(ctx, "cgroup namespace"):  # only now: its root is the cgroup we were placed in
                _libc.unshare(_libc.CLONE_NEWCGROUP)
        with step(ctx, "fork workload"):
            workload = _libc.fork_single_threaded()
        if workload == 0:
            run_workload(ctx)
        with step(ctx, "init"):
            if ctx.gate_fd >= 0:
                os.close(ctx.gate_fd)
            if ctx.detached:  # the launcher leaves after "created": our status is our exit code
                os.close(ctx.message_fd)
                ctx = dataclasses.replace(ctx, message_fd=-1)
            if ctx.new_user_ns or ctx.init_caps is not None:
                # Init only reaps and forwards signals to a process of its own uid: it keeps no
                # capability (in the user namespace it had them all) for the life of the sandbox.
                # An OCI container's workload may change uid: init keeps CAP_KILL to reach it.
                capabilities.prepare(ctx.init_caps or ())
                capabilities.finish(ctx.init_caps or ())
        _reap_until(ctx, workload, children_fd)
    except _StepFailed:
        _die()
    except BaseException:
        _die()


def _reap_until(ctx: ChildContext, workload: int, children_fd: int = -1):
    """Init's job: forward signals to the workload, reap every orphan, report the workload's status."""
    def forward(signum, _frame):
        try:
            os.kill(workload, signum)
        except ProcessLookupError:
            pass
    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            _die(SETUP_FAILED)
        if pid == workload:
            if ctx.message_fd >= 0:
                protocol.send(ctx.message_fd, protocol.EXIT, status=status)
            if children_fd >= 0:
                _kill_descendants(children_fd)
            # Leaving pid 1 makes the kernel kill everything else in the namespace. The workload's
            # status is also our exit status (what an engine's monitor sees of a detached sandbox).
            _die(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.waitstatus_to_exitcode(status))


def _write_proc(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _while_dumpable(function, *args) -> None:
    """function(*args) with this process dumpable, then as dumpable as it was."""
    was = prctl.get_dumpable()
    prctl.set_dumpable(1)
    try:
        function(*args)
    finally:
        prctl.set_dumpable(was)


def _caller_identity_area() -> tuple[int, int, int, int]:
    """Where this process's argv and environment strings are (arg_start, arg_end, env_start,
    env_end: fields 48-51 of proc(5)), from the host's /proc: the root is not built yet."""
    with open("/proc/self/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()  # fields[0] is field 3
    return tuple(int(value) for value in fields[45:49])


def _shed_caller_identity(area: tuple[int, int, int, int]) -> None:
    """Init is a copy of the launching process: blank the command line and environment its
    memory still holds (what /proc/1/cmdline and /proc/1/environ show; a caller's arguments may
    carry tokens), and make it non-dumpable, so that no process of the sandbox can read the rest
    of that copy through /proc/1/mem or ptrace, whatever its ids. See docs/threat-model.md."""
    arg_start, arg_end, env_start, env_end = area
    _libc.prctl(PR_SET_DUMPABLE, 0)
    _libc.overwrite(arg_start, arg_end - arg_start, INIT_TITLE)
    _libc.overwrite(env_start, env_end - env_start, b"")


def _kill_descendants(children_fd: int) -> None:
    """Without a pid namespace, nobody kills what the workload left running: we do. As a child
    subreaper we have inherited every orphan, so our children are all that is left. The list
    comes from the host's /proc, opened before pivot_root: the sandbox may have none."""
    while True:
        try:
            children = [int(pid) for pid in os.pread(children_fd, 65536, 0).split()]
        except OSError:
            children = []
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.wait()
        except ChildProcessError:
            return


def run_workload(ctx: ChildContext):
    """Process C: becomes the workload."""
    try:
        channel = None
        if ctx.channel_fd >= 0:
            # Imported by the launcher (or fork server) when it made the channel: no file is read
            # here. Made before the filter: creating a socket object makes system calls of its own.
            import socket
            channel = socket.socket(fileno=ctx.channel_fd)
        stdio = ctx.stdio
        if ctx.tty:
            with step(ctx, "terminal"):
                # Opened inside, so the workload's tty lives in its own /dev/pts and ttyname() works.
                master, slave = os.openpty()
                socket.send_fds(channel, [b"T"], [master])
                os.close(master)
                stdio = (slave, slave, slave)
        with step(ctx, "file descriptors"):
            # Ignored signals survive exec, and Python ignores SIGPIPE and SIGXFSZ for itself: the
            # workload gets the defaults back (as subprocess gives them), and no blocked signals.
            for signum in _RESET_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            for target, fd in enumerate(stdio):
                if fd is not None and fd != target:
                    os.dup2(fd, target)
            fds.close_all_except({0, 1, 2, ctx.message_fd, ctx.channel_fd, ctx.gate_fd, *ctx.pass_fds})
            for fd in ctx.pass_fds:
                os.set_inheritable(fd, True)
        if ctx.new_session:
            with step(ctx, "session"):
                os.setsid()
                if ctx.tty:
                    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        if ctx.new_keyring is not None:
            with step(ctx, "session keyring"):
                try:
                    _libc.join_session_keyring(ctx.new_keyring)
                except OSError as exc:
                    if exc.errno != errno.ENOSYS:  # no keyrings in this kernel: none to share either
                        raise
        early_seccomp = (ctx.seccomp_bpf is not None or ctx.seccomp_floor_bpf is not None) and not ctx.no_new_privs
        agent_listener = -1
        if early_seccomp:
            with step(ctx, "seccomp"):
                # Without no_new_privs only a privileged process may load a filter: now, before the
                # capabilities go (what runc does), so everything after must pass the filter.
                _load_floor_filter(ctx)
                if ctx.seccomp_bpf is not None:
                    agent_listener = load_bpf(ctx.seccomp_bpf, new_listener=ctx.seccomp_agent,
                                              log=ctx.seccomp_log)
        with step(ctx, "capabilities"):
            if ctx.cap_sets is not None:
                capabilities.prepare_sets(ctx.cap_sets)
            else:
                capabilities.prepare(ctx.keep_caps)
        for warning in _take_identity(ctx):
            protocol.send(ctx.message_fd, protocol.WARNING, message=warning)
        if ctx.detached:
            with step(ctx, "exec"):  # found now, as runc does: `create` reports a missing command
                _find_executable(ctx)
        if ctx.seccomp_agent:
            with step(ctx, "seccomp"):
                # The seccomp agent (OCI listenerPath) gets the filter's listener from the runtime,
                # which is only there until "created": the filter is loaded now, and what runs
                # until exec (the start gate) passes through it too.
                if not early_seccomp:
                    _load_floor_filter(ctx)
                    agent_listener = load_bpf(ctx.seccomp_bpf, new_listener=True, log=ctx.seccomp_log)
                    early_seccomp = True
                socket.send_fds(channel, [b"L"], [agent_listener])
                os.close(agent_listener)
        protocol.send(ctx.message_fd, protocol.CREATED)
        with step(ctx, "start gate"):
            if ctx.detached:  # the launcher has gone: later errors go to our stderr
                os.close(ctx.message_fd)
                ctx = dataclasses.replace(ctx, message_fd=-1)
            _wait_at_gate(ctx.gate_fd)
        if ctx.start_hooks:
            with step(ctx, "startContainer hooks"):
                run_hooks(ctx.start_hooks, ctx.hook_state, "startContainer")
        if ctx.message_fd >= 0:
            protocol.send(ctx.message_fd, protocol.EXEC)
        if ctx.seccomp_floor_bpf is not None and not early_seccomp:
            with step(ctx, "seccomp"):
                _load_floor_filter(ctx)
        if ctx.seccomp_bpf is not None and not early_seccomp:
            with step(ctx, "seccomp"):
                listener = load_bpf(ctx.seccomp_bpf, new_listener=ctx.seccomp_listener, log=ctx.seccomp_log)
                if ctx.seccomp_listener:
                    socket.send_fds(channel, [b"L"], [listener])
                    os.close(listener)
        if channel is not None:
            channel.close()
        _exec(ctx)
    except _StepFailed:
        _die()
    except BaseException:
        _die()


def run_hooks(hooks: tuple, state: str, stage: str) -> None:
    """Run OCI hooks in order, each with the state on stdin and its timeout; the first that fails
    raises OSError naming it (the runtime side and the workload's startContainer step share it)."""
    import subprocess
    for path, args, env, timeout in hooks:
        try:
            done = subprocess.run(list(args) or [path], executable=path, input=state.encode(),
                                  env=dict(item.split("=", 1) for item in env if "=" in item),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout,
                                  close_fds=True)
        except subprocess.TimeoutExpired:
            raise OSError(errno.ETIMEDOUT, f"{stage} hook {path} did not finish within {timeout} s") from None
        except OSError as exc:
            raise OSError(exc.errno or errno.ENOEXEC, f"{stage} hook {path}: {exc.strerror}") from None
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip().splitlines()
            raise OSError(0, f"{stage} hook {path} failed with status {done.returncode}"
                          + (f": {said[-1]}" if said else ""))


def _take_identity(ctx: ChildContext) -> list[str]:
    """The workload's ids, capabilities, directory, personality, no_new_privs and Landlock, in that
    order, for a launched workload and an exec'd process alike; returns Landlock's warnings."""
    with step(ctx, "user and group ids"):
        if ctx.groups is not None:
            try:
                os.setgroups(list(ctx.groups))
            except PermissionError:
                if ctx.groups:  # denied in a rootless user namespace: fine when none are asked for
                    raise
        os.setresgid(ctx.gid, ctx.gid, ctx.gid)
        os.setresuid(ctx.uid, ctx.uid, ctx.uid)
    with step(ctx, "capabilities"):
        if ctx.cap_sets is not None:
            capabilities.finish_sets(ctx.cap_sets)
        else:
            capabilities.finish(ctx.keep_caps)
    with step(ctx, "working directory"):
        os.umask(ctx.umask)
        os.chdir(ctx.cwd)
    if ctx.personality is not None:
        with step(ctx, "personality"):
            _libc.personality(ctx.personality)
    if ctx.no_new_privs:
        with step(ctx, "no_new_privs"):
            capabilities.set_no_new_privs()
    warnings: list[str] = []
    if ctx.landlock_rules is not None:
        with step(ctx, "landlock"):
            warnings = landlock.restrict(list(ctx.landlock_rules), best_effort=ctx.landlock_best_effort,
                                         scope_signals=ctx.landlock_scoped,
                                         scope_abstract_unix=ctx.landlock_scoped) or []
    return warnings


def run_exec(ctx: ChildContext):
    """A process joining a running container (sandbox-runtime exec), already in its namespaces and
    cgroup (the caller set those up, then forked us into its pid namespace). The workload's steps,
    in the same order: descriptors, terminal, rlimits, ids, capabilities, no_new_privs, seccomp."""
    try:
        channel = None
        with step(ctx, "file descriptors"):
            for signum in _RESET_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            fds.close_all_except({0, 1, 2, ctx.message_fd, ctx.channel_fd, ctx.agent_fd, *ctx.pass_fds})
            for fd in ctx.pass_fds:
                os.set_inheritable(fd, True)
        if ctx.tty:
            with step(ctx, "terminal"):
                import socket
                channel = socket.socket(fileno=ctx.channel_fd)
                master, slave = os.openpty()  # from the container's own devpts: we are in its mount namespace
                socket.send_fds(channel, [b"/dev/ptmx"], [master])
                os.close(master)
                channel.close()
                for target in (0, 1, 2):
                    os.dup2(slave, target)
                if slave > 2:
                    os.close(slave)
                os.setsid()
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        with step(ctx, "rlimits"):
            rlimits.apply(ctx.rlimits)
        if ctx.oom_score_adj is not None:
            with step(ctx, "oom score"):
                _write_proc("/proc/self/oom_score_adj", str(ctx.oom_score_adj))
        early_seccomp = (ctx.seccomp_bpf is not None or ctx.seccomp_floor_bpf is not None) and not ctx.no_new_privs
        if early_seccomp:
            with step(ctx, "seccomp"):
                _load_for_exec(ctx)
        with step(ctx, "capabilities"):
            capabilities.prepare_sets(ctx.cap_sets)
        _take_identity(ctx)  # (an exec'd process has no launcher to warn through)
        with step(ctx, "exec"):
            _find_executable(ctx)
        if (ctx.seccomp_bpf is not None or ctx.seccomp_floor_bpf is not None) and not early_seccomp:
            with step(ctx, "seccomp"):
                _load_for_exec(ctx)
        _exec(ctx)
    except _StepFailed:
        _die()
    except BaseException:
        _die()


def _load_floor_filter(ctx: ChildContext) -> None:
    """The runtime floor's filter, before the container's own: the kernel applies the strictest
    result of both, and between two errnos the one of the filter loaded last (the engine's)."""
    if ctx.seccomp_floor_bpf is not None:
        load_bpf(ctx.seccomp_floor_bpf)


def _load_for_exec(ctx: ChildContext) -> None:
    """The container's filter for an exec'd process; with a seccomp agent, its listener goes to
    the runtime (agent_fd, a socket), which sends it on to the agent."""
    _load_floor_filter(ctx)
    if ctx.seccomp_bpf is None:
        return
    listener = load_bpf(ctx.seccomp_bpf, new_listener=ctx.seccomp_agent, log=ctx.seccomp_log)
    if ctx.seccomp_agent:
        import socket
        with socket.socket(fileno=os.dup(ctx.agent_fd)) as channel:
            socket.send_fds(channel, [b"L"], [listener])
        os.close(listener)
        os.close(ctx.agent_fd)


def _wait_at_gate(gate_fd: int) -> None:
    """Block until one byte can be read from the gate (a pipe, or a FIFO opened O_NONBLOCK whose
    writer may not exist yet: select() waits for one); its end without a byte means abort."""
    while True:
        select.select([gate_fd], [], [])
        try:
            byte = os.read(gate_fd, 1)
        except BlockingIOError:
            continue
        if byte == protocol.GO:
            # Left open (close-on-exec): its end tells `sandbox-runtime start`, the FIFO's writer,
            # that the workload has exec'd (or died), so it can run the poststart hooks after it.
            return
        if not byte:
            _die()


def _find_executable(ctx: ChildContext) -> None:
    """Raise what execvpe would for a command that cannot be found or run."""
    name = ctx.argv[0]
    candidates = [name] if "/" in name else [
        os.path.join(directory or ".", name) for directory in ctx.env.get("PATH", DEFAULT_PATH).split(":")]
    for path in candidates:
        if os.path.isfile(path):
            if os.access(path, os.X_OK):
                return
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)


def _exec(ctx: ChildContext):
    try:
        os.execvpe(ctx.argv[0], list(ctx.argv), ctx.env)
    except OSError as exc:
        err = exc.errno or errno.ENOEXEC
        # "bad interpreter /x (not inside the sandbox)" rather than "not found" for a file right there
        detail = execfail.explain(ctx.argv[0], err, ctx.env.get("PATH")) or ""
        _report(ctx, "exec", err, f"{ctx.argv[0]}: {detail or exc.strerror}", detail=detail)
        _die(127 if err == errno.ENOENT else 126)
