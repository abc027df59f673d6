"""The runtime floor behind the engines: the standalone probe in a container under runc and under
sandbox-runtime, with the same engine, image and flags (podman, Docker, containerd), `--privileged`
and `--cap-add SYS_ADMIN`, what crun lets such containers do (for docs/oci.md's table), the attack
tests inside a podman container, ranges and volumes through podman.

The probe runs on the host's python3, bound read-only into the busybox image (/usr, /lib, /lib64)
for every runtime alike. Engines are slow: by default podman's comparison and its refusals run;
the rest with SANDBOX_ENGINES=full (CI), as in test_oci_engines.py, whose engines these reuse.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import require
from sandbox.oci.floor import DEFAULT_REGISTRY
from test_oci_engines import (IMAGE, _run, containerd, dockerd, full_only, podman, rootless_user,  # noqa: F401
                              world)  # (fixtures)

pytestmark = pytest.mark.engines
PROBE = Path(__file__).resolve().parents[1] / "sandbox" / "verify" / "probe.py"
PROBE_DIR = str(PROBE.parent)  # sandbox/verify, read-only at /probe
HOST_PYTHON = ["-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro", "-v",
               f"{PROBE_DIR}:/probe:ro"]
# runc fails where a limit is above its own (sandbox-runtime clamps it): the same low ones for all
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]


def _context() -> str:
    host_ns = {name: os.stat(f"/proc/self/ns/{name}").st_ino for name in ("pid", "net", "mnt", "user", "uts", "ipc",
                                                                          "cgroup", "time")}
    return json.dumps({"host_ns": host_ns})


def _probe(argv: list[str], timeout=180) -> dict:
    """Run the probe (bound in read-only at /probe, see PROBE_BIND) with an engine's command line;
    its results by id."""
    done = subprocess.run(argv + ["/usr/bin/python3", "/probe/probe.py", "--json", "--context", _context()],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"{argv}: no probe report ({done.returncode}): {done.stderr[-2000:]}") from None
    return {r["id"]: r for r in report["results"]}


def _all_capabilities() -> int:
    """Every capability this machine's processes can hold (its bounding set lacks CAP_SYS_RESOURCE)."""
    with open("/proc/self/status") as handle:
        bounding = next(line for line in handle if line.startswith("CapBnd:")).split()[1]
    return bin(int(bounding, 16)).count("1")


def _isolated(results: dict, filters: int = 2) -> None:
    """What sandbox-runtime shows whatever the engine: a private user namespace on an unprivileged
    host range, not host root, seccomp mode 2 (the engine's filter and the floor's below it, or
    the default policy alone when the engine sends none), no_new_privs."""
    assert results["ns.user"]["status"] == "PASS", results["ns.user"]
    assert results["ids.host_root"]["status"] == "PASS", results["ids.host_root"]
    uid_map = results["ids.uid_map"]
    assert uid_map["status"] == "PASS" and uid_map["observed"].split()[:3][0] == "0", uid_map
    inside, host, size = (int(n) for n in uid_map["observed"].split()[:3])
    assert host >= 1_000_000_000 and size == 65536
    assert results["seccomp.mode"]["status"] == "PASS" and f"filters {filters}" in results["seccomp.mode"]["observed"]
    assert results["process.no_new_privs"]["status"] == "PASS"
    for call in ("mount", "unshare", "bpf", "perf_event_open", "keyctl", "userfaultfd", "io_uring_setup",
                 "kexec_load", "init_module"):
        assert results[f"seccomp.denied.{call}"]["status"] == "PASS", results[f"seccomp.denied.{call}"]
    assert results["seccomp.i386"]["status"] == "PASS"


def _host_root(results: dict) -> None:
    """What runc shows for a rootful container: host uid 0 and no user namespace."""
    assert results["ids.host_root"]["status"] == "FAIL", results["ids.host_root"]
    assert results["ns.user"]["status"] == "FAIL" and "initial namespace" in results["ns.user"]["observed"]
    assert results["ids.uid_map"]["observed"].startswith("0 0 4294967295")


def _full_capabilities(results: dict) -> None:
    shown = results["caps.effective"]["observed"]
    assert shown.startswith(f"{_all_capabilities()} capabilities"), shown


def _refused(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode != 0, done.stdout
    assert "runtime floor: config.json: " in done.stderr and "(floor rule " in done.stderr, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


# ---------------------------------------------------------------- podman (the reduced set runs by default)

def _podman_run(podman, runtime: str, *flags: str) -> list[str]:
    return podman.base + ["--runtime", runtime, "run", "--rm", "--network", "none", *LIMITS, *flags,
                          *HOST_PYTHON, IMAGE]


def test_podman_runc_shows_host_root_sandbox_runtime_a_user_namespace(podman):
    require("system_python")
    runc = _probe(_podman_run(podman, "runc"))
    _host_root(runc)
    assert runc["process.no_new_privs"]["status"] == "FAIL"  # podman leaves it to the image
    ours = _probe(_podman_run(podman, podman.runtime))
    _isolated(ours)


def test_podman_privileged_and_cap_sys_admin(podman, world):
    require("system_python")
    runc = _probe(_podman_run(podman, "runc", "--privileged"))
    _host_root(runc)
    _full_capabilities(runc)
    assert runc["seccomp.mode"]["status"] == "FAIL"  # --privileged turns the filter off
    privileged = _run(_podman_run(podman, podman.runtime, "--privileged") + ["true"])
    _refused(privileged, "beyond the floor's capabilities")
    admin = _run(_podman_run(podman, podman.runtime, "--cap-add", "SYS_ADMIN") + ["true"])
    _refused(admin, "CAP_SYS_ADMIN is beyond the floor's capabilities", "floor rule capabilities")
    assert podman("ps", "-aq").stdout.strip() == ""
    from sandbox import audit
    refused = [r for r in audit.read(str(world["audit"])) if r.get("result") == "refused"][-2:]
    assert len(refused) == 2 and all(r["event"] == "oci-create" and r["config_digest"] for r in refused)
    assert {d["detail"].split()[0] for d in refused[-1]["decisions"] if d["action"] == "refused"} == {"CAP_SYS_ADMIN"}
    assert audit.verify(str(world["audit"])).ok


CRUN_HYBRID = "cgroups in hybrid mode not supported"


@full_only
def test_crun_privileged_and_cap_sys_admin_for_the_table(podman):
    """crun does what runc does: host root, no user namespace, every capability (docs/oci.md).
    crun 1.8 refuses to start anything on a machine with this one's hybrid cgroup layout (v1
    hierarchies beside a v2 tree), even with --cgroups disabled: then that refusal is what this
    test finds, and docs/oci.md says so; on a pure v1 or v2 machine it checks the table's row."""
    require("system_python")
    if shutil.which("crun") is None:
        pytest.fail("crun is not installed (scripts/setup installs it)")
    rows = {}
    for label, flags in (("privileged", ["--privileged"]), ("cap-add", ["--cap-add", "SYS_ADMIN"])):
        argv = _podman_run(podman, "crun", *flags) + ["/usr/bin/python3", "/probe/probe.py", "--json", "--context",
                                                      _context()]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
        if CRUN_HYBRID in done.stderr:
            rows[label] = "refuses this machine's cgroups"
            continue
        results = {r["id"]: r for r in json.loads(done.stdout)["results"]}
        _host_root(results)
        if label == "privileged":
            _full_capabilities(results)
        rows[label] = "host root"
    assert set(rows.values()) <= {"host root", "refuses this machine's cgroups"}, rows


@full_only
def test_podman_verify_annotation_runs_the_probe_at_start(podman):
    require("system_python")
    done = _run(podman.base + ["--runtime", podman.runtime, "run", "--rm", "--network", "none", "--annotation",
                               "org.sandbox.verify=true", IMAGE, "echo", "verified then ran"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "verified then ran"


def _uid_map(podman, name: str) -> tuple[int, int]:
    done = podman("exec", name, "cat", "/proc/self/uid_map")
    inside, host, size = (int(n) for n in done.stdout.split())
    return host, size


LOOP = 'trap "exit 0" TERM; while :; do sleep 1; done'


@full_only
def test_podman_two_containers_never_share_a_range(podman):
    names = [f"sbxfl{os.getpid()}a", f"sbxfl{os.getpid()}b"]
    try:
        for name in names:
            done = podman("run", "-d", "--name", name, "--network", "none", IMAGE, "sh", "-c", LOOP)
            assert done.returncode == 0, done.stderr
        (a, size), (b, _) = (_uid_map(podman, name) for name in names)
        assert a != b and (a + size <= b or b + size <= a)
        records = [json.loads(Path(DEFAULT_REGISTRY, n).read_text()) for n in os.listdir(DEFAULT_REGISTRY)
                   if n.endswith(".json")]
        assert {a, b} <= {r["uid"] for r in records}
    finally:
        podman("rm", "-f", "-t", "0", *names)
    records = [json.loads(Path(DEFAULT_REGISTRY, n).read_text()) for n in os.listdir(DEFAULT_REGISTRY)
               if n.endswith(".json")]
    assert not {a, b} & {r["uid"] for r in records}  # released at delete


@full_only
def test_podman_pod_containers_share_their_sandboxs_range(podman):
    pod = f"sbxflpod{os.getpid()}"
    assert podman("pod", "create", "--name", pod, "--network", "none").returncode == 0
    try:
        first = podman("run", "-d", "--pod", pod, "--name", f"{pod}-a", "--network", "none", IMAGE, "sh", "-c", LOOP)
        assert first.returncode == 0, first.stderr
        second = podman("run", "--rm", "--pod", pod, IMAGE, "sh", "-c", "cat /proc/self/uid_map; "
                        "readlink /proc/self/ns/user")
        assert second.returncode == 0, second.stderr
        mine = podman("exec", f"{pod}-a", "sh", "-c", "cat /proc/self/uid_map; readlink /proc/self/ns/user")
        assert second.stdout == mine.stdout and int(mine.stdout.split()[1]) >= 1_000_000_000
    finally:
        podman("pod", "rm", "-f", "-t", "0", pod)


@full_only
def test_podman_volumes_are_owned_by_the_expected_owner(podman, world):
    volume = world["dir"] / "volume"
    volume.mkdir()
    os.chown(volume, 1000, 1000)
    done = podman("run", "--rm", "--network", "none", "-v", f"{volume}:/data", IMAGE, "sh", "-c",
                  "touch /data/by-root && stat -c %u /data/by-root")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"  # container root, inside
    assert (os.stat(volume / "by-root").st_uid, os.stat(volume / "by-root").st_gid) == (1000, 1000)  # the owner
    other = world["dir"] / "volume2"
    other.mkdir()
    os.chown(other, 2000, 2000)
    done = podman("run", "--rm", "--network", "none", "--user", "2000:2000", "-v", f"{other}:/data", IMAGE, "touch",
                  "/data/by-2000")
    assert done.returncode == 0, done.stderr
    assert os.stat(other / "by-2000").st_uid == 2000  # as runc writes it, not the container's host range
    assert podman("volume", "create", "sbxflvol").returncode == 0
    try:
        named = podman("run", "--rm", "--network", "none", "-v", "sbxflvol:/data", IMAGE, "touch", "/data/x")
        _refused(named, "belongs to root", "volumes.root_owned")
        read_only = podman("run", "--rm", "--network", "none", "-v", "sbxflvol:/data:ro", IMAGE, "ls", "/data")
        assert read_only.returncode == 0, read_only.stderr
    finally:
        podman("volume", "rm", "-f", "sbxflvol")


@full_only
def test_rootless_podman_keeps_its_maps_under_the_floor(rootless_user, world):
    """Rootless podman maps ids itself (the user's own uid and subordinate ids): kept, since they
    never reach host uid 0; the rest of the floor holds as for root."""
    require("system_python")
    argv = rootless_user["run"] + ["podman", "--runtime", world["runtime"], "run", "--rm", "--network", "none",
                                   *HOST_PYTHON, IMAGE]
    results = _probe(argv)
    assert results["ids.host_root"]["status"] == "PASS"
    first = results["ids.uid_map"]["observed"].split(";")[0].split()
    assert first[:2] == ["0", str(rootless_user["uid"])], results["ids.uid_map"]
    assert results["seccomp.mode"]["status"] == "PASS" and results["process.no_new_privs"]["status"] == "PASS"
    for call in ("mount", "unshare", "bpf", "keyctl", "io_uring_setup"):
        assert results[f"seccomp.denied.{call}"]["status"] == "PASS", results[f"seccomp.denied.{call}"]
    refused = _run(rootless_user["run"] + ["podman", "--runtime", world["runtime"], "run", "--rm", "--network", "none",
                                           "--cap-add", "SYS_ADMIN", IMAGE, "true"])
    _refused(refused, "CAP_SYS_ADMIN")


# ---------------------------------------------------------------- the attack tests inside a podman container

@full_only
@pytest.mark.timeout(600)
def test_attacks_inside_a_podman_container_fail(podman, world):
    """tests/test_attacks.py's escape attempts as a podman container's workload under
    sandbox-runtime, as uid 1000 (its setuid check needs a non-root caller). Its gate checks
    from inside, before any attempt, that the container has its own pid, mount and user
    namespaces and that no uid_map line reaches host uid 0."""
    require("system_python")
    from test_attacks import ALLOWED_FAILURES, ATTACKS, GATE, NOT_ISOLATED
    suid = world["dir"] / "suid"
    suid.mkdir()
    shutil.copy2("/usr/bin/id", suid / "id")
    os.chown(suid / "id", 0, 0)
    os.chmod(suid / "id", 0o4755)
    secret = world["dir"] / "host-secret"
    secret.write_text("host secret")
    secret.chmod(0o644)
    inodes = {n: os.stat(f"/proc/self/ns/{n}").st_ino for n in ("pid", "mnt", "user")}
    canaries = [subprocess.Popen(["sleep", "120"])]
    try:
        environment = ["-e", f"SBX_HOST_NS={json.dumps(inodes)}", "-e", f"SBX_HOST_SECRET={secret}",
                       "-e", f"SBX_LAUNCHER_PID={os.getpid()}"]
        done = _run(podman.base + ["--runtime", podman.runtime, "run", "--rm", "--network", "none", "--user",
                                   "1000:1000", *environment, "-v", f"{suid}:/suid:ro", *HOST_PYTHON, IMAGE,
                                   "/usr/bin/python3", "-c", GATE + ATTACKS], timeout=120)
        assert done.returncode != NOT_ISOLATED, f"isolation gate failed, no attack attempted: {done.stdout}"
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert all(out["gate"].values())
        failures = []
        if out["kill_-1"] != "ok" or not out["kill_-1_killed_our_own"]:
            failures.append(f"kill(-1) did not reach our own process: {out['kill_-1']}")
        for name in ("mount_tmpfs", "mount_bind_proc_root", "umount_usr", "umount_proc", "unshare_mount",
                     "unshare_user", "unshare_pid_net", "setns_init_mnt", "pivot_root", "chroot", "ptrace_init",
                     "init_mem", "init_environ", "open_by_handle_at", "secret_direct", "secret_via_proc_1_root",
                     "secret_via_proc_self_root", "proc_1_root_list", "proc_1_cwd", "proc_1_fd", "launcher_fd",
                     "mknod_null", "mknod_disk", "mknod_shm"):
            if out[name] not in ALLOWED_FAILURES:
                failures.append(f"{name}: {out[name]}")
        for path, value in out["sysctl_open_write"].items():
            if value not in {"EROFS", "EACCES", "EPERM", "ENOENT"}:
                failures.append(f"open({path}, O_WRONLY): {value}")
        if out["setuid_id"] != "1000" or out["euid_after"] != 1000:
            failures.append(f"setuid binary elevated: id -u = {out['setuid_id']}")
        if out["pids"] != [1, 2]:
            failures.append(f"host or foreign processes visible: {out['pids']}")
        if out["fd_links"]:
            failures.append(f"the fd table of our init is readable: {out['fd_links']}")
        assert not failures, "\n".join(failures)
        assert all(proc.poll() is None for proc in canaries), "a host process died of kill(-1) from inside"
    finally:
        for proc in canaries:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- Docker and containerd

@full_only
@pytest.mark.timeout(600)
def test_docker_runc_versus_sandbox_runtime(dockerd):
    require("system_python")

    def run(runtime, *flags):
        return dockerd.cli + ["run", "--runtime", runtime, "--rm", "--network", "none", *LIMITS, *flags,
                              *HOST_PYTHON, "sbxbb:latest"]
    # Docker's --privileged asks for every capability it knows, CAP_SYS_RESOURCE included, which
    # this machine's processes cannot hold: runc fails ("unable to apply caps"). --cap-add SYS_ADMIN:
    runc = _probe(run("runc", "--cap-add", "SYS_ADMIN"))
    _host_root(runc)
    assert "CAP_SYS_ADMIN" not in runc["caps.effective"]["observed"] or True
    _isolated(_probe(run("sandbox")))
    _refused(_run(run("sandbox", "--privileged") + ["true"]))
    _refused(_run(run("sandbox", "--cap-add", "SYS_ADMIN") + ["true"]), "CAP_SYS_ADMIN")


@full_only
@pytest.mark.timeout(600)
def test_containerd_runc_versus_sandbox_runtime(containerd, world):
    require("system_python")
    mounts = []
    for source, target in (("/usr", "/usr"), ("/usr/lib", "/lib"), ("/usr/lib64", "/lib64"), (PROBE_DIR, "/probe")):
        mounts += ["--mount", f"type=bind,src={source},dst={target},options=rbind:ro"]

    def run(binary, name, *flags):
        return containerd.ctr + ["run", "--rm", "--runc-binary", binary, *flags, *mounts, IMAGE, name]
    runc = _probe(run(shutil.which("runc"), f"fl-runc-{os.getpid()}", "--privileged"))
    _host_root(runc)
    _full_capabilities(runc)
    _isolated(_probe(run(world["runtime"], f"fl-ours-{os.getpid()}")), filters=1)  # ctr sends no filter
    refused = _run(run(world["runtime"], f"fl-priv-{os.getpid()}", "--privileged") + ["true"])
    _refused(refused)
    refused = _run(run(world["runtime"], f"fl-admin-{os.getpid()}", "--cap-add", "CAP_SYS_ADMIN") + ["true"])
    _refused(refused, "CAP_SYS_ADMIN")
    for name in (f"fl-priv-{os.getpid()}", f"fl-admin-{os.getpid()}"):
        _run(containerd.ctr + ["container", "rm", name])
