"""config.json (OCI runtime-spec 1.x, Linux) -> a checked Bundle holding a LaunchPlan.

    bundle = load_bundle(bundle_dir, container_id)     # raises SpecError naming the field
    bundle.plan        the same LaunchPlan a profile compiles to, run by the same launcher and steps
    bundle.hooks       stage -> ((path, args, env, timeout), ...)

Translation only: what the runtime cannot honour is a SpecError naming the field (never skipped);
what the configuration *may* do is a policy's business (sandbox.oci.policy, checked on the
translated plan before create), not this module's. Unknown properties are ignored, as the spec
requires of implementations; known ones that cannot be honoured here are errors.
"""
from __future__ import annotations

import json
import os
import stat

from ..compiled_dataclass import dataclass
from ..errors import SandboxError
from .. import _libc

SUPPORTED_MAJOR = "1."
HOOK_STAGES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
NAMESPACE_FLAGS = {"pid": _libc.CLONE_NEWPID, "network": _libc.CLONE_NEWNET, "mount": _libc.CLONE_NEWNS,
                   "ipc": _libc.CLONE_NEWIPC, "uts": _libc.CLONE_NEWUTS, "user": _libc.CLONE_NEWUSER,
                   "cgroup": _libc.CLONE_NEWCGROUP, "time": _libc.CLONE_NEWTIME}
CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
# The devices every container gets (runtime-spec "Default Devices"), and runc's default device
# cgroup rules for them (plus mknod of anything, ptys and /dev/net/tun).
DEFAULT_DEVICES = (("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7), ("/dev/random", 1, 8),
                   ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0))
DEFAULT_DEVICE_RULES = (
    {"allow": True, "type": "c", "major": -1, "minor": -1, "access": "m"},
    {"allow": True, "type": "b", "major": -1, "minor": -1, "access": "m"},
    *({"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
      for _, major, minor in DEFAULT_DEVICES),
    {"allow": True, "type": "c", "major": 136, "minor": -1, "access": "rwm"},  # /dev/pts/*
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},  # /dev/ptmx
    {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},  # /dev/net/tun
)
RLIMIT_TYPES = ("RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_LOCKS",
                "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE", "RLIMIT_NPROC",
                "RLIMIT_RSS", "RLIMIT_RTPRIO", "RLIMIT_RTTIME", "RLIMIT_SIGPENDING", "RLIMIT_STACK")
# Namespaced sysctls (what runc's validator accepts): anything else would change the host.
IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
               "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")
PERSONALITIES = {"LINUX": 0x0000, "LINUX32": 0x0008}
MOUNT_FLAGS = {  # option -> (flag, set)
    "ro": (_libc.MS_RDONLY, True), "rw": (_libc.MS_RDONLY, False),
    "nosuid": (_libc.MS_NOSUID, True), "suid": (_libc.MS_NOSUID, False),
    "nodev": (_libc.MS_NODEV, True), "dev": (_libc.MS_NODEV, False),
    "noexec": (_libc.MS_NOEXEC, True), "exec": (_libc.MS_NOEXEC, False),
    "sync": (16, True), "async": (16, False), "dirsync": (128, True),
    "noatime": (_libc.MS_NOATIME, True), "atime": (_libc.MS_NOATIME, False),
    "nodiratime": (_libc.MS_NODIRATIME, True), "diratime": (_libc.MS_NODIRATIME, False),
    "relatime": (_libc.MS_RELATIME, True), "norelatime": (_libc.MS_RELATIME, False),
    "strictatime": (_libc.MS_STRICTATIME, True), "nostrictatime": (_libc.MS_STRICTATIME, False),
    "nosymfollow": (_libc.MS_NOSYMFOLLOW, True), "symfollow": (_libc.MS_NOSYMFOLLOW, False),
    "mand": (64, True), "nomand": (64, False), "silent": (_libc.MS_SILENT, True), "loud": (_libc.MS_SILENT, False),
}
RECURSIVE_FLAGS = {"rro": "ro", "rrw": "rw", "rnosuid": "nosuid", "rsuid": "suid", "rnodev": "nodev",
                   "rdev": "dev", "rnoexec": "noexec", "rexec": "exec", "rnoatime": "noatime",
                   "ratime": "atime", "rnodiratime": "nodiratime", "rdiratime": "diratime",
                   "rrelatime": "relatime", "rstrictatime": "strictatime", "rnosymfollow": "nosymfollow"}
HONOURED_PROPAGATION = {"private": 0, "rprivate": 0, "unbindable": _libc.MS_UNBINDABLE,
                        "runbindable": _libc.MS_UNBINDABLE | _libc.MS_REC}
REFUSED_PROPAGATION = ("shared", "rshared", "slave", "rslave")
MOUNT_OPTIONS = sorted([*MOUNT_FLAGS, *RECURSIVE_FLAGS, *HONOURED_PROPAGATION, "bind", "rbind", "tmpcopyup"])
SECCOMP_FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": "tsync", "SECCOMP_FILTER_FLAG_LOG": "log"}
REFUSED_SECCOMP_FLAGS = ("SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")


class SpecError(SandboxError):
    """config.json asks for something wrong, or something this runtime cannot honour."""

    exit_code = 1

    def __init__(self, field: str, expected: str, found=None, *, file: str = "config.json"):
        self.field = field
        text = f"{file}: {field}: {expected}" if field else f"{file}: {expected}"
        if found is not None:
            text += f", found {_shown(found)}"
        super().__init__(text)


def _shown(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class Bundle:
    """A checked bundle: the plan plus what only the runtime acts on."""

    container_id: str
    directory: str
    config: dict
    plan: object  # LaunchPlan
    hooks: dict  # stage -> tuple of (path, args, env, timeout)
    terminal: bool
    console_size: tuple[int, int] | None  # (height, width)
    annotations: dict
    cgroup_dirs: dict  # hierarchy -> directory, as created
    rootless: bool
    warnings: tuple = ()  # what was honoured more strictly than asked, for the runtime's log


# ---------------------------------------------------------------- field access with paths

class _Fields:
    """Typed access to a JSON object that knows its own path, for the error messages."""

    def __init__(self, data, path: str = ""):
        self.data, self.path = data, path

    def at(self, key) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    def has(self, key) -> bool:
        return isinstance(self.data, dict) and self.data.get(key) is not None

    def get(self, key, kind, default=None, *, required: bool = False):
        value = self.data.get(key) if isinstance(self.data, dict) else None
        if value is None:
            if required:
                raise SpecError(self.at(key), f"required, expected {_KIND_NAMES.get(kind, kind)}")
            return default
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise SpecError(self.at(key), "expected an integer", value)
        if kind is bool and not isinstance(value, bool):
            raise SpecError(self.at(key), "expected true or false", value)
        if kind is str and not isinstance(value, str):
            raise SpecError(self.at(key), "expected a string", value)
        if kind is list and not isinstance(value, list):
            raise SpecError(self.at(key), "expected an array", value)
        if kind is dict and not isinstance(value, dict):
            raise SpecError(self.at(key), "expected an object", value)
        return value

    def obj(self, key, *, required: bool = False) -> "_Fields":
        return _Fields(self.get(key, dict, {}, required=required), self.at(key))

    def items(self, key, *, required: bool = False):
        values = self.get(key, list, [], required=required)
        return [(_Fields(value, self.at(key) + f"[{i}]"), value) for i, value in enumerate(values)]

    def strings(self, key) -> list[str]:
        values = self.get(key, list, [])
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise SpecError(f"{self.at(key)}[{i}]", "expected a string", value)
        return values

    def refuse(self, key, why: str) -> None:
        value = self.data.get(key) if isinstance(self.data, dict) else None
        if value not in (None, "", [], {}):
            raise SpecError(self.at(key), f"not supported by sandbox-runtime: {why}", value)


_KIND_NAMES = {int: "an integer", str: "a string", bool: "true or false", list: "an array", dict: "an object"}


# ---------------------------------------------------------------- the host

def in_initial_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map") as handle:
            return handle.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return True


def rootless() -> bool:
    """Not host root: an unprivileged caller, or root of a user namespace (rootless podman)."""
    return os.geteuid() != 0 or not in_initial_user_namespace()


# ---------------------------------------------------------------- loading

def read_config(bundle_dir: str) -> dict:
    path = os.path.join(bundle_dir, "config.json")
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise SpecError("", f"no such file in the bundle {bundle_dir}") from None
    except OSError as exc:
        raise SpecError("", f"cannot be read: {exc.strerror}") from None
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise SpecError("", f"expected JSON ({exc})") from None
    if not isinstance(config, dict):
        raise SpecError("", "expected a JSON object", type(config).__name__)
    return config


def load_bundle(bundle_dir: str, container_id: str, config: dict | None = None) -> Bundle:
    bundle_dir = os.path.abspath(bundle_dir)
    if config is None:
        config = read_config(bundle_dir)
    return _Translation(bundle_dir, container_id, config).bundle()


class _Translation:
    def __init__(self, bundle_dir: str, container_id: str, config: dict):
        self.bundle_dir, self.container_id, self.config = bundle_dir, container_id, config
        self.top = _Fields(config)
        self.rootless = rootless()
        self.can_mknod = not self.rootless
        self.namespaces: dict[str, str | None] = {}  # type -> path or None (new)
        self.warnings: list[str] = []
        self.seccomp_agent = None

    def bundle(self) -> Bundle:
        from ..plan import CapabilitySets, IdMappings, LaunchPlan, DEFAULT_KILL_AFTER
        top = self.top
        version = top.get("ociVersion", str, required=True)
        if not version.startswith(SUPPORTED_MAJOR):
            raise SpecError("ociVersion", "expected a 1.x version", version)
        for other in ("windows", "solaris", "vm", "zos"):
            top.refuse(other, "this is a Linux runtime")
        linux = top.obj("linux")
        self._namespaces(linux)
        process = top.obj("process", required=True)
        root = top.obj("root", required=True)
        rootfs = self._rootfs(root)

        user = process.obj("user")
        uid, gid = user.get("uid", int, 0), user.get("gid", int, 0)
        for key in ("uid", "gid"):
            if user.get(key, int, 0) < 0:
                raise SpecError(user.at(key), "expected a non-negative id", user.get(key, int))
        user.refuse("username", "a Windows field")
        groups = tuple(self._ints(user, "additionalGids"))
        umask = user.get("umask", int, 0o022)
        args = process.strings("args")
        if not args:
            raise SpecError(process.at("args"), "expected at least one argument (the command)")
        process.refuse("commandLine", "a Windows field")
        env = {}
        for i, item in enumerate(process.strings("env")):
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise SpecError(f"process.env[{i}]", "expected NAME=value", item)
            env[name] = value
        cwd = process.get("cwd", str, required=True)
        if not cwd.startswith("/"):
            raise SpecError("process.cwd", "expected an absolute path", cwd)
        terminal = process.get("terminal", bool, False)
        console = process.obj("consoleSize")
        console_size = (console.get("height", int, 0), console.get("width", int, 0)) if process.has("consoleSize") else None
        caps = self._capabilities(process.obj("capabilities"))
        rlimits = self._rlimits(process)
        no_new_privs = process.get("noNewPrivileges", bool, False)
        oom = process.get("oomScoreAdj", int)
        if oom is not None and not -1000 <= oom <= 1000:
            raise SpecError("process.oomScoreAdj", "expected -1000..1000", oom)
        process.refuse("apparmorProfile", "this host has no AppArmor (the profile cannot be applied)")
        process.refuse("selinuxLabel", "this host has no SELinux (the label cannot be applied)")
        process.refuse("ioPriority", "I/O priorities are not applied by this runtime")
        process.refuse("scheduler", "scheduling policies are not applied by this runtime")
        process.refuse("execCPUAffinity", "CPU affinity at exec is not applied by this runtime")

        hostname = top.get("hostname", str)
        domainname = top.get("domainname", str)
        for key, value in (("hostname", hostname), ("domainname", domainname)):
            if value and self.namespaces.get("uts", "host") is not None:
                raise SpecError(key, "needs a new uts namespace in linux.namespaces", value)

        id_map, init_ids = self._id_maps(linux, uid, gid)
        from ..cgroups import oci as oci_cgroups
        try:
            cgroup_path = oci_cgroups.path_of(linux.get("cgroupsPath", str, ""), self.container_id)
        except ValueError as exc:
            raise SpecError("linux.cgroupsPath", str(exc), linux.get("cgroupsPath", str)) from None
        resources = self._resources(linux)
        cgroup_dirs = oci_cgroups.dirs_for(cgroup_path)
        mounts = self._mount_plan(linux, rootfs, root.get("readonly", bool, False), cwd, cgroup_dirs,
                                  terminal)
        linux.refuse("mountLabel", "this host has no SELinux (the label cannot be applied)")
        linux.refuse("intelRdt", "Intel RDT is not supported")
        linux.refuse("memoryPolicy", "NUMA memory policies are not applied by this runtime")
        linux.refuse("netDevices", "moving network devices into the container is not supported")
        propagation = linux.get("rootfsPropagation", str)
        if propagation not in (None, "", "private", "rprivate", "unbindable", "runbindable"):
            if propagation in REFUSED_PROPAGATION:
                raise SpecError("linux.rootfsPropagation", "expected private or rprivate: sandbox-runtime keeps "
                                "every container's mounts private (no propagation from or to the host)", propagation)
            raise SpecError("linux.rootfsPropagation", "expected one of private, rprivate, slave, rslave, shared, "
                            "rshared, unbindable, runbindable", propagation)
        seccomp, seccomp_log = self._seccomp(linux, caps)
        sysctls = self._sysctls(linux)
        personality = None
        if linux.has("personality"):
            persona = linux.obj("personality")
            domain = persona.get("domain", str, required=True)
            if domain not in PERSONALITIES:
                raise SpecError("linux.personality.domain", "expected LINUX or LINUX32", domain)
            persona.refuse("flags", "personality flags are not applied")
            personality = PERSONALITIES[domain]
        time_offsets = self._time_offsets(linux)
        hooks = self._hooks()
        annotations = top.get("annotations", dict, {})
        for key, value in annotations.items():
            if not isinstance(value, str):
                raise SpecError(f"annotations.{key}", "expected a string", value)

        flags = 0
        for name, path in self.namespaces.items():
            if path is None and name not in ("user", "cgroup"):
                flags |= NAMESPACE_FLAGS[name]
        if time_offsets is not None:
            flags &= ~_libc.CLONE_NEWTIME  # init makes it, to write the offsets before the workload enters
        join = tuple((NAMESPACE_FLAGS[name], path) for name, path in self.namespaces.items() if path is not None)
        plan = LaunchPlan(
            name=self.container_id, argv=tuple(args), env=env, cwd=cwd, uid=uid, gid=gid, umask=umask,
            id_map=id_map, new_user_ns=self.namespaces.get("user", "host") is None, unshare_flags=flags,
            new_cgroup_ns=self.namespaces.get("cgroup", "host") is None,
            new_pid_ns=self.namespaces.get("pid", "host") is None,
            new_net_ns=self.namespaces.get("network", "host") is None,
            mounts=mounts, hostname=hostname or None, rlimits=rlimits, keep_caps=(), new_session=True,
            landlock_rules=None, landlock_best_effort=True, seccomp=seccomp, cgroup_limits=None, timeout=None,
            kill_after=DEFAULT_KILL_AFTER, profile=None, join_namespaces=join, init_ids=init_ids,
            init_caps=self._init_caps(uid), groups=groups, capability_sets=CapabilitySets(**caps),
            no_new_privs=no_new_privs, sysctls=sysctls, domainname=domainname or None, oom_score_adj=oom,
            personality=personality, time_offsets=time_offsets, cgroup_path=cgroup_path,
            cgroup_resources=resources, seccomp_log=seccomp_log, annotations=dict(annotations),
            new_keyring=f"_ses.{self.container_id}"[:64], seccomp_agent=self.seccomp_agent)
        return Bundle(self.container_id, self.bundle_dir, self.config, plan, hooks, terminal, console_size,
                      dict(annotations), cgroup_dirs, self.rootless, tuple(self.warnings))

    # -- pieces -------------------------------------------------------------------------

    def _init_caps(self, uid: int) -> tuple[str, ...]:
        """What init keeps once the workload runs: nothing when the workload has init's uid (0)
        and a pid namespace of its own (init then only signals it, and the kernel ends the rest);
        CAP_KILL otherwise, to forward signals to a workload of another uid or, without a pid
        namespace, to kill what it leaves. Init's code is ours alone (non-dumpable)."""
        if uid == 0 and self.namespaces.get("pid", "host") is None:
            return ()
        return ("CAP_KILL",)

    @staticmethod
    def _ints(fields: _Fields, key: str) -> list[int]:
        values = fields.get(key, list, [])
        for i, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SpecError(f"{fields.at(key)}[{i}]", "expected a non-negative integer", value)
        return values

    def _rootfs(self, root: _Fields) -> str:
        path = root.get("path", str, required=True)
        full = path if path.startswith("/") else os.path.join(self.bundle_dir, path)
        if not os.path.isdir(full):
            raise SpecError("root.path", f"no such directory: {full}")
        return os.path.realpath(full)

    def _namespaces(self, linux: _Fields) -> None:
        for entry, raw in linux.items("namespaces"):
            kind = entry.get("type", str, required=True)
            if kind not in NAMESPACE_TYPES:
                raise SpecError(entry.at("type"), f"expected one of {', '.join(NAMESPACE_TYPES)}", kind)
            if kind in self.namespaces:
                raise SpecError(entry.at("type"), "expected each namespace type once", kind)
            path = entry.get("path", str)
            if path is not None:
                if not path.startswith("/"):
                    raise SpecError(entry.at("path"), "expected an absolute path", path)
                if not os.path.exists(path):
                    raise SpecError(entry.at("path"), f"no such namespace file: {path}")
                if kind == "mount":
                    raise SpecError(entry.at("path"), "not supported by sandbox-runtime: joining another mount "
                                    "namespace (every container builds its root in a new one)", path)
            self.namespaces[kind] = path or None
        if "mount" not in self.namespaces:
            raise SpecError("linux.namespaces", "expected a mount namespace: sandbox-runtime builds every "
                            "container's root in a new one (pivot_root), never in the host's")
        if "user" in self.namespaces:
            self.can_mknod = False

    def _id_maps(self, linux: _Fields, uid: int, gid: int):
        from ..plan import IdMappings
        uid_maps, gid_maps = [], []
        for key, into in (("uidMappings", uid_maps), ("gidMappings", gid_maps)):
            for entry, _ in linux.items(key):
                values = tuple(entry.get(k, int, required=True) for k in ("containerID", "hostID", "size"))
                if values[2] <= 0 or values[0] < 0 or values[1] < 0:
                    raise SpecError(entry.at("size"), "expected a positive size and non-negative ids", values)
                into.append(values)
        new_user = self.namespaces.get("user", "host") is None
        if not new_user:
            if uid_maps or gid_maps:
                raise SpecError("linux.uidMappings", "id mappings need a new user namespace in linux.namespaces")
            return None, None
        if not uid_maps or not gid_maps:
            raise SpecError("linux.uidMappings" if not uid_maps else "linux.gidMappings",
                            "a new user namespace needs uidMappings and gidMappings")
        id_map = IdMappings(tuple(uid_maps), tuple(gid_maps), "allow" if os.geteuid() == 0 else "deny")
        if id_map.host_uid_of(0) is None:
            raise SpecError("linux.uidMappings", "expected the container's uid 0 to be mapped (the root is "
                            "built as it)")
        if not any(inside <= 0 < inside + size for inside, _, size in gid_maps):
            raise SpecError("linux.gidMappings", "expected the container's gid 0 to be mapped")
        if id_map.host_uid_of(uid) is None:
            raise SpecError("process.user.uid", "expected an id that linux.uidMappings maps", uid)
        if not any(inside <= gid < inside + size for inside, _, size in gid_maps):
            raise SpecError("process.user.gid", "expected an id that linux.gidMappings maps", gid)
        return id_map, (0, 0)

    def _capabilities(self, caps: _Fields) -> dict:
        from ..profile.units import CAPABILITY_NUMBERS
        result = {}
        for name in CAP_SETS:
            values = caps.strings(name)
            for i, value in enumerate(values):
                if value not in CAPABILITY_NUMBERS:
                    raise SpecError(f"process.capabilities.{name}[{i}]", "expected a capability name such as "
                                    "CAP_NET_BIND_SERVICE", value)
            result[name] = tuple(dict.fromkeys(values))
        if not set(result["effective"]) <= set(result["permitted"]):
            extra = sorted(set(result["effective"]) - set(result["permitted"]))
            raise SpecError("process.capabilities.effective", "expected a subset of permitted", extra)
        return result

    def _rlimits(self, process: _Fields) -> tuple:
        limits = []
        seen = set()
        for entry, _ in process.items("rlimits"):
            kind = entry.get("type", str, required=True)
            if kind not in RLIMIT_TYPES:
                raise SpecError(entry.at("type"), f"expected one of {', '.join(RLIMIT_TYPES)}", kind)
            if kind in seen:
                raise SpecError(entry.at("type"), "expected each rlimit once", kind)
            seen.add(kind)
            soft, hard = entry.get("soft", int, required=True), entry.get("hard", int, required=True)
            # JSON carries RLIM_INFINITY as 2**64-1 (Go's uint64)
            soft, hard = (-1 if v >= 2**63 - 1 or v < 0 else v for v in (soft, hard))
            if hard != -1 and (soft == -1 or soft > hard):
                raise SpecError(entry.at("soft"), "expected soft <= hard", [soft, hard])
            limits.append((kind[len("RLIMIT_"):].lower(), soft, hard))
        return tuple(limits)

    def _resources(self, linux: _Fields) -> dict:
        resources = linux.get("resources", dict, {})
        res = linux.obj("resources")
        for key, kind in (("memory", dict), ("cpu", dict), ("pids", dict), ("blockIO", dict),
                          ("hugepageLimits", list), ("network", dict), ("unified", dict), ("devices", list),
                          ("rdma", dict)):
            res.get(key, kind)
        for entry, rule in res.items("devices"):
            entry.get("allow", bool, required=True)
            kind = entry.get("type", str)
            if kind not in (None, "a", "c", "b"):
                raise SpecError(entry.at("type"), "expected a, c or b", kind)
            access = entry.get("access", str, "rwm")
            if not access or set(access) - set("rwm"):
                raise SpecError(entry.at("access"), "expected letters of rwm", access)
            entry.get("major", int)
            entry.get("minor", int)
        res.refuse("kernelMemory", "kernel memory limits are deprecated")
        memory = res.obj("memory")
        for key in ("limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness"):
            memory.get(key, int)
        memory.refuse("checkBeforeUpdate", "not supported")
        cpu = res.obj("cpu")
        for key in ("shares", "quota", "period", "realtimeRuntime", "realtimePeriod", "burst", "idle"):
            cpu.get(key, int)
        for entry, _ in res.items("hugepageLimits"):
            entry.get("pageSize", str, required=True)
            entry.get("limit", int, required=True)
        resources = dict(resources)
        rules = list(resources.get("devices") or [])
        if rules or not self.rootless:
            # Deny everything first (runc's starting point too: a cgroup inherits its parent's
            # allow-all otherwise), then the bundle's rules, runc's defaults, and an allow rule
            # per linux.devices entry; the last rule that matches decides.
            rules = [{"allow": False, "access": "rwm"}] + rules + [dict(rule) for rule in DEFAULT_DEVICE_RULES]
            for entry, device in linux.items("devices"):
                kind = device.get("type")
                if kind in ("c", "b", "u"):
                    rules.append({"allow": True, "type": "c" if kind == "u" else kind, "major": device.get("major"),
                                  "minor": device.get("minor"), "access": "rwm"})
            resources["devices"] = rules
        if self.rootless:
            resources.pop("devices", None)  # no device cgroup to write: no mknod either (binds of host nodes)
        return resources

    def _mount_plan(self, linux: _Fields, rootfs: str, readonly: bool, cwd: str, cgroup_dirs: dict,
                    terminal: bool):
        from .. import mounts
        ops: list = []
        dev_mounted = pts_mounted = False
        for index, (entry, _) in enumerate(self.top.items("mounts")):
            destination = entry.get("destination", str, required=True)
            if not destination.startswith("/"):
                raise SpecError(entry.at("destination"), "expected an absolute path", destination)
            destination = os.path.normpath(destination)
            op = self._mount(entry, destination, cgroup_dirs)
            ops.append(op)
            dev_mounted = dev_mounted or destination == "/dev"
            pts_mounted = pts_mounted or destination == "/dev/pts"
        given = set()
        for entry, device in linux.items("devices"):
            ops.append(self._device(entry))
            given.add(os.path.normpath(entry.get("path", str)))
        for path, major, minor in DEFAULT_DEVICES:
            if path not in given:
                ops.append(mounts.DeviceNode(path, "c", major, minor, 0o666, 0, 0,
                                             None if self.can_mknod else path))
        ops += [mounts.Symlink("/dev/fd", "/proc/self/fd"), mounts.Symlink("/dev/stdin", "/proc/self/fd/0"),
                mounts.Symlink("/dev/stdout", "/proc/self/fd/1"), mounts.Symlink("/dev/stderr", "/proc/self/fd/2")]
        if pts_mounted:
            ops.append(mounts.Symlink("/dev/ptmx", "pts/ptmx"))
        ops.append(mounts.Directory(cwd))
        for i, path in enumerate(linux.strings("maskedPaths")):
            if not path.startswith("/"):
                raise SpecError(f"linux.maskedPaths[{i}]", "expected an absolute path", path)
            ops.append(mounts.Mask(path))
        for i, path in enumerate(linux.strings("readonlyPaths")):
            if not path.startswith("/"):
                raise SpecError(f"linux.readonlyPaths[{i}]", "expected an absolute path", path)
            ops.append(mounts.ReadOnly(path, recursive=False, secure=False))
        return mounts.MountPlan(rootfs, 0, readonly, tuple(ops), root_as_given=True)

    def _mount(self, entry: _Fields, destination: str, cgroup_dirs: dict):
        from .. import mounts
        fstype = entry.get("type", str, "") or ""
        source = entry.get("source", str, "") or ""
        options = entry.strings("options")
        entry.refuse("uidMappings", "idmapped mounts are not supported yet")
        entry.refuse("gidMappings", "idmapped mounts are not supported yet")
        flags = 0
        data = []
        bind = fstype == "bind"
        recursive = False
        propagation = 0
        copy_up = False
        for i, option in enumerate(options):
            where = entry.at("options") + f"[{i}]"
            if option in ("bind", "rbind"):
                bind = True
                recursive = recursive or option == "rbind"
            elif option in MOUNT_FLAGS or option in RECURSIVE_FLAGS:
                flag, on = MOUNT_FLAGS[RECURSIVE_FLAGS.get(option, option)]
                flags = flags | flag if on else flags & ~flag
            elif option in HONOURED_PROPAGATION:
                propagation |= HONOURED_PROPAGATION[option]
            elif option in REFUSED_PROPAGATION:
                raise SpecError(where, "not supported by sandbox-runtime: mount propagation with the host (every "
                                "container's mounts are private)", option)
            elif option == "tmpcopyup":
                copy_up = True
            elif option in ("idmap", "ridmap"):
                raise SpecError(where, "not supported by sandbox-runtime: idmapped mounts from the bundle", option)
            elif option in ("remount",):
                raise SpecError(where, "not supported: remount", option)
            else:
                data.append(option)
        if bind:
            if not source:
                raise SpecError(entry.at("source"), "expected the host path to bind")
            full = source if source.startswith("/") else os.path.join(self.bundle_dir, source)
            if not os.path.lexists(full):
                raise SpecError(entry.at("source"), f"no such file or directory: {full}")
            if data:
                raise SpecError(entry.at("options"), f"expected bind mount options ({', '.join(MOUNT_OPTIONS)})",
                                data[0])
            if copy_up:
                raise SpecError(entry.at("options"), "tmpcopyup applies to tmpfs mounts only", "tmpcopyup")
            return mounts.Mount(destination, "bind", full, flags, "", recursive, False, None, propagation)
        if not fstype:
            raise SpecError(entry.at("type"), "expected a file system type (or the bind option)")
        if fstype in ("cgroup", "cgroup2"):
            dirs = tuple(sorted((name, directory) for name, directory in cgroup_dirs.items()))
            return mounts.CgroupTree(destination, dirs, readonly=bool(flags & _libc.MS_RDONLY))
        if copy_up and fstype != "tmpfs":
            raise SpecError(entry.at("options"), "tmpcopyup applies to tmpfs mounts only", "tmpcopyup")
        fallback = {"sysfs": "/sys", "mqueue": "/dev/mqueue"}.get(fstype) if self.rootless or \
            "user" in self.namespaces else None
        return mounts.Mount(destination, fstype, source or fstype, flags, ",".join(data), False, copy_up, fallback,
                            propagation)

    def _device(self, entry: _Fields):
        from .. import mounts
        path = entry.get("path", str, required=True)
        if not path.startswith("/dev/"):
            raise SpecError(entry.at("path"), "expected a path below /dev", path)
        kind = entry.get("type", str, required=True)
        if kind not in ("c", "b", "u", "p"):
            raise SpecError(entry.at("type"), "expected c, b, u or p", kind)
        major, minor = entry.get("major", int, 0), entry.get("minor", int, 0)
        if kind != "p" and (not entry.has("major") or not entry.has("minor")):
            raise SpecError(entry.at("major"), "required for a character or block device")
        mode = entry.get("fileMode", int, 0o666)
        bind_from = None
        if not self.can_mknod:
            try:
                info = os.stat(path)
            except OSError:
                raise SpecError(entry.at("path"), f"{path} does not exist on the host, and a rootless container "
                                "cannot make device nodes (it binds the host's)") from None
            if kind != "p" and (os.major(info.st_rdev), os.minor(info.st_rdev)) != (major, minor):
                raise SpecError(entry.at("path"), f"the host's {path} is not device {major}:{minor}")
            bind_from = path
        return mounts.DeviceNode(os.path.normpath(path), kind, major, minor, mode, entry.get("uid", int, 0),
                                 entry.get("gid", int, 0), bind_from)

    def _seccomp(self, linux: _Fields, caps: dict):
        if not linux.has("seccomp"):
            return None, False
        section = linux.obj("seccomp")
        section.get("defaultAction", str, required=True)
        log = False
        for i, flag in enumerate(section.strings("flags")):
            if flag in REFUSED_SECCOMP_FLAGS:
                raise SpecError(f"linux.seccomp.flags[{i}]", "not supported by sandbox-runtime", flag)
            if flag not in SECCOMP_FLAGS:
                raise SpecError(f"linux.seccomp.flags[{i}]", f"expected one of {', '.join(SECCOMP_FLAGS)}", flag)
            log = log or flag == "SECCOMP_FILTER_FLAG_LOG"
        uses_notify = section.get("defaultAction", str) == "SCMP_ACT_NOTIFY"
        for entry, _ in section.items("syscalls"):
            entry.get("action", str, required=True)
            uses_notify = uses_notify or entry.get("action", str) == "SCMP_ACT_NOTIFY"
            for arg, _ in entry.items("args"):
                index = arg.get("index", int, required=True)
                if not 0 <= index <= 5:
                    raise SpecError(arg.at("index"), "expected 0..5", index)
        agent = None
        if uses_notify or section.has("listenerPath"):
            path = section.get("listenerPath", str)
            if not path:
                raise SpecError("linux.seccomp.listenerPath", "required when an action is SCMP_ACT_NOTIFY")
            if not path.startswith("/"):
                raise SpecError("linux.seccomp.listenerPath", "expected an absolute path", path)
            if not uses_notify:
                raise SpecError("linux.seccomp.listenerPath", "expected an SCMP_ACT_NOTIFY action to go with it")
            agent = (path, section.get("listenerMetadata", str, ""))
        self.seccomp_agent = agent
        from ..seccomp.docker import import_docker
        try:
            policy = import_docker(section.data, frozenset(caps["effective"]), name=f"oci:{self.container_id}")
        except (ValueError, TypeError, KeyError) as exc:
            raise SpecError("linux.seccomp", f"expected an OCI seccomp section ({exc})") from None
        from ..seccomp import compile_bpf
        try:
            _compile_or_known_refusal(policy)
        except ValueError as exc:
            if len(policy.architectures) == 1:
                raise SpecError("linux.seccomp", f"the filter cannot be compiled: {exc}") from None
            # Argument rules on a multiplexed call (socket through i386's socketcall) that libseccomp
            # cannot express for a foreign ABI: that ABI is refused altogether instead (its calls
            # kill the process), which is stricter, never weaker, than what was asked.
            import dataclasses
            native = dataclasses.replace(policy, architectures=("native",))
            try:
                compile_bpf(native)
            except ValueError as again:
                raise SpecError("linux.seccomp", f"the filter cannot be compiled: {again}") from None
            dropped = ", ".join(a for a in policy.architectures if a != "native")
            self.warnings.append(f"config.json: linux.seccomp.architectures: {dropped} refused altogether "
                                 f"(libseccomp cannot express this profile's argument rules for them: {exc})")
            policy = native
        return policy, log

    def _sysctls(self, linux: _Fields) -> tuple:
        sysctls = []
        for name, value in linux.get("sysctl", dict, {}).items():
            where = f"linux.sysctl.{name}"
            if not isinstance(value, str):
                raise SpecError(where, "expected a string", value)
            if "/" in name or ".." in name:
                raise SpecError(where, "expected a sysctl name such as net.ipv4.ip_forward", name)
            if name in IPC_SYSCTLS or name.startswith("fs.mqueue."):
                needs = "ipc"
            elif name.startswith("net."):
                needs = "network"
            elif name in ("kernel.hostname", "kernel.domainname"):
                needs = "uts"
            else:
                raise SpecError(where, "expected a namespaced sysctl (kernel.msg*, kernel.sem, kernel.shm*, "
                                "fs.mqueue.*, net.*): this one would change the host", name)
            if self.namespaces.get(needs, "host") is not None:
                raise SpecError(where, f"needs a new {needs} namespace in linux.namespaces: it would change "
                                "the host's", name)
            sysctls.append((name, value))
        return tuple(sysctls)

    def _time_offsets(self, linux: _Fields) -> str | None:
        if not linux.has("timeOffsets"):
            return None
        if self.namespaces.get("time", "host") is not None:
            raise SpecError("linux.timeOffsets", "needs a new time namespace in linux.namespaces")
        lines = []
        for clock, offset in linux.get("timeOffsets", dict).items():
            if clock not in ("monotonic", "boottime"):
                raise SpecError(f"linux.timeOffsets.{clock}", "expected monotonic or boottime", clock)
            fields = _Fields(offset, f"linux.timeOffsets.{clock}")
            lines.append(f"{clock} {fields.get('secs', int, 0)} {fields.get('nanosecs', int, 0)}\n")
        return "".join(lines)

    def _hooks(self) -> dict:
        hooks = {}
        section = self.top.obj("hooks")
        for stage in HOOK_STAGES:
            found = []
            for entry, _ in section.items(stage):
                path = entry.get("path", str, required=True)
                if not path.startswith("/"):
                    raise SpecError(entry.at("path"), "expected an absolute path", path)
                timeout = entry.get("timeout", int)
                if timeout is not None and timeout <= 0:
                    raise SpecError(entry.at("timeout"), "expected a positive number of seconds", timeout)
                found.append((path, tuple(entry.strings("args")), tuple(entry.strings("env")), timeout))
            if found:
                hooks[stage] = tuple(found)
        return hooks


def _compile_or_known_refusal(policy) -> None:
    """compile_bpf (cached on disk), and a refusal remembered too: engines send the same profile
    for every container, and libseccomp takes ~5 ms to refuse it again."""
    from .. import usercache
    from ..seccomp import compile_bpf, policy_digest
    directory = usercache.directory("seccomp")
    name = policy_digest(policy) + ".refused"
    known = usercache.read(directory, name)
    if known is not None:
        raise ValueError(known.decode(errors="replace"))
    try:
        compile_bpf(policy)
    except ValueError as exc:
        usercache.write(directory, name, str(exc).encode())
        raise


def check_hooks_exist(bundle: Bundle) -> None:
    """Runtime-namespace hooks must be there at create (in-container ones are found in the container)."""
    for stage in ("prestart", "createRuntime", "poststart", "poststop"):
        for index, (path, *_rest) in enumerate(bundle.hooks.get(stage, ())):
            try:
                info = os.stat(path)
            except OSError:
                raise SpecError(f"hooks.{stage}[{index}].path", f"no such file: {path}") from None
            if not stat.S_ISREG(info.st_mode) or not os.access(path, os.X_OK):
                raise SpecError(f"hooks.{stage}[{index}].path", f"not an executable file: {path}")
