"""The `sandbox` command: a thin layer over the Python API.

Exit status of `sandbox run`: the workload's own; 128+N when it died of signal N; 124 on timeout;
125 when the sandbox itself failed (bad profile, bad option, setup error); 126 command not
executable; 127 command not found. Every error is one line prefixed `sandbox:`.
Imports are deferred into the commands: start-up time is part of every launch.
"""
from __future__ import annotations

import sys

import click

from .cli_run import EXIT_USAGE, fail as _fail, warn as _warn  # one wording of errors for every command


# Every command but `run` lives in cli_commands.py and is made when asked for (name -> function).
LAZY_COMMANDS = {
    "audit": "audit", "check": "check", "events": "events", "export": "export", "gc": "gc", "image": "image",
    "import": "import_", "kill": "kill", "learn": "learn", "lint": "lint", "probe": "probe", "profiles": "profiles",
    "ps": "ps", "scan": "scan", "schema": "schema", "seccomp": "seccomp", "stats": "stats", "stop": "stop",
    "verify": "verify",
}


class _Group(click.Group):
    def list_commands(self, ctx) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx, name: str):
        command = super().get_command(ctx, name)
        if command is None and name in LAZY_COMMANDS:
            from . import cli_commands
            command = getattr(cli_commands, LAZY_COMMANDS[name])
        return command

    def main(self, *args, **kwargs):
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("sandbox: aborted", err=True)
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            click.echo(f"sandbox: {exc.format_message()}", err=True)
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            sys.exit(130)
        except OSError as exc:  # the environment, not a bug: say what, no traceback
            where = f" {exc.filename}" if exc.filename else ""
            click.echo(f"sandbox: error:{where}: {exc.strerror or exc}", err=True)
            sys.exit(EXIT_USAGE)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sandbox", prog_name="sandbox")
def main():
    """Run untrusted code in a minimal container built from Linux primitives."""


_RUN_OPTIONS = (
    click.option("--bind", "binds", multiple=True, metavar="SRC[:DST[:ro|rw]]",
                 help="Bind a host path (read-only unless :rw; a relative SRC is the current directory's)."),
    click.option("--env", multiple=True, metavar="NAME[=VALUE]",
                 help="Set a variable inside; NAME alone passes the host's variable through."),
    click.option("--cwd", metavar="DIR", help="Working directory inside (relative: below the profile's)."),
    click.option("--timeout", metavar="DURATION", help="Wall-clock limit, e.g. 30s or 5m."),
    click.option("--kill-after", metavar="DURATION",
                 help="At the timeout, SIGTERM first and SIGKILL after this grace period (default 3s)."),
    click.option("--network", metavar="MODE", help="The network mode: none, host or bridge (docs/network.md)."),
    click.option("--memory", metavar="SIZE", help="Memory limit, e.g. 512M."),
    click.option("--cpus", metavar="N", help="CPU bandwidth in cores, e.g. 0.5."),
    click.option("--pids", metavar="N", help="Maximum number of processes and threads."),
    click.option("--image", metavar="REF",
                 help="Run from this container image (oci:DIR[:TAG], oci-archive:FILE, docker://HOST/NAME...)."),
    click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
                 help="Any profile key, dotted (limits.nofile...), VALUE as TOML (a bare word is a string)."),
    click.option("--events", metavar="FILE|-",
                 help="Write live activity events, one JSON line each, to FILE (appended) or - (standard output)."),
    click.option("--stats-interval", metavar="DURATION",
                 help="Resource samples in the events every DURATION (default 1s; 0: none)."),
)
_RUN_OPTION_NAMES = ("binds", "env", "cwd", "timeout", "kill_after", "image", "network", "memory", "cpus", "pids", "settings",
                     "events", "stats_interval")


def run_options(command):
    """The options that change the profile, shared by run, check, lint and verify, so that check
    and lint show what will actually run. They reach the command as one `options` dict."""
    import functools

    @functools.wraps(command)
    def with_options(*args, **kwargs):
        options = {name: kwargs.pop(name) for name in _RUN_OPTION_NAMES}
        return command(*args, options=options, **kwargs)
    for option in reversed(_RUN_OPTIONS):
        with_options = option(with_options)
    return with_options


def _load(profile: str, options: dict):
    """The profile with the run options, every problem on its own line (exit 125)."""
    from .cli_run import load_with_options, report_problems
    from .errors import ProfileError, SandboxError
    try:
        loaded, notes = load_with_options(profile, options)
    except ProfileError as exc:
        report_problems(exc)
    except SandboxError as exc:
        _fail(exc)
    for note in notes:
        _warn(note)
    return loaded


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("profile")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@run_options
@click.option("--tty", is_flag=True, help="Give the workload a fresh pseudo-terminal.")
@click.option("--stats", is_flag=True, help="Print what the run used, on stderr.")
@click.option("--result-json", metavar="FILE",
              help="Write the result (or the error) as JSON; - for standard output, the workload's then going "
                   "to standard error.")
@click.option("--verify", "verify_first", is_flag=True, help="Verify the isolation first; refuse to run on a failure.")
@click.option("--report-violations", is_flag=True, help="Report denied system calls after the run.")
@click.option("--strict", is_flag=True, help="Refuse to run a profile with `sandbox lint` dangers.")
@click.option("-q", "--quiet", is_flag=True, help="No warnings.")
def run(profile, command, options, tty, stats, result_json, verify_first, report_violations, strict, quiet):
    """Run COMMAND (default: the profile's) in a sandbox built from PROFILE (a file or built-in name).

    Options go before `--`; everything after it is the command."""
    from . import cgprime
    cgprime.start()  # the cgroup-migration grace period, paid behind the imports (see cgprime.py)
    from .cli_run import execute
    execute(profile, command, options, tty=tty, stats=stats, result_json=result_json, verify_first=verify_first,
            report_violations=report_violations, quiet=quiet, strict=strict)


if __name__ == "__main__":
    main()
