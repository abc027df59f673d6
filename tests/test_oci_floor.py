"""The runtime floor as data: its model and loader, "stricter", the judgement of a config.json, the
host id ranges, the idmappings and the seccomp floor filter (sandbox/oci/floor.py, policy.py,
idranges.py, idmap.py, sandbox/seccomp/floor.py). Real containers: test_oci_floor_runtime.py;
through the engines: test_oci_floor_engines.py."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from oci_helpers import base_config
from sandbox.oci import floor as floors
from sandbox.oci import idmap, idranges, policy
from sandbox.oci.floor import FloorError, default_floor, strict_floor
from sandbox.oci.state import RuntimeFailure


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "runtime.toml"
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------- the model and its order

def test_the_built_in_floor_keeps_the_named_capabilities_out():
    floor = default_floor()
    for cap in ("CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_PTRACE", "CAP_SYS_RAWIO", "CAP_SYS_BOOT", "CAP_SYS_TIME",
                "CAP_MAC_ADMIN", "CAP_MAC_OVERRIDE", "CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_DAC_READ_SEARCH",
                "CAP_SYSLOG"):
        assert cap not in floor.capabilities
    assert {"CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP"} <= floor.capabilities
    assert (floor.mode, floor.user_namespace, floor.seccomp, floor.no_new_privs, floor.landlock) == \
        ("enforce", True, "default", True, True)
    assert floor.host_namespaces == frozenset() and "/proc/kcore" in floor.masked_paths


def _with(**changes):
    return dataclasses.replace(default_floor(), **changes)


@pytest.mark.parametrize("stricter, weaker, why", [
    (_with(mode="enforce"), _with(mode="warn"), "mode"),
    (_with(mode="warn"), _with(mode="off"), "mode"),
    (_with(), _with(user_namespace=False), "user_namespace"),
    (_with(capabilities=default_floor().capabilities - {"CAP_NET_RAW"}), _with(), "capabilities"),
    (_with(), _with(capabilities=default_floor().capabilities | {"CAP_NET_ADMIN"}), "capabilities"),
    (_with(), _with(host_namespaces=frozenset({"network"})), "namespaces.host"),
    (_with(), _with(devices=(("c", 10, 229),)), "devices"),
    (_with(seccomp="strict"), _with(), "seccomp"),
    (_with(), _with(seccomp="none"), "seccomp"),
    (_with(), _with(no_new_privs=False), "no_new_privs"),
    (_with(), _with(landlock=False), "landlock"),
    (_with(verify=True), _with(), "verify"),
    (_with(), _with(masked_paths=default_floor().masked_paths[1:]), "paths.masked"),
    (_with(), _with(readonly_paths=()), "paths.readonly"),
    (_with(), _with(rw_paths=("/srv",)), "paths.rw_allowed"),
    (_with(), _with(root_owned_volumes="host-root"), "volumes.root_owned"),
    (strict_floor(), default_floor(), "seccomp"),
])
def test_stricter_is_rule_by_rule(stricter, weaker, why):
    assert stricter.at_least_as_strict_as(weaker)
    reasons = weaker.weaker_in(stricter)
    assert reasons and any(reason.startswith(why) for reason in reasons), reasons
    assert not weaker.at_least_as_strict_as(stricter)


def test_stricter_is_a_partial_order():
    a = _with(capabilities=default_floor().capabilities | {"CAP_NET_ADMIN"})  # one more capability
    b = _with(host_namespaces=frozenset({"uts"}))  # one host namespace
    assert not a.at_least_as_strict_as(b) and not b.at_least_as_strict_as(a)  # incomparable
    for floor in (a, b, default_floor(), strict_floor()):
        assert floor.at_least_as_strict_as(floor)  # reflexive
    assert strict_floor().at_least_as_strict_as(default_floor()) and default_floor().at_least_as_strict_as(a)


# ---------------------------------------------------------------- loading

def test_a_file_relaxes_and_names_floors(tmp_path):
    path = _write(tmp_path, """
mode = "warn"
[capabilities]
allow = ["NET_ADMIN"]
[namespaces]
host = ["uts"]
[devices]
allow = ["c 10:229", "/dev/null"]
[paths]
unmask = ["/proc/kcore"]
rw_allowed = ["/srv/shared"]
[user_namespace]
pool_start = 2000000000
pool_ranges = 16
registry = "/run/sbx-test-ranges"
[audit]
log = "/var/log/x/audit.jsonl"
[floors.locked]
mode = "enforce"
[floors.locked.capabilities]
deny = ["CAP_NET_RAW"]
[floors.tight]
extends = "strict"
""")
    settings = floors.load(path)
    floor = settings.floor
    assert floor.source == path and floor.mode == "warn" and "CAP_NET_ADMIN" in floor.capabilities
    assert floor.host_namespaces == {"uts"} and ("c", 10, 229) in floor.devices and ("c", 1, 3) in floor.devices
    assert "/proc/kcore" not in floor.masked_paths and floor.rw_paths == ("/srv/shared",)
    assert settings.pool == floors.IdPool(2_000_000_000, 16, 65536, None, "/run/sbx-test-ranges")
    assert settings.audit_log == "/var/log/x/audit.jsonl"
    assert sorted(settings.named) == ["default", "locked", "strict", "tight"]
    assert "CAP_NET_RAW" not in settings.named["locked"].capabilities
    assert settings.named["tight"].seccomp == "strict" and settings.named["tight"].source == path


def test_without_a_file_the_built_in_floor(tmp_path):
    settings = floors.load(None) if not os.path.exists(floors.ADMIN_FILE) else floors.builtin_settings()
    assert settings.floor == default_floor() and settings.pool == floors.IdPool()


@pytest.mark.parametrize("text, expected", [
    ('mode = "strict"', 'runtime.toml: mode: expected one of off, warn, enforce, found \'strict\''),
    ('[capabilities]\nallow = ["CAP_FLY"]', "runtime.toml: capabilities.allow: expected a capability name"),
    ('[capabilities]\nallow = ["SYS_ADMIN"]\ndeny = ["SYS_ADMIN"]', "capabilities: expected a capability in allow or"),
    ('[namespaces]\nhost = ["mount"]', "namespaces.host: expected names among pid, ipc, network, uts"),
    ('[devices]\nallow = ["x 1:2"]', "devices.allow: expected 'c MAJOR:MINOR'"),
    ('[seccomp]\nfloor = "off"', "seccomp.floor: expected one of none, default, strict"),
    ('[paths]\nmask = ["proc/kcore"]', "paths.mask: expected absolute paths"),
    ('[volumes]\nroot_owned = "yes"', "volumes.root_owned: expected one of host-root, refuse"),
    ('[user_namespace]\npool_start = 4294000000', "user_namespace.pool_ranges: expected a pool that ends below"),
    ('[user_namespace]\nrange_size = 0', "user_namespace.range_size: expected an integer from 1"),
    ('[floors.x.user_namespace]\npool_start = 5', "floors.x.user_namespace.pool_start: expected it at the top level"),
    ('[floors.x]\nextends = "mine"', "floors.x.extends: expected one of default, strict"),
    ("landlock = 'yes'", "landlock: expected true or false"),
    ("colour = 1", "runtime.toml: colour: expected one of"),
    ("mode = ", "runtime.toml: expected TOML"),
])
def test_a_bad_file_is_one_line_naming_file_key_and_expectation(tmp_path, text, expected):
    with pytest.raises(FloorError) as failure:
        floors.load(_write(tmp_path, text))
    assert expected in str(failure.value) and "\n" not in str(failure.value)


def test_a_missing_floor_file_fails_the_runtime_with_one_line(tmp_path):
    from oci_helpers import runtime
    done = runtime(tmp_path / "state", "--floor", tmp_path / "nope.toml", "create", "--bundle", tmp_path, "x")
    assert done.returncode == 1
    assert done.stderr.strip() == f"sandbox-runtime: {tmp_path / 'nope.toml'}: expected a floor file (TOML), found " \
                                  "'no such file'"


def test_an_annotation_may_choose_only_a_stricter_floor(tmp_path):
    settings = floors.load(_write(tmp_path, """
[floors.loose]
[floors.loose.namespaces]
host = ["network"]
[floors.locked.capabilities]
deny = ["CAP_NET_RAW"]
"""))
    assert settings.choose({}) == (settings.floor, None)
    assert settings.choose({"org.sandbox.floor": "locked"})[0].name == "locked"
    assert settings.choose({"org.sandbox.floor": "strict"})[0].name == "strict"
    floor, problem = settings.choose({"org.sandbox.floor": "loose"})
    assert floor is settings.floor
    assert problem.startswith("annotations.org.sandbox.floor: floor 'loose' is not stricter") and "network" in problem
    floor, problem = settings.choose({"org.sandbox.floor": "missing"})
    assert floor is settings.floor and "expected one of default, locked, loose, strict" in problem


# ---------------------------------------------------------------- judging config.json

def _privileged_config() -> dict:
    """What podman 4.3 writes for `run --privileged` (the fields the floor judges)."""
    from sandbox.profile.units import CAPABILITY_NUMBERS
    config = base_config(["id"])
    every = sorted(CAPABILITY_NUMBERS)
    config["process"]["capabilities"] = {name: list(every) for name in ("bounding", "effective", "permitted")}
    config["process"].pop("noNewPrivileges", None)
    config["linux"].pop("seccomp")
    config["linux"]["maskedPaths"] = []
    config["linux"]["readonlyPaths"] = []
    config["linux"]["devices"] = [{"path": "/dev/vda", "type": "b", "major": 254, "minor": 0},
                                  {"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}]
    config["linux"]["resources"] = {"devices": [{"allow": True, "access": "rwm"}]}
    return config


def _judge(config, floor=None, tmp_path=None):
    return policy.judge(config, str(tmp_path or "/nonexistent"), "c" * 64, floor or default_floor())


def test_privileged_is_refused_naming_each_field(tmp_path):
    judgement = _judge(_privileged_config(), tmp_path=tmp_path)
    refused = {(d.rule, d.field) for d in judgement.refusals}
    assert ("capabilities", "process.capabilities.bounding[0]") in refused or \
        any(rule == "capabilities" for rule, _ in refused)
    assert ("devices", "linux.devices[0]") in refused and ("devices", "linux.devices[1]") in refused
    assert ("devices", "linux.resources.devices[0]") in refused
    caps = sorted(d.detail.split()[0] for d in judgement.refusals if d.rule == "capabilities")
    assert caps == sorted(set(floors.FORBIDDEN_CAPABILITIES) & set(caps)) and "CAP_SYS_ADMIN" in caps
    with pytest.raises(policy.FloorRefusal) as failure:
        judgement.refuse_if_below()
    message = str(failure.value)
    assert message.startswith("runtime floor: config.json: ") and "(floor rule " in message and "\n" not in message
    # what is raised rather than refused
    raised = {d.field for d in judgement.decisions if d.action == "raised"}
    assert {"process.noNewPrivileges", "linux.seccomp", "linux.maskedPaths", "linux.readonlyPaths"} <= raised
    assert judgement.config["process"]["noNewPrivileges"] is True
    assert set(default_floor().masked_paths) <= set(judgement.config["linux"]["maskedPaths"])


@pytest.mark.parametrize("drop", ["pid", "network", "ipc", "uts"])
def test_a_host_namespace_is_refused_unless_the_floor_allows_it(drop):
    config = base_config(["id"])
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"] if n["type"] != drop]
    refused = [d for d in _judge(config).refusals if d.rule == "namespaces.host"]
    assert len(refused) == 1 and f"no {drop} namespace" in refused[0].detail
    assert f'host = ["{drop}"]' in refused[0].hint
    allowed = _judge(config, dataclasses.replace(default_floor(), host_namespaces=frozenset({drop})))
    assert not [d for d in allowed.refusals if d.rule == "namespaces.host"]


def test_joining_the_hosts_own_namespace_by_path_is_refused():
    config = base_config(["id"])
    for entry in config["linux"]["namespaces"]:
        if entry["type"] == "network":
            entry["path"] = "/proc/self/ns/net"
    refused = [d for d in _judge(config).refusals if d.rule == "namespaces.host"]
    assert refused and refused[0].field.endswith(".path") and "the host's network namespace" in refused[0].detail


def test_maps_that_reach_host_uid_0_are_refused():
    config = base_config(["id"])
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 0, "size": 65536}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 300000, "size": 65536}]
    judgement = _judge(config)
    assert [(d.rule, d.field) for d in judgement.refusals] == [("user_namespace", "linux.uidMappings[0]")]
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 300000, "size": 65536}]
    judgement = _judge(config)
    assert not judgement.refusals and judgement.engine_maps and not judgement.needs_range


def test_warn_allows_what_enforce_refuses_and_off_judges_nothing():
    config = _privileged_config()
    warned = _judge(config, dataclasses.replace(default_floor(), mode="warn"))
    assert not warned.refusals and warned.warnings
    assert all(line.startswith("floor (warn): config.json: ") for line in warned.warnings)
    warned.refuse_if_below()  # nothing raised
    assert warned.config["process"]["noNewPrivileges"] is True  # raises still apply
    off = _judge(config, dataclasses.replace(default_floor(), mode="off"))
    assert [d.action for d in off.decisions] == ["off"] and off.config == config and not off.needs_range


def test_an_empty_seccomp_section_counts_as_none():
    config = base_config(["id"])
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW"}
    judgement = _judge(config)
    assert judgement.default_seccomp and "seccomp" not in judgement.config["linux"]


def test_engine_made_binds_are_told_apart_from_volumes(tmp_path):
    cid = "a" * 64
    storage = tmp_path / "storage" / "overlay-containers" / cid / "userdata"
    storage.mkdir(parents=True)
    (storage / "hosts").write_text("")
    for directory in [tmp_path / "storage", tmp_path / "storage" / "overlay-containers", storage.parent, storage]:
        directory.chmod(0o755)
    ids = {cid}
    assert policy.engine_made(str(storage / "hosts"), "/nonexistent", ids)
    assert policy.engine_made(str(storage / "hosts"), str(storage), set())  # the bundle's own directory
    assert not policy.engine_made(str(storage / "hosts"), "/nonexistent", {"b" * 64})  # another container's
    storage.parent.chmod(0o777)  # anyone could have made what is below
    assert not policy.engine_made(str(storage / "hosts"), "/nonexistent", ids)
    storage.parent.chmod(0o755)
    os.chown(storage.parent, 1000, 1000)  # not root's
    assert not policy.engine_made(str(storage / "hosts"), "/nonexistent", ids)
    assert not policy.engine_made(str(storage / "hosts"), str(storage), set())
    assert policy._engine_ids("t1", {}) == set()  # a name a user chose is no engine id


def test_ping_group_range_is_clamped_to_the_containers_groups():
    config = base_config(["id"])
    config["linux"]["sysctl"] = {"net.ipv4.ping_group_range": "0 2147483647"}
    judgement = _judge(config)
    if not judgement.needs_range:
        pytest.skip("needs root in the initial user namespace")
    assert judgement.config["linux"]["sysctl"]["net.ipv4.ping_group_range"] == "0 65535"


# ---------------------------------------------------------------- idmappings

@pytest.mark.parametrize("owner", [None, 1, 1000, 65534, 65535, 70000])
def test_volume_idmappings_never_reach_disk_id_0_and_are_one_to_one(owner):
    base, size = 1_000_000_000, 65536
    lines = idmap.volume_lines(base, size, owner)
    assert idmap.never_host_root(lines)
    disk, host = set(), set()
    for line in lines.splitlines():
        d, h, count = (int(n) for n in line.split())
        assert base <= h and h + count <= base + size  # only the container's own range
        disk.update(range(d, d + count))
        host.update(range(h, h + count))
    assert len(disk) == len(host) == sum(int(line.split()[2]) for line in lines.splitlines())
    if owner is None:
        assert base not in host  # container root has no id on the volume
    else:
        assert owner in disk and base in host  # container root writes as the owner
        if owner < size:
            assert base + owner not in host  # the owner's own container id is root's there
    assert not idmap.never_host_root(idmap.identity(base, size))


def test_overlay_options_are_read_with_relative_layers(tmp_path):
    home = tmp_path / "overlay"
    for sub in ("l/AAA", "l/BBB", "cid/diff", "cid/work"):
        (home / sub).mkdir(parents=True)
    for directory in (tmp_path, home):
        directory.chmod(0o755)
    info = {"fstype": "overlay", "flags": ["rw"], "options": [
        "rw", "lowerdir=l/AAA:l/BBB", "upperdir=cid/diff", "workdir=cid/work", "redirect_dir=on", "volatile",
        "fsync=volatile"]}
    layers = idmap.overlay_layers(info, str(home / "cid" / "merged"))
    assert layers["lower"] == [str(home / "l/AAA"), str(home / "l/BBB")]
    assert layers["upper"] == str(home / "cid/diff") and layers["options"] == [("redirect_dir", "on")]
    assert idmap._split_layers(r"/a\:b:/c") == ["/a:b", "/c"]
    with pytest.raises(ValueError):
        idmap.overlay_layers({**info, "options": ["lowerdir=x/1:y/2", "upperdir=nowhere/diff"]}, "/none/merged")


# ---------------------------------------------------------------- host id ranges

@pytest.fixture
def pool(tmp_path):
    registry = tmp_path / "ranges"
    return floors.IdPool(start=3_000_000_000, ranges=4, size=65536, registry=str(registry))


def test_ranges_are_distinct_released_and_never_reach_host_0(tmp_path, pool):
    dirs = []
    for name in "abcd":
        directory = tmp_path / name
        directory.mkdir()
        dirs.append(str(directory))
    got = [idranges.allocate(pool, d) for d in dirs]
    assert sorted(a.uid for a in got) == [3_000_000_000 + i * 65536 for i in range(4)]
    assert all(a.uid > 0 and a.gid > 0 for a in got)
    for first in got:
        for second in got:
            if first is not second:
                assert not idranges.overlaps((first.uid, first.size), (second.uid, second.size))
    (tmp_path / "e").mkdir()
    with pytest.raises(RuntimeFailure, match="every host id range of the pool is in use"):
        idranges.allocate(pool, str(tmp_path / "e"))
    idranges.release(pool, dirs[1], got[1].slot)
    assert idranges.allocate(pool, str(tmp_path / "e")).slot == got[1].slot
    with pytest.raises(RuntimeFailure, match="already holds"):
        idranges.allocate(pool, dirs[0])


def test_a_crashed_runtimes_range_is_reclaimed_once_its_container_is_gone(tmp_path, pool):
    gone, half = tmp_path / "gone", tmp_path / "half"
    gone.mkdir()
    half.mkdir()
    first = idranges.allocate(pool, str(gone))
    second = idranges.allocate(pool, str(half))
    gone.rmdir()  # the container directory went with the engine's clean-up
    # a create that died: the directory is there without state.json, and its creator is dead
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    name = next(n for n in os.listdir(pool.registry) if n.startswith(f"{second.slot}."))
    record = json.loads((tmp_path / "ranges" / name).read_text())
    record.update(creator=dead.pid, creator_start=12345)
    (tmp_path / "ranges" / name).write_text(json.dumps(record))
    with idranges.Registry(pool) as registry:
        assert registry.live() == {}
    third, fourth = tmp_path / "third", tmp_path / "fourth"
    third.mkdir()
    fourth.mkdir()
    assert idranges.allocate(pool, str(third)).slot == first.slot  # reclaimed: the lowest free
    assert idranges.allocate(pool, str(fourth)).slot == second.slot
    with idranges.Registry(pool) as registry:
        assert sorted(registry.live()) == [first.slot, second.slot]


def test_a_pods_containers_share_their_sandboxs_range(tmp_path, pool):
    sandbox_dir, member = tmp_path / "sandbox", tmp_path / "member"
    sandbox_dir.mkdir()
    member.mkdir()
    first = idranges.allocate(pool, str(sandbox_dir))
    shared = idranges.share(pool, first.uid, str(member))
    assert shared == first
    idranges.release(pool, str(sandbox_dir), first.slot)
    other = tmp_path / "other"
    other.mkdir()
    assert idranges.allocate(pool, str(other)).slot != first.slot  # still held by the member
    idranges.release(pool, str(member), first.slot)
    assert idranges.share(pool, 12345, str(member)) is None


def test_a_pool_must_not_overlap_other_users_subordinate_ids(tmp_path, pool, monkeypatch):
    subuid = tmp_path / "subuid"
    subuid.write_text(f"alice:{3_000_100_000}:65536\n")
    subgid = tmp_path / "subgid"
    subgid.write_text("")
    monkeypatch.setattr(idranges, "SUBUID", str(subuid))
    monkeypatch.setattr(idranges, "SUBGID", str(subgid))
    (tmp_path / "c").mkdir()
    with pytest.raises(RuntimeFailure, match="overlaps alice's subordinate ids"):
        idranges.allocate(pool, str(tmp_path / "c"))
    subuid.write_text("sbxrt:4000000000:131072\nalice:100000:65536\n")
    subgid.write_text("sbxrt:4000000000:65536\n")
    dedicated = dataclasses.replace(pool, subuid_user="sbxrt")
    assert list(idranges.slots(dedicated)) == [(4_000_000_000, 4_000_000_000)]  # as many as both files give
    assert idranges.allocate(dedicated, str(tmp_path / "c")).uid == 4_000_000_000


# ---------------------------------------------------------------- the seccomp floor filter

def test_the_floor_filter_denies_what_default_denies():
    from sandbox.seccomp import default_policy, strict_policy
    from sandbox.seccomp.floor import floor_policy, floor_syscalls
    from sandbox.seccomp.plan import evaluate
    floor = floor_policy("default")
    assert floor.mode == "denylist" and floor.architectures == ("native",)  # i386 and x32 calls kill
    for name in ("mount", "umount2", "pivot_root", "fsopen", "open_tree", "move_mount", "mount_setattr", "unshare",
                 "setns", "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd",
                 "io_uring_setup", "io_uring_enter", "kexec_load", "kexec_file_load", "init_module", "finit_module",
                 "delete_module"):
        assert name in floor_syscalls()
        assert evaluate(floor, name).denies and evaluate(floor, name) == evaluate(default_policy(), name), name
    assert evaluate(floor, "clone", (0x10000000,)).denies  # CLONE_NEWUSER
    assert not evaluate(floor, "clone", (0x11,)).denies  # a plain fork
    assert evaluate(floor, "clone3") == evaluate(default_policy(), "clone3")  # ENOSYS: glibc falls back
    for name in ("read", "chroot", "ptrace", "socket", "setxattr"):
        assert not evaluate(floor, name).denies  # the engine's filter decides those
    strict = floor_policy("strict")
    assert strict is strict_policy()
    for name in floor_syscalls():  # strict denies at least what the default floor does
        if evaluate(floor, name).denies:
            assert evaluate(strict, name).denies, name
    assert evaluate(strict, "clone", (0x10000000,)).denies


def test_a_bind_source_swapped_for_a_symlink_after_the_check_is_not_followed(tmp_path):
    """What judge() checked is what is bound: the source's descriptor, never its path again (a
    volume's owner swapping it for a symlink to /etc between the check and the bind gains nothing)."""
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "mine").write_text("")
    config = base_config(["true"])
    config["mounts"].append({"destination": "/data", "type": "bind", "source": str(volume), "options": ["rbind", "ro"]})
    judgement = policy.judge(config, str(tmp_path), "c" * 64, default_floor())
    opened = []
    try:
        volume.rename(tmp_path / "checked")
        volume.symlink_to("/etc")
        from sandbox.mounts import Mount, MountPlan
        plan = MountPlan(str(tmp_path), 0, False, (Mount("/data", "bind", str(volume), 1, "", True),),
                         root_as_given=True)
        tree = policy._judged_binds(plan, judgement, opened, config).operations[0].idmap_fd
        assert os.path.exists(f"/proc/self/fd/{tree}/mine")
        assert not os.path.exists(f"/proc/self/fd/{tree}/passwd")
    finally:
        judgement.close()
        for fd in opened:
            os.close(fd)
