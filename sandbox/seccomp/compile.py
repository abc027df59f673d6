"""Compile a SeccompPolicy to a BPF program with libseccomp, with an on-disk cache.

Layout of the emitted program (each part optional except the main filter):

    1. ENOSYS prologue   allowlists only: native syscalls newer than libseccomp
    2. exceptions        per-syscall argument cases whose fallback is not the
                         default action (e.g. "ioctl allowed, except TIOCSTI");
                         no match jumps on to 3
    3. main filter       unconditional per-syscall actions, argument cases whose
                         fallback is the default, and the default action

libseccomp cannot express "allow this syscall unless an argument matches" in one
filter (an unconditional rule swallows conditional ones), hence part 2.
Calls from an ABI the policy does not list kill the process (bad-arch action).
"""
from __future__ import annotations

import json
import weakref

from .. import usercache
from ..digest import sha256
from . import bpf as _bpf
from . import syscalls as _syscalls
from .groups import GROUPS  # rules name groups: their members are part of the content
from .model import SeccompPolicy

COMPILER_VERSION = 2  # bump when the emitted code changes for the same policy
# libseccomp's action tokens, as plain numbers (seccomp.h's SECCOMP_RET_* values): pyseccomp, with
# libseccomp behind it, is imported only to compile a program, never for one the cache holds.
BAD_ARCH_ACTION = 0x80000000  # SECCOMP_RET_KILL_PROCESS
# Never produced by a policy (TRACE is not an Action kind): "go on to the main filter".
_CONTINUE = 0x7FF00000 | 0x5bc  # SECCOMP_RET_TRACE | data

_CACHE_MAGIC = b"SBXBPF1\n"


def _new_filter(policy: SeccompPolicy, default: int):  # -> pyseccomp.SyscallFilter
    import pyseccomp
    filt = pyseccomp.SyscallFilter(default)
    filt.set_attr(pyseccomp.Attr.ACT_BADARCH, BAD_ARCH_ACTION)
    filt.set_attr(pyseccomp.Attr.CTL_NNP, 0)  # we load it ourselves; never touch NNP
    try:
        # A binary tree of syscall numbers instead of a linear scan: at load, the kernel runs the
        # filter for every syscall number to fill its action cache, so a chain of ~300 compares
        # cost ~0.2 ms more per launch (docs/performance.md); a call the cache cannot answer
        # walks the tree at run time too. libseccomp 2.5+.
        filt.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, 2)
    except OSError:
        pass
    tokens = {_syscalls.arch_token(a) for a in policy.architectures}
    native = pyseccomp.system_arch()
    for token in sorted(tokens - {native}):
        filt.add_arch(token)
    if native not in tokens:
        filt.remove_arch(native)
    return filt


def _add(filt, action: int, name: str, conditions=()) -> None:
    try:
        filt.add_rule(action, name, *(c.to_libseccomp() for c in conditions))
    except OSError as exc:
        raise ValueError(f"libseccomp rejected a rule for {name}: {exc.strerror}") from None


def build_filters(policy: SeccompPolicy) -> tuple:
    """(exceptions filter or None, main filter) as libseccomp contexts (pyseccomp.SyscallFilter)."""
    from .plan import build_plan  # not needed when the program comes from the cache
    default = policy.default_action
    main = _new_filter(policy, default.to_libseccomp())
    exceptions = None
    for name, plan in sorted(build_plan(policy).items()):
        if plan.fallback != default:
            _add(main, plan.fallback.to_libseccomp(), name)
            if plan.cases and exceptions is None:
                exceptions = _new_filter(policy, _CONTINUE)
            target = exceptions
        else:
            target = main
        for conditions, action in plan.cases:
            _add(target, action.to_libseccomp(), name, conditions)
    return exceptions, main


def _export(filt, method: str) -> bytes:
    import tempfile
    with tempfile.TemporaryFile() as tmp:
        getattr(filt, method)(tmp)
        tmp.seek(0)
        return tmp.read()


def _build(policy: SeccompPolicy) -> bytes:
    import pyseccomp
    exceptions, main = build_filters(policy)
    program = _export(main, "export_bpf")
    if exceptions is not None:
        program = _bpf.chain(_export(exceptions, "export_bpf"), program, _CONTINUE)
    archs = {_syscalls.arch_token(a) for a in policy.architectures}
    if policy.mode == "allowlist" and pyseccomp.system_arch() in archs:
        program = _bpf.enosys_prologue(pyseccomp.system_arch(), _syscalls.max_known_number()) + program
    if len(program) // _bpf.INSN.size > _bpf.MAX_INSNS:
        raise ValueError(f"policy {policy.name!r} compiles to more than {_bpf.MAX_INSNS} instructions")
    return program


def export_pfc(policy: SeccompPolicy) -> str:
    """libseccomp's pseudo-filter-code listing (main filter, then exceptions if any)."""
    exceptions, main = build_filters(policy)
    text = _export(main, "export_pfc").decode()
    if exceptions is not None:
        text = ("# exceptions, checked first ('TRACE(1468)' = continue with the main filter)\n"
                + _export(exceptions, "export_pfc").decode() + "\n# main filter\n" + text)
    return text


# --- cache -----------------------------------------------------------------------

def policy_digest(policy: SeccompPolicy) -> str:
    """Content hash of everything that determines the emitted program."""
    from .policy import to_toml_dict  # late: policy.py imports this module's users
    doc = to_toml_dict(policy, inline=True)
    doc.pop("name", None)
    for rule in doc.get("rules", []):
        rule.pop("comment", None)
    key = {"policy": doc, "groups": GROUPS, "compiler": COMPILER_VERSION,
           "libseccomp": _syscalls.libseccomp_version(), "native": _syscalls.native_arch()}
    return sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def cache_dir() -> str:
    return usercache.directory("seccomp")


def _read_cached(directory: str, name: str) -> bytes | None:
    blob = usercache.read(directory, name)
    if blob is None:
        return None
    head, digest, body = blob[:8], blob[8:40], blob[40:]
    if head != _CACHE_MAGIC or sha256(body).digest() != digest:
        return None  # corrupt or foreign: rebuild
    try:
        _bpf.instructions(body)
    except ValueError:
        return None
    return body


# Programs compiled or read in this process, per policy object: a warm launch of the same
# profile then neither hashes the policy nor reads the disk cache. Keyed by identity, so an equal
# but new policy still goes through the disk cache (and its checks).
_PROGRAMS: dict[int, tuple[weakref.ref, bytes]] = {}


def compile_bpf(policy: SeccompPolicy, *, use_cache: bool = True) -> bytes:
    """The loadable BPF program for ``policy`` (see load_bpf)."""
    if not use_cache:
        return _build(policy)
    known = _PROGRAMS.get(id(policy))
    if known is not None and known[0]() is policy:
        return known[1]
    program = _compile_through_disk_cache(policy)
    key = id(policy)
    # The callback runs while the policy is being freed, before its id can be reused.
    _PROGRAMS[key] = (weakref.ref(policy, lambda _ref: _PROGRAMS.pop(key, None)), program)
    return program


def _compile_through_disk_cache(policy: SeccompPolicy) -> bytes:
    directory = cache_dir()
    name = policy_digest(policy) + ".bpf"
    cached = _read_cached(directory, name)
    if cached is not None:
        return cached
    program = _build(policy)
    usercache.write(directory, name, _CACHE_MAGIC + sha256(program).digest() + program)
    return program
