"""The launcher run by an unprivileged user (uid/gid 65534, no groups, via setpriv): the same key
properties as when root launches, plus the honest warnings about cgroup limits it cannot apply."""
from __future__ import annotations

import json
import os
import textwrap

import pytest

from conftest import NOBODY, as_nobody, nobody_env

pytestmark = pytest.mark.rootless

PROBE = textwrap.dedent(r"""
    import errno, json, os
    st = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
    def err(fn):
        try:
            fn(); return "ok"
        except OSError as exc:
            return errno.errorcode[exc.errno]
    print(json.dumps({
        "uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid(), "ppid": os.getppid(),
        "uid_map": open("/proc/self/uid_map").read(), "gid_map": open("/proc/self/gid_map").read(),
        "setgroups": open("/proc/self/setgroups").read().strip(),
        "status": {k: v.strip() for k, v in st.items() if k.startswith(("Cap", "NoNewPrivs", "Seccomp"))},
        "ns": {n: os.stat(f"/proc/self/ns/{n}").st_ino for n in ("pid", "mnt", "net", "user")},
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "usr_write": err(lambda: open("/usr/sbx_probe", "w")),
        "out_write": err(lambda: open("/out/from-inside", "w").write("rootless")),
        "out_owner": os.stat("/out").st_uid,
    }))
""")


@pytest.fixture
def run_rootless(rootless, nobody_dir):
    """`sandbox run ARGS` as uid 65534 (the installed command), in nobody_dir."""
    def run(*args: str, timeout: float = 60):
        return as_nobody([rootless.sandbox, "run", *args], cwd=str(nobody_dir), timeout=timeout,
                         env=nobody_env(nobody_dir))
    return run


def test_rootless_launch_keeps_the_key_properties(run_rootless, nobody_dir):
    proc = run_rootless( "--bind", f"{nobody_dir / 'out'}:/out:rw", "untrusted", "--",
                    "/usr/bin/python3", "-c", PROBE)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["uid"], out["gid"]) == (NOBODY, NOBODY)
    # the only id the caller may map is its own: 65534 inside is 65534 outside, nothing else
    assert out["uid_map"].split() == ["65534", "65534", "1"]
    assert out["gid_map"].split() == ["65534", "65534", "1"]
    assert out["setgroups"] == "deny"
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(out["status"][name], 16) == 0, name
    assert out["status"]["NoNewPrivs"] == "1" and out["status"]["Seccomp"] == "2"
    host = {n: os.stat(f"/proc/self/ns/{n}").st_ino for n in ("pid", "mnt", "net", "user")}
    assert all(out["ns"][n] != host[n] for n in host), (out["ns"], host)
    assert (out["pid"], out["ppid"], out["pids"]) == (2, 1, [1, 2])
    assert out["usr_write"] == "EROFS"
    assert out["out_write"] == "ok" and out["out_owner"] == NOBODY
    written = nobody_dir / "out" / "from-inside"
    assert written.read_text() == "rootless"
    assert (written.stat().st_uid, written.stat().st_gid) == (NOBODY, NOBODY)


def test_rootless_warns_that_cgroup_limits_are_not_applied(run_rootless):
    proc = run_rootless("untrusted", "--", "/bin/true")
    assert proc.returncode == 0, proc.stderr
    # on this machine an unprivileged user has no delegated cgroup: every limit is only a warning
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("sandbox: warning:")]
    assert any("memory 512M" in w and "not applied" in w for w in warnings), proc.stderr
    assert any("pids 128" in w and "not applied" in w for w in warnings), proc.stderr
    quiet = run_rootless("-q", "untrusted", "--", "/bin/true")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_rootless_required_limit_fails_with_a_delegation_hint(run_rootless, nobody_dir):
    profile = nobody_dir / "required.toml"
    profile.write_text('extends = "untrusted"\n[limits]\nrequired = ["memory"]\n')
    os.chmod(profile, 0o644)
    proc = run_rootless(str(profile), "--", "/bin/true")
    assert proc.returncode == 125
    assert proc.stderr.startswith("sandbox: cgroup: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "memory" in proc.stderr and "elegat" in proc.stderr  # says how to get a delegated cgroup
    assert "Traceback" not in proc.stderr


def test_rootless_python_api(rootless, nobody_dir):
    script = textwrap.dedent("""
        import json, sandbox
        r = sandbox.run("untrusted", ["/bin/sh", "-c", "cat /proc/self/uid_map; exit 3"], capture_output=True)
        print(json.dumps({"exit": r.exit_code, "out": r.stdout.decode(), "warnings": r.warnings}))
    """)
    proc = as_nobody([rootless.python, "-c", script], cwd=str(nobody_dir), timeout=60, env=nobody_env(nobody_dir))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["exit"] == 3
    assert out["out"].split() == ["65534", "65534", "1"]
    assert any("not applied" in w for w in out["warnings"])


def test_rootless_verify_fails_the_limits_it_cannot_keep(rootless, nobody_dir):
    """No delegated cgroup here: memory and cpus are promised but not enforced (FAIL, issue 21),
    pids is kept by RLIMIT_NPROC in the sandbox's user namespace (PASS)."""
    env = nobody_env(nobody_dir)
    proc = as_nobody([rootless.sandbox, "verify", "--json", "untrusted"], cwd=str(nobody_dir), timeout=60, env=env)
    assert proc.returncode == 1, proc.stderr
    results = {r["id"]: r for r in json.loads(proc.stdout)["results"]}
    failed = sorted(i for i, r in results.items() if r["status"] == "FAIL")
    assert failed == ["outside.cgroups.cpu_limit", "outside.cgroups.memory_limit"], failed
    assert "RLIMIT_DATA" in results["outside.cgroups.memory_limit"]["observed"]
    assert "limits.optional" in results["outside.cgroups.memory_limit"]["hint"]
    assert results["outside.cgroups.pids_limit"]["status"] == "PASS"
    assert "RLIMIT_NPROC 128" in results["outside.cgroups.pids_limit"]["observed"]
    # A profile that accepts running without them: WARN, and verify passes.
    relaxed = nobody_dir / "relaxed.toml"
    relaxed.write_text('extends = "untrusted"\n[limits]\noptional = ["memory", "cpus"]\n')
    os.chmod(relaxed, 0o644)
    proc = as_nobody([rootless.sandbox, "verify", "--json", str(relaxed)], cwd=str(nobody_dir), timeout=60, env=env)
    assert proc.returncode == 0, proc.stdout
    results = {r["id"]: r for r in json.loads(proc.stdout)["results"]}
    assert results["outside.cgroups.memory_limit"]["status"] == "WARN"
    assert results["outside.cgroups.cpu_limit"]["status"] == "WARN"
