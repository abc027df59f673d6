"""Safe-listed executables: the `[exec] allow` patterns, their expansion, and what else the list needs.

Enforcement is the kernel's: Landlock's execute right (LANDLOCK_ACCESS_FS_EXECUTE) is granted only
on what the patterns match (landlock.rules_for), and a seccomp rule keeps memfd files from ever
becoming executable (Landlock cannot see them: they live on an internal mount it lets through).
This module only turns patterns into paths and reads, for lint and learn, which interpreters a file
needs (PT_INTERP of an ELF file, the `#!` line of a script).

Patterns are absolute paths inside the sandbox. `*`, `?` and `[...]` match within one path
component; a final `/**` means "everything beneath this directory", which Landlock enforces on the
directory itself, so files created beneath it later are covered. Anything else is matched against
what exists when the workload applies its Landlock ruleset, after pivot_root: a file created later
under a `*` pattern, or a `/**` directory created later, is not executable.
"""
from __future__ import annotations

import errno
import os
import stat
from fnmatch import fnmatchcase

BENEATH = "/**"
MAX_MATCHES = 4096  # rules one launch adds at most; beyond that a narrower pattern is needed
_MAGIC = frozenset("*?[")
MFD_NOEXEC_SEAL = 0x0008


def has_magic(text: str) -> bool:
    return not _MAGIC.isdisjoint(text)


def check_pattern(pattern: str) -> str:
    """The pattern, normalised; ValueError saying what is wrong with it."""
    if not pattern.startswith("/"):
        raise ValueError("an absolute path or pattern inside the sandbox")
    if "\0" in pattern:
        raise ValueError("a path without NUL bytes")
    parts = [part for part in pattern.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise ValueError("a path without '.' or '..' components")
    for index, part in enumerate(parts):
        if "**" in part and (part != "**" or index != len(parts) - 1):
            raise ValueError("'**' only as the last component (/dir/** = everything beneath dir)")
    return "/" + "/".join(parts)


def beneath(pattern: str) -> bool:
    return pattern == BENEATH or pattern.endswith(BENEATH)


def base_of(pattern: str) -> str:
    """The directory a /** pattern covers ('/' for '/**')."""
    return pattern[: -len(BENEATH)] or "/"


def matches(pattern: str, path: str) -> bool:
    """Whether `path` (absolute, normalised) is covered by `pattern`, by name alone."""
    if beneath(pattern):
        base = base_of(pattern)
        head = base.rstrip("/").split("/")
        parts = path.rstrip("/").split("/")
        return len(parts) >= len(head) and all(fnmatchcase(p, h) for p, h in zip(parts, head))
    want, parts = pattern.split("/"), path.split("/")
    return len(want) == len(parts) and all(fnmatchcase(p, w) for p, w in zip(parts, want))


def covered(patterns, path: str) -> bool:
    return any(matches(pattern, path) for pattern in patterns)


def expand(pattern: str) -> tuple[list[tuple[str, bool]], list[str]]:
    """What `pattern` matches now, in this process's view of the file system.

    Returns ([(path, is_directory_rule)], warnings). A /** pattern gives its existing base
    directories (the rule covers everything beneath them); other patterns give existing
    non-directories only (a `*` must not reach into subdirectories)."""
    warnings: list[str] = []
    tree = beneath(pattern)
    parts = [part for part in (base_of(pattern) if tree else pattern).split("/") if part]
    found = ["/"]
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        following: list[str] = []
        for directory in found:
            if not has_magic(part):
                following.append(os.path.join(directory, part))
                continue
            try:
                names = sorted(os.listdir(directory))
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                    warnings.append(f"exec.allow: {pattern}: cannot list {directory} ({exc.strerror})")
                continue
            following += [os.path.join(directory, name) for name in names
                          if fnmatchcase(name, part) and (part.startswith(".") or not name.startswith("."))]
        found = following if last else [path for path in following if os.path.isdir(path)]
    matched: list[tuple[str, bool]] = []
    for path in found:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        if tree:
            if stat.S_ISDIR(mode):
                matched.append((path, True))
            else:
                warnings.append(f"exec.allow: {pattern}: {path} is not a directory")
        elif stat.S_ISDIR(mode):
            if not has_magic(pattern):
                warnings.append(f"exec.allow: {pattern} is a directory: write {pattern.rstrip('/')}/** "
                                "to allow what is beneath it")
        else:
            matched.append((path, False))
    if not matched:
        what = ("no existing directory: files created there later cannot be executed" if tree
                else "nothing inside the sandbox")
        warnings.append(f"exec.allow: {pattern} matches {what}")
    if len(matched) > MAX_MATCHES:
        warnings.append(f"exec.allow: {pattern} matches {len(matched)} files; only the first {MAX_MATCHES} "
                        "are allowed (use a /** directory pattern)")
        matched = matched[:MAX_MATCHES]
    return matched, warnings


# ---------------------------------------------------------------- interpreters (lint, learn)

def interpreter_of(path: str, opener=None) -> str | None:
    """The interpreter the kernel loads to execute `path`: PT_INTERP of an ELF file or the
    program of a `#!` line; None for a static ELF file or anything unreadable.
    `opener(path)` returns a binary file object (learn opens paths inside a sandbox's root)."""
    try:
        handle = opener(path) if opener else open(path, "rb")
    except OSError:
        return None
    with handle:
        head = handle.read(256)
        if head.startswith(b"#!"):
            line = head[2:].split(b"\n", 1)[0].strip()
            word = line.split(None, 1)[0] if line else b""
            return os.fsdecode(word) if word.startswith(b"/") else None
        if head[:4] != b"\x7fELF" or len(head) < 64:
            return None
        return _elf_interpreter(handle, head)


def _elf_interpreter(handle, head: bytes) -> str | None:
    wide, little = head[4] == 2, head[5] == 1
    order = "little" if little else "big"

    def number(data: bytes, offset: int, size: int) -> int:
        return int.from_bytes(data[offset:offset + size], order)
    if wide:
        phoff, phentsize, phnum = number(head, 32, 8), number(head, 54, 2), number(head, 56, 2)
    else:
        phoff, phentsize, phnum = number(head, 28, 4), number(head, 42, 2), number(head, 44, 2)
    if not phentsize or phnum > 256:
        return None
    handle.seek(phoff)
    table = handle.read(phentsize * phnum)
    for index in range(phnum):
        entry = table[index * phentsize:(index + 1) * phentsize]
        if number(entry, 0, 4) != 3:  # PT_INTERP
            continue
        offset, size = (number(entry, 8, 8), number(entry, 32, 8)) if wide else \
            (number(entry, 4, 4), number(entry, 16, 4))
        if not 0 < size <= 4096:
            return None
        handle.seek(offset)
        return os.fsdecode(handle.read(size).split(b"\0", 1)[0]) or None
    return None


def interpreter_chain(path: str, opener=None) -> list[str]:
    """`path`'s interpreters, outermost last (a script's #! program, then that program's ELF
    interpreter), as the kernel would load them; at most 4 levels (the kernel's own limit)."""
    chain: list[str] = []
    current = path
    for _ in range(4):
        interpreter = interpreter_of(current, opener)
        if interpreter is None or interpreter in chain or interpreter == path:
            break
        chain.append(interpreter)
        current = interpreter
    return chain


# ---------------------------------------------------------------- seccomp (memfd)

_hardened: "weakref.WeakKeyDictionary" = None  # policy -> hardened policy, for repeated launches


def memfd_hardened(policy):
    """`policy` with memfd_create allowed only with MFD_NOEXEC_SEAL, so no memfd can ever be
    executed. Landlock does not cover memfds (they live on an internal mount it lets through),
    so without this `memfd_create` + `execveat` would run any code past the allowlist. Only
    narrows: a policy that already denies memfd_create, or restricts it by argument, is kept."""
    if policy is None:
        return None
    global _hardened
    if _hardened is None:
        import weakref
        _hardened = weakref.WeakKeyDictionary()
    try:
        return _hardened[policy]
    except (KeyError, TypeError):
        pass
    hardened = _memfd_hardened(policy)
    try:
        _hardened[policy] = hardened
    except TypeError:
        pass
    return hardened


def _memfd_hardened(policy):
    from .seccomp.model import ArgCondition, EPERM, Rule
    from .seccomp.plan import build_plan
    plan = build_plan(policy).get("memfd_create")
    if plan is not None and plan.cases:
        return policy
    action = plan.fallback if plan is not None else policy.default_action
    if action.kind not in ("allow", "log"):
        return policy
    seal = ArgCondition(1, "masked_eq", MFD_NOEXEC_SEAL, MFD_NOEXEC_SEAL)
    return policy.with_rules(Rule(("memfd_create",), EPERM, comment="[exec] allow: no executable memfd"),
                             Rule(("memfd_create",), action, (seal,), comment="[exec] allow: sealed noexec"))
