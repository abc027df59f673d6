"""Capabilities: reduce every set to what the profile keeps, and lock the door behind.

Two halves around the uid change, because the bounding set and securebits need CAP_SETPCAP, which a
kept-nothing workload no longer has afterwards:

    prepare(keep)   bounding set, securebits (no root magic, no setuid fix-up), keep-caps
    setresgid/setresuid
    finish(keep)    permitted, effective, inheritable and ambient = keep
"""
from __future__ import annotations

import prctl

from . import _libc
from .profile.units import CAPABILITY_NUMBERS

PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECBIT_NOROOT = 1 << 0
SECBIT_NOROOT_LOCKED = 1 << 1
SECBIT_NO_SETUID_FIXUP = 1 << 2
SECBIT_NO_SETUID_FIXUP_LOCKED = 1 << 3
SECBIT_KEEP_CAPS_LOCKED = 1 << 5
SECBIT_NO_CAP_AMBIENT_RAISE = 1 << 6
SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED = 1 << 7


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            return int(handle.read())
    except OSError:
        return max(CAPABILITY_NUMBERS.values())


def _numbers(keep: tuple[str, ...]) -> set[int]:
    return {CAPABILITY_NUMBERS[name] for name in keep}


def prepare(keep: tuple[str, ...]) -> None:
    kept = _numbers(keep)
    # python-prctl names only the capabilities it was built with; drop the rest by number.
    for number in range(last_cap() + 1):
        if number not in kept:
            _libc.prctl(PR_CAPBSET_DROP, number)
    bits = (SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED
            | SECBIT_KEEP_CAPS_LOCKED)
    if not kept:
        bits |= SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED
    # python-prctl refuses the ambient-raise bits it does not know about.
    _libc.prctl(PR_SET_SECUREBITS, bits)


def finish(keep: tuple[str, ...]) -> None:
    kept = sorted(_numbers(keep))
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    names = [name.removeprefix("CAP_").lower() for name in keep]
    caps = [getattr(prctl, f"CAP_{name.upper()}") for name in names if hasattr(prctl, f"CAP_{name.upper()}")]
    # limit() only removes; a kept capability must also be raised in the inheritable set.
    prctl.cap_inheritable.limit(*caps)
    for name in names:
        setattr(prctl.cap_inheritable, name, True)
    prctl.cap_effective.limit(*caps)
    prctl.cap_permitted.limit(*caps)
    # Ambient capabilities survive exec of an ordinary binary by a non-root user; they need the
    # capability in both permitted and inheritable, set just above.
    for number in kept:
        _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, number)


def set_no_new_privs() -> None:
    prctl.set_no_new_privs(1)


def set_parent_death_signal(signal_number: int) -> None:
    prctl.set_pdeathsig(signal_number)
