"""The syscall name table, asked of libseccomp, and the architecture names we accept.

libseccomp is the single source of truth for names: a name it cannot resolve
cannot be put in a filter, so checking against it catches typos and names
newer than the installed libseccomp alike.
"""
from __future__ import annotations

import functools
import os
import re

# seccomp_syscall_resolve_name_arch() returns this for a name it does not know;
# other negative numbers are "pseudo syscalls": known names absent on this ABI
# (e.g. socketcall on x86_64), which libseccomp accepts and places correctly.
_NR_UNKNOWN = -1
_NAME_RE = re.compile(r"^[a-z0-9_]{1,64}$")

# Architecture spellings accepted in policies -> the name of their libseccomp token (pyseccomp.Arch).
# pyseccomp itself is imported only where libseccomp must answer (compiling a filter, naming a
# number): a launch whose seccomp program is in the cache needs neither (~20 ms of imports).
ARCHES = {
    "x86_64": "X86_64", "x86": "X86", "x32": "X32", "aarch64": "AARCH64", "arm": "ARM", "riscv64": "RISCV64",
    "ppc64le": "PPC64LE", "ppc64": "PPC64", "ppc": "PPC", "s390x": "S390X", "s390": "S390", "mips": "MIPS",
    "mipsel": "MIPSEL", "mips64": "MIPS64", "mipsel64": "MIPSEL64", "mips64n32": "MIPS64N32",
    "mipsel64n32": "MIPSEL64N32",
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
    import pyseccomp
    return pyseccomp.system_arch() if name == "native" else getattr(pyseccomp.Arch, ARCHES[name])


def resolve(name: str) -> int:
    """Syscall number on the native ABI; pseudo (< -1) if known elsewhere; -1 if unknown."""
    import pyseccomp
    return pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)


@functools.lru_cache(maxsize=None)
def is_known(name: str) -> bool:
    """True when libseccomp knows the name on any architecture."""
    return bool(_NAME_RE.match(name)) and resolve(name) != _NR_UNKNOWN


@functools.lru_cache(maxsize=1)
def native_table() -> dict[int, str]:
    """number -> name for every syscall libseccomp knows on the native ABI."""
    import pyseccomp
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
    import pyseccomp
    if arch is None or arch == pyseccomp.system_arch():
        return native_table().get(nr, f"syscall#{nr}")
    try:
        return pyseccomp.resolve_syscall(arch, nr).decode()
    except ValueError:
        return f"syscall#{nr}"


@functools.lru_cache(maxsize=1)
def libseccomp_version() -> str:
    """The installed libseccomp's version, asked of the library itself (by its soname, part of its
    ABI: no pyseccomp, no search), for the compile cache's key."""
    import ctypes

    class _Version(ctypes.Structure):
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]

    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        import pyseccomp
        lib = ctypes.CDLL(pyseccomp._libseccomp._name)
    lib.seccomp_version.restype = ctypes.POINTER(_Version)
    v = lib.seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"
