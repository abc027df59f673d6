"""Running sandboxes from another shell: `sandbox ps`, `stop`, `kill`, `stats`, `events`, `gc`,
rootful and rootless, and what one user can do to another's (docs/monitoring.md)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import AS_NOBODY, BUILD_USER, NOBODY, ROOT, as_nobody, nobody_env, require, shared_tempdir, wait_until

SANDBOX = str(ROOT / ".venv" / "bin" / "sandbox")


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([SANDBOX, *args], capture_output=True, text=True, timeout=60, **kwargs)


def ps_json(runner=cli, **kwargs) -> list[dict]:
    done = runner("ps", "--json", **kwargs)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def mine(entries: list[dict], launcher: int) -> dict | None:
    """The entry of the sandbox launched by process `launcher` (other runs share the registry)."""
    return next((e for e in entries if e["launcher_pid"] == launcher), None)


class Background:
    """`sandbox run ... -- sleep` in the background, as root or through a prefix (setpriv)."""

    def __init__(self, argv: list[str], **kwargs):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)

    def wait_listed(self, lister, timeout: float = 20) -> dict:
        found = {}

        def listed():
            entry = mine(lister(), self.proc.pid)
            if entry and entry["status"] == "running" and entry["pid"]:
                found["entry"] = entry
            return bool(found) or self.proc.poll() is not None
        assert wait_until(listed, timeout) and found, self.finish()
        return found["entry"]

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return self.proc.returncode, out, err

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def labels_of(text: str, metric: str) -> dict[str, float]:
    """sandbox id -> value of `metric` in a Prometheus exposition."""
    found = {}
    for line in text.splitlines():
        match = re.match(rf'^{metric}\{{id="([0-9a-f]+)",profile="([^"]*)",user="([^"]*)"[^}}]*\}} (\S+)$', line)
        if match:
            found[match.group(1)] = float(match.group(4))
    return found


# ---------------------------------------------------------------- root

def test_ps_stats_stop_and_kill_running_sandboxes(tmp_path):
    require("userns", "root")
    with Background([SANDBOX, "run", "untrusted", "--", "/bin/sh", "-c", "sleep 60"]) as first, \
         Background([SANDBOX, "run", "--events", str(tmp_path / "ev.jsonl"), "untrusted", "--", "/bin/sh", "-c",
                     "trap 'echo term; exit 3' TERM; while :; do sleep 0.1; done"]) as second:
        one, two = first.wait_listed(ps_json), second.wait_listed(ps_json)
        for entry, proc in ((one, first.proc), (two, second.proc)):
            assert entry["profile"] == "untrusted" and entry["user"] == "root" and entry["uid"] == 0
            assert entry["source"] == "cgroup" and entry["pids"] >= 2 and entry["memory_bytes"] > 0
            assert entry["cpu_seconds"] is not None and entry["uptime"] >= 0
            assert entry["memory_limit_bytes"] == 512 << 20 and entry["pids_limit"] == 128
        assert two["events"] == str(tmp_path / "ev.jsonl")
        table = cli("ps")
        assert table.stdout.splitlines()[0].split()[:9] == ["ID", "PROFILE", "USER", "PID", "STATUS", "UPTIME", "CPU",
                                                           "MEMORY", "PIDS"]
        assert any(line.startswith(one["id"][:12]) and "sleep 60" in line for line in table.stdout.splitlines())
        assert one["id"] in cli("ps", "-q").stdout.split()

        prom = tmp_path / "sandbox.prom"
        done = cli("stats", "--prometheus", "-o", str(prom))
        assert done.returncode == 0 and done.stdout == ""
        text = prom.read_text()
        assert os.stat(prom).st_mode & 0o777 == 0o644
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left
        assert "# TYPE sandbox_cpu_seconds_total counter" in text and "# TYPE sandbox_memory_bytes gauge" in text
        for entry in (one, two):
            assert labels_of(text, "sandbox_memory_bytes")[entry["id"]] > 0
            assert labels_of(text, "sandbox_pids")[entry["id"]] >= 2
            assert labels_of(text, "sandbox_memory_limit_bytes")[entry["id"]] == 512 << 20
            assert f'sandbox_info{{id="{entry["id"]}",profile="untrusted",user="root",' in text
        assert int(re.search(r"^sandbox_running (\d+)$", text, re.M).group(1)) >= 2
        table = cli("stats", one["id"][:8])
        assert table.returncode == 0 and len(table.stdout.splitlines()) == 2

        # events of a running sandbox, then stop: SIGTERM reaches the workload, which exits itself
        follow = subprocess.Popen([SANDBOX, "events", "--follow", "--kind", "exec,end", two["id"][:10]],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first_line = follow.stdout.readline()  # attached: it has read what was there
        assert json.loads(first_line)["kind"] == "exec", follow.stderr.read()
        done = cli("stop", two["id"][:10])
        assert done.returncode == 0 and done.stdout.strip() == f"{two['id']}: stopped", done.stderr
        code, out, err = second.finish()
        assert code == 3 and out.strip() == "term", err
        assert "stopped with `sandbox stop` by uid 0" in err
        followed = [json.loads(line) for line in [first_line, *follow.communicate(timeout=30)[0].splitlines()]]
        assert follow.returncode == 0
        assert followed[0]["kind"] == "exec" and followed[-1]["kind"] == "end"
        assert followed[-1]["exit_code"] == 3

        # kill with a signal the workload gets through init; then with KILL, the whole tree
        assert cli("kill", one["id"][:9], "SIGCONT").returncode == 0
        assert first.proc.poll() is None
        done = cli("kill", one["id"][:9])
        assert done.returncode == 0 and done.stdout.strip() == f"{one['id']}: SIGKILL"
        code, _out, err = first.finish()
        assert code == 137 and "killed (SIGKILL) with `sandbox kill` by uid 0" in err
    entries = ps_json()
    assert mine(entries, first.proc.pid) is None and mine(entries, second.proc.pid) is None
    assert not Path(f"/run/sandbox/running/{one['id']}.json").exists()


def test_ids_and_refusals(tmp_path):
    require("userns", "root")
    assert cli("stop", "0123456789abcdef").returncode == 125
    assert cli("stop", "0123456789abcdef").stderr.strip() == "sandbox: no running sandbox 0123456789abcdef"
    assert cli("kill", "xyz").stderr.strip() == "sandbox: 'xyz' is not a sandbox id (hexadecimal, as `sandbox ps` shows)"
    assert cli("kill", "abc", "NOSUCH").returncode == 125
    assert cli("events", "0123456789abcdef").returncode == 125
    # two records sharing a prefix (this test process as their launcher): ambiguous
    directory = Path("/run/sandbox/running")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    from sandbox.monitor.resources import start_time
    prefix = os.urandom(6).hex()
    paths = []
    try:
        for suffix in ("0000", "1111"):
            record = {"id": prefix + suffix, "uid": 0, "gid": 0, "user": "root", "profile": "fake", "argv": [],
                      "launcher_pid": os.getpid(), "launcher_start": start_time(os.getpid()), "started": time.time(),
                      "status": "running", "init_pid": None, "init_start": None, "cgroups": {}}
            path = directory / f"{prefix}{suffix}.json"
            path.write_text(json.dumps(record))
            paths.append(path)
        done = cli("stop", prefix)
        assert done.returncode == 125
        assert done.stderr.strip() == f"sandbox: {prefix} is ambiguous: {prefix}0000, {prefix}1111"
        done = cli("events", prefix + "0")
        assert "has no events to read" in done.stderr
    finally:
        for path in paths:
            path.unlink()


def test_records_of_a_killed_launcher_are_ignored_then_collected(tmp_path):
    require("userns", "root")
    with Background([SANDBOX, "run", "untrusted", "--", "/bin/sh", "-c", "sleep 60"]) as run:
        entry = run.wait_listed(ps_json)
        record = Path(f"/run/sandbox/running/{entry['id']}.json")
        assert record.exists()
        run.proc.send_signal(signal.SIGKILL)
        run.proc.wait()
    # the sandbox died with its launcher (parent-death signal); its record stays until gc
    assert wait_until(lambda: not os.path.exists(f"/proc/{entry['pid']}"), 10)
    assert record.exists()
    assert mine(ps_json(), run.proc.pid) is None
    done = cli("gc")
    assert done.returncode == 0 and f"removed {record}" in done.stdout.splitlines()
    assert not record.exists()


# ---------------------------------------------------------------- rootless, and other users

def runtime_dir(home: Path) -> Path:
    path = home / "run"
    path.mkdir(mode=0o700)
    os.chown(path, NOBODY, NOBODY)
    return path


def test_rootless_ps_stop_stats_from_another_shell(rootless, nobody_dir):
    """uid 65534 without a cgroup: its sandboxes are listed with figures from /proc, stopped and
    killed from another of its shells (XDG_RUNTIME_DIR there, none in the other: both places
    are read)."""
    env = nobody_env(nobody_dir, XDG_RUNTIME_DIR=str(runtime_dir(nobody_dir)))

    def as_user(*args, **kwargs):
        return as_nobody([rootless.sandbox, *args], env=env, cwd=str(nobody_dir), timeout=60)

    with Background([*AS_NOBODY, rootless.sandbox, "run", "untrusted", "--", "/bin/sh", "-c", "sleep 60 & wait"],
                    env=env, cwd=str(nobody_dir)) as run:
        entry = run.wait_listed(lambda: ps_json(as_user))
        assert entry["user"] == "nobody" and entry["uid"] == NOBODY and entry["source"] == "proc"
        assert entry["pids"] >= 3 and entry["memory_bytes"] > 0 and entry["cpu_seconds"] is not None
        assert Path(nobody_dir / "run" / "sandbox" / "running" / f"{entry['id']}.json").exists()
        other_shell = as_nobody([rootless.sandbox, "ps", "-q"], env=nobody_env(nobody_dir, XDG_RUNTIME_DIR=""),
                                cwd=str(nobody_dir))
        assert entry["id"] not in other_shell.stdout.split()  # that shell looks in /tmp/sandbox-65534 ...
        prom = as_user("stats", "--prometheus")
        assert labels_of(prom.stdout, "sandbox_pids")[entry["id"]] >= 3
        done = as_user("stop", "-t", "5", entry["id"][:8])
        assert done.returncode == 0, done.stderr
        code, _out, err = run.finish()
        assert code == 128 + 15 and "stopped with `sandbox stop` by uid 65534" in err
    assert mine(ps_json(as_user), run.proc.pid) is None


def test_root_sees_and_stops_every_users_sandbox_users_only_their_own(rootless, nobody_dir, tmp_path):
    """Root lists uid 65534's sandbox (in /tmp/sandbox-65534) and kills it, acting as that user;
    uid 65534 sees neither root's sandboxes nor uid 1000's, and cannot stop them."""
    require("root")
    env = nobody_env(nobody_dir)
    build_home = shared_tempdir("sbxtest-user1000-")
    os.chown(build_home, BUILD_USER, BUILD_USER)
    as_1000 = ["setpriv", f"--reuid={BUILD_USER}", f"--regid={BUILD_USER}", "--clear-groups", "--"]
    env_1000 = {"PATH": "/usr/bin:/bin", "HOME": str(build_home), "SANDBOX_AUDIT_LOG": str(build_home / "audit.jsonl")}
    try:
        with Background([*AS_NOBODY, rootless.sandbox, "run", "untrusted", "--", "/bin/sleep", "60"], env=env,
                        cwd=str(nobody_dir)) as theirs, \
             Background([SANDBOX, "run", "untrusted", "--", "/bin/sleep", "60"]) as roots, \
             Background([*as_1000, rootless.sandbox, "run", "untrusted", "--", "/bin/sleep", "60"], env=env_1000,
                        cwd=str(build_home)) as other:
            entry = theirs.wait_listed(ps_json)
            assert entry["user"] == "nobody" and entry["uid"] == NOBODY
            root_entry = roots.wait_listed(ps_json)
            other_entry = other.wait_listed(ps_json)
            assert other_entry["uid"] == BUILD_USER
            seen = as_nobody([rootless.sandbox, "ps", "-q"], env=env, cwd=str(nobody_dir)).stdout.split()
            assert entry["id"] in seen and root_entry["id"] not in seen and other_entry["id"] not in seen
            for target in (root_entry, other_entry):
                refused = as_nobody([rootless.sandbox, "stop", target["id"]], env=env, cwd=str(nobody_dir))
                assert refused.returncode == 125 and "no running sandbox" in refused.stderr
                refused = as_nobody([rootless.sandbox, "kill", target["id"]], env=env, cwd=str(nobody_dir))
                assert refused.returncode == 125
            assert roots.proc.poll() is None and other.proc.poll() is None
            done = cli("kill", entry["id"])
            assert done.returncode == 0, done.stderr
            code, _out, err = theirs.finish()
            assert code == 137 and "killed (SIGKILL) with `sandbox kill` by uid 0" in err
            for run in (roots, other):
                run.proc.send_signal(signal.SIGTERM)  # forwarded to the workload by the launcher
                assert run.finish()[0] == 128 + 15
    finally:
        shutil.rmtree(build_home, ignore_errors=True)


def test_a_forged_record_cannot_make_root_signal_what_its_author_cannot(rootless, nobody_dir):
    """A record is data its user wrote. One naming a root process as its init (with the right
    start time) and a live process of that user as its launcher is listed, but root's stop and
    kill act with the user's credentials: the root process survives."""
    from sandbox.monitor.resources import start_time
    victim = subprocess.Popen(["sleep", "60"])
    fake_launcher = subprocess.Popen([*AS_NOBODY, "sleep", "60"])
    base = Path(f"/tmp/sandbox-{NOBODY}")
    try:
        assert wait_until(lambda: start_time(fake_launcher.pid) is not None, 5)
        made = as_nobody(["/usr/bin/python3", "-c", "import os; os.makedirs('/tmp/sandbox-65534/running', 0o700, "
                          "exist_ok=True)"], env=nobody_env(nobody_dir))
        assert made.returncode == 0, made.stderr
        forged_id = "f0" + os.urandom(7).hex()
        record = {"id": forged_id, "uid": NOBODY, "gid": NOBODY, "user": "nobody", "profile": "forged", "argv": ["x"],
                  "launcher_pid": fake_launcher.pid, "launcher_start": start_time(fake_launcher.pid),
                  "init_pid": victim.pid, "init_start": start_time(victim.pid), "started": time.time(),
                  "status": "running", "cgroups": {"unified": "/sys/fs/cgroup/unified"}, "kill_after": 0}
        path = base / "running" / f"{forged_id}.json"
        written = as_nobody(["/usr/bin/python3", "-c", f"open({str(path)!r}, 'w').write({json.dumps(record)!r})"],
                            env=nobody_env(nobody_dir))
        assert written.returncode == 0, written.stderr
        try:
            listed = mine(ps_json(), fake_launcher.pid)
            assert listed is not None and listed["id"] == forged_id
            assert listed["source"] == "none"  # the cgroup it names is not a sandbox's: not read
            assert cli("kill", forged_id).returncode == 125
            assert cli("stop", "-t", "0", forged_id).returncode == 125
            assert cli("kill", forged_id, "TERM").returncode == 125
            time.sleep(0.2)
            assert victim.poll() is None
            assert not (base / "running" / f"{forged_id}.stop").exists()  # no note of what did not happen
        finally:
            path.unlink(missing_ok=True)
    finally:
        for proc in (victim, fake_launcher):
            proc.kill()
            proc.wait()
