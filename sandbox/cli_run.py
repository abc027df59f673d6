"""The body of `sandbox run`, kept apart from cli.py so that the run path imports only what it uses.

click parses the options (cli.py); `execute()` loads the profile, runs it and reports.
"""
from __future__ import annotations

import os
import sys

from .errors import SandboxError

EXIT_USAGE = 125


class DangerRefused(SandboxError):
    """`run --strict`: the profile has findings `sandbox lint` calls danger."""

    step = "lint"


def echo(message: str) -> None:
    """click.echo(message, err=True) for plain text."""
    stream = sys.stderr
    if stream is None:
        return
    stream.write(message + "\n")
    stream.flush()


def warn(message: str) -> None:
    echo(f"sandbox: warning: {message}")


def fail(exc) -> None:
    echo(f"sandbox: {exc.one_line()}")
    sys.exit(exc.exit_code)


def load_with_options(profile: str, options: dict):
    """The profile with the run options (cli.run_options) merged over it, and their notes.
    Raises ProfileError naming the option (`--memory: limits.memory: expected ...`)."""
    from .api import load_profile
    from .options import run_overrides
    table, notes = run_overrides(style="cli", **options)
    return load_profile(profile, overrides=table or None), notes


def report_problems(exc) -> None:
    """A ProfileError, every problem on its own line; exits 125."""
    for problem in exc.problems:
        echo(f"sandbox: {problem}")
    sys.exit(exc.exit_code)


class _ResultRecord:
    """--result-json: opened before anything is launched (an unwritable path is a usage error
    then, not a lost exit status after the run), written whatever happens, exactly once.
    "-" is standard output, which then carries the record only (execute() sends the workload's
    own standard output to standard error)."""

    def __init__(self, path: str | None):
        self.path, self.handle = path, None
        if path is None:
            return
        if path == "-":
            self.handle = sys.stdout
            return
        try:
            self.handle = open(path, "w")
        except OSError as exc:
            echo(f"sandbox: --result-json {path}: cannot write: {exc.strerror or exc}")
            sys.exit(EXIT_USAGE)

    def error(self, exc, step: str | None = None, profile=None) -> None:
        from .errors import ExecError, ProfileError
        step = step or getattr(exc, "step", None) or ("profile" if isinstance(exc, ProfileError) else
                                                       "exec" if isinstance(exc, ExecError) else "setup")
        error = {"step": step,
                 "errno": getattr(exc, "errno", None) or None, "message": exc.one_line()}
        if isinstance(exc, ProfileError):
            error["problems"] = [str(p) for p in exc.problems]
        self.write({"exit_code": exc.exit_code, "error": error,
                    "profile_name": getattr(profile, "name", ""), "warnings": []})

    def result(self, result) -> None:
        self.write({**result.to_dict(), "error": None})

    def write(self, record: dict) -> None:
        if self.handle is None:
            return
        import json
        handle, self.handle = self.handle, None
        try:
            json.dump(record, handle, indent=2, default=str)
            handle.write("\n")
            handle.flush()
        except OSError as exc:  # e.g. the disk filled up during the run: the exit status stands
            warn(f"--result-json {self.path}: not written: {exc.strerror or exc}")
        finally:
            if handle is not sys.stdout:
                try:
                    handle.close()
                except OSError:
                    pass


def execute(profile, command, options: dict | None = None, *, tty=False, stats=False, result_json=None,
            verify_first=False, report_violations=False, quiet=False, strict=False):
    """The run command; exits with the workload's status."""
    from .api import run as run_sandbox
    from .errors import ProfileError
    command = list(command)
    if command[:1] == ["--"]:
        command = command[1:]
    if result_json == "-" and tty:
        echo("sandbox: --result-json - writes the record to standard output, which --tty gives the workload")
        sys.exit(EXIT_USAGE)
    record = _ResultRecord(result_json)
    loaded = None
    try:
        loaded, notes = load_with_options(profile, options or {})
        # `--events -`: standard output carries the events, the workload's own goes to stderr.
        events_out = loaded.monitor.events == "-"
        if events_out and (result_json == "-" or tty):
            echo("sandbox: events to standard output (--events - or monitor.events = \"-\") cannot share it with "
                 + ("--result-json -" if result_json == "-" else "--tty"))
            sys.exit(EXIT_USAGE)
        _check_dangers(loaded, strict, quiet)
        if verify_first:
            from .verify import verify_profile
            report = verify_profile(loaded)
            if not report.ok:
                echo(report.render())
                echo("sandbox: verification failed: not running the workload")
                record.write({"exit_code": EXIT_USAGE, "profile_name": loaded.name, "warnings": [],
                              "error": {"step": "verify", "errno": None,
                                        "message": "verification failed: not running the workload",
                                        "failed": [r["id"] for r in report.results if r["status"] == "FAIL"]}})
                sys.exit(EXIT_USAGE)
        from .program import startup_done
        startup_done()
        result = run_sandbox(loaded, command or None, tty=tty, report_violations=report_violations,
                             stdout=2 if result_json == "-" or events_out else None)
    except ProfileError as exc:
        record.error(exc)
        report_problems(exc)
    except SandboxError as exc:
        record.error(exc, profile=loaded)
        fail(exc)
    result.warnings[:0] = notes
    if not quiet:
        for warning in result.warnings:
            warn(warning)
    if result.timed_out:
        from .profile.units import format_duration
        echo(f"sandbox: killed: timeout after {format_duration(loaded.limits.timeout)}")
    elif result.oom_killed:
        from .profile.units import format_size
        limit = format_size(loaded.limits.memory) if loaded.limits.memory else "?"
        if result.signal == 9:
            echo(f"sandbox: killed: out of memory (limit {limit})")
        else:  # the workload survived the loss of one of its processes
            echo(f"sandbox: a process in the sandbox was killed: out of memory (limit {limit})")
    if stats:
        echo(format_stats(result))
    if report_violations:
        if result.violations:
            for v in result.violations:
                echo(f"sandbox: denied: {v['syscall']} x{v['count']} -> {v['action']} "
                     f"(first: pid {v['first_pid']}, args {', '.join(v['first_args'][:3])})")
        else:
            echo("sandbox: no system call was denied")
    record.result(result)
    sys.exit(result.exit_code)


def _check_dangers(profile, strict: bool, quiet: bool) -> None:
    """`sandbox lint`'s dangers, said before the run; with --strict, a refusal to run."""
    from .lint import REFUSED_AT_LAUNCH, lint
    # What the launch refuses anyway is said by its error, not by a warning before it.
    dangers = [f for f in lint(profile) if f.severity == "danger" and f.id not in REFUSED_AT_LAUNCH]
    if not dangers:
        return
    if strict:
        shown = "; ".join(f"{f.key}: {f.message}" for f in dangers[:3])
        more = f" (and {len(dangers) - 3} more)" if len(dangers) > 3 else ""
        raise DangerRefused(f"--strict: the profile has {len(dangers)} danger finding{'s' * (len(dangers) > 1)} "
                      f"(sandbox lint): {shown}{more}")
    if not quiet:
        for finding in dangers:
            warn(f"danger: {finding.key}: {finding.message}")


def format_stats(result) -> str:
    from .profile.units import format_size

    def show(value, unit=""):
        return "n/a" if value is None else f"{value:.3f}{unit}" if isinstance(value, float) else f"{value}{unit}"
    status = f"signal {result.signal}" if result.signal else f"exit {result.exit_code}"
    memory = format_size(result.memory_peak) if result.memory_peak else "n/a"
    return (f"sandbox: {status}, wall {result.wall_time:.3f}s, user {show(result.cpu_user, 's')}, "
            f"system {show(result.cpu_system, 's')}, peak memory {memory}, peak pids {show(result.pids_peak)}"
            f"{', timed out' if result.timed_out else ''}{', out of memory' if result.oom_killed else ''}")
