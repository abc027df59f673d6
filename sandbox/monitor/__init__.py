"""Live activity events of a running sandbox (issue 17; docs/monitoring.md).

    watch = for_launch(launch)            # None unless [monitor] events or baseline is set
    watch.prepare()                       # before the fork: the baseline read, the destination opened
    policy = watch.filter_policy(policy)  # the seccomp filter, also notifying on the observed calls
    path = watch.attach(launch)           # created: samples, files, process events start; "start"
    Recorder(listener, policy, observer=watch)   # the seccomp listener's thread calls observe()
    watch.finish(result)                  # at delete(): last sample, "end", the audit summary

Where each event comes from:

    exec, exit, connect/bind/listen/accept, denied   seccomp user notification (the one listener of
                                                     the filter, sandbox/seccomp/notify.py), answered
                                                     CONTINUE, or the policy's errno for denials
    fork, exit of a process killed by a signal      the proc connector (root only)
    sample, threshold, oom_kill                     the sandbox's cgroup files (or /proc without one)
    file                                            fanotify mount marks on the rw binds (root only)
    anomaly                                         the above, compared with [monitor] baseline

Facts only: nothing observed here ever decides what a call may do (see facts.py).
"""
from __future__ import annotations

import os
import select
import threading
import time
from collections import Counter

from .events import EventSink, open_destination

# The calls whose facts make events. Notified with SECCOMP_USER_NOTIF_FLAG_CONTINUE, each costs a
# round trip to the launcher (docs/performance.md): all are rare next to reads and writes.
OBSERVED = ("execve", "execveat", "connect", "bind", "listen", "accept", "accept4", "exit_group")
NETWORK_CALLS = ("connect", "bind", "listen", "accept", "accept4")
MAX_DENIAL_EVENTS = 100  # per system call; further denials are counted (Result.violations has them all)
MAX_ANOMALIES_KEPT = 20  # in the audit summary
MEMORY_HIGH, MEMORY_REARM = 0.80, 0.70
PIDS_HIGH, PIDS_REARM = 0.90, 0.80
BATCH = 0.05  # seconds between reads of the proc connector and fanotify
# Events handled between two yields of the interpreter lock by this module's background threads:
# the seccomp listener's thread, which a workload's exec waits for, must not wait for a batch of
# the host's forks (it would, up to sys.getswitchinterval(), 5 ms, at every collision).
YIELD_EVERY = 16


def for_launch(launch) -> "Watch | None":
    profile = launch.profile
    if profile is None or launch.detached:
        return None
    settings = getattr(profile, "monitor", None)
    if settings is None or (settings.events is None and settings.baseline is None):
        return None
    return Watch(launch, settings)


class Watch:
    """The monitoring of one launch."""

    def __init__(self, launch, settings):
        self.syscalls = frozenset(OBSERVED)
        self.launch = launch
        self.settings = settings
        self.baseline = None
        self.sink: EventSink | None = None
        self.destination_fd = -1
        self.follow_path: str | None = None
        self.anomalies: list[dict] = []
        self.anomaly_count = 0
        self.killed_for: str | None = None
        self.mechanisms: dict = {}
        self.notes: list[str] = []
        self._denials: Counter = Counter()
        self._members: set[int] = set()
        self._exited: set[int] = set()
        self._known: dict[int, int] = {}  # host pid -> pid inside, of processes seen (the listener's thread)
        self._by_tid: dict = {}  # thread id -> facts.Process read at its exec, for its exit_group
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._root = -1  # the sandbox's root (init's), for the exec facts
        self._files = None
        self._connector = None
        self._taskstats = None
        self._pending_exits: dict[int, list] = {}  # main thread gone, the group's total may follow
        self._unknown_exits: list = []  # exits whose fork the connector has not told yet
        self._after = None  # an exec's facts, finished after its notification is answered
        self._first_exec = None  # rootless: the tid of the workload's first exec, True once said
        self._marks = {"memory": False, "pids": False}
        self._oom_kills = 0
        self._pids_refused = 0
        self._peak_said = False
        self._id_map = None
        self._finished = False
        profile = launch.profile
        self._loopback_only = profile.namespaces.network and profile.network.mode == "none"

    # ------------------------------------------------------------ before the fork

    def prepare(self) -> None:
        """Read the baseline and open the events file: a problem with either stops the launch
        (SetupError) before anything runs."""
        from ..errors import SetupError
        if self.settings.baseline:
            from .baseline import Baseline, BaselineError
            try:
                self.baseline = Baseline.load(self.settings.baseline)
            except BaselineError as exc:
                raise SetupError("monitor", 22, str(exc)) from None
        if self.settings.events is not None:
            try:
                self.destination_fd = open_destination(self.settings.events)
            except OSError as exc:
                raise SetupError("events", exc.errno or 0,
                                 f"{self.settings.events}: {exc.strerror or exc}") from None
        self._id_map = getattr(self.launch.plan, "id_map", None)
        from . import facts  # noqa: F401  (now, not on the path of the workload's first exec)
        if not self.settings.processes:  # the cost a build pays: see docs/performance.md
            self.syscalls = self.syscalls - {"execve", "execveat", "exit_group"}
        if os.geteuid() == 0:
            # Before the fork: nothing the sandbox does from its first fork on is missed.
            try:
                from .taskstats import ExitStats
                self._taskstats = ExitStats()
                self.syscalls = self.syscalls - {"exit_group"}  # exits come without stopping anyone
            except (OSError, ValueError) as exc:
                self.notes.append(f"exits observed through exit_group (taskstats: {getattr(exc, 'strerror', None) or exc})")
            try:
                from .proc_events import ProcEvents
                self._connector = ProcEvents(exits=self._taskstats is None)
            except OSError as exc:
                self.notes.append(f"process events without the proc connector: {exc.strerror or exc}")

    def filter_policy(self, policy):
        """The policy the workload's filter is compiled from: denials and the observed calls
        notify (the listener answers with the policy's errno, or CONTINUE)."""
        if policy is not None and policy.name == "learning":
            return policy  # learning notifies every call already
        from ..seccomp.notify import observing_policy
        return observing_policy(policy, self.syscalls)

    # ------------------------------------------------------------ created

    def attach(self, launch) -> str | None:
        """Start observing the created sandbox; returns the file `sandbox events ID` follows."""
        from .. import registry
        fds = []
        if self.destination_fd >= 0:
            fds.append(self.destination_fd)
            self.destination_fd = -1
        events = self.settings.events
        if events not in (None, "-") and os.path.isfile(events):
            self.follow_path = os.path.abspath(events)
        else:  # standard output, or no events at all (a baseline alone): a copy to follow
            try:
                path = os.path.join(registry.own_directory(), launch.id + registry.EVENTS_SUFFIX)
                fds.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                                   0o600))
                self.follow_path = path
            except OSError as exc:
                self.notes.append(f"`sandbox events` cannot follow this sandbox: {exc.strerror or exc}")
        self.sink = EventSink(launch.id, fds, started=launch._started or time.monotonic())
        init = launch.init_pid
        if init:
            self._members.add(init)
            try:
                self._root = os.open(f"/proc/{init}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                pass
            from .resources import _read
            for tid in os.listdir(f"/proc/{init}/task") if os.path.isdir(f"/proc/{init}/task") else ():
                self._members.update(int(p) for p in (_read(f"/proc/{init}/task/{tid}/children") or "").split())
        self.mechanisms = {"syscalls": "seccomp user notification", "resources": self._resource_source(),
                           "exits": "taskstats" if self._taskstats is not None else
                           "seccomp user notification" if "exit_group" in self.syscalls else "none",
                           "execs": "seccomp user notification" if "execve" in self.syscalls else "none"}
        if self._connector is not None:
            self.mechanisms["forks"] = "proc connector"
        if os.geteuid() == 0 and init:
            if self.settings.files:
                targets = [m.target for m in launch.profile.filesystem.mounts if m.mode == "rw"]
                if targets:
                    try:
                        from .files import FileWatch
                        self._files = FileWatch(init, targets)
                        self.mechanisms["files"] = self._files.marked
                        self.notes += [f"files written under {s} are not reported" for s in self._files.skipped]
                    except OSError as exc:
                        self.notes.append(f"files written are not reported: {exc.strerror or exc}")
        self.emit("start", {"profile": launch.plan.name, "argv": list(launch.argv), "host_pid": init,
                            "uid": os.getuid(), "monitor": self.mechanisms})
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name="sandbox-monitor", daemon=True)
        self._thread.start()
        return self.follow_path

    def _resource_source(self) -> str:
        cgroup = getattr(self.launch, "_cgroup", None)
        return "cgroup" if cgroup is not None and cgroup.active else "proc"

    def emit(self, kind: str, fields: dict) -> dict | None:
        sink = self.sink
        return sink.emit(kind, fields) if sink is not None else None

    # ------------------------------------------------------------ the monitor thread

    def _run(self) -> None:
        """Samples at the interval; the proc connector and fanotify read in batches, at most every
        BATCH seconds (each read wakes this thread, which then competes with the seccomp
        listener's for the interpreter: the host's every fork is a connector message)."""
        interval = self.settings.stats_interval
        tick = interval if interval > 0 else 1.0
        batched = [s for s in (self._connector, self._taskstats, self._files) if s is not None]
        next_sample = time.monotonic() + tick
        next_batch = 0.0
        while True:
            now = time.monotonic()
            sources = [self._wake_r] + ([s.fileno() for s in batched] if now >= next_batch else [])
            wake_at = next_sample if now >= next_batch else min(next_sample, next_batch)
            if self._first_exec is not None and self._first_exec is not True:
                wake_at = min(wake_at, now + BATCH)
            try:
                ready, _, _ = select.select(sources, [], [], max(0.0, wake_at - now))
            except InterruptedError:
                continue
            if self._wake_r in ready:
                return
            if ready:
                if self._connector is not None and self._connector.fileno() in ready:
                    self._process_events()
                if self._taskstats is not None and self._taskstats.fileno() in ready:
                    self._exit_stats()
                if self._files is not None and self._files.fileno() in ready:
                    self._file_events()
                next_batch = time.monotonic() + BATCH
            if self._first_exec is not None:
                self._settle_first_exec()
            if time.monotonic() >= next_sample:
                self.sample(emit_sample=interval > 0)
                next_sample = time.monotonic() + tick

    def _figures(self):
        from .resources import cgroup_figures, tree_figures
        cgroup = getattr(self.launch, "_cgroup", None)
        limits = self.launch.plan.cgroup_limits
        if cgroup is not None and cgroup.active and getattr(cgroup, "_destroyed", False):
            return self._final_figures(cgroup, limits)
        if cgroup is not None and cgroup.active:
            figures = cgroup_figures(cgroup.paths)
            if figures.memory_limit_bytes is None and "memory" in cgroup.applied:
                figures.memory_limit_bytes = limits.memory
            if figures.pids_limit is None and "pids" in cgroup.applied:
                figures.pids_limit = limits.pids
            return figures
        init = self.launch.init_pid
        if not init:
            return None
        # Without a cgroup, pids are limited by RLIMIT_NPROC in the sandbox's user namespace.
        return tree_figures(init, pids_limit=limits.pids if limits is not None else None)

    @staticmethod
    def _final_figures(cgroup, limits):
        """Once the launch has removed the cgroup (at the end of wait()), its last figures, which
        SandboxCgroup read just before."""
        from .resources import Figures
        stats = cgroup.stats()
        cpu = None if stats.cpu_user_s is None else stats.cpu_user_s + (stats.cpu_system_s or 0)
        return Figures(cpu_seconds=cpu, cpu_user_seconds=stats.cpu_user_s, cpu_system_seconds=stats.cpu_system_s,
                       memory_bytes=stats.memory_current_bytes, memory_peak_bytes=stats.memory_peak_bytes,
                       memory_limit_bytes=limits.memory if "memory" in cgroup.applied else None,
                       pids=0, pids_limit=limits.pids if "pids" in cgroup.applied else None,
                       oom_kills=stats.oom_kills, pids_limit_hits=stats.pids_limit_hits)

    def sample(self, emit_sample: bool = True, final: bool = False) -> None:
        """One reading: a `sample` event, and the thresholds it crosses."""
        try:
            figures = self._figures()
        except OSError:
            return
        if figures is None or (figures.cpu_seconds is None and figures.memory_bytes is None and figures.pids is None):
            return  # nothing to read (the cgroup is going)
        if emit_sample:
            fields = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in figures.to_dict().items()
                      if v is not None}
            if final:
                fields["final"] = True
            self.emit("sample", fields)
        self._thresholds(figures)

    def _thresholds(self, figures) -> None:
        # The peak since the start counts as well: a workload can cross the line and be killed
        # between two samples. Once said, a threshold is said again only after a fall below
        # the re-arm level.
        peak = figures.memory_peak_bytes if not self._peak_said else None
        for resource, value, top, limit, high, rearm in (
                ("memory", figures.memory_bytes, peak, figures.memory_limit_bytes, MEMORY_HIGH, MEMORY_REARM),
                ("pids", figures.pids, None, figures.pids_limit, PIDS_HIGH, PIDS_REARM)):
            if value is None or not limit:
                continue
            reached = max(value, top or 0)
            if not self._marks[resource] and reached >= high * limit:
                self._marks[resource] = True
                fields = {"resource": resource, "value": reached, "limit": limit,
                          "percent": round(100 * reached / limit, 1), "above": int(high * 100)}
                if reached != value:
                    fields["peak"] = True
                    self._peak_said = True
                self.emit("threshold", fields)
            elif self._marks[resource] and value < rearm * limit:
                self._marks[resource] = False
        if figures.oom_kills is not None and figures.oom_kills > self._oom_kills:
            self.emit("oom_kill", {"count": figures.oom_kills - self._oom_kills, "total": figures.oom_kills,
                                   "limit": figures.memory_limit_bytes})
            self._oom_kills = figures.oom_kills
        if figures.pids_limit_hits is not None and figures.pids_limit_hits > self._pids_refused:
            self.emit("threshold", {"resource": "pids", "refused_forks": figures.pids_limit_hits - self._pids_refused,
                                    "limit": figures.pids_limit, "at_limit": True})
            self._pids_refused = figures.pids_limit_hits

    def _process_events(self) -> None:
        from .facts import Process
        events, lost = self._connector.read()
        if lost:
            self.emit("lost", {"source": "proc connector", "overruns": lost})
        init = self.launch.init_pid
        for index, event in enumerate(events):
            if index % YIELD_EVERY == YIELD_EVERY - 1:
                time.sleep(0)
            if event[0] == "fork":
                _kind, parent, child, child_tgid = event
                if child != child_tgid:
                    continue  # a thread
                with self._lock:
                    if parent not in self._members:
                        continue
                    self._members.add(child)
                process = Process(child, self._known)
                inside = process.pid if process.name else None
                if inside is not None:
                    self._known.setdefault(child, inside)
                self.emit("fork", {"pid": inside, "ppid": process.ppid if process.name else self._known.get(parent),
                                   "host_pid": child, "host_ppid": parent})
            elif event[0] == "exit":
                _kind, pid, tgid, status, _parent = event
                if pid != tgid:
                    continue
                with self._lock:
                    if tgid not in self._members:
                        continue
                    self._members.discard(tgid)
                    seen = tgid in self._exited
                    self._exited.discard(tgid)
                if seen or tgid == init:
                    continue  # exit_group said it already; init is ours, not the workload's
                fields = {"host_pid": tgid, "source": "proc connector"}
                if os.WIFSIGNALED(status):
                    fields["signal"] = os.WTERMSIG(status)
                elif os.WIFEXITED(status):
                    fields["status"] = os.WEXITSTATUS(status)
                self.emit("exit", fields)

    def _exit_stats(self, final: bool = False) -> None:
        """Exits from taskstats: a process's main thread brings its status; a group of several
        threads ends with its total cpu time, which is used when it comes."""
        exits, lost = self._taskstats.read()
        if lost:
            self.emit("lost", {"source": "taskstats", "overruns": lost})
        init = self.launch.init_pid
        earlier = dict(self._pending_exits)
        # Exits of processes not known to be the sandbox's yet: their fork may still be in the
        # connector's socket (two sockets, read one after the other). Kept one more batch.
        unknown, self._unknown_exits = self._unknown_exits, []
        for index, entry in enumerate(unknown + exits):
            if index % YIELD_EVERY == YIELD_EVERY - 1:
                time.sleep(0)
            if entry[0] == "pid":
                _kind, pid, tgid, status, utime, stime = entry
                if pid != tgid or tgid == init:
                    continue
                with self._lock:
                    member = tgid in self._members
                if not member:
                    if index >= len(unknown) and not final:
                        self._unknown_exits.append(entry)
                    continue
                self._pending_exits[tgid] = [status, utime, stime]
            else:
                _kind, tgid, utime, stime = entry
                pending = self._pending_exits.pop(tgid, None)
                earlier.pop(tgid, None)
                if pending is not None:
                    self._emit_exit(tgid, pending[0], utime, stime)
        # Main threads seen in an earlier batch without a group total since: single-threaded.
        for tgid in list(self._pending_exits if final else earlier):
            status, utime, stime = self._pending_exits.pop(tgid)
            self._emit_exit(tgid, status, utime, stime)

    def _emit_exit(self, tgid: int, status: int, utime: int, stime: int) -> None:
        with self._lock:
            self._members.discard(tgid)
        fields = {"pid": self._known.pop(tgid, None), "host_pid": tgid}
        if os.WIFSIGNALED(status):
            fields["signal"] = os.WTERMSIG(status)
        else:
            fields["status"] = os.WEXITSTATUS(status)
        fields["cpu_user"], fields["cpu_system"] = round(utime / 1e6, 3), round(stime / 1e6, 3)
        self.emit("exit", fields)

    def _inside(self, host_pid: int) -> int | None:
        from .facts import status_of
        levels = status_of(host_pid).get("NStgid", "").split()
        return int(levels[-1]) if levels else None

    def _file_events(self) -> None:
        written, overflow = self._files.read()
        if overflow:
            self.emit("lost", {"source": "fanotify", "overflow": True})
        for pid, path in written:
            self.emit("file", {"path": path, "host_pid": pid, "operation": "write"})

    # ------------------------------------------------------------ the seccomp listener's thread

    def observe(self, tid: int, syscall: str, args, action, learning: bool, valid=lambda: True) -> bool:
        """A notification of an observed call (or a denial), before it is answered. Returns True
        when the sandbox must end now (an anomaly with on_anomaly = "kill"): the caller kills it
        before answering, so the call never runs. `valid()` says whether the caller still waits,
        i.e. whether the pid we read /proc with was still its own: facts are dropped otherwise."""
        from . import facts
        denied = not learning and action is not None and action.kind not in ("allow", "log", "notify")
        if syscall not in self.syscalls:
            if denied:
                self._denied(self._process(tid), syscall, args, action)
            return False
        verdict = {"allowed": not denied}
        if denied:
            verdict.update(refused_by="seccomp", errno=str(action))
        if syscall in ("execve", "execveat"):
            try:
                request = facts.exec_request(tid, syscall, args)  # the caller's memory: only while it waits
            except PermissionError:
                self._unreadable_exec(tid)
                return False
            if request is None or not valid():
                return False  # the caller is gone: the pid we read may not have been its own
            path, argv = request
            if self.baseline is not None and self.settings.on_anomaly == "kill" and not self.baseline.knows_exec(path):
                # Decided before the answer, so the program never runs (existence first: a PATH
                # search tries directories where the program is not).
                if facts.exists_inside(tid, path, self._root):
                    process = self._process(tid)
                    event = {**process.fields(), "uid": self._uid_inside(process.host_uid), "exe": path,
                             "argv": argv, **verdict}
                    self.emit("exec", event)
                    return self._anomaly(f"executable not in the baseline: {path}", "exec", event)
                return False
            # The rest needs no waiting caller: done after the answer (after_answer), which
            # saves the workload about half of what an exec costs it.
            self._after = (tid, path, argv, verdict)
            return False
        if syscall == "exit_group":
            process = self._by_tid.pop(tid, None) or self._process(tid)
            if self._first_exec == tid:
                self._settle_first_exec(final=True)  # it exits: its program is there to be read
            found = facts.exit_facts(process, args)
            if not valid():
                return False
            with self._lock:
                self._exited.add(process.host_pid)
                self._members.discard(process.host_pid)
            self._known.pop(process.host_pid, None)
            self.emit("exit", {"pid": process.pid, "host_pid": process.host_pid, **found})
            return False
        process = self._process(tid)
        found = facts.network_facts(process, syscall, args)
        if not valid():
            return False
        kind = "accept" if syscall == "accept4" else syscall
        if not denied:
            refusal = self._network_refusal(kind, found)
            if refusal:
                verdict = {"allowed": False, "refused_by": "network", "reason": refusal}
        event = {**process.fields(), **found, **verdict}
        self.emit(kind, event)
        if self.baseline is not None:
            line = facts.destination(kind, found)
            if not self.baseline.knows_network(line):
                return self._anomaly(f"network destination not in the baseline: {line}", kind, event)
        return False

    def _unreadable_exec(self, tid: int) -> None:
        """Rootless, the workload's own first exec: until it execs, the workload is a copy of
        the sandbox's init, itself a copy of the launcher, made non-dumpable (docs/threat-model.md)
        and owned by the initial user namespace, so its memory cannot be read. Its program is
        taken from /proc/PID/exe and cmdline once the exec has replaced it (_first_exec)."""
        if self._first_exec is None and tid not in self._by_tid:
            self._first_exec = tid

    def _settle_first_exec(self, final: bool = False) -> None:
        tid = self._first_exec
        if tid is None or tid is True:
            return
        from . import facts
        try:
            exe = os.readlink(f"/proc/{tid}/exe")
            argv = [os.fsdecode(a) for a in (facts._read(f"/proc/{tid}/cmdline", 1 << 16) or b"").split(b"\0")[:-1]]
        except OSError:
            exe, argv = None, None
        if exe is not None and exe == os.readlink("/proc/self/exe") and not final:
            return  # not exec'd yet: still our interpreter
        self._first_exec = True
        if exe is None:  # gone already: what the launcher asked for
            exe, argv = self.launch.argv[0], list(self.launch.argv)
        try:
            process = self._process(tid)
            fields = process.fields()
            uid = self._uid_inside(process.host_uid)
        except (OSError, ValueError):
            fields, uid = {"host_pid": tid}, None
        self._by_tid[tid] = None
        self.emit("exec", {**fields, "uid": uid, "exe": exe, "argv": argv, "allowed": True,
                           "source": "/proc after the exec"})

    def after_answer(self) -> None:
        """Called by the listener's thread once the notification is answered."""
        pending, self._after = self._after, None
        if pending is None:
            return
        from . import facts
        tid, path, argv, verdict = pending
        if not facts.exists_inside(tid, path, self._root):
            return  # a step of a PATH search: no such file there
        try:
            process = self._process(tid)
        except (OSError, ValueError):
            return
        if not process.name:  # gone already (a program that ran for less than this took)
            process.pid = self._known.get(tid)
        self._by_tid[tid] = process
        event = {**process.fields(), "uid": self._uid_inside(process.host_uid), "exe": path, "argv": argv, **verdict}
        self.emit("exec", event)
        if self.baseline is not None and not self.baseline.knows_exec(path):
            self._anomaly(f"executable not in the baseline: {path}", "exec", event)

    def _process(self, tid: int):
        from .facts import Process
        process = Process(tid, self._known)
        if process.name:
            self._known[process.host_pid] = process.pid
        with self._lock:
            self._members.add(process.host_pid)
        return process

    def _denied(self, process, syscall: str, args, action) -> None:
        with self._lock:
            self._denials[syscall] += 1
            count = self._denials[syscall]
        if count <= MAX_DENIAL_EVENTS:
            self.emit("denied", {**process.fields(), "syscall": syscall, "action": str(action),
                                 "args": [hex(a) for a in args[:3]]})
        elif count == MAX_DENIAL_EVENTS + 1:
            self.emit("denied", {"syscall": syscall, "suppressed": True,
                                 "note": f"more than {MAX_DENIAL_EVENTS} denials of {syscall}: counted only"})

    def _uid_inside(self, host_uid):
        id_map = self._id_map
        if host_uid is None or id_map is None:
            return host_uid
        return id_map.inside_uid if host_uid == id_map.host_uid else host_uid

    def _network_refusal(self, kind: str, found: dict) -> str | None:
        """Why the sandbox's network would refuse this call, from the profile's rules: with
        network mode "none", only loopback exists; in bridge mode, a connection leaves the segment
        only to what network.egress lists (the rules sandbox.net installs)."""
        if found.get("family") not in ("ipv4", "ipv6"):
            return None
        address = str(found.get("address", ""))
        if self._loopback_only:
            if kind == "connect" and not _loopback(address):
                return "only loopback exists in this sandbox (network mode none)"
            if kind == "bind" and address not in ("0.0.0.0", "::") and not _loopback(address):
                return "only loopback exists in this sandbox (network mode none)"
            return None
        attachment = getattr(self.launch, "network", None)
        if kind != "connect" or attachment is None or _loopback(address) or address in ("0.0.0.0", "::"):
            return None
        import ipaddress
        try:
            destination = ipaddress.ip_address(address)
            if attachment.subnet and destination in ipaddress.ip_network(attachment.subnet):
                return None  # on the segment
            from ..net.attach import _covered
            protocol = found.get("protocol", "")
            if destination.version == 4 and protocol in ("tcp", "udp") and \
                    _covered(attachment.egress, address, int(found.get("port") or 0), protocol):
                return None
        except (ValueError, TypeError, ImportError):
            return None
        return "not on the segment and not in network.egress (bridge mode)"

    def _anomaly(self, reason: str, about: str, event: dict) -> bool:
        fields = {"reason": reason, "about": about, "pid": event.get("pid"), "host_pid": event.get("host_pid")}
        for key in ("exe", "argv", "protocol", "address", "port"):
            if key in event:
                fields[key] = event[key]
        kill = self.settings.on_anomaly == "kill"
        with self._lock:
            self.anomaly_count += 1
            if len(self.anomalies) < MAX_ANOMALIES_KEPT:
                self.anomalies.append({"reason": reason, "pid": event.get("pid")})
            first_kill = kill and self.killed_for is None
            if first_kill:
                self.killed_for = reason
        if kill:
            fields["action"] = "kill"
        self.emit("anomaly", fields)
        if first_kill:
            self.launch.warnings.append(f"killed: anomaly: {reason} (monitor.on_anomaly = \"kill\")")
        return first_kill

    # ------------------------------------------------------------ the end

    def finish(self, result=None) -> None:
        """Stop observing: a last sample, the `end` event, the events closed. Idempotent."""
        if self._finished:
            return
        self._finished = True
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(5)
            self._thread = None
        self._settle_first_exec(final=True)
        if self._connector is not None:
            self._process_events()
        if self._taskstats is not None:
            self._exit_stats(final=True)
        if self._files is not None:
            self._file_events()
        if self.sink is not None:
            self.sample(emit_sample=True, final=True)
            fields = {}
            if result is not None and getattr(self.launch, "_waited", False):
                fields = {"exit_code": result.exit_code, "signal": result.signal, "timed_out": result.timed_out,
                          "oom_killed": result.oom_killed or self._oom_kills > 0,
                          "wall_time": round(time.monotonic() - self.launch._started, 3)}
            if self.killed_for:
                fields["killed_for"] = self.killed_for
            fields["counts"] = dict(self.sink.counts)
            self.emit("end", fields)
            self.sink.close()
            self.notes += self.sink.errors
        for resource in (self._connector, self._taskstats):
            if resource is not None:
                resource.close()
        if self._files is not None:
            # Closing it tears the sandbox's mount namespace down (it held it): an RCU grace
            # period or two, not for the launch to wait on.
            threading.Thread(target=self._files.close, name="sandbox-monitor-close", daemon=True).start()
        self._connector = self._files = self._taskstats = None
        for fd in (self._wake_r, self._wake_w, self.destination_fd, self._root):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = self.destination_fd = self._root = -1

    def summary(self) -> dict:
        """For the audit trail's end record: counts by kind, denials, anomalies."""
        counts = dict(self.sink.counts) if self.sink is not None else {}
        summary = {"counts": counts, "anomalies": self.anomaly_count, "denied": dict(self._denials)}
        if self.anomalies:
            summary["first_anomalies"] = self.anomalies
        if self.killed_for:
            summary["killed_for"] = self.killed_for
        if self.sink is not None and self.sink.lost:
            summary["lost"] = self.sink.lost
        if self.settings.events:
            summary["events"] = self.settings.events
        if self.settings.baseline:
            summary["baseline"] = self.settings.baseline
        return summary


def _loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1") or address.startswith("::ffff:127.")
