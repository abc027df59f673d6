"""Human-readable rendering of a resolved policy, for `sandbox seccomp show`."""
from __future__ import annotations

import textwrap
from collections import defaultdict

import pyseccomp

from . import syscalls as _syscalls
from .compile import BAD_ARCH_ACTION
from .model import ACTION_PRECEDENCE, SeccompPolicy
from .plan import build_plan

_WIDTH = 96


def _wrapped(names, indent: str) -> str:
    return textwrap.fill(" ".join(names), _WIDTH, initial_indent=indent, subsequent_indent=indent)


def describe(policy: SeccompPolicy | None) -> str:
    if policy is None:
        return "Seccomp: unconfined (no filter is installed)"
    plans = build_plan(policy)
    native = _syscalls.native_arch()
    abis = ", ".join(native + " (native)" if a == "native" else a for a in policy.architectures)
    bad = "kill the process" if BAD_ARCH_ACTION == pyseccomp.KILL_PROCESS else "are denied"
    lines = [f'Seccomp policy "{policy.name}": {policy.mode}, default action {policy.default_action}',
             f"ABIs: {abis}; calls from any other ABI {bad}"]
    if policy.mode == "allowlist":
        lines.append(f"Syscalls newer than libseccomp {_syscalls.libseccomp_version()} "
                     f"(native number > {_syscalls.max_known_number()}): errno(ENOSYS)")

    by_action = defaultdict(list)
    conditional = {}
    for name, plan in sorted(plans.items()):
        if plan.cases:
            conditional[name] = plan
        else:
            by_action[plan.fallback].append(name)
    for action in sorted(by_action, key=lambda a: (ACTION_PRECEDENCE.index(a.kind) * -1, str(a))):
        names = by_action[action]
        note = ", named explicitly; also the default" if action == policy.default_action else ""
        lines += ["", f"{action} ({len(names)}{note}):", _wrapped(names, "  ")]
    if conditional:
        lines += ["", "Decided by arguments (a matching line decides, else 'otherwise'):"]
        for name, plan in conditional.items():
            for conditions, action in plan.cases:
                test = " and ".join(str(c) for c in conditions)
                lines.append(f"  {name:<12} {action} if {test}")
            lines.append(f"  {'':<12} otherwise {plan.fallback}")
    lines += ["", f"Everything else: {policy.default_action}"]
    return "\n".join(lines)


def groups_markdown() -> str:
    """The syscall-group table of docs/seccomp.md (regenerate with update_docs())."""
    from .groups import GROUPS
    rows = ["| Group | Purpose | Members |", "|---|---|---|"]
    for name, (purpose, members) in sorted(GROUPS.items()):
        rows.append(f"| `{name}` | {purpose} | {' '.join(members)} |")
    return "\n".join(rows)


GROUPS_BEGIN, GROUPS_END = "<!-- groups:begin -->", "<!-- groups:end -->"


def update_docs(path: str) -> None:
    """Rewrite the generated group table between the markers in ``path``."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    head, rest = text.split(GROUPS_BEGIN, 1)
    _, tail = rest.split(GROUPS_END, 1)
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{head}{GROUPS_BEGIN}\n{groups_markdown()}\n{GROUPS_END}{tail}")
