"""Layers unpacked safely: every escape a hostile layer can try is refused, whiteouts and opaque
directories merge as the OCI image spec says, and references parse strictly."""
from __future__ import annotations

import gzip
import json
import os
import stat

import pytest

from imagebuild import layer_tar, member
from sandbox.image import ref as refs
from sandbox.image import unpack


def _unpack(tmp_path, members, name="layer"):
    blob = tmp_path / f"{name}.tar.gz"
    blob.write_bytes(gzip.compress(layer_tar(members)))
    tree = tmp_path / name
    tree.mkdir()
    return tree, unpack.unpack_layer(str(blob), str(tree))


@pytest.fixture
def outside(tmp_path):
    victim = tmp_path / "outside"
    victim.mkdir()
    (victim / "secret").write_text("host file\n")
    return victim


@pytest.mark.parametrize("members, words", [
    ([member("/etc/passwd", data=b"x")], "absolute"),
    ([member("../../outside/secret", data=b"x")], "'..'"),
    ([member("a/../../outside/secret", data=b"x")], "'..'"),
    ([member("a", "symlink", link="../outside"), member("a/secret", data=b"pwned")], "symlink"),
    ([member("a", "symlink", link="/"), member("a/etc/x", data=b"pwned")], "symlink"),
    ([member("link", "hardlink", link="../outside/secret")], "'..'"),
    ([member("link", "hardlink", link="etc/passwd")], "not a regular file earlier"),
    ([member("s", "symlink", link="../outside/secret"), member("link", "hardlink", link="s")],
     "not a regular file earlier"),
    ([member("dir/.wh...", data=b"")], "whiteout"),
])
def test_hostile_members_are_refused(tmp_path, outside, members, words):
    with pytest.raises(unpack.HostileLayer, match=words.replace("(", r"\(")):
        _unpack(tmp_path, members)
    assert (outside / "secret").read_text() == "host file\n"
    assert sorted(os.listdir(outside)) == ["secret"]


def test_a_file_over_an_earlier_symlink_replaces_the_link_not_its_target(tmp_path, outside):
    tree, (_, entries) = _unpack(tmp_path, [member("f", "symlink", link=str(outside / "secret")),
                                            member("f", data=b"replaced")])
    assert (outside / "secret").read_text() == "host file\n"
    assert not os.path.islink(tree / "f") and (tree / "f").read_bytes() == b"replaced"


def test_devices_are_recorded_not_made_and_setuid_is_stripped_on_disk(tmp_path):
    tree, (_, entries) = _unpack(tmp_path, [
        member("dev", "dir"), member("dev/sda", "char", major=8, minor=0), member("dev/blk", "block", major=8),
        member("su", data=b"#!", mode=0o4755), member("sg", data=b"#!", mode=0o2755),
        member("ping", data=b"#!", mode=0o755, pax={"SCHILY.xattr.security.capability": "\x01\x00"}),
        member("fifo", "fifo"), member("tmp", "dir", mode=0o1777), member("owned", data=b"x", uid=1234, gid=99)])
    assert os.listdir(tree / "dev") == []
    assert stat.S_IMODE(os.stat(tree / "su").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tree / "sg").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tree / "tmp").st_mode) == 0o1777
    with pytest.raises(OSError):
        os.getxattr(tree / "ping", "security.capability")
    assert os.stat(tree / "owned").st_uid == os.geteuid()  # owners are never applied
    assert stat.S_ISFIFO(os.stat(tree / "fifo").st_mode)
    by_path = {e["path"]: e for e in entries}
    assert by_path["su"]["mode"] == 0o4755 and by_path["dev/sda"]["type"] == "char"
    assert by_path["ping"]["capabilities"] and by_path["owned"]["uid"] == 1234


def test_hardlinks_within_the_layer_share_the_inode(tmp_path):
    tree, _ = _unpack(tmp_path, [member("a", data=b"data"), member("b", "hardlink", link="a")])
    assert os.stat(tree / "a").st_ino == os.stat(tree / "b").st_ino


def test_diff_id_is_the_uncompressed_digest(tmp_path):
    import hashlib
    members = [member("x", data=b"1")]
    _, (diff_id, _) = _unpack(tmp_path, members)
    assert diff_id == "sha256:" + hashlib.sha256(layer_tar(members)).hexdigest()


def _layers(tmp_path, *layers):
    trees, indexes = [], []
    for number, members in enumerate(layers):
        tree, (_, entries) = _unpack(tmp_path, members, name=f"l{number}")
        trees.append(str(tree))
        indexes.append(entries)
    view = unpack.merged_view(indexes)
    root = tmp_path / "rootfs"
    root.mkdir()
    unpack.merge(trees, view, str(root))
    return root, view


def test_whiteouts_and_opaque_directories(tmp_path):
    root, view = _layers(
        tmp_path,
        [member("etc", "dir"), member("etc/a", data=b"a"), member("etc/b", data=b"b"), member("opt", "dir"),
         member("opt/old", data=b"old"), member("opt/sub", "dir"), member("opt/sub/deep", data=b"d"),
         member("lib", "symlink", link="usr/lib")],
        [member("etc/.wh.a"), member("opt", "dir"), member("opt/.wh..wh..opq"), member("opt/new", data=b"new"),
         member("lib", "dir"), member("lib/x", data=b"x")])
    assert sorted(os.listdir(root / "etc")) == ["b"]
    assert sorted(os.listdir(root / "opt")) == ["new"]
    assert os.path.isdir(root / "lib") and not os.path.islink(root / "lib")  # an explicit dir replaces a link
    assert "etc/a" not in view and "opt/sub/deep" not in view
    assert os.stat(root / "etc" / "b").st_ino == os.stat(tmp_path / "l0" / "etc" / "b").st_ino  # shared


def test_writing_through_a_lower_layers_symlink_is_refused(tmp_path):
    with pytest.raises(unpack.HostileLayer, match="symlink"):
        _layers(tmp_path, [member("lib", "symlink", link="/etc")], [member("lib/evil", data=b"x")])


@pytest.mark.parametrize("text, expected", [
    ("oci:/images/app:1.0", ("oci", "/images/app", "1.0")),
    ("oci-archive:/tmp/a.tar", ("oci-archive", "/tmp/a.tar", "")),
    ("docker-archive:/tmp/a.tar", ("docker-archive", "/tmp/a.tar", "")),
    ("docker://registry.example.com:5000/team/app:2", ("docker", "registry.example.com:5000", "team/app", "2")),
    ("docker://localhost/app", ("docker", "localhost", "app", "latest")),
])
def test_references(text, expected):
    parsed = refs.parse(text)
    if parsed.kind == "docker":
        assert (parsed.kind, parsed.host, parsed.name, parsed.tag) == expected
    else:
        assert (parsed.kind, parsed.path, parsed.tag) == expected
    assert refs.parse(str(parsed)) == parsed


@pytest.mark.parametrize("text", ["debian:12", "docker://debian", "docker://library/debian:12", "oci:",
                                  "docker://h.example/App", "docker-archive:/a.tar:tag", "docker://h.example/a@sha256:12",
                                  "oci:/a b"])
def test_bad_references(text):
    with pytest.raises(refs.ReferenceError):
        refs.parse(text)


def test_registry_allowlist_matches_whole_components():
    ref = refs.parse("docker://registry.example.com/team/app:1")
    assert refs.registry_allowed(ref, ["registry.example.com"])
    assert refs.registry_allowed(ref, ["registry.example.com/team"])
    assert not refs.registry_allowed(ref, [])
    assert not refs.registry_allowed(ref, ["registry.example.com/te"])
    assert not refs.registry_allowed(ref, ["example.com"])
    assert not refs.registry_allowed(refs.parse("docker://registry.example.com.evil.net/team/app"),
                                     ["registry.example.com"])
    assert refs.registry_allowed(refs.parse("oci:/x"), [])
