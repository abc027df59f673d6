"""The runtime floor: what no engine request can take a container below (docs/oci.md, "The floor").

A pure data model, loaded and validated in one place, like a profile's:

    settings = load()                  # built-in floor, or /etc/sandbox/runtime.toml, or --floor FILE
    floor = settings.choose(annotations)   # org.sandbox.floor may pick a stricter one, never a weaker one
    floor.mode, floor.capabilities, ...    # read by sandbox.oci.policy, which judges a config.json

A file has the floor itself at its top level, settings that belong to the host (the id range pool,
the audit log), and optional named floors (`[floors.NAME]`) that an `org.sandbox.floor` annotation
may choose. Every key is optional; what a file does not say is the built-in default's.

"Stricter" is a partial order, `a.at_least_as_strict_as(b)`, true when a is at least as strict as b
in every rule: mode (off < warn < enforce); a user namespace required (false < true); allowed
capabilities, host namespaces, devices and read-write system paths (a subset); the seccomp floor
(none < default < strict); no_new_privs, Landlock, verification and a required audit record (false
< true); masked and read-only paths (a superset); root-owned volumes ("host-root" < "refuse").
Two floors can be incomparable (each allows something the other does not): then neither is
stricter, and an annotation naming the other is refused.
"""
from __future__ import annotations

import os

from ..compiled_dataclass import dataclass

ADMIN_FILE = "/etc/sandbox/runtime.toml"
ANNOTATION_FLOOR = "org.sandbox.floor"
ANNOTATION_VERIFY = "org.sandbox.verify"

MODES = ("off", "warn", "enforce")  # in order of strictness
SECCOMP_FLOORS = ("none", "default", "strict")  # likewise
VOLUME_RULES = ("host-root", "refuse")  # likewise: what a root workload's rw bind of a root-owned source gets
HOST_NAMESPACES = ("pid", "ipc", "network", "uts")

# Capabilities that reach beyond a user namespace or widen the kernel's attack surface from inside one.
FORBIDDEN_CAPABILITIES = ("CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_PTRACE", "CAP_SYS_RAWIO", "CAP_SYS_BOOT",
                          "CAP_SYS_TIME", "CAP_MAC_ADMIN", "CAP_MAC_OVERRIDE", "CAP_BPF", "CAP_PERFMON",
                          "CAP_NET_ADMIN", "CAP_DAC_READ_SEARCH", "CAP_SYSLOG")
# The strict floor's ceiling: what podman and Docker give by default, without NET_RAW and MKNOD.
STRICT_CAPABILITIES = ("CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
                       "CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID",
                       "CAP_SYS_CHROOT")
# The usual character devices: (type, major, minor), minor -1 for any.
USUAL_DEVICES = (("c", 1, 3), ("c", 1, 5), ("c", 1, 7), ("c", 1, 8), ("c", 1, 9), ("c", 5, 0), ("c", 5, 1),
                 ("c", 5, 2), ("c", 136, -1))
MASKED_PATHS = ("/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/key-users",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
                "/proc/kallsyms", "/proc/kpagecount", "/proc/kpageflags", "/proc/kpagecgroup", "/proc/scsi",
                "/proc/config.gz", "/proc/vmallocinfo", "/proc/pagetypeinfo", "/sys/firmware",
                "/sys/devices/virtual/powercap")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

DEFAULT_POOL_START = 1_000_000_000
DEFAULT_POOL_RANGES = 32768  # of 65536 ids each: up to host id 3,147,483,647
DEFAULT_RANGE_SIZE = 65536
DEFAULT_REGISTRY = "/run/sandbox-runtime/ranges"


def _all_capabilities() -> frozenset[str]:
    from ..profile.units import CAPABILITY_NUMBERS
    return frozenset(CAPABILITY_NUMBERS)


class FloorError(Exception):
    """A floor file that cannot be loaded: one line naming the file, the key and what was expected.
    (Not a SandboxError: the runtime reports it as it reports every failure, exit status 1.)"""

    exit_code = 1

    def __init__(self, file: str, key: str, expected: str, found=None):
        self.file, self.key = file, key
        text = f"{file}: {key}: expected {expected}" if key else f"{file}: expected {expected}"
        if found is not None:
            text += f", found {found!r}"
        super().__init__(text)

    def one_line(self) -> str:
        return str(self)


@dataclass(frozen=True)
class Floor:
    """One floor: the rules a container is held to (see the module's docstring for "stricter")."""

    name: str = "default"
    mode: str = "enforce"
    user_namespace: bool = True  # every container gets one (rootful: a host id range of its own)
    capabilities: frozenset = frozenset()  # the ceiling: what a container may hold at most
    host_namespaces: frozenset = frozenset()  # of HOST_NAMESPACES, that a container may share with the host
    devices: tuple = ()  # (type, major, minor) allowed besides USUAL_DEVICES
    seccomp: str = "default"  # the floor filter below an engine's own (SECCOMP_FLOORS)
    no_new_privs: bool = True
    landlock: bool = True
    masked_paths: tuple = MASKED_PATHS
    readonly_paths: tuple = READONLY_PATHS
    rw_paths: tuple = ()  # host paths that may be bound read-write (or, a socket, at all) despite the rules
    root_owned_volumes: str = "refuse"  # VOLUME_RULES
    verify: bool = False  # run the probe at every start (else only when org.sandbox.verify = "true")
    audit_required: bool = False  # refuse to create when the create record cannot be written
    source: str = "built-in"  # where it was defined, for messages and the audit trail

    # ------------------------------------------------------------ the order

    def weaker_in(self, other: "Floor") -> list[str]:
        """Every rule in which this floor is less strict than `other`, as 'key: why' (empty when this
        floor is at least as strict as `other`)."""
        found = []

        def rank(order, value):
            return order.index(value)
        if rank(MODES, self.mode) < rank(MODES, other.mode):
            found.append(f"mode: {self.mode} is weaker than {other.mode}")
        if other.user_namespace and not self.user_namespace:
            found.append("user_namespace.required: false")
        for key, mine, theirs in (("capabilities", self.capabilities, other.capabilities),
                                  ("namespaces.host", self.host_namespaces, other.host_namespaces),
                                  ("devices.allow", set(self.devices), set(other.devices)),
                                  ("paths.rw_allowed", set(self.rw_paths), set(other.rw_paths))):
            extra = sorted(map(str, set(mine) - set(theirs)))
            if extra:
                found.append(f"{key}: allows {', '.join(extra)}")
        if rank(SECCOMP_FLOORS, self.seccomp) < rank(SECCOMP_FLOORS, other.seccomp):
            found.append(f"seccomp.floor: {self.seccomp} is weaker than {other.seccomp}")
        for key, mine, theirs in (("no_new_privs", self.no_new_privs, other.no_new_privs),
                                  ("landlock", self.landlock, other.landlock), ("verify", self.verify, other.verify),
                                  ("audit.required", self.audit_required, other.audit_required)):
            if theirs and not mine:
                found.append(f"{key}: false")
        for key, mine, theirs in (("paths.masked", self.masked_paths, other.masked_paths),
                                  ("paths.readonly", self.readonly_paths, other.readonly_paths)):
            missing = sorted(set(theirs) - set(mine))
            if missing:
                found.append(f"{key}: lacks {', '.join(missing)}")
        if rank(VOLUME_RULES, self.root_owned_volumes) < rank(VOLUME_RULES, other.root_owned_volumes):
            found.append(f"volumes.root_owned: {self.root_owned_volumes}")
        return found

    def at_least_as_strict_as(self, other: "Floor") -> bool:
        return not self.weaker_in(other)

    # ------------------------------------------------------------ for the audit trail and the state

    def summary(self) -> dict:
        beyond = sorted(set(self.capabilities) - set(default_floor().capabilities))
        return {"name": self.name, "source": self.source, "mode": self.mode,
                "user_namespace": self.user_namespace, "seccomp": self.seccomp, "no_new_privs": self.no_new_privs,
                "landlock": self.landlock, "verify": self.verify, "capabilities_allowed_beyond_default": beyond,
                "host_namespaces": sorted(self.host_namespaces)}


@dataclass(frozen=True)
class IdPool:
    """Where rootful containers' host id ranges come from: `ranges` blocks of `size` ids from
    `start` (uids and gids alike), or the ranges /etc/subuid and /etc/subgid give `subuid_user`."""

    start: int = DEFAULT_POOL_START
    ranges: int = DEFAULT_POOL_RANGES
    size: int = DEFAULT_RANGE_SIZE
    subuid_user: str | None = None
    registry: str = DEFAULT_REGISTRY  # the allocation records and their lock (host-wide, whatever --root)


@dataclass(frozen=True)
class Settings:
    """A loaded floor file: the floor, the named floors annotations may choose, the host's settings."""

    floor: "Floor"
    named: dict  # name -> Floor (built-ins and the file's [floors.NAME])
    pool: IdPool = IdPool()
    audit_log: str | None = None  # None: sandbox.audit.log_path() (SANDBOX_AUDIT_LOG, else /var/log/sandbox)
    source: str = "built-in"

    def choose(self, annotations: dict | None) -> tuple["Floor", str | None]:
        """(the floor a container is held to, a problem or None). An org.sandbox.floor annotation
        chooses a named floor only when it is at least as strict as this file's floor; otherwise
        (or when no floor has that name) the file's floor stays, and the problem says why: the
        policy refuses the container in enforce mode and warns in warn mode."""
        wanted = (annotations or {}).get(ANNOTATION_FLOOR)
        if not wanted:
            return self.floor, None
        chosen = self.named.get(wanted)
        if chosen is None:
            return self.floor, (f"annotations.{ANNOTATION_FLOOR}: expected one of {', '.join(sorted(self.named))}, "
                                f"found {wanted!r}")
        weaker = chosen.weaker_in(self.floor)
        if weaker:
            return self.floor, (f"annotations.{ANNOTATION_FLOOR}: floor {wanted!r} is not stricter than the "
                                f"runtime's floor {self.floor.name!r} ({'; '.join(weaker)}): an annotation may only "
                                "choose a stricter floor")
        return chosen, None


# ---------------------------------------------------------------- the built-in floors

def default_floor() -> Floor:
    return _DEFAULT


def strict_floor() -> Floor:
    return _STRICT


_DEFAULT = Floor(capabilities=frozenset(_all_capabilities() - set(FORBIDDEN_CAPABILITIES)))
_STRICT = Floor(name="strict", capabilities=frozenset(STRICT_CAPABILITIES), seccomp="strict", verify=True,
                audit_required=True)
BUILTIN_FLOORS = {"default": _DEFAULT, "strict": _STRICT}


def builtin_settings() -> Settings:
    return Settings(_DEFAULT, dict(BUILTIN_FLOORS))


# ---------------------------------------------------------------- loading

_TOP_KEYS = {"mode", "verify", "no_new_privs", "landlock", "user_namespace", "capabilities", "namespaces", "devices",
             "seccomp", "paths", "volumes", "audit", "floors", "extends"}
_FLOOR_ONLY = {"user_namespace": {"required"}, "capabilities": {"allow", "deny"}, "namespaces": {"host"},
               "devices": {"allow"}, "seccomp": {"floor"}, "volumes": {"root_owned"},
               "paths": {"mask", "unmask", "readonly", "writable", "rw_allowed"}, "audit": {"required"}}
_SETTING_KEYS = {"user_namespace": {"pool_start", "pool_ranges", "range_size", "subuid_user", "registry"},
                 "audit": {"log"}}


def load(path: str | None = None) -> Settings:
    """The floor file `path` (--floor), else /etc/sandbox/runtime.toml when it exists, else the
    built-in floor. Raises FloorError naming the file and key."""
    if path is None:
        if not os.path.exists(ADMIN_FILE):
            return builtin_settings()
        path = ADMIN_FILE
    import tomllib
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise FloorError(path, "", "a floor file (TOML)", "no such file") from None
    except OSError as exc:
        raise FloorError(path, "", "a readable floor file", exc.strerror) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FloorError(path, "", f"TOML ({exc})") from None
    return parse(document, path)


def parse(document: dict, path: str = "<floor>") -> Settings:
    """A floor file's contents (a dict, as tomllib reads it) -> Settings."""
    _known(document, _TOP_KEYS, path, "")
    if "extends" in document:
        raise FloorError(path, "extends", "it only in [floors.NAME] (the top level extends the built-in default)")
    floor = _floor(document, path, "", "default", _DEFAULT)
    pool = _pool(document.get("user_namespace") or {}, path)
    audit_log = _table(document, "audit", path, "").get("log")
    if audit_log is not None and (not isinstance(audit_log, str) or not audit_log.startswith("/")):
        raise FloorError(path, "audit.log", "an absolute path", audit_log)
    named = dict(BUILTIN_FLOORS)
    named["default"] = floor  # the file's own floor is what "default" names on this host
    floors = _table(document, "floors", path, "")
    for name, table in floors.items():
        where = f"floors.{name}"
        if not isinstance(table, dict):
            raise FloorError(path, where, "a table", table)
        if name in BUILTIN_FLOORS and name != "strict":
            raise FloorError(path, where, f"a name other than {name!r} (the top level is this host's default floor)")
        _known(table, _TOP_KEYS - {"floors"}, path, where + ".")
        for key in ("user_namespace", "audit"):
            for setting in _SETTING_KEYS.get(key, ()):
                if setting in (table.get(key) or {}):
                    raise FloorError(path, f"{where}.{key}.{setting}", "it at the top level only (a host setting)")
        base_name = table.get("extends", "default")
        if base_name not in BUILTIN_FLOORS:
            raise FloorError(path, f"{where}.extends", f"one of {', '.join(BUILTIN_FLOORS)}", base_name)
        named[name] = _floor(table, path, where + ".", name, BUILTIN_FLOORS[base_name])
    named = {name: _with_source(f, path) if name == "default" or name in floors else f for name, f in named.items()}
    return Settings(named["default"], named, pool, audit_log, path)


def _with_source(floor: Floor, path: str) -> Floor:
    import dataclasses
    return dataclasses.replace(floor, source=path)


def _known(table: dict, keys: set, path: str, prefix: str) -> None:
    for key in table:
        if key not in keys:
            raise FloorError(path, prefix + key, f"one of {', '.join(sorted(keys))}")


def _table(document: dict, key: str, path: str, prefix: str) -> dict:
    value = document.get(key, {})
    if not isinstance(value, dict):
        raise FloorError(path, prefix + key, "a table", value)
    return value


def _bool(table: dict, key: str, default: bool, path: str, where: str) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise FloorError(path, where, "true or false", value)
    return value


def _choice(table: dict, key: str, choices: tuple, default: str, path: str, where: str) -> str:
    value = table.get(key, default)
    if value not in choices:
        raise FloorError(path, where, f"one of {', '.join(choices)}", value)
    return value


def _strings(table: dict, key: str, path: str, where: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise FloorError(path, where, "a list of strings", value)
    return value


def _capability(name: str, path: str, where: str) -> str:
    from ..profile.units import normalize_capability
    try:
        return normalize_capability(name)
    except ValueError as exc:
        raise FloorError(path, where, str(exc), name) from None


def _device(text: str, path: str, where: str) -> tuple[str, int, int]:
    """'c 10:229', 'c 10:*' or a device node's path such as '/dev/fuse' (read from the host)."""
    if text.startswith("/"):
        import stat
        try:
            info = os.stat(text)
        except OSError as exc:
            raise FloorError(path, where, "a device node that exists on this host", f"{text}: {exc.strerror}") from None
        if not (stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)):
            raise FloorError(path, where, "a character or block device node", text)
        return ("c" if stat.S_ISCHR(info.st_mode) else "b", os.major(info.st_rdev), os.minor(info.st_rdev))
    parts = text.split()
    try:
        kind, numbers = parts
        major, minor = numbers.split(":")
        if kind not in ("c", "b"):
            raise ValueError
        return kind, int(major), -1 if minor == "*" else int(minor)
    except ValueError:
        raise FloorError(path, where, "'c MAJOR:MINOR' (minor may be *), or a device path such as /dev/fuse",
                         text) from None


def _paths(values: list[str], path: str, where: str) -> list[str]:
    for value in values:
        if not value.startswith("/"):
            raise FloorError(path, where, "absolute paths", value)
    return [os.path.normpath(value) for value in values]


def _floor(table: dict, path: str, prefix: str, name: str, base: Floor) -> Floor:
    import dataclasses
    for key, allowed in _FLOOR_ONLY.items():
        section = _table(table, key, path, prefix)
        _known(section, allowed | _SETTING_KEYS.get(key, set()), path, f"{prefix}{key}.")
    mode = _choice(table, "mode", MODES, base.mode, path, prefix + "mode")
    userns = _table(table, "user_namespace", path, prefix)
    caps = _table(table, "capabilities", path, prefix)
    allow = {_capability(c, path, f"{prefix}capabilities.allow") for c in _strings(caps, "allow", path,
                                                                                      f"{prefix}capabilities.allow")}
    deny = {_capability(c, path, f"{prefix}capabilities.deny") for c in _strings(caps, "deny", path,
                                                                                    f"{prefix}capabilities.deny")}
    both = allow & deny
    if both:
        raise FloorError(path, f"{prefix}capabilities", "a capability in allow or deny, not both", sorted(both)[0])
    hosts = set(_strings(_table(table, "namespaces", path, prefix), "host", path, f"{prefix}namespaces.host"))
    for kind in hosts:
        if kind not in HOST_NAMESPACES:
            raise FloorError(path, f"{prefix}namespaces.host", f"names among {', '.join(HOST_NAMESPACES)}", kind)
    devices = tuple(_device(d, path, f"{prefix}devices.allow")
                    for d in _strings(_table(table, "devices", path, prefix), "allow", path, f"{prefix}devices.allow"))
    seccomp = _choice(_table(table, "seccomp", path, prefix), "floor", SECCOMP_FLOORS, base.seccomp, path,
                      f"{prefix}seccomp.floor")
    paths = _table(table, "paths", path, prefix)
    masked = [p for p in base.masked_paths if p not in _paths(_strings(paths, "unmask", path, f"{prefix}paths.unmask"),
                                                                path, f"{prefix}paths.unmask")]
    masked += [p for p in _paths(_strings(paths, "mask", path, f"{prefix}paths.mask"), path, f"{prefix}paths.mask")
               if p not in masked]
    writable = _paths(_strings(paths, "writable", path, f"{prefix}paths.writable"), path, f"{prefix}paths.writable")
    readonly = [p for p in base.readonly_paths if p not in writable]
    readonly += [p for p in _paths(_strings(paths, "readonly", path, f"{prefix}paths.readonly"), path,
                                   f"{prefix}paths.readonly") if p not in readonly]
    rw_allowed = _paths(_strings(paths, "rw_allowed", path, f"{prefix}paths.rw_allowed"), path,
                        f"{prefix}paths.rw_allowed")
    volumes = _choice(_table(table, "volumes", path, prefix), "root_owned", VOLUME_RULES, base.root_owned_volumes,
                      path, f"{prefix}volumes.root_owned")
    return dataclasses.replace(
        base, name=name, mode=mode,
        user_namespace=_bool(userns, "required", base.user_namespace, path, f"{prefix}user_namespace.required"),
        capabilities=frozenset((set(base.capabilities) | allow) - deny),
        host_namespaces=frozenset(set(base.host_namespaces) | hosts),
        devices=tuple(dict.fromkeys(base.devices + devices)), seccomp=seccomp,
        no_new_privs=_bool(table, "no_new_privs", base.no_new_privs, path, prefix + "no_new_privs"),
        landlock=_bool(table, "landlock", base.landlock, path, prefix + "landlock"),
        masked_paths=tuple(masked), readonly_paths=tuple(readonly),
        rw_paths=tuple(dict.fromkeys(base.rw_paths + tuple(rw_allowed))), root_owned_volumes=volumes,
        verify=_bool(table, "verify", base.verify, path, prefix + "verify"),
        audit_required=_bool(_table(table, "audit", path, prefix), "required", base.audit_required, path,
                             f"{prefix}audit.required"))


def _pool(table: dict, path: str) -> IdPool:
    def number(key, default, low, high):
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise FloorError(path, f"user_namespace.{key}", f"an integer from {low} to {high}", value)
        return value
    size = number("range_size", DEFAULT_RANGE_SIZE, 1, 1 << 31)
    start = number("pool_start", DEFAULT_POOL_START, 1, (1 << 32) - 2)
    ranges = number("pool_ranges", DEFAULT_POOL_RANGES, 1, 1 << 31)
    if start + ranges * size > (1 << 32) - 1:
        raise FloorError(path, "user_namespace.pool_ranges", f"a pool that ends below 2^32-1 (it ends at "
                         f"{start + ranges * size - 1})", ranges)
    user = table.get("subuid_user")
    if user is not None and (not isinstance(user, str) or not user):
        raise FloorError(path, "user_namespace.subuid_user", "a user name", user)
    registry = table.get("registry", DEFAULT_REGISTRY)
    if not isinstance(registry, str) or not registry.startswith("/"):
        raise FloorError(path, "user_namespace.registry", "an absolute path", registry)
    return IdPool(start, ranges, size, user, registry)
