"""sandbox.cgroups pieces that need no privileges: the limits model and /proc parsing."""
from __future__ import annotations

import os

import pytest

from sandbox.cgroups import CgroupLimits, detect
from sandbox.cgroups.detect import _directory, cgroup_mounts, own_cgroups
from sandbox.cgroups.limits import cpu_quota_us, weight_to_shares

MiB = 1 << 20


def test_defaults_request_nothing():
    assert CgroupLimits().requested() == {}


def test_swap_only_counts_alongside_memory():
    assert "swap" not in CgroupLimits(swap=0).requested()
    assert CgroupLimits(memory=64 * MiB).requested() == {"memory": 64 * MiB, "swap": 0}
    assert "swap" not in CgroupLimits(memory=64 * MiB, swap=None).requested()


@pytest.mark.parametrize("kwargs, message", [
    ({"memory": -1}, "memory must be a non-negative integer"),
    ({"pids": 0}, "pids must be at least 1"),
    ({"cpus": 0}, "cpus must be positive"),
    ({"cpu_weight": 0}, "cpu_weight must be within 1-10000"),
    ({"io_max": (("sda", 1, None, None, None),)}, "io_max entries"),
    ({"required": {"bogus"}}, "unknown required limit"),
    ({"required": {"memory"}}, "required limit\\(s\\) not set: memory"),
])
def test_bad_limits_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CgroupLimits(**kwargs)


def test_required_becomes_a_frozenset():
    limits = CgroupLimits(pids=5, required=["pids"])
    assert limits.required == frozenset({"pids"})
    hash(limits)


def test_describe_uses_human_units():
    limits = CgroupLimits(memory=256 * MiB, cpus=0.5, io_max=(("8:0", 1, 2, None, None),))
    assert limits.describe("memory") == "memory limit 256M"
    assert limits.describe("cpus") == "cpus limit 0.5"
    assert limits.describe("io_max") == "io max limit 8:0"


def test_cpu_conversions():
    assert cpu_quota_us(0.5) == 50000
    assert cpu_quota_us(2) == 200000
    assert cpu_quota_us(0.001) == 1000  # the kernel's minimum quota
    assert weight_to_shares(100) == 1024
    assert weight_to_shares(1) == 10 and weight_to_shares(10000) == 102400


def test_parse_hybrid_layout(tmp_path):
    (tmp_path / "proc_cgroup").write_text(
        "4:memory:/process_api/abc\n2:cpu,cpuacct:/\n1:name=systemd:/\n0::/user.slice\n")
    v1, v2 = own_cgroups(str(tmp_path / "proc_cgroup"))
    assert v1 == {"memory": "/process_api/abc", "cpu": "/", "cpuacct": "/"}
    assert v2 == "/user.slice"


def test_parse_mountinfo_and_map_a_container_mount_root(tmp_path):
    mnt = tmp_path / "mnt"
    (mnt / "inner").mkdir(parents=True)
    (tmp_path / "mountinfo").write_text(
        f"35 31 0:32 /process_api {mnt} rw,relatime - cgroup cgroup rw,memory\n"
        f"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
        f"42 31 0:39 / /proc rw - proc proc rw\n")
    mounts = cgroup_mounts(str(tmp_path / "mountinfo"))
    assert [(m.fstype, sorted(m.controllers)) for m in mounts] == [("cgroup", ["memory"]), ("cgroup2", [])]
    # Our cgroup /process_api/inner is visible as <mnt>/inner because the mount shows /process_api.
    assert _directory(mounts[:1], "/process_api/inner") == str(mnt / "inner")
    assert _directory(mounts[:1], "/elsewhere") is None


def test_detect_is_cached_and_consistent():
    backend = detect()
    assert backend is detect()
    assert backend.kind in ("v1", "v2", "hybrid", "none")
    assert (backend.kind == "none") == (not backend.bases())
    for directory in backend.bases():
        assert os.path.isdir(directory)
