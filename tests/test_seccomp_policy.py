"""The policy model and the [seccomp] table: parsing, problems, round trips, groups."""
import errno
import json

import pytest

from sandbox.errors import Problem
from sandbox.seccomp import (GROUPS, Action, ArgCondition, Rule, SeccompPolicy, default_policy,
                             describe, evaluate, expand, parse_section, strict_policy, to_toml_dict)
from sandbox.seccomp import syscalls
from sandbox.seccomp.groups import expand_group, members


# --- actions and conditions -------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("allow", Action("allow")),
    ("errno", Action("errno", errno.EPERM)),
    ("errno(EPERM)", Action("errno", errno.EPERM)),
    ("errno( eacces )", Action("errno", errno.EACCES)),
    ("errno(38)", Action("errno", 38)),
    ("kill", Action("kill-process")),
    ("kill-process", Action("kill-process")),
    ("kill-thread", Action("kill-thread")),
    ("trap", Action("trap")),
    ("log", Action("log")),
    ("notify", Action("notify")),
])
def test_action_parse(text, expected):
    assert Action.parse(text) == expected
    assert Action.parse(str(expected)) == expected  # the canonical form parses back


@pytest.mark.parametrize("text", ["deny", "errno(EFOO)", "errno(5000)", "errno()", "ERRNO(ENOSYS", ""])
def test_action_parse_rejects(text):
    with pytest.raises(ValueError):
        Action.parse(text)


def test_action_str_uses_errno_names():
    assert str(Action("errno", 38)) == "errno(ENOSYS)"
    assert str(Action("errno", 4000)) == "errno(4000)"


def test_arg_condition_validation_and_matching():
    cond = ArgCondition(1, "masked_eq", 0x5412, 0xFFFFFFFF)
    assert cond.matches((0, 0x1_0000_5412)) and not cond.matches((0, 0x5413))
    assert ArgCondition(0, "gt", 5).matches((6,)) and not ArgCondition(0, "gt", 5).matches((5,))
    for bad in [dict(index=6, op="eq", value=0), dict(index=0, op="like", value=0),
                dict(index=0, op="masked_eq", value=0), dict(index=0, op="eq", value=1, mask=1),
                dict(index=0, op="eq", value=1 << 64)]:
        with pytest.raises(ValueError):
            ArgCondition(**bad)


def test_policy_mode_must_match_default_action():
    with pytest.raises(ValueError):
        SeccompPolicy("allowlist", Action("allow"))
    with pytest.raises(ValueError):
        SeccompPolicy("denylist", Action("errno", 1))


def test_evaluate_follows_rule_order():
    policy = SeccompPolicy("allowlist", Action("errno", 1), (
        Rule(("@basic-io",), Action("allow")),
        Rule(("write",), Action("errno", 5)),                    # replaces the allow
        Rule(("read",), Action("errno", 7), (ArgCondition(0, "eq", 3),)),
    ))
    assert evaluate(policy, "close") == Action("allow")
    assert evaluate(policy, "write") == Action("errno", 5)
    assert evaluate(policy, "read", (3,)) == Action("errno", 7)
    assert evaluate(policy, "read", (4,)) == Action("allow")
    assert evaluate(policy, "mount") == Action("errno", 1)
    assert evaluate(None, "mount") == Action("allow")


# --- groups -------------------------------------------------------------------------

def test_every_group_member_is_known_here():
    for group, (_, names) in GROUPS.items():
        for name in names:
            if name.startswith("@"):
                assert name in GROUPS, (group, name)
            else:
                assert syscalls.is_known(name), (group, name)


def test_required_groups_exist():
    for name in ["@mount", "@privileged", "@keyring", "@namespaces", "@debug", "@module", "@raw-io",
                 "@clock", "@reboot", "@swap", "@obsolete", "@cpu-emulation", "@basic-io",
                 "@file-system", "@network-io", "@process", "@signal", "@ipc", "@memory", "@timer",
                 "@system-service", "@default"]:
        assert name in GROUPS


def test_groups_expand_recursively():
    assert "mount" in expand_group("@mount")
    assert expand_group("@clock") <= expand_group("@privileged")
    assert "@chown" in members("@privileged")
    assert expand(["@swap", "read", "swapon"]) == ["swapoff", "swapon", "read"]
    assert expand(["not_a_syscall"]) == []


# --- parse_section ------------------------------------------------------------------

def parse(table, file="/p/profile.toml"):
    return parse_section(table, file)


def test_empty_table_is_the_default_policy():
    policy, problems = parse({})
    assert problems == [] and policy == default_policy()


def test_builtin_names():
    assert parse({"policy": "strict"})[0] == strict_policy()
    assert parse({"policy": "unconfined"}) == (None, [])


def test_allow_deny_and_rules_apply_in_order():
    policy, problems = parse({
        "policy": "default", "allow": ["ptrace", "@mount"], "deny": ["mount"],
        "default_action": "kill", "deny_action": "errno(EACCES)",
        "rules": [{"syscalls": ["socket"], "action": "errno(ENOSYS)",
                   "args": [{"index": 0, "op": "masked_eq", "mask": 0xFFFFFFFF, "value": 10}]}],
    })
    assert problems == []
    assert policy.name == "default (customized)"
    assert policy.default_action == Action("kill-process")
    assert evaluate(policy, "ptrace") == Action("allow")
    assert evaluate(policy, "umount2") == Action("allow")
    assert evaluate(policy, "mount") == Action("errno", errno.EACCES)
    assert evaluate(policy, "socket", (10,)) == Action("errno", errno.ENOSYS)
    assert evaluate(policy, "socket", (2,)) == Action("allow")
    assert evaluate(policy, "unshare") == Action("errno", errno.EPERM)  # the base's explicit rule


def test_inline_policy_from_nothing():
    policy, problems = parse({"policy": "none", "mode": "denylist", "name": "mine",
                              "deny": ["@mount"], "architectures": ["amd64", "i386"]})
    assert problems == []
    assert policy == SeccompPolicy("denylist", Action("allow"),
                                   (Rule(("@mount",), Action("errno", 1)),), ("x86_64", "x86"), "mine")


def keys(problems):
    return [p.key for p in problems]


def test_all_problems_are_collected_with_paths_and_hints():
    policy, problems = parse({
        "policy": "default",
        "alow": ["read"],
        "deny": ["mount", "sokcet", "@mounts", 3],
        "default_action": "allow",
        "architectures": ["x86_46"],
        "rules": [
            {"syscalls": ["read"], "action": "errno(ENOSYS)"},
            {"syscall": "read", "action": "deny"},
            {"syscalls": ["socket"], "action": "allow",
             "args": [{"index": 7, "op": "eq", "value": 1}, {"index": 0, "op": "equal", "value": 1},
                      {"index": 1, "op": "masked_eq", "value": 1}, {"index": 2, "op": "eq"},
                      {"index": 3, "op": "eq", "value": 1, "mask": 3}, {"index": 4, "value": "x"}]},
            {"syscalls": ["read"], "action": "allow", "args": [{"index": 0, "value": 1},
                                                              {"index": 0, "op": "gt", "value": 5}]},
            {"syscals": ["read"]},
            "nope",
        ],
    })
    assert policy is None
    assert all(isinstance(p, Problem) and p.file == "/p/profile.toml" for p in problems)
    by_key = {p.key: p for p in problems}
    assert "did you mean 'allow'" in by_key["seccomp.alow"].hint
    assert "did you mean 'socket'" in by_key["seccomp.deny[1]"].hint
    assert "did you mean '@mount'" in by_key["seccomp.deny[2]"].hint
    assert "seccomp.deny[3]" in by_key
    assert "seccomp.default_action" in by_key
    assert "x86_64" in by_key["seccomp.architectures[0]"].hint
    assert "seccomp.rules[1].action" in by_key
    assert "seccomp.rules[2].args[0].index" in by_key
    assert "did you mean 'eq'" in by_key["seccomp.rules[2].args[1].op"].hint
    assert "seccomp.rules[2].args[2].mask" in by_key
    assert "seccomp.rules[2].args[3].value" in by_key
    assert "seccomp.rules[2].args[4].mask" in by_key
    assert "seccomp.rules[2].args[5].value" in by_key
    assert "seccomp.rules[3].args[1].index" in by_key
    assert "did you mean 'syscalls'" in by_key["seccomp.rules[4].syscals"].hint
    assert "seccomp.rules[4].action" in by_key
    assert "seccomp.rules[5]" in by_key
    assert "found 'sokcet'" in str(by_key["seccomp.deny[1]"])


def test_policy_name_problems():
    _, problems = parse({"policy": "defualt"})
    assert keys(problems) == ["seccomp.policy"] and "did you mean 'default'" in problems[0].hint
    _, problems = parse({"policy": "unconfined", "deny": ["mount"]})
    assert keys(problems) == ["seccomp.deny"]
    _, problems = parse({"policy": "default", "mode": "denylist"})
    assert keys(problems) == ["seccomp.mode"]
    _, problems = parse({"policy": "none", "mode": "denylist", "default_action": "errno"})
    assert keys(problems) == ["seccomp.default_action"]


def test_custom_key_prefix():
    _, problems = parse_section({"deny": ["nope_nope"]}, "f.toml", key="profile.seccomp")
    assert keys(problems) == ["profile.seccomp.deny[0]"]


def test_policy_files_relative_to_the_profile(tmp_path):
    (tmp_path / "base.toml").write_text('[seccomp]\npolicy = "strict"\nallow = ["ptrace"]\n')
    (tmp_path / "flat.toml").write_text('policy = "none"\nmode = "denylist"\ndeny = ["@swap"]\n')
    (tmp_path / "docker.json").write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]}))
    (tmp_path / "loop.toml").write_text('policy = "loop.toml"\n')
    (tmp_path / "bad.toml").write_text('policy = "none"\ndeny = ["mountt"]\n')
    profile = str(tmp_path / "profile.toml")

    policy, problems = parse_section({"policy": "base.toml", "deny": ["read"]}, profile)
    assert problems == []
    assert evaluate(policy, "ptrace") == Action("allow")
    assert evaluate(policy, "read") == Action("errno", 1)
    assert evaluate(policy, "socket", (10,)) == Action("errno", errno.EAFNOSUPPORT)  # strict's rule

    assert evaluate(parse_section({"policy": "flat.toml"}, profile)[0], "swapon") == Action("errno", 1)
    policy, problems = parse_section({"policy": "./docker.json"}, profile)
    assert problems == [] and evaluate(policy, "write") == Action("allow")

    _, problems = parse_section({"policy": "loop.toml"}, profile)
    assert problems and "cycle" in problems[0].hint
    _, problems = parse_section({"policy": "bad.toml"}, profile)
    assert [(p.file, p.key) for p in problems] == [(str(tmp_path / "bad.toml"), "deny[0]")]
    _, problems = parse_section({"policy": "missing.json"}, profile)
    assert problems and problems[0].file.endswith("missing.json")


# --- to_toml_dict ---------------------------------------------------------------------

def test_builtins_serialize_by_name():
    assert to_toml_dict(default_policy()) == {"policy": "default"}
    assert to_toml_dict(strict_policy()) == {"policy": "strict"}
    assert to_toml_dict(None) == {"policy": "unconfined"}


@pytest.mark.parametrize("table", [
    {"policy": "default", "allow": ["ptrace"], "deny": ["@network-io"]},
    {"policy": "strict", "default_action": "kill", "architectures": ["native", "x86"]},
    {"policy": "none", "mode": "denylist", "default_action": "log", "rules": [
        {"syscalls": ["ioctl"], "action": "errno(ENOTTY)",
         "args": [{"index": 1, "op": "masked_eq", "mask": 0xFFFFFFFF, "value": 0x5412}]},
        {"syscalls": ["kill"], "action": "trap", "args": [{"index": 1, "op": "ge", "value": 9}],
         "comment": "why"}]},
])
def test_round_trip_through_toml(table):
    import tomllib

    import tomli_w
    policy, problems = parse(table)
    assert problems == []
    dumped = to_toml_dict(policy)
    text = tomli_w.dumps({"seccomp": dumped})
    again, problems = parse(tomllib.loads(text)["seccomp"])
    assert problems == [] and again == policy
    assert to_toml_dict(default_policy(), inline=True)["policy"] == "none"
    assert parse(to_toml_dict(default_policy(), inline=True))[0] == default_policy()


def test_describe_mentions_the_decisions():
    text = describe(default_policy())
    assert 'policy "default"' in text and "clone3" in text and "otherwise errno(EAFNOSUPPORT)" in text
    assert "ptrace" in text  # named explicitly, shown though it equals the default
    assert describe(None).startswith("Seccomp: unconfined")


def test_docs_group_table_is_current():
    from pathlib import Path

    from sandbox.seccomp.describe import groups_markdown
    doc = Path(__file__).resolve().parent.parent / "docs" / "seccomp.md"
    assert groups_markdown() in doc.read_text(), "run sandbox.seccomp.describe.update_docs()"
