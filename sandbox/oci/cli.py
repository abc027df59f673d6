"""The `sandbox-runtime` command line: runc's, as podman/conmon, containerd's shim and Docker call it.

Engines call the runtime several times per container, so start-up stays lean: this module
imports only os, sys and json; each command imports what it needs when it runs (the launcher
only for create, run and exec).

Errors are written as runc writes them: one JSON line {"level":"error","msg":...,"time":...}
(or logrus text) to the --log file, and the message to stderr; the exit status is 1 (a command
that runs a container, `run` or `exec` without --detach, exits with the container's status).
"""
from __future__ import annotations

import os
import sys

VERSION = "0.1.0"
SPEC_VERSION = "1.2.0"

# flag -> (destination, takes a value, may repeat)
GLOBAL_FLAGS = {
    "--root": ("root", True, False), "--log": ("log", True, False), "--log-format": ("log_format", True, False),
    "--debug": ("debug", False, False), "--systemd-cgroup": ("systemd_cgroup", False, False),
    "--rootless": ("rootless", True, False), "--criu": ("criu", True, False),
    "--floor": ("floor", True, False),
    "--help": ("help", False, False), "-h": ("help", False, False),
    "--version": ("version", False, False), "-v": ("version", False, False),
}
# Accepted and ignored, because they change nothing about isolation (docs/oci.md lists them):
# --criu (no checkpointing), --rootless (detected), --systemd-cgroup (no systemd: the
# slice:prefix:name form is mapped to cgroupfs paths), create/run --no-pivot (we always
# pivot_root, which is stricter), --notify-socket (no sd_notify). --no-new-keyring is honoured.
_CREATE = {
    "--bundle": ("bundle", True, False), "-b": ("bundle", True, False),
    "--console-socket": ("console_socket", True, False), "--pid-file": ("pid_file", True, False),
    "--no-pivot": ("no_pivot", False, False), "--no-new-keyring": ("no_new_keyring", False, False),
    "--preserve-fds": ("preserve_fds", True, False), "--notify-socket": ("notify_socket", True, False),
}
COMMANDS = {
    "create": _CREATE,
    "run": {**_CREATE, "--detach": ("detach", False, False), "-d": ("detach", False, False),
            "--keep": ("keep", False, False)},
    "start": {},
    "state": {},
    "kill": {"--all": ("all", False, False), "-a": ("all", False, False)},
    "delete": {"--force": ("force", False, False), "-f": ("force", False, False)},
    "list": {"--format": ("format", True, False), "-f": ("format", True, False),
             "--quiet": ("quiet", False, False), "-q": ("quiet", False, False)},
    "ps": {"--format": ("format", True, False), "-f": ("format", True, False)},
    "pause": {},
    "resume": {},
    "events": {"--stats": ("stats", False, False), "--interval": ("interval", True, False)},
    "update": {"--resources": ("resources", True, False), "-r": ("resources", True, False),
               "--memory": ("memory", True, False), "--memory-swap": ("memory_swap", True, False),
               "--memory-reservation": ("memory_reservation", True, False),
               "--kernel-memory": ("kernel_memory", True, False),
               "--cpu-shares": ("cpu_shares", True, False), "--cpu-quota": ("cpu_quota", True, False),
               "--cpu-period": ("cpu_period", True, False), "--cpuset-cpus": ("cpuset_cpus", True, False),
               "--cpuset-mems": ("cpuset_mems", True, False), "--pids-limit": ("pids_limit", True, False),
               "--blkio-weight": ("blkio_weight", True, False)},
    "exec": {"--console-socket": ("console_socket", True, False), "--cwd": ("cwd", True, False),
             "--env": ("env", True, True), "-e": ("env", True, True), "--tty": ("tty", False, False),
             "-t": ("tty", False, False), "--user": ("user", True, False), "-u": ("user", True, False),
             "--additional-gids": ("additional_gids", True, True), "-g": ("additional_gids", True, True),
             "--process": ("process", True, False), "-p": ("process", True, False),
             "--detach": ("detach", False, False), "-d": ("detach", False, False),
             "--pid-file": ("pid_file", True, False), "--process-label": ("process_label", True, False),
             "--apparmor": ("apparmor", True, False), "--no-new-privs": ("no_new_privs", False, False),
             "--cap": ("cap", True, True), "-c": ("cap", True, True),
             "--preserve-fds": ("preserve_fds", True, False), "--ignore-paused": ("ignore_paused", False, False),
             "--cgroup": ("cgroup", True, True)},
    "spec": {"--bundle": ("bundle", True, False), "-b": ("bundle", True, False),
             "--rootless": ("rootless", False, False)},
    "features": {},
}
POSITIONALS = {"create": 1, "run": 1, "start": 1, "state": 1, "kill": (1, 2), "delete": 1, "list": 0, "ps": 1,
               "pause": 1, "resume": 1, "events": 1, "update": 1, "exec": None, "spec": 0, "features": 0}
USAGE = ("usage: sandbox-runtime [--root DIR] [--log FILE] [--log-format json|text] [--debug] [--floor FILE] "
         "COMMAND ...\n"
         "commands: " + ", ".join(COMMANDS))


class UsageError(Exception):
    pass


class Options(dict):
    def __getattr__(self, name):
        return self.get(name)


def parse(argv: list[str]) -> tuple[Options, str | None, Options, list[str]]:
    """(global options, command, its options, its positional arguments)."""
    globals_ = Options()
    index = _parse_flags(argv, 0, GLOBAL_FLAGS, globals_, stop_at_positional=True)
    if index >= len(argv):
        return globals_, None, Options(), []
    command = argv[index]
    if command not in COMMANDS:
        raise UsageError(f"no such command: {command}")
    options, positionals = Options(), []
    flags = COMMANDS[command]
    index += 1
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            positionals += argv[index + 1:]
            break
        if arg.startswith("-") and arg != "-" and not (command == "exec" and positionals):
            if arg in ("--help", "-h"):
                options["help"] = True
                index += 1
                continue
            index = _parse_flags(argv, index, flags, options, stop_at_positional=True, command=command)
            continue
        positionals.append(arg)
        index += 1
    want = POSITIONALS[command]
    if not options.help:
        if want is None:
            if not positionals:
                raise UsageError(f"{command}: the container id is required")
        else:
            low, high = want if isinstance(want, tuple) else (want, want)
            if not low <= len(positionals) <= high:
                raise UsageError(f"{command}: expected {low if low == high else f'{low} or {high}'} argument(s), "
                                 f"found {len(positionals)}")
    return globals_, command, options, positionals


def _parse_flags(argv, index, flags, into, *, stop_at_positional, command="") -> int:
    while index < len(argv):
        arg = argv[index]
        if not arg.startswith("-") or arg == "-":
            return index
        name, has_value, value = arg.partition("=")
        if name not in flags:
            # single-dash long flags (urfave/cli accepts -root as --root)
            if name.startswith("-") and not name.startswith("--") and "-" + name in flags:
                name = "-" + name
            else:
                raise UsageError(f"{command + ': ' if command else ''}flag provided but not defined: {name}")
        destination, takes_value, repeat = flags[name]
        if takes_value:
            if not has_value:
                index += 1
                if index >= len(argv):
                    raise UsageError(f"flag needs an argument: {name}")
                value = argv[index]
        else:
            value = True if not has_value else value.lower() not in ("false", "0", "")
        if repeat:
            into.setdefault(destination, []).append(value)
        else:
            into[destination] = value
        index += 1
    return index


# ---------------------------------------------------------------- logging

class Log:
    """runc's logging: JSON lines or logrus text to --log (else stderr), errors also to stderr."""

    def __init__(self, path: str | None, fmt: str | None, debug: bool):
        self.path, self.format, self.debug_enabled = path, (fmt or "text"), bool(debug)
        if self.format not in ("json", "text"):
            raise UsageError(f"invalid log-format: {fmt}")

    def _line(self, level: str, message: str) -> str:
        from .state import now_rfc3339
        if self.format == "json":
            import json
            return json.dumps({"level": level, "msg": message, "time": now_rfc3339()}) + "\n"
        escaped = message.replace("\\", "\\\\").replace('"', '\\"')
        return f'time="{now_rfc3339()}" level={level} msg="{escaped}"\n'

    def write(self, level: str, message: str) -> None:
        if self.path:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    os.write(fd, self._line(level, message).encode())
                finally:
                    os.close(fd)
            except OSError:
                pass
        elif level != "error":
            try:
                sys.stderr.write(self._line(level, message))
            except OSError:
                pass

    def touch(self) -> None:
        """The log file exists from the start, as runc's does (containerd reads it after a failure)."""
        if self.path:
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644))
            except OSError:
                pass

    def error(self, message: str) -> None:
        self.write("error", message)
        try:
            sys.stderr.write(f"sandbox-runtime: {message}\n")
            sys.stderr.flush()
        except OSError:
            pass

    def warning(self, message: str) -> None:
        self.write("warning", message)

    def debug(self, message: str) -> None:
        if self.debug_enabled:
            self.write("debug", message)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    log = Log(None, "text", False)
    try:
        globals_, command, options, positionals = parse(argv)
        log = Log(globals_.log, globals_.log_format, globals_.debug)
        log.touch()
        if globals_.version:
            print(f"sandbox-runtime version {VERSION}\nspec: {SPEC_VERSION}")
            return 0
        if command is None or globals_.help or options.help:
            print(USAGE)
            return 0 if (globals_.help or options.help) else 1
        from .state import default_root
        root = globals_.root or default_root()
        log.debug(f"{command} {' '.join(positionals)}")
        from . import commands
        return commands.run_command(command, root, options, positionals, log, globals_) or 0
    except UsageError as exc:
        log.error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure is one line, as runc reports it
        if hasattr(exc, "one_line"):  # SandboxError, the runtime's RuntimeFailure
            log.error(exc.one_line() if hasattr(exc, "one_line") else str(exc))
            return 1
        if isinstance(exc, OSError):
            log.error(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
            return 1
        import traceback
        log.error(f"internal error: {type(exc).__name__}: {exc}")
        if globals().get("_DEBUG_TRACEBACKS"):
            traceback.print_exc()
        return 1


def entry() -> None:
    """The console script: exits with main()'s status without the interpreter's slow shutdown
    (its collections and the freeing of every object), after every other atexit handler."""
    import atexit
    import gc
    gc.disable()  # a short-lived process: collections would free nothing the exit does not
    status = 1

    def end_now() -> None:  # registered first, run last
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os._exit(status)
    atexit.register(end_now)
    status = main()
    sys.exit(status)
