"""The runtime floor applied to a bundle: what config.json asks, judged before anything is created.

    judgement = judge(config, bundle_dir, container_id, floor)   # pure but for stat()s and /proc
    judgement.refusals       what is below the floor (enforce: create refused, naming the first)
    judgement.needs_range    a host id range must be allocated (sandbox.oci.idranges), then
    judgement.apply_range(allocation)
    judgement.config         config.json as the container gets it (raised: a user namespace,
                             no_new_privs, masked and read-only paths, a cgroup namespace)
    bundle = spec.load_bundle(..., config=judgement.config)
    bundle, fds = finish(bundle, judgement, allocation)   # idmapped trees, seccomp, Landlock

Each rule either *raises* what config.json leaves out (a user namespace, no_new_privs, masked
paths: the container gets more isolation than it asked for, in enforce and warn mode alike) or
*refuses* what it asks for below the floor (capabilities, host namespaces, devices, binds,
maps of host uid 0): enforce refuses create with one line naming the config field and the rule,
warn lets it run as asked with a warning in the log and the audit trail. Mode off does neither.
Every decision goes to the audit trail. See docs/oci.md, "The floor".
"""
from __future__ import annotations

import copy
import os
import stat

from ..compiled_dataclass import dataclass
from .floor import ANNOTATION_VERIFY, HOST_NAMESPACES, USUAL_DEVICES, Floor
from .state import RuntimeFailure

PROC_NAMES = {"pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts", "user": "user", "cgroup": "cgroup",
              "mount": "mnt", "time": "time"}
# Annotations naming a Pod sandbox, whose directories (hosts, resolv.conf, shm) the engine made for it.
SANDBOX_ID_ANNOTATIONS = ("io.kubernetes.cri.sandbox-id", "io.kubernetes.cri-o.SandboxID",
                          "io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid")
RELAX_HINTS = {
    "capabilities": 'an administrator allows it with [capabilities] allow = ["{what}"]',
    "namespaces.host": 'an administrator allows it with [namespaces] host = ["{what}"]',
    "devices": 'an administrator allows it with [devices] allow = ["{what}"]',
    "mounts": 'an administrator allows this path with [paths] rw_allowed = ["{what}"]',
    "volumes.root_owned": "give the volume an owner (chown -R UID:GID {what}: container root then writes as that "
                          'owner), mount it read-only, or, an administrator, [volumes] root_owned = "host-root"',
    "user_namespace": "an administrator allows it with [user_namespace] required = false",
    "annotations": "",
}


class FloorRefusal(RuntimeFailure):
    """A container below the floor, in enforce mode: one line naming the field and the rule."""


@dataclass(frozen=True)
class Decision:
    """One thing the floor did about one config field (a line of the audit record)."""

    rule: str
    field: str
    action: str  # "raised", "refused", "allowed" (warn: below the floor, run as asked), "kept", "off"
    detail: str
    hint: str = ""

    def line(self) -> str:
        where = f"config.json: {self.field}: " if self.field else ""
        text = f"{where}{self.detail} (floor rule {self.rule})"
        return f"{text}; {self.hint}" if self.hint else text

    def record(self) -> dict:
        return {"rule": self.rule, "field": self.field, "action": self.action, "detail": self.detail}


class Judgement:
    """What judge() decided; see the module's docstring."""

    def __init__(self, floor: Floor, config: dict, source: str, range_size: int = 65536):
        self.floor, self.config, self.source, self.range_size = floor, config, source, range_size
        self.decisions: list[Decision] = []
        self.needs_range = False
        self.verify = False
        self.binds: list[dict] = []  # per bind mount: index, kind ("engine", "readonly", "volume"), owner
        self.default_seccomp = False  # config.json has no filter: the default policy is the container's
        self.engine_maps = False  # the engine mapped ids itself (kept)
        self.workdir: str | None = None  # the overlay work directory made for an idmapped root
        self.share: tuple[int, str] | None = None  # (host uid base, path): a Pod sandbox's user namespace
        self.shared = False  # joined it (apply_shared)
        self.fds: dict[int, int] = {}  # mounts[index] -> the O_PATH descriptor of its source, as judged

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    @property
    def refusals(self) -> list[Decision]:
        return [d for d in self.decisions if d.action == "refused"]

    @property
    def warnings(self) -> list[str]:
        return [f"floor (warn): {d.line()}" for d in self.decisions if d.action == "allowed"]

    def below(self, rule: str, field: str, detail: str, what: str = "") -> None:
        """Something config.json asks for below the floor: refused (enforce) or allowed (warn)."""
        template = RELAX_HINTS.get(rule, "")
        hint = template.format(what=what) if what or "{what}" not in template else ""
        if hint and rule != "volumes.root_owned":
            hint += f" in {self.source if self.source.startswith('/') else '/etc/sandbox/runtime.toml'}"
        action = "refused" if self.floor.mode == "enforce" else "allowed"
        self.decisions.append(Decision(rule, field, action, detail, hint))

    def raised(self, rule: str, field: str, detail: str) -> None:
        self.decisions.append(Decision(rule, field, "raised", detail))

    def kept(self, rule: str, field: str, detail: str) -> None:
        self.decisions.append(Decision(rule, field, "kept", detail))

    def refuse_if_below(self) -> None:
        if self.refusals:
            first = self.refusals[0]
            more = len(self.refusals) - 1
            raise FloorRefusal(f"runtime floor: {first.line()}" + (f" (and {more} more)" if more else ""))

    def apply_range(self, allocation) -> None:
        """The container's ids mapped onto its host range (a user namespace the floor raised)."""
        linux = self.config.setdefault("linux", {})
        linux["uidMappings"] = [{"containerID": 0, "hostID": allocation.uid, "size": allocation.size}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": allocation.gid, "size": allocation.size}]
        self.raised("user_namespace", "linux.namespaces", f"a user namespace of its own: container ids "
                    f"0-{allocation.size - 1} are host ids {allocation.uid}-{allocation.uid + allocation.size - 1}")

    def apply_shared(self, path: str, allocation) -> None:
        """The container joins its Pod sandbox's user namespace (and range), see _sandbox_user_namespace."""
        self.config.setdefault("linux", {}).setdefault("namespaces", []).append({"type": "user", "path": path})
        self.shared = True
        self.raised("user_namespace", "linux.namespaces", f"joins the user namespace of the container whose "
                    f"namespaces it joins ({path}: container ids 0-{allocation.size - 1} are host ids "
                    f"{allocation.uid}-{allocation.uid + allocation.size - 1}, shared)")

    def state(self) -> dict:
        """What later commands need (exec holds its processes to the same floor; start verifies)."""
        floor = self.floor
        return {"name": floor.name, "source": floor.source, "mode": floor.mode, "verify": self.verify,
                "user_namespace": floor.user_namespace, "host_namespaces": sorted(floor.host_namespaces),
                "masked_paths": list(floor.masked_paths),
                "no_new_privs": floor.no_new_privs and floor.mode != "off",
                "capabilities": sorted(floor.capabilities), "seccomp_floor": floor.seccomp if floor.mode != "off"
                else "none", "default_seccomp": self.default_seccomp}


# ---------------------------------------------------------------- judging config.json

def judge(config: dict, bundle_dir: str, container_id: str, floor: Floor, problem: str | None = None,
          source: str = "built-in", range_size: int = 65536) -> Judgement:
    """Judge config.json against the floor (see the module's docstring). `problem`: what choosing
    the floor from the annotations found wrong (Settings.choose); `source`: the floor file;
    `range_size`: the ids a container's range holds."""
    judgement = Judgement(floor, copy.deepcopy(config), source, range_size)
    if floor.mode == "off":
        judgement.decisions.append(Decision("mode", "", "off", "the floor is off (mode = \"off\", for conformance "
                                            "testing): nothing is checked, raised or refused"))
        return judgement
    config = judgement.config
    if problem:
        field, _, detail = problem.partition(": ")
        judgement.below("annotations", field, detail)
    linux = config.get("linux") if isinstance(config.get("linux"), dict) else {}
    process = config.get("process") if isinstance(config.get("process"), dict) else {}
    namespaces = [n for n in linux.get("namespaces") or [] if isinstance(n, dict)]
    kinds = {n.get("type"): (i, n) for i, n in enumerate(namespaces)}
    _user_namespace(judgement, config, linux, process, kinds)
    _host_namespaces(judgement, linux, kinds)
    if judgement.needs_range:
        _sysctls_in_range(judgement, linux)
    if floor.no_new_privs and process.get("noNewPrivileges") is not True:
        process["noNewPrivileges"] = True
        judgement.raised("no_new_privs", "process.noNewPrivileges", "set: setuid files and file capabilities "
                         "never raise privileges")
    _capabilities(judgement, process.get("capabilities") or {}, "process.capabilities")
    _devices(judgement, linux)
    _seccomp(judgement, linux)
    _paths(judgement, linux)
    _binds(judgement, config, bundle_dir, container_id, process)
    annotations = config.get("annotations") if isinstance(config.get("annotations"), dict) else {}
    judgement.verify = floor.verify or annotations.get(ANNOTATION_VERIFY) == "true"
    if judgement.verify:
        judgement.kept("verify", f"annotations.{ANNOTATION_VERIFY}" if not floor.verify else "",
                       "the probe runs inside the container at start, before the workload")
    return judgement


def _user_namespace(judgement: Judgement, config: dict, linux: dict, process: dict, kinds: dict) -> None:
    from .spec import in_initial_user_namespace
    floor = judgement.floor
    if "user" in kinds:
        index, entry = kinds["user"]
        path = entry.get("path")
        if path:
            maps = _joined_maps(path)
            if maps is None:
                judgement.below("user_namespace", f"linux.namespaces[{index}].path",
                                f"the user namespace at {path} cannot be inspected")
            elif _maps_host_zero(maps[0]) or _maps_host_zero(maps[1]):
                judgement.below("user_namespace", f"linux.namespaces[{index}].path",
                                f"the user namespace at {path} maps host id 0 (it is the host's, or as good as)")
            else:
                judgement.engine_maps = True
                judgement.kept("user_namespace", f"linux.namespaces[{index}].path", "joins a user namespace whose "
                               "maps never include host id 0")
            return
        for key in ("uidMappings", "gidMappings"):
            host = _host_ranges(linux.get(key) or [])
            for i, (start, count) in enumerate(host):
                if start <= 0 < start + count:
                    judgement.below("user_namespace", f"linux.{key}[{i}]", "maps container ids onto host id 0")
        judgement.engine_maps = True
        judgement.kept("user_namespace", "linux.uidMappings", "the engine's own maps (they never include host id 0)")
        return
    if not floor.user_namespace:
        judgement.decisions.append(Decision("user_namespace", "linux.namespaces", "allowed",
                                            "no user namespace (the floor does not require one)"))
        return
    if os.geteuid() == 0 and in_initial_user_namespace():
        size = judgement.range_size
        user = process.get("user") if isinstance(process.get("user"), dict) else {}
        for key in ("uid", "gid"):
            value = user.get(key, 0)
            if isinstance(value, int) and not 0 <= value < size:
                judgement.below("user_namespace", f"process.user.{key}", f"{value} is outside the container's id "
                                f"range 0-{size - 1} (the floor maps that many ids)")
        for i, value in enumerate(user.get("additionalGids") or []):
            if isinstance(value, int) and not 0 <= value < size:
                judgement.below("user_namespace", f"process.user.additionalGids[{i}]", f"{value} is outside the "
                                f"container's id range 0-{size - 1}")
        judgement.needs_range = True
        judgement.share = _sandbox_user_namespace(kinds)
        if judgement.share is None:
            config.setdefault("linux", {}).setdefault("namespaces", []).append({"type": "user"})
        return
    # Root of a user namespace (rootless podman): the container shares it; its maps must not reach host 0.
    maps = _maps_of("self")
    if _maps_host_zero(maps[0]) or _maps_host_zero(maps[1]):
        judgement.below("user_namespace", "linux.namespaces", "no user namespace, and the runtime's own maps "
                        "include host id 0")
    else:
        judgement.engine_maps = True
        judgement.kept("user_namespace", "linux.namespaces", "the engine's user namespace (the runtime's own, whose "
                       "maps never include host id 0)")


NS_GET_USERNS = 0xB701


def _sandbox_user_namespace(kinds: dict) -> tuple[int, str] | None:
    """(host uid base, path) of the user namespace that owns the namespaces config.json joins by
    path, when that is another container's of this runtime (a Pod's sandbox: its containers join
    its network, ipc and uts namespaces, which its user namespace owns). The container then joins
    that user namespace too, and shares its host id range, as the containers of a Kubernetes Pod
    with hostUsers: false share one. None otherwise."""
    import fcntl
    for kind, (_index, entry) in kinds.items():
        path = entry.get("path")
        if not path or kind == "user":
            continue
        parts = path.split("/")
        if len(parts) != 5 or parts[:2] != ["", "proc"] or not parts[2].isdigit() or parts[3] != "ns":
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            owner = fcntl.ioctl(fd, NS_GET_USERNS)
        except OSError:
            continue
        finally:
            os.close(fd)
        try:
            owner_info = os.fstat(owner)
        finally:
            os.close(owner)
        candidate = f"/proc/{parts[2]}/ns/user"
        try:
            info = os.stat(candidate)
            if (info.st_dev, info.st_ino) != (owner_info.st_dev, owner_info.st_ino):
                continue
            host = os.stat("/proc/self/ns/user")  # (rootful: the host's)
            if (host.st_dev, host.st_ino) == (info.st_dev, info.st_ino):
                continue  # the host's: nothing to share
            uid_map, _gid_map = _maps_of(parts[2])
        except OSError:
            continue
        if len(uid_map) == 1 and uid_map[0][0] == 0 and uid_map[0][1] > 0:
            return uid_map[0][1], candidate
    return None


def _sysctls_in_range(judgement: Judgement, linux: dict) -> None:
    """net.ipv4.ping_group_range names gids as the container sees them: in a user namespace of
    the floor's, only 0..size-1 exist (Docker asks for "0 2147483647", all groups: the kernel
    refuses ids the namespace does not map). Clamped to the container's groups, all of them."""
    sysctls = linux.get("sysctl")
    if not isinstance(sysctls, dict):
        return
    value = sysctls.get("net.ipv4.ping_group_range")
    if not isinstance(value, str):
        return
    try:
        low, high = (int(part) for part in value.split())
    except ValueError:
        return
    top = judgement.range_size - 1
    if high > top or low > top:
        clamped = f"{min(low, top)} {min(high, top)}"
        sysctls["net.ipv4.ping_group_range"] = clamped
        judgement.raised("user_namespace", "linux.sysctl.net.ipv4.ping_group_range",
                         f"{value!r} clamped to {clamped!r}: the container's groups are 0-{top}")


def _maps_of(pid: str) -> tuple[list, list]:
    maps = []
    for kind in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{kind}") as handle:
            maps.append([tuple(int(n) for n in line.split()) for line in handle if line.strip()])
    return maps[0], maps[1]


def _to_host(ranges: list[tuple[int, int]], own: list) -> list[tuple[int, int]]:
    """Ranges of ids of this process's user namespace, as ids of the initial one (through our maps)."""
    if own == [(0, 0, 4294967295)]:
        return ranges
    out = []
    for start, count in ranges:
        for inside, outside, size in own:
            low, high = max(start, inside), min(start + count, inside + size)
            if low < high:
                out.append((outside + low - inside, high - low))
    return out


def _maps_host_zero(lines: list) -> bool:
    """Whether a uid_map/gid_map (of a namespace whose parent is ours) reaches host id 0."""
    own_uid, _own_gid = _maps_of("self")
    host = _to_host([(outside, count) for _inside, outside, count in lines], own_uid)
    return any(start <= 0 < start + count for start, count in host)


def _host_ranges(entries: list) -> list[tuple[int, int]]:
    own_uid, _ = _maps_of("self")
    ranges = [(e.get("hostID", -1), e.get("size", 0)) for e in entries if isinstance(e, dict)]
    return [r for one in ranges for r in (_to_host([one], own_uid) or [one])]


def _joined_maps(path: str) -> tuple[list, list] | None:
    """The maps of the user namespace at `path`, read by a child that joins it."""
    import json
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            from .. import _libc
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            _libc.setns(fd, _libc.CLONE_NEWUSER)
            os.write(write_fd, json.dumps(_maps_of("self")).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    data = b""
    while chunk := os.read(read_fd, 65536):
        data += chunk
    os.close(read_fd)
    os.waitpid(pid, 0)
    try:
        uid, gid = json.loads(data)
        return [tuple(line) for line in uid], [tuple(line) for line in gid]
    except ValueError:
        return None


def _host_namespaces(judgement: Judgement, linux: dict, kinds: dict) -> None:
    floor = judgement.floor
    for kind in HOST_NAMESPACES:
        proc = PROC_NAMES[kind]
        if kind not in kinds:
            if kind in floor.host_namespaces:
                judgement.kept("namespaces.host", "linux.namespaces", f"the host's {kind} namespace (the floor "
                               "allows it)")
            else:
                judgement.below("namespaces.host", "linux.namespaces", f"no {kind} namespace: the container would "
                                f"share the host's", kind)
            continue
        index, entry = kinds[kind]
        path = entry.get("path")
        if path and _is_host_namespace(path, proc) and kind not in floor.host_namespaces:
            judgement.below("namespaces.host", f"linux.namespaces[{index}].path", f"{path} is the host's {kind} "
                            "namespace", kind)
    if "cgroup" not in kinds:
        linux.setdefault("namespaces", []).append({"type": "cgroup"})
        judgement.raised("namespaces", "linux.namespaces", "a cgroup namespace of its own (its cgroup is its root)")


def _is_host_namespace(path: str, proc: str) -> bool:
    try:
        joined = os.stat(path)
    except OSError:
        return False
    for host in (f"/proc/1/ns/{proc}", f"/proc/self/ns/{proc}"):
        try:
            info = os.stat(host)
        except OSError:
            continue
        if (info.st_dev, info.st_ino) == (joined.st_dev, joined.st_ino):
            return True
    return False


def _capabilities(judgement: Judgement, caps: dict, prefix: str) -> None:
    if not isinstance(caps, dict):
        return
    allowed = judgement.floor.capabilities
    seen = set()
    for name in ("bounding", "effective", "permitted", "inheritable", "ambient"):
        for i, cap in enumerate(caps.get(name) or []):
            if isinstance(cap, str) and cap not in allowed and cap not in seen:
                seen.add(cap)
                judgement.below("capabilities", f"{prefix}.{name}[{i}]", f"{cap} is beyond the floor's capabilities",
                                cap)


def check_exec_capabilities(floor_state: dict, process: dict, file: str) -> list[str]:
    """The exec'd process's capabilities beyond the floor recorded at create: 'field: cap' each."""
    allowed = set(floor_state.get("capabilities") or [])
    found = []
    caps = process.get("capabilities") if isinstance(process.get("capabilities"), dict) else {}
    for name in ("bounding", "effective", "permitted", "inheritable", "ambient"):
        for i, cap in enumerate(caps.get(name) or []):
            if isinstance(cap, str) and cap not in allowed:
                found.append(f"{file}: capabilities.{name}[{i}]: {cap} is beyond the runtime floor's capabilities "
                             "(floor rule capabilities)")
    return found


def _device_allowed(floor: Floor, kind: str, major, minor) -> bool:
    for k, ma, mi in USUAL_DEVICES + tuple(floor.devices):
        if k == kind and ma == major and (mi == -1 or mi == minor):
            return True
    return False


def _devices(judgement: Judgement, linux: dict) -> None:
    floor = judgement.floor
    for i, device in enumerate(linux.get("devices") or []):
        if not isinstance(device, dict):
            continue
        kind = "c" if device.get("type") == "u" else device.get("type")
        if kind == "p":
            continue  # a FIFO is no device
        major, minor = device.get("major"), device.get("minor")
        if not _device_allowed(floor, kind, major, minor):
            judgement.below("devices", f"linux.devices[{i}]", f"{device.get('path')} ({kind} {major}:{minor}) is not "
                            "one of the usual character devices", f"{kind} {major}:{minor}")
    rules = ((linux.get("resources") or {}).get("devices") or []) if isinstance(linux.get("resources"), dict) else []
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict) or not rule.get("allow"):
            continue
        access = rule.get("access") or "rwm"
        if not set(access) & set("rw"):
            continue  # mknod alone: no node can be made in a user namespace anyway
        kind = rule.get("type") or "a"
        major = rule.get("major", -1)
        minor = rule.get("minor", -1)
        major = -1 if major is None else major
        minor = -1 if minor is None else minor
        if kind == "a" or major == -1 or (minor == -1 and not _device_allowed(floor, kind, major, -1)) or \
                (minor != -1 and not _device_allowed(floor, kind, major, minor)):
            shown = f"{kind} {'*' if major == -1 else major}:{'*' if minor == -1 else minor} {access}"
            judgement.below("devices", f"linux.resources.devices[{i}]", f"allows {shown}, beyond the usual character "
                            "devices", shown.rsplit(" ", 1)[0])


def _seccomp(judgement: Judgement, linux: dict) -> None:
    section = linux.get("seccomp")
    floor = judgement.floor
    if isinstance(section, dict) and _empty_filter(section):
        linux.pop("seccomp")
        section = None
        judgement.raised("seccomp", "linux.seccomp", "an empty filter (allows everything) is no filter")
    if not isinstance(section, dict):
        judgement.default_seccomp = True
        judgement.raised("seccomp", "linux.seccomp", "the default policy (config.json has no filter)"
                         + (f", and the {floor.seccomp} floor filter below it" if floor.seccomp == "strict" else ""))
        return
    if floor.seccomp != "none":
        judgement.raised("seccomp", "linux.seccomp", f"the engine's filter, with the {floor.seccomp} floor filter "
                         "below it (the kernel applies the strictest result)")
    else:
        judgement.kept("seccomp", "linux.seccomp", "the engine's filter alone (the floor has no filter)")


def _empty_filter(section: dict) -> bool:
    if section.get("defaultAction") not in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG"):
        return False
    return all(isinstance(entry, dict) and entry.get("action") in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
               for entry in section.get("syscalls") or [])


def _paths(judgement: Judgement, linux: dict) -> None:
    floor = judgement.floor
    for key, wanted in (("maskedPaths", floor.masked_paths), ("readonlyPaths", floor.readonly_paths)):
        present = [p for p in linux.get(key) or [] if isinstance(p, str)]
        missing = [p for p in wanted if p not in present]
        if missing:
            linux[key] = present + missing
            judgement.raised("paths", f"linux.{key}", "added " + ", ".join(missing))


# ---------------------------------------------------------------- binds

def _is_bind(mount: dict) -> bool:
    options = mount.get("options") or []
    return mount.get("type") == "bind" or "bind" in options or "rbind" in options


def _read_only(mount: dict) -> bool:
    flag = None
    for option in mount.get("options") or []:
        if option in ("ro", "rro"):
            flag = True
        elif option in ("rw", "rrw"):
            flag = False
    return bool(flag)


def _engine_ids(container_id: str, annotations: dict) -> set[str]:
    """Ids an engine generated (long random hex or a UUID), which no one could have named a directory
    after beforehand: this container's, and its Pod sandbox's."""
    found = set()
    for value in [container_id] + [annotations.get(key) for key in SANDBOX_ID_ANNOTATIONS]:
        if isinstance(value, str) and len(value) >= 32 and all(c in "0123456789abcdef-" for c in value.lower()):
            found.add(value)
    return found


def _root_like() -> set[int]:
    """The uids that are root here: 0, and, for a runtime in a user namespace (rootless podman's),
    the overflow uid that the host's root (unmapped there) shows as."""
    from .spec import in_initial_user_namespace
    if in_initial_user_namespace():
        return {0}
    try:
        with open("/proc/sys/kernel/overflowuid") as handle:
            return {0, int(handle.read())}
    except (OSError, ValueError):
        return {0}


def _root_only_chain(directory: str) -> bool:
    """Every directory from / down to `directory` belongs to root (rootless: to the runtime's own
    root or the host's), and none but a sticky one (/tmp) lets anyone else create entries: only
    root could have made `directory`."""
    roots = _root_like()
    path = "/"
    parts = [p for p in directory.split("/") if p]
    for index in range(len(parts) + 1):
        try:
            info = os.lstat(path)
        except OSError:
            return False
        if not stat.S_ISDIR(info.st_mode) or info.st_uid not in roots:
            return False
        last = index == len(parts)
        if info.st_mode & 0o022 and (last or not info.st_mode & stat.S_ISVTX):
            return False
        if not last:
            path = os.path.join(path, parts[index])
    return True


def engine_made(real: str, bundle_dir: str, ids: set[str]) -> bool:
    """Whether a bind source is what the engine made for this container alone (podman's
    overlay-containers/ID/userdata files, Docker's containers/ID/, a Pod sandbox's directory, the
    bundle's own directory): in a directory named after this container's engine-generated id, or
    in the bundle directory, with only root able to have made either."""
    bundle_real = os.path.realpath(bundle_dir)
    if (real == bundle_real or real.startswith(bundle_real + "/")) and _root_only_chain(bundle_real):
        return True
    parts = real.split("/")
    for index, part in enumerate(parts):
        if part in ids and _root_only_chain("/".join(parts[:index + 1]) or "/"):
            return True
    return False


def _binds(judgement: Judgement, config: dict, bundle_dir: str, container_id: str, process: dict) -> None:
    from .. import sources
    floor = judgement.floor
    annotations = config.get("annotations") if isinstance(config.get("annotations"), dict) else {}
    ids = _engine_ids(container_id, annotations)
    user = process.get("user") if isinstance(process.get("user"), dict) else {}
    workload_root = user.get("uid", 0) == 0
    for index, mount in enumerate(config.get("mounts") or []):
        if not isinstance(mount, dict) or not _is_bind(mount):
            continue
        field = f"mounts[{index}].source"
        source = mount.get("source") or ""
        full = source if source.startswith("/") else os.path.join(bundle_dir, source)
        try:
            opened = sources.open_path(full, hint_root=True)
        except sources.SourceError as exc:
            if exc.errno == 2:
                continue  # translation names a missing source
            judgement.below("mounts", field, str(exc), full)
            continue
        real, info = opened.path, opened.info
        # The descriptor is what gets bound (finish): the path is never looked up again, so a
        # component swapped for a symlink after this check changes nothing.
        judgement.fds[index] = opened.fd
        read_only = _read_only(mount)
        allowed = real in floor.rw_paths
        socket_reason = sources.runtime_socket_reason(real)
        if socket_reason and not allowed:
            judgement.below("mounts", field, f"{socket_reason}; refused in any mode", real)
            continue
        if engine_made(real, bundle_dir, ids):
            judgement.binds.append({"index": index, "kind": "engine", "real": real})
            continue
        if not read_only:
            reason = sources.system_path_reason(real)
            if reason and not allowed:
                judgement.below("mounts", field, f"{reason}: refused read-write", real)
                continue
        if read_only and floor.seccomp != "none":
            # (the floor filter denies mount_setattr and remounts: read-only stays read-only)
            judgement.binds.append({"index": index, "kind": "readonly", "real": real})
            continue
        if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
            judgement.binds.append({"index": index, "kind": "plain", "real": real})
            continue
        owner = None
        if workload_root and judgement.needs_range:  # (an engine's own maps never reach host 0: nothing to judge)
            if info.st_uid == 0 or info.st_gid == 0:
                whose = "root" if info.st_uid == 0 else "group root (gid 0)"
                if floor.root_owned_volumes == "host-root":
                    judgement.kept("volumes.root_owned", field, f"{real} belongs to {whose}: container root writes "
                                   "there as host root (the floor allows it)")
                    judgement.binds.append({"index": index, "kind": "engine", "real": real})
                    continue
                judgement.below("volumes.root_owned", field, f"{real} is bound read-write and belongs to {whose}: "
                                "container root's files there would be host root's", real)
                if judgement.floor.mode != "enforce":
                    judgement.binds.append({"index": index, "kind": "engine", "real": real})  # warn: as asked
                continue
            owner = (info.st_uid, info.st_gid)
        judgement.binds.append({"index": index, "kind": "volume", "real": real, "owner": owner})
        judgement.kept("volumes", field, f"{real}: " + (f"container root writes as its owner {owner[0]}:{owner[1]}"
                                                         if owner else "container ids write as themselves "
                                                         "(ids 1-65535; root has no id there)"))


# ---------------------------------------------------------------- the plan

def finish(bundle, judgement: Judgement, allocation) -> tuple:
    """(the bundle with the floor in its plan, descriptors the caller closes once the container is
    created): idmapped root and binds (with a host id range), the seccomp floor, Landlock."""
    import dataclasses
    plan = bundle.plan
    floor = judgement.floor
    opened: list[int] = []
    if floor.mode == "off":
        return bundle, opened
    changes: dict = {}
    if judgement.shared:
        changes["init_ids"] = (0, 0)  # init takes the joined namespace's root, as in one it made
    from ..seccomp.floor import floor_policy
    if judgement.default_seccomp:
        from ..seccomp import default_policy
        changes["seccomp"] = default_policy()
        changes["seccomp_floor"] = floor_policy("strict") if floor.seccomp == "strict" else None
    else:
        changes["seccomp_floor"] = floor_policy(floor.seccomp)
    mounts = plan.mounts
    try:
        if allocation is not None and mounts is not None:
            mounts = _idmapped(mounts, judgement, allocation, opened, bundle.config)
        elif mounts is not None:
            mounts = _judged_binds(mounts, judgement, opened, bundle.config)
        changes["mounts"] = mounts
        if floor.landlock and mounts is not None:
            changes["landlock_rules"] = landlock_rules(mounts)
            changes["landlock_scoped"] = False
            changes["landlock_best_effort"] = True
    except BaseException:
        for fd in opened:
            os.close(fd)
        raise
    return dataclasses.replace(bundle, plan=plan.replace(**changes)), opened


def _idmapped(mounts, judgement: Judgement, allocation, opened: list, config: dict):
    """The mount plan with the root and every bind as idmapped trees (see sandbox/oci/idmap.py)."""
    import dataclasses
    from .. import mounts as mount_ops
    from . import idmap
    base, size = allocation.uid, allocation.size
    gid_base = allocation.gid
    namespaces = idmap.Namespaces()
    try:
        whole = namespaces.fd(idmap.identity(base, size), idmap.identity(gid_base, size))
        try:
            tree, how, judgement.workdir = idmap.open_root(mounts.root_source, whole, (base, gid_base))
        except (OSError, ValueError) as exc:
            raise RuntimeFailure(f"runtime floor: config.json: root.path: {mounts.root_source} cannot be shown "
                                 f"through an idmapped mount ({getattr(exc, 'strerror', None) or exc}); the image's "
                                 "files would not keep their owners in the container's user namespace (floor rule "
                                 "user_namespace)") from None
        opened.append(tree)
        judgement.raised("user_namespace", "root.path", f"the root as an {how}: on-disk owners kept")
        root = mount_ops.RootTree(mounts.root_source, tree)
        binds = {entry["index"]: entry for entry in judgement.binds}
        bind_indexes = _bind_indexes(config)
        operations = [root]
        position = 0
        for op in mounts.operations:
            if isinstance(op, mount_ops.Mount) and op.fstype == "bind" and op.idmap_fd < 0:
                index = bind_indexes[position] if position < len(bind_indexes) else None
                position += 1
                entry = binds.get(index)
                op = _bind_tree(op, entry, index, namespaces, base, gid_base, size, opened, judgement)
            operations.append(op)
        return dataclasses.replace(mounts, root_source=root, operations=tuple(operations))
    finally:
        namespaces.close()


def _bind_indexes(config: dict) -> list[int]:
    """mounts[] indexes of the binds, in the order translation made their Mount operations."""
    return [i for i, m in enumerate(config.get("mounts") or []) if isinstance(m, dict) and _is_bind(m)]


def _judged_binds(mounts, judgement: Judgement, opened: list, config: dict):
    """Without a range of ours (an engine's maps, rootless): each bind cloned from the descriptor
    judge() checked (plainly: the engine's user namespace decides ownership)."""
    import dataclasses
    from .. import mounts as mount_ops
    from . import idmap
    indexes = iter(_bind_indexes(config))
    operations = []
    for op in mounts.operations:
        if isinstance(op, mount_ops.Mount) and op.fstype == "bind" and op.idmap_fd < 0:
            fd = judgement.fds.get(next(indexes, None))
            if fd is not None:
                tree = idmap.plain_clone(fd, op.recursive)
                opened.append(tree)
                op = dataclasses.replace(op, idmap_fd=tree)
        operations.append(op)
    return dataclasses.replace(mounts, operations=tuple(operations))


def _bind_tree(op, entry, index, namespaces, base: int, gid_base: int, size: int, opened: list, judgement):
    import dataclasses
    from . import idmap
    field = f"mounts[{index}].source"
    judged = judgement.fds.get(index)
    source_fd = os.dup(judged) if judged is not None else os.open(op.source, os.O_PATH | os.O_CLOEXEC)
    try:
        kind = entry["kind"] if entry else "plain"
        if kind in ("engine", "readonly"):
            uid_lines, gid_lines = idmap.identity(base, size), idmap.identity(gid_base, size)
        elif kind == "volume":
            owner = entry.get("owner")
            uid_lines = idmap.volume_lines(base, size, owner[0] if owner else None)
            gid_lines = idmap.volume_lines(gid_base, size, owner[1] if owner else None)
            assert idmap.never_host_root(uid_lines) and idmap.never_host_root(gid_lines)
        else:
            uid_lines = gid_lines = None
        tree = -1
        if uid_lines is not None:
            try:
                tree = idmap.idmapped_clone(source_fd, op.recursive, namespaces.fd(uid_lines, gid_lines))
            except OSError as exc:
                read_only = bool(op.flags & 1)
                if not read_only:
                    raise RuntimeFailure(f"runtime floor: config.json: {field}: {op.source} cannot be bound through "
                                         f"an idmapped mount ({exc.strerror}): the container's writes there would "
                                         "belong to its temporary host id range (floor rule volumes); mount it "
                                         "read-only, or use a file system with idmapped mounts") from None
                judgement.kept("volumes", field, f"{op.source}: read-only, without an idmapping ({exc.strerror})")
        if tree < 0:
            tree = idmap.plain_clone(source_fd, op.recursive)
        opened.append(tree)
        return dataclasses.replace(op, idmap_fd=tree)
    finally:
        os.close(source_fd)


def landlock_rules(mounts) -> tuple:
    """Landlock derived from the mounts: everything readable (and executable where the mounts let
    it), writable only beneath the root when it is not read-only and beneath every mount that is
    not (tmpfs, read-write binds, /dev, /dev/shm, /proc...)."""
    from .. import landlock
    from .. import mounts as mount_ops
    rules: list[tuple] = [("/", landlock.READ | (0 if mounts.readonly_root else landlock.WRITE))]
    for op in mounts.operations:
        if isinstance(op, mount_ops.Mount) and not op.flags & 1:
            rules.append((op.target, landlock.READ | landlock.WRITE))
        elif isinstance(op, mount_ops.DeviceNode):
            rules.append((op.target, landlock.READ | landlock.WRITE))
    return tuple(dict.fromkeys(rules))
