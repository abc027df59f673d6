"""One sandbox cgroup in the unified (v2) hierarchy, through plain file I/O.

cgroup.freeze (5.2+), cgroup.kill (5.14+), cgroup.events and cpu.stat work without any
controller, so even an empty unified tree (hybrid machines, rootless delegation without
controllers) gives us reliable freeze/kill and CPU time.
"""
from __future__ import annotations

import errno
import os
import signal
import time

from . import _fs
from .detect import LAUNCHER_LEAF
from .limits import CPU_PERIOD_US, CgroupLimits, CgroupStats, NotApplied, cpu_quota_us

_FREEZE_TIMEOUT_S = 2.0
DELEGATE_HINT = ("run the launcher as root, or in a delegated cgroup of its own: "
                 "systemd-run --user --scope -p Delegate=yes sandbox ...")


def enable_controllers(base: str, wanted: set[str]) -> dict[str, str]:
    """Turn on `wanted` controllers for base's children; returns controller -> why not, for failures.

    v2's "no internal processes" rule refuses (EBUSY) while base itself holds processes. When the
    only one is us, we move ourselves into a leaf sandbox-<pid>-launcher beside the sandboxes: the
    launcher changes cgroup, its caller does not. Any other process there: we give up.
    """
    available = set(_fs.read(os.path.join(base, "cgroup.controllers")).split())
    refused = {c: f"the {c} controller is not delegated to {base} (missing from its cgroup.controllers)"
               for c in wanted - available}
    control = os.path.join(base, "cgroup.subtree_control")
    for controller in sorted(wanted & available):
        if controller in _fs.read(control).split():
            continue
        try:
            _fs.write(control, f"+{controller}")
        except OSError as e:
            if e.errno != errno.EBUSY:
                refused[controller] = f"enabling it in {control}: {e.strerror}"
                continue
            reason = _vacate(base)
            try:
                if reason is None:
                    _fs.write(control, f"+{controller}")
            except OSError as again:
                reason = f"enabling it in {control}: {again.strerror}"
            if reason is not None:
                refused[controller] = reason
    return refused


def _vacate(base: str) -> str | None:
    """Move this process out of base into its launcher leaf; None on success, else why not."""
    from sandbox import cgprime
    cgprime.stop()  # it writes our pid to our current cgroup: never while we move
    members = [int(p) for p in _fs.read(os.path.join(base, "cgroup.procs")).split()]
    if members != [os.getpid()]:
        others = len([p for p in members if p != os.getpid()])
        return (f"{base} holds {others} other process(es), and cgroup v2 cannot enable controllers "
                f"in a cgroup with processes; {DELEGATE_HINT}")
    leaf = os.path.join(base, LAUNCHER_LEAF.format(pid=os.getpid()))
    try:
        os.makedirs(leaf, exist_ok=True)
        _fs.write(os.path.join(leaf, "cgroup.procs"), os.getpid())
    except OSError as e:
        return f"moving the launcher into {leaf}: {e.strerror}"
    return None


class V2Group:
    def __init__(self, path: str):
        self.path = path

    @classmethod
    def create(cls, base: str, name: str, controllers: set[str]) -> tuple[V2Group, dict[str, str]]:
        refused = enable_controllers(base, controllers) if controllers else {}
        os.mkdir(os.path.join(base, name))  # FileExistsError on a name clash: never share a cgroup
        return cls(os.path.join(base, name)), refused

    def _file(self, filename: str) -> str:
        return os.path.join(self.path, filename)

    def has_file(self, filename: str) -> bool:
        return os.path.exists(self._file(filename))

    # -- limits ---------------------------------------------------------------------------

    def apply(self, limits: CgroupLimits, name: str) -> str | None:
        """Write one limit. Returns a caveat worth a warning, raises NotApplied on failure."""
        try:
            return getattr(self, f"_apply_{name}")(limits)
        except FileNotFoundError as e:
            raise NotApplied(f"{os.path.basename(e.filename)} is missing in {self.path}") from e
        except OSError as e:
            raise NotApplied(f"writing {e.filename}: {e.strerror}") from e

    def _apply_memory(self, limits: CgroupLimits) -> None:
        _fs.write(self._file("memory.max"), limits.memory)

    def _apply_swap(self, limits: CgroupLimits) -> None:
        if not self.has_file("memory.swap.max"):
            raise NotApplied("memory.swap.max is missing (kernel without swap accounting)")
        _fs.write(self._file("memory.swap.max"), limits.swap)

    def _apply_memory_high(self, limits: CgroupLimits) -> None:
        _fs.write(self._file("memory.high"), limits.memory_high)

    def _apply_cpus(self, limits: CgroupLimits) -> None:
        _fs.write(self._file("cpu.max"), f"{cpu_quota_us(limits.cpus)} {CPU_PERIOD_US}")

    def _apply_cpu_weight(self, limits: CgroupLimits) -> None:
        _fs.write(self._file("cpu.weight"), limits.cpu_weight)

    def _apply_pids(self, limits: CgroupLimits) -> None:
        _fs.write(self._file("pids.max"), limits.pids)

    def _apply_io_weight(self, limits: CgroupLimits) -> str | None:
        if self.has_file("io.weight"):
            _fs.write(self._file("io.weight"), f"default {limits.io_weight}")
            return None
        _fs.write(self._file("io.bfq.weight"), f"default {max(1, min(1000, limits.io_weight))}")
        return "applied as io.bfq.weight: only devices using the BFQ scheduler honour it"

    def _apply_io_max(self, limits: CgroupLimits) -> None:
        for device, *values in limits.io_max:
            keys = ("rbps", "wbps", "riops", "wiops")
            settings = " ".join(f"{k}={'max' if v is None else v}" for k, v in zip(keys, values))
            _fs.write(self._file("io.max"), f"{device} {settings}")

    # -- processes ------------------------------------------------------------------------

    def add_process(self, pid: int) -> None:
        _fs.write(self._file("cgroup.procs"), pid)

    def pids(self) -> list[int]:
        return _fs.procs(self.path)

    def is_empty(self) -> bool:
        events = _fs.keyed(_fs.read_or_none(self._file("cgroup.events")))
        return events.get("populated", 0) == 0

    def freeze(self) -> bool:
        if not self.has_file("cgroup.freeze"):
            return False
        _fs.write(self._file("cgroup.freeze"), 1)
        return _fs.wait_until(
            lambda: _fs.keyed(_fs.read_or_none(self._file("cgroup.events"))).get("frozen") == 1,
            _FREEZE_TIMEOUT_S)

    def thaw(self) -> None:
        try:
            _fs.write(self._file("cgroup.freeze"), 0)
        except FileNotFoundError:
            pass

    def kill_all(self, timeout_s: float = _fs.KILL_TIMEOUT_S, use_cgroup_kill: bool = True) -> bool:
        """cgroup.kill when the kernel has it (atomic, fork-proof); else freeze, SIGKILL, thaw."""
        deadline = time.monotonic() + timeout_s
        while not self.is_empty():
            if use_cgroup_kill and self.has_file("cgroup.kill"):
                _fs.write(self._file("cgroup.kill"), 1)
            else:
                try:
                    self.freeze()
                    _fs.signal_all(self.pids(), signal.SIGKILL)
                finally:
                    self.thaw()
            _fs.wait_until(self.is_empty, 0.2)
            if time.monotonic() > deadline:
                return self.is_empty()
        return True

    # -- accounting -----------------------------------------------------------------------

    def oom_kills(self) -> int | None:
        events = _fs.read_or_none(self._file("memory.events"))
        return None if events is None else _fs.keyed(events).get("oom_kill", 0)

    def oom_killed(self) -> bool:
        return bool(self.oom_kills())

    def stats(self) -> CgroupStats:
        cpu = _fs.keyed(_fs.read_or_none(self._file("cpu.stat")))
        throttled_us = cpu.get("throttled_usec")
        return CgroupStats(
            cpu_user_s=cpu["user_usec"] / 1e6 if "user_usec" in cpu else None,
            cpu_system_s=cpu["system_usec"] / 1e6 if "system_usec" in cpu else None,
            memory_peak_bytes=_fs.int_or_none(_fs.read_or_none(self._file("memory.peak"))),
            memory_current_bytes=_fs.int_or_none(_fs.read_or_none(self._file("memory.current"))),
            pids_peak=_fs.int_or_none(_fs.read_or_none(self._file("pids.peak"))),
            oom_kills=self.oom_kills(),
            pids_limit_hits=_fs.keyed(_fs.read_or_none(self._file("pids.events"))).get("max")
            if self.has_file("pids.events") else None,
            cpu_throttled_periods=cpu.get("nr_throttled"),
            cpu_throttled_s=throttled_us / 1e6 if throttled_us is not None else None,
        )
