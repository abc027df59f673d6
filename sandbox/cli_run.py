"""The body of `sandbox run`, kept apart from cli.py so that the run path imports only what it uses.

click parses the options (cli.py); `execute()` loads the profile, runs it and reports.
"""
from __future__ import annotations

import os
import sys

EXIT_USAGE = 125


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


def _bad_parameter(message: str, hint: str):
    import click
    return click.BadParameter(message, param_hint=hint)


def overrides(binds, envs, cwd, timeout, network, limits: dict | None = None) -> dict:
    """The command line's options as a profile table, merged over the profile and validated with it."""
    table: dict = {}
    if limits:
        table["limits"] = dict(limits)
    for spec in binds:
        parts = spec.split(":")
        if len(parts) == 1:
            parts += [parts[0]]
        if len(parts) == 2:
            parts.append("ro")
        if len(parts) != 3 or parts[2] not in ("ro", "rw") or not parts[0] or not parts[1]:
            raise _bad_parameter(f"expected SRC[:DST[:ro|rw]], found {spec!r}", "--bind")
        # On the command line a relative source means the caller's directory, as with cp or mount.
        table.setdefault("filesystem", {}).setdefault("mounts", []).append(
            {"source": os.path.abspath(parts[0]), "target": parts[1], "mode": parts[2]})
    for spec in envs:
        name, sep, value = spec.partition("=")
        if not sep or not name:
            raise _bad_parameter(f"expected NAME=VALUE, found {spec!r}", "--env")
        table.setdefault("process", {}).setdefault("env", {})[name] = value
    if cwd:
        table.setdefault("process", {})["cwd"] = cwd
    if timeout:
        table.setdefault("limits", {})["timeout"] = timeout
    if network:
        table["network"] = {"mode": network}
        table.setdefault("namespaces", {})["network"] = network != "host"
    return table


def execute(profile, command, binds=(), envs=(), cwd=None, timeout=None, network=None, tty=False,
            stats=False, result_json=None, verify_first=False, report_violations=False, quiet=False,
            limits: dict | None = None):
    """The run command; exits with the workload's status."""
    from .api import load_profile, run as run_sandbox
    from .errors import SandboxError
    command = list(command)
    if command[:1] == ["--"]:
        command = command[1:]
    try:
        loaded = load_profile(profile, overrides=overrides(binds, envs, cwd, timeout, network, limits))
        if verify_first:
            from .verify import verify_profile
            report = verify_profile(loaded)
            if not report.ok:
                echo(report.render())
                echo("sandbox: verification failed: not running the workload")
                sys.exit(EXIT_USAGE)
        from .program import startup_done
        startup_done()
        result = run_sandbox(loaded, command or None, tty=tty,
                             seccomp_mode="report" if report_violations else None)
    except SandboxError as exc:
        fail(exc)
    if not quiet:
        for warning in result.warnings:
            warn(warning)
    if result.timed_out:
        echo(f"sandbox: killed: timeout after {loaded.limits.timeout if not timeout else timeout}")
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
    if result_json:
        import json
        with open(result_json, "w") as handle:
            json.dump(result.to_dict(), handle, indent=2)
            handle.write("\n")
    sys.exit(result.exit_code)


def format_stats(result) -> str:
    from .profile.units import format_size

    def show(value, unit=""):
        return "n/a" if value is None else f"{value:.3f}{unit}" if isinstance(value, float) else f"{value}{unit}"
    status = f"signal {result.signal}" if result.signal else f"exit {result.exit_code}"
    memory = format_size(result.memory_peak) if result.memory_peak else "n/a"
    return (f"sandbox: {status}, wall {result.wall_time:.3f}s, user {show(result.cpu_user, 's')}, "
            f"system {show(result.cpu_system, 's')}, peak memory {memory}, peak pids {show(result.pids_peak)}"
            f"{', timed out' if result.timed_out else ''}{', out of memory' if result.oom_killed else ''}")
