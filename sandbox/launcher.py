"""The parent side of a launch, as a lifecycle: create, start, wait, delete.

    launch = Launch(profile_or_plan, argv)
    launch.create()     every process set up; the workload holds just before exec (the start gate)
    launch.start()      the gate opens: the workload execs
    result = launch.wait()   supervise until it is gone (output, terminal, timeout, signals)
    launch.delete()     what is left is killed and removed (cgroup, descriptors, idmapped trees)

`run()` is the four in one go (and `create(start=True)` opens the gate before the workload gets
there, so a plain run pays no extra round trip). The OCI runtime (`sandbox-runtime`) uses the
same steps from separate processes: `create(...)` with `detached=True` and a FIFO as the start
gate, after which the runtime process exits and the engine's monitor reaps init; `start` opens
the FIFO from another process.

Everything that can fail without the child is done before the fork (plan computed, seccomp
filter compiled, cgroup created, idmapped trees opened), so most errors are reported before any
process exists. See protocol.py for the message sequence and child.py for the steps.
"""
from __future__ import annotations

import _thread
import errno
import os
import select
import signal
import threading
import time
from dataclasses import field

from .compiled_dataclass import dataclass
from . import _libc, child, faults, mounts, namespaces, protocol, rlimits, sources, terminal
from .errors import ExecError, SandboxError, SetupError
from .plan import LaunchPlan, build_env, cgroup_limits, plan_for, with_terminal_type  # noqa: F401
from .profile.model import Profile

SETUP_TIMEOUT = 30.0  # seconds for the child to get from fork to exec; a hang here is a bug
EXIT_TIMEOUT = 124
EXIT_SETUP = 125
# Captured output is kept in the launcher's memory, which no limit of the sandbox bounds: keep
# at most this much of each stream unless the caller says otherwise (max_output=None: no cap).
DEFAULT_MAX_OUTPUT = 16 << 20
OUTPUT_LIMIT_ACTIONS = ("truncate", "kill")


@dataclass
class Result:
    """What a sandboxed run did and used."""

    exit_code: int
    signal: int | None = None
    timed_out: bool = False
    oom_killed: bool = False
    pids_limit_hit: bool = False  # a fork failed because limits.pids was reached
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
    stdout_truncated: bool = False  # more than max_output was written; the rest was dropped
    stderr_truncated: bool = False
    violations: list = field(default_factory=list)
    network: dict | None = None  # bridge mode: segment, address, egress as resolved (sandbox.net)
    launch_id: str = ""  # the id of the launch's audit records, `sandbox ps` and its segment membership

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        data.pop("stdout")
        data.pop("stderr")
        data["argv"] = list(self.argv)
        return data


class Launch:
    """One sandbox's life (see the module's docstring). Use sandbox.run() unless you need the pieces.

    `profile` is a Profile (compiled with `argv` into a LaunchPlan) or a LaunchPlan. Options:
    timeout and kill_after (seconds; default the plan's), stdin/stdout/stderr (fds or files),
    capture_output (True, "stdout" or "stderr"), max_output (bytes kept of each captured stream;
    None: no cap) and on_output_limit ("truncate": drop the rest and say so in the Result;
    "kill": end the sandbox), tty, pass_fds, forward_signals, seccomp_mode (None, "report" or
    "learn"), fork_server, and for the OCI runtime detached, start_gate (see create()) and
    cgroup_name (a name cgroups.gc() does not collect; the default is sandbox-<our pid>-<random>;
    a plan with cgroup_path needs none), and namespaces_ready (called with init's host pid once its
    namespaces exist, before its root is built: the OCI createRuntime hooks). After create(), a
    detached launch leaves the caller terminal_master (tty) and seccomp_listener (a plan with
    seccomp_agent) to send on, and `cgroup` (the SandboxCgroup) to record.
    """

    def __init__(self, profile: Profile | LaunchPlan, argv: list[str] | tuple[str, ...] | None = None, *,
                 timeout: float | None = None, kill_after: float | None = None, stdin=None, stdout=None,
                 stderr=None, capture_output=False, max_output: int | None = DEFAULT_MAX_OUTPUT,
                 on_output_limit: str = "truncate", tty: bool = False, pass_fds: tuple[int, ...] = (),
                 forward_signals: bool = True, seccomp_mode: str | None = None, fork_server=None,
                 detached: bool = False, start_gate: int | None = None, cgroup_name: str | None = None,
                 namespaces_ready=None):
        if isinstance(profile, LaunchPlan):
            plan = profile.replace(argv=tuple(argv)) if argv else profile
        else:
            try:
                plan = plan_for(profile, argv, tty=tty)
            except ValueError as exc:  # the ids would map the sandbox to host root
                raise SetupError("id map", errno.EPERM, str(exc)) from None
        self.plan = plan
        self.profile = plan.profile
        self.argv = plan.argv
        if not self.argv:
            raise SetupError("command", errno.EINVAL, "no command given and the profile has no process.command")
        if on_output_limit not in OUTPUT_LIMIT_ACTIONS:
            raise ValueError(f"on_output_limit must be one of {OUTPUT_LIMIT_ACTIONS}, not {on_output_limit!r}")
        if seccomp_mode not in (None, "report", "learn"):
            raise ValueError(f"seccomp_mode must be None, 'report' or 'learn', not {seccomp_mode!r}")
        if seccomp_mode == "report" and plan.seccomp is None:
            seccomp_mode = None  # nothing is denied, so nothing to report
        if detached and (seccomp_mode or capture_output or fork_server is not None or start_gate is None
                         or (cgroup_name is None and plan.cgroup_path is None)):
            raise ValueError("a detached launch needs a start gate and a cgroup name of its own, and has "
                             "nobody to report to or capture for")
        self.timeout = timeout if timeout is not None else plan.timeout
        self.kill_after = kill_after if kill_after is not None else plan.kill_after
        self.capture_output = capture_output
        self.max_output = max_output
        self.on_output_limit = on_output_limit
        self.stdio = tuple(_fileno(s) for s in (stdin, stdout, stderr))
        self.tty = tty
        self.pass_fds = tuple(pass_fds)
        self.forward_signals = forward_signals and not detached
        self.seccomp_mode = seccomp_mode
        self.fork_server = fork_server  # a forkserver.ForkServer, or None: fork from this process
        self.detached = detached
        self.start_gate = start_gate
        # A detached sandbox outlives its creator: its cgroup needs a name that cgroups.gc(),
        # which collects sandbox-<dead launcher pid>-* cgroups, leaves alone.
        self.cgroup_name = cgroup_name
        # Called with init's host pid once its namespaces exist and before its root is built (the
        # OCI runtime's createRuntime and createContainer hooks); an exception aborts the launch.
        self.namespaces_ready = namespaces_ready
        self.start_hooks: tuple = ()  # (path, args, env, timeout): the workload runs them past the gate
        self.hook_state = ""  # the OCI state those hooks read
        self.cgroup = None  # the sandbox's SandboxCgroup once created (the OCI runtime records its paths)
        self.status = "new"  # new -> created -> running -> stopped -> deleted
        self.recorded: list = []
        self.warnings: list[str] = []
        # `sandbox ps` and live events (sandbox/registry.py, sandbox/monitor/): the launch's id (also
        # its audit records' and its segment membership's), its registry record from create() to
        # delete(), its monitoring.
        self.id = os.urandom(8).hex()
        self.result = Result(exit_code=EXIT_SETUP, launch_id=self.id)
        self.child_pid: int | None = None  # the first process: A, or init itself when cloned
        self.init_pid: int | None = None  # the sandbox's init (pid 1 inside), as the host sees it
        self.terminal_master = -1  # with tty and detached: the pty master, for the caller to keep
        self.seccomp_listener = -1  # with an OCI seccomp agent: the filter's listener, for the caller to send
        self._owned: set[int] = set()  # every fd we opened, closed exactly once (see _close)
        self._pidfd = -1  # the first process's, when the fork server made it (then not our child)
        self._cloned = False  # the first process is init itself (child.spawn)
        self._in_cgroup = False  # and was cloned into the sandbox's v2 cgroup
        self._cgroup = None
        self._trees = None
        self._channel = None
        self._relay = None
        self._terminals = None  # the caller's terminals' state, restored at the end
        self._previous_handlers = None
        self._placer = None
        self._reader = None
        self._go_w = self._placed_w = self._gate_w = self._hooks_w = -1
        self._bind_trees: list[int] = []  # an OCI plan's bind sources, opened before the fork
        self._seen: set[str] = set()
        self._error: SandboxError | None = None
        self._status_word: int | None = None
        self._deadline: float | None = None
        self._deadline_kind: str | None = None  # "setup", "timeout" (TERM), "kill"
        self._outputs: dict[int, bytearray] = {}  # captured pipes still open -> their buffers
        self._collected: dict[str, bytearray] = {}  # stream name -> everything kept of it
        self._capture_names: dict[int, str] = {}
        self._started = 0.0
        self._waited = False
        self._rlimits = plan.rlimits  # with what stands in for cgroup limits that cannot be applied
        self.network = None  # sandbox.net.Attachment in bridge mode
        self.profile_hash = ""
        self._registration = None
        from .monitor import for_launch
        self.watch = for_launch(self)

    # ------------------------------------------------------------ the four steps

    def run(self) -> Result:
        """create, start, wait and delete: the whole run, as `sandbox run` does it."""
        self.create(start=True)
        try:
            self.wait()
        finally:
            self.delete()
        return self.result

    def create(self, *, start: bool = False) -> None:
        """Build the sandbox: cgroup, namespaces, root, every process; return when the workload
        is held at the start gate, just before it execs (or, start=True, already past it).

        Raises SandboxError (setup failed; nothing is left behind). Detached (the OCI runtime):
        `start_gate` is the read end of a FIFO opened O_NONBLOCK, which the workload waits on
        until another process writes a byte into it; nothing of the sandbox depends on this
        process after create() returns (no parent-death signal), and init's host pid is
        `init_pid`."""
        if self.status != "new":
            raise RuntimeError(f"create() on a launch that is {self.status}")
        # The CLI starts cgroup priming before its imports (see cgprime.py); it is stopped before
        # the fork. Not started here: a warm API launch reaches the placement too soon to gain.
        from . import cgprime
        self._started = time.monotonic()
        try:
            if self.watch is not None:
                self.watch.prepare()  # the baseline read, the events file opened: before any process
            self._create(start, cgprime)
            self._announce(start)
        except BaseException:
            if self.child_pid is not None or self.init_pid:  # detached too: a failed sandbox never lives on
                self._kill()
                self._end_supervision()
            self.delete()
            if self.detached and self._cgroup is not None:
                self._cgroup.destroy()
            raise
        finally:
            cgprime.stop()  # idempotent; normally already stopped before the fork
        self.status = "running" if start else "created"

    def start(self) -> None:
        """Let the workload exec (in-process launches; a detached one is started through its FIFO)."""
        if self.status != "created" or self.detached:
            raise RuntimeError(f"start() on a launch that is {self.status}")
        try:
            os.write(self._gate_w, protocol.GO)
        finally:
            self._close(self._gate_w)
            self._gate_w = -1
        self.status = "running"
        if self._registration is not None:
            self._registration.update(status="running")

    def wait(self) -> Result:
        """Supervise until every process of the sandbox is gone; returns the Result, raises the
        SandboxError of a failed setup. Any exception here (a signal, a bug) kills the sandbox
        first: it is never left running unsupervised."""
        if self.status != "running" or self.detached:
            raise RuntimeError(f"wait() on a launch that is {self.status}")
        result = self.result
        try:
            self._pump(until=None)
            self._drain()
        except BaseException:
            self._kill()
            raise
        finally:
            self._end_supervision()
            if self._cgroup is not None:
                # Every process is gone: the cgroup goes now, keeping its final figures (read
                # once), and delete() has only descriptors left to release.
                self._cgroup.destroy()
        self._waited = True
        self.status = "stopped"
        if self._error is not None:
            raise self._error
        if result.timed_out:
            result.exit_code = EXIT_TIMEOUT
        elif self._status_word is not None:
            status = self._status_word
            if os.WIFSIGNALED(status):
                result.signal = os.WTERMSIG(status)
                result.exit_code = 128 + result.signal
            else:
                result.exit_code = os.waitstatus_to_exitcode(status)
        else:
            # init died without a word: killed from outside (OOM, or a signal to the whole tree)
            result.signal = signal.SIGKILL
            result.exit_code = 128 + signal.SIGKILL
        self._finish_result()
        return result

    def kill(self, signum: int = signal.SIGKILL) -> None:
        """Send signum to the sandbox: SIGKILL ends every process in it, any other signal goes
        to init, which passes it on to the workload."""
        if signum == signal.SIGKILL:
            self._kill()
        elif self.init_pid:
            _signal_pid(self.init_pid, signum)

    def delete(self) -> None:
        """Kill whatever is left and release everything the launch holds. Idempotent."""
        if self.status == "deleted":
            return
        try:
            if not self._waited and self.child_pid is not None and not self.detached:
                self._kill()
                self._end_supervision()
        finally:
            self._unannounce()  # the events end (a last sample), the registry record goes
            for fd in list(self._owned):
                self._close(fd)
            if self._trees is not None:
                self._trees.close()
            if self.network is not None:
                self.network.detach()  # idempotent, never raises
            if self._cgroup is not None and not self.detached:
                self._cgroup.destroy()  # idempotent; keeps the final figures, read once
            if not self._waited:
                self._finish_result()
            self.status = "deleted"

    # ------------------------------------------------------------ create

    def _create(self, start: bool, cgprime) -> None:
        from . import cgroups
        plan = self.plan
        with _ParentStep("cgroup"):
            if plan.cgroup_path is not None:  # the OCI runtime's: no sandbox-<pid>-* cgroups to collect
                from .cgroups import oci as oci_cgroups
                cgroup = oci_cgroups.create_at(plan.cgroup_path, plan.cgroup_resources)
            else:
                cgroups.gc()
                cgroup = cgroups.create(plan.cgroup_limits, name=self.cgroup_name)
            self._cgroup = self.cgroup = cgroup
        self.warnings += list(getattr(cgroup, "warnings", ()))
        # What the cgroup could not apply, enforced by rlimits where an unprivileged user can.
        unapplied = {n: v for n, v in cgroup.limits.requested().items() if n not in cgroup.applied}
        self._rlimits, notes = rlimits.cgroup_fallback(unapplied, plan.rlimits, own_user_namespace=plan.new_user_ns)
        self.warnings += notes
        faults.checkpoint("cgroup created")
        self._trees = trees = sources.SourceTrees()
        with _ParentStep("idmapped mount"):  # every bind source checked, and opened when root launches
            if self.profile is not None:
                trees.open(self.profile, plan.id_map)
                if self.profile.image.rootfs and os.geteuid() == 0 and plan.id_map is not None:
                    # The image's tree, read-only, its root-owned files shown as the sandbox user's.
                    from .image.mount import open_root_tree
                    trees.fds["/"] = open_root_tree(self.profile, plan.id_map)
        self.warnings += trees.warnings
        if self.profile is not None and self.profile.network.mode == "bridge":
            from . import net  # the segment, its rules and egress, made ready before the fork
            with _ParentStep("network"):
                self.network = net.prepare(self.profile, self.id)  # the membership records the launch id
            if self.network is not None:
                self.warnings += self.network.warnings
        with _ParentStep("pipes"):
            message_r, message_w = self._pipe()
            go_r, go_w = self._pipe()
            placed_r, placed_w = self._pipe()
            hooks_r, self._hooks_w = self._pipe() if self.namespaces_ready is not None else (-1, -1)
            if self.detached:
                gate_r = self.start_gate
            else:
                gate_r, self._gate_w = self._pipe()
                if start:  # the byte waits in the pipe: the workload passes the gate without a round trip
                    os.write(self._gate_w, protocol.GO)
                    self._close(self._gate_w)
                    self._gate_w = -1
            self._go_w, self._placed_w = go_w, placed_w
            stdio = self._stdio_pipes()
            channel_parent, channel_child = (_socketpair() if self._listens() or self.tty or plan.seccomp_agent
                                             else (None, None))
        if self.start_hooks:
            import subprocess  # noqa: F401 - the workload runs them after pivot_root, with no stdlib to import
        join_fds = self._open_namespaces()
        ctx = self._context(trees, message_w, go_r, placed_r, gate_r, stdio,
                            channel_child.fileno() if channel_child else -1, hooks_r, join_fds)
        if not self.tty and not self.detached:
            self._terminals = terminal.saved_states(fd if fd is not None else n for n, fd in enumerate(stdio))
        cgprime.stop()  # no thread may be running at fork
        with _ParentStep("fork"):
            pid = self._start_first_process(ctx, (message_r, go_w, placed_w, self._gate_w, self._hooks_w), cgroup)
        self.child_pid = pid
        faults.checkpoint("spawned")
        release_error = None
        if self._cloned:
            # Init waits for nothing else, and every page we touch before this is a
            # copy-on-write fault while init shares them: its maps first.
            release_error = self._release(pid)
        for fd in [message_w, go_r, placed_r, hooks_r, *(fd for fd, _ in join_fds),
                   gate_r if not self.detached else -1] + [
                fd for fd in stdio if fd is not None and fd in self._capture_names.values()]:
            self._close(fd)
        trees.close()
        for fd in self._bind_trees:
            self._close(fd)
        self._bind_trees = []
        if channel_child is not None:
            channel_child.close()
        self._channel = channel_parent
        self._reader = protocol.Reader(message_r)
        self._deadline, self._deadline_kind = time.monotonic() + SETUP_TIMEOUT, "setup"
        # The first process's placement starts at once, beside its own set-up: a cgroup.procs
        # write may wait for an RCU grace period, and this way the wait overlaps init's root.
        self._placer = _Placer(cgroup, pid, unified=not self._in_cgroup)
        self._previous_handlers = self._install_signal_forwarding()
        if self._cloned:  # in its user namespace from birth: released right after the clone
            if release_error is None:
                self.init_pid = pid
                self._place()
            else:
                self._aside(release_error)
        self._pump(until=protocol.CREATED)
        if self._error is not None:
            raise self._error
        if self.detached:
            self._reader = None  # the children have closed their ends: nothing more will come
            self._close(message_r)
            if not self._cloned:
                self._wait_first_process(pid)  # A, which left init to the engine's reaper
            self.child_pid = None

    def _open_namespaces(self) -> tuple:
        """The namespaces the plan joins by path, opened now: a wrong path fails before any process."""
        opened = []
        for flag, path in self.plan.join_namespaces:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise SetupError("namespaces", exc.errno or 0, f"{path}: {exc.strerror}") from None
            self._owned.add(fd)
            opened.append((fd, flag))
        return tuple(opened)

    def _context(self, trees, message_fd, go_fd, placed_fd, gate_fd, stdio, channel_fd=-1, hooks_fd=-1,
                 join_fds=()) -> child.ChildContext:
        plan = self.plan
        if self.profile is not None:
            # From the sources as the launcher checked them: the trees it opened, the real paths
            # the child walks, the optional sources that are missing.
            network_files = self.network.files if self.network is not None else ()
            mount_plan = (mounts.build_plan(self.profile, trees, network_files=network_files)
                          if self.profile.namespaces.mount else None)
        else:
            mount_plan = plan.mounts
            if mount_plan is not None and trees.fds:
                mount_plan = mounts.with_trees(mount_plan, trees.fds)
            if mount_plan is not None and mount_plan.root_as_given:
                # An OCI bundle's binds, opened here with the host's view (closed after the fork)
                try:
                    mount_plan, opened = mounts.open_oci_bind_trees(mount_plan)
                except OSError as exc:
                    raise SetupError("mount", exc.errno or 0, f"bind source: {exc.strerror or exc}") from None
                self._owned.update(opened)
                self._bind_trees = opened
        if mount_plan is not None and self.profile is not None and self.profile.secrets:
            from .secrets import read_values  # read now, at launch: never held by a profile or a plan
            mount_plan = mounts.with_secrets(mount_plan, read_values(self.profile))
        return child.ChildContext(
            argv=self.argv, env=plan.env, cwd=plan.cwd, uid=plan.uid, gid=plan.gid, hostname=plan.hostname,
            new_user_ns=plan.new_user_ns, unshare_flags=plan.unshare_flags, new_cgroup_ns=plan.new_cgroup_ns,
            new_pid_ns=plan.new_pid_ns, new_net_ns=plan.new_net_ns, plan=mount_plan, rlimits=self._rlimits,
            umask=plan.umask, keep_caps=plan.keep_caps, new_session=plan.new_session,
            landlock_rules=plan.landlock_rules, landlock_best_effort=plan.landlock_best_effort,
            seccomp_bpf=self._compile_seccomp(), message_fd=message_fd, go_fd=go_fd, placed_fd=placed_fd,
            gate_fd=gate_fd, parent_pid=os.getpid(), pass_fds=self.pass_fds, tty=self.tty, stdio=stdio,
            channel_fd=channel_fd, seccomp_listener=self._listens(), detached=self.detached,
            join_userns_fd=self.network.userns_fd if self.network is not None else -1,
            join_ns_fds=join_fds, init_uid=plan.init_ids[0] if plan.init_ids else None,
            init_gid=plan.init_ids[1] if plan.init_ids else None, init_caps=plan.init_caps, groups=plan.groups,
            cap_sets=plan.capability_sets, no_new_privs=plan.no_new_privs, sysctls=plan.sysctls,
            domainname=plan.domainname, oom_score_adj=plan.oom_score_adj, personality=plan.personality,
            time_offsets=plan.time_offsets, hooks_fd=hooks_fd, start_hooks=self.start_hooks,
            hook_state=self.hook_state, seccomp_log=plan.seccomp_log, new_keyring=plan.new_keyring,
            seccomp_agent=plan.seccomp_agent is not None, faults=tuple(faults.INJECTED.items()),
            seccomp_floor_bpf=self._compile(plan.seccomp_floor), landlock_scoped=plan.landlock_scoped)

    def _filter_policy(self):
        policy = self._mode_policy()
        return self.watch.filter_policy(policy) if self.watch is not None else policy

    def _mode_policy(self):
        policy = self.plan.seccomp
        if self.seccomp_mode == "learn":
            from .seccomp.learn import learning_policy
            return learning_policy(policy.architectures if policy is not None else ("native",))
        if self.seccomp_mode == "report":
            from .seccomp.notify import reporting_policy
            return reporting_policy(policy)
        return policy

    def _compile_seccomp(self) -> bytes | None:
        return self._compile(self._filter_policy())

    @staticmethod
    def _compile(policy) -> bytes | None:
        if policy is None:
            return None
        from .seccomp import compile_bpf
        try:
            return compile_bpf(policy)
        except (OSError, ValueError) as exc:
            raise SetupError("seccomp", getattr(exc, "errno", 0) or 0, f"cannot compile the filter: {exc}") from None

    def _start_first_process(self, ctx: child.ChildContext, parent_ends: tuple[int, ...], cgroup) -> int:
        """Start the launch's first process, A or (self._cloned) init itself, maybe already in
        the sandbox's v2 cgroup (self._in_cgroup): see child.spawn."""
        cgroup_fd = -1
        if cgroup.v2 is not None:
            cgroup_fd = os.open(cgroup.v2.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            self._owned.add(cgroup_fd)
        try:
            return self._spawn(ctx, tuple(fd for fd in parent_ends if fd >= 0), cgroup_fd)
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

    def _release(self, pid: int) -> SandboxError | None:
        """Write the first process's id maps, then let it go on."""
        try:
            if faults.INJECTED:
                faults.fail_if_injected("id map")
            if self.plan.new_user_ns:
                # A rootless sandbox on a segment descends from the segment's user namespace,
                # whose own process must write its maps (sandbox/net/segment.py).
                if self.network is not None:
                    self.network.write_id_maps(pid, self.plan.id_map)
                else:
                    _write_id_maps(pid, self.plan.id_map)
            os.write(self._go_w, protocol.GO)
            return None
        except OSError as exc:
            return SetupError("id map", exc.errno or 0, exc.strerror or str(exc))
        finally:
            self._close(self._go_w)

    def _place(self) -> None:
        """Once the first process is placed, move B (init) too unless it was B, then release B:
        it forks the workload only after this, so nothing of the workload runs outside the cgroup.
        A failure is kept aside: when init failed meanwhile, its own report says more."""
        placer = self._placer
        try:
            placer.join()
            if placer.error is not None:
                raise placer.error
            if faults.INJECTED:
                faults.fail_if_injected("cgroup placement")
            if self.init_pid != placer.pid:
                self._cgroup.add_process(self.init_pid)  # forked before A was placed, most likely
            if self.network is not None:  # init's network namespace exists: its interface now
                self.network.attach(self.init_pid)
            os.write(self._placed_w, protocol.GO)
        except OSError as exc:
            self._aside(SetupError("cgroup placement", exc.errno or 0, exc.strerror or str(exc)))
        except SandboxError as exc:
            self._aside(exc)
        finally:
            self._close(self._placed_w)

    _aside_error: SandboxError | None = None

    def _aside(self, error: SandboxError | None) -> None:
        """Keep the launcher's own failure (writing the id maps, placing in the cgroup) until the
        message pipe ends: the child it concerns usually fails too, and its own report says more."""
        if self._aside_error is None:
            self._aside_error = error

    # ------------------------------------------------------------ supervision

    def _pump(self, until: str | None) -> None:
        """Handle the child side's messages, relay captured output and enforce the deadlines,
        until the message `until` has come (with no error before it), or until every writer of
        the message pipe is gone."""
        reader = self._reader
        while until is None or until not in self._seen or self._error is not None:
            message = self._next_event(reader, self._deadline)
            if message is None:
                if reader.eof:
                    break
                if self._deadline is not None and time.monotonic() >= self._deadline:
                    self._deadline_passed()
                continue
            self._handle(message)
        if reader.eof:
            self._error = self._error or self._aside_error

    def _handle(self, message: dict) -> None:
        kind = message["kind"]
        self._seen.add(kind)
        if faults.KILL_AT:
            faults.checkpoint(kind)
        if kind == protocol.READY:  # A is in its user namespace
            self._aside(self._release(self.child_pid))
        elif kind == protocol.INIT_PID:
            self.init_pid = message["pid"]
            self._place()
        elif kind == protocol.CREATED:
            self._deadline, self._deadline_kind = None, None  # the gate may stay closed for long
            if self.tty:
                master = self._receive_fd(b"T")
                if self.detached:
                    self.terminal_master = master  # the caller's (the OCI console socket's)
                elif master >= 0:
                    self._relay = terminal.Relay(master)
                    self._relay.start()
            if self.plan.seccomp_agent is not None:
                self.seccomp_listener = self._receive_fd(b"L")  # the caller's, for the seccomp agent
        elif kind == protocol.EXEC:
            if self.timeout:
                self._deadline, self._deadline_kind = time.monotonic() + self.timeout, "timeout"
            if self._listens():
                self._start_recorder()
        elif kind == protocol.EXIT:
            self._status_word = message["status"]
        elif kind == protocol.HOOKS:
            self._run_namespace_hooks()
        elif kind == protocol.WARNING:
            self.warnings.append(message["message"])
        elif kind == protocol.ERROR:
            if self._error is None:
                self._error = _error_from(message, self.argv[0])

    def _run_namespace_hooks(self) -> None:
        """Init waits with its namespaces made and its root not yet built: the caller's hooks run
        now; a failure is the launch's error, and init, seeing the pipe close, gives up."""
        try:
            self.namespaces_ready(self.init_pid)
            os.write(self._hooks_w, protocol.GO)
        except SandboxError as exc:
            self._error = self._error or exc
        except OSError as exc:
            self._error = self._error or SetupError("hooks", exc.errno or 0, exc.strerror or str(exc))
        finally:
            self._close(self._hooks_w)
            self._hooks_w = -1

    def _deadline_passed(self) -> None:
        kind = self._deadline_kind
        if kind == "setup":
            self._error = self._error or SetupError("setup", errno.ETIMEDOUT, "the sandbox did not start in time")
            self._kill()
            self._deadline = None
        elif kind == "timeout":
            self.result.timed_out = True
            if self.kill_after > 0:
                # A chance to flush output and clean up, as `timeout` and systemd give it.
                self._terminate_all()
                self._deadline, self._deadline_kind = time.monotonic() + self.kill_after, "kill"
            else:
                self._kill()
                self._deadline = None
        else:
            self._kill()
            self._deadline = None

    def _terminate_all(self) -> None:
        """SIGTERM to every process of the sandbox but init (which passes it to the workload)."""
        if self.init_pid:
            _signal_pid(self.init_pid, signal.SIGTERM)
        try:
            pids = self._cgroup.pids() if self._cgroup is not None else []
        except OSError:
            pids = []
        for pid in pids:
            if pid not in (self.init_pid, self.child_pid):
                _signal_pid(pid, signal.SIGTERM)

    def _next_event(self, reader, limit):
        """A protocol message, relaying captured output while waiting; None at EOF or the limit."""
        while True:
            if b"\n" in reader.buffer or reader.eof:
                return reader.next(limit)
            watch = [reader.fd] + list(self._outputs)
            timeout = None if limit is None else max(0.0, limit - time.monotonic())
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
                else:
                    self._read_output(fd)

    def _read_output(self, fd: int) -> bool:
        """Read what a captured stream has (False at its end), keeping at most max_output."""
        chunk = os.read(fd, 65536)
        if not chunk:
            del self._outputs[fd]
            return False
        kept = self._outputs[fd]
        room = len(chunk) if self.max_output is None else self.max_output - len(kept)
        if room >= len(chunk):
            kept += chunk
            return True
        if room > 0:
            kept += chunk[:room]
        name = self._capture_names_by_read[fd]
        if not getattr(self.result, f"{name}_truncated"):
            setattr(self.result, f"{name}_truncated", True)
            from .profile.units import format_size
            if self.on_output_limit == "kill":
                self.warnings.append(f"killed: captured {name} exceeded max_output ({format_size(self.max_output)})")
                self._kill()
            else:
                self.warnings.append(f"captured {name} truncated at max_output ({format_size(self.max_output)}); "
                                     "the rest was read and dropped")
        return True  # and keep reading: a workload blocked on a full pipe would never end

    def _drain(self) -> None:
        for fd in list(self._outputs):
            while select.select([fd], [], [], 5.0)[0] and self._read_output(fd):
                pass
        self._outputs.clear()

    def _end_supervision(self) -> None:
        """Once the message pipe is at its end (or supervision failed): restore the caller's
        signal handlers and terminals, stop the relay and the recorder, reap the first process."""
        self._restore_signals(self._previous_handlers)
        self._previous_handlers = None
        relay, self._relay = self._relay, None
        try:
            if relay is not None:
                for warning in relay.stop():
                    self.warnings.append(warning)
            if self._terminals is not None:
                for warning in terminal.restore(self._terminals):
                    self.warnings.append(warning)
                self._terminals = None
            if self._error is not None or self.result.timed_out:
                self._kill()
            if self._placer is not None:
                self._placer.join()
            if self.child_pid is not None:
                self._wait_first_process(self.child_pid)
        finally:
            self._stop_recorder(self.result)
            for name, kept in self._collected.items():
                setattr(self.result, name, bytes(kept))
            if self._channel is not None:
                self._channel.close()
                self._channel = None

    def _finish_result(self) -> None:
        result = self.result
        result.wall_time = time.monotonic() - self._started if self._started else 0.0
        cgroup = self._cgroup
        if cgroup is not None and cgroup.active and (self._waited or self.status == "deleted"):
            try:
                stats = cgroup.stats()
                result.oom_killed = result.oom_killed or cgroup.oom_killed()
            except Exception:
                stats = None
            if stats is not None:
                result.cpu_user = stats.cpu_user_s
                result.cpu_system = stats.cpu_system_s
                result.memory_peak = stats.memory_peak_bytes
                result.pids_peak = stats.pids_peak
                result.pids_limit_hit = bool(stats.pids_limit_hits)
        result.warnings = self.warnings
        if self.network is not None:
            result.network = self.network.record
        result.profile_name = self.plan.name
        result.argv = self.argv

    # ------------------------------------------------------------ processes and descriptors

    def _kill(self) -> None:
        if self._cgroup is not None:
            try:
                self._cgroup.kill_all()
            except Exception:
                pass
        if self.init_pid:
            _signal_pid(self.init_pid, signal.SIGKILL)
        if self.child_pid is not None:
            self._signal_first_process(self.child_pid, signal.SIGKILL)

    def _signal_first_process(self, pid: int, signum: int) -> None:
        try:
            if self._pidfd >= 0:
                signal.pidfd_send_signal(self._pidfd, signum)  # not our child: its pid may be reused
            else:
                os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def _wait_first_process(self, pid: int) -> None:
        if self._pidfd < 0:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        else:
            select.select([self._pidfd], [], [])  # readable once it has exited; the server reaps it
            self._close(self._pidfd)
            self._pidfd = -1
        self.child_pid = None

    def _pipe(self) -> tuple[int, int]:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        self._owned.update((read_fd, write_fd))
        return read_fd, write_fd

    def _close(self, fd: int) -> None:
        # Every fd we open is closed exactly once: with concurrent launches from threads, a second
        # close would hit whatever another thread has opened under the same number meanwhile.
        if fd in self._owned:
            self._owned.discard(fd)
            os.close(fd)

    def _stdio_pipes(self) -> tuple:
        stdio = list(self.stdio)
        self._capture_names_by_read = {}
        if self.capture_output:
            wanted = ("stdout", "stderr") if self.capture_output is True else (self.capture_output,)
            for index, name in ((1, "stdout"), (2, "stderr")):
                if name not in wanted:
                    continue
                read_fd, write_fd = self._pipe()
                stdio[index] = write_fd
                self._capture_names[name] = write_fd
                self._capture_names_by_read[read_fd] = name
                self._outputs[read_fd] = self._collected[name] = bytearray()
        return tuple(stdio)

    # ------------------------------------------------------------ report and learn modes

    def _start_recorder(self) -> None:
        """Receive the workload's seccomp listener and serve it in a thread (report/learn modes)."""
        from .seccomp.notify import Recorder
        listener = self._receive_fd(b"L")
        if listener < 0:
            self.warnings.append("seccomp listener not received: violations are not reported")
            return
        policy = self._filter_policy() if self.seccomp_mode == "learn" else self.plan.seccomp
        recorder = Recorder(listener, policy, learn=self.seccomp_mode == "learn", observer=self.watch, kill=self._kill)
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
        self._recorder_thread = None
        self._recorder_stop.set()
        thread.join(timeout=5)
        self.recorded = self._recorder.violations()
        result.violations = [{"syscall": v.syscall, "action": v.action, "count": v.count,
                              "first_pid": v.first_pid, "first_args": [hex(a) for a in v.first_args[:6]]}
                             for v in self.recorded]

    # ------------------------------------------------------------ signals

    def _install_signal_forwarding(self):
        if not self.forward_signals or threading.current_thread() is not threading.main_thread():
            return None
        previous = {}

        def forward(signum, _frame):
            if self.init_pid:
                _signal_pid(self.init_pid, signum)
            elif self.child_pid:
                self._signal_first_process(self.child_pid, signum)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                       signal.SIGUSR2):
            previous[signum] = signal.signal(signum, forward)
        return previous

    @staticmethod
    def _restore_signals(previous) -> None:
        for signum, handler in (previous or {}).items():
            signal.signal(signum, handler)

    # ------------------------------------------------------------ registry and live events

    def _listens(self) -> bool:
        """A seccomp listener is passed out: report and learn modes, and live events."""
        return self.seccomp_mode is not None or (self.watch is not None and bool(self.watch.syscalls))

    def _announce(self, started: bool) -> None:
        """Once created: monitoring starts (sandbox/monitor/), and the registry record that
        `sandbox ps` reads is written (sandbox/registry.py). Neither raises."""
        if self.detached:
            return
        from . import registry
        events = None
        if self.watch is not None:
            try:
                events = self.watch.attach(self)
            except OSError as exc:
                self.warnings.append(f"monitoring not started: {exc.strerror or exc}")
        self._registration = registry.register(self, events=events, status="running" if started else "created")

    def _unannounce(self) -> None:
        if self.watch is not None:
            self.watch.finish(self.result)
            self.warnings += [note for note in self.watch.notes if note not in self.warnings]
        if self._registration is not None:
            self.warnings += self._registration.remove()
            self._registration = None


class _ParentStep:
    """``with _ParentStep(name):`` the launcher's own steps: an OSError becomes a SetupError naming
    the step and the errno (a machine at its limits, not a bug), and tests can make it fail."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __enter__(self) -> None:
        if faults.INJECTED:
            try:
                faults.fail_if_injected(self.name)
            except OSError as exc:
                self.__exit__(OSError, exc, None)

    def __exit__(self, kind, exc, _traceback) -> bool:
        if kind is not None and issubclass(kind, OSError) and not isinstance(exc, SandboxError):
            where = f"{os.fsdecode(exc.filename)}: " if exc.filename else ""
            raise SetupError(self.name, exc.errno or 0, where + (exc.strerror or str(exc))) from None
        return False


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
        try:
            _thread.start_new_thread(self._run, (cgroup, pid, unified))
        except RuntimeError:  # no thread to be had: place it here and now, only slower
            self._run(cgroup, pid, unified)

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


def _write_id_maps(pid: int, id_map) -> None:
    """The maps written directly, or, for an unprivileged caller's maps of several ranges (an
    OCI bundle's, rootless), through the setuid newuidmap/newgidmap helpers and /etc/subuid."""
    try:
        namespaces.write_id_maps(pid, id_map)
        return
    except PermissionError:
        ranges = getattr(id_map, "uid_ranges", None)
        if ranges is None or os.geteuid() == 0:
            raise
    import shutil
    import subprocess
    for helper, ranges in (("newgidmap", id_map.gid_ranges), ("newuidmap", id_map.uid_ranges)):
        path = shutil.which(helper)
        if path is None:
            raise OSError(errno.EPERM, f"these id maps need {helper} (package uidmap), which is not installed")
        argv = [path, str(pid)] + [str(n) for entry in ranges for n in entry]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise OSError(errno.EPERM, f"{helper}: {done.stderr.strip() or done.returncode}")


def _signal_pid(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
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
        return ExecError(argv0, message.get("errno") or errno.ENOEXEC, message.get("detail", ""))
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


def run(profile: Profile | str, argv=None, **options) -> Result:
    """Run `argv` (default: the profile's command) in a sandbox built from `profile`.

    Options: timeout, kill_after, stdin, stdout, stderr (fds or files), capture_output (True, or
    "stdout" or "stderr" for one of them), max_output and on_output_limit, tty, pass_fds,
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
    launch.profile_hash = digest
    audit = AuditRecord(profile, launch.argv, digest, launch_id=launch.id)
    try:
        result = launch.run()
    except SandboxError as exc:
        audit.finish(error=exc, monitor=launch.watch.summary() if launch.watch is not None else None)
        raise
    result.profile_hash = digest
    if result.pids_limit_hit:
        result.warnings.append(f"process limit reached ({profile.limits.pids}): a fork was refused")
    audit.finish(result, monitor=launch.watch.summary() if launch.watch is not None else None)
    if audit.warning:
        result.warnings.append(audit.warning)
    return result
