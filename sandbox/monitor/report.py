"""How `sandbox ps` and `sandbox stats` show running sandboxes: a table, JSON, or the Prometheus
text exposition format (for node exporter's textfile collector)."""
from __future__ import annotations

import os
import time


def human_size(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value >= factor:
            return f"{value / factor:.1f}{unit}"
    return f"{value}B"


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def entry(running, figures) -> dict:
    """One running sandbox as data (ps --json, stats --json)."""
    record = running.record
    return {"id": running.id, "profile": record.get("profile"), "profile_hash": record.get("profile_hash"),
            "user": record.get("user"), "uid": record.get("uid"), "pid": record.get("init_pid"),
            "launcher_pid": record.get("launcher_pid"), "status": record.get("status"),
            "started": record.get("started_iso"), "uptime": round(running.uptime(), 3),
            "argv": record.get("argv"), "events": record.get("events"), **figures.to_dict()}


def ps_table(rows: list[tuple]) -> str:
    """rows: (running, figures)."""
    lines = [f"{'ID':<12}  {'PROFILE':<14} {'USER':<10} {'PID':>7} {'STATUS':<8} {'UPTIME':>8} {'CPU':>8} "
             f"{'MEMORY':>8} {'PIDS':>5}  COMMAND"]
    for running, figures in rows:
        record = running.record
        cpu = "-" if figures.cpu_seconds is None else f"{figures.cpu_seconds:.2f}s"
        command = " ".join(record.get("argv") or [])
        lines.append(f"{running.id[:12]:<12}  {str(record.get('profile'))[:14]:<14} {str(record.get('user'))[:10]:<10} "
                     f"{record.get('init_pid') or '-':>7} {str(record.get('status'))[:8]:<8} "
                     f"{human_duration(running.uptime()):>8} {cpu:>8} {human_size(figures.memory_bytes):>8} "
                     f"{'-' if figures.pids is None else figures.pids:>5}  {command[:60]}")
    return "\n".join(lines)


def stats_table(rows: list[tuple]) -> str:
    lines = [f"{'ID':<12}  {'CPU':>9} {'USER':>9} {'SYSTEM':>9} {'MEMORY':>8} {'/ LIMIT':>8} {'PEAK':>8} "
             f"{'PIDS':>5} {'/ MAX':>6} {'READ':>8} {'WRITTEN':>8} {'OOM':>4}  SOURCE"]

    def seconds(value):
        return "-" if value is None else f"{value:.2f}s"
    for running, f in rows:
        lines.append(f"{running.id[:12]:<12}  {seconds(f.cpu_seconds):>9} {seconds(f.cpu_user_seconds):>9} "
                     f"{seconds(f.cpu_system_seconds):>9} {human_size(f.memory_bytes):>8} "
                     f"{human_size(f.memory_limit_bytes):>8} {human_size(f.memory_peak_bytes):>8} "
                     f"{'-' if f.pids is None else f.pids:>5} {'-' if f.pids_limit is None else f.pids_limit:>6} "
                     f"{human_size(f.io_read_bytes):>8} {human_size(f.io_write_bytes):>8} "
                     f"{'-' if f.oom_kills is None else f.oom_kills:>4}  {f.source}")
    return "\n".join(lines)


# ---------------------------------------------------------------- Prometheus

# (metric, type, help, figure attribute)
METRICS = (
    ("sandbox_cpu_seconds_total", "counter", "CPU time used by the sandbox's processes, in seconds.", "cpu_seconds"),
    ("sandbox_cpu_user_seconds_total", "counter", "User-mode CPU time, in seconds.", "cpu_user_seconds"),
    ("sandbox_cpu_system_seconds_total", "counter", "Kernel-mode CPU time, in seconds.", "cpu_system_seconds"),
    ("sandbox_memory_bytes", "gauge", "Memory in use (the cgroup's; without one, the processes' resident sum).",
     "memory_bytes"),
    ("sandbox_memory_peak_bytes", "gauge", "Highest memory use so far.", "memory_peak_bytes"),
    ("sandbox_memory_limit_bytes", "gauge", "The memory limit.", "memory_limit_bytes"),
    ("sandbox_pids", "gauge", "Processes and threads.", "pids"),
    ("sandbox_pids_limit", "gauge", "The limit on processes and threads.", "pids_limit"),
    ("sandbox_io_read_bytes_total", "counter", "Bytes read from block devices.", "io_read_bytes"),
    ("sandbox_io_write_bytes_total", "counter", "Bytes written to block devices.", "io_write_bytes"),
    ("sandbox_oom_kills_total", "counter", "Processes killed by the out-of-memory killer.", "oom_kills"),
    ("sandbox_pids_limit_hits_total", "counter", "Forks refused at the process limit.", "pids_limit_hits"),
)


def _label(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value) -> str:
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)


def prometheus(rows: list[tuple]) -> str:
    """The text exposition format: HELP and TYPE once per metric, labels id, profile, user."""
    out = ["# HELP sandbox_running Sandboxes running now (as the caller may see them).",
           "# TYPE sandbox_running gauge", f"sandbox_running {len(rows)}",
           "# HELP sandbox_info A running sandbox: its profile's hash and init's host pid as labels.",
           "# TYPE sandbox_info gauge"]
    labels = []
    for running, _figures in rows:
        record = running.record
        base = f'id="{_label(running.id)}",profile="{_label(record.get("profile"))}",user="{_label(record.get("user"))}"'
        labels.append(base)
        out.append(f'sandbox_info{{{base},profile_hash="{_label(record.get("profile_hash") or "")}",'
                   f'pid="{_label(record.get("init_pid"))}"}} 1')
    out += ["# HELP sandbox_start_time_seconds When the sandbox was created (Unix time).",
            "# TYPE sandbox_start_time_seconds gauge"]
    for (running, _figures), base in zip(rows, labels):
        started = running.record.get("started")
        if isinstance(started, (int, float)):
            out.append(f"sandbox_start_time_seconds{{{base}}} {_number(float(started))}")
    for name, kind, text, attribute in METRICS:
        samples = [(base, getattr(figures, attribute)) for (running, figures), base in zip(rows, labels)
                   if getattr(figures, attribute) is not None]
        out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        out += [f"{name}{{{base}}} {_number(value)}" for base, value in samples]
    return "\n".join(out) + "\n"


def write_atomically(path: str, text: str) -> None:
    """Write `text` to `path` by renaming a complete file over it (a collector never reads half),
    readable by others (mode 0644: node exporter runs as its own user)."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{time.monotonic_ns()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        try:
            view = memoryview(text.encode())
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, 0o644)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
