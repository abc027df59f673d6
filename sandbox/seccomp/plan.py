"""Resolve a policy's ordered rules into one decision per syscall.

compile, describe and evaluate all read this plan, so what the user is shown is
what the kernel runs.
"""
from __future__ import annotations

from dataclasses import field

from ..compiled_dataclass import dataclass
from . import groups
from .model import Action, ArgCondition, SeccompPolicy


@dataclass
class SyscallPlan:
    """``cases`` are checked first (any match decides); otherwise ``fallback``."""

    fallback: Action
    cases: list[tuple[tuple[ArgCondition, ...], Action]] = field(default_factory=list)
    explicit: bool = False  # some rule named this syscall (vs. only the default)

    def decide(self, args) -> Action:
        for conditions, action in self.cases:
            if all(c.matches(args) for c in conditions):
                return action
        return self.fallback


def build_plan(policy: SeccompPolicy) -> dict[str, SyscallPlan]:
    """syscall name -> plan, for every syscall some rule names."""
    plans: dict[str, SyscallPlan] = {}
    for rule in policy.rules:
        for name in groups.expand(rule.syscalls):
            plan = plans.setdefault(name, SyscallPlan(policy.default_action, explicit=True))
            if not rule.args:
                plan.fallback, plan.cases = rule.action, []
            else:
                plan.cases = [c for c in plan.cases if c[0] != rule.args]
                plan.cases.append((rule.args, rule.action))
    for plan in plans.values():
        # A case that repeats the fallback decides nothing: libseccomp would reject
        # it (same action as the default) or it is equivalent to falling through.
        plan.cases = [c for c in plan.cases if c[1] != plan.fallback]
    return plans


def evaluate(policy: SeccompPolicy | None, syscall: str, args=(0, 0, 0, 0, 0, 0)) -> Action:
    """The action the compiled filter takes for a native call (no overlap resolution)."""
    if policy is None:
        return Action("allow")
    args = tuple(args) + (0,) * (6 - len(args))
    plan = build_plan(policy).get(syscall)
    return plan.decide(args) if plan else policy.default_action
