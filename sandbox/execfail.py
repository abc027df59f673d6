"""Why execve() failed, in the words a shell would use: "bad interpreter /usr/local/bin/x (not
inside the sandbox)" rather than "command not found (ENOENT)" for a file that is right there.

explain() runs in the workload process after execve() failed: inside the sandbox (its root, its
PATH), under its seccomp filter and Landlock rules. So it imports nothing when called (this module
is imported before pivot_root, with the rest of the child side), needs only open/read/stat/readlink,
and never raises: any call refused or failing gives up with None, and the caller says what it would
have said anyway.
"""
from __future__ import annotations

import errno as _errno
import os
import stat as _stat
import struct

_READ = 4096  # the #! line, or the ELF header and program headers of any ordinary binary
_PT_INTERP = 3
_MAX_HOPS = 8  # symlinks and #! interpreters followed (the kernel stops at 4 interpreters)


def explain(path_or_argv0: str, err: int, env_path: str | None = None) -> str | None:
    """A shell-like reason for `execve(path_or_argv0)` failing with `err`, or None when there is
    nothing more to say than the errno. `env_path` is the PATH the workload's execvpe searched."""
    try:
        path = _find(path_or_argv0, env_path)
        if path is None:
            return None  # really not there: "command not found" is right
        if err == _errno.ENOENT:
            return _missing_part(path, 0)
        if err == _errno.EACCES:
            return _not_executable(path)
        if err == _errno.ENOEXEC:
            return f"{path}: exec format error (neither a binary for this machine nor a script with #!)"
    except (OSError, ValueError, struct.error):  # the policy refused a call, or odd bytes: no more to say
        return None
    return None


def _find(name: str, env_path: str | None) -> str | None:
    """What execvpe would have tried: the name itself when it has a slash, else the first
    directory of PATH holding an entry with that name (a dangling link counts: that is the point)."""
    if "/" in name:
        return name if os.path.lexists(name) else None
    for directory in (env_path if env_path is not None else "/usr/local/bin:/usr/bin:/bin").split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.lexists(candidate):
            return candidate
    return None


def _missing_part(path: str, hops: int) -> str | None:
    """ENOENT from a file that exists: its link target, #! interpreter or ELF loader is missing."""
    if hops > _MAX_HOPS:
        return None
    if not os.path.exists(path):  # lexists, so a symbolic link whose target is not here
        target = os.readlink(path) if os.path.islink(path) else "?"
        return f"{path}: broken symbolic link to {target} (not inside the sandbox)"
    with open(path, "rb") as handle:
        head = handle.read(_READ)
        if head.startswith(b"#!"):
            words = head[2:].split(b"\n", 1)[0].split()
            if not words:
                return f"{path}: bad interpreter: empty #! line"
            interpreter = os.fsdecode(words[0])
            if not os.path.lexists(interpreter) or not os.path.exists(interpreter):
                return f"{path}: bad interpreter {interpreter} (not inside the sandbox)"
            return _missing_part(interpreter, hops + 1)
        loader = _elf_interpreter(handle, head)
    if loader is not None and not os.path.exists(loader):
        return f"{path}: its dynamic loader {loader} is not inside the sandbox"
    return None


def _elf_interpreter(handle, head: bytes) -> str | None:
    """PT_INTERP of an ELF file (32 or 64 bits, either byte order), or None."""
    if head[:4] != b"\x7fELF" or len(head) < 52:
        return None
    wide, order = head[4] == 2, "<" if head[5] == 1 else ">"
    if wide:
        phoff, = struct.unpack_from(order + "Q", head, 0x20)
        entsize, count = struct.unpack_from(order + "HH", head, 0x36)
        layout, offset_at, size_at = order + "IIQQQQQQ", 2, 5
    else:
        phoff, = struct.unpack_from(order + "I", head, 0x1C)
        entsize, count = struct.unpack_from(order + "HH", head, 0x2A)
        layout, offset_at, size_at = order + "IIIIIIII", 1, 4
    for index in range(min(count, 64)):
        start = phoff + index * entsize
        handle.seek(start)
        entry = struct.unpack(layout, handle.read(struct.calcsize(layout)))
        if entry[0] == _PT_INTERP:
            handle.seek(entry[offset_at])
            return os.fsdecode(handle.read(min(entry[size_at], 4096)).split(b"\0", 1)[0])
    return None


def _not_executable(path: str) -> str | None:
    info = os.stat(path)
    if _stat.S_ISDIR(info.st_mode):
        return f"{path}: is a directory"
    if not info.st_mode & 0o111:
        return f"{path}: not executable (mode {_stat.S_IMODE(info.st_mode):04o})"
    if os.statvfs(path).f_flag & os.ST_NOEXEC:
        return f"{path}: on a file system mounted noexec"
    return None
