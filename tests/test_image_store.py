"""The image store: local reference forms, our own digest checks (tampered blobs, pins), concurrent
pulls of one image, and rm/prune (never an image a sandbox is using)."""
from __future__ import annotations

import json
import multiprocessing
import os
import subprocess

import pytest

import imagebuild
from sandbox.image import ImageError, Store
from sandbox.image import unpack


@pytest.fixture
def busybox(tmp_path):
    layout = tmp_path / "busybox"
    digests = imagebuild.busybox_image(str(layout))
    return layout, digests


def test_pull_an_oci_layout_verifies_and_shares_layers(tmp_path, busybox):
    layout, digests = busybox
    store = Store(str(tmp_path / "store"))
    image = store.pull(f"oci:{layout}:latest")
    assert image.id == digests["manifest"] and image.config_digest == digests["config"]
    assert image.layers == tuple(digests["diff_ids"])
    assert os.path.isfile(os.path.join(image.rootfs, "bin", "busybox"))
    layer_file = os.path.join(store.root, "layers", digests["diff_ids"][0][7:], "tree", "bin", "busybox")
    assert os.stat(layer_file).st_ino == os.stat(os.path.join(image.rootfs, "bin", "busybox")).st_ino
    assert stat_mode(store.root) == 0o700  # images may be private
    # a second image on the same base layer unpacks only its own layer
    second = imagebuild.busybox_image(str(layout), tag="two", extra=[imagebuild.member("extra", data=b"x")])
    two = store.pull(f"oci:{layout}:two")
    assert two.id == second["manifest"] and two.layers[0] == image.layers[0]
    assert len(os.listdir(os.path.join(store.root, "layers"))) == 2
    assert {i.id for i in store.images()} == {image.id, two.id}


def stat_mode(path):
    return os.stat(path).st_mode & 0o7777


def test_a_tampered_blob_is_refused(tmp_path, busybox):
    layout, digests = busybox
    blob = layout / "blobs" / "sha256" / digests["layers"][0][7:]
    data = bytearray(blob.read_bytes())
    data[-40] ^= 0xFF
    blob.write_bytes(bytes(data))
    store = Store(str(tmp_path / "store"))
    # skopeo itself notices; a copy that skipped checks would still meet ours (below)
    with pytest.raises(ImageError):
        store.pull(f"oci:{layout}:latest")
    assert store.images() == []


def test_our_own_check_refuses_what_skopeo_let_through(tmp_path, busybox):
    layout, digests = busybox
    copy = tmp_path / "copy"
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout}:latest", f"dir:{copy}"], check=True)
    blob = copy / digests["layers"][0][7:]
    blob.write_bytes(blob.read_bytes()[:-10] + b"0123456789")
    store = Store(str(tmp_path / "store"))
    with pytest.raises(ImageError, match="tampered or corrupt"):
        store.import_dir(str(copy))
    assert store.images() == [] and os.listdir(os.path.join(store.root, "layers")) == []


def test_a_layer_whose_content_is_not_its_diff_id_is_refused(tmp_path):
    layout = tmp_path / "lying"
    digests = imagebuild.busybox_image(str(layout))
    config_path = layout / "blobs" / "sha256" / digests["config"][7:]
    config = json.loads(config_path.read_bytes())
    # rewrite the config with a wrong diff_id, and the manifest to match the new config
    config["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    layers = [layer_path.read_bytes() for layer_path in [layout / "blobs" / "sha256" / digests["layers"][0][7:]]]
    import gzip
    imagebuild.oci_layout(str(tmp_path / "lying2"), [gzip.decompress(layers[0])], {"config": {}})
    lying = tmp_path / "lying2"
    index = json.loads((lying / "index.json").read_text())
    manifest_path = lying / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]
    manifest = json.loads(manifest_path.read_bytes())
    cfg_path = lying / "blobs" / "sha256" / manifest["config"]["digest"][7:]
    cfg = json.loads(cfg_path.read_bytes())
    cfg["rootfs"]["diff_ids"] = ["sha256:" + "1" * 64]
    data = json.dumps(cfg).encode()
    import hashlib
    digest = hashlib.sha256(data).hexdigest()
    (lying / "blobs" / "sha256" / digest).write_bytes(data)
    manifest["config"] = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + digest,
                          "size": len(data)}
    mdata = json.dumps(manifest).encode()
    mdigest = hashlib.sha256(mdata).hexdigest()
    (lying / "blobs" / "sha256" / mdigest).write_bytes(mdata)
    index["manifests"][0].update(digest="sha256:" + mdigest, size=len(mdata))
    (lying / "index.json").write_text(json.dumps(index))
    store = Store(str(tmp_path / "store"))
    with pytest.raises(ImageError, match="diff_id"):
        store.pull(f"oci:{lying}:latest")
    assert store.images() == []


def test_a_pin_refuses_any_other_image(tmp_path, busybox):
    layout, digests = busybox
    store = Store(str(tmp_path / "store"))
    with pytest.raises(ImageError, match="not the pinned"):
        store.pull(f"oci:{layout}:latest", pin="sha256:" + "a" * 64)
    for pin in (digests["manifest"], digests["config"]):
        assert store.pull(f"oci:{layout}:latest", pin=pin).id == digests["manifest"]
    # the tag moves to another image: the store keeps serving the pinned one it verified...
    imagebuild.busybox_image(str(layout), extra=[imagebuild.member("changed", data=b"1")])
    assert store.pull(f"oci:{layout}:latest", pin=digests["manifest"]).id == digests["manifest"]
    # ...and a store without it refuses what the tag now names
    with pytest.raises(ImageError, match="not the pinned"):
        Store(str(tmp_path / "other")).pull(f"oci:{layout}:latest", pin=digests["manifest"])


def test_hostile_layer_fails_the_pull_and_leaves_nothing(tmp_path):
    layout = tmp_path / "evil"
    imagebuild.oci_layout(str(layout), [imagebuild.layer_tar([imagebuild.member("x", "symlink", link="/etc"),
                                                              imagebuild.member("x/cron.d", "dir"),
                                                              imagebuild.member("x/cron.d/evil", data=b"* * * * * root sh")])])
    store = Store(str(tmp_path / "store"))
    with pytest.raises(ImageError, match="refused"):
        store.pull(f"oci:{layout}:latest")
    assert not os.path.exists("/etc/cron.d/evil")
    assert store.images() == [] and os.listdir(os.path.join(store.root, "layers")) == []
    assert os.listdir(os.path.join(store.root, "tmp")) == []


def _pull_in_child(args):
    store_root, ref = args
    try:
        return Store(store_root).pull(ref).id
    except Exception as exc:  # noqa: BLE001
        return f"error: {exc}"


def test_concurrent_pulls_of_one_image(tmp_path, busybox):
    layout, digests = busybox
    store_root = str(tmp_path / "store")
    context = multiprocessing.get_context("fork")
    with context.Pool(4) as pool:
        results = pool.map(_pull_in_child, [(store_root, f"oci:{layout}:latest")] * 8)
    assert results == [digests["manifest"]] * 8
    store = Store(store_root)
    assert [i.id for i in store.images()] == [digests["manifest"]]
    assert os.listdir(os.path.join(store_root, "tmp")) == []
    assert sorted(os.listdir(os.path.join(store_root, "layers"))) == sorted(d[7:] for d in digests["diff_ids"])
    image = store.images()[0]
    assert os.path.isfile(os.path.join(image.rootfs, "bin", "busybox"))


def test_rm_and_prune_leave_an_image_in_use(tmp_path, busybox):
    layout, digests = busybox
    store = Store(str(tmp_path / "store"))
    image = store.pull(f"oci:{layout}:latest")
    held = store.hold(image)
    try:
        with pytest.raises(ImageError, match="in use"):
            store.remove(image.id)
        assert store.prune(all_images=True) == []
    finally:
        os.close(held)
    assert store.remove(image.id[7:19]).id == image.id
    assert store.images() == []
    removed = store.prune()
    assert sorted(removed) == sorted("layer " + d for d in digests["diff_ids"])
    assert os.listdir(os.path.join(store.root, "layers")) == []


def test_archives_through_skopeo(tmp_path, busybox):
    layout, digests = busybox
    oci_archive = tmp_path / "image.tar"
    docker_archive = tmp_path / "docker.tar"
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout}:latest", f"oci-archive:{oci_archive}:v1"], check=True)
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout}:latest", f"docker-archive:{docker_archive}"],
                   check=True)
    store = Store(str(tmp_path / "store"))
    assert store.pull(f"oci-archive:{oci_archive}:v1").id == digests["manifest"]
    from_docker = store.pull(f"docker-archive:{docker_archive}")
    assert from_docker.layers == tuple(digests["diff_ids"])  # same content, docker's own manifest
    assert store.pull(f"docker-archive:{docker_archive}", pin=from_docker.config_digest).id == from_docker.id
