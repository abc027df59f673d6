"""What a sandbox uses right now: from its cgroup files when it has a cgroup, else from /proc.

    figures = cgroup_figures({"unified": "/sys/fs/cgroup/.../sandbox-1-ab", "memory": "..."})
    figures = tree_figures(init_pid)       # rootless without a cgroup: init and its descendants

Shared by the live samples of a running launch (monitor.Watch), `sandbox ps` and `sandbox stats`,
which read another process's sandbox from the paths in its registry record. Only reads; a file
that is missing (a controller that is not enabled, a sandbox that just ended) is a figure of None.
"""
from __future__ import annotations

import os
from dataclasses import asdict

from ..compiled_dataclass import dataclass

CGROUP_ROOT = "/sys/fs/cgroup/"
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
UNLIMITED_V1 = 1 << 62  # memory.limit_in_bytes reads 9223372036854771712 when unlimited


@dataclass
class Figures:
    """One reading; None where this machine or this sandbox cannot say."""

    cpu_seconds: float | None = None
    cpu_user_seconds: float | None = None
    cpu_system_seconds: float | None = None
    memory_bytes: int | None = None
    memory_peak_bytes: int | None = None
    memory_limit_bytes: int | None = None
    pids: int | None = None
    pids_limit: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    oom_kills: int | None = None
    pids_limit_hits: int | None = None  # forks refused at pids.max
    source: str = "cgroup"  # or "proc": summed over the process tree (rootless without a cgroup)

    def to_dict(self) -> dict:
        return asdict(self)


def _read(path: str) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return os.read(fd, 65536).decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _keyed(text: str | None) -> dict[str, int]:
    found = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                found[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return found


def safe_cgroup_dir(path: object) -> bool:
    """A path that names a directory below /sys/fs/cgroup and nothing else (records of other
    users are read by root: a record must not make root read a FIFO or a file elsewhere)."""
    return (isinstance(path, str) and path.startswith(CGROUP_ROOT) and "\0" not in path
            and os.path.normpath(path) == path and os.path.realpath(path) == path)


def cgroup_figures(paths: dict[str, str]) -> Figures:
    """Figures from a sandbox's cgroup directories: hierarchy -> directory, v1 controller names
    and "unified" for v2 (SandboxCgroup.paths). The unified file wins where both exist."""
    v2 = paths.get("unified")
    figures = Figures()

    def first(*candidates: tuple[str | None, str]) -> str | None:
        for directory, name in candidates:
            if directory:
                text = _read(os.path.join(directory, name))
                if text is not None:
                    return text
        return None

    cpu = _keyed(_read(os.path.join(v2, "cpu.stat"))) if v2 else {}
    if "usage_usec" in cpu:
        figures.cpu_seconds = cpu["usage_usec"] / 1e6
        figures.cpu_user_seconds = cpu.get("user_usec", 0) / 1e6
        figures.cpu_system_seconds = cpu.get("system_usec", 0) / 1e6
    elif paths.get("cpuacct"):
        usage = _int(_read(os.path.join(paths["cpuacct"], "cpuacct.usage")))
        if usage is not None:
            figures.cpu_seconds = usage / 1e9
            user = _int(_read(os.path.join(paths["cpuacct"], "cpuacct.usage_user")))
            system = _int(_read(os.path.join(paths["cpuacct"], "cpuacct.usage_sys")))
            figures.cpu_user_seconds = user / 1e9 if user is not None else None
            figures.cpu_system_seconds = system / 1e9 if system is not None else None
    memory = paths.get("memory")
    figures.memory_bytes = _int(first((v2, "memory.current"), (memory, "memory.usage_in_bytes")))
    figures.memory_peak_bytes = _int(first((v2, "memory.peak"), (memory, "memory.max_usage_in_bytes")))
    limit = _int(first((v2, "memory.max"), (memory, "memory.limit_in_bytes")))
    figures.memory_limit_bytes = limit if limit is not None and limit < UNLIMITED_V1 else None
    events = first((v2, "memory.events"), (memory, "memory.oom_control"))
    if events is not None:
        figures.oom_kills = _keyed(events).get("oom_kill", 0)
    pids = paths.get("pids")
    figures.pids = _int(first((v2, "pids.current"), (pids, "pids.current")))
    figures.pids_limit = _int(first((v2, "pids.max"), (pids, "pids.max")))
    pid_events = first((v2, "pids.events"), (pids, "pids.events"))
    if pid_events is not None:
        figures.pids_limit_hits = _keyed(pid_events).get("max", 0)
    if figures.pids is None:  # no pids controller: count the tasks
        tasks = _count_tasks([d for d in (v2, pids, memory, paths.get("cpuacct")) if d])
        figures.pids = tasks
    figures.io_read_bytes, figures.io_write_bytes = _cgroup_io(v2, paths.get("blkio"))
    return figures


def _count_tasks(directories: list[str]) -> int | None:
    for directory in directories:
        total, found = 0, False
        for top, _dirs, _files in os.walk(directory, onerror=lambda e: None):
            text = _read(os.path.join(top, "tasks")) or _read(os.path.join(top, "cgroup.threads"))
            if text is not None:
                found = True
                total += len(text.split())
        if found:
            return total
    return None


def _cgroup_io(v2: str | None, blkio: str | None) -> tuple[int | None, int | None]:
    text = _read(os.path.join(v2, "io.stat")) if v2 else None
    if text:
        read = written = 0
        for line in text.splitlines():
            for item in line.split()[1:]:
                key, _, value = item.partition("=")
                if key == "rbytes":
                    read += int(value)
                elif key == "wbytes":
                    written += int(value)
        return read, written
    for name in ("blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_service_bytes"):
        text = _read(os.path.join(blkio, name)) if blkio else None
        if text is None:
            continue
        read = written = 0
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2].isdigit():
                if parts[1] == "Read":
                    read += int(parts[2])
                elif parts[1] == "Write":
                    written += int(parts[2])
        return read, written
    return None, None


# ---------------------------------------------------------------- without a cgroup: the process tree

def process_tree(init_pid: int) -> list[int]:
    """init_pid and every descendant, through /proc/PID/task/TID/children."""
    found, stack = [], [init_pid]
    seen = set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        found.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            text = _read(f"/proc/{pid}/task/{tid}/children")
            if text:
                stack.extend(int(child) for child in text.split())
    return found


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: fields[0] is field 3 (state) of proc(5)."""
    text = _read(f"/proc/{pid}/stat")
    if not text or ")" not in text:
        return None
    return text.rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    """Field 22 (starttime, clock ticks after boot): with the pid, names one process for good."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def tree_figures(init_pid: int, *, memory_limit: int | None = None, pids_limit: int | None = None) -> Figures:
    """Summed over init and its descendants: cpu of the living and of the children they reaped,
    resident memory (shared pages counted in each process: an upper bound), threads, and I/O."""
    figures = Figures(source="proc", memory_limit_bytes=memory_limit, pids_limit=pids_limit)
    user = system = rss = threads = read = written = 0
    io_seen = False
    pids = process_tree(init_pid)
    if not pids or stat_fields(init_pid) is None:
        return figures
    for pid in pids:
        fields = stat_fields(pid)
        if fields is None or len(fields) < 22:
            continue
        user += int(fields[11]) + int(fields[13])  # utime + cutime
        system += int(fields[12]) + int(fields[14])  # stime + cstime
        threads += int(fields[17])
        rss += int(fields[21]) * _PAGE
        io = _keyed((_read(f"/proc/{pid}/io") or "").replace(":", ""))
        if io:
            io_seen = True
            read += io.get("read_bytes", 0)
            written += io.get("write_bytes", 0)
    figures.cpu_user_seconds, figures.cpu_system_seconds = user / _TICKS, system / _TICKS
    figures.cpu_seconds = (user + system) / _TICKS
    figures.memory_bytes, figures.pids = rss, threads
    if io_seen:
        figures.io_read_bytes, figures.io_write_bytes = read, written
    return figures
