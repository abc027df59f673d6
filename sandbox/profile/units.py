"""Parsing and formatting of the human units a profile uses: sizes, durations, capabilities."""
from __future__ import annotations

import math
import re

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B?)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_FACTORS = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}


def parse_size(value: int | str) -> int:
    """'512M' -> 536870912. Binary multiples, as cgroups and tmpfs use them."""
    if isinstance(value, bool):
        raise ValueError("a size such as 512M or 2G")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size that is not negative")
        return value
    if not isinstance(value, str):
        raise ValueError("a size such as 512M or 2G")
    match = _SIZE_RE.match(value)
    if not match:
        raise ValueError("a size such as 512M or 2G")
    digits, factor = match.group(1), _SIZE_FACTORS[match.group(2).upper()]
    if "." not in digits and len(digits) <= 12:
        # The usual case, without importing decimal: 12 digits times 2**50 stays within Decimal's
        # 28-digit precision, so the result is the one Decimal gives.
        return int(digits) * factor
    # Decimal: exact for "1.5G", and no float overflow for absurdly long digit strings.
    from decimal import Decimal
    return int(Decimal(digits) * factor)


def format_size(size: int) -> str:
    for unit in ("P", "T", "G", "M", "K"):
        factor = _SIZE_FACTORS[unit]
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def parse_duration(value: int | float | str) -> float:
    """'5m' -> 300.0; bare numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 30s or 5m")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):  # TOML has nan and inf
            raise ValueError("a finite duration such as 30s or 5m")
        if value < 0:
            raise ValueError("a duration that is not negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("a duration such as 30s or 5m")
    match = _DURATION_RE.match(value)
    if not match:
        raise ValueError("a duration such as 30s or 5m")
    return float(match.group(1)) * _DURATION_FACTORS[match.group(2)]


def format_duration(seconds: float) -> str:
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= factor and seconds % factor == 0:
            return f"{int(seconds // factor)}{unit}"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{int(round(seconds * 1000))}ms"


# The kernel's capability numbers (linux/capability.h); python-prctl knows them too but importing
# it costs start-up time on paths that only validate a profile.
CAPABILITIES = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
    "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw",
    "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
    "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod",
    "lease", "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog",
    "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
)
CAPABILITY_NUMBERS = {f"CAP_{name.upper()}": number for number, name in enumerate(CAPABILITIES)}


def normalize_capability(name: str) -> str:
    """'net_bind_service', 'CAP_NET_BIND_SERVICE', 'Cap_Net_Bind_Service' -> 'CAP_NET_BIND_SERVICE'."""
    upper = name.strip().upper()
    if not upper.startswith("CAP_"):
        upper = "CAP_" + upper
    if upper not in CAPABILITY_NUMBERS:
        raise ValueError("a capability name such as CAP_NET_BIND_SERVICE")
    return upper
