"""sandbox-runtime behind the real engines, each started by the test with its state in a temp dir:
podman (rootful, and rootless as a user the test creates with its own subuid/subgid ranges),
containerd (ctr with --runc-binary, which is the runc shim's options.BinaryName), and Docker (a
dockerd of our own with --add-runtime). Images are built offline from busybox-static.

The engines are slow: the full set carries the `engines` marker and runs with SANDBOX_ENGINES=full
(CI sets it); by default a reduced set runs (one podman run, its limits, one failure, one ctr run).
Every test leaves nothing: containers, cgroups, state directories, daemons, the test user.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from conftest import STRICT, require, wait_until
from oci_helpers import cgroup_dirs_of, make_rootfs, portable_runtime

pytestmark = pytest.mark.engines
FULL = os.environ.get("SANDBOX_ENGINES") == "full"
full_only = pytest.mark.skipif(not FULL and not STRICT, reason="engine test of the full set: SANDBOX_ENGINES=full")
IMAGE = "localhost/sbxbb:latest"
LOOP_SCRIPT = 'trap "exit 0" TERM; while :; do sleep 1; done'


def _need(*tools: str) -> None:
    require("root")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        if STRICT:
            pytest.fail(f"required by this test but not installed: {', '.join(missing)}")
        pytest.skip(f"not installed: {', '.join(missing)} (scripts/setup installs them)")


def _run(argv, *, timeout=120, check=False, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)
    if check:
        assert done.returncode == 0, f"{argv}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A directory every user can traverse, with the runtime in it and a busybox rootfs tarball."""
    import tempfile
    top = Path(tempfile.mkdtemp(prefix="sbxoci-", dir="/tmp"))
    os.chmod(top, 0o755)
    make_rootfs(top)
    with tarfile.open(top / "rootfs.tar", "w") as tar:
        tar.add(top / "rootfs", arcname=".")
    (top / "rootfs.tar").chmod(0o644)
    shutil.rmtree(top / "rootfs")
    runtime = portable_runtime(top)
    yield {"dir": top, "runtime": str(runtime), "tar": str(top / "rootfs.tar")}
    shutil.rmtree(top, ignore_errors=True)


def _ulimits() -> str:
    import resource
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1] % (1 << 62), 32768)
    return f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]'


_SPAWN = ("import subprocess, sys; log = open(sys.argv[1], 'w'); "
          "print(subprocess.Popen(sys.argv[2:], stdout=log, stderr=log, stdin=subprocess.DEVNULL, "
          "start_new_session=True).pid)")


class Daemon:
    """A daemon started for a test, not as our child (the per-test leak check must not see it
    between the tests of a module); stopped by its pid."""

    def __init__(self, argv: list[str], log: Path):
        import sys
        done = _run([sys.executable, "-c", _SPAWN, str(log), *argv], check=True)
        self.pid = int(done.stdout)
        self.log = log

    def alive(self) -> bool:
        try:
            with open(f"/proc/{self.pid}/stat") as handle:
                return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def stop(self, grace: float = 20) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if not wait_until(lambda: not self.alive(), grace):
            os.kill(self.pid, signal.SIGKILL)
            wait_until(lambda: not self.alive(), 5)


def _containers_conf(path: Path, *, ulimits: bool) -> Path:
    lines = ["[containers]"]
    if ulimits:  # podman asks for 1048576, above this machine's hard limits
        lines.append(_ulimits())
    lines += ["[engine]", 'cgroup_manager = "cgroupfs"', 'events_logger = "file"',
              'runtime_supports_json = ["crun", "runc", "kata", "runsc", "youki", "krun", "sandbox-runtime"]']
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o644)
    return path


# ---------------------------------------------------------------- podman, rootful

class Podman:
    """podman with its own storage, run root and config (nothing of the system's)."""

    def __init__(self, top: Path, runtime: str, tar: str):
        self.top = top
        (top / "tmp").mkdir(parents=True, exist_ok=True)
        self.conf = _containers_conf(top / "containers.conf", ulimits=True)
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        self.base = ["podman", "--root", str(top / "storage"), "--runroot", str(top / "run"), "--tmpdir",
                     str(top / "tmp"), "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                     "--storage-driver", "overlay"]
        self.runtime = runtime
        _run(self.base + ["import", "--change", 'CMD ["/bin/sh"]', "--change", "ENV PATH=/bin", tar, IMAGE],
             env=self.env, check=True)

    def __call__(self, *args, runtime: str | None = None, timeout=120) -> subprocess.CompletedProcess:
        return _run(self.base + ["--runtime", runtime or self.runtime, *args], env=self.env, timeout=timeout)

    def close(self) -> None:
        self("pod", "rm", "-af", "-t", "0")
        self("rm", "-af", "-t", "0")
        _run(self.base + ["system", "reset", "-f"], env=self.env)
        shutil.rmtree(self.top, ignore_errors=True)
        for path in ("/libpod_parent/conmon", "/libpod_parent"):  # podman's parent cgroups, once empty
            for directory in cgroup_dirs_of(path):
                try:
                    os.rmdir(directory)
                except OSError:
                    pass


@pytest.fixture(scope="module")
def podman(world):
    _need("podman", "conmon")
    engine = Podman(world["dir"] / "podman", world["runtime"], world["tar"])
    yield engine
    engine.close()


def _no_container_cgroups_left() -> list[str]:
    return [d for d in cgroup_dirs_of("/libpod_parent") if any(
        name.startswith("libpod-") for name in os.listdir(d))]


def test_podman_run_rm(podman):
    done = podman("run", "--rm", "--network", "none", IMAGE, "id")
    assert done.returncode == 0, done.stderr
    assert "uid=0(root) gid=0(root)" in done.stdout


def test_podman_read_only_no_network_and_a_memory_limit_seen_in_the_cgroup(podman):
    script = ("touch /rofile 2>/dev/null && echo ROOT-WRITABLE; ls /sys/class/net | tr '\\n' ' '; echo; "
              "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max")
    done = podman("run", "--rm", "--read-only", "--network", "none", "--memory", "64m", IMAGE, "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert "ROOT-WRITABLE" not in done.stdout
    assert lines[0].split() == ["lo"], lines
    assert lines[1] == str(64 << 20)


def test_podman_shows_the_runtime_error_and_leaves_nothing(podman):
    done = podman("run", "--rm", "--network", "none", IMAGE, "/no/such/command")
    assert done.returncode == 127, (done.returncode, done.stderr)
    assert "command not found" in done.stderr or "no such file" in done.stderr.lower()
    assert podman("ps", "-aq").stdout.strip() == ""
    assert _no_container_cgroups_left() == []


@full_only
def test_podman_detached_exec_pause_update_and_stop(podman):
    name = f"sbxd{os.getpid()}"
    assert podman("run", "-d", "--name", name, "--network", "none", IMAGE, "sh", "-c", LOOP_SCRIPT).returncode == 0
    try:
        assert wait_until(lambda: podman("inspect", "-f", "{{.State.Status}}", name).stdout.strip() == "running", 10)
        done = podman("exec", name, "sh", "-c", "echo exec-ok $(id -u)")
        assert done.stdout.strip() == "exec-ok 0", done.stderr
        missing = podman("exec", name, "/no/such")
        assert missing.returncode == 127, missing.stderr
        assert podman("pause", name).returncode == 0
        assert podman("inspect", "-f", "{{.State.Status}}", name).stdout.strip() == "paused"
        assert podman("unpause", name).returncode == 0
        assert podman("update", "--memory", "96m", name).returncode == 0
        limit = podman("exec", name, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
        assert limit.stdout.strip() == str(96 << 20), limit.stderr
        assert podman("stop", "-t", "10", name).returncode == 0
        assert podman("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name).stdout.strip() == "exited 0"
        stopped = podman("exec", name, "true")
        assert stopped.returncode != 0
    finally:
        podman("rm", "-f", "-t", "0", name)
    assert _no_container_cgroups_left() == []


@full_only
def test_podman_tty(podman):
    done = subprocess.run(["script", "-qec", " ".join(podman.base + ["--runtime", podman.runtime, "run", "--rm", "-t",
                                                                      "--network", "none", IMAGE, "tty"]),
                           "/dev/null"], capture_output=True, text=True, timeout=120, env=podman.env,
                          stdin=subprocess.DEVNULL)
    assert "/dev/pts/0" in done.stdout, (done.stdout, done.stderr)


@full_only
def test_podman_pod_containers_share_a_network_namespace(podman):
    pod = f"sbxpod{os.getpid()}"
    assert podman("pod", "create", "--name", pod, "--network", "none").returncode == 0
    try:
        first = podman("run", "-d", "--pod", pod, "--name", f"{pod}-a", IMAGE, "sh", "-c", LOOP_SCRIPT)
        assert first.returncode == 0, first.stderr
        second = podman("run", "--rm", "--pod", pod, IMAGE, "readlink", "/proc/self/ns/net")
        first_ns = podman("exec", f"{pod}-a", "readlink", "/proc/self/ns/net")
        assert second.returncode == 0, second.stderr
        assert second.stdout.strip() == first_ns.stdout.strip() != ""
    finally:
        podman("pod", "rm", "-f", "-t", "0", pod)


@full_only
def test_podman_failure_paths_leave_nothing(podman, tmp_path):
    seccomp = tmp_path / "seccomp.json"
    seccomp.write_text(json.dumps({"defaultAction": "SCMP_ACT_NOPE"}))
    done = podman("run", "--rm", "--network", "none", "--security-opt", f"seccomp={seccomp}", IMAGE, "true")
    assert done.returncode != 0 and "linux.seccomp" in done.stderr, done.stderr
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    hook = tmp_path / "hook.sh"
    hook.write_text("#!/bin/sh\necho refused by the hook >&2\nexit 2\n")
    hook.chmod(0o755)
    (hooks / "fail.json").write_text(json.dumps({"version": "1.0.0", "hook": {"path": str(hook)},
                                                 "when": {"always": True}, "stages": ["prestart"]}))
    done = podman("--hooks-dir", str(hooks), "run", "--rm", "--network", "none", IMAGE, "true")
    assert done.returncode != 0 and "hook" in done.stderr, done.stderr
    assert podman("ps", "-aq").stdout.strip() == ""
    assert _no_container_cgroups_left() == []


# ---------------------------------------------------------------- podman, rootless

@pytest.fixture(scope="module")
def rootless_user(world):
    """A user made for the test, with subuid/subgid ranges of its own (removed afterwards)."""
    _need("podman", "useradd", "newuidmap")
    require("rootless")
    name = f"sbxoci{os.getpid() % 100000}"
    home = world["dir"] / "home"
    # saved before useradd, which may add ranges of its own (login.defs SUB_UID_*): all go again
    saved = {path: Path(path).read_text() if Path(path).exists() else None for path in ("/etc/subuid", "/etc/subgid")}
    _run(["useradd", "-M", "-d", str(home), "-s", "/bin/sh", name], check=True)
    start = 500000 + (os.getpid() % 1000) * 65536
    try:
        for path in saved:
            with open(path, "a") as handle:
                handle.write(f"{name}:{start}:65536\n")
        home.mkdir()
        info = pwd.getpwnam(name)
        os.chown(home, info.pw_uid, info.pw_gid)
        runtime_dir = world["dir"] / "xdg"
        runtime_dir.mkdir()
        os.chown(runtime_dir, info.pw_uid, info.pw_gid)
        runtime_dir.chmod(0o700)
        conf = _containers_conf(world["dir"] / "rootless.conf", ulimits=False)
        env = ["env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin:/usr/sbin:/sbin", f"USER={name}",
               f"LOGNAME={name}", f"XDG_RUNTIME_DIR={runtime_dir}", f"CONTAINERS_CONF={conf}"]
        as_user = ["runuser", "-u", name, "--", *env]
        _run(as_user + ["podman", "import", "--change", "ENV PATH=/bin", world["tar"], IMAGE], check=True)
        yield {"name": name, "run": as_user, "uid": info.pw_uid}
    finally:
        try:
            info = pwd.getpwnam(name)
            _run(["runuser", "-u", name, "--", "env", f"HOME={home}", f"XDG_RUNTIME_DIR={world['dir'] / 'xdg'}",
                  "podman", "system", "reset", "-f"])
            _kill_user_processes(info.pw_uid)
        except KeyError:
            pass
        _run(["userdel", name])
        for path, text in saved.items():
            if text is None:
                os.unlink(path)
            else:
                Path(path).write_text(text)


def _kill_user_processes(uid: int) -> None:
    """The test user's leftovers (podman's pause process), each by its pid."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    os.kill(int(entry), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass


@full_only
def test_podman_rootless(rootless_user, world):
    run = rootless_user["run"]
    base = ["podman", "--runtime", world["runtime"]]
    done = _run(run + base + ["run", "--rm", "--network", "none", IMAGE, "sh", "-c", "id; cat /proc/self/uid_map"])
    assert done.returncode == 0, done.stderr
    assert "uid=0(root)" in done.stdout
    assert f"0 {rootless_user['uid']} 1" in " ".join(done.stdout.split()) or "65536" in done.stdout
    name = "rl"
    done = _run(run + base + ["run", "-d", "--network", "none", "--name", name, IMAGE, "sh", "-c", LOOP_SCRIPT])
    assert done.returncode == 0, done.stderr
    try:
        assert _run(run + base + ["exec", name, "echo", "exec-ok"]).stdout.strip() == "exec-ok"
        assert _run(run + base + ["stop", "-t", "10", name]).returncode == 0
        status = _run(run + ["podman", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name])
        assert status.stdout.strip() == "exited 0"
    finally:
        _run(run + base + ["rm", "-f", "-t", "0", name])


# ---------------------------------------------------------------- containerd

class Containerd:
    def __init__(self, top: Path, runtime: str):
        self.top = top
        top.mkdir(parents=True, exist_ok=True)
        self.socket = top / "containerd.sock"
        config = top / "config.toml"
        # The runtime as Kubernetes selects it through a RuntimeClass: a runtime of the CRI plugin
        # with the runc shim and options.BinaryName (what `ctr run --runc-binary` also sets).
        config.write_text(f"""version = 2
root = "{top}/root"
state = "{top}/state"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[debug]
  address = "{top}/debug.sock"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{top}/cni/bin"
    conf_dir = "{top}/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.sandbox]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.sandbox.options]
      BinaryName = "{runtime}"
""")
        self.config = config
        self.daemon = Daemon(["containerd", "--config", str(config)], top / "containerd.log")
        self.ctr = ["ctr", "--address", str(self.socket), "-n", "sbxtest"]
        assert wait_until(lambda: _run(self.ctr + ["version"]).returncode == 0, 20), (top / "containerd.log").read_text()

    def close(self) -> None:
        from sandbox.cgroups import _fs
        for task in _run(self.ctr + ["task", "ls", "-q"]).stdout.split():
            _run(self.ctr + ["task", "kill", "-s", "SIGKILL", task])
            _run(self.ctr + ["task", "rm", "-f", task])
        for container in _run(self.ctr + ["container", "ls", "-q"]).stdout.split():
            _run(self.ctr + ["container", "rm", container])
        self.daemon.stop()
        _run(["umount", "-R", str(self.top / "state")])
        for directory in cgroup_dirs_of("/sbxtest"):  # the namespace's parent cgroup, if empty
            _fs.remove_tree(directory, 0)
        shutil.rmtree(self.top, ignore_errors=True)


@pytest.fixture(scope="module")
def containerd(world, podman):
    _need("containerd", "ctr")
    engine = Containerd(world["dir"] / "containerd", world["runtime"])
    archive = world["dir"] / "bb-oci.tar"
    podman("save", "--format", "oci-archive", "-o", str(archive), IMAGE)
    _run(engine.ctr + ["image", "import", str(archive)], check=True)
    yield engine
    engine.close()


def test_ctr_run_rm(containerd, world):
    done = _run(containerd.ctr + ["run", "--rm", "--runc-binary", world["runtime"], IMAGE, f"t1-{os.getpid()}", "id"])
    assert done.returncode == 0, done.stderr
    assert "uid=0(root)" in done.stdout


@full_only
def test_ctr_run_detached_exec_and_kill(containerd, world):
    name = f"t2-{os.getpid()}"
    done = _run(containerd.ctr + ["run", "-d", "--runc-binary", world["runtime"], "--memory-limit", str(64 << 20), IMAGE,
                                  name, "sh", "-c", "while :; do sleep 1; done"])
    assert done.returncode == 0, done.stderr
    try:
        memory = [d for d in cgroup_dirs_of(f"/sbxtest/{name}") if "memory" in d]
        assert memory and Path(memory[0], "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
        exec_done = _run(containerd.ctr + ["task", "exec", "--exec-id", "e1", name, "echo", "exec-ok"])
        assert exec_done.stdout.strip() == "exec-ok", exec_done.stderr
        assert _run(containerd.ctr + ["task", "kill", "-s", "SIGKILL", name]).returncode == 0
        assert wait_until(lambda: "STOPPED" in _run(containerd.ctr + ["task", "ls"]).stdout, 10)
    finally:
        _run(containerd.ctr + ["task", "rm", "-f", name])
        _run(containerd.ctr + ["container", "rm", name])
    assert cgroup_dirs_of(f"/sbxtest/{name}") == []


@full_only
def test_containerd_takes_the_runtime_class_config(containerd):
    dumped = _run(["containerd", "--config", str(containerd.config), "config", "dump"]).stdout
    assert "runtimes.sandbox" in dumped and "BinaryName" in dumped


# ---------------------------------------------------------------- Docker

class Dockerd:
    def __init__(self, top: Path, runtime: str):
        top.mkdir(parents=True, exist_ok=True)
        self.top = top
        self.host = f"unix://{top}/docker.sock"
        self.daemon = Daemon(
            ["dockerd", "--data-root", str(top / "data"), "--exec-root", str(top / "exec"), "-H", self.host,
             "--pidfile", str(top / "docker.pid"), "--iptables=false", "--ip6tables=false", "--bridge=none",
             "--storage-driver", "overlay2", "--add-runtime", f"sandbox={runtime}", "--default-ulimit",
             "nofile=1024:1024"], top / "dockerd.log")
        self.cli = ["docker", "-H", self.host]
        self.started = wait_until(lambda: self.daemon.alive() and _run(self.cli + ["version"]).returncode == 0, 30)

    def close(self) -> None:
        if self.daemon.alive():
            leftover = _run(self.cli + ["ps", "-aq"]).stdout.split()
            if leftover:
                _run(self.cli + ["rm", "-f", *leftover])
            self.daemon.stop(30)
        _run(["umount", "-R", str(self.top / "exec")])
        _run(["umount", "-R", str(self.top / "data")])
        shutil.rmtree(self.top, ignore_errors=True)


@pytest.fixture(scope="module")
def dockerd(world):
    _need("dockerd", "docker")
    engine = Dockerd(world["dir"] / "docker", world["runtime"])
    if not engine.started:
        reason = (world["dir"] / "docker" / "dockerd.log").read_text()[-500:]
        engine.close()
        if STRICT:
            pytest.fail(f"dockerd cannot start here: {reason}")
        pytest.skip(f"dockerd cannot start here: {reason}")
    _run(engine.cli + ["import", world["tar"], "sbxbb:latest"], check=True)
    yield engine
    engine.close()


@full_only
def test_docker_run_with_the_sandbox_runtime(dockerd):
    done = _run(dockerd.cli + ["run", "--runtime", "sandbox", "--rm", "--network", "none", "sbxbb:latest", "id"])
    assert done.returncode == 0, done.stderr
    assert "uid=0(root)" in done.stdout
    info = _run(dockerd.cli + ["info", "--format", "{{json .Runtimes}}"]).stdout
    assert "sandbox" in info
