"""Profile -> what a Kubernetes Pod needs to carry it (JSON manifests; `kubectl apply -f DIR`).

    pod.json                    the Pod: runtimeClassName, hostUsers false, securityContext (non-root,
                                no privilege escalation, read-only root, capabilities drop ALL + kept,
                                seccompProfile Localhost), resources, activeDeadlineSeconds, /tmp and
                                /dev/shm as memory-backed emptyDirs, no service account token
    networkpolicy.json          with network "none": a NetworkPolicy denying all ingress and egress
    runtimeclass.json           the RuntimeClass "sandbox" whose handler runs `sandbox-runtime`
    containerd-runtime.toml     the containerd runtime entry that handler names
    seccomp/NAME.json           the seccomp policy, for /var/lib/kubelet/seccomp/sandbox/NAME.json

JSON, not YAML: Kubernetes reads JSON manifests as they are, and it needs no YAML library at run
time. What a Pod cannot carry (Landlock, rlimits, pids, host binds...) is a warning.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil

from ..namespaces import creates_network_namespace
from ..profile.model import DEFAULT_DEVICES, SECRET_DIR, Profile
from . import ExportError, Warnings, bridge_warnings, monitor_warnings, prepare_output, write_file
from .oci import env_list

RUNTIME_CLASS = "sandbox"
SECCOMP_DIR = "sandbox"  # under the kubelet's seccomp root, /var/lib/kubelet/seccomp
PROFILE_LABEL = "sandbox.profile"


def dns_name(text: str) -> str:
    """A DNS-1123 label (what Pod, container and label values accept)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "sandbox"


def quantity(size: int) -> str:
    for suffix, factor in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


def cpu_quantity(cpus: float) -> str:
    millis = max(1, round(cpus * 1000))
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def _security_context(profile: Profile, seccomp_file: str | None) -> dict:
    user, group = profile.process.user, profile.process.group
    context = {
        "runAsNonRoot": user != 0, "runAsUser": user, "runAsGroup": group,
        "allowPrivilegeEscalation": False, "privileged": False,
        "readOnlyRootFilesystem": profile.filesystem.readonly_root,
        "capabilities": {"drop": ["ALL"]},
        "procMount": "Default",
    }
    keep = [cap.removeprefix("CAP_") for cap in sorted(profile.capabilities.keep)]
    if keep:
        context["capabilities"]["add"] = keep
    context["seccompProfile"] = ({"type": "Localhost", "localhostProfile": seccomp_file} if seccomp_file
                                 else {"type": "Unconfined"})
    return context


def _warn_lost(profile: Profile, warnings: Warnings) -> None:
    ns, fs, limits = profile.namespaces, profile.filesystem, profile.limits
    bridge_warnings(profile, warnings, "the Pod")
    monitor_warnings(profile, warnings, "the Pod")
    if profile.landlock.enabled:
        warnings.add("landlock", "a Pod has no Landlock setting (sandbox-runtime may apply it; other runtimes "
                     "do not)")
    if profile.audit.enabled:
        warnings.add("audit", "no per-launch audit trail: the API server's audit log records the Pod")
    if fs.mounts:
        warnings.add("filesystem.mounts", "host binds are left out: in a Pod the image provides the file "
                     "system, and hostPath volumes would expose the node (Pod Security 'restricted' forbids "
                     "them): " + ", ".join(m.target for m in fs.mounts))
    if fs.symlinks or fs.files:
        warnings.add("filesystem.files", "symlinks and small files are left out: the image provides them: "
                     + ", ".join([s.target for s in fs.symlinks] + [f.target for f in fs.files]))
    for tmpfs in fs.tmpfs:
        if tmpfs.noexec:
            warnings.add("filesystem.tmpfs", f"{tmpfs.target}: an emptyDir cannot be noexec")
        if tmpfs.mode != 0o1777:
            warnings.add("filesystem.tmpfs", f"{tmpfs.target}: an emptyDir's mode cannot be set ({tmpfs.mode:04o})")
    if fs.masked_paths or fs.readonly_paths:
        warnings.add("filesystem.masked_paths", "extra masked and read-only paths cannot be expressed (the "
                     "runtime's defaults apply): " + ", ".join(fs.masked_paths + fs.readonly_paths))
    extra = [d for d in fs.devices if d not in DEFAULT_DEVICES]
    if extra:
        warnings.add("filesystem.devices", f"{extra}: a Pod gets devices through device plugins")
    if fs.sys:
        warnings.add("filesystem.sys", "true: the runtime decides /sys (read-only sysfs)")
    if not fs.proc:
        warnings.add("filesystem.proc", "false: every container has /proc")
    if ns.time:
        warnings.add("namespaces.time", "Kubernetes has no time namespace setting: the runtime's default "
                     "applies")
    if not ns.uts and creates_network_namespace(ns, profile.network.mode):
        warnings.add("namespaces.uts", "false: a Pod shares the node's UTS namespace only with hostNetwork")
    if not ns.cgroup:
        warnings.add("namespaces.cgroup", "false: the runtime decides (a cgroup namespace on cgroup v2)")
    if profile.process.umask != 0o022:
        warnings.add("process.umask", f"{profile.process.umask:04o}: a Pod cannot set the umask")
    if not profile.process.new_session:
        warnings.add("process.new_session", "false: the runtime starts a new session anyway")
    if profile.limits.rlimits:
        warnings.add("limits.rlimits", f"{', '.join(n for n, _, _ in limits.rlimits)}: a Pod cannot set "
                     "rlimits (the runtime's defaults apply)")
    if limits.pids is not None:
        warnings.add("limits.pids", f"{limits.pids}: no per-Pod field; the kubelet's podPidsLimit applies")
    if limits.memory is not None and limits.swap:
        warnings.add("limits.swap", "swap is the node's setting (NodeSwap), not the Pod's")
    for key in ("memory_high", "cpu_weight", "io_weight"):
        if getattr(limits, key) is not None:
            warnings.add(f"limits.{key}", "no Pod field for it")
    if limits.io_max:
        warnings.add("limits.io_max", "no Pod field for block I/O limits")
    if profile.exec.allow is not None:
        warnings.add("exec.allow", "the executable allow list is Landlock's execute right: a Pod cannot say it "
                     "(sandbox-runtime may apply it)")
    image, default = profile.image, type(profile.image)()
    for key in ("allowed_registries", "pull", "tls_verify", "setuid", "require_scan", "scan_allowlist",
                "vuln_db"):
        if getattr(image, key) != getattr(default, key):
            warnings.add(f"image.{key}", "the cluster's image policy and admission decide it, not the Pod")
    secrets_from_env = [s.name for s in profile.secrets if s.env]
    if secrets_from_env:
        warnings.add("secrets", f"{', '.join(secrets_from_env)}: read from the launcher's environment; in a "
                     "cluster, put them in the Secret the Pod mounts")


def pod_manifest(profile: Profile, argv=None, *, image: str | None = None,
                 warnings: Warnings | None = None) -> dict:
    warnings = Warnings() if warnings is None else warnings
    ns = profile.namespaces
    if not ns.mount:
        raise ExportError("namespaces.mount = false cannot be exported: a container always has its own root")
    name = dns_name(profile.name or "sandbox")
    args = list(argv) if argv else list(profile.process.command)
    seccomp_file = f"{SECCOMP_DIR}/{name}.json" if profile.seccomp is not None else None
    _warn_lost(profile, warnings)
    env = [{"name": k, "value": v} for k, v in (item.split("=", 1) for item in env_list(profile, warnings))]
    image = image or _registry_image(profile, warnings)
    container: dict = {"name": "workload", "image": image or "REPLACE-WITH-IMAGE",
                       "workingDir": profile.process.cwd, "env": env,
                       "securityContext": _security_context(profile, seccomp_file)}
    if not image:
        warnings.add("image", "no --image: set spec.containers[0].image before applying")
    if args:
        container["command"] = args
    resources: dict = {}
    if profile.limits.memory is not None:
        resources["memory"] = quantity(profile.limits.memory)
    if profile.limits.cpus is not None:
        resources["cpu"] = cpu_quantity(profile.limits.cpus)
    if resources:  # requests = limits: the Guaranteed QoS class, never overcommitted
        container["resources"] = {"limits": dict(resources), "requests": dict(resources)}
    volumes, mounts = [], []
    for index, tmpfs in enumerate(profile.filesystem.tmpfs):
        volume = f"tmpfs-{index}"
        volumes.append({"name": volume, "emptyDir": {"medium": "Memory", "sizeLimit": quantity(tmpfs.size)}})
        mounts.append({"name": volume, "mountPath": tmpfs.target})
    if profile.filesystem.dev:
        volumes.append({"name": "dev-shm", "emptyDir": {"medium": "Memory",
                                                        "sizeLimit": quantity(profile.filesystem.dev_shm_size)}})
        mounts.append({"name": "dev-shm", "mountPath": "/dev/shm"})
    # [[secrets]]: one Secret (named after the profile) mounted file by file at /run/secrets/NAME,
    # read-only, mode 0400 as the launcher writes them.
    if profile.secrets:
        volumes.append({"name": "secrets", "secret": {
            "secretName": f"{name}-secrets", "defaultMode": 0o400,
            "items": [{"key": s.name, "path": s.name} for s in profile.secrets]}})
        mounts += [{"name": "secrets", "mountPath": f"{SECRET_DIR}/{s.name}", "subPath": s.name, "readOnly": True}
                   for s in profile.secrets]
        warnings.add("secrets", f"mounted from the Secret {name}-secrets, which the cluster must hold: kubectl "
                     f"create secret generic {name}-secrets "
                     + " ".join(f"--from-file={s.name}=..." for s in profile.secrets))
    if mounts:
        container["volumeMounts"] = mounts
    spec: dict = {
        "runtimeClassName": RUNTIME_CLASS, "restartPolicy": "Never",
        "automountServiceAccountToken": False, "enableServiceLinks": False,
        "hostUsers": not ns.user,
        "hostNetwork": not creates_network_namespace(ns, profile.network.mode),
        "hostPID": not ns.pid, "hostIPC": not ns.ipc,
        "securityContext": {"runAsNonRoot": profile.process.user != 0, "runAsUser": profile.process.user,
                            "runAsGroup": profile.process.group,
                            "seccompProfile": container["securityContext"]["seccompProfile"]},
        "containers": [container],
    }
    if ns.uts and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", profile.process.hostname):
        spec["hostname"] = profile.process.hostname
    elif ns.uts:
        warnings.add("process.hostname", f"{profile.process.hostname!r} is not a DNS label: left to Kubernetes")
    if profile.limits.timeout is not None:
        spec["activeDeadlineSeconds"] = max(1, math.ceil(profile.limits.timeout))
    spec["terminationGracePeriodSeconds"] = math.ceil(profile.limits.kill_after)
    if volumes:
        spec["volumes"] = volumes
    if not ns.user:
        warnings.add("namespaces.user", "false: hostUsers true, the container's ids are the node's")
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {PROFILE_LABEL: name},
                         "annotations": {"sandbox.profile.description": profile.description}
                         if profile.description else {}},
            "spec": spec}


def _registry_image(profile: Profile, warnings: Warnings) -> str | None:
    """[image] ref docker://HOST/NAME[:TAG] as a Pod's image, pinned by its digest when the profile pins one."""
    ref = profile.image.ref
    if not ref:
        return None
    if not ref.startswith("docker://"):
        warnings.add("image.ref", f"{ref}: a cluster pulls from registries; push the image and give --image")
        return None
    image = ref.removeprefix("docker://")
    if profile.image.digest and "@" not in image:
        last = image.rsplit("/", 1)[-1]
        if ":" in last:  # drop the tag: the digest names the image
            image = image[: len(image) - len(last)] + last.split(":", 1)[0]
        image = f"{image}@{profile.image.digest}"
    return image


def network_policy(profile: Profile, warnings: Warnings) -> dict | None:
    if profile.network.mode != "none":
        return None
    name = dns_name(profile.name or "sandbox")
    warnings.add("network.mode", "none: a Pod always has the cluster network; the NetworkPolicy denies all "
                 "ingress and egress, where the network plugin enforces NetworkPolicies (loopback stays)")
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"{name}-deny-all"},
            "spec": {"podSelector": {"matchLabels": {PROFILE_LABEL: name}}, "policyTypes": ["Ingress", "Egress"]}}


def runtime_class() -> dict:
    return {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": RUNTIME_CLASS},
            "handler": RUNTIME_CLASS}


def containerd_snippet() -> str:
    binary = shutil.which("sandbox-runtime") or "/usr/local/bin/sandbox-runtime"
    table = f'plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{RUNTIME_CLASS}'
    return (f"# containerd 1.6/1.7 config.toml: the handler the RuntimeClass '{RUNTIME_CLASS}' names.\n"
            f"[{table}]\n  runtime_type = \"io.containerd.runc.v2\"\n"
            f"[{table}.options]\n  BinaryName = \"{binary}\"\n")


def manifests(profile: Profile, argv=None, *, image: str | None = None) -> tuple[dict, list[str]]:
    """{relative file name: JSON document or text}, warnings."""
    from .oci import seccomp_section
    warnings = Warnings()
    pod = pod_manifest(profile, argv, image=image, warnings=warnings)
    files: dict = {"pod.json": pod, "runtimeclass.json": runtime_class(),
                   "containerd-runtime.toml": containerd_snippet()}
    policy = network_policy(profile, warnings)
    if policy:
        files["networkpolicy.json"] = policy
    seccomp = seccomp_section(profile.seccomp, warnings)
    if seccomp is not None:
        files[f"seccomp/{pod['metadata']['name']}.json"] = seccomp
    return files, list(warnings)


def write_manifests(profile: Profile, directory: str, argv=None, *, image: str | None = None) -> list[str]:
    files, warnings = manifests(profile, argv, image=image)
    prepare_output(directory)
    for relative, document in files.items():
        path = os.path.join(directory, relative)
        if not os.path.isdir(os.path.dirname(path)):
            os.mkdir(os.path.dirname(path), 0o755)
        write_file(path, document if isinstance(document, str) else json.dumps(document, indent=2) + "\n")
    return warnings
