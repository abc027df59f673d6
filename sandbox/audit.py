"""The audit trail: one JSON line when a launch starts and one when it ends, sharing an id.

The start line is written before anything runs, so even a launcher that is killed leaves a record.
Lines are appended with O_APPEND in one write, so concurrent launchers never interleave.
"""
from __future__ import annotations

import json
import os
import pwd
import time

from .profile.model import Profile, per_profile


def log_path(profile: Profile | None = None) -> str:
    if profile is not None and profile.audit.log:
        return profile.audit.log
    if os.environ.get("SANDBOX_AUDIT_LOG"):
        return os.environ["SANDBOX_AUDIT_LOG"]
    if os.geteuid() == 0:
        return "/var/log/sandbox/audit.jsonl"
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local/state")
    return os.path.join(state, "sandbox", "audit.jsonl")


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def write(path: str, record: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", mode=0o750, exist_ok=True)
    data = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


@per_profile
def relaxations(profile: Profile) -> tuple[str, ...]:
    """What lint reports above "info", as recorded with each launch."""
    from .lint import lint
    return tuple(str(f) for f in lint(profile) if f.severity != "info")


class AuditRecord:
    """Start and end records for one launch; failures to write become warnings, not errors."""

    def __init__(self, profile: Profile, argv, profile_hash: str):
        self.enabled = profile.audit.enabled
        self.path = log_path(profile)
        self.id = os.urandom(8).hex()  # secrets.token_hex(8) without importing hmac
        self.warning: str | None = None
        if not self.enabled:
            return
        self._write({"event": "start", "id": self.id, "time": _now(), "uid": os.getuid(), "user": _user(),
                     "pid": os.getpid(), "cwd": os.getcwd(), "profile": profile.name, "profile_hash": profile_hash,
                     "profile_source": profile.source, "argv": list(argv),
                     "relaxations": list(relaxations(profile))})

    def finish(self, result=None, error: Exception | None = None) -> None:
        if not self.enabled:
            return
        record = {"event": "end", "id": self.id, "time": _now()}
        if result is not None:
            record.update(exit_code=result.exit_code, signal=result.signal, timed_out=result.timed_out,
                          oom_killed=result.oom_killed, wall_time=round(result.wall_time, 4),
                          warnings=result.warnings)
            if getattr(result, "network", None):
                record["network"] = result.network  # segment, address, egress names as resolved
        if error is not None:
            record.update(error=str(error), exit_code=getattr(error, "exit_code", 125))
        self._write(record)

    def _write(self, record: dict) -> None:
        try:
            write(self.path, record)
        except OSError as exc:
            self.warning = f"audit log {self.path}: {exc.strerror or exc}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"


def read(path: str | None = None) -> list[dict]:
    path = path or log_path()
    records = []
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if line:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    records.append({"event": "corrupt", "line": line[:200]})
    return records
