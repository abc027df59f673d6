"""`sandbox export --format kubernetes`: the manifests, built into the official client's models
(no cluster needed) and checked field by field; a key the models do not know fails the test."""
from __future__ import annotations

import dataclasses
import inspect
import json

import pytest

import sandbox
from sandbox.profile.load import profile_from_dict

kubernetes = pytest.importorskip("kubernetes", reason="the kubernetes client is a test dependency "
                                 "(pip install -e '.[test]')")
from kubernetes.client import ApiClient  # noqa: E402


class _Response:
    def __init__(self, document):
        self.data = json.dumps(document)


def _model(document: dict, kind: str):
    """The client's model for `document`; serialised back, it must say exactly the same (a misspelt
    key would be dropped by the model, and show as a difference)."""
    client = ApiClient()
    if "content_type" in inspect.signature(client.deserialize).parameters:  # client 35 and later
        model = client.deserialize(json.dumps(document), kind, "application/json")
    else:
        model = client.deserialize(_Response(document), kind)
    assert client.sanitize_for_serialization(model) == document
    return model


def _export(sandbox_cli, tmp_path, profile="untrusted", *extra):
    out = tmp_path / "k8s"
    done = sandbox_cli("export", profile, "--format", "kubernetes", "-o", str(out), *extra)
    assert done.returncode == 0, done.stderr
    files = {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_file()}
    return out, files, done.stderr


def test_untrusted_pod_carries_the_profile(sandbox_cli, tmp_path):
    out, files, stderr = _export(sandbox_cli, tmp_path, "untrusted", "--image", "debian:12-slim")
    assert set(files) == {"pod.json", "networkpolicy.json", "runtimeclass.json", "containerd-runtime.toml",
                          "seccomp/untrusted.json"}
    pod = _model(json.loads(files["pod.json"].read_text()), "V1Pod")
    spec = pod.spec
    assert spec.runtime_class_name == "sandbox" and spec.host_users is False
    assert spec.host_network is False and spec.host_pid is False and spec.host_ipc is False
    assert spec.automount_service_account_token is False and spec.hostname == "sandbox"
    container = spec.containers[0]
    assert container.image == "debian:12-slim" and container.command == ["/bin/sh"]
    assert container.working_dir == "/tmp"
    context = container.security_context
    assert context.run_as_non_root is True and context.run_as_user == 65534 and context.run_as_group == 65534
    assert context.allow_privilege_escalation is False and context.privileged is False
    assert context.read_only_root_filesystem is True
    assert context.capabilities.drop == ["ALL"] and not context.capabilities.add
    assert context.seccomp_profile.type == "Localhost"
    assert context.seccomp_profile.localhost_profile == "sandbox/untrusted.json"
    assert container.resources.limits == {"memory": "512Mi", "cpu": "1"}
    assert container.resources.requests == container.resources.limits
    volumes = {v.name: v for v in spec.volumes}
    mounts = {m.mount_path: m.name for m in container.volume_mounts}
    assert volumes[mounts["/tmp"]].empty_dir.medium == "Memory"
    assert volumes[mounts["/tmp"]].empty_dir.size_limit == "128Mi"
    assert volumes[mounts["/dev/shm"]].empty_dir.size_limit == "64Mi"
    assert {e.name: e.value for e in container.env}["HOME"] == "/tmp"
    # The seccomp file next to it is the policy in OCI/Docker JSON.
    seccomp = json.loads(files["seccomp/untrusted.json"].read_text())
    assert seccomp["defaultAction"] == "SCMP_ACT_ERRNO" and seccomp["syscalls"]
    # The RuntimeClass names the handler containerd maps to sandbox-runtime.
    runtime = _model(json.loads(files["runtimeclass.json"].read_text()), "V1RuntimeClass")
    assert runtime.metadata.name == "sandbox" and runtime.handler == "sandbox"
    assert "BinaryName" in files["containerd-runtime.toml"].read_text()
    assert "runtimes.sandbox]" in files["containerd-runtime.toml"].read_text()
    # network "none": a NetworkPolicy selecting the Pod denies everything.
    policy = _model(json.loads(files["networkpolicy.json"].read_text()), "V1NetworkPolicy")
    assert policy.spec.pod_selector.match_labels == pod.metadata.labels
    assert policy.spec.policy_types == ["Ingress", "Egress"] and not policy.spec.ingress and not policy.spec.egress
    for key in ("landlock:", "limits.rlimits:", "limits.pids:", "filesystem.mounts:", "network.mode:"):
        assert f"sandbox: warning: kubernetes: {key}" in stderr, key


def test_relaxations_show_in_the_pod(tmp_path):
    from sandbox.export.kubernetes import manifests
    profile = profile_from_dict({
        "extends": "ci", "name": "Build Job_1", "network": {"mode": "host"}, "namespaces": {"network": False},
        "process": {"user": 0, "group": 0}, "capabilities": {"keep": ["net_bind_service", "sys_ptrace"]},
        "limits": {"timeout": "90.5s", "kill_after": "5s", "cpus": 0.25, "memory": "1500M"},
        "seccomp": {"policy": "unconfined"}})
    files, warnings = manifests(profile, ["make", "test"], image="gcc:13")
    pod = _model(files["pod.json"], "V1Pod")
    assert pod.metadata.name == "build-job-1" and "networkpolicy.json" not in files
    assert not any(name.startswith("seccomp/") for name in files)
    spec, container = pod.spec, pod.spec.containers[0]
    assert spec.host_network is True and spec.active_deadline_seconds == 91
    assert spec.termination_grace_period_seconds == 5
    context = container.security_context
    assert context.run_as_non_root is False and context.run_as_user == 0
    assert context.capabilities.add == ["NET_BIND_SERVICE", "SYS_PTRACE"] and context.capabilities.drop == ["ALL"]
    assert context.seccomp_profile.type == "Unconfined"
    assert container.resources.limits == {"memory": "1500Mi", "cpu": "250m"}
    assert container.command == ["make", "test"]
    assert any(w.startswith("image") is False and "filesystem.mounts" in w for w in warnings)


def test_bad_output_is_a_clean_error(sandbox_cli, tmp_path):
    (tmp_path / "x").write_text("")
    done = sandbox_cli("export", "untrusted", "--format", "kubernetes", "-o", str(tmp_path / "x"))
    assert done.returncode == 125 and "expected a directory" in done.stderr and "Traceback" not in done.stderr
    done = sandbox_cli("export", "untrusted", "--format", "kubernetes", "--rootless", "-o", str(tmp_path / "y"))
    assert done.returncode == 125 and "--rootless applies only" in done.stderr


def test_image_secrets_and_exec_in_the_pod(tmp_path):
    from sandbox.export.kubernetes import manifests
    (tmp_path / "token").write_text("x")
    digest = "sha256:" + "ab" * 32
    # Built without the loader: loading a profile with [image] resolves the image (a pull).
    base = profile_from_dict({"extends": "untrusted", "name": "app", "exec": {"allow": ["/usr/bin/**"]},
                              "secrets": [{"name": "token", "file": str(tmp_path / "token")},
                                          {"name": "api", "env": "API_KEY"}]})
    image = dataclasses.replace(base.image, ref="docker://registry.example:5000/team/app:1.2", digest=digest,
                                allowed_registries=("registry.example:5000",))
    profile = dataclasses.replace(base, image=image)
    files, warnings = manifests(profile)
    pod = _model(files["pod.json"], "V1Pod")
    container = pod.spec.containers[0]
    assert container.image == f"registry.example:5000/team/app@{digest}"
    secret = {v.name: v for v in pod.spec.volumes}["secrets"].secret
    assert secret.secret_name == "app-secrets" and secret.default_mode == 0o400
    assert [(i.key, i.path) for i in secret.items] == [("token", "token"), ("api", "api")]
    mounts = {m.mount_path: m for m in container.volume_mounts}
    assert mounts["/run/secrets/token"].sub_path == "token" and mounts["/run/secrets/token"].read_only
    joined = "\n".join(warnings)
    assert "exec.allow:" in joined and "kubectl create secret generic app-secrets" in joined
    assert "image.allowed_registries:" in joined
    assert "API_KEY" not in json.dumps(files["pod.json"])  # only the name of the Secret's key travels
