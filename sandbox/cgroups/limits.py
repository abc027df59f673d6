"""What a sandbox asks of its cgroup (CgroupLimits) and what it reports back (CgroupStats)."""
from __future__ import annotations

import re
from dataclasses import field, fields

from ..compiled_dataclass import dataclass

LIMIT_NAMES = ("memory", "swap", "memory_high", "cpus", "cpu_weight", "pids", "io_weight", "io_max")

# Which controller enforces each limit; v1 calls the io controller "blkio".
CONTROLLER_OF = {
    "memory": "memory", "swap": "memory", "memory_high": "memory",
    "cpus": "cpu", "cpu_weight": "cpu", "pids": "pids", "io_weight": "io", "io_max": "io",
}

CPU_PERIOD_US = 100_000
_MIN_CPU_QUOTA_US = 1_000  # the kernel refuses a smaller cfs quota
_DEVICE_RE = re.compile(r"^\d+:\d+$")

IoMax = tuple[str, "int | None", "int | None", "int | None", "int | None"]


@dataclass(frozen=True)
class CgroupLimits:
    """Resource limits for one sandbox. None means "not limited".

    swap is swap allowed on top of memory (0 = none, so the memory limit is real; None =
    whatever the host allows). It only means something together with memory.
    io_max entries are (device "MAJ:MIN", rbps, wbps, riops, wiops), None for unlimited.
    required names the limits whose absence must fail the launch.
    """

    memory: int | None = None
    swap: int | None = 0
    memory_high: int | None = None
    cpus: float | None = None
    cpu_weight: int | None = None
    pids: int | None = None
    io_weight: int | None = None
    io_max: tuple[IoMax, ...] = ()
    required: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        object.__setattr__(self, "required", frozenset(self.required))
        object.__setattr__(self, "io_max", tuple(tuple(entry) for entry in self.io_max))
        for name in ("memory", "swap", "memory_high", "pids"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer or None, not {value!r}")
        if self.pids == 0:
            raise ValueError("pids must be at least 1")
        if self.cpus is not None and not self.cpus > 0:
            raise ValueError(f"cpus must be positive, not {self.cpus!r}")
        for name in ("cpu_weight", "io_weight"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 10000:
                raise ValueError(f"{name} must be within 1-10000, not {value!r}")
        for entry in self.io_max:
            if len(entry) != 5 or not _DEVICE_RE.match(str(entry[0])):
                raise ValueError(f"io_max entries are (\"MAJ:MIN\", rbps, wbps, riops, wiops), not {entry!r}")
        unknown = self.required - set(LIMIT_NAMES)
        if unknown:
            raise ValueError(f"unknown required limit(s): {', '.join(sorted(unknown))}")
        unset = {name for name in self.required if name not in self.requested()}
        if unset:
            raise ValueError(f"required limit(s) not set: {', '.join(sorted(unset))}")

    def requested(self) -> dict[str, object]:
        """The limits actually asked for, by name. swap counts only alongside memory."""
        wanted = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "required" or value is None or value == ():
                continue
            if f.name == "swap" and self.memory is None:
                continue
            wanted[f.name] = value
        return wanted

    def describe(self, name: str) -> str:
        """'memory limit 256M', used in warnings and errors."""
        value = getattr(self, name)
        if name in ("memory", "swap", "memory_high"):
            shown = format_size(value)
        elif name == "io_max":
            shown = ", ".join(entry[0] for entry in value)
        else:
            shown = str(value)
        return f"{name.replace('_', ' ')} limit {shown}"


class NotApplied(Exception):
    """A limit could not be written; the message says why (shown to the user in a warning)."""


@dataclass(frozen=True)
class CgroupStats:
    """Resource usage of a sandbox cgroup; None where this machine cannot tell."""

    cpu_user_s: float | None = None
    cpu_system_s: float | None = None
    memory_peak_bytes: int | None = None
    memory_current_bytes: int | None = None
    pids_peak: int | None = None
    oom_kills: int | None = None
    pids_limit_hits: int | None = None  # forks refused because the pids limit was reached
    cpu_throttled_periods: int | None = None
    cpu_throttled_s: float | None = None


def cpu_quota_us(cpus: float) -> int:
    """cfs quota per CPU_PERIOD_US for a fraction of cores: 0.5 -> 50000."""
    return max(_MIN_CPU_QUOTA_US, round(cpus * CPU_PERIOD_US))


def weight_to_shares(weight: int) -> int:
    """v2 cpu.weight (1-10000, default 100) -> v1 cpu.shares (2-262144, default 1024)."""
    return max(2, min(262144, round(weight * 1024 / 100)))


def format_size(size: int) -> str:
    for unit, factor in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)
