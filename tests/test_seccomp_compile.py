"""Compilation: program layout, the exceptions chain, pfc output, and the on-disk cache."""
import os

import pytest

from sandbox.seccomp import (Action, ArgCondition, Rule, SeccompPolicy, compile_bpf, default_policy,
                             export_pfc, policy_digest, strict_policy)
from sandbox.seccomp import bpf as bpfmod
from sandbox.seccomp import compile as compmod


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    new_process()
    return tmp_path / "sandbox" / "seccomp"


def new_process():
    """Forget the programs this process keeps in memory, so the next compile reads the disk cache."""
    compmod._PROGRAMS.clear()


def test_program_shape():
    program = compile_bpf(default_policy(), use_cache=False)
    insns = bpfmod.instructions(program)
    assert 0 < len(insns) <= bpfmod.MAX_INSNS
    assert insns[0] == (bpfmod.BPF_LD_W_ABS, 0, 0, 4)  # prologue starts by checking the arch
    assert not any(code == bpfmod.BPF_RET_K and k == compmod._CONTINUE for code, _, _, k in insns)


def test_denylist_has_no_enosys_prologue():
    deny = SeccompPolicy("denylist", Action("allow"), (Rule(("mount",), Action("errno", 1)),))
    program = compile_bpf(deny, use_cache=False)
    assert program[: len(bpfmod.enosys_prologue(0, 0))] != bpfmod.enosys_prologue(
        __import__("pyseccomp").system_arch(), compmod._syscalls.max_known_number())


def test_chain_rewrites_only_the_continue_returns():
    first = bpfmod.assemble([(bpfmod.BPF_RET_K, 0, 0, 7), (bpfmod.BPF_RET_K, 0, 0, 9),
                             (bpfmod.BPF_RET_K, 0, 0, 7)])
    then = bpfmod.assemble([(bpfmod.BPF_RET_K, 0, 0, 1)])
    out = bpfmod.instructions(bpfmod.chain(first, then, 7))
    assert out == [(bpfmod.BPF_JMP_JA, 0, 0, 2), (bpfmod.BPF_RET_K, 0, 0, 9),
                   (bpfmod.BPF_JMP_JA, 0, 0, 0), (bpfmod.BPF_RET_K, 0, 0, 1)]
    with pytest.raises(ValueError):
        bpfmod.chain(bpfmod.assemble([(bpfmod.BPF_RET_A, 0, 0, 0)]), then, 7)


def test_export_pfc_shows_both_filters():
    text = export_pfc(default_policy())
    assert "exceptions" in text and "main filter" in text and "ERRNO(1)" in text
    only_main = export_pfc(SeccompPolicy("denylist", Action("allow"), (Rule(("mount",), Action("errno", 1)),)))
    assert "exceptions" not in only_main


def test_digest_ignores_names_and_comments_but_not_content():
    base = default_policy()
    renamed = SeccompPolicy(base.mode, base.default_action, base.rules, base.architectures, "other")
    assert policy_digest(renamed) == policy_digest(base)
    assert policy_digest(strict_policy()) != policy_digest(base)
    more = base.with_rules(Rule(("ptrace",), Action("allow")))
    assert policy_digest(more) != policy_digest(base)


def test_cache_hit_skips_libseccomp(cache, monkeypatch):
    program = compile_bpf(default_policy())
    entries = os.listdir(cache)
    assert entries == [policy_digest(default_policy()) + ".bpf"]  # no temp files left behind
    assert oct(os.stat(cache).st_mode & 0o777) == "0o700"

    def boom(policy):
        raise AssertionError("libseccomp was called on a cache hit")
    monkeypatch.setattr(compmod, "_build", boom)
    assert compile_bpf(default_policy()) == program  # from memory
    new_process()
    assert compile_bpf(default_policy()) == program  # from the disk cache


def test_a_policy_is_compiled_once_per_process(cache, monkeypatch):
    policy = SeccompPolicy("denylist", Action("allow"), (Rule(("mount",), Action("errno", 1)),))
    program = compile_bpf(policy)
    monkeypatch.setattr(compmod, "policy_digest", lambda p: pytest.fail("the disk cache was consulted"))
    assert compile_bpf(policy) == program
    monkeypatch.undo()
    key = id(policy)
    del policy
    assert key not in compmod._PROGRAMS  # forgotten with the policy


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_corrupt_cache_entry_is_rebuilt(cache, damage):
    program = compile_bpf(default_policy())
    path = cache / (policy_digest(default_policy()) + ".bpf")
    blob = path.read_bytes()
    path.write_bytes({"truncate": blob[:-5], "flip": blob[:-1] + bytes([blob[-1] ^ 1]),
                      "empty": b"", "garbage": b"x" * 100}[damage])
    new_process()
    assert compile_bpf(default_policy()) == program
    assert path.read_bytes() == blob


def test_untrusted_cache_dir_is_not_used(cache, monkeypatch):
    compile_bpf(default_policy())
    os.chmod(cache, 0o777)
    calls = []
    real = compmod._build
    monkeypatch.setattr(compmod, "_build", lambda p: calls.append(p) or real(p))
    new_process()
    compile_bpf(default_policy())
    assert calls, "a world-writable cache directory must not be trusted"
    os.chmod(cache, 0o700)


def test_unwritable_cache_is_not_an_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # a file where a directory should be
    assert compile_bpf(strict_policy())


def test_too_large_policy_is_refused():
    rules = tuple(Rule(("ioctl",), Action("errno", 1), (ArgCondition(1, "eq", n),)) for n in range(5000))
    with pytest.raises(ValueError, match="instructions"):
        compile_bpf(SeccompPolicy("denylist", Action("allow"), rules), use_cache=False)


def test_digest_follows_group_membership(monkeypatch):
    from sandbox.seccomp import groups
    before = policy_digest(default_policy())
    monkeypatch.setitem(groups.GROUPS, "@swap", ("changed", ("swapon",)))
    assert policy_digest(default_policy()) != before
