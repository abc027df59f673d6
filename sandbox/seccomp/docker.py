"""Import and export Docker / OCI seccomp profiles (moby's JSON format).

Import follows moby and runc: ``archMap`` selects the native architecture and its
sub-architectures; a syscall entry applies only if its ``includes`` hold and its
``excludes`` do not (capabilities, architectures, minimum kernel); several
conditions on one argument index are OR-ed as separate rules; names libseccomp
does not know are skipped, as Docker skips them. SCMP_ACT_TRACE without a tracer
behaves as ENOSYS, so it is imported as errno(ENOSYS).

Export writes the resolved per-syscall decisions. A rule without arguments wins
over rules with arguments in libseccomp, so Docker's format has no "otherwise" for
one system call: "only these socket families, else EAFNOSUPPORT" is written as the
allowed families plus one EAFNOSUPPORT entry per other family (the domain is small
and known); a denial whose "otherwise" cannot be listed falls to the default
action; "allowed unless an argument matches" (ioctl without TIOCSTI) cannot be said
at all, so such exceptions are dropped. Each approximation is reported through
``warnings``.
"""
from __future__ import annotations

import errno as _errno
import json
import os
from collections import OrderedDict

from . import syscalls as _syscalls
from .model import Action, ArgCondition, Rule, SeccompPolicy
from .plan import build_plan
from .policy import to_toml_dict

_DOCKER_ACTIONS = {
    "SCMP_ACT_ALLOW": "allow", "SCMP_ACT_KILL": "kill-thread", "SCMP_ACT_KILL_THREAD": "kill-thread",
    "SCMP_ACT_KILL_PROCESS": "kill-process", "SCMP_ACT_TRAP": "trap", "SCMP_ACT_LOG": "log",
    "SCMP_ACT_NOTIFY": "notify",
}
_KIND_TO_DOCKER = {"allow": "SCMP_ACT_ALLOW", "kill-thread": "SCMP_ACT_KILL_THREAD",
                   "kill-process": "SCMP_ACT_KILL_PROCESS", "trap": "SCMP_ACT_TRAP",
                   "log": "SCMP_ACT_LOG", "notify": "SCMP_ACT_NOTIFY", "errno": "SCMP_ACT_ERRNO"}
_DOCKER_OPS = {"SCMP_CMP_NE": "ne", "SCMP_CMP_LT": "lt", "SCMP_CMP_LE": "le", "SCMP_CMP_EQ": "eq",
               "SCMP_CMP_GE": "ge", "SCMP_CMP_GT": "gt", "SCMP_CMP_MASKED_EQ": "masked_eq"}
_OP_TO_DOCKER = {v: k for k, v in _DOCKER_OPS.items()}
# Go's GOARCH names, used by moby's includes/excludes "arches".
_GO_ARCH = {"x86_64": "amd64", "x86": "386", "aarch64": "arm64", "arm": "arm", "x32": "x32",
            "riscv64": "riscv64", "ppc64le": "ppc64le", "s390x": "s390x", "s390": "s390"}


def _scmp_arch(name: str) -> str | None:
    """'SCMP_ARCH_X86_64' -> 'x86_64' (None if libseccomp here does not know it)."""
    raw = name.upper().removeprefix("SCMP_ARCH_").lower()
    return _syscalls.canonical_arch(raw)


def _to_scmp_arch(name: str) -> str:
    return "SCMP_ARCH_" + (_syscalls.native_arch() if name == "native" else name).upper()


def _kernel_at_least(minimum: str, release: str) -> bool:
    def parse(text: str) -> tuple[int, ...]:
        parts = []
        for piece in text.split("-")[0].split(".")[:3]:
            digits = "".join(ch for ch in piece if ch.isdigit())
            parts.append(int(digits or 0))
        return tuple(parts)
    return parse(release) >= parse(minimum)


def _action(name: str, errno_ret, default_errno: int = _errno.EPERM) -> Action:
    if name == "SCMP_ACT_ERRNO":
        return Action("errno", default_errno if errno_ret is None else int(errno_ret))
    if name == "SCMP_ACT_TRACE":
        return Action("errno", _errno.ENOSYS)  # no tracer attached: the kernel says ENOSYS
    if name not in _DOCKER_ACTIONS:
        raise ValueError(f"unknown seccomp action {name!r}")
    return Action(_DOCKER_ACTIONS[name])


def _condition(arg: dict) -> ArgCondition:
    op = _DOCKER_OPS.get(arg.get("op", ""))
    if op is None:
        raise ValueError(f"unknown comparison {arg.get('op')!r}")
    value, two = int(arg.get("value", 0)), int(arg.get("valueTwo", 0))
    if op == "masked_eq":  # OCI: value is the mask, valueTwo the expected result
        return ArgCondition(int(arg["index"]), op, two, value)
    return ArgCondition(int(arg["index"]), op, value)


def _applies(entry: dict, caps: frozenset, go_arch: str, kernel: str) -> bool:
    inc, exc = entry.get("includes") or {}, entry.get("excludes") or {}
    if exc.get("arches") and go_arch in exc["arches"]:
        return False
    if exc.get("caps") and any(c in caps for c in exc["caps"]):
        return False
    if exc.get("minKernel") and _kernel_at_least(exc["minKernel"], kernel):
        return False
    if inc.get("arches") and go_arch not in inc["arches"]:
        return False
    if inc.get("caps") and not all(c in caps for c in inc["caps"]):
        return False
    if inc.get("minKernel") and not _kernel_at_least(inc["minKernel"], kernel):
        return False
    return True


def _architectures(data: dict) -> tuple[str, ...]:
    if data.get("architectures") and data.get("archMap"):
        raise ValueError("a profile may set architectures or archMap, not both")
    native = _syscalls.native_arch()
    wanted: list[str] = []
    for name in data.get("architectures") or ():
        wanted.append(name)
    for entry in data.get("archMap") or ():
        if _scmp_arch(entry.get("architecture", "")) == native:
            wanted.append(entry["architecture"])
            wanted.extend(entry.get("subArchitectures") or ())
    result = []
    for name in wanted:
        arch = _scmp_arch(name)
        if arch is None:
            raise ValueError(f"unknown architecture {name!r}")
        arch = "native" if arch == native else arch
        if arch not in result:
            result.append(arch)
    if "native" in result:  # keep the native ABI first for readability
        result.remove("native")
        result.insert(0, "native")
    return tuple(result) or ("native",)


def _load(data) -> dict:
    if isinstance(data, (str, os.PathLike)):
        with open(data, encoding="utf-8") as f:
            return json.load(f)
    if not isinstance(data, dict):
        raise TypeError("expected a Docker profile as a dict or a path")
    return data


def import_docker(data, caps: frozenset = frozenset(), *, kernel: str | None = None,
                  name: str = "docker", skipped: list | None = None,
                  reasons: dict | None = None) -> SeccompPolicy:
    """A SeccompPolicy equivalent to what Docker would load for ``data``.

    ``caps`` is the container's capability set (default: none kept). ``kernel``
    overrides the running kernel's release for minKernel checks. Names libseccomp
    does not know are appended to ``skipped``, and ``reasons`` maps each to why
    (and what the imported policy does with such a call instead).
    """
    data = _load(data)
    kernel = kernel or os.uname().release
    go_arch = _GO_ARCH.get(_syscalls.native_arch(), _syscalls.native_arch())
    default_errno = int(data.get("defaultErrnoRet") or _errno.EPERM)
    default = _action(data.get("defaultAction", ""), data.get("defaultErrnoRet"), default_errno)
    rules: list[Rule] = []
    for entry in data.get("syscalls") or ():
        if not _applies(entry, frozenset(caps), go_arch, kernel):
            continue
        names = list(entry.get("names") or ()) + ([entry["name"]] if entry.get("name") else [])
        known = tuple(n for n in names if _syscalls.is_known(n))
        unknown = [n for n in names if n not in known]
        if skipped is not None:
            skipped.extend(unknown)
        if reasons is not None:
            for n in unknown:
                reasons[n] = _unknown_reason(n, default)
        if not known:
            continue
        action = _action(entry.get("action", ""), entry.get("errnoRet"))
        conditions = [_condition(a) for a in entry.get("args") or ()]
        comment = entry.get("comment", "")
        indexes = [c.index for c in conditions]
        if len(set(indexes)) < len(indexes):  # runc: repeated index -> OR of single conditions
            rules.extend(Rule(known, action, (c,), comment) for c in conditions)
        else:
            rules.append(Rule(known, action, tuple(conditions), comment))
    mode = "denylist" if default.kind in ("allow", "log") else "allowlist"
    return SeccompPolicy(mode, default, tuple(rules), _architectures(data), name)


def _unknown_reason(name: str, default: Action) -> str:
    """Why a name could not be imported, and what the policy does with the call instead."""
    version = _syscalls.libseccomp_version()
    if default.kind in ("allow", "log"):
        outcome = f"such calls get the default action, {default}"
    else:
        outcome = (f"calls numbered above {_syscalls.max_known_number()} (newer than libseccomp) get "
                   "ENOSYS from this allowlist, so programs fall back to older calls")
    return (f"unknown to libseccomp {version} (newer than it, or not a system call on this "
            f"architecture), so no rule can name it, and Docker skips it too; {outcome}")


def _docker_action(action: Action) -> dict:
    out = {"action": _KIND_TO_DOCKER[action.kind]}
    if action.kind == "errno":
        out["errnoRet"] = action.errno
    return out


def _docker_arg(cond: ArgCondition) -> dict:
    if cond.op == "masked_eq":
        return {"index": cond.index, "value": cond.mask, "valueTwo": cond.value,
                "op": "SCMP_CMP_MASKED_EQ"}
    return {"index": cond.index, "value": cond.value, "valueTwo": 0, "op": _OP_TO_DOCKER[cond.op]}


# Arguments whose every meaningful value is known, so "none of these" can be listed value by value:
# socket families (the kernel knows fewer than 64; it refuses larger ones with EAFNOSUPPORT itself).
_DOMAINS = {("socket", 0): range(64), ("socketpair", 0): range(64)}
_LOW32 = 0xFFFFFFFF


def _is_low32_eq(cond: ArgCondition, index: int | None = None) -> bool:
    return cond.op == "masked_eq" and cond.mask == _LOW32 and (index is None or cond.index == index)


def _complement(name: str, plan) -> tuple[list[tuple[ArgCondition, ...]], list[int]] | None:
    """Conditions that together match exactly the calls none of `plan`'s cases match, for a
    call whose cases all test one argument with a known domain (socket families); None when
    that cannot be said. Also returns the values only partly covered and not negatable."""
    for (syscall, index), domain in _DOMAINS.items():
        if syscall != name:
            continue
        tested: dict[int, list[tuple[ArgCondition, ...]]] = {}
        for conditions, _ in plan.cases:
            first = [c for c in conditions if c.index == index]
            if len(first) != 1 or not _is_low32_eq(first[0]):
                return None
            tested.setdefault(first[0].value, []).append(tuple(c for c in conditions if c.index != index))
        out: list[tuple[ArgCondition, ...]] = []
        partial: list[int] = []
        for value in domain:
            rest = tested.get(value)
            key = ArgCondition(index, "masked_eq", value, _LOW32)
            if rest is None:
                out.append((key,))
            elif () in rest:
                continue  # this value is decided outright by a case
            elif len(rest) == 1 and len(rest[0]) == 1 and _is_low32_eq(rest[0][0]):
                # e.g. AF_NETLINK only with NETLINK_ROUTE: refuse the other protocols. The NE test
                # sees 64 bits, so a protocol with high bits set may match both: either outcome
                # refuses a call or allows NETLINK_ROUTE, which the kernel would see.
                other = rest[0][0]
                out.append((key, ArgCondition(other.index, "ne", other.value)))
            else:
                partial.append(value)
        return out, partial
    return None


def export_docker(policy: SeccompPolicy, warnings: list | None = None) -> dict:
    """A Docker/OCI profile with the same per-syscall decisions (see module doc for limits)."""
    if policy.default_action.kind == "notify":
        raise ValueError("Docker profiles cannot notify by default")
    default = policy.default_action
    out: dict = {"defaultAction": _KIND_TO_DOCKER[default.kind]}
    if default.kind == "errno":
        out["defaultErrnoRet"] = default.errno
    out["architectures"] = [_to_scmp_arch(a) for a in policy.architectures]
    warn = warnings.append if warnings is not None else (lambda _text: None)
    # Group syscalls that share (action, conditions) into one entry, as Docker does.
    entries: OrderedDict = OrderedDict()
    for name, plan in sorted(build_plan(policy).items()):
        if plan.fallback == default or not plan.cases:
            if plan.fallback != default:
                entries.setdefault((plan.fallback, ()), []).append(name)
            for conditions, action in plan.cases:
                entries.setdefault((action, conditions), []).append(name)
            continue
        # Docker's format has no "otherwise" per syscall: a rule without arguments wins over every
        # rule with arguments (libseccomp), so "allowed only for these families, else EAFNOSUPPORT"
        # must list what the cases do and then what everything else gets, case by case.
        complement = _complement(name, plan) if plan.fallback.denies else None
        if complement is not None and (default.denies or not complement[1]):
            conditions_list, partial = complement
            for conditions, action in plan.cases:
                entries.setdefault((action, conditions), []).append(name)
            for conditions in conditions_list:
                entries.setdefault((plan.fallback, conditions), []).append(name)
            if partial:
                warn(f"{name}: calls with arg0 in {partial} that no rule allows get the default action "
                     f"{default} instead of {plan.fallback}")
        elif plan.fallback.denies and default.denies:
            for conditions, action in plan.cases:
                entries.setdefault((action, conditions), []).append(name)
            warn(f"{name}: the calls the argument rules do not allow get the default action {default} "
                 f"instead of {plan.fallback}: Docker's format cannot say \"otherwise\" for one system call")
        else:
            # Allowed unless an argument matches (ioctl without TIOCSTI), or a denial that only a
            # list of every other value could keep: the unconditional action, the exceptions lost.
            entries.setdefault((plan.fallback, ()), []).append(name)
            warn(f"{name}: argument exceptions to {plan.fallback} cannot be expressed in a Docker "
                 f"profile and were dropped")
    out["syscalls"] = [
        {"names": names, **_docker_action(action),
         **({"args": [_docker_arg(c) for c in conditions]} if conditions else {})}
        for (action, conditions), names in entries.items()
    ]
    return out


def policy_to_profile_toml(policy: SeccompPolicy | None, base: str = "untrusted") -> dict:
    """A profile document extending ``base`` whose [seccomp] table is ``policy``, inline."""
    return {"extends": base, "seccomp": to_toml_dict(policy, inline=True)}
