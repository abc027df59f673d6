"""The public Python API, for CI systems and tools that launch many sandboxes (docs/api.md).

`run()` takes what `sandbox run` takes, with subprocess's conventions where they exist; the
options that change the profile go through the same overrides table as the command line's
(sandbox/options.py), so they are validated, labelled and audited alike.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import IO, Any, Union

from .errors import CommandFailed, ExecError, LimitsUnavailable, Problem, ProfileError, SandboxError, SetupError
from .launcher import DEFAULT_MAX_OUTPUT, Launch, Result
from .profile import Profile, builtin_profile_names, load_profile, profile_from_dict

__all__ = ["CommandFailed", "ExecError", "ForkServer", "Launch", "LimitsUnavailable", "Problem", "Profile",
           "ProfileError", "Result", "SandboxError", "SetupError", "builtin_profile_names", "load_profile",
           "profile_from_dict", "run"]

# subprocess's special values, without importing subprocess (~5 ms at every launch)
PIPE, STDOUT, DEVNULL = -1, -2, -3

Stream = Union[int, IO[Any], None]
Bind = Union[str, "os.PathLike[str]", Sequence[str], Mapping[str, Any]]


def run(profile: Profile | str | os.PathLike, command: str | Sequence[str | os.PathLike] | None = None, *,
        timeout: float | str | None = None,
        kill_after: float | str | None = None,
        image: str | os.PathLike | None = None,
        env: Mapping[str, str | None] | Sequence[str] | None = None,
        binds: Sequence[Bind] = (),
        cwd: str | os.PathLike | None = None,
        network: str | None = None,
        memory: int | str | None = None,
        cpus: float | None = None,
        pids: int | str | None = None,
        limits: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
        input: bytes | str | None = None,
        stdin: Stream = None, stdout: Stream = None, stderr: Stream = None,
        capture_output: bool | str = False,
        max_output: int | None = DEFAULT_MAX_OUTPUT,
        on_output_limit: str = "truncate",
        text: bool = False,
        check: bool = False,
        tty: bool = False,
        report_violations: bool = False,
        pass_fds: Sequence[int] = (),
        forward_signals: bool = True,
        fork_server: "ForkServer | None" = None,
        seccomp_mode: str | None = None,
        events: str | os.PathLike | None = None,
        stats_interval: float | str | None = None) -> Result:
    """Run `command` in a sandbox built from `profile`; see docs/api.md.

    profile: a Profile, a built-in name or a path. command: a list of words, or a string split as
    a shell would split it (shlex; no expansion, no pipes); None runs the profile's command.
    timeout, kill_after (the grace between SIGTERM and SIGKILL at the timeout), image (the root
    from a container image: oci:DIR[:TAG], docker://HOST/NAME@sha256:..., docs/images.md), env, binds, cwd,
    network, memory, cpus, pids, limits (any [limits] key), settings
    (any profile key, dotted: {"process.hostname": "box"}) change the profile like `sandbox run`'s
    options, validated with it (a ProfileError names the keyword argument).
    input: bytes (or str, UTF-8) fed to the workload's stdin. stdin/stdout/stderr: an fd, a file
    object, None (inherit), DEVNULL, or PIPE for stdout/stderr (captured into the Result);
    stderr=STDOUT sends stderr where stdout goes. capture_output captures both (or "stdout",
    "stderr"). max_output: bytes kept of each captured stream (16 MiB; None: no cap), beyond which
    the rest is dropped (Result.stdout_truncated) or, on_output_limit="kill", the sandbox ends.
    text: decode the captured output (UTF-8, undecodable bytes replaced).
    check: raise CommandFailed (carrying the Result) when the workload exits non-zero.
    report_violations: record the system calls the policy denied (Result.violations).
    events: write live activity events ([monitor] events: a file, or "-" for standard output);
    stats_interval: seconds between their resource samples (docs/monitoring.md).
    Raises ProfileError, SetupError (LimitsUnavailable), ExecError for a sandbox that could not
    run the command; a workload that fails is a Result.
    """
    from .options import run_overrides
    overrides, notes = run_overrides(binds=binds, env=env, cwd=cwd, timeout=timeout, kill_after=kill_after,
                                     image=image, network=network,
                                     memory=memory, cpus=cpus, pids=pids, limits=limits, settings=settings,
                                     events=events, stats_interval=stats_interval, style="api")
    profile = resolve(profile, overrides)
    argv = _argv(command)
    if report_violations:
        if seccomp_mode not in (None, "report"):
            raise ValueError("report_violations=True and seccomp_mode are exclusive")
        seccomp_mode = "report"
    opened: list[int] = []
    try:
        stdin, stdout, stderr, capture_output = _streams(input, stdin, stdout, stderr, capture_output, opened)
        from .launcher import run as launch
        result = launch(profile, argv, stdin=stdin, stdout=stdout, stderr=stderr, capture_output=capture_output,
                        max_output=max_output, on_output_limit=on_output_limit, tty=tty, pass_fds=tuple(pass_fds), forward_signals=forward_signals,
                        fork_server=fork_server, seccomp_mode=seccomp_mode)
    finally:
        for fd in opened:
            os.close(fd)
    result.warnings[:0] = notes
    if text:
        result.stdout = _decode(result.stdout)
        result.stderr = _decode(result.stderr)
    if check and result.exit_code != 0:
        raise CommandFailed(result)
    return result


def resolve(profile: Profile | str | os.PathLike, overrides: dict | None = None) -> Profile:
    """A Profile from a Profile, a built-in name or a path, with `overrides` merged and validated."""
    if isinstance(profile, Profile):
        if not overrides:
            return profile
        from .profile.load import with_overrides
        return with_overrides(profile, overrides)
    if isinstance(profile, (str, os.PathLike)):
        return load_profile(os.fspath(profile), overrides=overrides or None)
    raise TypeError(f"profile must be a Profile, a name or a path, not {type(profile).__name__}")


def _argv(command) -> tuple[str, ...] | None:
    if command is None:
        return None
    if isinstance(command, (str, bytes)):
        import shlex
        if isinstance(command, bytes):
            command = os.fsdecode(command)
        words = shlex.split(command)  # as a shell splits words: quotes, escapes; no expansion
        if not words:
            raise ValueError("the command string is empty")
        return tuple(words)
    words = tuple(os.fspath(word) for word in command)
    return words or None


def _streams(input, stdin, stdout, stderr, capture_output, opened: list[int]):
    """subprocess's conventions -> what Launch takes (fds, and which streams to capture)."""
    if input is not None:
        if stdin is not None:
            raise ValueError("stdin and input arguments may not both be used")
        stdin = _input_fd(input.encode() if isinstance(input, str) else bytes(input), opened)
    if capture_output and (stdout is not None or stderr is not None):
        raise ValueError("stdout and stderr arguments may not be used with capture_output")
    captured = {"stdout", "stderr"} if capture_output is True else {capture_output} if capture_output else set()
    if stdout == PIPE:
        captured.add("stdout")
        stdout = None
    if stderr == PIPE:
        captured.add("stderr")
        stderr = None
    if stderr == STDOUT:
        if "stdout" in captured:
            raise ValueError("stderr=STDOUT with a captured stdout is not supported: capture both")
        stderr = stdout if stdout is not None else 1
    streams = []
    for stream in (stdin, stdout, stderr):
        if stream == DEVNULL:
            fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            opened.append(fd)
            stream = fd
        elif isinstance(stream, int) and stream < 0:
            raise ValueError(f"unsupported stream value {stream}")
        streams.append(stream)
    capture: bool | str = True if captured == {"stdout", "stderr"} else next(iter(captured), False)
    return streams[0], streams[1], streams[2], capture


def _input_fd(data: bytes, opened: list[int]) -> int:
    """`input=`: the bytes in a memfd, handed over read-only. No thread feeds a pipe, so nothing
    can deadlock against captured output, however large either is."""
    fd = os.memfd_create("sandbox-input", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        reader = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)  # at offset 0
    finally:
        os.close(fd)
    opened.append(reader)
    return reader


def _decode(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "replace")


def __getattr__(name):
    # ForkServer on first use: the CLI (which never uses one) need not import it (~1 ms).
    if name == "ForkServer":
        from .forkserver import ForkServer
        return ForkServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
