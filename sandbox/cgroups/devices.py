"""The device rules of an OCI container on cgroup v2: a BPF_PROG_TYPE_CGROUP_DEVICE program.

cgroup v2 has no devices.allow/devices.deny files; runc and crun compile the rules into a small
eBPF program attached to the container's cgroup, and so do we (ctypes: no maintained Python
library loads BPF). The rules apply in order and the last one that matches decides, as on v1, so
the program checks them from the last to the first and returns at the first match; no match
denies. The attached program belongs to the cgroup: it goes when the cgroup is removed.
"""
from __future__ import annotations

import ctypes
import os
import struct

from .. import _libc

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
_BPF_SYSCALL = {"x86_64": 321, "aarch64": 280}[os.uname().machine]

DEVICE_TYPES = {"b": 1, "c": 2}  # BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR
ACCESS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE

# eBPF opcodes used below
LDX_W = 0x61  # r_dst = *(u32 *)(r_src + off)
AND32_K = 0x54
RSH32_K = 0x74
MOV32_X = 0xBC
MOV64_K = 0xB7
JNE_K = 0x55
JNE_X = 0x5D
EXIT = 0x95


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def program(rules: list[dict]) -> bytes:
    """The eBPF program for OCI device rules (dicts with allow, type, major, minor, access)."""
    # r2 = device type, r3 = requested access, r4 = major, r5 = minor (struct bpf_cgroup_dev_ctx)
    code = [_insn(LDX_W, 2, 1, 0), _insn(AND32_K, 2, imm=0xFFFF), _insn(LDX_W, 3, 1, 0), _insn(RSH32_K, 3, imm=16),
            _insn(LDX_W, 4, 1, 4), _insn(LDX_W, 5, 1, 8)]
    for rule in reversed(rules):
        block = []
        kind = rule.get("type") or "a"
        if kind != "a":
            block.append(("type", DEVICE_TYPES[kind]))
        access = rule.get("access") or "rwm"
        mask = sum(ACCESS[letter] for letter in set(access))
        if mask != 7:
            block.append(("access", mask))
        for name, register in (("major", 4), ("minor", 5)):
            value = rule.get(name)
            if value is not None and value >= 0:
                block.append((name, value))
        checks = []
        for what, value in block:
            if what == "type":
                checks.append([_insn(JNE_K, 2, off=0, imm=value)])
            elif what == "access":  # the requested access must be within the rule's
                checks.append([_insn(MOV32_X, 1, 3), _insn(AND32_K, 1, imm=value), _insn(JNE_X, 1, 3, off=0)])
            else:
                checks.append([_insn(JNE_K, 4 if what == "major" else 5, off=0, imm=value)])
        tail = [_insn(MOV64_K, 0, imm=1 if rule.get("allow") else 0), _insn(EXIT)]
        # every failed check jumps past the rest of this block
        flat: list[bytes] = [insn for check in checks for insn in check]
        fixed = []
        for index, insn in enumerate(flat):
            opcode = insn[0]
            if opcode in (JNE_K, JNE_X):
                skip = len(flat) - index - 1 + len(tail)
                fields = list(struct.unpack("<BBhi", insn))
                fields[2] = skip
                insn = struct.pack("<BBhi", *fields)
            fixed.append(insn)
        code += fixed + tail
        if not checks:
            return b"".join(code)  # a rule for every device: nothing after it is reachable
    code += [_insn(MOV64_K, 0, imm=0), _insn(EXIT)]
    return b"".join(code)


def _bpf(command: int, attr: bytes) -> int:
    buffer = ctypes.create_string_buffer(attr, len(attr))
    result = _libc.libc.syscall(ctypes.c_long(_BPF_SYSCALL), ctypes.c_int(command), buffer,
                                ctypes.c_uint(len(attr)))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({command}) failed: {os.strerror(err)}")
    return result


def attach_program(cgroup_dir: str, rules: list[dict]) -> None:
    """Load the program for `rules` and attach it to the v2 cgroup directory."""
    insns = program(rules)
    code = ctypes.create_string_buffer(insns, len(insns))
    license_text = ctypes.create_string_buffer(b"Apache-2.0")
    log = ctypes.create_string_buffer(4096)
    attr = bytearray(128)
    struct.pack_into("<IIQQIIQ", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(insns) // 8, ctypes.addressof(code),
                     ctypes.addressof(license_text), 1, len(log), ctypes.addressof(log))
    attr[48:48 + 11] = b"sbx_devices"
    try:
        prog = _bpf(BPF_PROG_LOAD, bytes(attr))
    except OSError as exc:
        detail = [log.value.decode(errors="replace").strip().replace("\n", " / ")]
        raise OSError(exc.errno, f"{exc.strerror}{': ' + detail[-1] if detail else ''}") from None
    try:
        target = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _bpf(BPF_PROG_ATTACH, struct.pack("<IIII", target, prog, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI)
                 + bytes(112))
        finally:
            os.close(target)
    finally:
        os.close(prog)
