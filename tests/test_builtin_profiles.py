"""The built-in profiles run what people run in them: python3, sh, gcc, make, git."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import BUILD_USER, ROOT, as_nobody, nobody_install, require

import sandbox

BUILD = r"""
set -e
cd "$1"
printf '#include <stdio.h>\nint main(void){puts("built inside");return 0;}\n' > hello.c
printf 'hello: hello.c\n\tgcc -O2 -o $@ $<\n' > Makefile
make -s
./hello
/usr/bin/python3 -c 'import subprocess, threading; t = threading.Thread(target=print, args=("py ok",)); t.start(); t.join(); print(subprocess.run(["echo", "sub ok"], capture_output=True, text=True).stdout.strip())'
git init -q repo && cd repo && git -c user.email=a@b -c user.name=ci commit -q --allow-empty -m one && git log --oneline | wc -l
"""


@pytest.mark.parametrize("name", ["untrusted", "ci"])
def test_toolchains_work(name, tmp_path, monkeypatch):
    require("userns", "system_python", "gcc")
    monkeypatch.chdir(tmp_path)  # ci binds the current directory at /workspace
    if name == "ci" and os.geteuid() == 0:
        os.chown(tmp_path, BUILD_USER, BUILD_USER)  # a root-owned one is not the sandbox's to write
    workdir = "/tmp" if name == "untrusted" else "/workspace"
    result = sandbox.run(name, ["/bin/sh", "-c", BUILD, "build", workdir], capture_output=True, timeout=120)
    assert result.exit_code == 0, result.stderr.decode()
    assert result.stdout.decode().split("\n")[:4] == ["built inside", "py ok", "sub ok", "1"]
    if name == "ci":  # the build landed in the caller's directory, owned as the directory is
        binary = tmp_path / "hello"
        assert binary.exists() and os.stat(binary).st_uid == os.stat(tmp_path).st_uid
    else:  # nothing left on the host
        assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- a real build under ci

SANDBOX = str(ROOT / ".venv" / "bin" / "sandbox")
NOBODY = 65534
TINYZ = ROOT / "tests" / "data" / "tinyz"  # zlib's build in miniature: see its README


def _workspace_of(owner: int) -> Path:
    """A copy of the tinyz project under /tmp, every file owned by `owner` (a CI checkout)."""
    path = Path(tempfile.mkdtemp(prefix="sbxtest-build-", dir="/tmp"))
    os.chmod(path, 0o755)
    os.chown(path, owner, owner)  # (the rootless caller's audit log goes here)
    shutil.copytree(TINYZ, path / "tinyz")
    for entry in [path / "tinyz", *(path / "tinyz").iterdir()]:
        os.chown(entry, owner, owner)
    return path / "tinyz"


def _owners_and_modes(tree: Path) -> tuple[set, list]:
    owners, special = set(), []
    for entry in [tree, *tree.rglob("*")]:
        info = entry.lstat()
        owners.add((info.st_uid, info.st_gid))
        if info.st_mode & 0o6000:
            special.append(f"{entry.name} {oct(info.st_mode)}")
    return owners, special


BUILD_SCRIPT = "./configure --prefix=/usr && make -s && make -s test"


@pytest.mark.parametrize("rootless", [False, True], ids=["root", "rootless"])
def test_ci_builds_a_configure_make_project_in_a_build_users_workspace(rootless, request):
    """What `ci` is for: ./configure && make && make test of a multi-file C project (shared library
    with its symlinks included) in a workspace owned by an ordinary user; every output belongs to
    that user on the host, none to root, none setuid."""
    require("userns", "gcc", *(("rootless",) if rootless else ("root",)))
    owner = NOBODY if rootless else BUILD_USER
    workspace = _workspace_of(owner)
    try:
        sandbox = nobody_install(request.getfixturevalue("installed")).sandbox if rootless else SANDBOX
        argv = [sandbox, "run", "ci", "--", "/bin/sh", "-c", BUILD_SCRIPT]
        if rootless:
            proc = as_nobody(argv, cwd=str(workspace), timeout=180,
                             env={"PATH": "/usr/bin:/bin", "SANDBOX_AUDIT_LOG": str(workspace.parent / "audit.jsonl")})
        else:
            proc = subprocess.run(argv, cwd=workspace, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "*** tinyz test OK ***" in proc.stdout
        assert "belongs to root" not in proc.stderr and "idmapped" not in proc.stderr, proc.stderr
        built = {p.name for p in workspace.iterdir()}
        assert {"config.h", "Makefile", "libtinyz.a", "libtinyz.so.1.0", "tinyz", "test_shared"} <= built
        assert os.readlink(workspace / "libtinyz.so") == "libtinyz.so.1"
        owners, special = _owners_and_modes(workspace)
        assert owners == {(owner, owner)}, owners
        assert not special
    finally:
        shutil.rmtree(workspace.parent, ignore_errors=True)
