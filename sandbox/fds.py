"""Inherited file descriptors: nothing crosses into the sandbox but 0, 1, 2 and what is asked for.

A leaked directory fd is a way out of any chroot or pivot_root (CVE-2024-21626), so everything
else is closed before exec, and the few fds the launcher itself needs are close-on-exec.
"""
from __future__ import annotations

import os


def close_all_except(keep: set[int]) -> None:
    highest = os.sysconf("SC_OPEN_MAX")
    start = 3
    for fd in sorted(fd for fd in keep if fd >= 3):
        if fd > start:
            os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, highest)

