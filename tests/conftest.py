"""Shared fixtures: what this machine allows (probed once), strict skips for CI, and leak checks.

A test that cannot run here calls `require("userns")` etc. and is skipped with the reason; with
SANDBOX_STRICT_SKIPS=1 (scripts/test sets it under CI) such a skip is a failure instead, so CI never
passes by skipping what it was meant to prove.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STRICT = os.environ.get("SANDBOX_STRICT_SKIPS") == "1"
# An ordinary user who owns CI workspaces in tests (a number: no passwd entry is needed).
BUILD_USER = 1000


def _try_fork(action) -> bool:
    pid = os.fork()
    if pid == 0:
        try:
            action()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


@functools.cache
def machine() -> dict[str, bool]:
    from sandbox import _libc
    from sandbox.landlock import abi_version
    facts = {
        "root": os.geteuid() == 0,
        "userns": _try_fork(lambda: _libc.unshare(_libc.CLONE_NEWUSER)),
        "seccomp": os.path.exists("/proc/self/status") and "Seccomp:" in Path("/proc/self/status").read_text(),
        "landlock": abi_version() > 0,
        "cgroup_v1": os.path.isdir("/sys/fs/cgroup/memory") and os.path.exists("/sys/fs/cgroup/memory/cgroup.procs"),
        "cgroup_v2": os.path.exists("/sys/fs/cgroup/cgroup.controllers")
                     or os.path.exists("/sys/fs/cgroup/unified/cgroup.controllers"),
        "setpriv": shutil.which("setpriv") is not None,
        "bwrap": shutil.which("bwrap") is not None,
        "system_python": os.path.exists("/usr/bin/python3"),
        "gcc": os.path.exists("/usr/bin/gcc"),
    }
    facts["rootless"] = facts["root"] and facts["setpriv"] and facts["userns"]
    return facts


REASONS = {
    "root": "needs root", "userns": "user namespaces are not available to this user",
    "seccomp": "kernel without seccomp", "landlock": "kernel without Landlock",
    "cgroup_v1": "no cgroup v1 hierarchies on this machine", "cgroup_v2": "no cgroup v2 hierarchy on this machine",
    "setpriv": "setpriv (util-linux) is not installed", "bwrap": "bubblewrap is not installed",
    "system_python": "/usr/bin/python3 is not installed", "gcc": "gcc is not installed",
    "rootless": "rootless tests need root (to switch to uid 65534 with setpriv) and user namespaces",
}


def require(*features: str) -> None:
    facts = machine()
    for feature in features:
        if not facts.get(feature):
            reason = REASONS.get(feature, feature)
            if STRICT:
                pytest.fail(f"required by this test but unavailable (SANDBOX_STRICT_SKIPS=1): {reason}")
            pytest.skip(reason)


@pytest.fixture
def needs():
    return require


# ---------------------------------------------------------------- leak checks

def _child_pids() -> list[int]:
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            found.append(int(entry))
    return found


def _sandbox_mounts() -> list[str]:
    try:
        with open("/proc/self/mountinfo") as handle:
            return [line.split()[4] for line in handle if "sandbox" in line.split()[4]
                    and line.split()[4].startswith(("/tmp", "/run", "/var/tmp"))]
    except OSError:
        return []


def _leaked_cgroups() -> list[str]:
    """Our own sandbox cgroups only: other test runs on the machine make theirs concurrently."""
    from sandbox import cgroups
    mine = f"sandbox-{os.getpid()}-"
    return [path for path in cgroups.leaked() if os.path.basename(path).startswith(mine)]


@pytest.fixture(autouse=True)
def no_leaks(request, tmp_path_factory, monkeypatch):
    """Fail a test that leaves cgroups, mounts or child processes behind."""
    monkeypatch.setenv("SANDBOX_AUDIT_LOG", str(tmp_path_factory.getbasetemp() / "audit.jsonl"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
    before_cgroups = set(_leaked_cgroups())
    before_mounts = set(_sandbox_mounts())
    yield
    problems = []
    children = _child_pids()
    if children:
        for pid in children:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass
        problems.append(f"child processes left running: {children}")
    # reap zombies the test forgot
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        problems.append(f"unreaped child {pid}")
    cgroups_now = set(_leaked_cgroups()) - before_cgroups
    if cgroups_now:
        from sandbox import cgroups
        cgroups.gc()
        problems.append(f"cgroups left behind: {sorted(cgroups_now)}")
    mounts_now = set(_sandbox_mounts()) - before_mounts
    if mounts_now:
        problems.append(f"mounts left behind: {sorted(mounts_now)}")
    if problems:
        pytest.fail("leak: " + "; ".join(problems))


@pytest.fixture
def world_dir():
    """A scratch directory uid 65534 can traverse (pytest's tmp_path is root-only)."""
    import tempfile
    path = Path(tempfile.mkdtemp(prefix="sbxtest-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sandbox_cli():
    """Run the real `sandbox` command; returns a CompletedProcess (text)."""
    def run(*args, input=None, cwd=None, env=None, timeout=60):
        return subprocess.run([sys.executable, "-m", "sandbox", *args], input=input, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    return run


def run_in_child(fn, timeout: float = 10.0):
    """Run fn() in a forked child; return its JSON-able result or raise its error.

    For tests that change the process irreversibly (namespaces, seccomp, Landlock, rlimits)."""
    import json
    import select
    import signal
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = {"ok": fn()}
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            # repr only: formatting a traceback reads source files, which Landlock may forbid by now
            out = {"error": repr(exc)}
        try:
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    try:
        while True:
            ready, _, _ = select.select([r], [], [], timeout)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise TimeoutError("child did not answer")
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    out = json.loads(data)
    if "error" in out:
        raise AssertionError(f"child failed: {out['error']}")
    return out["ok"]


def attempt(fn) -> str:
    """'ok', or the errno name of the OSError fn raised."""
    import errno
    try:
        fn()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


def wait_until(predicate, timeout: float) -> bool:
    """Poll predicate every 20 ms until it holds or timeout seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def processes_with(marker: str) -> list[int]:
    """Pids whose command line contains marker (to find what a sandbox left running)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if marker.encode() in handle.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def as_nobody(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run argv as uid/gid 65534 with no supplementary groups (a rootless caller)."""
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", *argv],
                          capture_output=True, text=True, **kwargs)
