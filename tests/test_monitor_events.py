"""Live activity events (docs/monitoring.md): real workloads, the events they leave, as they run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BUILD_USER, ROOT, as_nobody, nobody_env, require, wait_until

import sandbox

SANDBOX = str(ROOT / ".venv" / "bin" / "sandbox")
TINYZ = ROOT / "tests" / "data" / "tinyz"


def events_of(path: Path, kind: str | None = None) -> list[dict]:
    if not path.exists():
        return []
    found = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in found if kind is None or e["kind"] == kind]


def profile_with(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def audit_end(launch_id: str) -> dict:
    records = [json.loads(line) for line in Path(os.environ["SANDBOX_AUDIT_LOG"]).read_text().splitlines()]
    return next(r for r in records if r.get("id") == launch_id and r.get("event") == "end")


# ---------------------------------------------------------------- processes

def test_a_build_lists_every_compiler_process(tmp_path):
    """./configure && make of tinyz under ci with --events: every cc1 (the compiler proper) the
    build ran is an exec event naming its source, with the parent that started it and an exit
    event with its status and cpu time; the driver, assembler and linker are there too."""
    require("userns", "gcc", "root")
    workspace = Path(tempfile.mkdtemp(prefix="sbxtest-events-", dir="/tmp")) / "tinyz"
    try:
        shutil.copytree(TINYZ, workspace)
        for entry in [workspace.parent, workspace, *workspace.iterdir()]:
            os.chown(entry, BUILD_USER, BUILD_USER)
        events = tmp_path / "events.jsonl"
        done = subprocess.run([SANDBOX, "run", "-q", "--events", str(events), "ci", "--", "/bin/sh", "-c",
                               "./configure && make"], cwd=workspace, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        execs = events_of(events, "exec")
        exits = {e["host_pid"]: e for e in events_of(events, "exit")}
        compilers = [e for e in execs if os.path.basename(e["exe"]) == "cc1"]
        compiled = {arg for e in compilers for arg in e["argv"] if arg.endswith(".c")}
        # configure compiles conftest.c (three checks), make compiles each object's source
        assert {"rle.c", "crc.c", "main.c"} <= {os.path.basename(c) for c in compiled}, compiled
        assert len([e for e in compilers if any(a.endswith("conftest.c") for a in e["argv"])]) >= 3
        # every compiler make started: one cc1 per `cc -c` line make printed
        make_lines = [line for line in done.stdout.splitlines() if " -c " in line and line.startswith("cc")]
        assert len([e for e in compilers if not any(a.endswith("conftest.c") for a in e["argv"])]) == len(make_lines)
        for event in compilers:
            assert event["uid"] == 65534 and event["pid"] > 1 and event["ppid"] > 1
            assert event["host_pid"] in exits, f"no exit for {event}"
            assert exits[event["host_pid"]]["status"] == 0
            assert "cpu_user" in exits[event["host_pid"]]
            parent = next(e for e in execs if e["pid"] == event["ppid"])  # the cc driver that ran it
            assert os.path.basename(parent["exe"]) in ("cc", "gcc", "x86_64-linux-gnu-gcc-12"), parent
        names = {os.path.basename(e["exe"]) for e in execs}
        assert {"sh", "make", "as", "ar"} <= names, names
        assert names & {"ld", "collect2"}, names
        kinds = {e["kind"] for e in events_of(events)}
        assert {"start", "end", "sample"} <= kinds
    finally:
        shutil.rmtree(workspace.parent, ignore_errors=True)


# ---------------------------------------------------------------- network

CLIENT_SERVER = r"""
import socket, sys
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
port = server.getsockname()[1]
client = socket.create_connection(("127.0.0.1", port))
peer, _ = server.accept()
peer.sendall(b"hi"); assert client.recv(2) == b"hi"
print(port)
try:
    socket.create_connection(("10.255.0.1", 80), timeout=1)
except OSError as exc:
    print(exc.errno)
"""


@pytest.mark.parametrize("who", ["root", "rootless"])
def test_a_connection_to_a_loopback_listener_is_recorded(who, tmp_path, request):
    """A Python script listens on loopback and connects to itself: bind, listen, connect and
    accept events with address, port and protocol; a connection outside the sandbox's network
    (mode none: only loopback) is recorded as refused by the network."""
    require("userns", "system_python", "root" if who == "root" else "rootless")
    if who == "root":
        events = tmp_path / "events.jsonl"
        result = sandbox.run("untrusted", ["/usr/bin/python3", "-c", CLIENT_SERVER], capture_output=True,
                             events=str(events), timeout=60)
        assert result.exit_code == 0, result.stderr
        out = result.stdout.decode().split()
    else:
        install, home = request.getfixturevalue("rootless"), request.getfixturevalue("nobody_dir")
        events = home / "events.jsonl"
        done = as_nobody([install.sandbox, "run", "-q", "--events", str(events), "untrusted", "--",
                          "/usr/bin/python3", "-c", CLIENT_SERVER], cwd=str(home), env=nobody_env(home), timeout=60)
        assert done.returncode == 0, done.stderr
        out = done.stdout.split()
    port = int(out[0])
    connects = events_of(events, "connect")
    local = [e for e in connects if e.get("address") == "127.0.0.1"]
    assert local and local[0]["port"] == port and local[0]["protocol"] == "tcp" and local[0]["allowed"] is True
    assert local[0]["family"] == "ipv4" and local[0]["pid"] > 1
    outside = [e for e in connects if e.get("address") == "10.255.0.1"]
    assert outside and outside[0]["port"] == 80 and outside[0]["allowed"] is False
    assert outside[0]["refused_by"] == "network"
    assert int(out[1]) == 101  # ENETUNREACH: the event said what the namespace would do
    bind = events_of(events, "bind")[0]
    assert (bind["address"], bind["port"], bind["protocol"]) == ("127.0.0.1", 0, "tcp")
    listen = events_of(events, "listen")[0]
    assert (listen["address"], listen["port"]) == ("127.0.0.1", port)
    accept = events_of(events, "accept")[0]
    assert (accept["address"], accept["port"], accept["protocol"]) == ("127.0.0.1", port, "tcp")
    # the process itself: its exec, and its exit (taskstats when root, exit_group rootless)
    python = [e for e in events_of(events, "exec") if e["exe"] in ("/usr/bin/python3", os.path.realpath("/usr/bin/python3"))]
    assert len(python) == 1, events_of(events)
    assert python[0]["uid"] == 65534 and python[0]["argv"][:2] == ["/usr/bin/python3", "-c"]
    exits = [e for e in events_of(events, "exit") if e["host_pid"] == python[0]["host_pid"]]
    assert len(exits) == 1 and exits[0]["status"] == 0 and exits[0]["pid"] == python[0]["pid"]
    assert exits[0]["cpu_user"] + exits[0]["cpu_system"] > 0
    monitor = events_of(events, "start")[0]["monitor"]
    assert monitor["exits"] == ("taskstats" if who == "root" else "seccomp user notification")
    assert ("forks" in monitor) == (who == "root")


# ---------------------------------------------------------------- denied calls, live

DENIED_THEN_WAIT = r"""
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
assert libc.unshare(0x10000000) == -1  # CLONE_NEWUSER: the default policy says EPERM
print(ctypes.get_errno(), flush=True)
time.sleep(60)
"""


def test_denied_calls_appear_while_the_workload_runs(tmp_path):
    """The violations report, live: the denied unshare is an event while the workload still runs
    (it sleeps afterwards; `sandbox stop` ends it)."""
    require("userns", "system_python", "root")
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen([SANDBOX, "run", "--events", str(events), "untrusted", "--", "/usr/bin/python3",
                             "-c", DENIED_THEN_WAIT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: events_of(events, "denied"), 20), events_of(events)
        denied = events_of(events, "denied")[0]
        assert denied["syscall"] == "unshare" and denied["action"] == "errno(EPERM)" and denied["pid"] > 1
        assert proc.poll() is None  # still running
        sandbox_id = denied["sandbox"]
        stopped = subprocess.run([SANDBOX, "stop", sandbox_id[:10]], capture_output=True, text=True, timeout=30)
        assert stopped.returncode == 0, stopped.stderr
        out, err = proc.communicate(timeout=30)
        assert out.strip() == "1" and proc.returncode == 128 + 15, err
        assert "with `sandbox stop` by uid 0" in err
        end = audit_end(sandbox_id)
        assert end["monitor"]["denied"] == {"unshare": 1} and end["signal"] == 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- resources

GROW = r"""
import time
chunks = []
while True:
    chunks.append(bytearray(4 << 20))
    time.sleep(0.04)
"""


def test_samples_thresholds_and_the_oom_kill(tmp_path):
    """A workload that grows until the memory limit: samples every 0.1 s, the memory threshold
    (80% of the limit) before the end, and the OOM kill from the cgroup's counters."""
    require("userns", "system_python", "root")
    events = tmp_path / "events.jsonl"
    profile = profile_with(tmp_path, 'extends = "untrusted"\n[limits]\nmemory = "96M"\n'
                                     f'[monitor]\nevents = "{events}"\nstats_interval = "100ms"\n')
    result = sandbox.run(str(profile), ["/usr/bin/python3", "-c", GROW], timeout=60, capture_output=True)
    assert result.exit_code == 137 and result.oom_killed, (result.exit_code, result.warnings)
    samples = events_of(events, "sample")
    assert len(samples) >= 3
    assert all(s["memory_limit_bytes"] == 96 << 20 for s in samples)
    assert any(s["memory_bytes"] > 32 << 20 for s in samples)
    threshold = events_of(events, "threshold")
    assert threshold and threshold[0]["resource"] == "memory" and threshold[0]["percent"] >= 80
    oom = events_of(events, "oom_kill")
    assert oom and oom[0]["total"] >= 1
    assert events_of(events)[-1]["kind"] == "end" and events_of(events)[-1]["oom_killed"] is True
    assert events_of(events).index(threshold[0]) < events_of(events).index(oom[0])


FORKS = r"""
import os, time
children = []
for _ in range(30):
    try:
        pid = os.fork()
    except OSError:
        break  # the limit: the fork was refused
    if pid == 0:
        time.sleep(0.8)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
"""


def test_the_pids_threshold(tmp_path):
    """Forks up to the pids limit: the threshold (90%) and the refused forks (pids.events)."""
    require("userns", "system_python", "root")
    events = tmp_path / "events.jsonl"
    profile = profile_with(tmp_path, 'extends = "untrusted"\n[limits]\npids = 20\n'
                                     f'[monitor]\nevents = "{events}"\nstats_interval = "100ms"\n')
    result = sandbox.run(str(profile), ["/usr/bin/python3", "-c", FORKS], timeout=60, capture_output=True)
    assert result.exit_code == 0, result.stderr
    pids = [e for e in events_of(events, "threshold") if e["resource"] == "pids"]
    assert [e["percent"] >= 90 for e in pids if "percent" in e] == [True], pids
    assert [e["refused_forks"] >= 1 for e in pids if e.get("at_limit")] == [True], pids


# ---------------------------------------------------------------- files

def test_files_written_under_rw_binds(tmp_path):
    """fanotify on the sandbox's own mount of a rw bind: each file written there is an event with
    its path inside; writes to the tmpfs are not."""
    require("userns", "root")
    work = tmp_path / "work"
    work.mkdir()
    os.chown(work, BUILD_USER, BUILD_USER)
    os.chmod(tmp_path, 0o755)
    events = tmp_path / "events.jsonl"
    result = sandbox.run("untrusted", ["/bin/sh", "-c", "echo a > /w/one; mkdir /w/d; echo b > /w/d/two; echo c > /tmp/x"],
                         binds=[f"{work}:/w:rw"], events=str(events), capture_output=True, timeout=60)
    assert result.exit_code == 0, result.stderr
    written = {e["path"] for e in events_of(events, "file")}
    assert written == {"/w/one", "/w/d/two"}, written
    start = events_of(events, "start")[0]
    assert start["monitor"]["files"] == ["/w"]


# ---------------------------------------------------------------- baselines and anomalies

TRUSTED = r"""
import socket, subprocess
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen()
client = socket.create_connection(server.getsockname()); server.accept()
subprocess.run(["/usr/bin/true"], check=True)
"""


def test_learn_writes_a_baseline_that_the_same_run_matches(tmp_path, monkeypatch):
    require("userns", "system_python", "root")
    monkeypatch.chdir(tmp_path)
    learned = tmp_path / "job.toml"
    done = subprocess.run([SANDBOX, "learn", "-o", str(learned), "--", "/usr/bin/python3", "-c", TRUSTED],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    baseline = json.loads((tmp_path / "job.baseline.json").read_text())
    assert {"/usr/bin/python3", "/usr/bin/true"} <= set(baseline["executables"])
    assert "bind tcp 127.0.0.1:0" in baseline["network"]
    assert "connect tcp 127.0.0.1:*" in baseline["network"]  # the kernel's port: any, next time
    assert "listen tcp 127.0.0.1:*" in baseline["network"]
    assert f'baseline = "{tmp_path / "job.baseline.json"}"' in learned.read_text()
    events = tmp_path / "events.jsonl"
    again = sandbox.run(str(learned), ["/usr/bin/python3", "-c", TRUSTED], events=str(events), timeout=60,
                        capture_output=True)
    assert again.exit_code == 0, again.stderr
    assert events_of(events, "anomaly") == []
    # the same job, plus a program it never ran: recorded (on_anomaly defaults to "record")
    events.unlink()
    other = sandbox.run(str(learned), ["/usr/bin/python3", "-c", TRUSTED + "subprocess.run(['/usr/bin/id'])"],
                        events=str(events), timeout=60, capture_output=True)
    assert other.exit_code == 0
    anomalies = events_of(events, "anomaly")
    assert [a["exe"] for a in anomalies] == ["/usr/bin/id"]
    assert audit_end(events_of(events, "start")[0]["sandbox"])["monitor"]["anomalies"] == 1


def test_an_anomaly_is_killed(tmp_path):
    """on_anomaly = "kill": the first exec outside the baseline ends the sandbox before the program
    runs (the notification is never answered), with the reason in the warnings and the audit."""
    require("userns", "system_python", "root")
    baseline = tmp_path / "base.json"
    baseline.write_text(json.dumps({"format": "sandbox-baseline/1", "executables": ["/usr/bin/python3*"],
                                    "network": []}))
    marker = tmp_path / "out"
    marker.mkdir()
    os.chown(marker, BUILD_USER, BUILD_USER)
    os.chmod(tmp_path, 0o755)
    profile = profile_with(tmp_path, f'extends = "untrusted"\n[monitor]\nbaseline = "{baseline}"\n'
                                     'on_anomaly = "kill"\n'
                                     f'[[filesystem.mounts]]\nsource = "{marker}"\ntarget = "/out"\nmode = "rw"\n')
    script = "import subprocess, time; subprocess.run(['/bin/sh', '-c', 'echo ran > /out/sh']); time.sleep(30)"
    started = time.monotonic()
    result = sandbox.run(str(profile), ["/usr/bin/python3", "-c", script], timeout=60, capture_output=True)
    assert time.monotonic() - started < 20
    assert result.exit_code == 137 and result.signal == 9, result.warnings
    assert any("killed: anomaly: executable not in the baseline: /bin/sh" in w for w in result.warnings)
    assert not (marker / "sh").exists()  # /bin/sh never ran
    end = [json.loads(line) for line in Path(os.environ["SANDBOX_AUDIT_LOG"]).read_text().splitlines()][-1]
    assert end["event"] == "end" and end["monitor"]["killed_for"] == "executable not in the baseline: /bin/sh"
    assert any("anomaly" in w for w in end["warnings"])


def test_a_bad_baseline_stops_the_launch_before_anything_runs(tmp_path):
    require("userns")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    profile = profile_with(tmp_path, f'extends = "untrusted"\n[monitor]\nbaseline = "{bad}"\n')
    done = subprocess.run([SANDBOX, "run", str(profile), "--", "/bin/true"], capture_output=True, text=True)
    assert done.returncode == 125
    assert done.stderr.strip().splitlines()[-1] == (f"sandbox: monitor: {bad}: not a baseline (expected \"format\": "
                                                   "\"sandbox-baseline/1\") (EINVAL)")
    missing = subprocess.run([SANDBOX, "run", "--events", "/nonexistent/dir/ev.jsonl", "untrusted", "--", "/bin/true"],
                             capture_output=True, text=True)
    assert missing.returncode == 125
    assert "sandbox: events: /nonexistent/dir/ev.jsonl: No such file or directory (ENOENT)" in missing.stderr


# ---------------------------------------------------------------- output and options

def test_events_to_standard_output_and_the_workloads_to_stderr(tmp_path):
    require("userns")
    done = subprocess.run([SANDBOX, "run", "-q", "--events", "-", "--stats-interval", "0", "untrusted", "--",
                           "/bin/sh", "-c", "echo out"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0]["kind"] == "start" and lines[-1]["kind"] == "end" and lines[-1]["exit_code"] == 0
    assert [e for e in lines if e["kind"] == "sample"] == [e for e in lines if e.get("final")]  # only the last
    assert "out" in done.stderr.splitlines()
    refused = subprocess.run([SANDBOX, "run", "--events", "-", "--result-json", "-", "untrusted", "--", "/bin/true"],
                             capture_output=True, text=True)
    assert refused.returncode == 125 and "cannot share it with --result-json -" in refused.stderr


def test_monitor_settings_are_validated_as_profile_keys(tmp_path):
    done = subprocess.run([SANDBOX, "check", "--stats-interval", "2h", "untrusted"], capture_output=True, text=True)
    assert done.returncode == 125
    assert done.stderr.strip() == "sandbox: --stats-interval: monitor.stats_interval: expected a duration from 0 to 1h, found '2h'"
    profile = profile_with(tmp_path, 'extends = "untrusted"\n[monitor]\nevents = "relative.jsonl"\non_anomaly = "ignore"\n')
    done = subprocess.run([SANDBOX, "check", str(profile)], capture_output=True, text=True)
    assert done.returncode == 125
    assert f"{profile}: monitor.events: expected an absolute host path" in done.stderr
    assert f"{profile}: monitor.on_anomaly: expected 'record' or 'kill'" in done.stderr
    ok = subprocess.run([SANDBOX, "check", "--events", "ev.jsonl", "untrusted"], capture_output=True, text=True,
                        cwd=tmp_path)
    assert ok.returncode == 0 and f'events = "{tmp_path}/ev.jsonl"' in ok.stdout


def test_without_process_events_root_still_sees_forks_and_exits(tmp_path):
    """[monitor] processes = false: no exec notification (what a build pays most for); the
    kernel's connectors still give root every fork and exit."""
    require("userns", "root")
    events = tmp_path / "events.jsonl"
    result = sandbox.run("untrusted", ["/bin/sh", "-c", "/bin/true; (exit 4); true"], events=str(events),
                         settings={"monitor.processes": False}, timeout=60)
    assert result.exit_code == 0
    assert events_of(events, "exec") == []
    assert events_of(events, "start")[0]["monitor"]["execs"] == "none"
    forks = events_of(events, "fork")
    exits = {e["host_pid"]: e for e in events_of(events, "exit")}
    assert len(forks) >= 2 and all(f["host_pid"] in exits for f in forks)
    assert sorted(e["status"] for e in exits.values()) == [0, 0, 4]  # true, the subshell, sh itself


def test_connections_on_a_segment_are_judged_by_its_egress_list(tmp_path):
    """Bridge mode: a connection the segment's egress list allows is `allowed`; one it does not is
    refused by the network, which the workload then sees (EHOSTUNREACH)."""
    require("userns", "system_python", "root")
    events = tmp_path / "events.jsonl"
    script = ("import socket\nfor a in [('192.0.2.1', 443), ('192.0.2.2', 443)]:\n    try:\n"
              "        socket.create_connection(a, timeout=0.3)\n    except OSError as exc:\n        print(exc.errno)\n")
    result = sandbox.run("untrusted", ["/usr/bin/python3", "-c", script], network="bridge",
                         settings={"network.egress": ["192.0.2.1:443"]}, events=str(events), capture_output=True,
                         text=True, timeout=60)
    assert result.exit_code == 0, result.stderr
    listed, other = events_of(events, "connect")
    assert (listed["address"], listed["allowed"], "refused_by" in listed) == ("192.0.2.1", True, False)
    assert (other["address"], other["allowed"], other["refused_by"]) == ("192.0.2.2", False, "network")
    assert result.stdout.split()[-1] == "113"  # EHOSTUNREACH
