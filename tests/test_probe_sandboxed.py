"""probe.py against real isolation: on the host (where most checks must FAIL) and under bubblewrap.

bubblewrap is the harness until `sandbox verify` exists. Every run plants host canaries (sandbox.verify.canaries)
and removes them; nothing is ever written to a kernel knob.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import tempfile
from pathlib import Path

from sandbox.verify import probe

PROBE = str(Path(probe.__file__).resolve())
PYTHON = "/usr/bin/python3"  # Debian's: lives under /usr, so a /usr-only root can run it


def bwrap_root(probe_path: str) -> list[str]:
    """A /usr-only root with the probe at /probe.py."""
    return ["--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "--ro-bind", probe_path, "/probe.py"]

# /proc/keys masked as runc and Docker mask it: unmasked, it lists the keyrings uid 65534 may view,
# which container engines and earlier tests on the machine may have created (a session keyring).
STRONG = ["--unshare-all", "--cap-drop", "ALL", "--new-session", "--clearenv", "--hostname", "sandbox",
          "--ro-bind", "/dev/null", "/proc/keys"]

CLONE_NEW_BITS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
DENY = ("mount", "umount2", "pivot_root", "unshare", "setns", "ptrace", "bpf", "perf_event_open", "keyctl",
        "add_key", "userfaultfd", "open_by_handle_at", "swapon", "swapoff", "reboot", "clock_settime",
        "settimeofday", "acct", "iopl", "ioperm", "fsopen", "open_tree", "process_vm_writev", "syslog",
        "io_uring_setup", "init_module", "finit_module", "delete_module", "kexec_file_load")


def seccomp_filter(i386: bool = True):
    """A denylist BPF program (file object) for bwrap --seccomp; kexec_load kills, to observe SIGSYS.

    i386=False leaves the i386 ABI unfiltered (ACT_BADARCH=ALLOW), the classic bypass.
    """
    import pyseccomp as sc
    f = sc.SyscallFilter(sc.ALLOW)
    if i386:
        f.add_arch(sc.Arch.X86)
        f.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    else:
        f.set_attr(sc.Attr.ACT_BADARCH, sc.ALLOW)
    for name in DENY:
        f.add_rule(sc.ERRNO(errno.EPERM), name)
    f.add_rule(sc.KILL_PROCESS, "kexec_load")
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for bit in CLONE_NEW_BITS:
        f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, bit, bit))
    f.add_rule(sc.ERRNO(errno.EPERM), "personality", sc.Arg(0, sc.EQ, 0x40000))
    for family in (17, 38, 40):  # AF_PACKET, AF_ALG, AF_VSOCK
        f.add_rule(sc.ERRNO(errno.EPERM), "socket", sc.Arg(0, sc.EQ, family))
    f.add_rule(sc.ERRNO(errno.EPERM), "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, 0x5412))  # TIOCSTI
    handle = tempfile.TemporaryFile()
    f.export_bpf(handle)
    handle.seek(0)
    return handle


def by_id(doc: dict) -> dict[str, dict]:
    return {r["id"]: r for r in doc["results"]}


def statuses(results: dict[str, dict], prefix: str) -> dict[str, str]:
    return {k: v["status"] for k, v in results.items() if k.startswith(prefix)}


def run_probe_on_host(context: dict | None = None, **kwargs) -> dict[str, dict]:
    argv = [PYTHON, PROBE, "--json"] + (["--context", json.dumps(context)] if context else [])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/", **kwargs)
    assert proc.stdout, proc.stderr
    return by_id(json.loads(proc.stdout))


def run_probe_in_bwrap(flags: list[str], context: dict | None, nobody, seccomp=None, stdin=None,
                       preexec_fn=None) -> dict[str, dict]:
    """bwrap run by uid 65534 with the installed probe (`nobody`: the `rootless` fixture), or by
    root with the checkout's (nobody=None)."""
    pre = AS_NOBODY if nobody else []
    pass_fds: tuple[int, ...] = ()
    extra: list[str] = []
    if seccomp is not None:
        pass_fds = (seccomp.fileno(),)
        extra = ["--seccomp", str(seccomp.fileno())]
    argv = (pre + ["bwrap", "--die-with-parent"] + bwrap_root(nobody.probe if nobody else PROBE) + flags + extra
            + [PYTHON, "/probe.py", "--json"] + (["--context", json.dumps(context)] if context else []))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/", pass_fds=pass_fds,
                          stdin=stdin if stdin is not None else subprocess.DEVNULL, preexec_fn=preexec_fn)
    assert proc.stdout, f"probe produced nothing (rc {proc.returncode}): {proc.stderr}"
    doc = json.loads(proc.stdout)
    assert proc.returncode == (1 if doc["summary"]["failed"] else 0)
    return by_id(doc)


# ------------------------------------------------------------------------- tests

import fcntl  # noqa: E402
import termios  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from conftest import AS_NOBODY, require  # noqa: E402
from sandbox.verify.canaries import Canaries  # noqa: E402

NS = ("pid", "net", "mnt", "user", "uts", "ipc", "cgroup")  # bwrap 0.8 cannot unshare time
CANARY_CHECKS = ("net.canary_tcp", "net.abstract_unix", "ipc.sysv_shm", "ipc.posix_shm", "process.host_pids",
                 "process.env_canary")


def failed(results: dict[str, dict]) -> dict[str, str]:
    return {k: v["observed"] for k, v in results.items() if v["status"] == "FAIL"}


def test_on_the_host_everything_that_matters_fails():
    require("root", "system_python")
    core_pattern = Path("/proc/sys/kernel/core_pattern").read_text()
    with Canaries() as ctx:
        results = run_probe_on_host(ctx)
    assert Path("/proc/sys/kernel/core_pattern").read_text() == core_pattern  # opened, never written
    for name in NS:
        assert results[f"ns.{name}"]["status"] == "FAIL", results[f"ns.{name}"]
    assert results["ns.time"]["status"] == "WARN"  # shared, but low impact without an expectation
    for cid in ("caps.effective", "caps.permitted", "caps.bounding", "ids.host_root", "ids.uid_map",
                "process.no_new_privs", "seccomp.mode", "seccomp.denied.mount", "seccomp.denied.bpf",
                "seccomp.i386", "seccomp.clone.newuser", "proc.write.core_pattern", "dev.nodes",
                "uts.hostname", "mount.host_writable", "net.raw_packet", *CANARY_CHECKS):
        assert results[cid]["status"] == "FAIL", results[cid]
    assert "connected" in results["net.canary_tcp"]["observed"]
    assert results["caps.effective"]["hint"]


def test_without_context_the_initial_namespaces_still_fail_and_canaries_skip():
    require("system_python")
    results = run_probe_on_host(None)
    assert statuses(results, "ns.") == {**{f"ns.{n}": "FAIL" for n in NS}, "ns.time": "WARN"}
    for cid in CANARY_CHECKS:
        assert results[cid]["status"] == "SKIP"


def test_strong_bubblewrap_with_a_filter_passes_every_check(rootless):
    require("bwrap", "system_python")
    with Canaries(expect={"hostname": "sandbox"}) as ctx, seccomp_filter() as bpf:
        results = run_probe_in_bwrap(STRONG, ctx, rootless, seccomp=bpf)
    assert failed(results) == {}
    for name in NS:
        assert results[f"ns.{name}"]["status"] == "PASS"
    for cid in ("caps.effective", "caps.bounding", "ids.host_root", "ids.uid_map", "seccomp.mode",
                "process.no_new_privs", "seccomp.i386", "seccomp.x32", "seccomp.clone3.newuser",
                "mount.ro./usr", "mount.propagation", "dev.nodes", "process.fds", "process.cwd",
                "process.session", "uts.hostname", "net.interfaces", "net.vsock", *CANARY_CHECKS):
        assert results[cid]["status"] == "PASS", results[cid]
    assert "SIGSYS" in results["seccomp.denied.kexec_load"]["observed"]  # the KILL rule, observed
    assert results["seccomp.denied.mount"]["observed"] == "EPERM"


def test_strong_bubblewrap_without_a_filter_fails_only_seccomp_level_checks(rootless):
    require("bwrap", "system_python")
    with Canaries() as ctx:
        results = run_probe_in_bwrap(STRONG, ctx, rootless)
    for name in NS:
        assert results[f"ns.{name}"]["status"] == "PASS"
    layers = {results[cid]["layer"] for cid in failed(results)}
    assert layers <= {"seccomp", "network"}, failed(results)
    assert results["seccomp.mode"]["status"] == "FAIL"
    assert results["seccomp.clone.newuser"]["status"] == "FAIL"  # nested user namespaces allowed
    assert results["net.vsock"]["status"] == "FAIL"  # AF_VSOCK is not network-namespaced


def test_an_unfiltered_i386_abi_is_caught(rootless):
    require("bwrap", "system_python")
    with seccomp_filter(i386=False) as bpf:
        results = run_probe_in_bwrap(STRONG, None, rootless, seccomp=bpf)
    assert results["seccomp.denied.mount"]["status"] == "PASS"
    assert results["seccomp.i386"]["status"] == "FAIL"
    assert "mount" in results["seccomp.i386"]["observed"]


def test_sharing_the_network_fails_the_network_checks(rootless):
    require("bwrap", "system_python")
    with Canaries() as ctx:
        results = run_probe_in_bwrap(["--unshare-all", "--share-net", "--cap-drop", "ALL", "--clearenv"], ctx,
                                     rootless)
    for cid in ("ns.net", "net.interfaces", "net.canary_tcp", "net.abstract_unix"):
        assert results[cid]["status"] == "FAIL", results[cid]
    for name in set(NS) - {"net"}:
        assert results[f"ns.{name}"]["status"] == "PASS"


def test_sharing_the_network_on_purpose_is_skipped_not_passed(rootless):
    require("bwrap", "system_python")
    with Canaries(expect={"network": "host"}) as ctx:
        results = run_probe_in_bwrap(["--unshare-all", "--share-net", "--cap-drop", "ALL", "--clearenv"], ctx,
                                     rootless)
    for cid in ("ns.net", "net.interfaces", "net.canary_tcp", "net.abstract_unix"):
        assert results[cid]["status"] == "SKIP", results[cid]
        assert "profile" in results[cid]["observed"]


def test_root_bubblewrap_sharing_pid_and_ipc_fails_those_layers():
    require("bwrap", "system_python", "root")
    with Canaries() as ctx:
        results = run_probe_in_bwrap(["--unshare-user", "--unshare-uts", "--unshare-cgroup", "--unshare-net"],
                                     ctx, None)
    for cid in ("ns.pid", "ns.ipc", "process.host_pids", "ipc.sysv_shm", "process.env_canary",
                "caps.effective", "ids.host_root", "ids.uid_map", "process.session"):
        assert results[cid]["status"] == "FAIL", results[cid]
    for cid in ("ns.user", "ns.uts", "ns.net", "net.canary_tcp", "ipc.posix_shm"):
        assert results[cid]["status"] == "PASS", results[cid]
    assert "0 0 1" in results["ids.uid_map"]["observed"]


def _legacy_tiocsti() -> bool:
    try:
        return Path("/proc/sys/dev/tty/legacy_tiocsti").read_text().strip() == "1"
    except OSError:
        return True  # older kernels: always allowed


@pytest.mark.parametrize("new_session, status", [(False, "FAIL"), (True, "PASS")])
def test_tiocsti_on_the_controlling_terminal(new_session, status, rootless):
    require("bwrap", "system_python")
    if not _legacy_tiocsti():
        pytest.skip("dev.tty.legacy_tiocsti=0: TIOCSTI is refused for everyone")
    master, slave = os.openpty()
    os.fchown(slave, 65534, 65534)
    flags = [f for f in STRONG if f != "--new-session"] + (["--new-session"] if new_session else [])
    try:
        results = run_probe_in_bwrap(flags, None, rootless, stdin=slave,
                                     preexec_fn=lambda: (os.setsid(), fcntl.ioctl(0, termios.TIOCSCTTY, 0)))
    finally:
        os.close(slave)
        os.close(master)
    assert results["terminal.tiocsti"]["status"] == status, results["terminal.tiocsti"]


def _find_sandboxed(token: str, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in os.listdir("/proc"):
            try:
                argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0] == PYTHON.encode() and token.encode() in argv:
                return int(name)
        time.sleep(0.05)
    raise AssertionError("sandboxed process not found")


@pytest.mark.parametrize("as_nobody", [pytest.param(True, marks=pytest.mark.rootless), False])
def test_outside_checks_read_the_truth_from_the_host(as_nobody, request):
    require("bwrap", "system_python", "root")
    nobody = request.getfixturevalue("rootless") if as_nobody else None
    token = "outside-" + os.urandom(4).hex()
    argv = ((AS_NOBODY if nobody else []) + ["bwrap", "--die-with-parent"] + bwrap_root(nobody.probe if nobody else PROBE)
            + STRONG + [PYTHON, "-c", "import time; time.sleep(30)", token])
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pid = _find_sandboxed(token)
        results = {r["id"]: r for r in probe.outside_checks(pid)}
    finally:
        proc.kill()
        proc.wait()
    for name in NS:
        assert results[f"outside.ns.{name}"]["status"] == "PASS"
    assert results["outside.caps.effective"]["status"] == "PASS"
    assert results["outside.seccomp.mode"]["status"] == "FAIL"  # bwrap installs no filter by default
    want = "PASS" if nobody else "FAIL"  # as root, bwrap maps the sandbox to host uid 0
    assert results["outside.ids.host_uid"]["status"] == want, results["outside.ids.host_uid"]
    assert results["outside.ids.uid_map"]["status"] == want


def test_stress_hits_real_cgroup_v1_limits():
    require("root", "cgroup_v1", "system_python")
    name = "probe-test-" + os.urandom(4).hex()
    dirs = {c: Path(f"/sys/fs/cgroup/{c}/{name}") for c in ("memory", "pids")}
    try:
        for d in dirs.values():
            d.mkdir()
        (dirs["memory"] / "memory.limit_in_bytes").write_text(str(64 << 20))
        (dirs["pids"] / "pids.max").write_text("32")

        def join():
            for d in dirs.values():
                (d / "cgroup.procs").write_text(str(os.getpid()))
        expect = {"memory_limit": 64 << 20, "pids_limit": 32, "stress": True}
        results = run_probe_on_host({"expect": expect}, preexec_fn=join)
    finally:
        for d in dirs.values():
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
    for cid in ("cgroups.memory_limit", "cgroups.pids_limit", "cgroups.stress_memory", "cgroups.stress_pids"):
        assert results[cid]["status"] == "PASS", results[cid]
