"""Where segments and their members are recorded, and the one lock that orders every change.

    <dir>/lock                                   flock()ed around every change below
    <dir>/segments/<name>/segment.json           index, subnet, helper processes
    <dir>/segments/<name>/userns, netns          root: the namespaces, bind-mounted
    <dir>/segments/<name>/hosts                  /etc/hosts of members that asked for names
    <dir>/segments/<name>/members/<id>.json      address, rules, relay, who keeps it alive
    <dir>/files/resolv-<digest>.conf             /etc/resolv.conf contents, bound read-only

<dir> is $SANDBOX_NET_DIR, else /run/sandbox/net for root, else $XDG_RUNTIME_DIR/sandbox/net or
/tmp/sandbox-net-<uid> for anyone else. A directory that is not the caller's, or that others may
write into, is refused: whoever can write it could make the launcher unmount or kill at its word.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import json
import os

from ..errors import SetupError

POOL = ipaddress.IPv4Network("10.231.0.0/16")  # one /24 per segment; see docs/network.md
STEP = "network"


def state_dir() -> str:
    explicit = os.environ.get("SANDBOX_NET_DIR")
    if explicit:
        return explicit
    if os.geteuid() == 0:
        return "/run/sandbox/net"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.stat(runtime).st_uid == os.geteuid():
        return os.path.join(runtime, "sandbox", "net")
    return f"/tmp/sandbox-net-{os.geteuid()}"


def _ensure_dir(path: str, mode: int) -> None:
    try:
        os.makedirs(path, mode=mode, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise SetupError(STEP, exc.errno or 0, f"state directory {path}: {exc.strerror}") from None
    import stat
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise SetupError(STEP, errno.EPERM, f"state directory {path} must be a directory of uid "
                         f"{os.geteuid()} that no one else can write into")


def write_json(path: str, data: dict) -> None:
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w") as handle:
        json.dump(data, handle)
    os.replace(temporary, path)


def read_json(path: str) -> dict | None:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


class State:
    """The state directory of this caller (root's, or one user's)."""

    def __init__(self, root: str | None = None):
        self.root = root or state_dir()
        self.segments_dir = os.path.join(self.root, "segments")
        self.files_dir = os.path.join(self.root, "files")

    def ensure(self) -> "State":
        mode = 0o755 if os.geteuid() == 0 else 0o700
        for path in (self.root, self.segments_dir, self.files_dir):
            _ensure_dir(path, mode)
        return self

    @contextlib.contextmanager
    def locked(self):
        """The state lock: one change at a time, across processes and threads."""
        fd = os.open(os.path.join(self.root, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def segment_dir(self, name: str) -> str:
        return os.path.join(self.segments_dir, name)

    def segment_names(self) -> list[str]:
        try:
            return sorted(os.listdir(self.segments_dir))
        except FileNotFoundError:
            return []

    def segment_record(self, name: str) -> dict | None:
        return read_json(os.path.join(self.segment_dir(name), "segment.json"))

    def members(self, name: str) -> dict[str, dict]:
        directory = os.path.join(self.segment_dir(name), "members")
        found = {}
        try:
            entries = os.listdir(directory)
        except FileNotFoundError:
            return {}
        for entry in entries:
            if entry.endswith(".json"):
                record = read_json(os.path.join(directory, entry))
                if record is not None:
                    found[entry[:-5]] = record
        return found

    def member_path(self, segment: str, member: str) -> str:
        return os.path.join(self.segment_dir(segment), "members", f"{member}.json")

    def free_index(self) -> int:
        used = {record.get("index") for name in self.segment_names()
                if (record := self.segment_record(name)) is not None}
        for index in range(POOL.num_addresses >> 8):
            if index not in used:
                return index
        raise SetupError(STEP, errno.ENOSPC, f"every /24 of {POOL} is in use by a segment")


def subnet(index: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network((int(POOL.network_address) + (index << 8), 24))


def collect(state: State | None = None) -> list[str]:
    """sandbox gc: remove dead members and empty segments. What was removed, one line each."""
    from .segment import collect_locked
    state = state or State()
    if not os.path.isdir(state.root):
        return []
    with state.locked():
        return collect_locked(state)
