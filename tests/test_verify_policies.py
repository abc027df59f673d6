"""`sandbox verify` under the policies the project itself produces: `strict`, learned profiles, a
policy that kills (issue 21, item 4). A probe call the policy refuses is "denied by the policy" for
the check that needed it; no check is lost and nothing is reported as a probe bug."""
from __future__ import annotations

import json

import pytest

from conftest import require

NETWORK_CHECKS = {"net.interfaces", "net.canary_tcp", "net.abstract_unix", "net.raw_packet", "net.raw_icmp",
                  "net.vsock", "net.af_alg"}


@pytest.fixture(autouse=True)
def _machine():
    require("userns", "seccomp", "system_python")


def verify(sandbox_cli, profile: str) -> tuple[dict[str, dict], object]:
    done = sandbox_cli("verify", "--json", profile, timeout=240)
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr
    results = {r["id"]: r for r in json.loads(done.stdout)["results"]}
    assert not [i for i in results if i.startswith("probe.error")], results
    return results, done


def test_strict_policy_keeps_every_network_check(sandbox_cli, tmp_path):
    path = tmp_path / "strict.toml"
    path.write_text('extends = "untrusted"\n[seccomp]\npolicy = "strict"\n')
    results, done = verify(sandbox_cli, str(path))
    assert NETWORK_CHECKS <= set(results)
    assert not [r for r in results.values() if r["layer"] == "network" and r["status"] != "PASS"]
    # strict refuses AF_INET sockets: the host listener is unreachable, and the report says why
    assert "socket(AF_INET) denied by the policy (EAFNOSUPPORT)" in results["net.canary_tcp"]["observed"]
    assert results["ipc.sysv_shm"]["status"] == "PASS"
    assert "denied by the policy" in results["ipc.sysv_shm"]["observed"]


def test_a_policy_that_kills_on_socket(sandbox_cli, tmp_path):
    path = tmp_path / "kills.toml"
    path.write_text('extends = "untrusted"\n[[seccomp.rules]]\nsyscalls = ["socket"]\naction = "kill-process"\n')
    results, _ = verify(sandbox_cli, str(path))
    assert NETWORK_CHECKS <= set(results)
    for check in ("net.canary_tcp", "net.abstract_unix", "net.vsock"):
        assert results[check]["status"] == "PASS", results[check]
        assert "killed by SIGSYS: denied by the policy" in results[check]["observed"]


def test_learned_profile_verifies_without_a_traceback(sandbox_cli, tmp_path):
    learned = tmp_path / "learned.toml"
    done = sandbox_cli("learn", "-o", str(learned), "--", "/usr/bin/python3", "-c", "print(1)")
    assert done.returncode == 0, done.stderr
    results, _ = verify(sandbox_cli, str(learned))
    assert NETWORK_CHECKS <= set(results)
    assert results["process.cwd"]["status"] == "PASS"  # getcwd() denied: the walk to / decides
    assert results["process.session"]["status"] == "PASS"  # getsid() and getpid() denied: from /proc
    assert results["uts.hostname"]["status"] != "FAIL"  # uname() denied: /proc/sys/kernel/hostname
    denied = [r for r in results.values() if "denied by the policy" in r["observed"]]
    assert denied  # pipe() and fork() are refused: said for each check that needed them
    assert all(r["status"] != "FAIL" for r in denied)
    run = sandbox_cli("run", "--verify", str(learned), "--", "/usr/bin/python3", "-c", "print(1)", timeout=240)
    assert "Traceback" not in run.stderr and "needs python3" not in run.stderr
    assert run.returncode == 0 and run.stdout == "1\n", run.stderr


def test_a_policy_python_cannot_start_under_is_explained(sandbox_cli, tmp_path):
    learned = tmp_path / "echo.toml"
    assert sandbox_cli("learn", "-o", str(learned), "--", "/bin/echo", "hi").returncode == 0
    done = sandbox_cli("run", "--verify", str(learned), "--", "/bin/echo", "hi", timeout=240)
    assert done.returncode == 125
    assert "Traceback" not in done.stderr and "needs python3" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("sandbox: verify: the probe (python3) could not run under this profile's seccomp policy")
    assert "denies" in last
