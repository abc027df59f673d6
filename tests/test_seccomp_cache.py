"""The compiled default policy must let the kernel's seccomp action cache (Linux >= 5.11) skip
the filter for ordinary syscalls: a per-syscall-number bitmap built at load time by running the
filter symbolically (seccomp_is_const_allow). bpf.kernel_caches_allow() copies that emulator.
"""

import pytest

from sandbox.seccomp import bpf, compile_bpf, default_policy, strict_policy
from sandbox.seccomp import compile as compmod
from sandbox.seccomp.plan import build_plan
from sandbox.seccomp.syscalls import resolve

import pyseccomp  # noqa: E402

NATIVE = pyseccomp.system_arch()
HOT = ("read", "write", "getppid", "getpid", "close", "fstat", "futex", "mmap", "brk", "openat",
       "clock_gettime", "epoll_wait", "lseek", "pread64", "sched_yield", "exit_group")


def _insn(code, k, jt=0, jf=0):
    return (code, jt, jf, k)


def test_emulator_follows_the_kernel_rules():
    allow = bpf.assemble([_insn(bpf.BPF_RET_K, bpf.SECCOMP_RET_ALLOW)])
    assert bpf.kernel_caches_allow(allow, NATIVE, 39)
    deny = bpf.assemble([_insn(bpf.BPF_RET_K, 0x50001)])
    assert not bpf.kernel_caches_allow(deny, NATIVE, 39)
    arg_load = bpf.assemble([_insn(bpf.BPF_LD_W_ABS, 16), _insn(bpf.BPF_RET_K, bpf.SECCOMP_RET_ALLOW)])
    assert not bpf.kernel_caches_allow(arg_load, NATIVE, 39)
    # nr == 39 -> allow, else an argument test: only 39 is cacheable
    branch = bpf.assemble([_insn(bpf.BPF_LD_W_ABS, 0), _insn(bpf.BPF_JMP_JEQ_K, 39, 0, 1),
                           _insn(bpf.BPF_RET_K, bpf.SECCOMP_RET_ALLOW), _insn(bpf.BPF_LD_W_ABS, 16),
                           _insn(bpf.BPF_RET_K, bpf.SECCOMP_RET_ALLOW)])
    assert bpf.kernel_caches_allow(branch, NATIVE, 39)
    assert not bpf.kernel_caches_allow(branch, NATIVE, 40)
    ret_a = bpf.assemble([_insn(bpf.BPF_LD_W_ABS, 0), _insn(bpf.BPF_RET_A, 0)])
    assert not bpf.kernel_caches_allow(ret_a, NATIVE, 0x7fff0000)


@pytest.mark.parametrize("policy", [default_policy(), strict_policy()], ids=["default", "strict"])
def test_unconditionally_allowed_syscalls_hit_the_kernel_cache(policy):
    program = compile_bpf(policy, use_cache=False)
    plan = build_plan(policy)
    unconditional = [name for name, p in plan.items() if p.fallback.kind == "allow" and not p.cases]
    assert "getppid" in unconditional
    missed = [n for n in unconditional if resolve(n) >= 0 and not bpf.kernel_caches_allow(program, NATIVE, resolve(n))]
    assert missed == []
    for name in HOT:
        if name in unconditional:
            assert bpf.kernel_caches_allow(program, NATIVE, resolve(name)), name


def test_denied_and_argument_checked_syscalls_are_never_cached():
    policy = default_policy()
    program = compile_bpf(policy, use_cache=False)
    plan = build_plan(policy)
    for name, p in plan.items():
        nr = resolve(name)
        if nr < 0:
            continue
        if p.cases or p.fallback.kind != "allow":
            assert not bpf.kernel_caches_allow(program, NATIVE, nr), name
    for name in ("mount", "bpf", "kexec_load", "ptrace", "unshare"):
        if resolve(name) >= 0 and name not in plan:
            assert not bpf.kernel_caches_allow(program, NATIVE, resolve(name)), name
    # a foreign ABI is never cached as allowed (bad-arch action)
    assert not bpf.kernel_caches_allow(program, 0x40000003, resolve("getppid"))
