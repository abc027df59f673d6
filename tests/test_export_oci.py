"""`sandbox export --format oci` and `sandbox import oci`: the mapping of every profile key, the
bundle run by runc with the probe compared check by check with `sandbox verify`, and round trips."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest
import tomli_w

from conftest import as_nobody, require

import sandbox
from sandbox.export import ExportError, Warnings
from sandbox.export.oci import oci_config, write_bundle
from sandbox.export.oci_import import import_oci
from sandbox.lint import lint
from sandbox.plan import build_env
from sandbox.profile.load import profile_from_dict
from sandbox.profile.model import MASKED_PROC_PATHS, READONLY_PROC_PATHS

RELAXED = {  # a profile that moves off most defaults, to see each key carried over
    "extends": "untrusted", "name": "relaxed",
    "process": {"user": 1000, "group": 1000, "umask": "0077", "hostname": "box", "env": {"A": "1"}},
    "namespaces": {"ipc": False},
    "filesystem": {"devices": ["null", "zero", "full", "random", "urandom", "tty", "fuse"],
                   "masked_paths": ["/etc/hosts"], "readonly_paths": ["/tmp/ro"],
                   "tmpfs": [{"target": "/tmp", "size": "32M", "noexec": True}],
                   "dev_shm_size": "8M"},
    "limits": {"memory": "256M", "swap": "64M", "cpus": 0.5, "cpu_weight": 200, "pids": 64,
               "io_weight": 300, "io_max": [{"device": "7:0", "read_bps": "10M", "write_iops": 100}],
               "timeout": "90s", "kill_after": "1s", "required": ["memory"], "optional": ["cpus"],
               "rlimits": {"nofile": [256, 512], "fsize": "unlimited"}},
    "capabilities": {"keep": ["CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN"]},
    "landlock": {"enabled": False}, "audit": {"enabled": False},
}


def _config(profile, argv=("/usr/bin/true",), **kwargs):
    warnings = Warnings()
    config, layout = oci_config(profile, list(argv), warnings=warnings, **kwargs)
    return config, layout, list(warnings)


def _mount(config, destination):
    found = [m for m in config["mounts"] if m["destination"] == destination]
    assert len(found) == 1, (destination, config["mounts"])
    return found[0]


def test_untrusted_maps_to_a_confined_bundle():
    config, layout, warnings = _config(sandbox.load_profile("untrusted"))
    linux, process = config["linux"], config["process"]
    assert [n["type"] for n in linux["namespaces"]] == ["user", "mount", "pid", "network", "ipc", "uts",
                                                        "cgroup", "time"]
    # One id each way, container root as that id (runc needs root mapped), never host root.
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": 65534, "size": 1}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": 65534, "size": 1}]
    assert process["user"] == {"uid": 0, "gid": 0, "umask": 0o022}
    assert process["noNewPrivileges"] is True and process["terminal"] is False
    assert all(process["capabilities"][s] == [] for s in ("bounding", "effective", "permitted", "inheritable",
                                                          "ambient"))
    assert {"type": "RLIMIT_CORE", "soft": 0, "hard": 0} in process["rlimits"]
    assert {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024} in process["rlimits"]
    assert process["env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/tmp",
                              "LANG=C.UTF-8", "TERM=dumb"]
    assert process["cwd"] == "/tmp" and config["hostname"] == "sandbox"
    assert config["root"] == {"path": "rootfs", "readonly": True}
    usr = _mount(config, "/usr")
    assert usr["type"] == "bind" and usr["source"] == "/usr"
    assert {"rbind", "ro", "nosuid", "nodev", "rro", "rnosuid", "rnodev"} <= set(usr["options"])
    tmp = _mount(config, "/tmp")
    assert tmp["type"] == "tmpfs" and {"nosuid", "nodev", "size=128m", "mode=1777"} <= set(tmp["options"])
    assert _mount(config, "/proc")["type"] == "proc"
    assert _mount(config, "/dev")["type"] == "tmpfs" and _mount(config, "/dev/pts")["type"] == "devpts"
    assert "size=64m" in _mount(config, "/dev/shm")["options"]
    assert set(linux["maskedPaths"]) == {p for p in MASKED_PROC_PATHS if p.startswith("/proc/")}
    assert set(linux["readonlyPaths"]) == set(READONLY_PROC_PATHS) | {"/dev"}
    assert linux["resources"]["memory"] == {"limit": 512 << 20, "swap": 512 << 20}
    assert linux["resources"]["pids"] == {"limit": 128}
    assert linux["resources"]["cpu"] == {"quota": 100000, "period": 100000}
    assert linux["resources"]["devices"][0] == {"allow": False, "access": "rwm"}
    assert linux["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert linux["seccomp"]["architectures"] == ["SCMP_ARCH_X86_64"] or os.uname().machine != "x86_64"
    # The rootfs layout: links and small files written in, mount points made.
    kinds = {path: kind for kind, path, _, _ in layout}
    assert kinds["/bin"] == "link" and kinds["/usr"] == "dir" and kinds["/etc/passwd"] == "file"
    assert kinds["/tmp"] == "dir" and kinds["/proc"] == "dir" and "/dev/pts" not in kinds
    # What OCI cannot say is a warning, never dropped silently.
    for key in ("landlock:", "audit:", "process.user:"):
        assert any(w.startswith(key) for w in warnings), (key, warnings)
    assert json.loads(config["annotations"]["sandbox.landlock"])["enabled"] is True


def test_relaxed_profile_keys_are_each_carried_over():
    profile = profile_from_dict(RELAXED)
    config, layout, warnings = _config(profile)
    linux, process = config["linux"], config["process"]
    assert "ipc" not in [n["type"] for n in linux["namespaces"]]
    assert process["user"]["umask"] == 0o077 and config["hostname"] == "box"
    assert process["capabilities"]["bounding"] == ["CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN"]
    assert process["capabilities"]["ambient"] == ["CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN"]
    assert {"type": "RLIMIT_NOFILE", "soft": 256, "hard": 512} in process["rlimits"]
    assert {"type": "RLIMIT_FSIZE", "soft": (1 << 64) - 1, "hard": (1 << 64) - 1} in process["rlimits"]
    assert "A=1" in process["env"]
    res = linux["resources"]
    assert res["memory"] == {"limit": 256 << 20, "swap": 320 << 20}
    assert res["cpu"] == {"quota": 50000, "period": 100000, "shares": 2048}
    assert res["pids"] == {"limit": 64}
    assert res["blockIO"] == {"weight": 300, "throttleReadBpsDevice": [{"major": 7, "minor": 0, "rate": 10 << 20}],
                              "throttleWriteIOPSDevice": [{"major": 7, "minor": 0, "rate": 100}]}
    if os.path.exists("/dev/fuse"):
        assert [d["path"] for d in linux["devices"]] == ["/dev/fuse"]
        assert any(rule.get("major") == 10 and rule.get("minor") == 229 for rule in res["devices"])
    assert "/etc/hosts" in linux["maskedPaths"] and "/tmp/ro" in linux["readonlyPaths"]
    assert "noexec" in _mount(config, "/tmp")["options"] and "size=32m" in _mount(config, "/tmp")["options"]
    assert "size=8m" in _mount(config, "/dev/shm")["options"]
    assert any(w.startswith("limits.timeout:") for w in warnings)
    assert any(w.startswith("limits.cpu_weight:") for w in warnings)
    assert not any(w.startswith("landlock:") for w in warnings)  # disabled: nothing is lost


def test_network_host_and_rw_binds(world_dir):
    (world_dir / "work").mkdir()
    profile = profile_from_dict({"extends": "untrusted", "network": {"mode": "host"},
                                 "namespaces": {"network": False},
                                 "filesystem": {"mounts": [{"source": str(world_dir / "work"), "target": "/work",
                                                            "mode": "rw", "noexec": True}]}})
    config, _, warnings = _config(profile)
    assert "network" not in [n["type"] for n in config["linux"]["namespaces"]]
    work = _mount(config, "/work")
    assert {"rw", "nosuid", "nodev", "noexec", "rnoexec"} <= set(work["options"]) and "ro" not in work["options"]
    assert any("idmapped" in w for w in warnings)


def test_compat_runc_leaves_out_the_time_namespace_with_a_warning():
    config, _, warnings = _config(sandbox.load_profile("untrusted"), compat="runc-1.1")
    assert "time" not in [n["type"] for n in config["linux"]["namespaces"]]
    assert any(w.startswith("namespaces.time:") for w in warnings)


def test_profiles_that_cannot_be_bundles_are_refused():
    with pytest.raises(ExportError, match="namespaces.mount"):
        untrusted = sandbox.load_profile("untrusted")
        _config(dataclasses.replace(untrusted, namespaces=dataclasses.replace(untrusted.namespaces, mount=False)))
    with pytest.raises(ExportError, match="no process.command"):
        _config(profile_from_dict({"extends": "untrusted", "process": {"command": []}}), argv=())


def test_cli_export_writes_a_bundle_and_warns(sandbox_cli, tmp_path):
    out = tmp_path / "bundle"
    done = sandbox_cli("export", "untrusted", "--format", "oci", "-o", str(out), "--", "/usr/bin/id")
    assert done.returncode == 0, done.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["process"]["args"] == ["/usr/bin/id"]
    assert (out / "rootfs" / "etc" / "passwd").read_text().startswith("root:x:0:0")
    assert os.readlink(out / "rootfs" / "bin") == "usr/bin"
    assert "sandbox: warning: oci: landlock:" in done.stderr
    # Bad input: one line, exit 125, nothing written.
    (tmp_path / "file").write_text("")
    done = sandbox_cli("export", "untrusted", "--format", "oci", "-o", str(tmp_path / "file"))
    assert done.returncode == 125 and "expected a directory" in done.stderr and "Traceback" not in done.stderr
    done = sandbox_cli("export", "untrusted", "--format", "oci", "-o", str(out))
    assert done.returncode == 125 and "not empty" in done.stderr
    done = sandbox_cli("export", "untrusted", "--format", "oci")
    assert done.returncode == 125 and "-o DIR is required" in done.stderr
    done = sandbox_cli("export", "untrusted", "--format", "oci", "--image", "x", "-o", str(tmp_path / "b2"))
    assert done.returncode == 125 and "--image applies only" in done.stderr


def test_rootless_export_by_root_must_name_the_user(sandbox_cli, tmp_path):
    require("root")
    done = sandbox_cli("export", "untrusted", "--format", "oci", "--rootless", "-o", str(tmp_path / "b"))
    assert done.returncode == 125 and "process.host_user" in done.stderr


def test_rootless_export_maps_the_caller(world_dir, rootless):
    out = world_dir / "b"
    out.mkdir()
    os.chown(out, 65534, 65534)
    done = as_nobody([rootless.sandbox, "export", "untrusted", "--format", "oci", "--rootless",
                      "-o", str(out)], cwd="/tmp")
    assert done.returncode == 0, done.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 65534, "size": 1}]


# ---------------------------------------------------------------- runc runs the bundle


def _bundle_vs_verify(profile, runtime):
    from sandbox.export.verify import compare, known_differences, verify_bundle
    from sandbox.verify import verify_profile
    compat = "runc-1.1" if runtime == ["runc"] else None
    bundle = verify_bundle(profile, runtime, compat=compat)
    assert bundle["results"], f"the probe did not report (exit {bundle['exit_code']}): {bundle['stderr']}"
    assert not any(r["id"] == "outside.unavailable" for r in bundle["results"]), bundle["stderr"]
    assert len(bundle["results"]) >= 40 and any(r["id"].startswith("outside.") for r in bundle["results"])
    ours = verify_profile(profile)
    return compare(ours.results, bundle["results"], known_differences(bundle["warnings"]))


def _sandbox_runtime() -> list[list[str]]:
    """sandbox-runtime once it is installed with the package (beside this interpreter, or on PATH)."""
    beside = os.path.join(os.path.dirname(sys.executable), "sandbox-runtime")
    found = beside if os.access(beside, os.X_OK) else shutil.which("sandbox-runtime")
    return [[found]] if found else []


RUNTIMES = [["runc"]] + _sandbox_runtime()


@pytest.mark.parametrize("runtime", RUNTIMES, ids=lambda r: os.path.basename(r[0]))
@pytest.mark.parametrize("name", ["untrusted", "ci"])
def test_bundle_under_runtime_probes_like_sandbox_verify(name, runtime, tmp_path, monkeypatch):
    require("root", "userns", "seccomp", "system_python", *(["runc"] if runtime == ["runc"] else []))
    monkeypatch.chdir(tmp_path)  # ci binds ${CWD} read-write
    os.chmod(tmp_path, 0o755)
    explained, unexplained = _bundle_vs_verify(sandbox.load_profile(name), runtime)
    if runtime == ["runc"]:  # the documented ones (docs/oci.md) do show
        assert any(line.startswith("mount.ro./:") for line in explained), explained
    assert not unexplained, "differences with no known reason:\n" + "\n".join(unexplained)


def test_relaxed_bundle_under_runc_probes_like_sandbox_verify():
    require("root", "userns", "seccomp", "system_python", "runc")
    relaxed = dict(RELAXED, capabilities={"keep": ["CAP_NET_BIND_SERVICE"]},
                   filesystem={**RELAXED["filesystem"], "readonly_paths": []})
    explained, unexplained = _bundle_vs_verify(profile_from_dict(relaxed), ["runc"])
    assert not unexplained, "differences with no known reason:\n" + "\n".join(unexplained)


# ---------------------------------------------------------------- import


def _round_trip(profile, tmp_path):
    bundle = tmp_path / "bundle"
    write_bundle(profile, str(bundle))
    text, warnings, findings = import_oci(str(bundle / "config.json"), output_name="back.toml")
    (tmp_path / "back.toml").write_text(text)
    return sandbox.load_profile(str(tmp_path / "back.toml")), warnings, findings


def _same_profile(a, b):
    """Equal as launched: same effective environment, same entries regardless of listing order."""
    def norm(p):
        fs = p.filesystem
        return dataclasses.replace(
            p, name="", description="", source="", lineage=(), extends=None,
            process=dataclasses.replace(p.process, env=tuple(sorted(build_env(p, environ={}).items()))),
            filesystem=dataclasses.replace(fs, mounts=tuple(sorted(fs.mounts, key=lambda m: m.target.count("/"))),
                                           symlinks=tuple(sorted(fs.symlinks, key=lambda s: s.target)),
                                           files=tuple(sorted(fs.files, key=lambda f: f.target))))
    assert norm(a) == norm(b)


OTHERS = {
    "relaxed": RELAXED,
    "host-network": {"extends": "ci", "network": {"mode": "host"}},
    "host-network-no-ns": {"extends": "untrusted", "network": {"mode": "host"}, "namespaces": {"network": False}},
    "minimal": {"extends": "untrusted", "filesystem": {"dev": False, "proc": False},
                "namespaces": {"pid": False, "time": False}, "seccomp": {"policy": "strict"},
                "limits": {"memory": "unlimited", "pids": "unlimited", "rlimits": {"core": "unlimited"}}},
    "unconfined": {"extends": "untrusted", "seccomp": {"policy": "unconfined"}, "process": {"user": 0, "group": 0}},
}


@pytest.mark.parametrize("name", ["untrusted", "ci", *OTHERS])
def test_export_then_import_gives_an_equivalent_profile(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if name in OTHERS:  # from a file, as users have them (load_profile records the extends chain)
        (tmp_path / f"{name}.toml").write_text(tomli_w.dumps({"name": name, **OTHERS[name]}))
        profile = sandbox.load_profile(str(tmp_path / f"{name}.toml"))
    else:
        profile = sandbox.load_profile(name)
    back, warnings, findings = _round_trip(profile, tmp_path)
    _same_profile(profile, back)
    assert sorted(map(str, findings)) == sorted(map(str, lint(profile)))
    assert sorted(map(str, lint(back))) == sorted(map(str, lint(profile)))
    assert back.name == profile.name and back.seccomp == profile.seccomp


def test_round_trip_verifies_the_same(tmp_path):
    require("userns", "seccomp", "system_python")
    from sandbox.verify import verify_profile
    profile = sandbox.load_profile("untrusted")
    back, _, _ = _round_trip(profile, tmp_path)
    before = {r["id"]: r["status"] for r in verify_profile(profile).results}
    after = {r["id"]: r["status"] for r in verify_profile(back).results}
    assert before == after


def test_an_edited_seccomp_section_is_imported_from_the_config(tmp_path):
    bundle = tmp_path / "bundle"
    write_bundle(sandbox.load_profile("untrusted"), str(bundle))
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["seccomp"]["syscalls"].append({"names": ["ptrace"], "action": "SCMP_ACT_ALLOW"})
    (bundle / "config.json").write_text(json.dumps(config))
    text, warnings, findings = import_oci(str(bundle / "config.json"))
    back = profile_from_dict(__import__("tomllib").loads(text))
    assert any("changed since the export" in w for w in warnings)
    assert back.seccomp.name == "imported" and back.seccomp != sandbox.load_profile("untrusted").seccomp


def test_import_of_runcs_own_spec_warns_about_what_a_profile_cannot_say(tmp_path):
    require("runc")
    subprocess.run(["runc", "spec"], cwd=tmp_path, check=True)
    (tmp_path / "rootfs").mkdir()
    config = json.loads((tmp_path / "config.json").read_text())
    config["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    config["linux"]["namespaces"].append({"type": "network", "path": "/run/netns/x"})
    config["process"]["oomScoreAdj"] = 100
    config["hooks"] = {"prestart": [{"path": "/bin/true"}]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    text, warnings, findings = import_oci(str(tmp_path / "config.json"), output_name="spec.toml")
    profile = profile_from_dict(__import__("tomllib").loads(text))
    joined = "\n".join(warnings)
    assert "runs the workload as host root" in joined  # runc spec: uid 0, no user namespace
    assert profile.namespaces.user and profile.process.user == 0
    assert "joins /run/netns/x" in joined and "oomScoreAdj" in joined and "hooks" in joined
    assert "process.terminal" in joined and "union" in joined
    assert "CAP_SYS_ADMIN" in profile.capabilities.keep
    assert any(f.severity == "danger" and "CAP_SYS_ADMIN" in f.message for f in findings)
    assert profile.seccomp is None and any(f.key == "seccomp" and f.severity == "danger" for f in findings)
    assert profile.limits.memory is None and profile.limits.pids is None


def test_cli_import_oci(sandbox_cli, tmp_path):
    bundle = tmp_path / "bundle"
    write_bundle(profile_from_dict(RELAXED), str(bundle))
    out = tmp_path / "back.toml"
    done = sandbox_cli("import", "oci", str(bundle / "config.json"), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert any(line.startswith("sandbox: lint: danger") and "capabilities.keep: CAP_SYS_ADMIN" in line
               for line in done.stderr.splitlines()), done.stderr
    assert sandbox_cli("check", str(out)).returncode == 0
    (tmp_path / "bad.json").write_text("{}")
    done = sandbox_cli("import", "oci", str(tmp_path / "bad.json"))
    assert done.returncode == 125 and "process object" in done.stderr and "Traceback" not in done.stderr


def test_rootless_bundle_runs_under_rootless_runc(world_dir, rootless):
    """Exported and run by an unprivileged user. This machine's cgroups are v1 without delegation,
    where rootless runc cannot apply limits at all (on cgroup v2 with a delegated subtree it can):
    the limits are taken out of the config for this run, everything else is as exported."""
    require("rootless", "runc", "seccomp", "system_python")
    os.chown(world_dir, 65534, 65534)
    bundle = world_dir / "b"
    script = "cat /proc/self/uid_map; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; touch /x"
    done = as_nobody([rootless.sandbox, "export", "untrusted", "--format", "oci", "--rootless",
                      "--compat", "runc-1.1", "-o", str(bundle), "--", "/bin/sh", "-c", script], cwd="/tmp")
    assert done.returncode == 0, done.stderr
    config = json.loads((bundle / "config.json").read_text())
    del config["linux"]["resources"]
    (bundle / "config.json").write_text(json.dumps(config))
    ran = as_nobody(["runc", "--root", str(world_dir / "state"), "run", "--bundle", str(bundle), "t"],
                    env={"XDG_RUNTIME_DIR": str(world_dir), "PATH": os.environ["PATH"]},
                    stdin=subprocess.DEVNULL, timeout=60)
    assert ran.stdout.split()[:3] == ["0", "65534", "1"], ran.stdout + ran.stderr
    assert "CapEff:\t0000000000000000" in ran.stdout and "NoNewPrivs:\t1" in ran.stdout
    assert "Seccomp:\t2" in ran.stdout and "Read-only file system" in ran.stderr


# ---------------------------------------------------------------- attacks on export and import


def test_import_refuses_a_mapping_to_host_root(tmp_path):
    bundle = tmp_path / "bundle"
    write_bundle(sandbox.load_profile("untrusted"), str(bundle))
    config = json.loads((bundle / "config.json").read_text())
    for key in ("uidMappings", "gidMappings"):
        config["linux"][key] = [{"containerID": 0, "hostID": 0, "size": 1}]
    config["annotations"] = {}
    (bundle / "config.json").write_text(json.dumps(config))
    from sandbox.export.oci_import import ImportError_
    with pytest.raises(ImportError_, match="host root"):
        import_oci(str(bundle / "config.json"))


def test_import_never_reads_through_a_symlink_in_rootfs(tmp_path):
    """A bundle's rootfs/etc/passwd that links to a root-only host file stays a link inside the
    sandbox: an import run by root must not copy the host file's content into the profile."""
    secret = tmp_path / "secret"
    secret.write_text("host secret\n")
    os.chmod(secret, 0o600)
    bundle = tmp_path / "bundle"
    write_bundle(sandbox.load_profile("untrusted"), str(bundle))
    passwd = bundle / "rootfs" / "etc" / "passwd"
    passwd.unlink()
    passwd.symlink_to(secret)
    text, warnings, _ = import_oci(str(bundle / "config.json"))
    assert "host secret" not in text
    profile = profile_from_dict(__import__("tomllib").loads(text))
    assert any(s.target == "/etc/passwd" and s.points_to == str(secret) for s in profile.filesystem.symlinks)


def test_export_never_writes_through_a_directory_someone_else_controls(world_dir):
    """An export by root into a directory another user owns (or a symlink to one) could be
    redirected by swapping entries for symlinks: refused, nothing written."""
    require("root")
    foreign = world_dir / "foreign"
    foreign.mkdir()
    os.chown(foreign, 65534, 65534)
    with pytest.raises(ExportError, match="belongs to uid 65534"):
        write_bundle(sandbox.load_profile("untrusted"), str(foreign))
    target = world_dir / "elsewhere"
    target.mkdir()
    (world_dir / "link").symlink_to(target)
    with pytest.raises(ExportError, match="symlink"):
        write_bundle(sandbox.load_profile("untrusted"), str(world_dir / "link"))
    assert not os.listdir(foreign) and not os.listdir(target)


def test_host_directory_root_and_sys(world_dir):
    root = world_dir / "root"
    for sub in ("usr", "proc", "dev", "tmp", "sys"):
        (root / sub).mkdir(parents=True)
    profile = profile_from_dict({"extends": "untrusted", "filesystem": {"root": str(root), "sys": True,
                                                                        "mounts": [], "symlinks": [], "files": []}})
    config, layout, warnings = _config(profile)
    assert config["root"] == {"path": str(root), "readonly": True} and layout == []
    sys_mount = _mount(config, "/sys")
    assert sys_mount["type"] == "bind" and {"ro", "nosuid", "nodev", "noexec"} <= set(sys_mount["options"])
    assert "/sys/firmware" in config["linux"]["maskedPaths"]


# ---------------------------------------------------------------- the keys added since: exec, secrets, image


def test_secrets_exec_and_audit_are_warned_and_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "token").write_text("s3cret\n")
    data = {"name": "keys", "extends": "untrusted",
            "exec": {"allow": ["/usr/bin/python3*", "/usr/lib/**"]},
            "secrets": [{"name": "token", "file": str(tmp_path / "token")}, {"name": "api", "env": "API_KEY"}],
            "audit": {"required": True, "syslog": True}}
    (tmp_path / "keys.toml").write_text(tomli_w.dumps(data))
    profile = sandbox.load_profile(str(tmp_path / "keys.toml"))
    config, layout, warnings = _config(profile)
    assert any(w.startswith("secrets:") for w in warnings) and any(w.startswith("exec.allow:") for w in warnings)
    assert not any(m["destination"].startswith("/run/secrets") for m in config["mounts"])
    assert not any(path.startswith("/run/secrets") for _, path, _, _ in layout)
    assert "s3cret" not in json.dumps(config)  # never on disk
    back, _, findings = _round_trip(profile, tmp_path)
    _same_profile(profile, back)
    assert sorted(map(str, findings)) == sorted(map(str, lint(profile)))


def test_a_profile_running_an_image_is_refused_with_the_way_out():
    profile = sandbox.load_profile("untrusted")
    image = dataclasses.replace(profile.image, ref="docker://registry.example/app:1")
    with pytest.raises(ExportError, match="--format kubernetes"):
        _config(dataclasses.replace(profile, image=image))


@pytest.mark.parametrize("policy", ["default", "strict"])
def test_seccomp_exceptions_turned_around_decide_every_call_alike(policy):
    """The rewrite that lets OCI's format say "chmod allowed unless setuid" is the same policy."""
    import itertools
    from sandbox.export.seccomp import expressible
    from sandbox.seccomp import builtin_policy
    from sandbox.seccomp.plan import build_plan
    original = builtin_policy(policy)
    rewritten, names = expressible(original)
    assert {"chmod", "fchmodat", "openat", "creat"} <= set(names)
    before, after = build_plan(original), build_plan(rewritten)
    values = [0, 0o644, 0o4755, 0o2755, 0o6755, os.O_CREAT, os.O_CREAT | os.O_EXCL, os.O_TMPFILE,
              os.O_RDONLY | os.O_DIRECTORY, (1 << 40) | 0o4000, 0xFFFFFFFFFFFFFFFF]
    for name in names:
        for args in itertools.product(values, repeat=4):
            args += (0, 0)
            assert before[name].decide(args) == after[name].decide(args), (name, args)
    assert {n: p for n, p in before.items() if n not in names} == {n: p for n, p in after.items() if n not in names}


def test_every_profile_key_is_handled_by_the_exporters():
    """A key added to the profile model must be given a translation or a warning in each target
    (sandbox/export/__init__.py, HANDLED_KEYS) before this passes."""
    from sandbox.export import HANDLED_KEYS, profile_keys
    assert set(profile_keys()) == set(HANDLED_KEYS), (
        f"not handled: {sorted(set(profile_keys()) - set(HANDLED_KEYS))}; "
        f"gone: {sorted(set(HANDLED_KEYS) - set(profile_keys()))}")
