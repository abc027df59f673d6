"""sandbox.sources on its own: the component walk, whose symlinks it follows, the current
directory as the user named it, the system-path rule, and the id-mapping decision."""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import pytest

import sandbox
from sandbox import mounts, namespaces, sources
from sandbox.verify import probe

from conftest import BUILD_USER, require

NOBODY = 65534


@pytest.fixture
def root_tree():
    """A tree under /tmp owned by root (links in it are root's unless a test says otherwise)."""
    require("root")
    base = Path(tempfile.mkdtemp(prefix="sbxtest-src-", dir="/tmp"))
    os.chmod(base, 0o755)
    (base / "real" / "sub").mkdir(parents=True)
    (base / "real" / "sub" / "file").write_text("x")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _walk(path, root=None, **options):
    opened = sources.open_path(str(path), root, **options)
    os.close(opened.fd)
    return opened


def test_plain_paths_and_roots_own_links_are_walked(root_tree):
    os.symlink("real", root_tree / "rel")
    os.symlink(str(root_tree / "real" / "sub"), root_tree / "abs")
    os.symlink("../real/sub/file", root_tree / "real" / "up")
    assert _walk(root_tree / "real" / "sub" / "file").path == str(root_tree / "real/sub/file")
    opened = _walk(root_tree / "rel" / "sub")
    assert opened.path == str(root_tree / "real" / "sub")
    assert opened.followed == ((str(root_tree / "rel"), "real"),)
    assert _walk(root_tree / "abs" / "file").path == str(root_tree / "real/sub/file")
    assert _walk(root_tree / "real" / "up").path == str(root_tree / "real/sub/file")
    assert _walk("/").path == "/"


@pytest.mark.parametrize("case", ["owned by a user", "user's directory", "group-writable directory",
                                  "sticky, someone else's link", "sticky, a hard link"])
def test_links_others_could_have_made_are_refused(root_tree, case):
    where = root_tree
    if case == "user's directory":
        where = root_tree / "home"
        where.mkdir()
        os.chown(where, BUILD_USER, BUILD_USER)
    elif case == "group-writable directory":
        where = root_tree / "shared"
        where.mkdir()
        os.chmod(where, 0o775)
    elif case.startswith("sticky"):
        where = root_tree / "tmp"
        where.mkdir()
        os.chmod(where, 0o1777)
    link = where / "link"
    os.symlink(str(root_tree / "real"), link)
    if case in ("owned by a user", "sticky, someone else's link"):
        os.chown(link, BUILD_USER, BUILD_USER, follow_symlinks=False)
    if case == "sticky, a hard link":
        os.link(link, where / "other", follow_symlinks=False)
    with pytest.raises(sources.SourceError) as caught:
        _walk(link / "sub")
    assert caught.value.errno == errno.ELOOP
    message = str(caught.value)
    assert f"the symlink {link} (-> {root_tree / 'real'})" in message
    assert f"give the real path instead: {root_tree / 'real' / 'sub'}" in message
    if case == "owned by a user":
        assert f"is owned by uid {BUILD_USER}" in message
    if case == "sticky, a hard link":
        assert "hard link" in message


def test_roots_link_in_a_sticky_directory_is_followed(root_tree):
    sticky = root_tree / "tmp"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    os.symlink(str(root_tree / "real"), sticky / "link")
    assert _walk(sticky / "link").path == str(root_tree / "real")


def test_walk_errors_and_limits(root_tree):
    os.symlink("loop", root_tree / "loop")
    (root_tree / "plain").write_text("")
    for path, err in ((root_tree / "loop", errno.ELOOP), (root_tree / "missing" / "x", errno.ENOENT),
                      (root_tree / "plain" / "x", errno.ENOTDIR)):
        with pytest.raises(sources.SourceError) as caught:
            _walk(path)
        assert caught.value.errno == err, path
        assert str(caught.value).startswith(str(path))


def test_a_root_fd_is_a_root_links_and_dotdot_stay_below_it(root_tree):
    """The child walks under /oldroot: absolute targets restart there and '..' stops there."""
    os.symlink("/sub", root_tree / "real" / "absolute")
    os.symlink("../../../../../..", root_tree / "real" / "sub" / "climb")
    root = os.open(root_tree / "real", os.O_PATH | os.O_DIRECTORY)
    try:
        assert _walk("/absolute/file", root).path == "/sub/file"
        assert _walk("/sub/climb/sub", root).path == "/sub"
        with pytest.raises(sources.SourceError):  # the child follows no link at all
            _walk("/absolute", root, follow_root_links=False)
    finally:
        os.close(root)


def test_logical_path_is_pwd_when_it_names_the_current_directory(root_tree):
    os.symlink("real", root_tree / "link")
    real, link = str(root_tree / "real"), str(root_tree / "link")
    assert sources.logical_path(real, cwd=real, pwd=link) == link
    assert sources.logical_path(real + "/sub", cwd=real, pwd=link) == link + "/sub"
    assert sources.logical_path("/usr", cwd=real, pwd=link) == "/usr"  # not below the cwd
    assert sources.logical_path(real, cwd=real, pwd=real) == real
    assert sources.logical_path(real, cwd=real, pwd="/usr") == real  # stale: another directory
    assert sources.logical_path(real, cwd=real, pwd="") == real
    assert sources.logical_path("/usr", cwd="/", pwd=link) == "/usr"  # "/" is below nothing


@pytest.mark.parametrize("path, refused", [
    ("/", True), ("/etc", True), ("/etc/ssl", True), ("/usr/local/src", True), ("/lib64", True),
    ("/libx32/x", True), ("/var", True), ("/var/lib", True), ("/var/lib/docker", True), ("/var/lib/docker/volumes/v/_data", False),
    ("/home", True), ("/root", True), ("/tmp", True), ("/run/user/1000", True), ("/proc/1", True),
    ("/home/alice/src", False), ("/var/lib/build", False), ("/srv/ci/ws", False), ("/tmp/ws", False),
    ("/root/build", False), ("/data/docker.sock", True), ("/opt/app", False),
])
def test_the_system_path_rule(path, refused):
    assert (sources.system_path_reason(path) is not None) == refused
    assert (probe.system_path_reason(path) is not None) == refused  # the probe's copy agrees


def test_the_probe_carries_the_same_lists():
    assert probe.SYSTEM_TREES == sources.SYSTEM_TREES
    assert probe.SYSTEM_DIRS == sources.SYSTEM_DIRS
    assert probe.SYSTEM_TREE_PREFIXES == sources.SYSTEM_TREE_PREFIXES
    assert probe.RUNTIME_SOCKET_NAMES == sources.RUNTIME_SOCKETS


def _decisions(tmp: Path, uid: int, gid: int, **process) -> sources.SourceTrees:
    ws = tmp / "ws"
    ws.mkdir(exist_ok=True)
    os.chown(ws, uid, gid)
    profile = sandbox.profile_from_dict({"extends": "untrusted", "process": process, "filesystem": {
        "mounts": [{"source": str(ws), "target": "/ws", "mode": "rw"}]}})
    trees = sources.SourceTrees()
    trees.open(profile, namespaces.id_map_for(profile.process), clone=False)
    return trees


def test_the_id_mapping_never_reaches_root(root_tree):
    assert _decisions(root_tree, BUILD_USER, BUILD_USER).idmaps == {"/ws": (BUILD_USER, BUILD_USER)}
    assert _decisions(root_tree, BUILD_USER, 1234).idmaps == {"/ws": (BUILD_USER, 1234)}
    for uid, gid in ((0, 0), (0, BUILD_USER), (BUILD_USER, 0)):
        trees = _decisions(root_tree, uid, gid)
        assert trees.idmaps == {} and trees.warnings, (uid, gid)  # plain, and says it may not write
    # the sandbox's own host ids already own it: nothing to map
    assert _decisions(root_tree, BUILD_USER, BUILD_USER, host_user=BUILD_USER, host_group=BUILD_USER).idmaps == {}
    with pytest.raises(AssertionError):
        sources._idmap_tree(-1, (0, BUILD_USER), namespaces.IdMap(NOBODY, NOBODY, NOBODY, NOBODY))


def test_the_child_refuses_a_source_swapped_after_the_check(root_tree, monkeypatch):
    """Rootless, the child walks the resolved path again: a different inode there now is refused."""
    monkeypatch.setattr(mounts, "OLDROOT", "/")
    path = str(root_tree / "real")
    info = os.stat(path)
    with pytest.raises(mounts.MountError) as caught:
        mounts._open_host_tree(path, (info.st_dev, info.st_ino + 1))
    assert caught.value.errno == errno.ESTALE
    os.close(mounts._open_host_tree(path, (info.st_dev, info.st_ino)))  # a detached clone, dropped
