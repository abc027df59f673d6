"""The syscall name table, asked of libseccomp, and the architecture names we accept.

libseccomp is the single source of truth for names: a name it cannot resolve
cannot be put in a filter, so checking against it catches typos and names
newer than the installed libseccomp alike.
"""
from __future__ import annotations

import ctypes
import functools
import os
import re

import pyseccomp

# seccomp_syscall_resolve_name_arch() returns this for a name it does not know;
# other negative numbers are "pseudo syscalls": known names absent on this ABI
# (e.g. socketcall on x86_64), which libseccomp accepts and places correctly.
_NR_UNKNOWN = -1
_NAME_RE = re.compile(r"^[a-z0-9_]{1,64}$")

# Architecture spellings accepted in policies -> libseccomp token.
ARCHES = {
    "x86_64": pyseccomp.Arch.X86_64,
    "x86": pyseccomp.Arch.X86,
    "x32": pyseccomp.Arch.X32,
    "aarch64": pyseccomp.Arch.AARCH64,
    "arm": pyseccomp.Arch.ARM,
    "riscv64": pyseccomp.Arch.RISCV64,
    "ppc64le": pyseccomp.Arch.PPC64LE,
    "ppc64": pyseccomp.Arch.PPC64,
    "ppc": pyseccomp.Arch.PPC,
    "s390x": pyseccomp.Arch.S390X,
    "s390": pyseccomp.Arch.S390,
    "mips": pyseccomp.Arch.MIPS,
    "mipsel": pyseccomp.Arch.MIPSEL,
    "mips64": pyseccomp.Arch.MIPS64,
    "mipsel64": pyseccomp.Arch.MIPSEL64,
    "mips64n32": pyseccomp.Arch.MIPS64N32,
    "mipsel64n32": pyseccomp.Arch.MIPSEL64N32,
}
ARCH_ALIASES = {
    "x86-64": "x86_64", "amd64": "x86_64", "i386": "x86", "i686": "x86", "ia32": "x86",
    "arm64": "aarch64",
}
_MACHINE_TO_ARCH = {"x86_64": "x86_64", "aarch64": "aarch64", "riscv64": "riscv64",
                    "ppc64le": "ppc64le", "s390x": "s390x"}


def native_arch() -> str:
    machine = os.uname().machine
    return _MACHINE_TO_ARCH.get(machine, machine)


def canonical_arch(name: str) -> str | None:
    """'amd64' -> 'x86_64'; 'native' stays 'native'; None when unknown."""
    name = name.strip().lower()
    if name == "native":
        return "native"
    name = ARCH_ALIASES.get(name, name)
    return name if name in ARCHES else None


def arch_token(name: str) -> int:
    """libseccomp token for a canonical architecture name ('native' included)."""
    return pyseccomp.system_arch() if name == "native" else ARCHES[name]


def resolve(name: str) -> int:
    """Syscall number on the native ABI; pseudo (< -1) if known elsewhere; -1 if unknown."""
    return pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)


@functools.lru_cache(maxsize=None)
def is_known(name: str) -> bool:
    """True when libseccomp knows the name on any architecture."""
    return bool(_NAME_RE.match(name)) and resolve(name) != _NR_UNKNOWN


@functools.lru_cache(maxsize=1)
def native_table() -> dict[int, str]:
    """number -> name for every syscall libseccomp knows on the native ABI."""
    table, misses, nr = {}, 0, 0
    # Numbers are dense with a few holes; stop after a long run of unknowns.
    while misses < 128:
        try:
            table[nr] = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, nr).decode()
            misses = 0
        except ValueError:
            misses += 1
        nr += 1
    return table


def max_known_number() -> int:
    """Highest native syscall number libseccomp can name (anything above is newer)."""
    return max(native_table())


def name_of(nr: int, arch: int | None = None) -> str:
    """Name of syscall ``nr`` on the native ABI, or on libseccomp ABI token ``arch``."""
    if arch is None or arch == pyseccomp.system_arch():
        return native_table().get(nr, f"syscall#{nr}")
    try:
        return pyseccomp.resolve_syscall(arch, nr).decode()
    except ValueError:
        return f"syscall#{nr}"


@functools.lru_cache(maxsize=1)
def libseccomp_version() -> str:
    class _Version(ctypes.Structure):
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]

    lib = ctypes.CDLL(pyseccomp._libseccomp._name)  # already loaded; find_library would run ldconfig
    lib.seccomp_version.restype = ctypes.POINTER(_Version)
    v = lib.seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"
