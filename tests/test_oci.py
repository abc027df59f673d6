"""sandbox-runtime without an engine: config.json translation and its errors, the lifecycle across
processes (create, start, state, kill, delete, exec, pause, update, events) as engines drive it,
and what a failure leaves (nothing). Real containers from a busybox rootfs; tests/test_oci_engines.py
drives the same runtime through podman, Docker and containerd."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest

from conftest import require, wait_until
from oci_helpers import (base_config, left_behind, make_rootfs, monitor, remove_cgroups, runtime,
                         runtime_command, state_root_fixture, write_bundle)
from sandbox.oci import spec
from sandbox.oci.spec import SpecError


@pytest.fixture(autouse=True)
def _machine():
    require("root", "userns")


@pytest.fixture
def state_root(tmp_path):
    yield from state_root_fixture(tmp_path)


@pytest.fixture
def bundle(tmp_path):
    def make(args, name="bundle", **changes):
        config = base_config(args)
        for key, value in changes.items():
            target = config
            *path, last = key.split("__")
            for part in path:
                target = target.setdefault(part, {})
            target[last] = value
        return write_bundle(tmp_path / name, config)
    return make


def _cid(label: str) -> str:
    return f"sbxtest-{label}-{os.getpid()}-{os.urandom(2).hex()}"


# ---------------------------------------------------------------- translation errors name the field

def _error(tmp_path, mutate) -> str:
    config = base_config(["true"])
    mutate(config)
    directory = write_bundle(tmp_path / "b", config)
    with pytest.raises(SpecError) as failure:
        spec.load_bundle(str(directory), "x")
    return str(failure.value)


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c["linux"]["namespaces"].append({"type": "foo"}),
     'config.json: linux.namespaces[6].type: expected one of pid, network, mount, ipc, uts, user, cgroup, time, '
     'found "foo"'),
    (lambda c: c["linux"]["namespaces"].append({"type": "pid"}), "linux.namespaces[6].type: expected each"),
    (lambda c: c.update(root={"path": "nowhere"}), "config.json: root.path: no such directory"),
    (lambda c: c["linux"]["seccomp"].update(defaultAction="SCMP_ACT_BOGUS"), "config.json: linux.seccomp:"),
    (lambda c: c["linux"]["seccomp"].update(flags=["SECCOMP_FILTER_FLAG_SPEC_ALLOW"]),
     "linux.seccomp.flags[0]: not supported"),
    (lambda c: c["linux"]["seccomp"].update(listenerPath="/run/agent.sock"), "linux.seccomp.listenerPath"),
    (lambda c: c["process"].update(apparmorProfile="docker-default"), "process.apparmorProfile: not supported"),
    (lambda c: c["process"].update(selinuxLabel="system_u:system_r:container_t:s0"), "process.selinuxLabel"),
    (lambda c: c["linux"].update(mountLabel="system_u:object_r:container_file_t:s0"), "linux.mountLabel"),
    (lambda c: c["linux"].update(sysctl={"kernel.panic": "1"}), "linux.sysctl.kernel.panic: expected a namespaced"),
    (lambda c: c["linux"].update(sysctl={"net.ipv4.ip_forward": "1"},
                                 namespaces=[n for n in c["linux"]["namespaces"] if n["type"] != "network"]),
     "linux.sysctl.net.ipv4.ip_forward: needs a new network namespace"),
    (lambda c: c["process"]["capabilities"]["bounding"].append("CAP_FLY"), "process.capabilities.bounding[3]"),
    (lambda c: c["process"]["rlimits"].append({"type": "RLIMIT_WINGS", "soft": 1, "hard": 1}), "process.rlimits[1].type"),
    (lambda c: c["mounts"].append({"destination": "/x", "type": "bind", "source": "/tmp", "options": ["rshared"]}),
     "mounts[7].options[0]: not supported by sandbox-runtime: mount propagation"),
    (lambda c: c["mounts"].append({"destination": "x", "type": "tmpfs"}), "mounts[7].destination: expected an absolute"),
    (lambda c: c["linux"].update(rootfsPropagation="rslave"), "linux.rootfsPropagation"),
    (lambda c: c["linux"].update(intelRdt={"closID": "x"}), "linux.intelRdt: not supported"),
    (lambda c: c["linux"].update(personality={"domain": "LINUX", "flags": ["x"]}), "linux.personality.flags"),
    (lambda c: c.update(hostname="x", linux={**c["linux"], "namespaces": [
        n for n in c["linux"]["namespaces"] if n["type"] != "uts"]}), "hostname: needs a new uts namespace"),
    (lambda c: c["linux"].update(namespaces=[{"type": "pid"}]), "linux.namespaces: expected a mount namespace"),
    (lambda c: c["linux"]["namespaces"].append({"type": "user"}), "linux.uidMappings: a new user namespace needs"),
    (lambda c: c.update(ociVersion="2.0.0"), "ociVersion: expected a 1.x version"),
    (lambda c: c["process"].update(args=[]), "process.args: expected at least one argument"),
    (lambda c: c["linux"].update(timeOffsets={"monotonic": {"secs": 1}}), "linux.timeOffsets: needs a new time"),
    (lambda c: c.update(hooks={"prestart": [{"path": "relative"}]}), "hooks.prestart[0].path: expected an absolute"),
])
def test_what_cannot_be_honoured_is_an_error_naming_the_field(tmp_path, mutate, expected):
    assert expected in _error(tmp_path, mutate)


def test_a_podman_config_translates_to_one_plan(tmp_path):
    directory = write_bundle(tmp_path / "b", base_config(["id"]))
    plan = spec.load_bundle(str(directory), "c1").plan
    assert plan.argv == ("id",) and plan.new_pid_ns and plan.new_net_ns and not plan.new_user_ns
    assert plan.no_new_privs and plan.seccomp is not None and plan.cgroup_path == "/sandbox-runtime/c1"
    assert plan.capability_sets.bounding == ("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")
    assert plan.mounts.readonly_root and plan.mounts.root_as_given


def test_cgroups_path_in_both_forms():
    from sandbox.cgroups.oci import path_of
    assert path_of("/libpod_parent/libpod-abc", "x") == "/libpod_parent/libpod-abc"
    assert path_of("machine.slice:libpod:abc", "x") == "/machine.slice/libpod-abc.scope"
    assert path_of("system.slice:docker:abc", "x") == "/system.slice/docker-abc.scope"
    assert path_of("a-b.slice:crio:abc", "x") == "/a.slice/a-b.slice/crio-abc.scope"
    assert path_of("", "x") == "/sandbox-runtime/x"
    with pytest.raises(ValueError):
        path_of("a:b", "x")
    with pytest.raises(ValueError):  # cgroups.gc() would collect it
        path_of("/sandbox-1234-abcd", "x")


# ---------------------------------------------------------------- the command line

def test_version_features_and_spec(tmp_path):
    done = subprocess.run(runtime_command() + ["--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("sandbox-runtime version ")
    features = json.loads(subprocess.run(runtime_command() + ["features"], capture_output=True, text=True).stdout)
    assert features["linux"]["apparmor"] == {"enabled": False}
    assert "SECCOMP_FILTER_FLAG_SPEC_ALLOW" not in features["linux"]["seccomp"]["supportedFlags"]
    assert "createRuntime" in features["hooks"] and "user" in features["linux"]["namespaces"]
    for rootless in (False, True):
        directory = tmp_path / f"spec-{rootless}"
        directory.mkdir()
        args = ["spec", "--bundle", str(directory)] + (["--rootless"] if rootless else [])
        assert subprocess.run(runtime_command() + args, capture_output=True).returncode == 0
        config = json.loads((directory / "config.json").read_text())
        assert config["process"]["noNewPrivileges"] and config["root"]["readonly"]
        assert config["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
        assert ({"type": "user"} in config["linux"]["namespaces"]) == rootless
        again = subprocess.run(runtime_command() + args, capture_output=True, text=True)
        assert again.returncode == 1 and "already exists" in again.stderr


def test_errors_go_to_the_log_as_json_lines_and_to_stderr(tmp_path, state_root):
    log = tmp_path / "log.json"
    done = runtime(state_root, "state", "nonesuch", log=log)
    assert done.returncode == 1
    assert "does not exist" in done.stderr
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["level"] == "error" and "does not exist" in record["msg"] and record["time"].endswith("Z")
    bad = runtime(state_root, "create", "--bogus", "x", log=log)
    assert bad.returncode == 1 and "flag provided but not defined: --bogus" in bad.stderr


# ---------------------------------------------------------------- the lifecycle across processes

def test_create_start_state_and_delete_across_processes(tmp_path, state_root, bundle):
    directory = bundle(["sh", "-c", "echo started > /tmp/marker; sleep 30"])
    cid = _cid("life")
    pid_file = tmp_path / "pid"
    steps = monitor(state_root, [
        ["create", "--bundle", str(directory), "--pid-file", str(pid_file), cid],
        ["state", cid], ["start", cid], ["sleep", "0.3"], ["state", cid], ["list", "--format", "json"],
        ["ps", "--format", "json", cid], ["pause", cid], ["state", cid], ["resume", cid],
        ["events", "--stats", cid], ["delete", cid], ["kill", cid, "KILL"], ["wait-init"],
        ["state", cid], ["delete", cid], ["state", cid]])
    created, state1, start, _, state2, listing, ps, pause, paused, resume, events, refused, kill, waited, \
        stopped, delete, gone = steps
    assert created["rc"] == 0, created
    first = json.loads(state1["stdout"])
    assert first["status"] == "created" and first["pid"] == int(pid_file.read_text())
    assert start["rc"] == 0, start
    assert json.loads(state2["stdout"])["status"] == "running"
    assert [c["id"] for c in json.loads(listing["stdout"])] == [cid]
    assert first["pid"] in json.loads(ps["stdout"])
    assert pause["rc"] == 0 and json.loads(paused["stdout"])["status"] == "paused", paused
    assert resume["rc"] == 0
    assert json.loads(events["stdout"])["type"] == "stats"
    assert refused["rc"] == 1 and "not stopped: running" in refused["stderr"]
    assert kill["rc"] == 0 and waited["status"] == -9  # init itself was killed
    assert json.loads(stopped["stdout"])["status"] == "stopped"
    assert delete["rc"] == 0 and gone["rc"] == 1 and "does not exist" in gone["stderr"]
    assert left_behind(state_root, cid) == []


def test_run_exits_with_the_workload_status_and_leaves_nothing(state_root, bundle):
    cid = _cid("run")
    done = runtime(state_root, "run", "--bundle", bundle(["sh", "-c", "exit 7"]), cid)
    assert done.returncode == 7, done.stderr
    assert left_behind(state_root, cid) == []


def test_the_container_gets_what_config_json_asks(state_root, bundle):
    cid = _cid("what")
    script = ("cat /proc/self/status | grep -E '^(CapBnd|CapEff|NoNewPrivs|Seccomp):'; id; hostname; "
              "cat /proc/sys/kernel/shmmni; cat /proc/self/oom_score_adj; ulimit -n; "
              "touch /rootfile 2>&1 || echo ro; ls /dev")
    directory = bundle(["sh", "-c", script], hostname="boxed", process__oomScoreAdj=123,
                       process__user={"uid": 0, "gid": 0, "additionalGids": [5, 7]},
                       linux__sysctl={"kernel.shmmni": "1234"})
    done = runtime(state_root, "run", "--bundle", directory, cid)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "CapBnd:\t0000000020000420" in out and "NoNewPrivs:\t1" in out and "Seccomp:\t2" in out
    assert "groups=5,7" in out.replace("groups=5(5),7(7)", "groups=5,7") or "groups=5" in out
    assert "boxed" in out and "1234" in out and "123" in out and "\nro\n" in out
    for device in ("null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts"):
        assert f"\n{device}\n" in out or out.endswith(f"\n{device}\n"), device


def test_failing_hook_missing_command_and_bad_config_leave_nothing(tmp_path, state_root, bundle):
    hook = tmp_path / "hook.sh"
    hook.write_text("#!/bin/sh\ncat > /dev/null\necho hook refused >&2\nexit 3\n")
    hook.chmod(0o755)
    cases = {
        "hook": (bundle(["true"], "b1", hooks={"createRuntime": [{"path": str(hook)}]}), "createRuntime hook"),
        "missing": (bundle(["/no/such/command"], "b2"), "command not found"),
        "seccomp": (bundle(["true"], "b3", linux__seccomp={"defaultAction": "SCMP_ACT_NOPE"}), "linux.seccomp"),
    }
    for label, (directory, expected) in cases.items():
        cid = _cid(label)
        steps = monitor(state_root, [["create", "--bundle", str(directory), "--pid-file", str(tmp_path / "p"), cid]])
        assert steps[0]["rc"] == 1 and expected in steps[0]["stderr"], (label, steps)
        assert left_behind(state_root, cid) == [], label


def test_exec_joins_the_container_and_fails_once_it_stopped(tmp_path, state_root, bundle):
    directory = bundle(["sleep", "30"], hostname="inside")
    cid = _cid("exec")
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"args": ["sh", "-c", "hostname; cat /proc/self/cgroup | head -1; id -u"],
                                   "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 65534, "gid": 65534},
                                   "capabilities": {}, "noNewPrivileges": True}))
    steps = monitor(state_root, [
        ["create", "--bundle", str(directory), "--pid-file", str(tmp_path / "p"), cid], ["start", cid],
        ["exec", "--process", str(process), cid], ["exec", cid, "/no/such"],
        ["exec", "--detach", "--pid-file", str(tmp_path / "e"), cid, "sleep", "0.1"],
        ["kill", cid, "9"], ["wait-init"], ["exec", cid, "true"], ["delete", cid]])
    _, _, joined, missing, detached, _, _, stopped, _ = steps
    assert joined["rc"] == 0, joined
    assert joined["stdout"].split("\n")[0] == "inside" and joined["stdout"].split()[-1] == "65534"
    assert missing["rc"] == 1 and "executable file not found" in missing["stderr"], missing
    assert detached["rc"] == 0 and int((tmp_path / "e").read_text()) > 0
    assert stopped["rc"] == 1 and "cannot exec in a stopped container" in stopped["stderr"]
    assert left_behind(state_root, cid) == []


def test_update_changes_the_limits_of_a_running_container(tmp_path, state_root, bundle):
    require("cgroup_v1")
    directory = bundle(["sleep", "30"], linux__resources={"memory": {"limit": 64 << 20}, "pids": {"limit": 50}})
    cid = _cid("update")
    resources = tmp_path / "r.json"
    resources.write_text(json.dumps({"memory": {"limit": 96 << 20}, "pids": {"limit": 60}}))
    memory = f"/sys/fs/cgroup/memory/sandbox-runtime/{cid}/memory.limit_in_bytes"
    steps = monitor(state_root, [
        ["create", "--bundle", str(directory), "--pid-file", str(tmp_path / "p"), cid], ["start", cid],
        ["update", "--resources", str(resources), cid], ["update", "--memory", "80m", cid],
        ["delete", "--force", cid]])
    assert [s["rc"] for s in steps] == [0] * 5, steps
    assert not os.path.exists(memory)
    assert left_behind(state_root, cid) == []


def test_console_socket_receives_the_pty_master(tmp_path, state_root, bundle):
    directory = bundle(["sh", "-c", "tty; echo hello"], process__terminal=True)
    cid = _cid("tty")
    path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    try:
        import threading
        received = {}

        def accept():
            connection, _ = server.accept()
            with connection:
                message, fds, _, _ = socket.recv_fds(connection, 64, 1)
                received["fd"], received["name"] = fds[0], message
        thread = threading.Thread(target=accept)
        thread.start()
        steps = monitor(state_root, [["create", "--bundle", str(directory), "--console-socket", path,
                                      "--pid-file", str(tmp_path / "p"), cid], ["start", cid], ["wait-init"],
                                     ["delete", cid]])
        thread.join(10)
        assert steps[0]["rc"] == 0, steps[0]
        master = received["fd"]
        output = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        os.close(master)
        assert b"/dev/pts/0" in output and b"hello" in output, output
    finally:
        server.close()
    assert left_behind(state_root, cid) == []


def test_device_rules_on_cgroup_v2_are_a_bpf_program(tmp_path):
    """The v2 form of linux.resources.devices (runc's and crun's device filter), checked on a
    cgroup of the unified tree: what the rules allow opens, the rest is EPERM."""
    require("cgroup_v2")
    from sandbox.cgroups import oci as oci_cgroups
    from sandbox.cgroups.devices import attach_program
    unified = [d for name, d in oci_cgroups.hierarchies().items() if name in ("", "unified")][0]
    directory = os.path.join(unified, f"sbxtest-devices-{os.getpid()}")
    os.mkdir(directory)
    try:
        attach_program(directory, [{"allow": False, "access": "rwm"},
                                   {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                                   {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"}])
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                with open(os.path.join(directory, "cgroup.procs"), "w") as handle:
                    handle.write(str(os.getpid()))
                results = []
                for path, mode in (("/dev/null", os.O_RDWR), ("/dev/zero", os.O_RDONLY), ("/dev/zero", os.O_WRONLY),
                                   ("/dev/full", os.O_RDONLY)):
                    try:
                        os.close(os.open(path, mode))
                        results.append("ok")
                    except OSError as exc:
                        results.append(exc.errno)
                os.write(write_fd, json.dumps(results).encode())
            finally:
                os._exit(0)
        os.close(write_fd)
        os.waitpid(pid, 0)
        results = json.loads(os.read(read_fd, 4096))
        os.close(read_fd)
    finally:
        os.rmdir(directory)
    import errno
    assert results == ["ok", "ok", errno.EPERM, errno.EPERM]


def test_the_container_has_a_session_keyring_of_its_own(state_root, bundle):
    """runc's default: the container joins a new session keyring (named after it), never the
    runtime's; --no-new-keyring keeps the caller's."""
    cid = _cid("keys")
    directory = bundle(["sh", "-c", f"grep -c ' _ses.{cid}: ' /proc/keys"], linux__maskedPaths=[])
    floor = directory / "floor.toml"  # the runtime floor masks /proc/keys: unmasked for this test
    floor.write_text('[paths]\nunmask = ["/proc/keys"]\n')
    done = runtime(state_root, "--floor", floor, "run", "--bundle", directory, cid)
    assert done.returncode == 0 and done.stdout.strip() == "1", (done.stdout, done.stderr)
    other = _cid("keys")
    directory = bundle(["sh", "-c", f"grep -c ' _ses.{other}: ' /proc/keys"], "b2", linux__maskedPaths=[])
    done = runtime(state_root, "--floor", floor, "run", "--no-new-keyring", "--bundle", directory, other)
    assert done.stdout.strip() == "0", (done.stdout, done.stderr)


# ---------------------------------------------------------------- attacks, as regression tests

def test_a_rootfs_symlink_cannot_send_a_mount_to_the_host(tmp_path, state_root, bundle, world_dir):
    """An image whose /escape is a symlink to a host path: the mount lands inside the container."""
    directory = bundle(["sh", "-c", "ls /escape/"], mounts=base_config(["true"])["mounts"] + [
        {"destination": "/escape/inner", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}])
    (directory / "rootfs" / "escape").symlink_to(str(world_dir))
    cid = _cid("escape")
    done = runtime(state_root, "run", "--bundle", directory, cid)
    # resolved inside the rootfs, where the link leads nowhere: refused (runc would make it there)
    assert done.returncode == 1 and "/escape/inner" in done.stderr and "dangling symlink" in done.stderr
    assert not (world_dir / "inner").exists() and os.listdir(world_dir) == []
    assert left_behind(state_root, cid) == []


def test_exec_leaks_no_descriptor_of_the_runtime(tmp_path, state_root, bundle):
    """CVE-2024-21626's way out: a directory descriptor of the host kept across exec."""
    directory = bundle(["sleep", "30"])
    cid = _cid("fds")
    steps = monitor(state_root, [
        ["create", "--bundle", str(directory), "--pid-file", str(tmp_path / "p"), cid], ["start", cid],
        ["exec", cid, "ls", "/proc/self/fd"], ["exec", cid, "sh", "-c", "readlink /proc/self/cwd; readlink /proc/self/root"],
        ["delete", "--force", cid]])
    listing, links = steps[2], steps[3]
    assert listing["rc"] == 0 and sorted(listing["stdout"].split()) == ["0", "1", "2", "3"], listing
    assert links["stdout"].split() == ["/", "/"], links


def test_the_container_sees_only_its_own_cgroups(state_root, bundle):
    require("cgroup_v1")
    cid = _cid("cgview")
    directory = bundle(["sh", "-c", "ls /sys/fs/cgroup/memory/ | grep -c '^libpod\\|^sandbox\\|^system' ; "
                                    "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; touch /sys/fs/cgroup/x 2>&1"],
                       linux__resources={"memory": {"limit": 32 << 20}})
    done = runtime(state_root, "run", "--bundle", directory, cid)
    lines = done.stdout.split("\n")
    assert lines[0] == "0" and lines[1] == str(32 << 20), done.stdout
    assert "Read-only file system" in done.stdout


def test_seccomp_notify_goes_to_the_agent_at_listener_path(tmp_path, state_root, bundle):
    """SCMP_ACT_NOTIFY with linux.seccomp.listenerPath: the agent gets runc's ContainerProcessState
    and the listener (at create, and for each exec'd process), and its answers are what the
    container's calls return."""
    import threading
    from sandbox.seccomp.model import Action, Rule, SeccompPolicy
    from sandbox.seccomp.notify import Recorder
    path = str(tmp_path / "agent.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    server.settimeout(0.2)
    messages, violations, stop = [], [], threading.Event()
    policy = SeccompPolicy("denylist", Action("allow"), (Rule(("mkdir", "mkdirat"), Action("errno", 13)),))

    def serve(fd):
        violations.extend(v.syscall for v in Recorder(fd, policy).run_until(stop))

    def agent():
        workers = []
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except (socket.timeout, OSError):
                continue
            with connection:
                message, fds, _, _ = socket.recv_fds(connection, 65536, 1)
            messages.append(json.loads(message))
            workers.append(threading.Thread(target=serve, args=(fds[0],)))
            workers[-1].start()
        for worker in workers:
            worker.join(10)
    thread = threading.Thread(target=agent)
    thread.start()
    cid = _cid("agent")
    try:
        seccomp = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                   "listenerPath": path, "listenerMetadata": "meta",
                   "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]}
        directory = bundle(["sh", "-c", "mkdir /tmp/x 2>&1; echo status $?; sleep 30"], linux__seccomp=seccomp)
        steps = monitor(state_root, [
            ["create", "--bundle", str(directory), "--pid-file", str(tmp_path / "p"), cid], ["start", cid],
            ["exec", cid, "sh", "-c", "mkdir /tmp/y 2>&1; echo status $?"], ["delete", "--force", cid]])
    finally:
        stop.set()
        thread.join(20)
        server.close()
    assert [s["rc"] for s in steps] == [0, 0, 0, 0], steps
    assert "Permission denied" in steps[2]["stdout"] and "status 1" in steps[2]["stdout"], steps[2]
    assert len(messages) == 2 and all(m["fds"] == ["seccompFd"] and m["metadata"] == "meta" for m in messages)
    assert messages[0]["state"]["id"] == cid and messages[1]["pid"] != messages[0]["pid"]
    assert {"mkdir", "mkdirat"} & set(violations)
    assert left_behind(state_root, cid) == []


def test_hooks_run_at_their_points_with_the_state_on_stdin(tmp_path, state_root, bundle, world_dir):
    hook = world_dir / "hook.sh"
    hook.write_text('#!/bin/sh\nread state\necho "$1 $state" >> "$2"\n')
    hook.chmod(0o755)
    log = world_dir / "log"

    def entry(stage, inside=False):
        return {"path": "/hooks/hook.sh" if inside else str(hook), "args": ["hook.sh", stage,
                "/hooks/log" if inside else str(log)], "timeout": 10}
    stages = ("prestart", "createRuntime", "createContainer", "poststart", "poststop")
    hooks = {stage: [entry(stage)] for stage in stages}
    hooks["startContainer"] = [entry("startContainer", inside=True)]
    directory = bundle(["sh", "-c", "echo ran >> /hooks/log"], hooks=hooks, mounts=base_config(["true"])["mounts"] + [
        {"destination": "/hooks", "type": "bind", "source": str(world_dir), "options": ["rbind", "rw"]}])
    cid = _cid("hooks")
    floor = directory / "floor.toml"  # the hooks (host root) and the container append to one log
    floor.write_text('[volumes]\nroot_owned = "host-root"\n')
    done = runtime(state_root, "--floor", floor, "run", "--bundle", directory, cid)
    assert done.returncode == 0, done.stderr
    lines = log.read_text().splitlines()
    order = [line.split(" ", 1)[0] for line in lines]
    assert order == ["prestart", "createRuntime", "createContainer", "startContainer", "ran", "poststart",
                     "poststop"] or order == ["prestart", "createRuntime", "createContainer", "startContainer",
                                              "poststart", "ran", "poststop"], order
    states = {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1]) for line in lines if line != "ran"}
    assert all(state["id"] == cid for state in states.values())
    assert states["createRuntime"]["pid"] > 0 and states["startContainer"]["pid"] == states["createRuntime"]["pid"]
    assert states["poststop"]["status"] == "stopped"


def test_a_user_namespace_of_several_ranges_and_time_offsets(state_root, world_dir):
    """The rootfs must be reachable by the container's root (host 300000 here), as with runc."""
    namespaces = base_config(["true"])["linux"]["namespaces"] + [{"type": "user"}, {"type": "time"}]
    config = base_config(["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; cut -d. -f1 /proc/uptime"])
    for key, value in dict(linux__namespaces=namespaces,
                                     linux__uidMappings=[{"containerID": 0, "hostID": 300000, "size": 1000},
                                           {"containerID": 1000, "hostID": 310000, "size": 1000}],
                       linux__gidMappings=[{"containerID": 0, "hostID": 300000, "size": 2000}],
                       linux__timeOffsets={"boottime": {"secs": 86400 * 400, "nanosecs": 0}},
                       process__user={"uid": 1500, "gid": 1500}).items():
        section, field = key.split("__")
        config[section][field] = value
    config["mounts"] = [m for m in config["mounts"] if m["type"] != "cgroup"]
    directory = write_bundle(world_dir / "bundle", config)
    cid = _cid("userns")
    done = runtime(state_root, "run", "--bundle", directory, cid)
    assert done.returncode == 0, done.stderr
    lines = [" ".join(line.split()) for line in done.stdout.splitlines()]
    assert lines[:3] == ["0 300000 1000", "1000 310000 1000", "0 300000 2000"], lines
    assert lines[3] == "1500"
    assert int(lines[4]) >= 86400 * 400  # the boot time offset, seen through /proc/uptime
    assert left_behind(state_root, cid) == []


def test_an_unprivileged_user_runs_a_rootless_bundle(world_dir, rootless):
    """`spec --rootless` and `run` as uid 65534: a user namespace mapping the caller to 0, no
    cgroup of its own (none delegated), device nodes bound from the host. The installed runtime:
    that user may not enter the checkout."""
    runtime_path = str(rootless.venv / "bin" / "sandbox-runtime")
    bundle_dir = world_dir / "bundle"
    bundle_dir.mkdir()
    make_rootfs(bundle_dir)
    subprocess.run(["chown", "-R", "65534:65534", str(bundle_dir)], check=True)
    env = {"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(world_dir / "xdg")}
    (world_dir / "xdg").mkdir()
    os.chown(world_dir / "xdg", 65534, 65534)
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    done = subprocess.run(as_nobody + [runtime_path, "spec", "--rootless"], cwd=bundle_dir, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    config = json.loads((bundle_dir / "config.json").read_text())
    config["process"]["args"] = ["sh", "-c", "id -u; cat /proc/self/uid_map; ls /dev/null"]
    config["process"]["env"] = ["PATH=/bin"]
    (bundle_dir / "config.json").write_text(json.dumps(config))
    done = subprocess.run(as_nobody + [runtime_path, "run", "rl"], cwd=bundle_dir, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[0] == "0" and lines[1].split() == ["0", "65534", "1"] and lines[2] == "/dev/null"
    assert not (world_dir / "xdg" / "sandbox-runtime" / "rl").exists()


def test_a_console_socket_nobody_listens_on_fails_create_and_leaves_nothing(tmp_path, state_root, bundle):
    directory = bundle(["tty"], process__terminal=True)
    cid = _cid("noconsole")
    steps = monitor(state_root, [["create", "--bundle", str(directory), "--console-socket", str(tmp_path / "none"),
                                  "--pid-file", str(tmp_path / "p"), cid]])
    assert steps[0]["rc"] == 1, steps
    assert left_behind(state_root, cid) == []


def test_init_keeps_no_capability_but_kill_and_that_only_for_another_uid(state_root, bundle):
    for uid, expected in ((0, 0), (1000, 1 << 5)):  # CAP_KILL is capability 5
        directory = bundle(["sh", "-c", "sleep 0.2; grep CapEff /proc/1/status"], f"b{uid}",
                           process__user={"uid": uid, "gid": uid})
        done = runtime(state_root, "run", "--bundle", directory, _cid(f"init{uid}"))
        assert done.returncode == 0, done.stderr
        assert int(done.stdout.split()[1], 16) == expected, (uid, done.stdout)


def test_devices_are_denied_unless_allowed_even_without_device_rules(state_root, bundle):
    """A bundle with no linux.resources.devices still gets deny-all plus runc's defaults: with
    CAP_MKNOD the container can make /dev/mem's node, never open it."""
    caps = ["CAP_MKNOD", "CAP_DAC_OVERRIDE"]
    directory = bundle(["sh", "-c", "mknod /dev/mem2 c 1 1 && head -c1 /dev/mem2 >/dev/null; echo status $?; "
                                    "head -c1 /dev/zero | wc -c"],
                       process__capabilities={name: caps for name in ("bounding", "effective", "permitted")},
                       linux__resources={})
    done = runtime(state_root, "run", "--bundle", directory, _cid("devices"))
    assert done.returncode == 0, done.stderr
    assert "Operation not permitted" in done.stderr + done.stdout and "status 1" in done.stdout, done
    assert done.stdout.split()[-1] == "1"  # /dev/zero, allowed by default, reads


def test_readonly_paths_are_read_only_alone_as_runc_makes_them(state_root, bundle):
    directory = bundle(["sh", "-c", "touch /dev/x 2>/dev/null && echo dev-writable; "
                                    "touch /dev/shm/x && echo shm-writable; cat /dev/null && echo null-works"],
                       linux__readonlyPaths=["/dev", "/proc/sys"])
    done = runtime(state_root, "run", "--bundle", directory, _cid("ro"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["shm-writable", "null-works"], done.stdout
