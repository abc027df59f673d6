"""The policy data model: frozen dataclasses with no I/O.

A SeccompPolicy is already flat and resolved: base policies, allow/deny lists and
rules of a profile have been turned into one ordered rule list. ``None`` in
place of a policy means "unconfined": no filter is installed at all.
"""
from __future__ import annotations

import errno as _errno
import re
from dataclasses import field


from ..compiled_dataclass import dataclass

ACTION_KINDS = ("allow", "errno", "kill-process", "kill-thread", "trap", "log", "notify")
_ACTION_ALIASES = {"kill": "kill-process"}
_ERRNO_RE = re.compile(r"^errno\s*\(\s*([A-Za-z0-9_]+)\s*\)$")

# Kernel precedence of filter results, most restrictive first (see seccomp(2)).
ACTION_PRECEDENCE = ("kill-process", "kill-thread", "trap", "errno", "notify", "log", "allow")

OPS = ("eq", "ne", "lt", "le", "gt", "ge", "masked_eq")
_OP_ALIASES = {"==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge", "&==": "masked_eq"}
# Operators -> the name of their libseccomp token; pyseccomp is imported only to compile a filter
# (sandbox/seccomp/syscalls.py says why).
_OP_TOKENS = {"eq": "EQ", "ne": "NE", "lt": "LT", "le": "LE", "gt": "GT", "ge": "GE", "masked_eq": "MASKED_EQ"}
_OP_SYMBOLS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}

U64_MAX = (1 << 64) - 1
MODES = ("allowlist", "denylist")


def errno_value(text: str) -> int:
    """'EPERM' or '38' -> number; ValueError when it is neither."""
    if text.isdigit():
        value = int(text)
        if not 0 <= value <= 4095:
            raise ValueError(f"errno {value} is out of range 0..4095")
        return value
    value = getattr(_errno, text.upper(), None)
    if not isinstance(value, int) or not text.upper().startswith("E"):
        raise ValueError(f"unknown errno name {text!r}")
    return value


def errno_name(value: int) -> str:
    return _errno.errorcode.get(value, str(value))


@dataclass(frozen=True)
class Action:
    """What the filter does with a matching call."""

    kind: str
    errno: int | None = None

    def __post_init__(self):
        if self.kind not in ACTION_KINDS:
            raise ValueError(f"unknown action kind {self.kind!r}")
        if (self.kind == "errno") != (self.errno is not None):
            raise ValueError("an errno action, and only it, carries an errno number")

    @classmethod
    def parse(cls, text: str) -> "Action":
        """'allow', 'errno' (EPERM), 'errno(EPERM)', 'errno(38)', 'kill', 'kill-process', ..."""
        raw = text.strip().lower()
        if raw == "errno":
            return cls("errno", _errno.EPERM)
        match = _ERRNO_RE.match(text.strip())
        if match:
            return cls("errno", errno_value(match.group(1)))
        raw = _ACTION_ALIASES.get(raw, raw)
        if raw in ACTION_KINDS and raw != "errno":
            return cls(raw)
        raise ValueError(f"unknown action {text!r}")

    def __str__(self) -> str:
        return f"errno({errno_name(self.errno)})" if self.kind == "errno" else self.kind

    @property
    def denies(self) -> bool:
        return self.kind not in ("allow", "log")

    def to_libseccomp(self) -> int:
        import pyseccomp
        return {
            "allow": pyseccomp.ALLOW, "kill-process": pyseccomp.KILL_PROCESS,
            "kill-thread": pyseccomp.KILL_THREAD, "trap": pyseccomp.TRAP,
            "log": pyseccomp.LOG, "notify": pyseccomp.NOTIFY,
        }.get(self.kind) if self.kind != "errno" else pyseccomp.ERRNO(self.errno)


ALLOW = Action("allow")
EPERM = Action("errno", _errno.EPERM)


def canonical_op(text: str) -> str | None:
    text = text.strip().lower()
    text = _OP_ALIASES.get(text, text)
    return text if text in OPS else None


@dataclass(frozen=True)
class ArgCondition:
    """Compare syscall argument ``index`` (0-5) with ``value``.

    masked_eq means ``(arg & mask) == value``. Comparisons are on the full 64-bit
    register; for an ``int`` argument the kernel looks at the low 32 bits only, so
    exact matches on such arguments should use masked_eq with mask 0xffffffff.
    """

    index: int
    op: str
    value: int
    mask: int | None = None

    def __post_init__(self):
        if not 0 <= self.index <= 5:
            raise ValueError("argument index must be 0..5")
        if self.op not in OPS:
            raise ValueError(f"unknown comparison {self.op!r}")
        if (self.op == "masked_eq") != (self.mask is not None):
            raise ValueError("masked_eq, and only it, takes a mask")
        for number in (self.value, self.mask or 0):
            if not 0 <= number <= U64_MAX:
                raise ValueError("values must fit in 64 bits unsigned")

    def to_libseccomp(self):  # -> pyseccomp.Arg
        import pyseccomp
        if self.op == "masked_eq":
            return pyseccomp.Arg(self.index, pyseccomp.MASKED_EQ, self.mask, self.value)
        return pyseccomp.Arg(self.index, getattr(pyseccomp, _OP_TOKENS[self.op]), self.value)

    def matches(self, args) -> bool:
        arg = args[self.index] & U64_MAX
        if self.op == "masked_eq":
            return arg & self.mask == self.value
        return {"eq": arg == self.value, "ne": arg != self.value, "lt": arg < self.value,
                "le": arg <= self.value, "gt": arg > self.value, "ge": arg >= self.value}[self.op]

    def __str__(self) -> str:
        if self.op == "masked_eq":
            return f"arg{self.index} & {self.mask:#x} == {self.value:#x}"
        return f"arg{self.index} {_OP_SYMBOLS[self.op]} {self.value:#x}"


@dataclass(frozen=True)
class Rule:
    """Apply ``action`` to ``syscalls`` (names or @groups) when all ``args`` hold."""

    syscalls: tuple[str, ...]
    action: Action
    args: tuple[ArgCondition, ...] = ()
    comment: str = field(default="", compare=False)

    def __post_init__(self):
        # Accept lists from callers but stay hashable and immutable.
        object.__setattr__(self, "syscalls", tuple(self.syscalls))
        object.__setattr__(self, "args", tuple(self.args))


@dataclass(frozen=True)
class SeccompPolicy:
    """A resolved policy.

    Rules apply in order, per syscall: a rule without ``args`` replaces everything
    earlier rules said about its syscalls; a rule with ``args`` adds a conditional
    case (an identical condition set replaces the earlier one). Calls that no
    conditional case matches get the syscall's unconditional action, or
    ``default_action``. Conditional cases of one syscall should not overlap with
    different actions: which one wins is up to libseccomp.

    ``architectures`` lists the ABIs the filter accepts; calls from any other ABI
    (i386 ``int 0x80`` or x32 on x86_64) kill the process.
    """

    mode: str
    default_action: Action
    rules: tuple[Rule, ...] = ()
    architectures: tuple[str, ...] = ("native",)
    name: str = "custom"

    def __post_init__(self):
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "architectures", tuple(self.architectures))
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if self.mode == "allowlist" and self.default_action.kind == "allow":
            raise ValueError("an allowlist must not allow by default")
        if self.mode == "denylist" and self.default_action.kind not in ("allow", "log"):
            raise ValueError("a denylist allows (or logs) by default")
        if not self.architectures:
            raise ValueError("at least one architecture is needed")

    def with_rules(self, *rules: Rule, name: str | None = None) -> "SeccompPolicy":
        return SeccompPolicy(self.mode, self.default_action, self.rules + tuple(rules),
                             self.architectures, name or self.name)
