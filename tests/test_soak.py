"""Soak (issue 13): many mixed launches from one launcher process, then its descriptors, memory,
children, cgroups, mounts and temporary files are where they started.

The reduced form runs in every test run; SANDBOX_STRESS=soak runs 2,000 launches. Figures of the
last full run are in docs/reliability.md.
"""
from __future__ import annotations

import ctypes
import errno
import gc
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

import sandbox
from sandbox import cgroups, faults

from conftest import processes_with, require

SOAK = os.environ.get("SANDBOX_STRESS") == "soak"
LAUNCHES = 2000 if SOAK else 80


def _rss_kib() -> int:
    """Resident memory once garbage is collected and the allocator has given back what is free:
    launches leave reference cycles that only the collector frees, and glibc keeps freed memory
    in per-thread arenas (the captured output of 8 threads) for reuse. What remains is a leak."""
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _mounts() -> set[str]:
    """Host mounts a launch could leak: its staging tmpfs (/tmp inside its own namespace), the
    new and old roots. Other test runs on this machine mount their own things meanwhile."""
    with open("/proc/self/mountinfo") as handle:
        points = {line.split()[4] for line in handle}
    return {p for p in points if p in ("/tmp", "/newroot", "/oldroot") or p.startswith(("/newroot/", "/oldroot/"))}


def _zombies() -> list[int]:
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me and fields[0] == "Z":
                found.append(int(entry))
    return found


@pytest.mark.stress
@pytest.mark.timeout(1800 if SOAK else 300)
def test_soak_leaves_the_launcher_as_it_was(tmp_path, monkeypatch):
    require("root", "userns", "cgroup_v1")
    # Whatever the launcher or the CLI would leave in a temporary directory lands in this one.
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    marker = f"soak-{uuid.uuid4().hex[:8]}"
    untrusted = sandbox.load_profile("untrusted")
    small = sandbox.profile_from_dict({"extends": "untrusted", "limits": {"memory": "32M", "pids": 16}})
    kinds = {
        "exit": (untrusted, ["/bin/sh", "-c", f"echo out; exit 3 # {marker}"], {}, {3}),
        "timeout": (untrusted, ["/bin/sh", "-c", f"sleep 30 & sleep 30 # {marker}"],
                    {"timeout": 0.3, "kill_after": 0.2}, {124}),
        "oom": (small, ["/usr/bin/python3", "-c", f"b = bytearray(256 << 20) # {marker}"], {}, {137}),
        "forkbomb": (small, ["/bin/sh", "-c", f"f() {{ f | f & }}; f; sleep 1 # {marker}"], {"timeout": 3},
                     {124, 2, 0, 137}),
        "output": (untrusted, ["/bin/sh", "-c", f"head -c 400000 /dev/zero # {marker}"], {"max_output": 64 << 10},
                   {0}),
    }
    names = list(kinds)
    failures: list[str] = []

    def launch(index: int, server=None) -> None:
        profile, argv, options, expected = kinds[names[index % len(names)]]
        try:
            result = sandbox.run(profile, argv, capture_output=True, fork_server=server, **options)
            if result.exit_code not in expected:
                failures.append(f"{names[index % len(names)]}: exit {result.exit_code} ({result.warnings})")
        except sandbox.SandboxError as exc:
            failures.append(f"{names[index % len(names)]}: {exc}")

    def injected(index: int) -> None:
        step_name = ("landlock", "mount:bind", "seccomp", "cgroup", "pipes", "id map")[index % 6]
        with faults.injected(step_name, errno.EPERM):
            try:
                sandbox.run(untrusted, ["/bin/true"], capture_output=True)
                failures.append(f"{step_name}: no error")
            except sandbox.SetupError:
                pass

    def cli(index: int) -> None:
        done = subprocess.run([sys.executable, "-m", "sandbox", "run", "-q", "untrusted", "--", "/bin/sh", "-c",
                               f"exit {index % 7} # {marker}"], capture_output=True, timeout=120)
        if done.returncode != index % 7:
            failures.append(f"cli: exit {done.returncode}: {done.stderr[-200:]!r}")

    def mixed_round(launches: int) -> None:
        quarter = launches // 4
        for index in range(quarter // 2):  # direct, one at a time, with injected failures between
            launch(index)
            injected(index)
        with ThreadPoolExecutor(8) as pool:  # from 8 threads of this process
            list(pool.map(launch, range(quarter)))
        with sandbox.ForkServer() as server, ThreadPoolExecutor(8) as pool:  # through a fork server
            list(pool.map(lambda i: launch(i, server), range(quarter)))
        with ThreadPoolExecutor(4) as pool:  # the CLI, as separate processes
            list(pool.map(cli, range(launches - 3 * quarter)))

    # Warm-up: a round of every kind, every way, so that imports, caches and the allocator's
    # per-thread arenas (which keep freed memory for reuse) exist before the baseline.
    mixed_round(40)
    fds_before, rss_before = set(os.listdir("/proc/self/fd")), _rss_kib()
    mounts_before = _mounts()
    started = time.monotonic()
    mixed_round(LAUNCHES)
    elapsed = time.monotonic() - started

    assert not failures, failures[:10]
    fds_after = set(os.listdir("/proc/self/fd"))
    rss_growth_kib = _rss_kib() - rss_before
    print(f"\nsoak: {LAUNCHES} launches in {elapsed:.1f} s; launcher RSS {rss_before} -> {_rss_kib()} KiB "
          f"({rss_growth_kib:+d}); fds {len(fds_before)} -> {len(fds_after)}")
    assert fds_after == fds_before
    assert rss_growth_kib < 5 * 1024, rss_growth_kib
    assert not _zombies()
    assert not processes_with(marker)
    assert not [p for p in cgroups.leaked() if f"sandbox-{os.getpid()}-" in p]
    assert _mounts() == mounts_before
    assert not os.listdir(private_tmp), os.listdir(private_tmp)
