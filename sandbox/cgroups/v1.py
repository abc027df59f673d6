"""One sandbox cgroup across the legacy (v1) hierarchies: a directory per hierarchy.

cgroupspy gives us the node objects and typed access to the memory, cpu, cpuacct and blkio
files it models; pids, freezer, cpuacct.usage_{user,sys}, blkio.bfq.weight and the throttle
files go through plain file I/O (cgroupspy has no pids/freezer controller, and its
write_*_device filenames carry a stray trailing space).
"""
from __future__ import annotations

import os
import signal
import time

from . import _fs
from .limits import CPU_PERIOD_US, CgroupLimits, CgroupStats, NotApplied, cpu_quota_us, weight_to_shares

_FREEZE_TIMEOUT_S = 2.0
_BFQ_MAX_WEIGHT = 1000
_THROTTLE_FILES = ("blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device",
                   "blkio.throttle.read_iops_device", "blkio.throttle.write_iops_device")


class V1Group:
    def __init__(self, dirs: dict[str, str]):
        self.dirs = dict(dirs)  # controller -> directory; co-mounted controllers share one
        self._controllers = None

    @property
    def _ctl(self) -> dict:
        """cgroupspy's typed controllers, made on first use: placing, killing and removing need
        only plain files, and cgroupspy (with the logging it imports) costs ~7 ms to import."""
        if self._controllers is None:
            from cgroupspy.controllers import (BlkIOController, Controller, CpuAcctController, CpuController,
                                               MemoryController)
            from cgroupspy.nodes import Node
            classes = {"memory": MemoryController, "cpu": CpuController, "cpuacct": CpuAcctController,
                       "blkio": BlkIOController}
            self._controllers = {name: classes.get(name, Controller)(Node(os.fsencode(directory)))
                                 for name, directory in self.dirs.items()}
        return self._controllers

    @classmethod
    def create(cls, bases: dict[str, str], name: str) -> V1Group:
        """mkdir `name` below our own cgroup in every hierarchy in `bases` (controller -> dir)."""
        made: dict[str, str] = {}
        try:
            for base in dict.fromkeys(bases.values()):
                if os.path.exists(os.path.join(base, name)):
                    raise FileExistsError(f"cgroup {os.path.join(base, name)} already exists")
                os.mkdir(os.path.join(base, name))
                made[base] = os.path.join(base, name)
        except BaseException:
            for directory in made.values():
                _fs.remove_tree(directory)
            raise
        return cls({controller: made[base] for controller, base in bases.items()})

    @classmethod
    def attach(cls, dirs: dict[str, str]) -> V1Group:
        """An existing sandbox cgroup (for gc)."""
        return cls(dirs)

    def unique_dirs(self) -> list[str]:
        return list(dict.fromkeys(self.dirs.values()))

    def has(self, controller: str) -> bool:
        return controller in self.dirs

    def _file(self, controller: str, filename: str) -> str:
        return os.path.join(self.dirs[controller], filename)

    # -- limits ---------------------------------------------------------------------------

    def apply(self, limits: CgroupLimits, name: str) -> str | None:
        """Write one limit. Returns a caveat worth a warning, raises NotApplied on failure."""
        try:
            return getattr(self, f"_apply_{name}")(limits)
        except OSError as e:
            where = os.fsdecode(e.filename) if e.filename else "a v1 control file"
            raise NotApplied(f"writing {where}: {e.strerror}") from e

    def _apply_memory(self, limits: CgroupLimits) -> None:
        self._ctl["memory"].limit_in_bytes = limits.memory

    def _apply_swap(self, limits: CgroupLimits) -> None:
        # v1 has no swap limit of its own: memsw limits memory+swap together.
        if not os.path.exists(self._file("memory", "memory.memsw.limit_in_bytes")):
            raise NotApplied("memory.memsw.limit_in_bytes is missing (kernel booted without swapaccount=1)")
        self._ctl["memory"].memsw_limit_in_bytes = limits.memory + limits.swap

    def _apply_memory_high(self, limits: CgroupLimits) -> str:
        self._ctl["memory"].soft_limit_in_bytes = limits.memory_high
        return "applied as v1 memory.soft_limit_in_bytes, which only bites under host memory pressure"

    def _apply_cpus(self, limits: CgroupLimits) -> None:
        cpu = self._ctl["cpu"]
        cpu.cfs_period_us = CPU_PERIOD_US
        cpu.cfs_quota_us = cpu_quota_us(limits.cpus)

    def _apply_cpu_weight(self, limits: CgroupLimits) -> None:
        self._ctl["cpu"].shares = weight_to_shares(limits.cpu_weight)

    def _apply_pids(self, limits: CgroupLimits) -> None:
        _fs.write(self._file("pids", "pids.max"), limits.pids)

    def _apply_io_weight(self, limits: CgroupLimits) -> str | None:
        if os.path.exists(self._file("blkio", "blkio.weight")):  # CFQ, kernels before 5.0
            self._ctl["blkio"].weight = max(10, min(_BFQ_MAX_WEIGHT, limits.io_weight))
            return None
        if os.path.exists(self._file("blkio", "blkio.bfq.weight")):
            _fs.write(self._file("blkio", "blkio.bfq.weight"), max(1, min(_BFQ_MAX_WEIGHT, limits.io_weight)))
            return "applied as blkio.bfq.weight: only devices using the BFQ scheduler honour it"
        raise NotApplied("no blkio.weight or blkio.bfq.weight (no proportional I/O scheduler)")

    def _apply_io_max(self, limits: CgroupLimits) -> None:
        for device, *values in limits.io_max:
            for filename, value in zip(_THROTTLE_FILES, values):
                if value is not None:
                    _fs.write(self._file("blkio", filename), f"{device} {value}")

    # -- processes ------------------------------------------------------------------------

    def add_process(self, pid: int) -> None:
        for directory in self.unique_dirs():  # cgroup.procs moves the whole thread group
            _fs.write(os.path.join(directory, "cgroup.procs"), pid)

    def pids(self) -> list[int]:
        found = set()
        for directory in self.unique_dirs():
            found.update(_fs.procs(directory))
        return sorted(found)

    def freeze(self) -> bool:
        if "freezer" not in self.dirs:
            return False
        state = self._file("freezer", "freezer.state")
        _fs.write(state, "FROZEN")
        # FREEZING means some task has not stopped yet; the kernel retries on each read.
        return _fs.wait_until(lambda: _fs.read(state).strip() == "FROZEN", _FREEZE_TIMEOUT_S)

    def thaw(self) -> None:
        if "freezer" in self.dirs:
            try:
                _fs.write(self._file("freezer", "freezer.state"), "THAWED")
            except FileNotFoundError:
                pass

    def kill_all(self, timeout_s: float = _fs.KILL_TIMEOUT_S) -> bool:
        """Freeze (so nothing forks behind our back), SIGKILL every task, thaw; until empty."""
        deadline = time.monotonic() + timeout_s
        while self.pids():
            try:
                self.freeze()
                _fs.signal_all(self.pids(), signal.SIGKILL)
            finally:
                self.thaw()  # a frozen task cannot act on SIGKILL
            _fs.wait_until(lambda: not self.pids(), 0.2)
            if time.monotonic() > deadline:
                return not self.pids()
        return True

    # -- accounting -----------------------------------------------------------------------

    def oom_kills(self) -> int | None:
        if "memory" not in self.dirs:
            return None
        control = self._ctl["memory"].oom_control
        if isinstance(control, dict) and "oom_kill" in control:  # kernels >= 4.13
            return control["oom_kill"]
        return None

    def oom_killed(self) -> bool:
        kills = self.oom_kills()
        if kills is not None:
            return kills > 0
        # Older kernels: the limit was hit; the best evidence available without an eventfd.
        return bool("memory" in self.dirs and self._ctl["memory"].failcnt)

    def stats(self) -> CgroupStats:
        values: dict[str, object] = {}
        if "cpuacct" in self.dirs:
            user_ns = _fs.int_or_none(_fs.read_or_none(self._file("cpuacct", "cpuacct.usage_user")))
            sys_ns = _fs.int_or_none(_fs.read_or_none(self._file("cpuacct", "cpuacct.usage_sys")))
            if user_ns is not None and sys_ns is not None:
                values.update(cpu_user_s=user_ns / 1e9, cpu_system_s=sys_ns / 1e9)
            else:  # cpuacct.stat is in USER_HZ ticks
                ticks, hz = self._ctl["cpuacct"].acct_stat, os.sysconf("SC_CLK_TCK")
                values.update(cpu_user_s=ticks["user"] / hz, cpu_system_s=ticks["system"] / hz)
        if "cpu" in self.dirs:
            cpu_stat = _fs.keyed(_fs.read_or_none(self._file("cpu", "cpu.stat")))
            values["cpu_throttled_periods"] = cpu_stat.get("nr_throttled")
            if "throttled_time" in cpu_stat:
                values["cpu_throttled_s"] = cpu_stat["throttled_time"] / 1e9
        if "memory" in self.dirs:
            memory = self._ctl["memory"]
            values.update(memory_peak_bytes=memory.max_usage_in_bytes,
                          memory_current_bytes=memory.usage_in_bytes, oom_kills=self.oom_kills())
        if "pids" in self.dirs:
            values["pids_peak"] = _fs.int_or_none(_fs.read_or_none(self._file("pids", "pids.peak")))
            events = _fs.read_or_none(self._file("pids", "pids.events"))
            values["pids_limit_hits"] = None if events is None else _fs.keyed(events).get("max", 0)
        return CgroupStats(**values)
