"""The exception tree of the public API.

    SandboxError                 exit 125 unless said otherwise
     +-- ProfileError            a profile could not be loaded or is invalid; carries every problem
     +-- SetupError              a step of building the sandbox failed (step, errno, message)
     |    +-- LimitsUnavailable  a required resource limit cannot be applied here
     +-- ExecError               the workload could not be executed (126, or 127 when not found)
     +-- CommandFailed           run(..., check=True): the workload exited non-zero (.result)

Every error renders as one line for the CLI: ``sandbox: <message>``.
"""
from __future__ import annotations

import errno as _errno

from .compiled_dataclass import dataclass


class SandboxError(Exception):
    exit_code = 125

    def one_line(self) -> str:
        return str(self).splitlines()[0] if str(self) else type(self).__name__


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a profile: where, what was expected, what was found."""

    file: str
    key: str
    expected: str
    found: str = ""
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        text = f"{where}: expected {self.expected}"
        if self.found:
            text += f", found {self.found}"
        if self.hint:
            text += f" ({self.hint})"
        return text


class ProfileError(SandboxError):
    def __init__(self, problems: list[Problem] | Problem):
        if isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def one_line(self) -> str:
        first = str(self.problems[0]) if self.problems else "invalid profile"
        more = len(self.problems) - 1
        return first + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


class SetupError(SandboxError):
    def __init__(self, step: str, err: int, message: str):
        self.step, self.errno, self.message = step, err, message
        name = _errno.errorcode.get(err, "") if err else ""
        super().__init__(f"{step}: {message}" + (f" ({name})" if name else ""))


class LimitsUnavailable(SetupError):
    def __init__(self, message: str):
        super().__init__("cgroup", 0, message)


class ExecError(SandboxError):
    def __init__(self, argv0: str, err: int, detail: str = ""):
        """detail: why, when the child could tell more than the errno (a missing interpreter)."""
        self.errno = err
        self.exit_code = 127 if err == _errno.ENOENT else 126
        self.detail = detail
        what = "command not found" if err == _errno.ENOENT else "cannot execute"
        # The detail names the file itself, as a shell says it ("/job/x: bad interpreter /y ...").
        super().__init__(f"{detail or f'{argv0}: {what}'} ({_errno.errorcode.get(err, err)})")


class CommandFailed(SandboxError):
    """`sandbox.run(..., check=True)`: the workload ran and exited non-zero (or was killed).

    Carries the whole `Result` (`.result`), and subprocess.CalledProcessError's attributes:
    `.returncode` (the exit status `sandbox run` would exit with), `.cmd`, `.stdout` (`.output`),
    `.stderr`.
    """

    def __init__(self, result):
        self.result = result
        self.returncode = self.exit_code = result.exit_code
        self.cmd = list(result.argv)
        self.stdout = self.output = result.stdout
        self.stderr = result.stderr
        if result.timed_out:
            what = "was killed on timeout"
        elif result.signal:
            what = f"died of signal {result.signal}" + (" (out of memory)" if result.oom_killed else "")
        else:
            what = f"exited with status {result.exit_code}"
        super().__init__(f"{' '.join(self.cmd)[:200]}: {what}")
