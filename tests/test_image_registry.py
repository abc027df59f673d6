"""Pulls from a private registry started on loopback (Debian's docker-registry), pushed with
skopeo: by tag and by digest, a tampered blob refused, a registry not allowed refused."""
from __future__ import annotations

import os

import pytest

import imagebuild
from conftest import require
from sandbox.image import ImageError, Store


@pytest.fixture
def registry(tmp_path_factory):
    """Per test: the leak check stops every child a test leaves running, a registry included."""
    if not imagebuild.registry_available():
        require("docker-registry and skopeo")  # a reason, not a silent skip
    base = tmp_path_factory.mktemp("registry")
    server = imagebuild.Registry(str(base / "registry"))
    layout = base / "busybox"
    digests = imagebuild.busybox_image(str(layout))
    try:
        server.push(f"oci:{layout}:latest", "team/busybox:1.0")
        yield server, digests
    finally:
        server.stop()


def test_pull_by_tag_then_by_digest(tmp_path, registry):
    server, digests = registry
    store = Store(str(tmp_path / "store"))
    image = store.pull(f"docker://{server.host}/team/busybox:1.0", allowed=(server.host,), tls_verify=False)
    assert image.id == digests["manifest"] and image.config_digest == digests["config"]
    by_digest = f"docker://{server.host}/team/busybox@{digests['manifest']}"
    again = Store(str(tmp_path / "fresh")).pull(by_digest, allowed=(f"{server.host}/team",), tls_verify=False)
    assert again.id == digests["manifest"]
    # pinned: the store answers without the registry
    assert store.pull(by_digest, allowed=(server.host,), tls_verify=False, policy="never").id == image.id


def test_a_registry_not_allowed_is_refused_before_any_request(tmp_path, registry):
    server, _ = registry
    store = Store(str(tmp_path / "store"))
    with pytest.raises(ImageError, match="not in image.allowed_registries"):
        store.pull(f"docker://{server.host}/team/busybox:1.0", allowed=(), tls_verify=False)
    with pytest.raises(ImageError, match="not in image.allowed_registries"):
        store.pull(f"docker://{server.host}/team/busybox:1.0", allowed=(f"{server.host}/other",), tls_verify=False)
    assert store.images() == []


def test_the_wrong_pin_is_refused(tmp_path, registry):
    server, digests = registry
    with pytest.raises(ImageError, match="not the pinned"):
        Store(str(tmp_path / "store")).pull(f"docker://{server.host}/team/busybox:1.0", allowed=(server.host,),
                                            tls_verify=False, pin="sha256:" + "b" * 64)


def test_a_tampered_blob_in_the_registry_is_refused(tmp_path, registry):
    server, _ = registry
    # Push an image of its own, then corrupt one of its layers in the registry's storage.
    layout = tmp_path / "victim"
    digests = imagebuild.busybox_image(str(layout), extra=[imagebuild.member("victim", data=b"original" * 100)])
    server.push(f"oci:{layout}:latest", "team/victim:1")
    blob = server.blob_path(digests["layers"][1])
    data = bytearray(open(blob, "rb").read())
    data[len(data) // 2] ^= 0x55
    with open(blob, "wb") as handle:
        handle.write(bytes(data))
    store = Store(str(tmp_path / "store"))
    with pytest.raises(ImageError):
        store.pull(f"docker://{server.host}/team/victim:1", allowed=(server.host,), tls_verify=False)
    assert store.images() == []
    assert not any(name.startswith(("pull-", "layer-", "image-")) for name in os.listdir(os.path.join(store.root, "tmp")))


def test_cli_profile_with_a_registry_image(tmp_path, registry, sandbox_cli):
    server, digests = registry
    profile = tmp_path / "reg.toml"
    profile.write_text(f'''extends = "untrusted"
[image]
ref = "docker://{server.host}/team/busybox:1.0"
allowed_registries = ["{server.host}/team"]
tls_verify = false
digest = "{digests['manifest']}"
''')
    env = {"SANDBOX_IMAGE_STORE": str(tmp_path / "store")}
    proc = sandbox_cli("run", str(profile), "--", "/bin/cat", "/etc/passwd", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "app:x:1000" in proc.stdout
    denied = tmp_path / "denied.toml"
    denied.write_text(f'extends = "untrusted"\n[image]\nref = "docker://{server.host}/team/busybox:1.0"\n')
    proc = sandbox_cli("run", str(denied), "--", "/bin/true", env=env)
    assert proc.returncode == 125
    assert proc.stderr.count("\n") == 1 and "image.allowed_registries" in proc.stderr and "Traceback" not in proc.stderr


def test_image_pull_with_a_profiles_policy(tmp_path, registry, sandbox_cli):
    server, digests = registry
    env = {"SANDBOX_IMAGE_STORE": str(tmp_path / "store")}
    ref = f"docker://{server.host}/team/busybox:1.0"
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[image]\nallowed_registries = ["{server.host}"]\ntls_verify = false\n')
    strict = tmp_path / "strict.toml"
    strict.write_text('[image]\nallowed_registries = ["registry.example.com"]\ntls_verify = false\n')
    proc = sandbox_cli("image", "pull", "-q", "--profile", str(strict), ref, env=env)
    assert proc.returncode == 125 and "not in image.allowed_registries" in proc.stderr
    proc = sandbox_cli("image", "pull", "-q", "--profile", str(policy), ref, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == digests["manifest"], proc.stderr
    proc = sandbox_cli("image", "pull", "-q", ref, env=env)  # TLS required by default: plain HTTP refused
    assert proc.returncode == 125 and proc.stderr.count("\n") == 1
