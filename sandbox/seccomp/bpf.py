"""Classic BPF plumbing: splice programs together and load one into the kernel.

This module must stay importable and usable in the freshly forked child, so it
depends on ctypes and sandbox._libc only -- never on libseccomp.
"""
from __future__ import annotations

import ctypes
import errno as _errno
import os
import struct

from .. import _libc

INSN = struct.Struct("=HBBI")  # struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}
MAX_INSNS = 4096               # BPF_MAXINSNS

BPF_LD_W_ABS = 0x20
BPF_JMP_JA = 0x05
BPF_JMP_JEQ_K = 0x15
BPF_JMP_JGT_K = 0x25
BPF_JMP_JGE_K = 0x35
BPF_RET_K = 0x06
BPF_RET_A = 0x16

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_FILTER_FLAG_LOG = 2
SECCOMP_FILTER_FLAG_NEW_LISTENER = 8
SECCOMP_RET_ERRNO = 0x00050000

# offsets in struct seccomp_data
_NR_OFFSET, _ARCH_OFFSET = 0, 4
X32_SYSCALL_BIT = 0x40000000


def instructions(program: bytes) -> list[tuple[int, int, int, int]]:
    if not program or len(program) % INSN.size:
        raise ValueError("not a BPF program: length is not a positive multiple of 8")
    return [INSN.unpack_from(program, off) for off in range(0, len(program), INSN.size)]


def assemble(insns) -> bytes:
    return b"".join(INSN.pack(*insn) for insn in insns)


def enosys_prologue(audit_arch: int, max_known_nr: int) -> bytes:
    """Return ENOSYS for native syscalls newer than libseccomp knows.

    An allowlist denies unknown calls anyway; ENOSYS instead of EPERM tells libc
    "not implemented", so it falls back to an older call (what runc does too).
    x32 numbers (bit 30) and anything below the limit fall through untouched.
    """
    return assemble([
        (BPF_LD_W_ABS, 0, 0, _ARCH_OFFSET),
        (BPF_JMP_JEQ_K, 0, 4, audit_arch),           # foreign ABI: skip to the rest
        (BPF_LD_W_ABS, 0, 0, _NR_OFFSET),
        (BPF_JMP_JGE_K, 2, 0, X32_SYSCALL_BIT),
        (BPF_JMP_JGT_K, 0, 1, max_known_nr),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | _errno.ENOSYS),
    ])


def chain(first: bytes, then: bytes, continue_value: int) -> bytes:
    """Run ``first``; where it would return ``continue_value``, run ``then`` instead.

    Each ``ret continue_value`` becomes a forward jump to the first instruction of
    ``then``. Jumps are relative, so neither program's own jumps move, and every
    libseccomp program reloads the data it tests, so no state leaks across.
    """
    insns = instructions(first)
    out = []
    for i, (code, jt, jf, k) in enumerate(insns):
        if code == BPF_RET_A:
            raise ValueError("cannot chain a program that returns the accumulator")
        if code == BPF_RET_K and k == continue_value:
            out.append((BPF_JMP_JA, 0, 0, len(insns) - i - 1))
        else:
            out.append((code, jt, jf, k))
    return assemble(out) + then


SECCOMP_RET_ALLOW = 0x7fff0000
_BPF_ALU_AND_K = 0x54
_BPF_JMP_JSET_K = 0x45


def kernel_caches_allow(program: bytes, audit_arch: int, nr: int) -> bool:
    """Would the kernel's seccomp action cache (Linux >= 5.11) allow ``nr`` without running us?

    A faithful copy of seccomp_is_const_allow() in kernel/seccomp.c: when the filter is
    attached, the kernel runs it symbolically for each syscall number of the native (and
    compat) ABI, knowing only nr and arch. If that run reaches ``ret ALLOW`` through loads
    of nr/arch, ``and K`` and K-jumps alone, the syscall is marked always-allowed and never
    runs the filter again. Any other instruction on the path (an argument or
    instruction-pointer load, X register, ``ret A``) means "evaluate every time".
    """
    values = {_NR_OFFSET: nr & 0xFFFFFFFF, _ARCH_OFFSET: audit_arch}
    insns = instructions(program)
    acc = 0
    pc = 0
    while pc < len(insns):
        code, jt, jf, k = insns[pc]
        if code == BPF_LD_W_ABS:
            if k not in values:
                return False
            acc = values[k]
        elif code == BPF_RET_K:
            return k == SECCOMP_RET_ALLOW
        elif code == BPF_JMP_JA:
            pc += k
        elif code in (BPF_JMP_JEQ_K, BPF_JMP_JGE_K, BPF_JMP_JGT_K, _BPF_JMP_JSET_K):
            taken = {BPF_JMP_JEQ_K: acc == k, BPF_JMP_JGE_K: acc >= k, BPF_JMP_JGT_K: acc > k,
                     _BPF_JMP_JSET_K: bool(acc & k)}[code]
            pc += jt if taken else jf
        elif code == _BPF_ALU_AND_K:
            acc &= k
        else:
            return False
        pc += 1
    return False


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_bpf(bpf: bytes, *, new_listener: bool = False, log: bool = False) -> int | None:
    """Install ``bpf`` on the calling thread with seccomp(SECCOMP_SET_MODE_FILTER).

    The caller must have set no_new_privs (prctl(PR_SET_NO_NEW_PRIVS, 1)) or hold
    CAP_SYS_ADMIN. No TSYNC: the launcher's child is single-threaded when it loads
    the filter, and the filter is inherited across fork/clone/execve.
    With ``new_listener`` the filter's user-notification fd is returned (O_CLOEXEC).
    ``log`` asks the kernel to audit-log every non-allow result.
    """
    count = len(bpf) // INSN.size
    if not bpf or len(bpf) % INSN.size or count > MAX_INSNS:
        raise ValueError(f"not a loadable BPF program ({len(bpf)} bytes)")
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(count, ctypes.cast(buf, ctypes.c_void_p))
    flags = (SECCOMP_FILTER_FLAG_NEW_LISTENER if new_listener else 0) | \
            (SECCOMP_FILTER_FLAG_LOG if log else 0)
    ret = _libc.libc.syscall(ctypes.c_long(_libc.syscall_number("seccomp")),
                             ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.c_uint(flags),
                             ctypes.byref(prog))
    if ret < 0:
        err = ctypes.get_errno()
        hint = " (set no_new_privs first)" if err == _errno.EACCES else ""
        raise OSError(err, f"seccomp(SET_MODE_FILTER, {flags:#x}, <{count} insns>) failed: "
                           f"{os.strerror(err)}{hint}")
    return ret if new_listener else None
