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


def _read_last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            return int(handle.read())
    except OSError:
        return max(CAPABILITY_NUMBERS.values())


# Read once, at import, in the launcher: the workload's steps then touch no file for it.
LAST_CAP = _read_last_cap()


def _numbers(keep: tuple[str, ...]) -> set[int]:
    return {CAPABILITY_NUMBERS[name] for name in keep}


def prepare(keep: tuple[str, ...]) -> None:
    kept = _numbers(keep)
    for number in range(LAST_CAP + 1):  # by number: the kernel may know more than python-prctl names
        if number not in kept:
            prctl.capbset_drop(number)
    bits = (SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED
            | SECBIT_KEEP_CAPS_LOCKED)
    if not kept:
        bits |= SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED
    # python-prctl refuses the ambient-raise bits it does not know about.
    _libc.prctl(PR_SET_SECUREBITS, bits)


def finish(keep: tuple[str, ...]) -> None:
    kept = sorted(_numbers(keep))
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    # One capset for the three sets: all but the kept go (those python-prctl knows: any newer one
    # is gone from the bounding set, so exec cannot keep it), and a kept one is also raised in
    # the inheritable set (ambient capabilities need it there and in permitted).
    changes = [([cap for cap in prctl.ALL_CAPS if cap not in kept], prctl.ALL_FLAGS, False)]
    if kept:
        changes.append(([cap for cap in kept if cap in prctl.ALL_CAPS], prctl.CAP_INHERITABLE, True))
    prctl.set_caps(*changes)
    # Ambient capabilities survive exec of an ordinary binary by a non-root user.
    for number in kept:
        _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, number)


def set_no_new_privs() -> None:
    prctl.set_no_new_privs(1)


def set_parent_death_signal(signal_number: int) -> None:
    prctl.set_pdeathsig(signal_number)


# ---------------------------------------------------------------- the OCI runtime's five sets

PR_SET_KEEPCAPS = 8


def prepare_sets(sets) -> None:
    """Before the ids change (OCI): the bounding set as given, and keep-caps so the permitted set
    survives a change away from uid 0. No securebits locked: a container's root gets its bounding
    set back at exec, as the kernel's rules for uid 0 say (what runc and crun give)."""
    kept = _numbers(sets.bounding)
    for number in range(LAST_CAP + 1):
        if number not in kept:
            prctl.capbset_drop(number)
    _libc.prctl(PR_SET_KEEPCAPS, 1)


def finish_sets(sets) -> None:
    """After the ids change (OCI): effective, permitted and inheritable as given, then ambient."""
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    wanted = {prctl.CAP_EFFECTIVE: _numbers(sets.effective), prctl.CAP_PERMITTED: _numbers(sets.permitted),
              prctl.CAP_INHERITABLE: _numbers(sets.inheritable)}
    changes = []
    for flag, numbers in wanted.items():
        changes.append(([cap for cap in prctl.ALL_CAPS if cap not in numbers], [flag], False))
        if numbers:
            changes.append(([cap for cap in numbers if cap in prctl.ALL_CAPS], [flag], True))
    prctl.set_caps(*changes)
    for number in sorted(_numbers(sets.ambient)):
        _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, number)
    _libc.prctl(PR_SET_KEEPCAPS, 0)
