"""A real project built under `ci` (issue 20: "ci must still build a real project"): zlib's
./configure, make and make test, from the source package in Debian's archive (scripts/fetch-zlib,
run by scripts/setup), in a workspace that belongs to an ordinary build user, with the outputs the
build user's."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, STRICT, require, shared_tempdir

BUILD_USER = 1000


def _zlib_source() -> str:
    tree = ROOT / ".cache" / "zlib"
    if not (tree / "configure").exists():
        reason = "zlib's source is not fetched: ./scripts/fetch-zlib (scripts/setup runs it)"
        if STRICT:
            pytest.fail(reason)
        pytest.skip(reason)
    return str(tree)


@pytest.mark.timeout(600)
def test_ci_builds_and_tests_zlib_in_a_build_users_workspace():
    require("root", "userns", "gcc")
    workspace = shared_tempdir("sbxtest-zlib-")
    try:
        project = workspace / "zlib"
        shutil.copytree(_zlib_source(), project, symlinks=True)
        for directory, dirs, files in os.walk(workspace):
            for name in [directory, *(os.path.join(directory, n) for n in dirs + files)]:
                os.lchown(name, BUILD_USER, BUILD_USER)
        done = subprocess.run([sys.executable, "-m", "sandbox", "run", "-q", "ci", "--", "/bin/sh", "-c",
                               "./configure >/dev/null && make -s >/dev/null && make test"],
                              cwd=project, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "*** zlib test OK ***" in done.stdout
        for output in ("libz.a", "example", "minigzip"):
            info = os.stat(project / output)
            assert (info.st_uid, info.st_gid) == (BUILD_USER, BUILD_USER), (output, info.st_uid)
            assert not info.st_mode & 0o6000
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
