"""Docker/OCI profiles: import, export, round trips, and what the kernel does with them."""
import errno
import json
import os

import pytest

from sandbox.seccomp import (Action, ArgCondition, Rule, SeccompPolicy, compile_bpf, default_policy,
                             evaluate, export_docker, import_docker, parse_section,
                             policy_to_profile_toml)
from sandbox.seccomp import syscalls
from sandbox.seccomp.plan import build_plan
from sandbox.seccomp.probe import probe

MOBY = "/work/shared/interop/moby-default-seccomp.json"
needs_moby = pytest.mark.skipif(not os.path.exists(MOBY), reason="needs the moby profile")
x86_64_only = pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86_64 numbers")

HAND_WRITTEN = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 38,
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
    "syscalls": [
        {"names": ["read", "write", "exit_group", "not_a_real_syscall"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["openat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["kill"], "action": "SCMP_ACT_KILL"},
        {"names": ["ptrace"], "action": "SCMP_ACT_TRACE"},
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                  {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]},          # same index: OR
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["fchown"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 1, "value": 0, "op": "SCMP_CMP_NE"}, {"index": 2, "value": 5, "op": "SCMP_CMP_LE"}]},
        {"names": ["reboot"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_BOOT"]}},
        {"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["sync"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
        {"names": ["syncfs"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}},
    ],
}


def test_hand_written_profile_imports_faithfully():
    skipped = []
    policy = import_docker(HAND_WRITTEN, skipped=skipped)
    assert skipped == ["not_a_real_syscall"]
    assert policy.mode == "allowlist" and policy.default_action == Action("errno", 38)
    assert policy.architectures == ("native", "x86")
    assert evaluate(policy, "read") == Action("allow")
    assert evaluate(policy, "openat") == Action("errno", 13)
    assert evaluate(policy, "mkdir") == Action("errno", errno.EPERM)
    assert evaluate(policy, "kill") == Action("kill-thread")
    assert evaluate(policy, "ptrace") == Action("errno", errno.ENOSYS)
    assert [evaluate(policy, "socket", (f,)).kind for f in (1, 2, 3)] == ["allow", "allow", "errno"]
    assert evaluate(policy, "clone", (0x11,)).kind == "allow"
    assert evaluate(policy, "clone", (0x10000000,)).kind == "errno"
    assert evaluate(policy, "fchown", (0, 1, 5)).kind == "allow"
    assert evaluate(policy, "fchown", (0, 0, 5)).kind == "errno"
    assert evaluate(policy, "reboot").kind == "errno"             # CAP_SYS_BOOT not kept
    assert evaluate(import_docker(HAND_WRITTEN, frozenset({"CAP_SYS_BOOT"})), "reboot").kind == "allow"
    assert evaluate(policy, "chroot").kind == "allow"
    assert evaluate(import_docker(HAND_WRITTEN, frozenset({"CAP_SYS_ADMIN"})), "chroot").kind == "errno"
    assert evaluate(policy, "sync").kind == "errno"               # needs kernel 99
    assert evaluate(import_docker(HAND_WRITTEN, kernel="99.1.0"), "sync").kind == "allow"
    assert evaluate(policy, "syncfs").kind == "errno"             # excluded on amd64 (x86_64 here)


def plans(policy):
    return {name: (p.fallback, sorted(p.cases, key=repr)) for name, p in build_plan(policy).items()
            if p.fallback != policy.default_action or p.cases}


def test_hand_written_round_trip():
    policy = import_docker(HAND_WRITTEN)
    exported = export_docker(policy)
    assert exported["defaultAction"] == "SCMP_ACT_ERRNO" and exported["defaultErrnoRet"] == 38
    assert exported["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    again = import_docker(json.loads(json.dumps(exported)))
    assert plans(again) == plans(policy)
    assert again.architectures == policy.architectures


@needs_moby
def test_moby_profile_round_trip():
    moby = import_docker(MOBY)
    assert moby.architectures[0] == "native"
    exported = export_docker(moby)
    again = import_docker(json.loads(json.dumps(exported)))
    assert plans(again) == plans(moby)
    assert export_docker(again) == exported


@needs_moby
def test_moby_through_profile_toml_round_trip():
    import tomllib

    import tomli_w
    moby = import_docker(MOBY)
    doc = policy_to_profile_toml(moby, base="untrusted")
    assert doc["extends"] == "untrusted"
    loaded = tomllib.loads(tomli_w.dumps(doc))
    policy, problems = parse_section(loaded["seccomp"], "x.toml")
    assert problems == [] and policy == moby


def test_export_reports_what_docker_cannot_say():
    warnings = []
    exported = export_docker(default_policy(), warnings)
    assert any(w.startswith("ioctl:") for w in warnings)
    names = {n for entry in exported["syscalls"] for n in entry["names"]}
    assert "ioctl" in names and "ptrace" not in names


@needs_moby
def test_default_allows_nothing_docker_forbids():
    """Every native call our default allows (even conditionally), Docker allows too."""
    moby = build_plan(import_docker(MOBY))
    ours = build_plan(default_policy())
    def allows(plan):
        return plan.fallback.kind == "allow" or any(a.kind == "allow" for _, a in plan.cases)
    extra = sorted(n for n, p in ours.items()
                   if syscalls.resolve(n) >= 0 and allows(p) and not (n in moby and allows(moby[n])))
    assert extra == []


@needs_moby
@x86_64_only
def test_moby_policy_on_the_kernel():
    outcomes = probe(compile_bpf(import_docker(MOBY), use_cache=False), [
        ("getpid", ()),
        ("read", (-1, 0, 0)),
        ("unshare", (0x04000000,)),                     # CLONE_NEWUTS
        ("mount", (0, 0, 0, 0, 0)),
        ("keyctl", (-1, 0, 0, 0, 0)),
        ("personality", (0x0040000,)),                  # ADDR_NO_RANDOMIZE: not in Docker's list
        ("personality", (0xFFFFFFFF,)),                 # the query: Docker allows it
        ("clone", (0x10000000 | 0x200, 0, 0, 0, 0)),    # CLONE_NEWUSER
        ("clone3", (0, 0)),
        ("socket", (40, 999, 0)),                       # AF_VSOCK
        ("socket", ((1 << 32) | 40, 999, 0)),           # ... with a high bit: Docker lets it through
        ("ptrace", (-1, 0, 0, 0)),                      # allowed by Docker on kernels >= 4.8
    ])
    got = [o.ret if o.ret >= 0 else errno.errorcode[o.errno] for o in outcomes]
    assert got[0] > 0
    assert got[1:] == ["EBADF", "EPERM", "EPERM", "EPERM", "EPERM", got[6], "EPERM", "ENOSYS",
                       "EPERM", "EINVAL", "ESRCH"]
    assert isinstance(got[6], int)


def test_import_rejects_garbage():
    with pytest.raises(ValueError):
        import_docker({"defaultAction": "SCMP_ACT_NOPE"})
    with pytest.raises(ValueError):
        import_docker({"defaultAction": "SCMP_ACT_ALLOW",
                       "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                     "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_LIKE"}]}]})
    with pytest.raises(ValueError):
        import_docker({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                       "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]})


def test_denylist_profile_and_export_of_masked_args():
    policy = SeccompPolicy("denylist", Action("allow"), (
        Rule(("ioctl",), Action("errno", 1), (ArgCondition(1, "masked_eq", 0x5412, 0xFFFFFFFF),)),
    ))
    exported = export_docker(policy)
    assert exported["syscalls"] == [{"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                                     "args": [{"index": 1, "value": 0xFFFFFFFF, "valueTwo": 0x5412,
                                               "op": "SCMP_CMP_MASKED_EQ"}]}]
    assert plans(import_docker(exported)) == plans(policy)
