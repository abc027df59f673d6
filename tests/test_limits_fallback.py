"""Without a cgroup (a rootless launch here), the limits an unprivileged user can enforce are
enforced by rlimits, each approximation said in a warning (issue 21, item 5).

RLIMIT_NPROC: since Linux 5.14 the kernel counts processes per (user namespace, uid) (ucounts)
and checks the count against the limit of the forking task. Inside the sandbox's own user
namespace the sandbox user is the only uid, so the limit counts the sandbox's processes and
threads: not the caller's other processes with the same host uid, not another sandbox's. The
tests below check exactly that on this kernel."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest

from conftest import as_nobody, require
from sandbox import rlimits

NOBODY = 65534
FORKS = textwrap.dedent("""
    import os, signal
    kids = []
    try:
        for _ in range(300):
            pid = os.fork()
            if pid == 0:
                signal.pause()
                os._exit(0)
            kids.append(pid)
        print("forked", len(kids))
    except OSError as exc:
        print("stopped", len(kids), exc.errno)
    for pid in kids:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
""")


def test_fallback_computation():
    limits = (("core", 0, 0), ("nofile", 1024, 1024), ("nproc", 50, -1))
    out, notes = rlimits.cgroup_fallback({"pids": 128, "memory": 512 << 20, "swap": 0, "cpus": 1.0}, limits,
                                         own_user_namespace=True)
    assert dict((n, (s, h)) for n, s, h in out) == {
        "core": (0, 0), "nofile": (1024, 1024), "nproc": (50, 128), "data": (512 << 20, 512 << 20)}
    assert len(notes) == 2
    assert "RLIMIT_NPROC" in notes[0] and "RLIMIT_DATA" in notes[1] and "512M" in notes[1]
    # nothing unapplied: the profile's rlimits unchanged, no warning
    assert rlimits.cgroup_fallback({}, limits, own_user_namespace=True) == (tuple(sorted(limits)), [])
    # without a user namespace of its own, RLIMIT_NPROC would count the host user's processes
    out, notes = rlimits.cgroup_fallback({"pids": 64}, (), own_user_namespace=False)
    assert out == () and "not enforced" in notes[0]


@pytest.fixture
def nobody_dir():
    require("rootless")
    path = Path(tempfile.mkdtemp(prefix="sbxtest-limits-", dir="/tmp"))
    os.chmod(path, 0o755)
    os.chown(path, NOBODY, NOBODY)
    (path / "forks.py").write_text(FORKS)
    os.chmod(path / "forks.py", 0o644)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def rootless_run(install, nobody_dir: Path, profile: str, *argv: str):
    """`sandbox run` as uid 65534, with the installed launcher (that user may not enter the checkout)."""
    return as_nobody([install.sandbox, "run", "--bind", f"{nobody_dir}:/job", profile, "--", *argv],
                     cwd=str(nobody_dir), timeout=120,
                     env={"PATH": "/usr/bin:/bin", "SANDBOX_AUDIT_LOG": str(nobody_dir / "audit.jsonl")})


def test_rootless_fork_bomb_is_contained(nobody_dir, rootless):
    done = rootless_run(rootless, nobody_dir, "untrusted", "/usr/bin/python3", "/job/forks.py")
    assert done.returncode == 0, done.stderr
    verdict, count, err = done.stdout.split()
    # 128 tasks: init and the python process count too, as they would in pids.max
    assert (verdict, int(count), int(err)) == ("stopped", 126, 11), done.stdout  # EAGAIN
    assert "RLIMIT_NPROC" in done.stderr and "RLIMIT_DATA" in done.stderr


def test_nproc_counts_the_sandbox_not_the_host_user(nobody_dir, rootless):
    """30 processes of host uid 65534 outside, and another sandbox of the same user at the same
    time: neither changes how many processes this sandbox may start."""
    profile = nobody_dir / "twenty.toml"
    profile.write_text('extends = "untrusted"\n[limits]\npids = 20\n')
    os.chmod(profile, 0o644)
    sleepers = [subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                  "sleep", "60"]) for _ in range(30)]
    try:
        other = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                  rootless.sandbox, "run", "-q", str(profile), "--", "/bin/sh", "-c",
                                  "sleep 30 & sleep 30 & sleep 30 & wait"],
                                 cwd=str(nobody_dir), env={"PATH": "/usr/bin:/bin",
                                                           "SANDBOX_AUDIT_LOG": str(nobody_dir / "a2.jsonl")},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            done = rootless_run(rootless, nobody_dir, str(profile), "/usr/bin/python3", "/job/forks.py")
        finally:
            other.kill()
            other.wait()
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["stopped", "18"], done.stdout


def test_rlimits_stand_in_only_for_what_the_cgroup_did_not_apply(tmp_path):
    """As root the cgroup applies pids: no RLIMIT_NPROC stand-in, no warning about it."""
    require("root", "userns")
    import sandbox
    result = sandbox.run("untrusted", ["/bin/sh", "-c", "cat /proc/self/limits"], capture_output=True)
    assert result.exit_code == 0
    if any("not applied" in w and "pids" in w for w in result.warnings):
        pytest.skip("this machine gives root no pids controller")
    assert not any("RLIMIT_NPROC" in w for w in result.warnings)
    line = next(l for l in result.stdout.decode().splitlines() if l.startswith("Max processes"))
    assert line.split()[2] != "128"
