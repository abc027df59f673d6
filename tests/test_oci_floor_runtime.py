"""The runtime floor on real containers, driven as the engines drive sandbox-runtime (no engine):
a host id range of its own per container, idmapped root and volumes, refusals that name the field
and the rule and leave nothing, warn and off modes, annotations, exec held to the floor, Landlock,
the probe at start, and the audit trail. The engines themselves: test_oci_floor_engines.py."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess

import pytest

from conftest import require
from oci_helpers import base_config, left_behind, monitor, runtime, state_root_fixture, write_bundle
from sandbox import audit
from sandbox.oci.floor import DEFAULT_REGISTRY


@pytest.fixture(autouse=True)
def _machine():
    require("root", "userns", "seccomp")


@pytest.fixture
def state_root(tmp_path):
    yield from state_root_fixture(tmp_path)


@pytest.fixture
def audit_log(tmp_path_factory):
    return audit.log_path()  # conftest points SANDBOX_AUDIT_LOG at the session's own


def _cid(label: str) -> str:
    return f"sbxfloor-{label}-{os.getpid()}-{os.urandom(2).hex()}"


def _bundle(tmp_path, args, name="bundle", mutate=None, readonly=True):
    config = base_config(args)
    config["root"]["readonly"] = readonly
    if mutate:
        mutate(config)
    return write_bundle(tmp_path / name, config)


def _floor(tmp_path, text: str, name="floor.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _records(path, container: str) -> list[dict]:
    return [r for r in audit.read(path) if r.get("container") == container]


def _registry_holds(container_dir) -> bool:
    if not os.path.isdir(DEFAULT_REGISTRY):
        return False
    for name in os.listdir(DEFAULT_REGISTRY):
        if name.endswith(".json"):
            try:
                with open(os.path.join(DEFAULT_REGISTRY, name)) as handle:
                    if json.load(handle).get("container") == str(container_dir):
                        return True
            except (OSError, ValueError):
                pass
    return False


# ---------------------------------------------------------------- a user namespace for every container

def test_two_containers_get_host_id_ranges_of_their_own(tmp_path, state_root, audit_log):
    first, second = _cid("a"), _cid("b")
    script = "cat /proc/self/uid_map /proc/self/gid_map; sleep 30"
    bundles = [_bundle(tmp_path, ["sh", "-c", script], name) for name in ("b1", "b2")]
    pid_files = [tmp_path / "p1", tmp_path / "p2"]
    inside = tmp_path / "inside"
    steps = monitor(state_root, [
        ["create", "--bundle", str(bundles[0]), "--pid-file", str(pid_files[0]), first],
        ["create", "--bundle", str(bundles[1]), "--pid-file", str(pid_files[1]), second],
        ["exec", first, "cat", "/proc/self/uid_map"], ["exec", second, "cat", "/proc/self/uid_map"],
        ["exec", first, "cat", "/proc/self/gid_map"], ["exec", second, "cat", "/proc/self/gid_map"],
        ["state", first]])
    try:
        assert all(step.get("rc") == 0 for step in steps), steps
        ranges = []
        for uid_step, gid_step in ((steps[2], steps[4]), (steps[3], steps[5])):
            (inner, host, size), = [tuple(map(int, line.split())) for line in uid_step["stdout"].splitlines()]
            (g_inner, g_host, g_size), = [tuple(map(int, line.split())) for line in gid_step["stdout"].splitlines()]
            assert inner == 0 and size == 65536 and host >= 1_000_000_000 and (g_inner, g_size) == (0, 65536)
            assert g_host > 0
            ranges.append((host, size))
        (a, size), (b, _) = ranges
        assert a + size <= b or b + size <= a, ranges  # never overlapping
        # the host's view of the containers' init: an unprivileged host uid, the range's root
        init = int(pid_files[0].read_text())
        with open(f"/proc/{init}/status") as handle:
            uids = next(line for line in handle if line.startswith("Uid:")).split()[1:]
        assert {int(u) for u in uids} == {a}
        assert _registry_holds(state_root / first) and _registry_holds(state_root / second)
        record = _records(audit_log, first)[-1]
        assert record["event"] == "oci-create" and record["result"] == "created"
        assert record["id_range"]["uid"] == a and record["mode"] == "enforce"
        assert any(d["rule"] == "user_namespace" and d["action"] == "raised" for d in record["decisions"])
    finally:
        for cid in (first, second):
            runtime(state_root, "delete", "--force", cid)
    assert not _registry_holds(state_root / first) and not _registry_holds(state_root / second)
    assert left_behind(state_root, first) == [] and left_behind(state_root, second) == []


def test_the_root_keeps_its_owners_through_the_idmapped_mount(tmp_path, state_root):
    directory = _bundle(tmp_path, ["sh", "-c", "stat -c '%u:%g' /owned /bin/busybox; touch /made; "
                                   "stat -c '%u:%g' /made"], readonly=False)
    owned = directory / "rootfs" / "owned"
    owned.write_text("")
    os.chown(owned, 1234, 4321)
    done = runtime(state_root, "run", "--bundle", directory, _cid("root"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1234:4321", "0:0", "0:0"]
    # the root is the container's own (the engine's layer, or here the bundle's rootfs): what
    # container root writes there is on disk as the container sees it, as runc writes it
    made = os.stat(directory / "rootfs" / "made")
    assert (made.st_uid, made.st_gid) == (0, 0)


# ---------------------------------------------------------------- volumes

def _volume(tmp_path, owner, mode=0o755):
    volume = tmp_path / "volume"
    volume.mkdir()
    volume.chmod(mode)
    (volume / "theirs").write_text("")
    os.chown(volume / "theirs", *owner)
    os.chown(volume, *owner)
    return volume


def _with_volume(volume, options=("rbind", "rw"), user=None):
    def mutate(config):
        config["mounts"].append({"destination": "/data", "type": "bind", "source": str(volume),
                                 "options": list(options)})
        if user is not None:
            config["process"]["user"] = {"uid": user, "gid": user}
    return mutate


def test_a_volume_written_by_container_root_belongs_to_the_volumes_owner(tmp_path, state_root):
    volume = _volume(tmp_path, (1000, 1000))
    script = "touch /data/mine && mkdir /data/sub && stat -c '%u:%g' /data /data/theirs /data/mine"
    directory = _bundle(tmp_path, ["sh", "-c", script], mutate=_with_volume(volume))
    done = runtime(state_root, "run", "--bundle", directory, _cid("vol"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0:0", "0:0", "0:0"]  # inside, the volume's owner is root
    for name in ("mine", "sub"):
        info = os.stat(volume / name)
        assert (info.st_uid, info.st_gid) == (1000, 1000), name  # on the host, the volume's owner's


def test_a_volume_written_by_another_container_user_belongs_to_that_uid(tmp_path, state_root):
    volume = _volume(tmp_path, (2000, 2000))
    directory = _bundle(tmp_path, ["sh", "-c", "touch /data/mine && stat -c '%u:%g' /data/mine; "
                                   "touch /data/rootless 2>/dev/null || echo refused"],
                        mutate=_with_volume(volume, user=2000))
    done = runtime(state_root, "run", "--bundle", directory, _cid("vol2"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "2000:2000"
    info = os.stat(volume / "mine")
    assert (info.st_uid, info.st_gid) == (2000, 2000)  # as runc would write it, never the range's


def test_a_root_owned_volume_is_refused_read_write_and_shown_read_only(tmp_path, state_root, audit_log):
    volume = _volume(tmp_path, (0, 0))
    cid = _cid("rootvol")
    directory = _bundle(tmp_path, ["true"], mutate=_with_volume(volume))
    done = runtime(state_root, "run", "--bundle", directory, cid)
    assert done.returncode == 1
    assert f"config.json: mounts[7].source: {volume} is bound read-write and belongs to root" in done.stderr
    assert "floor rule volumes.root_owned" in done.stderr and f"chown -R UID:GID {volume}" in done.stderr
    assert left_behind(state_root, cid) == [] and not _registry_holds(state_root / cid)
    assert _records(audit_log, cid)[-1]["result"] == "refused"
    directory = _bundle(tmp_path, ["stat", "-c", "%u:%g", "/data/theirs"], "ro",
                        mutate=_with_volume(volume, ("rbind", "ro")))
    done = runtime(state_root, "run", "--bundle", directory, _cid("rovol"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0:0"  # read-only: on-disk owners as they are


# ---------------------------------------------------------------- refusals

def _device(path, kind, major, minor):
    def mutate(config):
        config["linux"].setdefault("devices", []).append({"path": path, "type": kind, "major": major,
                                                          "minor": minor})
    return mutate


def _bind(source, options=("rbind", "rw")):
    def mutate(config):
        config["mounts"].append({"destination": "/host", "type": "bind", "source": str(source),
                                 "options": list(options)})
    return mutate


def _drop_namespace(kind):
    def mutate(config):
        config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"] if n["type"] != kind]
    return mutate


def _cap(name):
    def mutate(config):
        for key in ("bounding", "effective", "permitted"):
            config["process"]["capabilities"][key].append(name)
    return mutate


REFUSALS = {
    "cap_sys_admin": (_cap("CAP_SYS_ADMIN"), "process.capabilities.bounding[3]: CAP_SYS_ADMIN is beyond the floor's "
                      "capabilities (floor rule capabilities)"),
    "cap_net_admin": (_cap("CAP_NET_ADMIN"), "CAP_NET_ADMIN is beyond the floor's capabilities"),
    "host_pid": (_drop_namespace("pid"), "linux.namespaces: no pid namespace: the container would share the host's "
                 "(floor rule namespaces.host)"),
    "host_network": (_drop_namespace("network"), "no network namespace"),
    "host_ipc": (_drop_namespace("ipc"), "no ipc namespace"),
    "host_uts": (_drop_namespace("uts"), "no uts namespace"),
    "kmsg": (_device("/dev/kmsg", "c", 1, 11), "linux.devices[0]: /dev/kmsg (c 1:11) is not one of the usual "
             "character devices (floor rule devices)"),
    "block_device": (_device("/dev/vda", "b", 254, 0), "linux.devices[0]: /dev/vda (b 254:0)"),
    "rw_etc": (_bind("/etc"), "mounts[7].source: /etc is a system directory: refused read-write (floor rule mounts)"),
    "rw_root": (_bind("/"), "mounts[7].source: the root directory: refused read-write"),
    "rw_proc": (_bind("/proc"), "/proc is a system directory: refused read-write"),
    "rw_sys": (_bind("/sys"), "/sys is a system directory: refused read-write"),
    "rw_dev": (_bind("/dev"), "/dev is a system directory: refused read-write"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_below_the_floor_is_refused_naming_the_field_and_the_rule(tmp_path, state_root, audit_log, case):
    mutate, expected = REFUSALS[case]
    cid = _cid("refuse")
    directory = _bundle(tmp_path, ["true"], mutate=mutate)
    log = tmp_path / "runtime.log"
    done = runtime(state_root, "run", "--bundle", directory, cid, log=log)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.startswith("sandbox-runtime: runtime floor: config.json: ") and expected in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert json.loads(log.read_text().splitlines()[-1])["level"] == "error"
    assert left_behind(state_root, cid) == [] and not _registry_holds(state_root / cid)
    record = _records(audit_log, cid)[-1]
    assert record["result"] == "refused" and any(d["action"] == "refused" for d in record["decisions"])


def test_a_runtime_socket_is_refused_even_read_only(tmp_path, state_root):
    sockets = tmp_path / "run"
    sockets.mkdir()
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(sockets / "docker.sock"))
        directory = _bundle(tmp_path, ["true"], mutate=_bind(sockets / "docker.sock", ("bind", "ro")))
        done = runtime(state_root, "run", "--bundle", directory, _cid("sock"))
    assert done.returncode == 1 and "is a container runtime socket" in done.stderr, done.stderr
    allowed = _floor(tmp_path, f'[paths]\nrw_allowed = ["{sockets / "docker.sock"}"]\n')
    assert "rw_allowed" in done.stderr
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(sockets / "docker.sock2"))
        os.rename(sockets / "docker.sock2", sockets / "docker.sock")
        done = runtime(state_root, "--floor", allowed, "run", "--bundle", directory, _cid("sock2"))
    assert done.returncode == 0, done.stderr


def test_privileged_is_refused(tmp_path, state_root):
    from test_oci_floor import _privileged_config
    directory = write_bundle(tmp_path / "priv", _privileged_config())
    done = runtime(state_root, "run", "--bundle", directory, _cid("priv"))
    assert done.returncode == 1 and "runtime floor: config.json:" in done.stderr and "more)" in done.stderr


# ---------------------------------------------------------------- modes and annotations

def test_warn_runs_below_the_floor_with_a_warning_in_the_log_and_the_audit_trail(tmp_path, state_root, audit_log):
    floor = _floor(tmp_path, 'mode = "warn"\n')
    cid = _cid("warn")
    directory = _bundle(tmp_path, ["grep", "CapEff", "/proc/self/status"], mutate=_cap("CAP_SYS_ADMIN"))
    log = tmp_path / "runtime.log"
    done = runtime(state_root, "--floor", floor, "run", "--bundle", directory, cid, log=log)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[1], 16) & (1 << 21)  # CAP_SYS_ADMIN, as asked (in its own user namespace)
    warnings = [json.loads(line) for line in log.read_text().splitlines() if '"warning"' in line]
    assert any("floor (warn): config.json: process.capabilities.bounding[3]: CAP_SYS_ADMIN" in w["msg"]
               for w in warnings), warnings
    record = _records(audit_log, cid)[-1]
    assert record["mode"] == "warn" and record["result"] == "created"
    assert any(d["action"] == "allowed" and d["rule"] == "capabilities" for d in record["decisions"])


def test_off_judges_nothing_and_says_so_in_every_audit_record(tmp_path, state_root, audit_log):
    floor = _floor(tmp_path, 'mode = "off"\n')
    cid = _cid("off")
    directory = _bundle(tmp_path, ["cat", "/proc/self/uid_map"])
    done = runtime(state_root, "--floor", floor, "run", "--bundle", directory, cid)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "0", "4294967295"]  # as runc: no user namespace
    record = _records(audit_log, cid)[-1]
    assert record["mode"] == "off" and "floor_off" in record
    assert [d["action"] for d in record["decisions"]] == ["off"]


def test_an_annotation_chooses_a_stricter_floor_never_a_weaker_one(tmp_path, state_root):
    floor = _floor(tmp_path, '[floors.loose.namespaces]\nhost = ["uts"]\n')

    def annotated(name, extra=None):
        def mutate(config):
            config["annotations"] = {"org.sandbox.floor": name}
            if extra:
                extra(config)
        return mutate
    strict_ok = _bundle(tmp_path, ["true"], "s1", annotated("strict", _cap("CAP_CHOWN")))
    done = runtime(state_root, "--floor", floor, "run", "--bundle", strict_ok, _cid("ann1"))
    assert done.returncode == 0, done.stderr
    strict_refused = _bundle(tmp_path, ["true"], "s2", annotated("strict", _cap("CAP_NET_RAW")))
    done = runtime(state_root, "--floor", floor, "run", "--bundle", strict_refused, _cid("ann2"))
    assert done.returncode == 1 and "CAP_NET_RAW is beyond the floor's capabilities" in done.stderr
    weaker = _bundle(tmp_path, ["true"], "s3", annotated("loose"))
    done = runtime(state_root, "--floor", floor, "run", "--bundle", weaker, _cid("ann3"))
    assert done.returncode == 1
    assert "annotations.org.sandbox.floor: floor 'loose' is not stricter than the runtime's floor" in done.stderr


# ---------------------------------------------------------------- exec and Landlock

def test_exec_is_held_to_the_floor(tmp_path, state_root):
    cid = _cid("exec")
    directory = _bundle(tmp_path, ["sleep", "30"], mutate=lambda c: c["process"].update(noNewPrivileges=False))
    steps = monitor(state_root, [
        ["create", "--bundle", str(directory), "--pid-file", str(tmp_path / "pid"), cid], ["start", cid],
        ["exec", cid, "grep", "-E", "NoNewPrivs|Seccomp_filters", "/proc/self/status"],
        ["exec", "--cap", "CAP_SYS_ADMIN", cid, "true"], ["delete", "--force", cid]])
    assert steps[0]["rc"] == 0 and steps[2]["rc"] == 0, steps
    assert steps[2]["stdout"].split() == ["NoNewPrivs:", "1", "Seccomp_filters:", "2"]
    assert steps[3]["rc"] == 1
    assert "runtime floor: process.json: capabilities.bounding[3]: CAP_SYS_ADMIN is beyond" in steps[3]["stderr"]


def test_landlock_keeps_descriptors_from_reaching_outside_the_container(tmp_path, state_root):
    """A descriptor of a host directory handed in (--preserve-fds) reaches outside the mount
    namespace; Landlock, derived from the container's mounts, refuses what lies beneath it."""
    results = {}
    off = _floor(tmp_path, 'landlock = false\n')
    for label, flags in (("landlock", []), ("no-landlock", ["--floor", str(off)])):
        cid = _cid(label)
        directory = _bundle(tmp_path, ["sleep", "30"], label)
        runtime_argv = " ".join(json.dumps(a) for a in runtime_command_for(state_root, flags))
        steps = monitor(state_root, [
            [*flags, "create", "--bundle", str(directory), "--pid-file", str(tmp_path / f"{label}.pid"), cid],
            ["start", cid]])
        assert steps[0]["rc"] == 0, steps
        try:
            done = subprocess.run(["sh", "-c", f"exec 3</etc; {runtime_argv} exec --preserve-fds 1 {cid} "
                                   "cat /proc/self/fd/3/hostname"], capture_output=True, text=True, timeout=60)
            results[label] = (done.returncode, done.stderr)
        finally:
            runtime(state_root, "delete", "--force", cid)
    assert results["no-landlock"][0] == 0, results
    assert results["landlock"][0] != 0 and "Permission denied" in results["landlock"][1], results


def runtime_command_for(state_root, flags):
    from oci_helpers import runtime_command
    return runtime_command() + ["--root", str(state_root), *flags]


# ---------------------------------------------------------------- proven from inside

def _verified_bundle(tmp_path, name="verify"):
    def mutate(config):
        config["annotations"] = {"org.sandbox.verify": "true"}
    return _bundle(tmp_path, ["echo", "workload ran"], name, mutate=mutate)


def test_the_probe_proves_the_floor_at_start(tmp_path, state_root, audit_log):
    require("system_python")
    cid = _cid("verify")
    done = runtime(state_root, "run", "--bundle", _verified_bundle(tmp_path), cid)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "workload ran"
    record = [r for r in audit.read(audit_log) if r.get("event") == "oci-verify" and r.get("container") == cid][-1]
    assert record["result"] == "verified" and record["checked"] >= 40


def test_a_broken_promise_refuses_start_and_the_workload_never_runs(tmp_path, state_root, audit_log):
    """A promise broken behind the floor's back (the recorded floor edited to promise a masked
    /proc/cpuinfo, which the container shows): the probe finds it, start fails, the workload
    never execs."""
    require("system_python")
    cid = _cid("broken")
    steps = monitor(state_root, [
        ["create", "--bundle", str(_verified_bundle(tmp_path)), "--pid-file", str(tmp_path / "pid"), cid]])
    assert steps[0]["rc"] == 0, steps
    from sandbox.oci.state import Container
    container = Container(str(state_root), cid).load()
    container.extra["floor"]["masked_paths"].append("/proc/cpuinfo")  # a promise the container does not keep
    container.save()
    steps = monitor(state_root, [["start", cid], ["state", cid], ["delete", "--force", cid]])
    start, status, _ = steps
    assert start["rc"] == 1 and "runtime floor: verify: proc.masked./proc/cpuinfo" in start["stderr"], start
    assert "not starting the workload" in start["stderr"]
    assert json.loads(status["stdout"])["status"] == "created"  # the workload still waits at the gate
    record = [r for r in audit.read(audit_log) if r.get("event") == "oci-verify" and r.get("container") == cid][-1]
    assert record["result"] == "refused"


# ---------------------------------------------------------------- the audit record

def test_every_create_is_recorded_with_its_config_digest_annotations_and_decisions(tmp_path, state_root, audit_log):
    cid = _cid("audit")

    def mutate(config):
        config["annotations"] = {"org.opencontainers.image.title": "busybox", "io.podman.annotations.label": "x"}
    directory = _bundle(tmp_path, ["true"], mutate=mutate)
    done = runtime(state_root, "run", "--bundle", directory, cid)
    assert done.returncode == 0, done.stderr
    record = _records(audit_log, cid)[-1]
    digest = hashlib.sha256((directory / "config.json").read_bytes()).hexdigest()
    assert record["config_digest"] == digest and record["bundle"] == str(directory)
    assert record["annotations"]["org.opencontainers.image.title"] == "busybox"
    assert record["floor"]["name"] == "default" and record["floor"]["source"] == "built-in"
    rules = {d["rule"] for d in record["decisions"]}
    assert {"user_namespace", "seccomp", "paths"} <= rules
    assert audit.verify(audit_log).ok
