"""The registry of running sandboxes: one small JSON record per in-process launch, from create()
to delete(), for `sandbox ps`, `stop`, `kill`, `stats` and `events` run from another shell.

Where the records live (docs/monitoring.md, "Running sandboxes"):

    root     /run/sandbox/running/                     (0700, root's)
    others   $XDG_RUNTIME_DIR/sandbox/running/         when XDG_RUNTIME_DIR is a directory of theirs
             /tmp/sandbox-<uid>/running/               otherwise (0700, made and checked like a cache)

A user reads both of their places (a shell without XDG_RUNTIME_DIR still sees the sandboxes of one
with it); root reads its own, /run/user/<uid>/sandbox/running and /tmp/sandbox-<uid>/running of
every user, each directory and record checked to belong to that uid. A record names its launcher
and init by pid *and* start time (field 22 of /proc/PID/stat), so a reused pid is never taken for
them; a record whose launcher is gone is ignored, and removed by `sandbox gc`.

Records of other users are data root did not write: root acts on them (stop, kill) with that
user's credentials, in a child process, so a forged record can never make root signal a process
its author could not signal; cgroup paths must lie below /sys/fs/cgroup and carry the launcher's
pid in their name, events files must be regular files of that user.
"""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import stat
import time

ROOT_DIRECTORY = "/run/sandbox/running"
RECORD_SUFFIX = ".json"
EVENTS_SUFFIX = ".events.jsonl"
STOP_SUFFIX = ".stop"
RECORD_VERSION = 1
MAX_RECORD = 1 << 20
_ID_RE = re.compile(r"^[0-9a-f]{8,64}$")
_CGROUP_NAME = re.compile(r"^sandbox-(\d+)-[A-Za-z0-9_.-]+$")
_checked: dict[tuple, str] = {}  # (euid, candidate) -> the directory once made and checked


# ---------------------------------------------------------------- where records live

def user_directories(uid: int | None = None) -> list[str]:
    """The places a user's records may be, the one written first."""
    uid = os.geteuid() if uid is None else uid
    if uid == 0:
        return [ROOT_DIRECTORY]
    found = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and _own_private(runtime, uid):
        found.append(os.path.join(runtime, "sandbox", "running"))
    found.append(f"/tmp/sandbox-{uid}/running")
    return found


def _own_private(path: str, uid: int) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == uid and not info.st_mode & 0o022


def _secure(path: str, uid: int, private: bool = True) -> None:
    """Make `path` (0700) unless it exists; refuse it unless it is a real directory of uid that
    nobody else can write (private: nor enter)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    mask = 0o077 if private else 0o022
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & mask:
        raise OSError(errno.EPERM, f"{path} is not a directory of uid {uid} that only it can "
                      f"{'enter' if private else 'write'} (is uid {info.st_uid}, {stat.filemode(info.st_mode)})")


def own_directory() -> str:
    """This user's record directory, made when missing and checked; OSError saying why not."""
    uid = os.geteuid()
    candidate = user_directories(uid)[0]
    key = (uid, candidate)
    if key in _checked and os.path.isdir(candidate):
        return candidate
    if uid == 0:
        os.makedirs("/run/sandbox", mode=0o755, exist_ok=True)
        _secure("/run/sandbox", 0, private=False)
        _secure(candidate, 0)
    else:  # /tmp/sandbox-<uid> or $XDG_RUNTIME_DIR/sandbox, then running/
        _secure(os.path.dirname(candidate), uid)
        _secure(candidate, uid)
    _checked[key] = candidate
    return candidate


def visible_directories() -> list[tuple[str, int]]:
    """(directory, owner uid) of every place this caller may read records from."""
    uid = os.geteuid()
    if uid != 0:
        return [(d, uid) for d in user_directories(uid)]
    found = [(ROOT_DIRECTORY, 0)]
    for pattern_base, pick in (("/run/user", lambda name: name), ("/tmp", _tmp_uid)):
        try:
            names = os.listdir(pattern_base)
        except OSError:
            continue
        for name in names:
            owner = pick(name)
            if owner is None or not str(owner).isdigit() or int(owner) == 0:
                continue
            base = os.path.join(pattern_base, name)
            directory = os.path.join(base, "sandbox", "running") if pattern_base == "/run/user" \
                else os.path.join(base, "running")
            found.append((directory, int(owner)))
    return found


def _tmp_uid(name: str) -> str | None:
    return name[len("sandbox-"):] if name.startswith("sandbox-") else None


# ---------------------------------------------------------------- the launcher's side

def _now_iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment * 1000) % 1000:03d}Z"


_names: dict[int, str] = {}


def _user_name(uid: int) -> str:
    if uid not in _names:
        import pwd
        try:
            _names[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            _names[uid] = str(uid)
    return _names[uid]


_own_start: dict[int, int | None] = {}


def write_record(directory: str, record: dict) -> str:
    """Write `record` as <id>.json in `directory`, atomically (a reader sees all of it or none)."""
    path = os.path.join(directory, record["id"] + RECORD_SUFFIX)
    temporary = os.path.join(directory, f".{record['id']}.{os.getpid()}.tmp")
    data = json.dumps(record, sort_keys=True).encode()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    return path


class Registration:
    """The record of one launch of this process, written at create() and removed at delete()."""

    def __init__(self, directory: str, record: dict):
        self.directory = directory
        self.record = record
        self.path = write_record(directory, record)

    @property
    def events_copy(self) -> str:
        """Where the events go when `sandbox events ID` has no file of the user's to follow."""
        return os.path.join(self.directory, self.record["id"] + EVENTS_SUFFIX)

    def update(self, **changes) -> None:
        self.record.update(changes)
        try:
            write_record(self.directory, self.record)
        except OSError:
            pass

    def remove(self) -> list[str]:
        """Remove the record (and the events copy); returns notes for the result's warnings:
        who stopped or killed the sandbox with `sandbox stop/kill`, when someone did."""
        notes = []
        stop_file = os.path.join(self.directory, self.record["id"] + STOP_SUFFIX)
        try:
            with open(stop_file, "rb") as handle:
                request = json.loads(handle.read(4096) or b"{}")
            notes.append(f"{request.get('action', 'stopped')} with `sandbox {request.get('command', 'stop')}` by "
                         f"uid {request.get('by_uid')} (pid {request.get('by_pid')})")
        except (OSError, ValueError):
            pass
        for path in (self.path, stop_file, self.events_copy):
            try:
                os.unlink(path)
            except OSError:
                pass
        return notes


def register(launch, events: str | None = None, status: str = "created") -> Registration | None:
    """The record of a launch that has just been created (init's pid is known); a warning on the
    launch, not an error, when it cannot be written."""
    from .monitor.resources import start_time
    pid = os.getpid()
    if pid not in _own_start:  # a forked copy of a launcher is another launcher
        _own_start.clear()
        _own_start[pid] = start_time(pid)
    now = time.time()
    cgroup = getattr(launch, "_cgroup", None)
    plan = launch.plan
    record = {
        "version": RECORD_VERSION, "id": launch.id, "profile": plan.name,
        "profile_hash": getattr(launch, "profile_hash", "") or "", "uid": os.getuid(), "gid": os.getgid(),
        "user": _user_name(os.getuid()), "launcher_pid": pid, "launcher_start": _own_start[pid],
        "init_pid": launch.init_pid, "init_start": start_time(launch.init_pid) if launch.init_pid else None,
        "started": now, "started_iso": _now_iso(now), "status": status,
        "argv": list(launch.argv), "cgroups": dict(cgroup.paths) if cgroup is not None and cgroup.active else {},
        "kill_after": launch.kill_after, "events": events,
        "memory_limit": plan.cgroup_limits.memory if plan.cgroup_limits is not None else None,
        "pids_limit": plan.cgroup_limits.pids if plan.cgroup_limits is not None else None,
    }
    try:
        return Registration(own_directory(), record)
    except OSError as exc:
        launch.warnings.append(f"not listed by `sandbox ps`: {exc.strerror or exc}")
        return None


# ---------------------------------------------------------------- reading records

class RecordError(Exception):
    """No such sandbox, an ambiguous id, or a record that cannot be acted on."""


class Running:
    """A record found in a registry directory, as `sandbox ps` sees it."""

    def __init__(self, record: dict, path: str, owner: int):
        self.record, self.path, self.owner = record, path, owner
        self.id: str = record["id"]

    def __getattr__(self, name):
        try:
            return self.__dict__["record"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def directory(self) -> str:
        return os.path.dirname(self.path)

    def launcher_alive(self) -> bool:
        from .monitor.resources import start_time
        return _same(self.record.get("launcher_pid"), self.record.get("launcher_start"), start_time)

    def init_alive(self) -> bool:
        from .monitor.resources import start_time
        return _same(self.record.get("init_pid"), self.record.get("init_start"), start_time)

    def uptime(self) -> float:
        started = self.record.get("started")
        return max(0.0, time.time() - started) if isinstance(started, (int, float)) else 0.0

    def cgroups(self) -> dict[str, str]:
        """The record's cgroup directories that pass the checks (below /sys/fs/cgroup, named
        sandbox-<this launcher's pid>-..., existing)."""
        from .monitor.resources import safe_cgroup_dir
        found = {}
        paths = self.record.get("cgroups")
        if not isinstance(paths, dict):
            return found
        for hierarchy, directory in paths.items():
            match = _CGROUP_NAME.match(os.path.basename(directory)) if isinstance(directory, str) else None
            if (isinstance(hierarchy, str) and match and int(match.group(1)) == self.record.get("launcher_pid")
                    and safe_cgroup_dir(directory) and os.path.isdir(directory)):
                found[hierarchy] = directory
        return found

    def figures(self):
        from .monitor.resources import cgroup_figures, tree_figures
        cgroups = self.cgroups()
        if cgroups:
            figures = cgroup_figures(cgroups)
            if figures.memory_limit_bytes is None:
                figures.memory_limit_bytes = _number(self.record.get("memory_limit"))
            if figures.pids_limit is None:
                figures.pids_limit = _number(self.record.get("pids_limit"))
            return figures
        init = self.record.get("init_pid")
        if isinstance(init, int) and self.init_alive() and self._owns(init):
            return tree_figures(init, memory_limit=_number(self.record.get("memory_limit")),
                                pids_limit=_number(self.record.get("pids_limit")))
        from .monitor.resources import Figures
        return Figures(source="none")

    def _owns(self, pid: int) -> bool:
        """The process belongs to the record's user (root reads other users' records: a record
        must not make root show a process of someone else as theirs)."""
        if self.owner == 0:
            return True
        from .monitor.facts import status_of
        uids = status_of(pid).get("Uid", "").split()
        return bool(uids) and int(uids[0]) == self.owner

    def events_file(self) -> str | None:
        """The events file to read, checked to be a regular file of the record's user."""
        path = self.record.get("events")
        if not isinstance(path, str) or not os.path.isabs(path):
            return None
        try:
            info = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode) or (info.st_uid != self.owner and self.owner != 0):
            return None
        return path


def _number(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _same(pid, expected, start_time) -> bool:
    if not isinstance(pid, int) or pid <= 0 or isinstance(pid, bool):
        return False
    found = start_time(pid)
    return found is not None and found == expected


def _orphans() -> list[str]:
    removed = []
    for directory, owner in visible_directories():
        try:
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if os.fstat(dir_fd).st_uid != owner:
                continue
            names = os.listdir(dir_fd)
            records = {n[:-len(RECORD_SUFFIX)] for n in names if n.endswith(RECORD_SUFFIX)}
            for name in names:
                for suffix in (STOP_SUFFIX, EVENTS_SUFFIX):
                    if name.endswith(suffix) and name[:-len(suffix)] not in records:
                        try:
                            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                            if time.time() - info.st_mtime > ORPHAN_AGE and info.st_uid == owner:
                                os.unlink(name, dir_fd=dir_fd)
                                removed.append(os.path.join(directory, name))
                        except OSError:
                            pass
        finally:
            os.close(dir_fd)
    return removed


def _read_records(directory: str, owner: int) -> list[Running]:
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        info = os.fstat(dir_fd)
        if info.st_uid != owner or info.st_mode & 0o022:
            return []  # not that user's, or others could plant records in it
        found = []
        for name in os.listdir(dir_fd):
            if not name.endswith(RECORD_SUFFIX) or not _ID_RE.match(name[:-len(RECORD_SUFFIX)]):
                continue
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError:
                continue
            try:
                file_info = os.fstat(fd)
                if not stat.S_ISREG(file_info.st_mode) or file_info.st_uid != owner:
                    continue
                record = json.loads(os.read(fd, MAX_RECORD))
            except (OSError, ValueError):
                continue
            finally:
                os.close(fd)
            if isinstance(record, dict) and record.get("id") == name[:-len(RECORD_SUFFIX)] \
                    and (owner == 0 or record.get("uid") == owner):
                found.append(Running(record, os.path.join(directory, name), owner))
        return found
    finally:
        os.close(dir_fd)


def sandboxes(*, include_dead: bool = False) -> list[Running]:
    """The running sandboxes this caller may see, oldest first (with include_dead: also the
    records of launchers that are gone)."""
    found: dict[str, Running] = {}
    for directory, owner in visible_directories():
        for running in _read_records(directory, owner):
            if include_dead or running.launcher_alive():
                found.setdefault(running.id, running)
    return sorted(found.values(), key=lambda r: (r.record.get("started") or 0, r.id))


def find(prefix: str) -> Running:
    """The running sandbox whose id starts with `prefix`; RecordError when none or several do."""
    prefix = prefix.strip().lower()
    if not prefix or not re.fullmatch(r"[0-9a-f]+", prefix):
        raise RecordError(f"{prefix!r} is not a sandbox id (hexadecimal, as `sandbox ps` shows)")
    matches = [r for r in sandboxes() if r.id.startswith(prefix)]
    if not matches:
        raise RecordError(f"no running sandbox {prefix} (of this user)" if os.geteuid() else
                          f"no running sandbox {prefix}")
    if len(matches) > 1:
        raise RecordError(f"{prefix} is ambiguous: {', '.join(r.id for r in matches)}")
    return matches[0]


ORPHAN_AGE = 60.0  # seconds: a launch writes its events copy just before its record


def collect() -> list[str]:
    """Remove the records (and event copies) of launchers that are gone, and notes and copies whose
    record is gone; returns what was removed."""
    removed = _orphans()
    for running in sandboxes(include_dead=True):
        if running.launcher_alive():
            continue
        base = running.path[:-len(RECORD_SUFFIX)]
        try:
            dir_fd = os.open(running.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if os.fstat(dir_fd).st_uid != running.owner:
                continue
            for name in (os.path.basename(running.path), running.id + EVENTS_SUFFIX, running.id + STOP_SUFFIX):
                try:
                    os.unlink(name, dir_fd=dir_fd)
                    if name.endswith(RECORD_SUFFIX):
                        removed.append(base + RECORD_SUFFIX)
                except OSError:
                    pass
        finally:
            os.close(dir_fd)
    return removed


# ---------------------------------------------------------------- acting on a sandbox

def _pidfd_of(pid, expected_start):
    """A pidfd of `pid`, only when it is still the process that started at `expected_start`."""
    from .monitor.resources import start_time
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    # Opened first, checked second: if the check passes, the pidfd is of that very process.
    if start_time(pid) != expected_start:
        os.close(fd)
        return None
    return fd


def _signal_init(running: Running, signum: int) -> bool:
    """signum to the sandbox's init, through a pidfd of the process the record names; False when
    it is gone or may not be signalled."""
    fd = _pidfd_of(running.record.get("init_pid"), running.record.get("init_start"))
    if fd is None:
        return False
    try:
        signal.pidfd_send_signal(fd, signum)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        os.close(fd)


def _members(running: Running) -> list[int]:
    """Every process of the sandbox: its cgroup's, or init's descendants when it has none."""
    from .monitor.resources import process_tree
    cgroups = running.cgroups()
    pids: set[int] = set()
    for directory in cgroups.values():
        for top, _dirs, _files in os.walk(directory, onerror=lambda e: None):
            try:
                with open(os.path.join(top, "cgroup.procs")) as handle:
                    pids.update(int(word) for word in handle.read().split())
            except OSError:
                pass
    if not cgroups and running.init_alive():
        pids.update(process_tree(running.record["init_pid"]))
    return sorted(pids)


def _kill_tree(running: Running) -> None:
    for hierarchy, directory in running.cgroups().items():
        if hierarchy == "unified" and os.path.exists(os.path.join(directory, "cgroup.kill")):
            try:
                with open(os.path.join(directory, "cgroup.kill"), "w") as handle:
                    handle.write("1")
            except OSError:
                pass
    _signal_init(running, signal.SIGKILL)  # with a pid namespace, the rest dies with it
    for pid in _members(running):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _terminate(running: Running) -> None:
    """SIGTERM to init (which passes it to the workload) and to every other process, as the
    launcher's timeout does."""
    _signal_init(running, signal.SIGTERM)
    init = running.record.get("init_pid")
    for pid in _members(running):
        if pid != init:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass


def _note_request(running: Running, command: str, action: str, actor: tuple[int, int]) -> str:
    """Tell the launcher who stopped its sandbox (it adds a warning to the result and the audit).
    Written before the signal (the launcher may be gone right after it); returns the path."""
    request = {"command": command, "action": action, "by_uid": actor[0], "by_pid": actor[1],
               "time": _now_iso(time.time())}
    path = os.path.join(running.directory, running.id + STOP_SUFFIX)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(request).encode())
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


def _forget_request(path: str) -> None:
    """The signal did not go out: no note for the launcher, none left behind."""
    try:
        os.unlink(path)
    except OSError:
        pass


def _as_owner(running: Running, action) -> int:
    """action() -> exit code, run with the record's user's credentials when root acts on another
    user's sandbox (in a child process), else here."""
    uid = running.record.get("uid")
    if os.geteuid() != 0 or running.owner == 0:
        return action()
    gid = running.record.get("gid", uid)
    if not isinstance(uid, int) or not isinstance(gid, int) or uid <= 0 or gid < 0 or uid != running.owner:
        raise RecordError(f"the record of {running.id[:12]} names no valid user")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            code = action()
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def stop(running: Running, grace: float | None = None) -> str:
    """SIGTERM to the workload (and every process), SIGKILL to the whole tree after `grace`
    seconds (the record's kill_after by default). Returns what happened."""
    if grace is None:
        grace = running.record.get("kill_after")
        grace = float(grace) if isinstance(grace, (int, float)) and not isinstance(grace, bool) else 3.0

    actor = (os.getuid(), os.getpid())  # before _as_owner changes them

    def act() -> int:
        note = _note_request(running, "stop", "stopped", actor)
        if not running.init_alive():
            _forget_request(note)
            return 4
        _terminate(running)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not running.init_alive():
                return 0
            time.sleep(0.05)
        _note_request(running, "stop", f"killed after a {grace:g}s grace", actor)
        _kill_tree(running)
        deadline = time.monotonic() + 5
        while running.init_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if running.init_alive():
            _forget_request(note)
            return 3
        return 2

    code = _as_owner(running, act)
    if code in (0, 2):
        return "stopped" if code == 0 else f"killed after {grace:g}s"
    return _refused(running, code)


def kill(running: Running, signum: int = signal.SIGKILL) -> str:
    """SIGKILL: the whole tree. Any other signal: to init, which passes it on to the workload."""
    actor = (os.getuid(), os.getpid())

    def act() -> int:
        name = signal.Signals(signum).name
        note = _note_request(running, "kill", f"killed ({name})" if signum == signal.SIGKILL else f"sent {name}",
                             actor)
        if signum == signal.SIGKILL:
            _kill_tree(running)
            deadline = time.monotonic() + 5
            while running.init_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            code = 0 if not running.init_alive() else 3
        else:
            code = 0 if _signal_init(running, signum) else 4
        if code:
            _forget_request(note)
        return code

    code = _as_owner(running, act)
    return "sent" if code == 0 else _refused(running, code)


def _refused(running: Running, code: int) -> str:
    if code == 4 or not running.init_alive():
        raise RecordError(f"sandbox {running.id[:12]} is no longer running")
    raise RecordError(f"sandbox {running.id[:12]} could not be signalled (not permitted, or it would not die)")
