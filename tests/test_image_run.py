"""Sandboxes run from images, rootful and rootless: the image's root read-only and unchanged on
disk, its config (Env, WorkingDir, Cmd, User) applied unless the profile says otherwise, the
profile's isolation intact (`sandbox verify`), `require_scan` refusing a dirty image."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

import imagebuild
from conftest import ROOT, as_nobody, require
from sandbox.image import Store



@pytest.fixture
def image_dir():
    """Layout, store and profiles in a directory uid 65534 may traverse (pytest's tmp_path is root's)."""
    path = Path(tempfile.mkdtemp(prefix="sbxtest-image-", dir="/tmp"))
    os.chmod(path, 0o755)
    layout = path / "busybox"
    digests = imagebuild.busybox_image(str(layout), config={"config": {
        "Env": ["PATH=/bin", "GREETING=hello from the image"], "Cmd": ["/bin/sh", "-c", "echo default command"],
        "WorkingDir": "/home/app/work", "User": "app"}}, extra=[
            imagebuild.member("usr/bin", "dir"), imagebuild.member("usr/bin/su", data=b"#!/bin/sh\nid\n", mode=0o4755),
            imagebuild.member("etc/secret", data=b"root only\n", mode=0o600)])
    (path / "image.toml").write_text(f'extends = "untrusted"\n[image]\nref = "oci:{layout}:latest"\n')
    yield path, layout, digests
    shutil.rmtree(path, ignore_errors=True)


def _env(path: Path) -> dict:
    return {"SANDBOX_IMAGE_STORE": str(path / "store")}


PROBE = ("id -u; id -g; pwd; echo \"$GREETING\"; cat /etc/secret; "
         "touch /bin/x 2>&1 || true; touch /newfile 2>&1 || true; stat -c '%a %u' /usr/bin/su; echo end")


def test_run_from_an_image_as_root(image_dir, sandbox_cli):
    path, layout, digests = image_dir
    proc = sandbox_cli("run", str(path / "image.toml"), "--", "/bin/sh", "-c", PROBE, env=_env(path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # the image's User and Env; untrusted sets cwd = "/tmp", and what the profile sets wins
    assert lines[:4] == ["1000", "1000", "/tmp", "hello from the image"]
    assert lines[4] == "root only"  # the image's files belong to the sandbox's user inside
    assert "Read-only file system" in lines[5] and "Read-only file system" in lines[6]
    assert lines[7] == "755 1000"  # setuid stripped
    rootfs = Store(str(path / "store")).get(digests["manifest"]).rootfs
    assert not os.path.exists(os.path.join(rootfs, "bin", "x")) and os.stat(rootfs).st_uid == 0


def test_the_image_command_runs_when_none_is_given(image_dir, sandbox_cli, tmp_path):
    path, layout, _ = image_dir
    bare = path / "bare.toml"
    bare.write_text(f'[image]\nref = "oci:{layout}:latest"\n[filesystem]\nreadonly_root = false\n')
    proc = sandbox_cli("run", str(bare), env=_env(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "default command\n"
    proc = sandbox_cli("run", str(bare), "--", "/bin/pwd", env=_env(path))
    assert proc.stdout == "/home/app/work\n", proc.stderr  # WorkingDir, made in the overlay
    # a writable root writes to the overlay's tmpfs, never to the store
    proc = sandbox_cli("run", str(bare), "--", "/bin/sh", "-c", "echo planted >> /etc/passwd && echo written", env=_env(path))
    assert proc.returncode == 0 and proc.stdout == "written\n", proc.stderr
    image = Store(str(path / "store")).images()[0]
    assert b"planted" not in open(os.path.join(image.rootfs, "etc", "passwd"), "rb").read()


def test_profile_keys_override_the_image(image_dir, sandbox_cli):
    path, layout, _ = image_dir
    proc = sandbox_cli("run", "--cwd", "/tmp", "--env", "GREETING=from the profile", str(path / "image.toml"), "--",
                       "/bin/sh", "-c", "pwd; echo $GREETING", env=_env(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "/tmp\nfrom the profile\n"
    custom = path / "user.toml"
    custom.write_text(f'extends = "untrusted"\n[process]\nuser = 4321\ngroup = 4321\n[image]\nref = "oci:{layout}"\n')
    proc = sandbox_cli("run", str(custom), "--", "/bin/id", "-u", env=_env(path))
    assert proc.returncode == 0 and proc.stdout == "4321\n", proc.stderr


def test_run_image_option_and_check_show_the_resolved_profile(image_dir, sandbox_cli):
    path, layout, digests = image_dir
    proc = sandbox_cli("run", "--image", f"oci:{layout}:latest", "untrusted", "--", "/bin/echo", "ok", env=_env(path))
    assert proc.returncode == 0 and proc.stdout == "ok\n", proc.stderr
    proc = sandbox_cli("check", str(path / "image.toml"), env=_env(path))
    assert proc.returncode == 0, proc.stderr
    assert f'digest = "{digests["manifest"]}"' in proc.stdout and 'source = "/usr"' not in proc.stdout


VERIFY_PROFILE = """extends = "untrusted"
[process]
env = { PATH = "/bin:/usr/bin" }
[image]
ref = "oci:LAYOUT:latest"
"""


def _plain_busybox(path: Path) -> Path:
    """busybox without /usr: untrusted's /usr bind then fills the gap, and with it the python3 the
    verifier's probe runs on."""
    layout = path / "plain"
    imagebuild.busybox_image(str(layout))
    profile = path / "verify.toml"
    profile.write_text(VERIFY_PROFILE.replace("LAYOUT", str(layout)))
    return profile


def test_verify_and_run_verify_with_an_image_profile(image_dir, sandbox_cli):
    path, _, _ = image_dir
    profile = _plain_busybox(path)
    proc = sandbox_cli("verify", str(profile), env=_env(path), timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    proc = sandbox_cli("run", "--verify", str(profile), "--", "/bin/echo", "verified", env=_env(path),
                       timeout=120)
    assert proc.returncode == 0 and proc.stdout.endswith("verified\n"), proc.stderr


def test_require_scan_refuses_a_dirty_image(image_dir, sandbox_cli):
    path, layout, _ = image_dir
    strict = path / "strict.toml"
    strict.write_text(f'extends = "untrusted"\n[image]\nref = "oci:{layout}:latest"\nrequire_scan = "high"\n')
    proc = sandbox_cli("run", str(strict), "--", "/bin/true", env=_env(path))
    assert proc.returncode == 125
    assert "SBX-FILE-SETUID" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    allow = path / "allow.toml"
    allow.write_text('[[accept]]\nid = "SBX-FILE-SETUID"\npath = "/usr/bin/su"\nreason = "inert in sandboxes"\n')
    strict.write_text(strict.read_text() + f'scan_allowlist = "{allow}"\n')
    proc = sandbox_cli("run", str(strict), "--", "/bin/true", env=_env(path))
    assert proc.returncode == 0, proc.stderr


def test_rootless_run_from_an_image(image_dir, rootless):
    path, layout, digests = image_dir
    store = path / "nobody-store"
    store.mkdir()
    os.chown(store, 65534, 65534)
    env = {"PATH": "/usr/bin:/bin", "SANDBOX_IMAGE_STORE": str(store), "HOME": str(store),
           "SANDBOX_AUDIT_LOG": str(store / "audit.jsonl")}
    proc = as_nobody([rootless.sandbox, "run", str(path / "image.toml"), "--", "/bin/sh", "-c", PROBE], cwd=str(path),
                     env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:5] == ["1000", "1000", "/tmp", "hello from the image", "root only"]
    assert "Read-only file system" in lines[5] and lines[7] == "755 1000"
    image_root = next((store / "images").iterdir()) / "rootfs"
    assert os.stat(image_root).st_uid == 65534  # the user's own store, the user's own files
    # Without a delegated cgroup a rootless launch cannot keep memory and cpu limits: the profile
    # says it accepts that (limits.optional), or verify would rightly FAIL them.
    profile = _plain_busybox(path)
    profile.write_text(profile.read_text() + '[limits]\noptional = ["memory", "cpus"]\n')
    proc = as_nobody([rootless.sandbox, "verify", str(profile)], cwd=str(path), env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr


ATTACK = ("mount -o remount,rw / 2>/dev/null && echo remounted; "
          "echo x > /rootfs-write 2>/dev/null && echo root-written; "
          "cat /proc/self/uid_map | tr -s ' ' ; echo built > /workspace/out && echo wrote-workspace")


def test_attacks_from_an_image_under_ci(image_dir, sandbox_cli):
    """An image whose /workspace is a symlink to /etc, run under ci from a workspace an ordinary
    user owns: the bind lands inside the sandbox (the image's /etc), never on the host's; the root
    stays read-only; nothing maps to host root."""
    path, _, _ = image_dir
    layout = path / "hostile"
    imagebuild.busybox_image(str(layout), extra=[imagebuild.member("workspace", "symlink", link="/etc")])
    workspace = path / "ws"
    workspace.mkdir()
    os.chown(workspace, 65534, 65534)
    proc = sandbox_cli("run", "--image", f"oci:{layout}:latest", "ci", "--", "/bin/sh", "-c", ATTACK,
                       cwd=str(workspace), env=_env(path))
    assert proc.returncode == 0, proc.stderr
    assert "remounted" not in proc.stdout and "root-written" not in proc.stdout
    uid_map = proc.stdout.splitlines()[0].split()
    assert uid_map[1] != "0" and uid_map[2] == "1"
    assert "wrote-workspace" in proc.stdout
    assert (workspace / "out").read_text() == "built\n" and os.stat(workspace / "out").st_uid == 65534
    assert not os.path.exists("/etc/out")
