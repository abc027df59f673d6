"""A policy rewritten so that Docker's and OCI's seccomp format can say more of it, before the
Docker exporter (`seccomp.export_docker`) writes it.

That format has no "allowed unless": a rule without arguments wins over every rule with arguments
in libseccomp. The default policy says "chmod allowed unless the mode has S_ISUID or S_ISGID" and
"openat allowed unless it creates a file (O_CREAT or O_TMPFILE) with such a mode". When every
exception of a call tests single bits being set, the complement is a short list of "these bits
clear" rules: (arg & bits) == 0, one masked_eq per argument. So the call becomes "denied (as the
exceptions were) unless one of these holds", which the format says exactly:

    chmod:   allowed unless arg1 has 04000, or arg1 has 02000
          =  EPERM unless (arg1 & 06000) == 0
    openat:  allowed unless (arg2 has O_CREAT and arg3 has 04000) or ... (four cases)
          =  EPERM unless (arg2 & (O_CREAT|O_TMPFILE)) == 0, or (arg3 & 06000) == 0

Exceptions that test whole values (ioctl TIOCSTI, prctl options) have no such complement and
still reach the exporter, which drops them with a warning. The rewritten policy is equivalent:
`tests/test_export_oci.py` checks it call by call against the original.
"""
from __future__ import annotations

import itertools

from ..seccomp.model import ALLOW, ArgCondition, Rule, SeccompPolicy
from ..seccomp.plan import build_plan

MAX_TERMS = 16  # beyond this the rule list would be long; leave such calls to the exporter's warning


def _single_bit_set(condition: ArgCondition) -> bool:
    mask = condition.mask or 0
    return condition.op == "masked_eq" and mask == condition.value and mask and mask & (mask - 1) == 0


def _complement(cases) -> list[tuple[ArgCondition, ...]] | None:
    """Conjunctions (as masked_eq == 0 per argument) matching exactly the calls no case matches;
    None when a case tests something other than single bits being set."""
    clauses = []
    for conditions, _ in cases:
        if not conditions or not all(_single_bit_set(c) for c in conditions):
            return None
        clauses.append([(c.index, c.mask) for c in conditions])
    # Not (OR of ANDs) = AND of ORs of "bit clear": expand to terms, one choice per clause.
    terms: list[dict[int, int]] = []
    for choice in itertools.product(*clauses):
        term: dict[int, int] = {}
        for index, bit in choice:
            term[index] = term.get(index, 0) | bit
        terms.append(term)
    # Absorption: a term needing more clear bits than another is implied by it.
    minimal = []
    for term in sorted(terms, key=lambda t: (len(t), sum(bin(b).count("1") for b in t.values()))):
        if any(all(index in term and term[index] & bits == bits for index, bits in kept.items())
               for kept in minimal):
            continue
        minimal.append(term)
    if len(minimal) > MAX_TERMS:
        return None
    return [tuple(ArgCondition(index, "masked_eq", 0, bits) for index, bits in sorted(term.items()))
            for term in minimal]


def expressible(policy: SeccompPolicy) -> tuple[SeccompPolicy, list[str]]:
    """The policy with each "allowed unless these bits are set" call turned around; and the names
    of the calls rewritten."""
    rules: list[Rule] = []
    rewritten = []
    for name, plan in sorted(build_plan(policy).items()):
        if plan.fallback != ALLOW or not plan.cases:
            continue
        actions = {action for _, action in plan.cases}
        if len(actions) != 1 or not next(iter(actions)).denies:
            continue
        allowed = _complement(plan.cases)
        if allowed is None:
            continue
        denial = next(iter(actions))
        rules.append(Rule((name,), denial, comment="exceptions turned around for export"))
        rules += [Rule((name,), ALLOW, term) for term in allowed]
        rewritten.append(name)
    if not rules:
        return policy, []
    return policy.with_rules(*rules, name=policy.name), rewritten
