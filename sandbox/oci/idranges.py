"""Host id ranges for rootful containers: each container's ids mapped onto a range of its own.

    with Registry(pool) as registry:          # flock()ed: one allocation at a time, host-wide
        allocation = registry.allocate(container_dir)
    release(pool, container_dir)              # at delete

A range is `pool.size` host uids (and as many gids) that no other live container holds, taken from
the floor's pool (`start + slot * size`, by default from host id 1,000,000,000), or from the
ranges /etc/subuid and /etc/subgid give a dedicated user. Never host id 0: the pool is checked to
exclude it, and to overlap no other user's subordinate ids (a rootless user's containers would
share ids with ours).

The registry is one directory for the whole host (`pool.registry`, /run/sandbox-runtime/ranges),
whatever --root each engine gives the runtime (podman, containerd and Docker each use their
own): a record per allocated slot, `<slot>.json`, naming the container's state directory and the
process that created it. A record is reclaimed, by the next allocation, once its container is
gone: its state directory no longer exists, or it never got its state.json and the process that
was creating it has died (a runtime killed in the middle of create). A slot is free once none of
its records is left. A container that stopped but was not deleted keeps its range until `delete`.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os

from ..compiled_dataclass import dataclass
from .state import RuntimeFailure, process_start_time

LOCK_NAME = "lock"
SUBUID, SUBGID = "/etc/subuid", "/etc/subgid"


@dataclass(frozen=True)
class Allocation:
    slot: int
    uid: int  # the host uid container uid 0 maps to
    gid: int
    size: int

    def uid_map(self) -> str:
        return f"0 {self.uid} {self.size}\n"

    def gid_map(self) -> str:
        return f"0 {self.gid} {self.size}\n"

    def record(self) -> dict:
        return {"slot": self.slot, "uid": self.uid, "gid": self.gid, "size": self.size}


def _subordinate(path: str, user: str) -> list[tuple[int, int]]:
    """The (start, count) ranges /etc/subuid or /etc/subgid gives `user` (by name or uid)."""
    import pwd
    names = {user}
    try:
        names.add(str(pwd.getpwnam(user).pw_uid))
    except KeyError:
        pass
    found = []
    try:
        with open(path) as handle:
            for line in handle:
                fields = line.strip().split(":")
                if len(fields) == 3 and fields[0] in names and fields[1].isdigit() and fields[2].isdigit():
                    found.append((int(fields[1]), int(fields[2])))
    except FileNotFoundError:
        pass
    return found


def _others(path: str, user: str | None) -> list[tuple[str, int, int]]:
    """Every other user's subordinate ranges in /etc/subuid or /etc/subgid."""
    found = []
    try:
        with open(path) as handle:
            for line in handle:
                fields = line.strip().split(":")
                if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit() and fields[0] != user:
                    found.append((fields[0], int(fields[1]), int(fields[2])))
    except FileNotFoundError:
        pass
    return found


def slots(pool):
    """(uid base, gid base) of every range the pool can hand out, in slot order (an iterable)."""
    if pool.subuid_user is None:
        return ((pool.start + i * pool.size, pool.start + i * pool.size) for i in range(pool.ranges))
    blocks = []
    for path in (SUBUID, SUBGID):
        bases = []
        for start, count in _subordinate(path, pool.subuid_user):
            bases += [start + i * pool.size for i in range(count // pool.size)]
        blocks.append(bases)
    return list(zip(*blocks))


def _bounds(pool) -> list[tuple[str, str, int, int]]:
    """(kind, file, lowest id, one past the highest) the pool can hand out, uids and gids."""
    if pool.subuid_user is None:
        low, high = pool.start, pool.start + pool.ranges * pool.size
        return [("uid", SUBUID, low, high), ("gid", SUBGID, low, high)]
    bases = list(slots(pool))
    if not bases:
        return []
    return [(kind, path, min(b[i] for b in bases), max(b[i] for b in bases) + pool.size)
            for kind, path, i in (("uid", SUBUID, 0), ("gid", SUBGID, 1))]


def check_pool(pool) -> None:
    """Refuse a pool that could reach host id 0 or another user's subordinate ids."""
    bounds = _bounds(pool)
    if not bounds:
        where = (f"{SUBUID} and {SUBGID} give {pool.subuid_user} no range of {pool.size} ids"
                 if pool.subuid_user else "the pool is empty")
        raise RuntimeFailure(f"floor: user_namespace: {where}")
    for kind, path, low, high in bounds:
        if low <= 0:
            raise RuntimeFailure(f"floor: user_namespace: the pool would include host {kind} 0")
        if pool.subuid_user is None:
            for owner, start, count in _others(path, None):
                if start < high and low < start + count:
                    raise RuntimeFailure(f"floor: user_namespace.pool_start: the pool (host {kind}s {low}-{high - 1}) "
                                         f"overlaps {owner}'s subordinate ids in {path} ({start}-{start + count - 1})")


class Registry:
    """The allocation records, locked while open."""

    def __init__(self, pool):
        self.pool = pool
        self.directory = pool.registry
        self._fd = -1

    def __enter__(self) -> "Registry":
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        info = os.stat(self.directory)
        if info.st_uid != os.geteuid() or info.st_mode & 0o022:
            raise RuntimeFailure(f"{self.directory}: the id range registry must belong to uid {os.geteuid()} and be "
                                 "writable by no one else")
        self._fd = os.open(os.path.join(self.directory, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *_exc) -> None:
        os.close(self._fd)
        self._fd = -1

    def records(self) -> list[tuple[str, dict]]:
        """(file name, record) of every record: `<slot>.<container digest>.json`, one per container
        holding the slot (a Pod's containers share their sandbox's range)."""
        found = []
        for name in sorted(os.listdir(self.directory)):
            slot, _, rest = name.partition(".")
            if not name.endswith(".json") or not slot.isdigit():
                continue
            try:
                with open(os.path.join(self.directory, name)) as handle:
                    record = json.load(handle)
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and record.get("slot") == int(slot):
                found.append((name, record))
        return found

    @staticmethod
    def _name(slot: int, container_dir: str) -> str:
        from ..digest import sha256
        return f"{slot}.{sha256(container_dir.encode()).hexdigest()[:16]}.json"

    def live(self) -> dict[int, list[dict]]:
        """slot -> the records of containers that still exist; the others are removed (reclaimed)."""
        found: dict[int, list[dict]] = {}
        for name, record in self.records():
            if _container_gone(record):
                try:
                    os.unlink(os.path.join(self.directory, name))
                except FileNotFoundError:
                    pass
                continue
            found.setdefault(record["slot"], []).append(record)
        return found

    def _write(self, allocation: Allocation, container_dir: str) -> None:
        record = {**allocation.record(), "container": container_dir, "creator": os.getpid(),
                  "creator_start": process_start_time(os.getpid())}
        path = os.path.join(self.directory, self._name(allocation.slot, container_dir))
        with open(path + ".tmp", "w") as handle:
            json.dump(record, handle)
        os.replace(path + ".tmp", path)

    def allocate(self, container_dir: str) -> Allocation:
        check_pool(self.pool)
        taken = self.live()
        for records in taken.values():
            for record in records:
                if record.get("container") == container_dir:
                    raise RuntimeFailure(f"container {os.path.basename(container_dir)!r} already holds host id "
                                         f"range {record.get('uid')}")
        for slot, (uid, gid) in enumerate(slots(self.pool)):
            if slot in taken:
                continue
            allocation = Allocation(slot, uid, gid, self.pool.size)
            self._write(allocation, container_dir)
            return allocation
        raise RuntimeFailure(f"floor: user_namespace: every host id range of the pool is in use ({len(taken)} "
                             "containers): raise user_namespace.pool_ranges")

    def share(self, uid: int, container_dir: str) -> Allocation | None:
        """The live range whose host uid base is `uid` (a Pod sandbox's), now also held by this
        container (it is reclaimed only once every holder is gone); None if no live range has it."""
        for slot, records in self.live().items():
            record = records[0]
            if record.get("uid") == uid:
                allocation = Allocation(slot, record["uid"], record["gid"], record["size"])
                self._write(allocation, container_dir)
                return allocation
        return None

    def release(self, container_dir: str, slot: int | None = None) -> None:
        for name, record in self.records():
            if record.get("container") == container_dir and (slot is None or record.get("slot") == slot):
                try:
                    os.unlink(os.path.join(self.directory, name))
                except FileNotFoundError:
                    pass


def _container_gone(record: dict) -> bool:
    directory = record.get("container")
    if not isinstance(directory, str) or not os.path.isdir(directory):
        return True
    state = os.path.join(directory, "state.json")
    if os.path.exists(state):
        try:
            with open(state) as handle:
                held = (json.load(handle).get("sandbox") or {}).get("id_range") or {}
        except (OSError, ValueError):
            return False  # being written: not gone
        return held.get("slot") != record.get("slot")  # the directory now belongs to another container
    creator = record.get("creator")
    return not (isinstance(creator, int) and process_start_time(creator) == record.get("creator_start"))


def allocate(pool, container_dir: str) -> Allocation:
    with Registry(pool) as registry:
        return registry.allocate(container_dir)


def share(pool, uid: int, container_dir: str) -> Allocation | None:
    with Registry(pool) as registry:
        return registry.share(uid, container_dir)


def release(pool, container_dir: str, slot: int | None = None) -> None:
    try:
        with Registry(pool) as registry:
            registry.release(container_dir, slot)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise


def overlaps(first: tuple[int, int], second: tuple[int, int]) -> bool:
    """Whether [start, start+count) ranges overlap."""
    return first[0] < second[0] + second[1] and second[0] < first[0] + first[1]
