"""Many launches at once, with every way of ending, leave nothing behind.

The reduced forms run in every test run; SANDBOX_STRESS=full runs 200 launches, 32 at a time (CLI
processes, and threads sharing one ForkServer).
"""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import processes_with, require

FULL = os.environ.get("SANDBOX_STRESS") == "full"
LAUNCHES, PARALLEL = (200, 32) if FULL else (24, 8)


def _profile(tmp_path, name: str, limits: str) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'extends = "untrusted"\n[limits]\n{limits}\n')
    return str(path)


def _mounts() -> set[str]:
    """What a launch could leak into the host mount table (its staging and new roots); other test
    runs on the machine mount their own things meanwhile."""
    with open("/proc/self/mountinfo") as handle:
        points = {line.split()[4] for line in handle}
    return {p for p in points if p in ("/tmp", "/newroot", "/oldroot") or p.startswith(("/newroot/", "/oldroot/"))}




@pytest.mark.stress
@pytest.mark.timeout(600)
def test_mixed_launches_leave_no_cgroups_mounts_or_processes(tmp_path):
    require("root", "userns", "cgroup_v1")
    from sandbox import cgroups
    marker = f"stress-{uuid.uuid4().hex[:8]}"
    small_memory = _profile(tmp_path, "oom", 'memory = "32M"\npids = 64')
    few_pids = _profile(tmp_path, "bomb", "pids = 16")
    kinds = {
        "exit": (["untrusted", "--", "/bin/sh", "-c", f"exit 3 # {marker}"], {3}),
        "timeout": (["--timeout", "1", "untrusted", "--", "/bin/sh", "-c", f"sleep 30 & sleep 30 # {marker}"], {124}),
        "oom": ([small_memory, "--", "/usr/bin/python3", "-c", f"b = bytearray(256 << 20) # {marker}"], {137}),
        "forkbomb": (["--timeout", "2", few_pids, "--", "/bin/sh", "-c", f"f() {{ f | f & }}; f; exec sleep 5 # {marker}"],
                     {124, 2}),  # 2: the shell itself found no free pid, which is the limit working
    }
    plan = [list(kinds)[i % len(kinds)] for i in range(LAUNCHES)]
    mounts_before = _mounts()

    def launch(kind: str):
        argv, expected = kinds[kind]
        done = subprocess.run([sys.executable, "-m", "sandbox", "run", "-q", *argv], capture_output=True,
                              text=True, timeout=120)
        return kind, done.returncode, expected, done.stderr.strip()[-300:]

    with ThreadPoolExecutor(PARALLEL) as pool:
        outcomes = list(pool.map(launch, plan))
    wrong = [o for o in outcomes if o[1] not in o[2]]
    assert not wrong, f"{len(wrong)} launches ended unexpectedly, e.g. {wrong[:3]}"
    assert processes_with(marker) == [], "sandboxed processes survived their launch"
    assert _mounts() == mounts_before, "the host mount table changed"
    # Left behind: cgroups of launchers that have exited (every CLI launch here has). Those of live
    # launchers are other test runs' on this machine, running right now.
    from sandbox.cgroups import _fs
    stale = [path for path in cgroups.leaked() if f"sandbox-{os.getpid()}-" not in path
             and not _fs.pid_alive(_fs.launcher_pid(os.path.basename(path)))]
    assert stale == [], f"cgroups left behind by the launchers: {stale[:5]}"


@pytest.mark.stress
@pytest.mark.timeout(600)
def test_threads_sharing_a_fork_server_leave_nothing_behind(tmp_path):
    """The API's way: a pool of threads, one ForkServer, every way of ending."""
    require("userns")
    import sandbox
    marker = f"stress-fs-{uuid.uuid4().hex[:8]}"
    small_memory = sandbox.profile_from_dict({"extends": "untrusted", "limits": {"memory": "32M"}})
    kinds = {
        "exit": ("untrusted", ["/bin/sh", "-c", f"exit 3 # {marker}"], {}, {3}),
        "timeout": ("untrusted", ["/bin/sh", "-c", f"sleep 30 & sleep 30 # {marker}"], {"timeout": 0.5}, {124}),
        "oom": (small_memory, ["/usr/bin/python3", "-c", f"b = bytearray(256 << 20) # {marker}"], {}, {137, 1}),
        "not found": ("untrusted", [f"/nonexistent-{marker}"], {}, {127}),
    }
    plan = [list(kinds)[i % len(kinds)] for i in range(LAUNCHES)]
    fds_before = len(os.listdir("/proc/self/fd"))

    def launch(server, kind: str):
        profile, argv, options, expected = kinds[kind]
        try:
            code = sandbox.run(profile, argv, fork_server=server, capture_output=True, **options).exit_code
        except sandbox.ExecError as exc:
            code = exc.exit_code
        return kind, code, expected

    with sandbox.ForkServer() as server:
        with ThreadPoolExecutor(PARALLEL) as pool:
            outcomes = list(pool.map(lambda kind: launch(server, kind), plan))
        children = open(f"/proc/{server.pid}/task/{server.pid}/children").read().split()
    wrong = [o for o in outcomes if o[1] not in o[2]]
    assert not wrong, f"{len(wrong)} launches ended unexpectedly, e.g. {wrong[:3]}"
    assert children == [] and processes_with(marker) == []
    assert len(os.listdir("/proc/self/fd")) == fds_before
