"""The [seccomp] table of a profile: parse it into a SeccompPolicy, and back.

    [seccomp]
    policy = "default"            # "default" | "strict" | "unconfined" | "none" | path.toml | path.json
    mode = "allowlist"            # only with policy = "none"
    default_action = "errno(EPERM)"
    architectures = ["native"]
    allow = ["@basic-io", "ptrace"]
    deny = ["@mount"]
    deny_action = "errno(EPERM)"  # what `deny` does
    name = "my-policy"
    [[seccomp.rules]]
    syscalls = ["socket"]
    action = "errno(EAFNOSUPPORT)"
    args = [{ index = 0, op = "masked_eq", mask = 0xffffffff, value = 40 }]

Rules apply in this order: the base policy's, then `allow`, then `deny`, then
`rules`; later unconditional rules replace earlier ones for the same syscall.
The data classes live in model.py and are re-exported here.
"""
from __future__ import annotations

import os

from ..errors import Problem
from . import groups as _groups
from . import syscalls as _syscalls
from .model import (ALLOW, EPERM, MODES, OPS, U64_MAX, Action, ArgCondition, Rule,  # noqa: F401
                    SeccompPolicy, canonical_op)

BASE_NAMES = ("default", "strict", "unconfined", "none")
SECTION_KEYS = ("policy", "mode", "default_action", "architectures", "allow", "deny",
                "deny_action", "rules", "name")
RULE_KEYS = ("syscalls", "syscall", "action", "args", "comment")
ARG_KEYS = ("index", "op", "value", "mask")
_MAX_INCLUDE_DEPTH = 8

__all__ = ["Action", "ArgCondition", "Rule", "SeccompPolicy", "parse_section", "to_toml_dict",
           "builtin_policy"]


def builtin_policy(name: str) -> SeccompPolicy | None:
    """A built-in policy by name; None for "unconfined"; KeyError for anything else."""
    from .builtin import BUILTINS
    if name == "unconfined":
        return None
    return BUILTINS[name]()


class _Said(str):
    """A description of what was found (shown as is), as opposed to a user value (repr'd)."""


NOTHING = _Said("nothing")


class _Collector:
    """Accumulates problems with key paths relative to the section."""

    def __init__(self, file: str, key: str):
        self.file, self.key, self.problems = file, key, []

    def path(self, sub: str) -> str:
        if not sub:
            return self.key
        return f"{self.key}{sub}" if sub.startswith("[") else (f"{self.key}.{sub}" if self.key else sub)

    def add(self, sub: str, expected: str, found: object = _Said(""), hint: str = "") -> None:
        shown = found if isinstance(found, _Said) else _show(found)
        self.problems.append(Problem(self.file, self.path(sub), expected, shown, hint))

    def unknown_keys(self, table: dict, allowed, sub: str) -> None:
        for k in table:
            if k not in allowed:
                close = _close_matches(str(k), allowed)
                where = f"{sub}.{k}" if sub else str(k)
                self.add(where, "a known key", _Said(f"unknown key {k!r}"),
                         f"did you mean {close[0]!r}?" if close else "known keys: " + ", ".join(allowed))


def _close_matches(word: str, choices, cutoff: float = 0.6) -> list[str]:
    """The closest choice, for a "did you mean" hint (difflib is imported only on an error)."""
    import difflib
    return difflib.get_close_matches(word, choices, n=1, cutoff=cutoff)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _syscall_hint(name: str) -> str:
    if name.startswith("@"):
        close = _close_matches(name, list(_groups.GROUPS))
    else:
        close = _close_matches(name, list(_syscalls.native_table().values()))
    return f"did you mean {close[0]!r}?" if close else ""


def _names(out: _Collector, value, sub: str) -> tuple[str, ...]:
    """A list of syscall names and @groups, each checked."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        out.add(sub, "a list of syscall names or @groups", value)
        return ()
    good = []
    for i, name in enumerate(value):
        where = f"{sub}[{i}]"
        if not isinstance(name, str):
            out.add(where, "a syscall name or @group", name)
        elif name.startswith("@") and name not in _groups.GROUPS:
            out.add(where, "a known syscall group", name, _syscall_hint(name))
        elif not name.startswith("@") and not _syscalls.is_known(name):
            out.add(where, "a syscall name known to libseccomp " + _syscalls.libseccomp_version(),
                    name, _syscall_hint(name))
        else:
            good.append(name)
    return tuple(good)


def _action(out: _Collector, value, sub: str) -> Action | None:
    if not isinstance(value, str):
        out.add(sub, "an action string", value)
        return None
    try:
        return Action.parse(value)
    except ValueError as exc:
        out.add(sub, 'an action: "allow", "errno", "errno(EPERM)", "errno(38)", "kill-process", '
                     '"kill-thread", "trap", "log" or "notify"', value, str(exc))
        return None


def _u64(out: _Collector, value, sub: str) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        out.add(sub, "an integer", value)
        return None
    if value < 0:
        if value >= -(1 << 63):  # sign-extended like a C long would be
            return value & U64_MAX
        out.add(sub, "a 64-bit value", value)
        return None
    if value > U64_MAX:
        out.add(sub, "a 64-bit value", value)
        return None
    return value


def _arg(out: _Collector, table, sub: str) -> ArgCondition | None:
    if not isinstance(table, dict):
        out.add(sub, "a table { index, op, value, mask }", table)
        return None
    out.unknown_keys(table, ARG_KEYS, sub)
    index, op_text = table.get("index"), table.get("op", "eq")
    ok = True
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 5:
        out.add(f"{sub}.index", "an argument index 0..5", index if "index" in table else NOTHING)
        ok = False
    op = canonical_op(op_text) if isinstance(op_text, str) else None
    if op is None:
        close = _close_matches(str(op_text), OPS, cutoff=0.5)
        out.add(f"{sub}.op", "one of " + ", ".join(OPS), op_text,
                f"did you mean {close[0]!r}?" if close else "")
        ok = False
    if "value" not in table:
        out.add(f"{sub}.value", "a value to compare with", NOTHING)
        return None
    value = _u64(out, table["value"], f"{sub}.value")
    mask = None
    if op == "masked_eq":
        if "mask" not in table:
            out.add(f"{sub}.mask", "a mask for masked_eq", NOTHING)
            return None
        mask = _u64(out, table["mask"], f"{sub}.mask")
        if mask is None:
            return None
    elif "mask" in table and op is not None:
        out.add(f"{sub}.mask", 'no mask unless op = "masked_eq"', table["mask"])
        ok = False
    if not ok or value is None:
        return None
    return ArgCondition(index, op, value, mask)


def _rule(out: _Collector, table, sub: str) -> Rule | None:
    if not isinstance(table, dict):
        out.add(sub, "a table with syscalls, action and optional args", table)
        return None
    out.unknown_keys(table, RULE_KEYS, sub)
    if "syscalls" in table and "syscall" in table:
        out.add(f"{sub}.syscall", "either syscalls or syscall, not both", _Said("both"))
    key = "syscalls" if "syscalls" in table else "syscall"
    if key not in table:
        out.add(f"{sub}.syscalls", "a list of syscall names or @groups", NOTHING)
    before = len(out.problems)
    names = _names(out, table.get(key, []), f"{sub}.{key}")
    action = _action(out, table["action"], f"{sub}.action") if "action" in table else None
    if "action" not in table:
        out.add(f"{sub}.action", "an action", NOTHING)
    args_value = table.get("args", [])
    conditions = []
    if not isinstance(args_value, list) or len(args_value) > 6:
        out.add(f"{sub}.args", "a list of at most 6 argument conditions", args_value)
    else:
        seen = set()
        for i, item in enumerate(args_value):
            cond = _arg(out, item, f"{sub}.args[{i}]")
            if cond is None:
                continue
            if cond.index in seen:
                out.add(f"{sub}.args[{i}].index", "one condition per argument in a rule", cond.index,
                        "libseccomp cannot AND two tests of one argument; OR them as separate rules")
            seen.add(cond.index)
            conditions.append(cond)
    comment = table.get("comment", "")
    if not isinstance(comment, str):
        out.add(f"{sub}.comment", "a string", comment)
        comment = ""
    if len(out.problems) > before or action is None or not names:
        return None
    return Rule(names, action, tuple(conditions), comment)


def _architectures(out: _Collector, value) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        out.add("architectures", 'a non-empty list like ["native"]', value)
        return ("native",)
    result: list[str] = []
    for i, item in enumerate(value):
        arch = _syscalls.canonical_arch(item) if isinstance(item, str) else None
        if arch is None:
            choices = ["native", *_syscalls.ARCHES, *_syscalls.ARCH_ALIASES]
            close = _close_matches(str(item), choices)
            out.add(f"architectures[{i}]", "native or one of " + ", ".join(_syscalls.ARCHES), item,
                    f"did you mean {close[0]!r}?" if close else "")
        elif arch not in result:
            result.append(arch)
    return tuple(result) or ("native",)


def _base(out: _Collector, data: dict, depth: int) -> tuple[str, SeccompPolicy | None]:
    """(kind, policy) where kind is "builtin", "none", "file", "unconfined" or "bad"."""
    base = data.get("policy", "default")
    if not isinstance(base, str) or not base:
        out.add("policy", "a built-in policy name or a file path", base)
        return "bad", None
    if base == "unconfined":
        return "unconfined", None
    if base == "none":
        return "none", None
    if base in BASE_NAMES:
        return "builtin", builtin_policy(base)
    if base.endswith((".toml", ".json")) or os.sep in base:
        if depth >= _MAX_INCLUDE_DEPTH:
            out.add("policy", f"at most {_MAX_INCLUDE_DEPTH} nested policy files", base,
                    "is there a cycle?")
            return "bad", None
        from .sources import load_policy_file
        path = base if os.path.isabs(base) else os.path.join(os.path.dirname(out.file), base)
        policy, problems = load_policy_file(path, depth + 1)
        if problems:
            out.problems.extend(problems)
            return "bad", None
        if policy is None:
            return "unconfined", None
        return "file", policy
    close = _close_matches(base, BASE_NAMES)
    out.add("policy", "one of default, strict, unconfined, none, or a path to a .toml or .json policy",
            base, f"did you mean {close[0]!r}?" if close else "")
    return "bad", None


def parse_section(data: dict, file: str, key: str = "seccomp", *,
                  _depth: int = 0) -> tuple[SeccompPolicy | None, list[Problem]]:
    """Parse the final, merged [seccomp] table ``data`` of profile ``file``.

    Returns (policy, problems). Every problem found is reported, not just the
    first. The policy is None when there are problems or when the table asks for
    "unconfined" (no filter at all). An empty table means the "default" policy.
    """
    out = _Collector(file, key)
    if not isinstance(data, dict):
        out.add("", "a table", data)
        return None, out.problems
    out.unknown_keys(data, SECTION_KEYS, "")
    kind, base = _base(out, data, _depth)
    if kind == "unconfined":
        extra = [k for k in data if k != "policy"]
        if extra:
            out.add(extra[0], 'nothing else next to policy = "unconfined"', data[extra[0]],
                    "an unconfined sandbox has no filter to add rules to")
        return None, out.problems

    mode = "allowlist"
    if "mode" in data:
        if kind != "none":
            out.add("mode", 'mode only with policy = "none"', data["mode"],
                    "a base policy brings its own mode")
        elif data["mode"] not in MODES:
            out.add("mode", "allowlist or denylist", data["mode"])
        else:
            mode = data["mode"]
    if base is not None:
        mode = base.mode

    default = base.default_action if base else (EPERM if mode == "allowlist" else ALLOW)
    if "default_action" in data:
        parsed = _action(out, data["default_action"], "default_action")
        if parsed is not None:
            if mode == "allowlist" and parsed.kind == "allow":
                out.add("default_action", "a denying action for an allowlist policy", data["default_action"],
                        'use policy = "none" with mode = "denylist" for allow-by-default')
            elif mode == "denylist" and parsed.kind not in ("allow", "log"):
                out.add("default_action", '"allow" or "log" for a denylist policy', data["default_action"])
            else:
                default = parsed

    architectures = base.architectures if base else ("native",)
    if "architectures" in data:
        architectures = _architectures(out, data["architectures"])

    rules: list[Rule] = list(base.rules) if base else []
    if "allow" in data:
        names = _names(out, data["allow"], "allow")
        if names:
            rules.append(Rule(names, ALLOW, comment="allow list"))
    deny_action = EPERM
    if "deny_action" in data:
        deny_action = _action(out, data["deny_action"], "deny_action") or EPERM
        if deny_action.kind == "allow":
            out.add("deny_action", "an action that denies", data["deny_action"])
    if "deny" in data:
        names = _names(out, data["deny"], "deny")
        if names:
            rules.append(Rule(names, deny_action, comment="deny list"))
    if "rules" in data:
        if not isinstance(data["rules"], list):
            out.add("rules", "an array of tables ([[seccomp.rules]])", data["rules"])
        else:
            for i, table in enumerate(data["rules"]):
                rule = _rule(out, table, f"rules[{i}]")
                if rule is not None:
                    rules.append(rule)

    name = data.get("name")
    if name is not None and not isinstance(name, str):
        out.add("name", "a string", name)
        name = None
    if name is None:
        changed = base is None or any(k not in ("policy",) for k in data)
        name = (base.name if base else "custom") + (" (customized)" if base and changed else "")

    if out.problems or kind == "bad":
        return None, out.problems
    try:
        policy = SeccompPolicy(mode, default, tuple(rules), architectures, name)
    except ValueError as exc:  # guarded above; kept as a safety net
        out.add("", "a consistent policy", _Said(str(exc)))
        return None, out.problems
    return policy, out.problems


def _arg_dict(cond: ArgCondition) -> dict:
    out = {"index": cond.index, "op": cond.op, "value": cond.value}
    if cond.mask is not None:
        out["mask"] = cond.mask
    return out


def to_toml_dict(policy: SeccompPolicy | None, *, inline: bool = False) -> dict:
    """The [seccomp] table for ``policy``; parse_section() of it gives the policy back.

    A policy equal to a built-in one is written as ``policy = "<name>"`` unless
    ``inline`` is set; anything else is written inline with ``policy = "none"``.
    """
    if policy is None:
        return {"policy": "unconfined"}
    if not inline:
        try:
            if builtin_policy(policy.name) == policy:
                return {"policy": policy.name}
        except KeyError:
            pass
    rules = []
    for rule in policy.rules:
        entry = {"syscalls": list(rule.syscalls), "action": str(rule.action)}
        if rule.args:
            entry["args"] = [_arg_dict(c) for c in rule.args]
        if rule.comment:
            entry["comment"] = rule.comment
        rules.append(entry)
    return {"policy": "none", "name": policy.name, "mode": policy.mode,
            "default_action": str(policy.default_action),
            "architectures": list(policy.architectures), "rules": rules}
