"""What `sandbox run` loads: the modules kept off its path stay off (each was measured to cost
start-up time, see docs/performance.md), and the string path helpers that replaced pathlib there
give the strings pathlib gives."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.profile import load

from conftest import ROOT, require

# Not listed: what click itself imports on this path (difflib, platform via uuid).
# (hashlib is on the path since the private _sha256 module went: docs/performance.md, verdicts.)
KEPT_OFF = ("pathlib", "subprocess", "tempfile", "ctypes.util", "decimal", "pickle", "shutil", "random",
            "secrets", "hmac", "multiprocessing", "asyncio", "lzma", "bz2", "socket", "selectors",
            "sandbox.forkserver", "sandbox.net.spec", "ipaddress")


def test_sandbox_run_does_not_import_what_it_does_not_need(tmp_path):
    require("userns")
    script = ("import atexit, sys\n"
              f"atexit.register(lambda: print(sorted(m for m in {KEPT_OFF!r} if m in sys.modules)))\n"
              "sys.argv = ['sandbox', 'run', '-q', 'untrusted', '--', '/bin/true']\n"
              "from sandbox.program import entry\n"
              "entry()\n")
    # SANDBOX_NO_FAST_EXIT: the quick exit would otherwise come before this test's own handler.
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path), SANDBOX_NO_FAST_EXIT="1")
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=str(ROOT))
            for _ in range(2)]  # the first one fills the caches (tempfile may be used to write them)
    assert runs[1].returncode == 0, runs[1].stderr
    assert runs[1].stdout.strip() == "[]"


@pytest.mark.parametrize("path", ["/a//b/./c", "a/b", "", ".", "/", "a/../b", "./x/", "/root/", "x.toml",
                                  "../y/z.toml", "~"])
def test_path_strings_match_pathlib(path):
    assert load._clean(path) == str(Path(path))
    assert load._absolute(path) == str(Path(path).absolute())


def test_builtin_profiles_are_still_paths():
    names = load.builtin_profile_names()
    assert {"untrusted", "ci"} <= set(names) and all(isinstance(p, Path) for p in names.values())
    assert isinstance(load.resolve_profile("untrusted"), Path)
    assert load.resolve_profile("untrusted") == names["untrusted"]


@pytest.mark.parametrize("data", [b"", b"abc", bytes(range(256)) * 300])
def test_our_sha256_gives_hashlibs_digests(data):
    import hashlib
    from sandbox.digest import sha256
    assert sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    assert sha256(data).digest() == hashlib.sha256(data).digest()
