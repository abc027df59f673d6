"""What a workload sees from inside the sandbox: real kernel, real launches, no mocks.

One launch of a probe script (system python, the venv is not inside) collects every fact as JSON;
the tests below each assert one property of it. A few properties need their own launch (the ci
profile's rw bind, symlinks in bind sources).
"""
from __future__ import annotations

import json
import os
import textwrap
import uuid

import pytest

import sandbox
from sandbox import mounts, namespaces
from sandbox.profile.model import DEFAULT_PATH, MASKED_PROC_PATHS

from conftest import BUILD_USER, machine, require

PY = "/usr/bin/python3"
HOST_SECRET_VAR = "SBX_TEST_HOST_SECRET"
LEAKED_FD = 77  # an inheritable fd the test process holds while launching
MARK = f"sbx-{uuid.uuid4().hex[:12]}"

PROBE = textwrap.dedent(r"""
    import errno, fcntl, json, os, socket, struct, sys
    out = {}
    def status():
        return dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    def err(fn):
        try:
            fn()
            return "ok"
        except OSError as exc:
            return errno.errorcode.get(exc.errno, str(exc.errno))
    st = status()
    out["uid"], out["gid"], out["groups"] = os.getuid(), os.getgid(), os.getgroups()
    out["status"] = {k: v.strip() for k, v in st.items()
                     if k.startswith(("Cap", "NoNewPrivs", "Seccomp", "Uid", "Gid", "Groups"))}
    out["uid_map"] = open("/proc/self/uid_map").read()
    out["gid_map"] = open("/proc/self/gid_map").read()
    out["setgroups"] = open("/proc/self/setgroups").read().strip()
    out["mountinfo"] = open("/proc/self/mountinfo").read()
    masked = {}
    for path in sys.argv[1].split(":"):
        if not os.path.lexists(path):
            continue
        if os.path.isdir(path):
            masked[path] = "dir:" + ",".join(os.listdir(path))
        else:
            try:
                with open(path, "rb") as handle:
                    masked[path] = "file:" + handle.read(64).hex()
            except PermissionError:  # /dev/null bound nodev: cannot even be opened
                masked[path] = "file:"
    out["masked"] = masked
    out["proc_sys_write"] = err(lambda: os.close(os.open("/proc/sys/kernel/hostname", os.O_WRONLY)))
    out["dev"] = sorted(os.listdir("/dev"))
    out["ifaces"] = [name for _, name in socket.if_nameindex()]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flags = fcntl.ioctl(s.fileno(), 0x8913, struct.pack("16sH14x", b"lo", 0))  # SIOCGIFFLAGS
    out["lo_flags"] = struct.unpack("16sH", flags[:18])[1]
    s.close()
    out["hostname"] = socket.gethostname()
    out["env"] = dict(os.environ)
    out["fds"] = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    out["fd_targets"] = {}
    for fd in out["fds"]:
        try:
            out["fd_targets"][fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    out["pid"], out["ppid"] = os.getpid(), os.getppid()
    out["sid"], out["pgid"] = os.getsid(0), os.getpgid(0)
    out["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    out["cgroup"] = open("/proc/self/cgroup").read().splitlines()
    out["ns"] = {n: os.stat(f"/proc/self/ns/{n}").st_ino for n in os.listdir("/proc/self/ns")}
    out["cwd"] = os.getcwd()
    out["writes"] = {p: err(lambda p=p: open(p, "w").close())
                     for p in ("/usr/sbx_probe", "/etc/sbx_probe", "/sbx_probe", "/etc/passwd",
                               "/etc/ld.so.cache")}
    out["mkdir_root"] = err(lambda: os.mkdir("/sbx_probe_dir"))
    mark = sys.argv[2]
    for path in (f"/tmp/{mark}", f"/dev/shm/{mark}"):
        with open(path, "w") as handle:
            handle.write("written inside")
    out["tmp_written"] = err(lambda: os.stat(f"/tmp/{mark}"))
    print(json.dumps(out))
""")


def _mountinfo(text: str) -> list[dict]:
    rows = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        fstype, source, super_options = (right.split() + ["", "", ""])[:3]
        rows.append({"id": fields[0], "parent": fields[1], "root": fields[3], "target": fields[4],
                     "options": set(fields[5].split(",")), "optional": fields[6:], "fstype": fstype,
                     "source": source, "super": super_options})
    return rows


@pytest.fixture(scope="module")
def probe_profile():
    return sandbox.profile_from_dict({"extends": "untrusted", "process": {"env": {"SBX_PROFILE_VAR": "present"}}})


@pytest.fixture(scope="module")
def inside(probe_profile, tmp_path_factory):
    """Launch the probe once; every test of this module reads its answer."""
    require("userns", "system_python")
    leaked = os.open("/etc/hostname" if os.path.exists("/etc/hostname") else "/", os.O_RDONLY)
    os.dup2(leaked, LEAKED_FD, inheritable=True)
    os.close(leaked)
    host_ns = namespaces.namespace_inodes()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(HOST_SECRET_VAR, "must-not-leak")
            mp.setenv("SANDBOX_AUDIT_LOG", str(tmp_path_factory.mktemp("audit") / "audit.jsonl"))
            masked = ":".join(p for p in MASKED_PROC_PATHS if p.startswith("/proc/"))
            result = sandbox.run(probe_profile, [PY, "-c", PROBE, masked, MARK], capture_output=True)
    finally:
        os.close(LEAKED_FD)
    assert result.exit_code == 0, result.stderr.decode()
    facts = json.loads(result.stdout)
    facts["host_ns"] = host_ns
    facts["result"] = result
    return facts


def test_ids_and_maps(inside):
    assert inside["uid"] == 65534 and inside["gid"] == 65534
    assert inside["groups"] in ([], [65534])
    assert inside["status"]["Groups"] == ""  # root's supplementary groups were dropped before unshare
    for name in ("uid_map", "gid_map"):
        lines = [line.split() for line in inside[name].splitlines()]
        assert lines, name
        for inside_id, host_id, count in lines:
            assert int(host_id) > 0, f"{name} maps to host 0: {inside[name]!r}"  # [host, host+count) misses 0
        if machine()["root"]:
            assert lines == [["65534", "65534", "1"]], f"{name}: {inside[name]!r}"
    assert inside["setgroups"] == "deny"


def test_capabilities_nnp_seccomp(inside):
    status = inside["status"]
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[name], 16) == 0, f"{name} = {status[name]}"
    assert status["NoNewPrivs"] == "1"
    require("seccomp")
    assert status["Seccomp"] == "2"


def test_namespaces_all_new(inside):
    host = inside["host_ns"]
    mine = inside["ns"]
    for name in ("user", "mnt", "pid", "net", "ipc", "uts", "cgroup", "time"):
        if name in host and name in mine:
            assert mine[name] != host[name], f"{name} namespace is the host's"


def test_mount_table_is_exactly_the_profile(inside, probe_profile):
    rows = _mountinfo(inside["mountinfo"])
    targets = [row["target"] for row in rows]
    plan = mounts.build_plan(probe_profile)
    required = {"/"}
    optional = set()
    for op in plan.operations:
        if isinstance(op, (mounts.Bind, mounts.Tmpfs, mounts.Proc, mounts.Devpts)):
            required.add(op.target)
        elif isinstance(op, (mounts.Mask, mounts.ReadOnly)):
            optional.add(op.target)  # present when the path exists on this kernel
    assert len(targets) == len(set(targets)), f"stacked mounts: {targets}"
    assert required <= set(targets), f"missing: {required - set(targets)}"
    assert set(targets) <= required | optional, f"unexpected mounts: {set(targets) - required - optional}"
    assert not any(t.startswith(("/oldroot", "/newroot")) for t in targets)
    for row in rows:
        assert not any(o.startswith(("shared:", "master:")) for o in row["optional"]), row
    by_target = {row["target"]: row for row in rows}
    for op in plan.operations:
        if isinstance(op, mounts.Bind) and op.readonly:
            assert {"ro", "nosuid", "nodev"} <= by_target[op.target]["options"], by_target[op.target]
        if isinstance(op, mounts.Bind) and op.devices:
            assert "noexec" in by_target[op.target]["options"]
    assert {"ro", "nosuid", "nodev"} <= by_target["/"]["options"]
    assert by_target["/"]["fstype"] == "tmpfs"
    for target in ("/tmp", "/proc", "/dev", "/dev/shm"):
        assert {"nosuid", "nodev"} <= by_target[target]["options"], target
    assert "ro" in by_target["/proc/sys"]["options"]


def test_masked_proc_paths_are_empty(inside):
    assert inside["masked"], "no masked path exists on this kernel?"
    for path, content in inside["masked"].items():
        assert content in ("dir:", "file:"), f"{path} is readable: {content[:40]}"


def test_proc_sys_is_read_only(inside):
    assert inside["proc_sys_write"] in ("EROFS", "EACCES")


def test_dev_is_minimal(inside, probe_profile):
    expected = set(probe_profile.filesystem.devices) | {"pts", "ptmx", "shm", "fd", "stdin", "stdout", "stderr"}
    assert set(inside["dev"]) == expected


def test_network_is_loopback_only_and_up(inside):
    assert inside["ifaces"] == ["lo"]
    assert inside["lo_flags"] & 0x1, "lo is down"  # IFF_UP


def test_hostname(inside, probe_profile):
    assert inside["hostname"] == probe_profile.process.hostname == "sandbox"


def test_environment(inside):
    env = inside["env"]
    assert HOST_SECRET_VAR not in env
    assert env["SBX_PROFILE_VAR"] == "present"
    assert env["PATH"] == DEFAULT_PATH
    assert env["HOME"] == "/tmp" and env["LANG"] == "C.UTF-8" and env["TERM"] == "dumb"
    assert set(env) <= {"PATH", "HOME", "LANG", "TERM", "SBX_PROFILE_VAR", "LC_CTYPE"}, sorted(env)


def test_no_inherited_fds(inside):
    # the only fd beyond 0-2 is the one listdir("/proc/self/fd") itself had open
    extra = [fd for fd in inside["fds"] if fd > 2]
    assert LEAKED_FD not in inside["fds"]
    assert len(extra) <= 1, inside["fd_targets"]
    for fd in extra:
        assert inside["fd_targets"].get(str(fd), "/proc").startswith("/proc"), inside["fd_targets"]


def test_new_session_and_pid_layout(inside):
    assert inside["pid"] == 2, "the workload is not pid 2"
    assert inside["ppid"] == 1, "the workload's parent is not our init"
    assert inside["sid"] == inside["pid"] == inside["pgid"], "the workload does not lead its own session"
    assert os.getsid(0) != inside["sid"] or inside["ns"]["pid"] != inside["host_ns"]["pid"]
    assert inside["pids"][:2] == [1, 2] and len(inside["pids"]) == 2, inside["pids"]


def test_cgroup_namespace_root(inside):
    assert inside["cgroup"] and all(line.endswith(":/") for line in inside["cgroup"]), inside["cgroup"]


def test_read_only_binds_and_root(inside):
    writes = inside["writes"]
    assert writes == {p: "EROFS" for p in writes}, writes
    assert inside["mkdir_root"] == "EROFS"
    assert inside["cwd"] == "/tmp"


def test_writes_inside_stay_inside(inside):
    assert inside["tmp_written"] == "ok"  # the sandbox's /tmp is writable ...
    assert not os.path.exists(f"/tmp/{MARK}")  # ... and is not the host's
    assert not os.path.exists(f"/dev/shm/{MARK}")


# ---------------------------------------------------------------- the ci profile's rw bind

CI_PROBE = textwrap.dedent(r"""
    import errno, json, os, sys
    mark = sys.argv[1]
    out = {"cwd": os.getcwd()}
    with open("/workspace/out.txt", "w") as handle:
        handle.write("from inside")
    os.mkdir("/workspace/subdir")
    out["inside_owner"] = os.stat("/workspace/out.txt").st_uid
    with open(f"/tmp/{mark}", "w") as handle:
        handle.write("tmpfs")
    try:
        open("/usr/" + mark, "w")
        out["usr"] = "ok"
    except OSError as exc:
        out["usr"] = errno.errorcode[exc.errno]
    out["mount"] = [l for l in open("/proc/self/mountinfo") if " /workspace " in l]
    print(json.dumps(out))
""")


def test_ci_rw_bind_is_the_only_way_out(tmp_path, monkeypatch):
    require("userns", "system_python")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "existing").write_text("host file")
    if machine()["root"]:
        os.chown(workspace, BUILD_USER, BUILD_USER)  # a CI checkout belongs to a build user
    monkeypatch.chdir(workspace)
    mark = f"ci-{uuid.uuid4().hex[:10]}"
    result = sandbox.run("ci", [PY, "-c", CI_PROBE, mark], capture_output=True)
    assert result.exit_code == 0, result.stderr.decode()
    out = json.loads(result.stdout)
    assert out["cwd"] == "/workspace"
    assert out["usr"] == "EROFS"
    assert len(out["mount"]) == 1 and " rw," in out["mount"][0] and "nosuid" in out["mount"][0]
    assert (workspace / "out.txt").read_text() == "from inside"
    assert (workspace / "subdir").is_dir()
    assert sorted(os.listdir(workspace)) == ["existing", "out.txt", "subdir"]
    assert not os.path.exists(f"/tmp/{mark}")
    owner = workspace.stat()
    for name in ("out.txt", "subdir"):
        info = (workspace / name).stat()
        if machine()["root"]:
            # idmapped mount: on disk the files belong to the directory's owner (the build user) ...
            assert (info.st_uid, info.st_gid) == (owner.st_uid, owner.st_gid) == (BUILD_USER, BUILD_USER), name
        else:
            assert info.st_uid == os.getuid()
    if machine()["root"]:
        assert "idmapped" in out["mount"][0]
        assert out["inside_owner"] == 65534  # ... and to the sandbox user as seen inside


# ---------------------------------------------------------------- symlinks in bind sources

SYMLINK_PROBE = textwrap.dedent(r"""
    import json, os, sys
    mark = sys.argv[1]
    out = {"via_link": open(f"/data/link/{mark}/flag").read(),
           "in_sandbox_tmp": open(f"/tmp/{mark}/flag").read(),
           "mounts": [l.split()[4] for l in open("/proc/self/mountinfo")]}
    print(json.dumps(out))
""")


def test_absolute_symlink_in_bind_source_cannot_redirect_a_mount(world_dir):
    """/data/link -> /tmp (absolute) in a bound host tree: a mount at /data/link/X must land in the
    sandbox's /tmp, resolved inside the new root, never at the host's /tmp/X."""
    require("userns", "system_python")
    mark = f"sym-{uuid.uuid4().hex[:10]}"
    tree = world_dir / f"tree-{mark}"
    payload = world_dir / f"payload-{mark}"
    tree.mkdir(mode=0o755)
    payload.mkdir(mode=0o755)
    (payload / "flag").write_text("payload")
    os.chmod(payload / "flag", 0o644)
    os.symlink("/tmp", tree / "link")
    profile = sandbox.profile_from_dict({"extends": "untrusted", "filesystem": {"mounts": [
        {"source": str(tree), "target": "/data"},
        {"source": str(payload), "target": f"/data/link/{mark}"}]}})
    result = sandbox.run(profile, [PY, "-c", SYMLINK_PROBE, mark], capture_output=True)
    assert result.exit_code == 0, result.stderr.decode()
    out = json.loads(result.stdout)
    assert out["via_link"] == out["in_sandbox_tmp"] == "payload"
    assert f"/tmp/{mark}" in out["mounts"]
    assert not os.path.lexists(f"/tmp/{mark}"), "the mount point was created on the host"
    assert sorted(os.listdir(tree)) == ["link"]
    assert os.readlink(tree / "link") == "/tmp"


def test_symlink_to_host_only_path_fails_inside_the_root(world_dir):
    """A link to a path that exists only on the host resolves inside the new root (where it does not
    exist): the launch fails at the mount step, and nothing is created at the host path."""
    require("userns")
    mark = f"esc-{uuid.uuid4().hex[:10]}"
    tree = world_dir / f"tree-{mark}"
    escape = world_dir / f"escape-{mark}"
    tree.mkdir(mode=0o755)
    escape.mkdir(mode=0o777)
    os.symlink(str(escape), tree / "link")
    profile = sandbox.profile_from_dict({"extends": "untrusted", "filesystem": {"mounts": [
        {"source": str(tree), "target": "/data"},
        {"source": "/usr/bin", "target": "/data/link/sub"}]}})
    with pytest.raises(sandbox.SetupError) as info:
        sandbox.run(profile, ["/bin/true"], capture_output=True)
    assert info.value.step == "mount"
    assert "/data/link/sub" in info.value.message
    assert os.listdir(escape) == []
    assert not any(line.split()[4].startswith(str(escape)) for line in open("/proc/self/mountinfo"))
