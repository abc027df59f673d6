"""What the runtime floor promises, as the standalone probe checks it from inside a container.

sandbox-runtime runs the probe at `start` (sandbox/oci/verify.py) and refuses to start a container
that breaks a promise. The probe reports much more than the floor promises (a container's root is
writable if its config.json says so; an engine gives it a network): only these checks decide.

    namespaces        its own pid, network, ipc, uts and mount namespaces (unless the floor lets
                      config.json share the host's), and a user namespace
    ids               not the host's uid 0; no uid or gid map reaching host id 0
    capabilities      nothing beyond what config.json was allowed to keep (within the floor's)
    seccomp           a filter (mode 2), no_new_privs, the floor's denials (mount, namespaces,
                      bpf, perf_event_open, keyctl, userfaultfd, io_uring, kexec, modules) and the
                      i386/x32 ABIs refused
    proc              the masked paths masked, /proc/sys and the kernel knobs (core_pattern,
                      sysrq-trigger, modprobe, uevent_helper, release_agent) out of reach
    mounts            no writable host system path, no runtime socket, no shared propagation
                      (any other writable mount is config.json's to ask for: not judged)
    devices           no device node beyond the usual ones
"""
from __future__ import annotations

import os

NAMESPACE_OF = {"pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts", "mount": "mnt", "user": "user",
                "cgroup": "cgroup", "time": "time"}
# Probe check ids (or prefixes, ending in ".") that are floor promises.
PROMISES = ("ns.pid", "ns.net", "ns.ipc", "ns.uts", "ns.mnt", "ns.user", "ids.host_root", "ids.uid_map",
            "ids.gid_map", "caps.", "seccomp.mode", "process.no_new_privs", "seccomp.denied.mount",
            "seccomp.denied.umount2", "seccomp.denied.pivot_root", "seccomp.denied.unshare", "seccomp.denied.setns",
            "seccomp.denied.bpf", "seccomp.denied.perf_event_open", "seccomp.denied.keyctl",
            "seccomp.denied.add_key", "seccomp.denied.userfaultfd", "seccomp.denied.io_uring_setup",
            "seccomp.denied.kexec_load", "seccomp.denied.kexec_file_load", "seccomp.denied.init_module",
            "seccomp.denied.finit_module", "seccomp.denied.delete_module", "seccomp.denied.fsopen",
            "seccomp.denied.open_tree", "seccomp.i386", "seccomp.x32", "seccomp.clone.", "seccomp.clone3.",
            "seccomp.unshare.", "proc.", "fs.masked.", "fs.write.", "cgroups.write.",
            "mount.system_rw", "mount.runtime_sockets", "mount.propagation", "dev.nodes")


def _host_namespaces() -> dict:
    found = {}
    for name in set(NAMESPACE_OF.values()):
        try:
            found[name] = os.stat(f"/proc/self/ns/{name}").st_ino
        except OSError:
            pass
    return found


def context(floor_state: dict, config: dict) -> dict:
    """The probe's context: the host's namespaces (the runtime's: rootful, the host's) and what the
    floor promises for this container (not what config.json asked: in warn mode it may have asked
    for less, and the probe says so)."""
    linux = config.get("linux") or {}
    own = {n.get("type") for n in linux.get("namespaces") or [] if isinstance(n, dict)}
    allowed_host = set(floor_state.get("host_namespaces") or [])
    expected = {}
    for kind, name in NAMESPACE_OF.items():
        if kind in ("pid", "network", "ipc", "uts"):
            expected[name] = kind not in allowed_host or kind in own
        elif kind == "mount":
            expected[name] = True
        elif kind == "user":
            expected[name] = bool(floor_state.get("user_namespace", True)) or kind in own
        else:
            expected[name] = kind in own
    ceiling = floor_state.get("capabilities") or []
    return {"host_ns": _host_namespaces(), "host_hostname": os.uname().nodename,
            "expect": {"namespaces": expected, "capabilities": list(ceiling), "seccomp": True,
                       "no_new_privs": bool(floor_state.get("no_new_privs", True)),
                       "masked_paths": list(floor_state.get("masked_paths") or linux.get("maskedPaths") or []),
                       # the devices config.json names were judged at create (beyond the floor's:
                       # refused, or in warn mode a warning already)
                       "devices": sorted({os.path.relpath(d.get("path", ""), "/dev") for d in
                                          linux.get("devices") or [] if isinstance(d, dict)}),
                       "allow_userns": False, "readonly_paths": [], "rw_paths": [], "memory_limit": None,
                       "pids_limit": None}}


def is_promise(check_id: str) -> bool:
    return any(check_id == p or (p.endswith(".") and check_id.startswith(p)) for p in PROMISES)


def judge(results: list[dict], floor_state: dict) -> dict:
    """{"failed": [result...], "checked": [id...]}: the promises the probe found broken."""
    checked = [r for r in results if is_promise(r.get("id", ""))]
    failed = [r for r in checked if r.get("status") == "FAIL"]
    return {"failed": failed, "checked": [r["id"] for r in checked]}
