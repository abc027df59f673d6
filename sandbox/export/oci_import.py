"""OCI bundle config.json -> profile (the reverse of export/oci.py).

Everything a profile can say is taken from the config; what it cannot say is a warning (host root,
namespaces joined by path, hooks, sysctls, AppArmor/SELinux, devices outside the allowed set...).
Where the config is looser than any profile can be (binds without nosuid, no no_new_privs), the
profile is the tighter one, and a warning says so. Where the config says nothing, the profile's
secure default applies (Landlock and the audit trail are on unless the bundle's annotations say).

Annotations written by `sandbox export --format oci` ("sandbox.*") restore what config.json
cannot carry: the inside ids, Landlock, audit, timeout, optional mounts, the exact seccomp policy
(only while the config's seccomp section is still the one exported: a digest is compared).
"""
from __future__ import annotations

import json
import os
import stat

from ..profile.model import (ALLOWED_DEVICES, DEFAULT_DEVICES, DEFAULT_PATH, MASKED_PROC_PATHS, NOBODY,
                             READONLY_PROC_PATHS, RLIMIT_NAMES)
from . import Warnings
from .oci import ANNOTATION_PREFIX, RLIM_INFINITY, RUNTIME_DEV_LINKS, seccomp_digest

MAX_LAYOUT_FILE = 64 << 10  # larger files mean an image's rootfs, used as a host-directory root
MAX_LAYOUT_ENTRIES = 512
KNOWN_NAMESPACES = ("user", "mount", "pid", "network", "ipc", "uts", "cgroup", "time")


class ImportError_(ValueError):
    """config.json cannot be read as a bundle configuration at all."""


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower()
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def _options(mount: dict) -> tuple[list[str], dict[str, str]]:
    flags, data = [], {}
    for option in mount.get("options") or ():
        if "=" in option:
            key, _, value = option.partition("=")
            data[key] = value
        else:
            flags.append(option)
    return flags, data


def _annotation(config: dict, key: str, raw: bool = False):
    text = (config.get("annotations") or {}).get(ANNOTATION_PREFIX + key)
    if text is None or raw:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _scan_rootfs(rootfs: str, mount_points: set[str], warnings: Warnings) -> tuple[list, list] | None:
    """(symlinks, files) when rootfs/ is an export-style layout, else None (an image's rootfs)."""
    links, files, count = [], [], 0
    for directory, dirs, names in os.walk(rootfs):
        for name in sorted(dirs + names):
            full = os.path.join(directory, name)
            inside = "/" + os.path.relpath(full, rootfs)
            count += 1
            if count > MAX_LAYOUT_ENTRIES:
                return None
            info = os.lstat(full)
            if stat.S_ISLNK(info.st_mode):
                links.append({"target": inside, "points_to": os.readlink(full)})
            elif stat.S_ISREG(info.st_mode):
                if inside in mount_points:
                    continue
                if info.st_size > MAX_LAYOUT_FILE:
                    return None
                try:  # O_NOFOLLOW: a file swapped for a link to a host file is never read through
                    fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
                    with os.fdopen(fd, encoding="utf-8") as handle:
                        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                            return None
                        content = handle.read(MAX_LAYOUT_FILE + 1)
                except (UnicodeDecodeError, OSError):
                    return None
                if len(content) > MAX_LAYOUT_FILE:
                    return None
                files.append({"target": inside, "content": content, "mode": f"{stat.S_IMODE(info.st_mode):04o}"})
            elif not stat.S_ISDIR(info.st_mode):
                return None
        dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(directory, d)))
    return links, files


def _capabilities(process: dict, warnings: Warnings) -> list[str]:
    sets = {name: set(values or ()) for name, values in (process.get("capabilities") or {}).items()}
    union = sorted(set().union(*sets.values())) if sets else []
    if len({frozenset(v) for v in sets.values()}) > 1:
        warnings.add("process.capabilities", "the five sets differ; a profile keeps one set for all of them: "
                     f"imported their union {union}")
    return union


def _id_maps(config: dict, uid: int, gid: int, warnings: Warnings) -> tuple[int | None, int | None]:
    linux = config.get("linux") or {}
    found = []
    for key, inside, name in (("uidMappings", uid, "uid"), ("gidMappings", gid, "gid")):
        mappings = linux.get(key) or []
        if any(int(m.get("size", 0)) > 1 for m in mappings) or len(mappings) > 1:
            warnings.add(f"linux.{key}", f"{len(mappings)} mapping(s) of {sum(int(m.get('size', 0)) for m in mappings)} "
                         f"ids: a profile maps exactly one {name}, the workload's")
        host = None
        for mapping in mappings:
            first, size = int(mapping.get("containerID", 0)), int(mapping.get("size", 0))
            if first <= inside < first + size:
                host = int(mapping.get("hostID", 0)) + inside - first
        if mappings and host is None:
            raise ImportError_(f"linux.{key}: the process's {name} {inside} is not mapped")
        found.append(host)
    return found[0], found[1]


def _default_host_id(host: int | None, own: int) -> int | None:
    """None when `host` is what a launch by the importing user picks by itself."""
    if host is None:
        return None
    return None if host == (NOBODY if os.geteuid() == 0 else own) else host


def profile_table(config: dict, bundle_dir: str, warnings: Warnings) -> dict:
    """The profile (as a TOML table) config.json describes, standing alone (no extends)."""
    if not isinstance(config, dict) or not isinstance(config.get("process"), dict):
        raise ImportError_("expected an OCI runtime configuration with a process object")
    linux = config.get("linux") or {}
    process = config["process"]
    annotated_process = _annotation(config, "process") or {}
    table: dict = {"process": {}, "namespaces": {}, "filesystem": {}, "network": {}, "limits": {},
                   "capabilities": {}}
    table["name"] = _annotation(config, "profile.name", raw=True) or ""
    table["description"] = _annotation(config, "profile.description", raw=True) or ""
    # -- namespaces
    present = {}
    for entry in linux.get("namespaces") or ():
        kind = entry.get("type")
        if kind not in KNOWN_NAMESPACES:
            warnings.add("linux.namespaces", f"unknown namespace type {kind!r}: ignored")
            continue
        present[kind] = entry
        if entry.get("path"):
            warnings.add(f"linux.namespaces.{kind}", f"joins {entry['path']}: a profile cannot join an existing "
                         "namespace; it gets a new one")
    for kind in KNOWN_NAMESPACES:
        table["namespaces"][kind] = kind in present
    if "mount" not in present:
        raise ImportError_("linux.namespaces: no mount namespace: a profile always builds its own root")
    if "network" not in present:
        # The host's network: network.mode = "host" says it (namespaces.network = false may say it
        # again; the exporter's annotation tells which the profile had).
        table["network"]["mode"] = "host"
        annotated_ns = _annotation(config, "namespaces") or {}
        table["namespaces"]["network"] = bool(annotated_ns.get("network", False))
    # -- process
    user = process.get("user") or {}
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
    tp = table["process"]
    if not present.get("user"):
        if uid == 0:
            warnings.add("process.user", "config.json runs the workload as host root, which a profile never "
                         "does: it gets a user namespace, root inside mapped to an unprivileged host id")
            table["namespaces"]["user"] = True
        elif os.geteuid() != 0:
            warnings.add("namespaces.user", "false needs a launch by root; a user namespace is added")
            table["namespaces"]["user"] = True
    if table["namespaces"]["user"]:
        host_uid, host_gid = _id_maps(config, uid, gid, warnings) if present.get("user") else (None, None)
        mapped_as_root = uid == 0 and gid == 0 and all(
            len(linux.get(k) or ()) == 1 and int(linux[k][0].get("size", 0)) == 1
            for k in ("uidMappings", "gidMappings"))
        if mapped_as_root and "user" in annotated_process:
            # The exporter's shape: container root is the one mapped id; the profile's own ids are annotated.
            uid, gid = int(annotated_process["user"]), int(annotated_process["group"])
            tp["host_user"], tp["host_group"] = annotated_process.get("host_user"), annotated_process.get("host_group")
        else:
            tp["host_user"] = _default_host_id(host_uid, os.geteuid())
            tp["host_group"] = _default_host_id(host_gid, os.getegid())
        for key in ("host_user", "host_group"):
            if tp.get(key) is None:
                tp.pop(key, None)
            elif tp[key] == 0:
                raise ImportError_("the workload's id maps to host root, which a profile refuses")
    tp["user"], tp["group"] = uid, gid
    if user.get("additionalGids"):
        warnings.add("process.user.additionalGids", f"{user['additionalGids']}: a profile has no "
                     "supplementary groups")
    if "umask" in user:
        tp["umask"] = f"{int(user['umask']):04o}"
    tp["command"] = list(process.get("args") or ())
    tp["cwd"] = process.get("cwd") or "/"
    env = {}
    for item in process.get("env") or ():
        name, _, value = item.partition("=")
        env[name] = value
    if env.get("PATH") == DEFAULT_PATH:
        del env["PATH"]
    if env.get("TERM") == "dumb":
        del env["TERM"]  # what a launch without a terminal sets anyway
    tp["env"] = env
    if annotated_process.get("env_passthrough"):
        tp["env_passthrough"] = list(annotated_process["env_passthrough"])
    if "new_session" in annotated_process:
        tp["new_session"] = bool(annotated_process["new_session"])
    if present.get("uts") and config.get("hostname"):
        tp["hostname"] = config["hostname"]
    elif config.get("hostname") and not present.get("uts"):
        warnings.add("hostname", "set without a UTS namespace: ignored")
    if process.get("terminal"):
        warnings.add("process.terminal", "true: a profile has no terminal setting; use `sandbox run --tty`")
    if process.get("noNewPrivileges") is not True:
        warnings.add("process.noNewPrivileges", "not true: the sandbox always sets no_new_privs (tighter)")
    for key in ("oomScoreAdj", "apparmorProfile", "selinuxLabel", "ioPriority", "scheduler", "execCPUAffinity"):
        if key in process:
            warnings.add(f"process.{key}", f"{process[key]!r}: a profile cannot express it: not imported")
    keep = _capabilities(process, warnings)
    table["capabilities"]["keep"] = keep
    rlimits = {}
    for entry in process.get("rlimits") or ():
        name = str(entry.get("type", "")).upper().removeprefix("RLIMIT_").lower()
        if name not in RLIMIT_NAMES:
            warnings.add("process.rlimits", f"{entry.get('type')}: unknown: not imported")
            continue
        soft, hard = (("unlimited" if int(entry.get(k, 0)) >= RLIM_INFINITY or int(entry.get(k, 0)) < 0
                       else int(entry.get(k, 0))) for k in ("soft", "hard"))
        rlimits[name] = soft if soft == hard else [soft, hard]
    if "core" not in rlimits:
        rlimits["core"] = 0
        if process.get("rlimits") is not None:
            warnings.add("process.rlimits", "no RLIMIT_CORE: the profile keeps core dumps off (core = 0)")
    table["limits"]["rlimits"] = rlimits
    # -- file system
    _filesystem(config, bundle_dir, table, warnings)
    # -- resources
    _resources(linux.get("resources") or {}, table, warnings, _annotation(config, "limits") or {})
    # -- seccomp
    table["seccomp"] = _seccomp(config, linux.get("seccomp"), warnings)
    # -- what config.json cannot say
    for key in ("sysctl", "timeOffsets", "personality", "intelRdt", "mountLabel", "hooks", "domainname",
                "memoryPolicy", "netDevices"):
        where = config if key in ("hooks", "domainname") else linux
        if where.get(key):
            warnings.add(key if where is config else f"linux.{key}", f"{json.dumps(where[key])[:80]}: a profile "
                         "cannot express it: not imported")
    if linux.get("rootfsPropagation") not in (None, "private", "rprivate"):
        warnings.add("linux.rootfsPropagation", f"{linux['rootfsPropagation']!r}: a sandbox's mounts are always "
                     "private")
    landlock = _annotation(config, "landlock")
    if isinstance(landlock, dict):
        table["landlock"] = {k: landlock[k] for k in ("enabled", "read", "write", "best_effort") if k in landlock}
    audit = _annotation(config, "audit")
    if isinstance(audit, dict):
        table["audit"] = {k: audit[k] for k in ("enabled", "log", "required", "syslog", "syslog_socket")
                          if k in audit and audit[k] != ""}
    monitor = _annotation(config, "monitor")
    if isinstance(monitor, dict):
        table["monitor"] = {k: v for k, v in monitor.items()
                            if k in ("events", "stats_interval", "baseline", "on_anomaly", "processes", "files")
                            and v is not None}
    exec_table = _annotation(config, "exec")
    if isinstance(exec_table, dict) and exec_table.get("allow") is not None:
        table["exec"] = {"allow": list(exec_table["allow"])}
    secrets = _annotation(config, "secrets")
    if isinstance(secrets, list) and secrets:
        table["secrets"] = [{k: v for k, v in entry.items() if v is not None} for entry in secrets
                            if isinstance(entry, dict)]
    return table


def _filesystem(config: dict, bundle_dir: str, table: dict, warnings: Warnings) -> None:
    linux = config.get("linux") or {}
    fs = table["filesystem"]
    annotated = _annotation(config, "filesystem") or {}
    annotated_mounts = [m for m in annotated.get("mounts") or () if isinstance(m, dict) and "target" in m]
    mount_flags = {m["target"]: m for m in annotated_mounts}
    profile_order = {m["target"]: index for index, m in enumerate(annotated_mounts)}
    fs.update(proc=False, dev=False, sys=False)
    binds, tmpfs, devices = [], [], []
    mount_points = set()
    for index, mount in enumerate(config.get("mounts") or ()):
        key = f"mounts[{index}]"
        destination, kind, source = mount.get("destination", ""), mount.get("type", ""), mount.get("source", "")
        flags, data = _options(mount)
        mount_points.add(destination)
        is_bind = kind == "bind" or "bind" in flags or "rbind" in flags
        if is_bind and destination.startswith("/dev/") and destination.removeprefix("/dev/") in ALLOWED_DEVICES:
            devices.append(destination.removeprefix("/dev/"))
        elif is_bind and destination == "/sys":
            fs["sys"] = True
            if "ro" not in flags:
                warnings.add(key, "/sys bound read-write: a profile binds it read-only")
        elif is_bind:
            if not ("nosuid" in flags and "nodev" in flags):
                warnings.add(key, f"{destination}: a profile's binds are always nosuid,nodev (tighter)")
            entry = {"source": source if os.path.isabs(source) else os.path.join(bundle_dir, source),
                     "target": destination, "mode": "ro" if "ro" in flags or "rro" in flags else "rw"}
            if "noexec" in flags:
                entry["noexec"] = True
            extra = mount_flags.get(destination) or {}
            if extra.get("optional"):
                entry["optional"] = True
            if extra.get("idmap") and extra["idmap"] != "auto":
                entry["idmap"] = extra["idmap"]
            if extra.get("allow_system_path"):
                entry["allow_system_path"] = True
            if not os.path.lexists(entry["source"]) and not entry.get("optional"):
                entry["optional"] = True
                warnings.add(key, f"{entry['source']} does not exist here: imported as optional")
            binds.append(entry)
        elif kind == "tmpfs" and destination == "/dev":
            fs["dev"] = True
        elif kind == "tmpfs" and destination == "/dev/shm":
            if "size" in data:
                fs["dev_shm_size"] = _size(data["size"])
        elif kind == "tmpfs":
            entry = {"target": destination}
            if "size" in data:
                entry["size"] = _size(data["size"])
            else:
                warnings.add(key, f"{destination}: tmpfs without a size: the profile's default (64M) limits it")
            if "mode" in data:
                entry["mode"] = f"{int(data['mode'], 8):04o}"
            if "noexec" in flags:
                entry["noexec"] = True
            tmpfs.append(entry)
        elif kind == "proc":
            fs["proc"] = True
        elif kind == "devpts" and destination == "/dev/pts":
            continue  # part of the profile's minimal /dev
        elif kind == "sysfs" and destination == "/sys":
            fs["sys"] = True
            if "ro" not in flags:
                warnings.add(key, "sysfs mounted read-write: a profile binds the host's /sys read-only")
        else:
            warnings.add(key, f"{kind or 'mount'} at {destination}: a profile cannot express it: not imported")
    for device in linux.get("devices") or ():
        name = str(device.get("path", "")).removeprefix("/dev/")
        if name in ALLOWED_DEVICES:
            devices.append(name)
        else:
            warnings.add("linux.devices", f"{device.get('path')}: not among the devices a profile may bind "
                         f"({', '.join(ALLOWED_DEVICES)}): not imported")
    for rule in (linux.get("resources") or {}).get("devices") or ():
        if rule.get("allow") and rule.get("major") is None and rule.get("type") in (None, "a"):
            warnings.add("linux.resources.devices", "allows every device: a profile allows only its own list")
    if fs["dev"]:
        fs["devices"] = list(dict.fromkeys(list(annotated.get("devices") or DEFAULT_DEVICES)
                                           + [d for d in devices if d not in DEFAULT_DEVICES]))
    if "dev_shm_size" in annotated and "dev_shm_size" not in fs:
        fs["dev_shm_size"] = annotated["dev_shm_size"]
    # The exported profile's order where it is known (lint findings name mounts by index).
    binds.sort(key=lambda entry: profile_order.get(entry["target"], len(profile_order)))
    fs["mounts"], fs["tmpfs"] = binds, tmpfs
    masked = [p for p in linux.get("maskedPaths") or () if p not in MASKED_PROC_PATHS]
    fs["masked_paths"] = masked
    fs["readonly_paths"] = [p for p in linux.get("readonlyPaths") or ()
                            if p not in READONLY_PROC_PATHS and not (p == "/dev" and fs["dev"])]
    root = config.get("root") or {}
    path = root.get("path", "rootfs")
    absolute = path if os.path.isabs(path) else os.path.normpath(os.path.join(bundle_dir, path))
    scanned = _scan_rootfs(absolute, mount_points, warnings) if os.path.isdir(absolute) else None
    if not os.path.isdir(absolute):
        raise ImportError_(f"root.path: {absolute} is not a directory")
    if scanned is None:
        fs["root"] = absolute
        warnings.add("root.path", f"{absolute} holds an image, not an export's layout: the profile uses it as "
                     "its root, read-only")
        if not root.get("readonly"):
            warnings.add("root.readonly", "false: a profile's host-directory root is always read-only")
    else:
        links, files = scanned
        fs["root"] = "tmpfs"
        fs["readonly_root"] = bool(root.get("readonly"))
        if "root_size" in annotated:
            fs["root_size"] = annotated["root_size"]
        fs["symlinks"] = [link for link in links if link["target"] not in RUNTIME_DEV_LINKS]
        fs["files"] = files
        if not root.get("readonly"):
            warnings.add("root.readonly", "false: the profile's root is a writable tmpfs (writes do not reach "
                         "the bundle's rootfs/)")


def _resources(res: dict, table: dict, warnings: Warnings, annotated: dict) -> None:
    from ..cgroups.limits import CPU_PERIOD_US
    limits = table["limits"]
    memory = res.get("memory") or {}
    limits["memory"] = memory["limit"] if memory.get("limit") not in (None, -1) else "unlimited"
    swap = memory.get("swap")
    if memory.get("limit") not in (None, -1):
        if swap in (None,):
            limits["swap"] = annotated.get("swap", 0)
            if "swap" not in annotated:
                warnings.add("linux.resources.memory.swap", "unset (runtimes then allow as much swap again): "
                             "the profile allows none")
        elif swap == -1:
            warnings.add("linux.resources.memory.swap", "unlimited: a profile's swap is a size; none allowed")
            limits["swap"] = 0
        else:
            limits["swap"] = max(0, int(swap) - int(memory["limit"]))
    for key in ("reservation", "kernel", "kernelTCP", "swappiness", "disableOOMKiller", "useHierarchy",
                "checkBeforeUpdate"):
        if key in memory:
            warnings.add(f"linux.resources.memory.{key}", f"{memory[key]!r}: not imported")
    cpu = res.get("cpu") or {}
    if cpu.get("quota") and cpu["quota"] > 0:
        limits["cpus"] = round(cpu["quota"] / (cpu.get("period") or CPU_PERIOD_US), 4)
    if cpu.get("shares"):
        limits["cpu_weight"] = max(1, min(10000, round(int(cpu["shares"]) * 100 / 1024)))
    for key in ("realtimeRuntime", "realtimePeriod", "cpus", "mems", "idle", "burst"):
        if cpu.get(key):
            warnings.add(f"linux.resources.cpu.{key}", f"{cpu[key]!r}: not imported")
    pids = (res.get("pids") or {}).get("limit")
    limits["pids"] = pids if pids and pids > 0 else "unlimited"
    block = res.get("blockIO") or {}
    if block.get("weight"):
        limits["io_weight"] = int(block["weight"])
    io_max: dict = {}
    for field, key in (("throttleReadBpsDevice", "read_bps"), ("throttleWriteBpsDevice", "write_bps"),
                       ("throttleReadIOPSDevice", "read_iops"), ("throttleWriteIOPSDevice", "write_iops")):
        for entry in block.get(field) or ():
            device = f"{entry['major']}:{entry['minor']}"
            io_max.setdefault(device, {"device": device})[key] = int(entry["rate"])
    if io_max:
        limits["io_max"] = list(io_max.values())
    for key in ("leafWeight", "weightDevice"):
        if block.get(key):
            warnings.add(f"linux.resources.blockIO.{key}", "not imported")
    unified = dict(res.get("unified") or {})
    if "memory.high" in unified:
        limits["memory_high"] = int(unified.pop("memory.high"))
    for key, value in unified.items():
        warnings.add(f"linux.resources.unified.{key}", f"{value!r}: not imported")
    for key in ("hugepageLimits", "network", "rdma"):
        if res.get(key):
            warnings.add(f"linux.resources.{key}", "a profile cannot express it: not imported")
    if annotated.get("timeout") is not None:
        limits["timeout"] = annotated["timeout"]
    if annotated.get("kill_after") is not None:
        limits["kill_after"] = annotated["kill_after"]
    if annotated.get("required"):
        limits["required"] = list(annotated["required"])
    if annotated.get("optional"):
        limits["optional"] = list(annotated["optional"])


def _seccomp(config: dict, section: dict | None, warnings: Warnings) -> dict:
    from ..seccomp import import_docker, to_toml_dict
    annotated = _annotation(config, "seccomp")
    if section is None:
        warnings.add("linux.seccomp", "none: the profile has no system call filter either (policy = "
                     "\"unconfined\"); `sandbox lint` reports it")
        return {"policy": "unconfined"}
    if isinstance(annotated, dict) and annotated.get("digest") == seccomp_digest(section):
        return annotated["policy"]
    for key in ("flags", "listenerPath", "listenerMetadata"):
        if section.get(key):
            warnings.add(f"linux.seccomp.{key}", f"{section[key]!r}: not imported")
    skipped: list = []
    try:
        policy = import_docker(dict(section), skipped=skipped, name="imported")
    except (ValueError, KeyError, TypeError) as exc:
        raise ImportError_(f"linux.seccomp: {exc}") from None
    if skipped:
        warnings.add("linux.seccomp", f"names unknown to libseccomp here, skipped: {', '.join(sorted(set(skipped)))}")
    if isinstance(annotated, dict):
        warnings.add("linux.seccomp", "changed since the export: imported from config.json, not from the "
                     "sandbox.seccomp annotation")
    return to_toml_dict(policy, inline=True)


def import_oci(config_path: str, output_name: str | None = None) -> tuple[str, list[str], list]:
    """(profile TOML text, warnings, lint findings) for the bundle whose config.json is given."""
    from ..errors import ProfileError
    from ..lint import lint
    from ..profile.dump import to_toml
    from ..profile.load import profile_from_dict
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    warnings = Warnings()
    bundle_dir = os.path.dirname(os.path.abspath(config_path))
    table = profile_table(config, bundle_dir, warnings)
    if not table["name"]:
        table["name"] = os.path.splitext(os.path.basename(output_name))[0] if output_name else "imported"
    if not table["description"]:
        table["description"] = f"Imported from {config_path} (OCI runtime bundle)"
    base = _base_profile(config, warnings)
    if base:
        # The resolved profile holds every entry of its base already (extends adds, never removes),
        # so extending it again changes nothing but the lineage lint judges it by.
        table["extends"] = base
    try:
        profile = profile_from_dict(_escape_dollars(table), source=config_path)
    except ProfileError as exc:
        raise ImportError_("; ".join(str(p) for p in exc.problems)) from None
    text = to_toml(profile)
    if base:
        from ..profile.load import load_raw
        text = f"extends = {json.dumps(base)}\n" + text
        # As `sandbox lint` of the written file will see it: the base's chain is its lineage.
        profile = profile.replace(lineage=(config_path, *load_raw(base)[2]))
    return text, list(warnings), lint(profile)


def _base_profile(config: dict, warnings: Warnings) -> str | None:
    from ..profile.load import builtin_profile_names
    base = _annotation(config, "profile.extends", raw=True)
    if not base:
        return None
    if base in builtin_profile_names():
        return base
    warnings.add("annotations", f"the exported profile extended {base!r}, not a built-in profile here: the "
                 "imported one stands alone (lint judges it without that lineage)")
    return None


def _escape_dollars(value):
    """config.json has no variables: a literal "${" must not be expanded by the profile loader."""
    from ..profile.dump import _escape
    return _escape(value)
