"""The built-in profiles run what people run in them: python3, sh, gcc, make, git."""
from __future__ import annotations

import os

import pytest

from conftest import BUILD_USER, require

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
