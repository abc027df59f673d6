"""`sandbox lint`: every relaxation of the secure defaults, and risky choices, made visible and scored.

Every finding has a stable id from CATALOGUE (SBX-<AREA>-<NNN>: the id never changes meaning and is
never reused, so CI suppressions and dashboards keep working across versions), a severity and a
weight. Relaxations are found generically: any key whose model field says what it `relaxes` and
whose value differs from the default is reported under the id RELAXATION_IDS gives its key.
Specific checks add what a reviewer would flag by hand.

To add a finding: add a Check to CATALOGUE (the next free number of its area; a new area gets a new
prefix), yield `finding(ID, key, message)` from a check function listed in CHECKS, and run
scripts/gen-docs (the table in docs/lint.md is generated from CATALOGUE).

The exposure score (`sandbox lint --score`) is 10 * (1 - prod(1 - w/10)) over the distinct ids
found, w being each id's weight (0-10): one finding of weight w scores w, more findings only add,
the score never passes 10, and repeating a finding (five rw binds) counts its id once.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Callable, Iterator

from . import sources
from .compiled_dataclass import dataclass
from .profile.model import Profile

SEVERITIES = ("info", "warning", "danger")
DANGEROUS_CAPS = {"CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_PTRACE", "CAP_SYS_RAWIO", "CAP_DAC_READ_SEARCH",
                  "CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON", "CAP_SYS_BOOT", "CAP_MAC_ADMIN", "CAP_SYS_TIME",
                  "CAP_SETFCAP", "CAP_MKNOD", "CAP_CHECKPOINT_RESTORE", "CAP_SYSLOG"}
SECRET_HINTS = ("TOKEN", "SECRET", "PASSWORD", "KEY", "AWS_", "GITHUB_", "SSH_AUTH_SOCK", "CREDENTIAL")


@dataclass(frozen=True)
class Check:
    """One kind of finding: its stable id, severity, weight in the score (0-10) and title."""

    id: str
    severity: str
    weight: float
    title: str


CATALOGUE: dict[str, Check] = {check.id: check for check in (
    # Namespaces: the key's generic relaxation (namespaces.X = false)
    Check("SBX-NS-001", "warning", 6.0, "no user namespace: ids and capabilities are the host's"),
    Check("SBX-NS-002", "warning", 6.0, "no mount namespace: the host's file system and mount table"),
    Check("SBX-NS-003", "warning", 4.0, "no pid namespace: host processes visible and signalable"),
    Check("SBX-NS-004", "warning", 3.0, "no network namespace: the host's network stack"),
    Check("SBX-NS-005", "warning", 1.5, "no IPC namespace: host SysV IPC and POSIX queues"),
    Check("SBX-NS-006", "warning", 0.5, "no UTS namespace"),
    Check("SBX-NS-007", "warning", 0.5, "no cgroup namespace"),
    Check("SBX-NS-008", "warning", 0.3, "no time namespace"),
    # Network (docs/network.md)
    Check("SBX-NET-001", "warning", 5.0, "network.mode = \"host\": the host's stack, its loopback services, the internet"),
    Check("SBX-NET-002", "warning", 0.5, "network.mode = \"bridge\": an interface on a segment"),
    Check("SBX-NET-003", "warning", 1.0, "a named segment: the other sandboxes on it reach this one"),
    Check("SBX-NET-004", "warning", 2.0, "egress to destinations outside the segment"),
    Check("SBX-NET-005", "danger", 5.0, "egress to anywhere, on every port"),
    Check("SBX-NET-006", "warning", 3.0, "egress to any destination on some ports"),
    Check("SBX-NET-007", "danger", 5.0, "egress reaches link-local addresses (cloud metadata services)"),
    Check("SBX-NET-008", "warning", 2.0, "egress to a wide network"),
    Check("SBX-NET-009", "warning", 1.0, "ports published on the host"),
    Check("SBX-NET-010", "danger", 4.0, "a port published on every host address"),
    Check("SBX-NET-011", "warning", 2.0, "a port published on a host address other than loopback"),
    Check("SBX-NET-012", "info", 0.0, "a bridge-only network key that has no effect"),
    # File system
    Check("SBX-FS-001", "warning", 1.5, "the root is writable (readonly_root = false)"),
    Check("SBX-FS-002", "warning", 3.0, "extra devices (fuse, net/tun, kvm)"),
    Check("SBX-FS-003", "warning", 1.5, "the host's /sys is bound"),
    Check("SBX-FS-004", "warning", 1.5, "a read-write bind of a host path"),
    Check("SBX-FS-005", "danger", 8.0, "a system path is bound read-write (allow_system_path = true)"),
    Check("SBX-FS-006", "danger", 9.5, "a container engine socket is bound (allow_system_path = true; host root)"),
    Check("SBX-FS-007", "info", 1.0, "a host directory is the root"),
    Check("SBX-FS-008", "danger", 0.0, "a system path bound read-write, or an engine socket bound, without "
                                       "allow_system_path: the launch refuses it"),
    Check("SBX-FS-009", "warning", 0.0, "idmap = \"yes\" on a source root owns: a root launch refuses it"),
    # No exposure: the sandbox only writes where its own unprivileged host uid may.
    Check("SBX-FS-010", "info", 0.0, "a source root owns is bound read-write without an id mapping"),
    # The key itself; what it lets through is SBX-FS-005 or SBX-FS-006, which carry the weight.
    Check("SBX-FS-011", "warning", 0.0, "allow_system_path = true on a mount"),
    # Capabilities
    Check("SBX-CAP-001", "warning", 2.0, "capabilities kept"),
    Check("SBX-CAP-002", "danger", 7.0, "a capability broad enough to weaken the sandbox is kept"),
    # Seccomp
    Check("SBX-SC-001", "danger", 6.0, "no system call filter"),
    Check("SBX-SC-002", "warning", 2.0, "a denylist system call policy"),
    Check("SBX-SC-003", "danger", 6.0, "a dangerous system call the default policy denies is allowed"),
    Check("SBX-SC-004", "warning", 2.0, "a system call the default policy denies is allowed"),
    Check("SBX-SC-005", "danger", 5.0, "an argument rule of the default policy is removed or widened (risky)"),
    Check("SBX-SC-006", "warning", 1.5, "an argument rule of the default policy is removed or widened"),
    Check("SBX-SC-007", "danger", 5.0, "a foreign system call ABI a native process can enter is accepted"),
    Check("SBX-SC-008", "warning", 1.0, "another architecture's system calls are accepted"),
    Check("SBX-SC-009", "danger", 6.0, "calls the policy does not name are allowed (default action)"),
    # Landlock
    Check("SBX-LL-001", "warning", 1.5, "Landlock is off"),
    # Process
    Check("SBX-PROC-001", "warning", 2.0, "the workload shares the caller's session (TIOCSTI)"),
    Check("SBX-PROC-002", "info", 0.5, "the workload is root inside its user namespace"),
    Check("SBX-PROC-003", "warning", 1.0, "host environment variables passed through"),
    # Limits
    Check("SBX-LIM-001", "warning", 1.5, "no memory limit"),
    Check("SBX-LIM-002", "warning", 1.5, "no process limit"),
    Check("SBX-LIM-003", "info", 0.3, "no wall-clock limit"),
    # Audit
    Check("SBX-AUD-001", "warning", 1.0, "launches are not audited"),
    # Credentials
    Check("SBX-CRED-001", "warning", 2.0, "env_passthrough may carry credentials"),
    Check("SBX-CRED-002", "warning", 2.0, "an env variable's name says it is a credential"),
    Check("SBX-CRED-003", "warning", 2.0, "an env variable's value looks like a credential"),
    # Executables
    Check("SBX-EXEC-001", "info", 0.5, "no [exec] allow list on an untrusted-class profile"),
    Check("SBX-EXEC-002", "info", 0.3, "the exec allow list names a program that runs any code it reads"),
    Check("SBX-EXEC-003", "warning", 2.0, "the exec allow list covers a writable path"),
    Check("SBX-EXEC-004", "warning", 2.0, "the exec allow list covers everything (/**)"),
    Check("SBX-EXEC-005", "warning", 1.0, "an exec allow list without a seccomp filter (memfd bypass)"),
    Check("SBX-EXEC-006", "info", 0.0, "a listed program's interpreter is not listed"),
    # Images
    Check("SBX-IMG-001", "warning", 1.0, "images may be pulled from registries (image.allowed_registries)"),
    Check("SBX-IMG-002", "danger", 3.0, "registry TLS is not verified (image.tls_verify = false)"),
    Check("SBX-IMG-003", "warning", 1.0, "the image's setuid and setgid bits are kept (image.setuid = true)"),
    Check("SBX-IMG-004", "warning", 1.0, "a registry image without a digest pin (image.digest)"),
)}

# Model keys whose non-default value is a relaxation (`relaxes` in sandbox/profile/model.py) ->
# their id. tests/test_lint.py fails when a relaxing key has none: add one here with the key.
RELAXATION_IDS = {
    "namespaces.user": "SBX-NS-001", "namespaces.mount": "SBX-NS-002", "namespaces.pid": "SBX-NS-003",
    "namespaces.network": "SBX-NS-004", "namespaces.ipc": "SBX-NS-005", "namespaces.uts": "SBX-NS-006",
    "namespaces.cgroup": "SBX-NS-007", "namespaces.time": "SBX-NS-008", "network.mode": {"host": "SBX-NET-001", "bridge": "SBX-NET-002"},
    "network.segment": "SBX-NET-003", "network.egress": "SBX-NET-004", "network.publish": "SBX-NET-009",
    "filesystem.readonly_root": "SBX-FS-001", "filesystem.devices": "SBX-FS-002", "filesystem.sys": "SBX-FS-003",
    "filesystem.mounts.mode": "SBX-FS-004", "filesystem.mounts.allow_system_path": "SBX-FS-011", "capabilities.keep": "SBX-CAP-001", "landlock.enabled": "SBX-LL-001",
    "process.new_session": "SBX-PROC-001", "process.env_passthrough": "SBX-PROC-003",
    "audit.enabled": "SBX-AUD-001", "image.allowed_registries": "SBX-IMG-001", "image.tls_verify": "SBX-IMG-002",
    "image.setuid": "SBX-IMG-003",
}
UNKNOWN = Check("SBX-GEN-000", "warning", 1.0, "a relaxation without an id of its own (a bug: add one)")
# Findings about what the launch itself refuses: `sandbox run` does not repeat them as warnings
# before the refusal (its error says it), `sandbox lint` reports them so a profile is fixed early.
REFUSED_AT_LAUNCH = frozenset({"SBX-FS-008", "SBX-FS-009"})

# (below this score, its name); exactly 0 is "locked down"
SCORE_LEVELS = ((2.0, "strong"), (4.0, "good"), (6.0, "medium"), (8.0, "exposed"), (math.inf, "unsafe"))


@dataclass(frozen=True)
class Finding:
    """One relaxation of the secure defaults, or one risky choice, at a profile key."""

    severity: str
    key: str
    message: str
    id: str = UNKNOWN.id
    weight: float = UNKNOWN.weight

    def __str__(self) -> str:
        return f"{self.severity:<7} {self.id:<12} {self.key}: {self.message}"

    def to_dict(self) -> dict:
        return {"id": self.id, "severity": self.severity, "weight": self.weight, "key": self.key,
                "message": self.message}


def finding(check_id: str, key: str, message: str) -> Finding:
    check = CATALOGUE[check_id]
    return Finding(check.severity, key, message, check.id, check.weight)


# ---------------------------------------------------------------- generic relaxations

def _relaxations(obj, default, path: str) -> Iterator[Finding]:
    for fld in dataclasses.fields(obj):
        kind = fld.metadata.get("kind")
        value, base = getattr(obj, fld.name), getattr(default, fld.name)
        key = f"{path}.{fld.name}" if path else fld.name
        if kind == "table":
            yield from _relaxations(value, base, key)
        elif kind == "tables":
            for index, item in enumerate(value):
                yield from _entry_relaxations(item, key, index)
        elif fld.metadata.get("relaxes") and value != base:
            if kind in ("names", "caps", "devices") and not set(value) - set(base):
                continue  # fewer than the default is no relaxation
            yield _relaxation(key, key, f"{_show(value)}: {fld.metadata['relaxes']}", value)


def _entry_relaxations(item, key: str, index: int) -> Iterator[Finding]:
    """Relaxations inside one entry of an array of tables (a mount's mode = "rw", ...)."""
    for sub in dataclasses.fields(item):
        default = sub.default if sub.default is not dataclasses.MISSING else None
        if sub.metadata.get("relaxes") and getattr(item, sub.name) != default:
            where = getattr(item, "target", None) or getattr(item, "device", "")
            yield _relaxation(f"{key}.{sub.name}", f"{key}[{index}].{sub.name}",
                              f"{getattr(item, sub.name)!r} for {where}: {sub.metadata['relaxes']}")


def _relaxation(model_key: str, key: str, message: str, value=None) -> Finding:
    check_id = RELAXATION_IDS.get(model_key, "")
    if isinstance(check_id, dict):  # one id per value (network.mode: host, bridge)
        check_id = check_id.get(value, "")
    check = CATALOGUE.get(check_id, UNKNOWN)
    return Finding(check.severity, key, message, check.id, check.weight)


def _show(value) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return repr(value)


# ---------------------------------------------------------------- specific checks

def _system_path(mount) -> str | None:
    """The launcher's own rule (sandbox.sources), on the source as written and as it resolves
    here and now (the launch resolves it again, without following symlinks a sandbox could have
    planted)."""
    check = sources.system_path_reason if mount.mode == "rw" else sources.runtime_socket_reason
    for path in dict.fromkeys((mount.source, os.path.realpath(mount.source))):
        reason = check(path)
        if reason is not None:
            return reason
    return None


def _owner(path: str) -> tuple[int, ...]:
    """(uid, gid) of path as it resolves here, or () when it cannot be looked at."""
    try:
        info = os.stat(path)
    except OSError:
        return ()
    return info.st_uid, info.st_gid


def _mounts(profile: Profile) -> Iterator[Finding]:
    for index, mount in enumerate(profile.filesystem.mounts):
        key = f"filesystem.mounts[{index}]"
        reason = _system_path(mount)
        if reason is not None:
            mode = "read-write" if mount.mode == "rw" else "into the sandbox"
            if not mount.allow_system_path:
                yield finding("SBX-FS-008", key, f"{mount.source} would be bound {mode}: {reason}; the launch "
                              "refuses it unless the mount sets allow_system_path = true")
            elif mount.mode == "rw" and sources.runtime_socket_reason(mount.source) is None:
                yield finding("SBX-FS-005", key, f"{mount.source} is bound {mode} by allow_system_path = true: "
                              f"{reason}")
            else:
                yield finding("SBX-FS-006", key, f"{mount.source} is bound {mode} by allow_system_path = true: "
                              f"{reason}: control of the container engine is host root")
        elif mount.mode == "rw" and mount.idmap == "yes" and 0 in _owner(mount.source):
            yield finding("SBX-FS-009", f"{key}.idmap", f"'yes' for {mount.source}, which belongs to root: a root "
                          "launch refuses it (an idmapped mount never maps the sandbox to host uid 0); give it to "
                          "a build user")
        elif mount.mode == "rw" and mount.idmap == "auto" and 0 in _owner(mount.source):
            yield finding("SBX-FS-010", key, f"{mount.source} belongs to root: a root launch binds it without an id "
                          "mapping, so the sandbox writes there only as its own host uid may (give it to a build user)")
    if profile.filesystem.root != "tmpfs":
        yield finding("SBX-FS-007", "filesystem.root", f"the host directory {profile.filesystem.root} is the root")


def _capabilities(profile: Profile) -> Iterator[Finding]:
    for cap in profile.capabilities.keep:
        if cap in DANGEROUS_CAPS:
            yield finding("SBX-CAP-002", "capabilities.keep", f"{cap} is broad enough to weaken the sandbox itself")


def _seccomp(profile: Profile) -> Iterator[Finding]:
    if profile.seccomp is None:
        yield finding("SBX-SC-001", "seccomp", "no system call filter: the whole kernel interface is exposed")
        return
    if getattr(profile.seccomp, "mode", "") == "denylist":
        yield finding("SBX-SC-002", "seccomp", "a denylist policy allows every system call it does not name")
    yield from seccomp_findings(profile.seccomp)


# Each kind of widening (sandbox.seccomp.diff) and its risk -> the id it is reported under.
_WIDENING_IDS = {("syscall", "danger"): "SBX-SC-003", ("syscall", "warning"): "SBX-SC-004",
                 ("arguments", "danger"): "SBX-SC-005", ("arguments", "warning"): "SBX-SC-006",
                 ("architecture", "danger"): "SBX-SC-007", ("architecture", "warning"): "SBX-SC-008",
                 ("default-action", "danger"): "SBX-SC-009", ("default-action", "warning"): "SBX-SC-009"}
_WIDENING_KEYS = {"default-action": "seccomp.default_action", "architecture": "seccomp.architectures"}


def seccomp_findings(policy) -> list[Finding]:
    """Every way `policy` is wider than the built-in default policy (sandbox.seccomp.diff), as
    findings: calls allowed for one reason are one finding (`@mount` is eleven calls, one risk).
    No filter at all is SBX-SC-001, found by _seccomp."""
    from .seccomp.builtin import BUILTINS
    if policy is None or any(policy is make() or policy == make() for make in BUILTINS.values()):
        return []  # the built-in policies widen nothing (tests/test_seccomp_diff.py): no import
    from .seccomp.diff import widenings
    findings: list[Finding] = []
    allowed: dict[tuple[str, str], list] = {}
    for widening in widenings(policy):
        if widening.kind == "syscall":
            allowed.setdefault((widening.risk, widening.reason), []).append(widening)
        elif (widening.kind, widening.risk) in _WIDENING_IDS:
            findings.append(finding(_WIDENING_IDS[widening.kind, widening.risk],
                                    _WIDENING_KEYS.get(widening.kind, "seccomp"), widening.message))
    for (risk, reason), group in allowed.items():
        check_id = _WIDENING_IDS["syscall", risk]
        if len(group) == 1:
            findings.append(finding(check_id, "seccomp", group[0].message))
            continue
        names = ", ".join(w.subject for w in group)
        findings.append(finding(check_id, "seccomp", f"{names} are allowed; the default policy denies them"
                                + (f": {reason}" if reason else "")))
    return sorted(findings, key=lambda f: f.severity != "danger")


def _limits(profile: Profile) -> Iterator[Finding]:
    limits = profile.limits
    if limits.memory is None:
        yield finding("SBX-LIM-001", "limits.memory", "no memory limit: the workload can exhaust host memory")
    if limits.pids is None:
        yield finding("SBX-LIM-002", "limits.pids", "no process limit: a fork bomb reaches the host's limits")
    if limits.timeout is None:
        yield finding("SBX-LIM-003", "limits.timeout", "no wall-clock limit")


def _process(profile: Profile) -> Iterator[Finding]:
    if profile.process.user == 0:
        yield finding("SBX-PROC-002", "process.user", "the workload is root inside its namespace (never host root)")


# ---------------------------------------------------------------- credentials

_CREDENTIAL_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "KEY", "CREDENTIAL", "CREDENTIALS",
                     "AUTH", "PRIVATE", "APIKEY", "PASS")
_CREDENTIAL_PREFIXES = ("AWS_", "AZURE_CLIENT", "GOOGLE_APPLICATION", "GITHUB_", "GITLAB_", "NPM_", "PYPI_",
                        "TWINE_", "DOCKER_AUTH", "VAULT_", "SSH_AUTH_SOCK")
_NOT_CREDENTIALS = ("PWD", "OLDPWD", "KEYMAP", "XKB_DEFAULT_KEYMAP")
# Well-known token formats (no value is ever shown, only which format it has). Compiled on first
# use: lint runs at every launch (the audit record lists relaxations), most values are short.
_TOKEN_FORMATS = (
    (r"^(AKIA|ASIA)[0-9A-Z]{16}$", "an AWS access key id"),
    (r"^gh[pousr]_[A-Za-z0-9]{30,}$", "a GitHub token"),
    (r"^github_pat_[A-Za-z0-9_]{30,}$", "a GitHub token"),
    (r"^glpat-[A-Za-z0-9_-]{20,}$", "a GitLab token"),
    (r"^xox[abposr]-[A-Za-z0-9-]{10,}$", "a Slack token"),
    (r"^sk-[A-Za-z0-9_-]{20,}$", "an API secret key"),
    (r"^AIza[0-9A-Za-z_-]{35}$", "a Google API key"),
    (r"^npm_[A-Za-z0-9]{30,}$", "an npm token"),
    (r"^pypi-[A-Za-z0-9_-]{30,}$", "a PyPI token"),
    (r"^eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*$", "a JSON web token"),
    (r"-----BEGIN [A-Z ]*PRIVATE KEY-----", "a private key"),
    (r"^[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", "a URL with a password"),
)
_UUID = r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"
SHORTEST_TOKEN = 15  # below this length, and without an '@', no format above can match


def credential_name(name: str) -> bool:
    """Whether a variable name says it holds a credential (GITHUB_TOKEN, DB_PASSWORD, AWS_*)."""
    upper = name.upper().rstrip("*")
    if upper in _NOT_CREDENTIALS:
        return False
    if upper.startswith(_CREDENTIAL_PREFIXES):
        return True
    words = [w for w in re.split(r"[^A-Z0-9]+", upper) if w]
    return any(w in _CREDENTIAL_WORDS or w.endswith(("TOKEN", "SECRET", "PASSWORD", "APIKEY")) for w in words)


def credential_value(value: str) -> str | None:
    """What a value looks like when it looks like a credential (never the value itself), else None."""
    if len(value) < SHORTEST_TOKEN and "@" not in value:
        return None
    for pattern, what in _TOKEN_FORMATS:
        if re.search(pattern, value):  # re caches compiled patterns
            return what
    text = value.strip()
    if len(text) < 20 or any(c.isspace() for c in text) or "/" in text.rstrip("=") or re.match(_UUID, text):
        return None
    classes = sum((any(c.islower() for c in text), any(c.isupper() for c in text), any(c.isdigit() for c in text),
                   any(c in "+/=_-.~" for c in text)))
    if classes >= 3 and entropy(text) >= 3.8:
        return f"a random-looking {len(text)}-character string"
    return None


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    counts: dict[str, int] = {}
    for char in text:
        counts[char] = counts.get(char, 0) + 1
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


_SECRETS_HINT = "use [[secrets]] (a read-only file at /run/secrets/NAME) instead"


def _credentials(profile: Profile) -> Iterator[Finding]:
    for pattern in profile.process.env_passthrough:
        if pattern.endswith("*") or credential_name(pattern) or any(h in pattern.upper() for h in SECRET_HINTS):
            yield finding("SBX-CRED-001", "process.env_passthrough",
                          f"{pattern!r} may carry credentials into the sandbox: {_SECRETS_HINT} "
                          f'(name = "...", env = "VARIABLE")')
    for name, value in profile.process.env:
        key = f"process.env.{name}"
        if credential_name(name):
            yield finding("SBX-CRED-002", key, f"{name} looks like a credential: the workload and everything it "
                          f"runs can read its environment, and `sandbox check` prints it; {_SECRETS_HINT}")
            continue
        what = credential_value(value)
        if what:
            yield finding("SBX-CRED-003", key, f"the value of {name} looks like {what}: {_SECRETS_HINT}")


# ---------------------------------------------------------------- executables

_CODE_RUNNERS = (r"^(sh|bash|dash|zsh|ksh|mksh|fish|busybox|env|python[0-9.]*|perl[0-9.]*|ruby[0-9.]*|"
                 r"node|nodejs|php[0-9.]*|lua[0-9.]*|tclsh[0-9.]*|java|gdb|make|xargs|find)$")


def untrusted_class(profile: Profile) -> bool:
    """A profile for untrusted code: `untrusted` itself or one that extends it."""
    import os
    chain = [profile.extends or ""] + list(profile.lineage)
    return profile.name == "untrusted" or any(os.path.splitext(os.path.basename(p))[0] == "untrusted"
                                              for p in chain)


def _writable_targets(profile: Profile) -> list[str]:
    fs = profile.filesystem
    writable = [m.target for m in fs.mounts if m.mode == "rw"] + [t.target for t in fs.tmpfs]
    writable += list(profile.landlock.write)
    if not fs.readonly_root:
        writable.append("/")
    return writable


def _under(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top.rstrip("/") + "/")


def _exec(profile: Profile) -> Iterator[Finding]:
    from . import execlist
    allow = profile.exec.allow
    if allow is None:
        if untrusted_class(profile):
            yield finding("SBX-EXEC-001", "exec.allow", "no exec allow list: any file the mounts let run can "
                          "be executed; `sandbox learn` proposes a list from a trusted run")
        return
    if profile.seccomp is None:
        yield finding("SBX-EXEC-005", "exec.allow", "without a seccomp filter memfd_create() + execveat() runs "
                      "any code past the list (Landlock cannot see memfds)")
    writable = _writable_targets(profile)
    for index, pattern in enumerate(allow):
        key = f"exec.allow[{index}]"
        if pattern == execlist.BENEATH:
            yield finding("SBX-EXEC-004", key, "'/**' allows every file: no allow list at all")
            continue
        fixed = pattern.split("*")[0].split("?")[0].split("[")[0].rstrip("/") or "/"
        for target in writable:
            if _under(fixed, target) or _under(target, fixed):
                yield finding("SBX-EXEC-003", key, f"{pattern} is under {target}, which the workload can write: "
                              "it can write new programs there and run them")
                break
        name = pattern.rsplit("/", 1)[-1]
        if not execlist.beneath(pattern) and re.match(_CODE_RUNNERS, name.rstrip("*")):
            yield finding("SBX-EXEC-002", key, f"{pattern} runs any code it is given: the list limits which "
                          "programs start, not what code they run")
        if not execlist.has_magic(pattern):
            for interpreter in execlist.interpreter_chain(pattern):
                if not execlist.covered(allow, interpreter):
                    yield finding("SBX-EXEC-006", key, f"{pattern} needs {interpreter} as its interpreter (on this "
                                  "host): list it too, or it cannot run")


def _network(profile: Profile) -> Iterator[Finding]:
    """What [network] opens beyond its mode: egress to anywhere, link-local, wide networks, ports
    published beyond loopback (the keys' own relaxations are found generically)."""
    network = profile.network
    if network.mode != "bridge":
        for key in ("segment", "egress", "publish", "dns"):
            if getattr(network, key):
                yield finding("SBX-NET-012", f"network.{key}", "has no effect unless network.mode = 'bridge'")
        return
    from .net import spec
    for index, text in enumerate(network.egress):
        entry = spec.parse_egress(text)
        key = f"network.egress[{index}]"
        if entry.anywhere and entry.ports is None:
            yield finding("SBX-NET-005", key, f"{text!r} allows egress to anywhere, on every port")
        elif entry.anywhere:
            yield finding("SBX-NET-006", key, f"{text!r} allows any destination on these ports")
        elif entry.network is not None and entry.network.overlaps(spec.LINK_LOCAL):
            yield finding("SBX-NET-007", key, f"{text!r} reaches link-local addresses, among them cloud metadata "
                          "services (169.254.169.254) that hand out credentials")
        elif entry.network is not None and entry.network.prefixlen < 16:
            yield finding("SBX-NET-008", key, f"{text!r} is a wide network ({entry.network.num_addresses} addresses)")
    for index, text in enumerate(network.publish):
        entry = spec.parse_publish(text)
        if entry.address == "0.0.0.0":
            yield finding("SBX-NET-010", f"network.publish[{index}]", f"{text!r} listens on every host address: "
                          "other machines reach into the sandbox")
        elif not entry.loopback:
            yield finding("SBX-NET-011", f"network.publish[{index}]", f"{text!r} listens on a non-loopback host "
                          f"address: whoever reaches {entry.address} reaches into the sandbox")


def _image(profile: Profile) -> Iterator[Finding]:
    image = profile.image
    if image.ref and image.ref.startswith("docker://") and "@sha256:" not in image.ref and not image.digest:
        yield finding("SBX-IMG-004", "image.ref", f"{image.ref} is a tag: what runs is whatever the registry serves "
                      "under it today; pin it (image.digest = \"sha256:...\" or NAME@sha256:...)")


CHECKS: tuple[Callable[[Profile], Iterator[Finding]], ...] = (
    _mounts, _capabilities, _seccomp, _credentials, _limits, _process, _exec, _network, _image,
)


def lint(profile: Profile) -> list[Finding]:
    findings = list(_relaxations(profile, Profile(), ""))
    for check in CHECKS:
        findings += check(profile)
    order = {severity: index for index, severity in enumerate(reversed(SEVERITIES))}
    return sorted(findings, key=lambda f: order[f.severity])


def score(findings: list[Finding]) -> float:
    """The exposure score, 0 (locked down) to 10 (no isolation): see the module docstring."""
    weights: dict[str, float] = {}
    for item in findings:
        weights[item.id] = max(weights.get(item.id, 0.0), min(10.0, max(0.0, item.weight)))
    remaining = 1.0
    for weight in weights.values():
        remaining *= 1.0 - weight / 10.0
    return round(10.0 * (1.0 - remaining), 1)


def level(value: float) -> str:
    if value == 0:
        return "locked down"
    return next(name for bound, name in SCORE_LEVELS if value < bound)


def catalogue_markdown() -> str:
    """The id table of docs/lint.md (scripts/gen-docs writes it)."""
    rows = ["| Id | Severity | Weight | Finding |", "|---|---|---|---|"]
    rows += [f"| `{c.id}` | {c.severity} | {c.weight:g} | {c.title} |" for c in CATALOGUE.values()]
    return "\n".join(rows) + "\n"


CATALOGUE_BEGIN = "<!-- BEGIN GENERATED LINT IDS: scripts/gen-docs writes this table from sandbox/lint.py -->"
CATALOGUE_END = "<!-- END GENERATED LINT IDS -->"
