"""Resource limits through a whole launch: they bite, the run says so, and the accounting adds up."""
from __future__ import annotations

import json
import os
import threading
import time

import pytest

from conftest import require

import sandbox


@pytest.fixture(autouse=True)
def _machine():
    require("root", "userns", "cgroup_v1", "system_python")


def _profile(tmp_path, body: str, name: str = "limited") -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text('extends = "untrusted"\n' + body)
    return str(path)


def test_out_of_memory_is_detected_reported_and_137(sandbox_cli, tmp_path):
    profile = _profile(tmp_path, '[limits]\nmemory = "48M"\n')
    done = sandbox_cli("run", profile, "--", "/usr/bin/python3", "-c", "b = bytearray(400 << 20)")
    assert done.returncode == 137
    assert "sandbox: killed: out of memory (limit 48M)" in done.stderr
    result = sandbox.run(sandbox.load_profile(profile), ["/usr/bin/python3", "-c", "b = bytearray(400 << 20)"])
    assert result.oom_killed and result.exit_code == 137 and not result.timed_out


def test_pids_limit_stops_forks(tmp_path):
    profile = sandbox.load_profile(_profile(tmp_path, "[limits]\npids = 8\n"))
    script = ("import os, errno\nn = 0\nkids = []\n"
              "while True:\n"
              "    try:\n        pid = os.fork()\n    except OSError as e:\n        print('EAGAIN' if e.errno == errno.EAGAIN else e); break\n"
              "    if pid == 0:\n        import time; time.sleep(5); os._exit(0)\n"
              "    kids.append(pid)\nprint(len(kids))\n")
    result = sandbox.run(profile, ["/usr/bin/python3", "-c", script], capture_output=True, timeout=20)
    lines = result.stdout.decode().split()
    assert lines[0] == "EAGAIN"
    assert int(lines[1]) <= 7  # init and the workload count too


def test_timeout_is_124_within_a_second_of_the_deadline(sandbox_cli):
    started = time.monotonic()
    done = sandbox_cli("run", "--timeout", "1", "untrusted", "--", "/bin/sh", "-c", "sleep 30 & sleep 30")
    assert done.returncode == 124
    assert time.monotonic() - started < 1 + 1.5  # launch and interpreter start included
    assert "sandbox: killed: timeout after 1" in done.stderr


def test_stats_and_result_json(sandbox_cli, tmp_path):
    out = tmp_path / "result.json"
    done = sandbox_cli("run", "--stats", "--result-json", str(out), "untrusted", "--", "/usr/bin/python3", "-c",
                       "b = bytearray(60 << 20); sum(range(3_000_000))")
    assert done.returncode == 0
    assert "peak memory" in done.stderr and "wall" in done.stderr
    data = json.loads(out.read_text())
    assert data["profile_name"] == "untrusted" and len(data["profile_hash"]) == 16
    assert data["exit_code"] == 0 and data["signal"] is None
    assert data["memory_peak"] >= 60 << 20
    assert data["cpu_user"] > 0 and data["wall_time"] > 0 and data["pids_peak"] >= 2
    assert data["timed_out"] is False and data["oom_killed"] is False


def test_io_limits_are_written_to_the_cgroup(tmp_path):
    root_dev = os.stat("/").st_dev  # the disk the root file system is on
    major, minor = os.major(root_dev), os.minor(root_dev)
    if not os.path.exists("/sys/fs/cgroup/blkio/blkio.throttle.write_bps_device") or major == 0:
        pytest.skip("no blkio throttling, or the root is not on a block device, on this machine")
    profile = sandbox.load_profile(_profile(tmp_path, f'[[limits.io_max]]\ndevice = "{major}:{minor}"\n'
                                                      'write_bps = "10M"\nread_iops = 500\n'))
    seen = {}

    def look():
        time.sleep(0.5)
        for entry in os.listdir("/sys/fs/cgroup/blkio"):
            if entry.startswith(f"sandbox-{os.getpid()}-"):
                with open(f"/sys/fs/cgroup/blkio/{entry}/blkio.throttle.write_bps_device") as handle:
                    seen["write"] = handle.read().strip()
    watcher = threading.Thread(target=look)
    watcher.start()
    sandbox.run(profile, ["/bin/sleep", "1"])
    watcher.join()
    assert seen.get("write") == f"{major}:{minor} {10 << 20}"


def test_an_oom_kill_inside_is_reported_without_hiding_the_workloads_own_status(sandbox_cli, tmp_path):
    profile = _profile(tmp_path, '[limits]\nmemory = "48M"\n')
    done = sandbox_cli("run", profile, "--", "/bin/sh", "-c",
                       '/usr/bin/python3 -c "b = bytearray(400 << 20)"; echo child=$?; exit 3')
    assert done.returncode == 3 and "child=137" in done.stdout
    assert "a process in the sandbox was killed: out of memory (limit 48M)" in done.stderr


def test_limit_options_on_the_command_line(sandbox_cli):
    done = sandbox_cli("run", "--memory", "48M", "untrusted", "--", "/usr/bin/python3", "-c", "b = bytearray(400 << 20)")
    assert done.returncode == 137 and "out of memory (limit 48M)" in done.stderr
    bad = sandbox_cli("run", "--memory", "lots", "untrusted", "--", "/bin/true")
    assert bad.returncode == 125
    assert bad.stderr == ("sandbox: --memory: limits.memory: expected a size such as 512M or 2G, "
                          "found 'lots'\n")
