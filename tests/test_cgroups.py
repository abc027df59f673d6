"""sandbox.cgroups against the real kernel: limits must bite, kills must kill, nothing may leak.

Limit tests run once per backend variant this machine offers (see docs/cgroups.md):
"detected" is what create() uses by default; "v1" and "v2" restrict the detected backend to one
hierarchy and skip, with the reason, where that hierarchy cannot carry the test.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time

import pytest

from sandbox import cgroups
from sandbox.cgroups import CgroupLimits, _fs
from sandbox.cgroups.group import SandboxCgroup
from sandbox.cgroups.v2 import V2Group
from sandbox.errors import LimitsUnavailable, SetupError

from conftest import as_nobody

MiB = 1 << 20
PY = sys.executable
NO_V2_CONTROLLERS = "no cgroup2 hierarchy with controllers on this machine"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or cgroups.detect().kind == "none",
                                reason="needs root and a writable cgroup hierarchy")


def _ours(path: str) -> bool:
    """A sandbox cgroup this test run made: our pid, or a fake dead launcher pid (gc tests)."""
    pid = _fs.launcher_pid(os.path.basename(path))
    return pid == os.getpid() or not _fs.pid_alive(pid)


@pytest.fixture(autouse=True)
def no_leaked_cgroups():
    """Fail a test that leaves a sandbox cgroup behind (and clean it up so others still run)."""
    before = set(cgroups.leaked())
    yield
    new = sorted(p for p in set(cgroups.leaked()) - before if _ours(p))
    for name in {os.path.basename(p) for p in new}:
        SandboxCgroup.attach(cgroups.detect(), name).destroy()
    assert not new, f"test leaked cgroups: {new}"


def _variant(which: str) -> cgroups.Backend:
    detected = cgroups.detect()
    if which == "v1":
        if not detected.v1:
            pytest.skip("no writable cgroup v1 hierarchy on this machine")
        return dataclasses.replace(detected, kind="v1", v2=None, v2_controllers=frozenset())
    if which == "v2":
        if not detected.v2:
            pytest.skip("no writable cgroup2 hierarchy on this machine")
        return dataclasses.replace(detected, kind="v2", v1={})
    return detected


@pytest.fixture(params=["detected", "v1", "v2"])
def backend(request) -> cgroups.Backend:
    return _variant(request.param)


def _require(backend: cgroups.Backend, controller: str) -> None:
    if backend.controller_home(controller) is None:
        pytest.skip(NO_V2_CONTROLLERS if backend.kind == "v2" else f"no {controller} controller here")


def spawn(cgroup, code: str, *args: str, site: bool = False) -> subprocess.Popen:
    """Run python `code` inside cgroup (anything with add_process). It waits on stdin until
    placed, as the launcher's child does."""
    flags = [] if site else ["-I", "-S"]
    proc = subprocess.Popen([PY, *flags, "-c", "import os\nos.read(0, 1)\n" + code, *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cgroup.add_process(proc.pid)
    proc.stdin.write(b"go")
    proc.stdin.close()
    proc.stdin = None  # so communicate() does not flush it again
    return proc


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


# -- limits that bite -----------------------------------------------------------------------

def test_memory_limit_oom_kills(backend):
    _require(backend, "memory")
    with cgroups.create(CgroupLimits(memory=32 * MiB, required=frozenset({"memory"})), backend=backend) as cg:
        proc = spawn(cg, "data = b'x' * (160 << 20)\nprint('survived')")
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == -9 and b"survived" not in out
        assert cg.oom_killed()
        assert cg.stats().oom_kills >= 1


def test_pids_limit_makes_fork_fail_with_eagain(backend):
    _require(backend, "pids")
    code = """
import errno, time
made = 0
try:
    for _ in range(30):
        if os.fork() == 0:
            os.close(1), os.close(2)  # let the test see EOF on our output
            time.sleep(30)
            os._exit(0)
        made += 1
except OSError as e:
    print(errno.errorcode[e.errno], made)
"""
    with cgroups.create(CgroupLimits(pids=6), backend=backend) as cg:
        proc = spawn(cg, code)
        out, err = proc.communicate(timeout=20)
        assert out.split() == [b"EAGAIN", b"5"], err  # the python process itself is the sixth
        assert cg.kill_all()


def test_cpu_limit_throttles(backend):
    _require(backend, "cpu")
    busy = "import time\nend = time.monotonic() + 1.2\nwhile time.monotonic() < end: pass"
    with cgroups.create(CgroupLimits(cpus=0.2), backend=backend) as cg:
        spawn(cg, busy).wait(timeout=20)
        stats = cg.stats()
    cpu_s = stats.cpu_user_s + stats.cpu_system_s
    assert 0.05 < cpu_s < 0.6, stats  # unthrottled it would be about 1.2 s
    assert stats.cpu_throttled_periods > 0


def test_stats_show_a_50mb_allocation(backend):
    _require(backend, "memory")
    with cgroups.create(CgroupLimits(memory=512 * MiB), backend=backend) as cg:
        proc = spawn(cg, "data = b'x' * (50 << 20)\nprint(len(data))")
        assert proc.communicate(timeout=20)[0].strip() == str(50 * MiB).encode()
        stats = cg.stats()
    assert stats.memory_peak_bytes >= 50 * MiB
    assert stats.cpu_user_s + stats.cpu_system_s > 0
    assert stats.pids_peak >= 1 and stats.oom_kills == 0


def test_limits_are_written_where_the_kernel_reads_them(backend):
    limits = CgroupLimits(memory=64 * MiB, cpus=0.5, cpu_weight=200, pids=40)
    with cgroups.create(limits, backend=backend) as cg:
        paths = cg.paths
        if "memory" in paths:
            assert _fs.read(paths["memory"] + "/memory.limit_in_bytes").strip() == str(64 * MiB)
            assert _fs.read(paths["memory"] + "/memory.memsw.limit_in_bytes").strip() == str(64 * MiB)
        if "cpu" in paths:
            assert _fs.read(paths["cpu"] + "/cpu.cfs_quota_us").strip() == "50000"
            assert _fs.read(paths["cpu"] + "/cpu.shares").strip() == "2048"
        if "pids" in paths:
            assert _fs.read(paths["pids"] + "/pids.max").strip() == "40"
        if "unified" in paths and "memory" in backend.v2_controllers and "memory" not in paths:
            assert _fs.read(paths["unified"] + "/memory.max").strip() == str(64 * MiB)
            if os.path.exists(paths["unified"] + "/memory.swap.max"):
                assert _fs.read(paths["unified"] + "/memory.swap.max").strip() == "0"
            assert _fs.read(paths["unified"] + "/cpu.max").strip() == "50000 100000"
        assert cg.applied or cg.warnings


def _a_block_device() -> str:
    for name in sorted(os.listdir("/sys/block")):
        if not name.startswith(("loop", "ram", "zram")) and os.path.exists(f"/sys/block/{name}/dev"):
            return _fs.read(f"/sys/block/{name}/dev").strip()
    pytest.skip("no block device to throttle")


def test_io_limits_are_written_for_a_real_device(backend):
    """The values only (opening a raw disk to measure throttling is refused on the dev VM)."""
    _require(backend, "io")
    device = _a_block_device()
    limits = CgroupLimits(io_max=((device, 4 * MiB, None, 100, None),), io_weight=300,
                          required=frozenset({"io_max"}))
    with cgroups.create(limits, backend=backend) as cg:
        if "blkio" in cg.paths:
            blkio = cg.paths["blkio"]
            assert _fs.read(blkio + "/blkio.throttle.read_bps_device").split() == [device, str(4 * MiB)]
            assert _fs.read(blkio + "/blkio.throttle.read_iops_device").split() == [device, "100"]
            assert _fs.read(blkio + "/blkio.throttle.write_bps_device").strip() == ""
        else:
            line = _fs.read(cg.paths["unified"] + "/io.max").strip()
            assert line == f"{device} rbps={4 * MiB} wbps=max riops=100 wiops=max"
    bogus = CgroupLimits(io_max=(("1:12345", 1, None, None, None),), required=frozenset({"io_max"}))
    with pytest.raises(LimitsUnavailable, match="io max limit 1:12345 cannot be applied: writing .*: No such"):
        cgroups.create(bogus, backend=backend)


# -- control of the whole tree --------------------------------------------------------------

DAEMON = """
import time
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.close(1), os.close(2)  # a daemon lets go of the terminal
        os.write(w, str(os.getpid()).encode())
        time.sleep(60)
    os._exit(0)
os.wait()
print(os.read(r, 32).decode())
"""


@pytest.mark.parametrize("which", ["detected", "v1", "v2"])
def test_kill_all_kills_a_double_forked_daemon(which):
    with cgroups.create(CgroupLimits(), backend=_variant(which)) as cg:
        proc = spawn(cg, DAEMON)
        daemon = int(proc.communicate(timeout=10)[0])
        assert proc.returncode == 0 and cg.pids() == [daemon]
        assert cg.kill_all(timeout_s=5)
        assert cg.is_empty()
        assert _fs.wait_until(lambda: _gone(daemon), 2)


def test_v2_kill_without_cgroup_kill_freezes_then_signals():
    backend = _variant("v2")
    with cgroups.create(CgroupLimits(), backend=backend) as cg:
        proc = spawn(cg, DAEMON)
        daemon = int(proc.communicate(timeout=10)[0])
        assert cg.v2.kill_all(use_cgroup_kill=False)
        assert _fs.wait_until(lambda: _gone(daemon), 2)


def test_unified_freeze_thaw_kill_rmdir():
    """The v2 core (no controllers needed): place, cgroup.freeze, cgroup.kill, rmdir."""
    base = _variant("v2").v2
    group, refused = V2Group.create(base, f"sandbox-{os.getpid()}-unified", set())
    try:
        proc = subprocess.Popen([PY, "-I", "-S", "-c", "while True: pass"])
        group.add_process(proc.pid)
        assert group.pids() == [proc.pid] and not group.is_empty()
        assert group.freeze()
        ticks = _cpu_ticks(proc.pid)
        time.sleep(0.3)
        assert _cpu_ticks(proc.pid) == ticks  # frozen: no progress
        group.thaw()
        assert _fs.wait_until(lambda: _cpu_ticks(proc.pid) > ticks, 2)
        assert group.kill_all()
        assert proc.wait(timeout=5) == -9 and group.is_empty()
    finally:
        assert _fs.remove_tree(group.path)
    assert not os.path.exists(group.path)


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_child_sees_itself_at_root_after_unshare():
    with cgroups.create(CgroupLimits()) as cg:
        code = ("from sandbox.cgroups import enter_namespace\n"
                "enter_namespace()\nprint(open('/proc/self/cgroup').read())")
        out, err = spawn(cg, code, site=True).communicate(timeout=10)
        lines = out.decode().split()
        assert lines and all(line.endswith(":/") for line in lines), (out, err)


def test_add_process_places_in_every_hierarchy():
    with cgroups.create(CgroupLimits()) as cg:
        proc = spawn(cg, "import time\ntime.sleep(30)")
        placed = set()
        with open(f"/proc/{proc.pid}/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if path.endswith("/" + cg.name):
                    placed.update(controllers.split(",") if controllers else ["unified"])
        assert set(cg.paths) <= placed, placed


# -- lifecycle ------------------------------------------------------------------------------

def test_create_names_and_places_below_own_cgroup():
    backend = cgroups.detect()
    proc_cgroup = open("/proc/self/cgroup").read()
    for controller, base in backend.v1.items():
        path = re.search(rf"^\d+:[^:]*\b{controller}\b[^:]*:(.*)$", proc_cgroup, re.M).group(1)
        assert base.endswith(path.rstrip("/")), (controller, base, path)
    with cgroups.create(CgroupLimits()) as cg:
        assert re.fullmatch(rf"sandbox-{os.getpid()}-[0-9a-f]{{8}}", cg.name)
        for directory in cg.directories():
            assert os.path.dirname(directory) in backend.bases()


def test_destroy_removes_everything_and_is_idempotent():
    cg = cgroups.create(CgroupLimits(pids=10))
    proc = spawn(cg, "import time\ntime.sleep(30)")
    directories = cg.directories()
    assert cg.destroy() == []
    assert proc.wait(timeout=5) == -9
    assert not any(os.path.exists(d) for d in directories)
    assert cg.destroy() == [] and cg.stats().pids_peak >= 1


def test_destroy_tolerates_directories_already_gone():
    cg = cgroups.create(CgroupLimits())
    for directory in cg.directories():
        os.rmdir(directory)
    assert cg.destroy() == []


def test_gc_removes_stale_cgroups_and_keeps_live_ones():
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = cgroups.create(CgroupLimits(), name=f"sandbox-{dead.pid}-gctest")
    live = cgroups.create(CgroupLimits())
    try:
        leftover = spawn(stale, "import time\ntime.sleep(30)")
        removed = cgroups.gc()
        assert set(stale.directories()) <= set(removed)
        assert not set(live.directories()) & set(removed)
        assert leftover.wait(timeout=5) == -9
        assert not any(os.path.exists(d) for d in stale.directories())
    finally:
        stale.destroy()
        live.destroy()


def test_a_name_clash_fails_without_touching_the_existing_cgroup():
    with cgroups.create(CgroupLimits()) as cg:
        with pytest.raises(FileExistsError):
            cgroups.create(CgroupLimits(), name=cg.name)
        assert all(os.path.isdir(d) for d in cg.directories())


# -- when limits cannot be applied ----------------------------------------------------------

def test_v2_without_controllers_warns_and_raises_when_required():
    backend = _variant("v2")
    if "memory" in backend.v2_controllers:
        pytest.skip("this machine's cgroup2 tree has the memory controller")
    with cgroups.create(CgroupLimits(memory=64 * MiB, pids=10), backend=backend) as cg:
        assert any("memory 64M" in w and "not applied" in w for w in cg.warnings), cg.warnings
        assert any("pids 10" in w and "not applied" in w for w in cg.warnings), cg.warnings
        assert cg.active and "memory" not in cg.applied
    with pytest.raises(LimitsUnavailable, match="required memory limit 64M cannot be applied"):
        cgroups.create(CgroupLimits(memory=64 * MiB, required=frozenset({"memory"})), backend=backend)


ROOTLESS = """
import json
from sandbox import cgroups
from sandbox.errors import LimitsUnavailable, SetupError
cg = cgroups.create(cgroups.CgroupLimits(memory=256 << 20, pids=64))
out = {"kind": cgroups.detect().kind, "warnings": cg.warnings, "active": cg.active, "destroy": cg.destroy()}
try:
    cgroups.create(cgroups.CgroupLimits(memory=256 << 20, required=frozenset({"memory"})))
    out["raised"] = None
except LimitsUnavailable as e:
    out["raised"] = str(e)
print(json.dumps(out))
"""


def test_rootless_without_delegation_warns_and_raises_when_required(rootless):
    result = as_nobody([rootless.python, "-I", "-c", ROOTLESS], timeout=30, cwd="/")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    if out["kind"] != "none":
        pytest.skip(f"uid 65534 has a writable (delegated) cgroup here: {out['kind']}")
    assert not out["active"] and out["destroy"] == []
    assert "memory 256M" in out["warnings"][0]
    assert "): no writable cgroup (delegate one with systemd-run" in out["warnings"][0]
    assert any("pids 64" in w and "not applied" in w for w in out["warnings"])
    assert "required memory limit 256M cannot be applied" in out["raised"] and "Delegate=yes" in out["raised"]


@pytest.mark.parametrize("which", ["v2"])
def test_v2_controller_files(which):
    """memory.max/cpu.max/pids.max on a cgroup2 tree that has those controllers."""
    backend = _variant(which)
    if not {"memory", "cpu", "pids"} <= backend.v2_controllers:
        pytest.skip(NO_V2_CONTROLLERS)
    with cgroups.create(CgroupLimits(memory=64 * MiB, memory_high=48 * MiB, cpus=0.5, cpu_weight=200,
                                     pids=40), backend=backend) as cg:
        unified = cg.paths["unified"]
        assert _fs.read(unified + "/memory.max").strip() == str(64 * MiB)
        assert _fs.read(unified + "/memory.high").strip() == str(48 * MiB)
        assert _fs.read(unified + "/cpu.max").strip() == "50000 100000"
        assert _fs.read(unified + "/cpu.weight").strip() == "200"
        assert _fs.read(unified + "/pids.max").strip() == "40"


VACATE = """
import json, os, sys
from sandbox import cgroups
from sandbox.cgroups.v2 import enable_controllers
refused = enable_controllers(sys.argv[1], {sys.argv[2]})
print(json.dumps({"refused": refused, "own": open("/proc/self/cgroup").read().split("\\n")[-2],
                  "base": cgroups.detect().v2}))
"""


@pytest.fixture
def v2_controller():
    """A controller our v2 cgroup can hand down (enabled for the test if it was not)."""
    base = _variant("v2").v2
    available = sorted(_fs.read(base + "/cgroup.controllers").split())
    if not available:
        pytest.skip(f"{base} has no controllers at all to enable")
    control = base + "/cgroup.subtree_control"
    controller = available[0]
    enabled_here = controller not in _fs.read(control).split()
    if enabled_here:
        try:
            _fs.write(control, f"+{controller}")
        except OSError as e:
            pytest.skip(f"cannot enable {controller} in {control}: {e.strerror}")
    yield base, controller
    if enabled_here:
        _fs.write(control, f"-{controller}")


def test_v2_launcher_moves_itself_into_a_leaf_to_enable_controllers(v2_controller):
    """The "no internal processes" rule: a launcher alone in its cgroup vacates it into a leaf."""
    base, controller = v2_controller
    caller = V2Group(base + f"/sandbox-{os.getpid()}-caller")
    os.mkdir(caller.path)
    try:
        bystander = subprocess.Popen(["sleep", "30"])
        caller.add_process(bystander.pid)
        crowded = spawn(caller, VACATE, caller.path, controller, site=True)
        out = json.loads(crowded.communicate(timeout=20)[0])
        assert "holds 1 other process(es)" in out["refused"][controller]
        bystander.kill()
        bystander.wait()

        alone = spawn(caller, VACATE, caller.path, controller, site=True)
        out = json.loads(alone.communicate(timeout=20)[0])
        assert out["refused"] == {}
        assert controller in _fs.read(caller.path + "/cgroup.subtree_control").split()
        assert out["own"].endswith(f"/sandbox-{os.getpid()}-caller/sandbox-{alone.pid}-launcher")
        assert out["base"] == caller.path  # detection still creates beside the launcher leaf
    finally:
        caller.kill_all()
        assert _fs.remove_tree(caller.path)


def test_add_process_of_a_dead_pid_is_a_setup_error():
    dead = subprocess.Popen(["true"])
    dead.wait()
    with cgroups.create(CgroupLimits()) as cg:
        with pytest.raises(SetupError, match=f"placing process {dead.pid} in .*cgroup.procs"):
            cg.add_process(dead.pid)
