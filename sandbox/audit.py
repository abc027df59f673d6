"""The audit trail: a hash chain of JSON lines, one record when a launch starts and one when it ends.

Each record is one line of JSON (keys sorted) carrying, besides what it says about the launch:

    seq    its place in the chain: 1, 2, 3 ... continuing across rotated files
    prev   the SHA-256 (hex) of the previous record's line, without its newline; 64 zeros first
    event  "start" or "end" (more kinds can be appended later: every record is chained alike)
    id     the launch's id, shared by its start and end records

Changing a byte of a record breaks the link to the next one, removing a record leaves a gap in
`seq`, swapping two puts `seq` out of order: `verify()` names the first such record. Files, in
the log's directory (made 0750; refused unless it belongs to the writer or root and no one else
may write there, or it is sticky; files in it must belong to the writer):

    audit.jsonl        the current file
    audit.jsonl.N      rotated files, N = 1, 2, ... oldest first; a file keeps its name once
                       rotated, and the first record after a rotation names it (prev_file)
    audit.jsonl.head   the last record's seq and hash, for `verify` to see a truncated end, and the
                       lock: appends hold flock(LOCK_EX) on it, so concurrent launchers never fork
                       the chain. It chains onward from what it recorded, not from what the log
                       ends with, so a record removed or edited at the end shows at the next append.

Rotation is by size: a file that has reached SANDBOX_AUDIT_MAX_BYTES (default 16M) is renamed
before the next record; SANDBOX_AUDIT_KEEP (default 16; 0 keeps all) rotated files are kept.
Whoever can write the log can rewrite the whole chain consistently: `[audit] syslog = true`
sends each line to syslog as well, a copy out of the writer's reach to check the chain against.
"""
from __future__ import annotations

import errno
import json
import os
import pwd
import stat
import time

from .digest import sha256
from .profile.model import Profile, per_profile

ZERO_HASH = "0" * 64
DEFAULT_MAX_BYTES = 16 << 20
DEFAULT_KEEP = 16
HEAD_SUFFIX = ".head"
HEAD_SIZE = 128
SYSLOG_PRIORITY = 10 * 8 + 6  # LOG_AUTHPRIV | LOG_INFO: who ran what, with which isolation


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


def _env_int(name: str, default: int) -> int:
    try:
        return max(0, int(os.environ.get(name, default)))
    except ValueError:
        return default


def line_hash(line: bytes) -> str:
    return sha256(line).hexdigest()


# ---------------------------------------------------------------- appending

class AuditLog:
    """One hash-chained log (and its rotated files). append() is safe across processes."""

    def __init__(self, path: str, *, max_bytes: int | None = None, keep: int | None = None):
        self.path = path
        self.directory = os.path.dirname(os.path.abspath(path))
        self.name = os.path.basename(path)
        self.max_bytes = max_bytes if max_bytes is not None else _env_int("SANDBOX_AUDIT_MAX_BYTES", DEFAULT_MAX_BYTES)
        self.keep = keep if keep is not None else _env_int("SANDBOX_AUDIT_KEEP", DEFAULT_KEEP)

    def append(self, record: dict) -> bytes:
        """Chain `record` (seq, prev, maybe prev_file added) and append it; returns the line written."""
        import fcntl
        dir_fd = self._open_directory()
        try:
            head_fd = os.open(self.name + HEAD_SUFFIX, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                              0o640, dir_fd=dir_fd)
            try:
                self._own(head_fd, self.name + HEAD_SUFFIX)
                fcntl.flock(head_fd, fcntl.LOCK_EX)  # released by the close below
                return self._append_locked(dir_fd, head_fd, record)
            finally:
                os.close(head_fd)
        finally:
            os.close(dir_fd)

    def _open_directory(self) -> int:
        os.makedirs(self.directory, mode=0o750, exist_ok=True)
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        info = os.fstat(fd)
        # A directory someone else controls could hold a planted symlink or a forged chain. A
        # sticky one (/tmp) is fine: others cannot replace our files there, and _own() checks
        # that the files are ours.
        if info.st_uid not in (os.geteuid(), 0) or (info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX):
            os.close(fd)
            raise OSError(errno.EPERM, f"{self.directory} must belong to uid {os.geteuid()} (or root) and be "
                          f"writable by no one else unless sticky (is uid {info.st_uid}, {stat.filemode(info.st_mode)})")
        return fd

    @staticmethod
    def _own(fd: int, name: str) -> None:
        """Refuse a file someone else made (in a shared directory): it could be a forged chain."""
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EPERM, f"{name} is not a file of uid {os.geteuid()}")

    def _append_locked(self, dir_fd: int, head_fd: int, record: dict) -> bytes:
        head = _parse_head(os.pread(head_fd, 512, 0))
        log_fd = os.open(self.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o640, dir_fd=dir_fd)
        try:
            self._own(log_fd, self.name)
            info = os.fstat(log_fd)
            seq, prev = self._chain_point(head, dir_fd, info)
            extra = {}
            if info.st_size and self.max_bytes and info.st_size >= self.max_bytes:
                os.close(log_fd)
                log_fd = -1
                rotated = self._rotate(dir_fd)
                log_fd = os.open(self.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o640, dir_fd=dir_fd)
                info = os.fstat(log_fd)
                extra["prev_file"] = rotated
            elif not info.st_size and head is not None and head[0]:
                extra["prev_file"] = self._latest_rotated(dir_fd)  # a rotation interrupted after the rename
            chained = {**record, **{k: v for k, v in extra.items() if v}, "seq": seq, "prev": prev}
            line = json.dumps(chained, sort_keys=True, separators=(",", ":"), default=str).encode()
            data = line + b"\n"
            written = os.write(log_fd, data)
            if written != len(data):  # a full disk: take the partial line back, the chain stays whole
                os.ftruncate(log_fd, info.st_size)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            # Fixed width: one pwrite replaces it whole, no truncate (which costs more than the rest).
            state = f"{seq} {line_hash(line)} {info.st_size + len(data)} {info.st_ino}".ljust(HEAD_SIZE - 1)
            os.pwrite(head_fd, state.encode() + b"\n", 0)
            return line
        finally:
            if log_fd >= 0:
                os.close(log_fd)

    def _chain_point(self, head, dir_fd: int, info) -> tuple[int, str]:
        """(seq, prev) for the next record. The head file says where the chain is; the log's
        own last line is used only when the head is missing, or when exactly one record was
        appended after it (a writer that died between the two writes)."""
        last = _last_line(self.name, dir_fd, info.st_size) if info.st_size else None
        if head is not None:
            seq, digest, size, inode = head
            if (size, inode) == (info.st_size, info.st_ino) or last is None:
                return seq + 1, digest
            record = _parse(last)
            if record is not None and record.get("seq") == seq + 1 and record.get("prev") == digest:
                return seq + 2, line_hash(last)
            return seq + 1, digest  # the log was changed behind the writer's back: keep the evidence
        if last is None:
            return 1, ZERO_HASH
        record = _parse(last)
        seq = record.get("seq") if record is not None else None
        # A log from before the chain (or a lost head): continue from its last line.
        return (seq + 1 if isinstance(seq, int) else 1), line_hash(last)

    def rotated_numbers(self, dir_fd: int | None = None) -> list[int]:
        names = os.listdir(dir_fd if dir_fd is not None else self.directory)
        prefix = self.name + "."
        return sorted(int(n[len(prefix):]) for n in names if n.startswith(prefix) and n[len(prefix):].isdigit())

    def _latest_rotated(self, dir_fd: int) -> str | None:
        numbers = self.rotated_numbers(dir_fd)
        return f"{self.name}.{numbers[-1]}" if numbers else None

    def _rotate(self, dir_fd: int) -> str:
        numbers = self.rotated_numbers(dir_fd)
        target = f"{self.name}.{(numbers[-1] if numbers else 0) + 1}"
        os.rename(self.name, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        if self.keep:
            for number in numbers[:max(0, len(numbers) + 1 - self.keep)]:
                try:
                    os.unlink(f"{self.name}.{number}", dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
        return target


def _parse_head(data: bytes):
    try:
        seq, digest, size, inode = data.split()
        return int(seq), digest.decode(), int(size), int(inode)
    except ValueError:
        return None


def _parse(line: bytes) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _last_line(name: str, dir_fd: int, size: int) -> bytes | None:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        end = size
        tail = b""
        while end > 0:
            start = max(0, end - 65536)
            tail = os.pread(fd, end - start, start) + tail
            end = start
            stripped = tail.rstrip(b"\n")
            if b"\n" in stripped or end == 0:
                return stripped.rsplit(b"\n", 1)[-1] or None
        return None
    finally:
        os.close(fd)


def forward_to_syslog(line: bytes, address: str = "/dev/log") -> None:
    """Send one record to a syslog (or journald) unix datagram socket; OSError when it cannot."""
    import socket  # only with [audit] syslog: ~2 ms, kept off the default launch path
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)  # a stalled log daemon must never stall a launch
        sock.sendto(b"<%d>sandbox[%d]: " % (SYSLOG_PRIORITY, os.getpid()) + line, address)
    finally:
        sock.close()


@per_profile
def relaxations(profile: Profile) -> tuple[str, ...]:
    """What lint reports above "info", as recorded with each launch."""
    from .lint import lint
    return tuple(str(f) for f in lint(profile) if f.severity != "info")


class AuditRecord:
    """Start and end records for one launch. A record that cannot be written is a warning, or,
    for the start record with `audit.required = true`, a SetupError: the launch does not run."""

    def __init__(self, profile: Profile, argv, profile_hash: str, launch_id: str | None = None):
        self.enabled = profile.audit.enabled
        self.path = log_path(profile)
        self.syslog = profile.audit.syslog_socket if profile.audit.syslog else None
        # The launch's own id when it has one: `sandbox ps` and the events show the same.
        self.id = launch_id or os.urandom(8).hex()  # secrets.token_hex(8) without importing hmac
        self.warning: str | None = None
        if not self.enabled:
            return
        error = self._write({"event": "start", "id": self.id, "time": _now(), "uid": os.getuid(), "user": _user(),
                             "pid": os.getpid(), "cwd": os.getcwd(), "profile": profile.name,
                             "profile_hash": profile_hash, "profile_source": profile.source, "argv": list(argv),
                             "relaxations": list(relaxations(profile)),
                             "secrets": [secret.name for secret in profile.secrets]})
        if error is not None and profile.audit.required:
            from .errors import SetupError
            raise SetupError("audit", error.errno or 0, f"cannot write the start record to {self.path} "
                             f"({error.strerror or error}) and audit.required = true: not launching")

    def finish(self, result=None, error: Exception | None = None, monitor: dict | None = None) -> None:
        """The end record; `monitor` is the live events' summary (sandbox.monitor.Watch.summary:
        counts by kind, denials, anomalies, why the monitor ended the sandbox)."""
        if not self.enabled:
            return
        record = {"event": "end", "id": self.id, "time": _now()}
        if monitor is not None:
            record["monitor"] = monitor
        if result is not None:
            record.update(exit_code=result.exit_code, signal=result.signal, timed_out=result.timed_out,
                          oom_killed=result.oom_killed, wall_time=round(result.wall_time, 4),
                          warnings=result.warnings)
            if getattr(result, "network", None):
                record["network"] = result.network  # segment, address, egress names as resolved
        if error is not None:
            record.update(error=str(error), exit_code=getattr(error, "exit_code", 125))
        self._write(record)

    def _write(self, record: dict) -> OSError | None:
        try:
            line = AuditLog(self.path).append(record)
        except OSError as exc:
            self.warning = f"audit log {self.path}: {exc.strerror or exc}"
            return exc
        if self.syslog:
            try:
                forward_to_syslog(line, self.syslog)
            except OSError as exc:
                self.warning = f"audit record not sent to syslog ({self.syslog}): {exc.strerror or exc}"
        return None


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


# ---------------------------------------------------------------- keeping it out of sandboxes

def protected_paths(profile: Profile) -> tuple[list[str], list[str]]:
    """(directories, files) a sandbox must never see: the audit logs this launch could write
    (the profile's and this user's default), their rotated files and head. A directory counts
    only when it holds nothing but audit files (the default ~/.local/state/sandbox and
    /var/log/sandbox); elsewhere the files are protected one by one. Called only when the
    launch binds host paths."""
    directories, files = [], []
    for path in dict.fromkeys((log_path(profile), log_path(None))):
        log = AuditLog(os.path.realpath(path))
        try:
            # Made now if missing (the next audited launch would make it anyway): a directory
            # that does not exist cannot be masked, and a workload could make it.
            os.makedirs(log.directory, mode=0o750, exist_ok=True)
            names = os.listdir(log.directory)
        except OSError:
            continue
        ours = [n for n in names if n == log.name or n.startswith(log.name + ".")]
        if len(ours) == len(names) or os.path.basename(log.directory) == "sandbox":
            directories.append(log.directory)
        files += [os.path.join(log.directory, n) for n in ours]
    return directories, files


# ---------------------------------------------------------------- reading and verifying

def family(path: str) -> list[str]:
    """The files of one log, oldest first: its rotated files, then itself (when it exists)."""
    log = AuditLog(path)
    try:
        numbers = log.rotated_numbers()
    except FileNotFoundError:
        numbers = []
    files = [f"{path}.{n}" for n in numbers]
    if os.path.exists(path):
        files.append(path)
    return files


def read(path: str | None = None, *, rotated: bool = False) -> list[dict]:
    """The records of a log (and, with rotated, of its rotated files before it), oldest first."""
    path = str(path or log_path())
    files = family(path) if rotated else [path]
    if not files:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    records = []
    for name in files:
        with open(name, "rb") as handle:
            for line in handle:
                line = line.strip()
                if line:
                    record = _parse(line)
                    records.append(record if record is not None else
                                   {"event": "corrupt", "line": line[:200].decode(errors="replace")})
    return records


def record_time(record: dict) -> float | None:
    """The epoch time of a record's "time" (UTC, as _now() writes it)."""
    import calendar
    text = record.get("time")
    try:
        return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + text[19:].rstrip("Z"))
    except (TypeError, ValueError):
        return None


def launches(path: str, *, tail: int = 20, since: float | None = None, profile: str | None = None):
    """[(start record, end record or None)], oldest first: the last `tail` launches (0: all) started
    at or after `since` (epoch seconds), of `profile` if given. Reads rotated files only as far back
    as needed."""
    files = family(str(path))
    if not files:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    ends: dict = {}
    found: list = []
    for name in reversed(files):
        with open(name, "rb") as handle:
            records = [r for r in (_parse(line) for line in handle if line.strip()) if r is not None]
        older = False
        for record in reversed(records):
            if record.get("event") == "end":
                ends.setdefault(record.get("id"), record)
            elif record.get("event") == "start":
                moment = record_time(record)
                if since is not None and moment is not None and moment < since:
                    older = True
                    continue
                if profile is None or record.get("profile") == profile:
                    found.append(record)
        if older or (tail and len(found) >= tail):
            break
    if tail:
        found = found[:tail]
    return [(start, ends.get(start.get("id"))) for start in reversed(found)]


class VerifyResult:
    """The outcome of verify(): ok, the first problem (a sentence naming the record), notes."""

    def __init__(self):
        self.ok = True
        self.problem: str | None = None
        self.records = 0
        self.files: list[str] = []
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.last_hash: str | None = None
        self.notes: list[str] = []

    def fail(self, problem: str) -> "VerifyResult":
        if self.ok:
            self.ok, self.problem = False, problem
        return self

    def summary(self) -> str:
        if not self.ok:
            return self.problem or "broken"
        if not self.records:
            return "no records"
        return (f"intact: {self.records} records (seq {self.first_seq}-{self.last_seq}) in {len(self.files)} "
                f"file{'s' if len(self.files) != 1 else ''}; last hash {self.last_hash}")

    def to_dict(self) -> dict:
        return {"ok": self.ok, "problem": self.problem, "records": self.records, "files": self.files,
                "first_seq": self.first_seq, "last_seq": self.last_seq, "last_hash": self.last_hash,
                "notes": self.notes}


class _Line:
    __slots__ = ("file", "number", "raw", "record", "hash")

    def __init__(self, file: str, number: int, raw: bytes):
        self.file, self.number, self.raw = file, number, raw
        self.record = _parse(raw)
        self.hash = line_hash(raw)

    @property
    def seq(self):
        seq = self.record.get("seq") if self.record else None
        return seq if isinstance(seq, int) and not isinstance(seq, bool) else None

    @property
    def prev(self):
        return self.record.get("prev") if self.record else None

    def name(self) -> str:
        where = f"{os.path.basename(self.file)}:{self.number}"
        if self.seq is None:
            return f"{where}"
        what = f" ({self.record.get('event')} of launch {self.record.get('id')}, {self.record.get('time')})" \
            if self.record.get("id") else f" ({self.record.get('event')})"
        return f"{where} (seq {self.seq}){what}"


def verify(path: str | None = None) -> VerifyResult:
    """Check a log's hash chain across its rotated files and against its head.

    The first record that was changed, removed or reordered is named in `problem`."""
    path = str(path or log_path())
    result = VerifyResult()
    files = family(path)
    if not files:
        return result.fail(f"{path}: no such audit log")
    result.files = files
    lines: list[_Line] = []
    for name in files:
        with open(name, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                raw = raw.rstrip(b"\n")
                if raw:
                    lines.append(_Line(name, number, raw))
    problem = _check_files(path, files, lines, result) or _check_chain(lines, _head(path), result)
    if problem:
        return result.fail(problem)
    return result


def _head(path: str):
    try:
        with open(path + HEAD_SUFFIX, "rb") as handle:
            return _parse_head(handle.read(512))
    except OSError:
        return None


def _check_files(path: str, files: list[str], lines: list[_Line], result: VerifyResult) -> str | None:
    """Rotated files must be numbered without gaps, each successor naming its predecessor."""
    numbers = [int(name.rsplit(".", 1)[1]) for name in files if name != path]
    for before, after in zip(numbers, numbers[1:]):
        if after != before + 1:
            return f"{os.path.basename(path)}.{before + 1} is missing: the records it held were removed"
    firsts = {}
    for line in lines:
        firsts.setdefault(line.file, line)
    for previous, current in zip(files, files[1:]):
        first = firsts.get(current)
        named = first.record.get("prev_file") if first is not None and first.record else None
        if first is not None and first.seq is not None and named != os.path.basename(previous):
            return (f"{first.name()}: the first record of {os.path.basename(current)} names "
                    f"{named or 'no predecessor'}, not {os.path.basename(previous)}: files were replaced or reordered")
    return None


def _check_chain(lines: list[_Line], head, result: VerifyResult) -> str | None:
    start = next((i for i, line in enumerate(lines) if line.seq is not None and line.prev is not None), None)
    if start is None:
        if lines:
            return f"{lines[0].name()}: not a chained audit record"
        return None
    if start:
        result.notes.append(f"{start} records before the hash chain began are not protected by it")
    first = lines[start]
    expected_prev = lines[start - 1].hash if start else ZERO_HASH
    if first.prev != expected_prev:
        if start == 0 and first.record.get("prev_file") and not os.path.exists(
                os.path.join(os.path.dirname(first.file), first.record["prev_file"])):
            result.notes.append(f"the chain begins at seq {first.seq}: {first.record['prev_file']} and earlier "
                                "files were removed by rotation")
        elif start == 0 and first.seq == 1:
            return f"{first.name()}: the first record does not start a chain: changed"
        elif start == 0:
            return f"{first.name()}: records seq 1-{first.seq - 1} before it were removed"
        else:
            return f"{first.name()}: it does not follow the record before it: changed"
    chain = lines[start:]
    seqs_after: dict[int, int] = {}
    for index, line in enumerate(chain):
        if line.seq is not None:
            seqs_after[line.seq] = index
    for index in range(1, len(chain)):
        line, before = chain[index], chain[index - 1]
        if line.record is None or line.seq is None or not isinstance(line.prev, str):
            return f"{line.name()}: not a valid chained record: changed"
        if before.seq is None:
            return f"{before.name()}: not a valid chained record: changed"
        if line.prev == before.hash:
            if line.seq != before.seq + 1:
                return f"{line.name()}: its seq does not follow {before.seq}: changed"
            continue
        if line.seq == before.seq + 1:
            after = chain[index + 1] if index + 1 < len(chain) else None
            own_broken = (after.prev != line.hash) if after is not None else \
                (head is not None and head[0] == line.seq and head[1] != line.hash)
            changed = line if own_broken else before
            return f"{changed.name()}: changed (its hash no longer matches the chain)"
        if line.seq > before.seq + 1:
            missing = range(before.seq + 1, line.seq)
            later = [seqs_after[s] for s in missing if seqs_after.get(s, -1) > index]
            if later:
                return f"{line.name()}: out of order (seq {before.seq + 1} comes later): reordered"
            if len(missing) == 1:
                return f"{line.name()}: the record before it (seq {missing[0]}) was removed"
            return f"{line.name()}: the records before it (seq {missing[0]}-{missing[-1]}) were removed"
        return f"{line.name()}: out of order (after seq {before.seq}): reordered"
    last = chain[-1]
    result.records = len(chain)
    result.first_seq, result.last_seq, result.last_hash = first.seq, last.seq, last.hash
    if head is not None:
        seq, digest = head[0], head[1]
        if seq > last.seq:
            return (f"{last.name()}: the last record; the head says seq {seq}: records seq {last.seq + 1}-{seq} "
                    "were removed from the end")
        if seq == last.seq and digest != last.hash:
            return f"{last.name()}: changed (its hash is not the one the head recorded)"
        if seq < last.seq:
            tail = chain[len(chain) - (last.seq - seq):]
            if not (len(tail) == 1 and tail[0].prev == digest):
                return f"{tail[0].name()}: appended behind the writer's back (the head ends at seq {seq})"
            result.notes.append("the last record was written by a launcher that died before updating the head")
    else:
        result.notes.append("no head file: records removed from the very end would not show")
    return None
