"""network.mode = "bridge": segments, egress, publish, names, cleanup, from root and rootless launches.

Traffic goes only to loopback and to addresses in network namespaces these tests create: the
segments' own, and the lab's "world" (tests/netlab.py), reached only through a "host" namespace
whose default route leads into the world and nowhere else.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import sandbox
from conftest import AS_NOBODY, NET_SESSION, require, wait_until
from netlab import (WORLD_A, WORLD_B, Lab, bridge_profile, probe_argv, probe_output, remove_state_dir,
                    rootless_state_dir, sandbox_command, tun_node_of_mode, unique)
from sandbox import audit
from sandbox.net import state as net_state

pytestmark = pytest.mark.timeout(180)
FAST = 1.0  # a refusal must come at once, not after a timeout


def profile(**network):
    hostname = network.pop("hostname", "sandbox")
    return sandbox.profile_from_dict({"extends": "untrusted", "process": {"hostname": hostname},
                                      "network": {"mode": "bridge", **network}})


def run(prof, *actions, timeout=40):
    result = sandbox.run(prof, probe_argv(*actions), capture_output=True, timeout=timeout)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return probe_output(result.stdout), result


class Background:
    """A sandbox run in a thread (a server); result() waits for it."""

    def __init__(self, prof, *actions, timeout=60):
        self.outcome = {}
        self.thread = threading.Thread(target=self._run, args=(prof, actions, timeout))
        self.thread.start()

    def _run(self, prof, actions, timeout):
        try:
            self.outcome["result"] = run(prof, *actions, timeout=timeout)
        except BaseException as exc:  # noqa: BLE001
            self.outcome["error"] = exc

    def result(self):
        self.thread.join()
        if "error" in self.outcome:
            raise self.outcome["error"]
        return self.outcome["result"]


def test_a_segment_member_carries_the_launch_id():
    """The id in the result is the one of the launch's audit records and of its membership in the
    segment, so a member left behind can be traced to its launch."""
    require("root", "userns")
    seg = unique("id")
    members = os.path.join(os.environ["SANDBOX_NET_DIR"], "segments", seg, "members")
    seen: list[str] = []
    member = Background(profile(segment=seg), ("wait", "127.0.0.1", 9, "tcp", 3))  # ~3 s in the segment
    try:
        assert wait_until(lambda: os.path.isdir(members) and os.listdir(members), 20)
        for name in os.listdir(members):
            seen.append((net_state.read_json(os.path.join(members, name)) or {}).get("sandbox_id"))
    finally:
        _, result = member.result()
    assert seen == [result.launch_id] and len(result.launch_id) == 16, (seen, result.launch_id)
    with open(audit.log_path()) as log:
        ids = {json.loads(line).get("id") for line in log if line.strip()}
    assert result.launch_id in ids


@pytest.fixture
def host_listener():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        yield srv.getsockname()[1]


def test_two_on_a_segment_talk_tcp_and_udp_a_third_elsewhere_reaches_neither(host_listener):
    require("root", "userns")
    seg, other = unique("seg"), unique("other")
    server = Background(profile(segment=seg, hostname="alpha", hostname_resolution=True), ("serve", 7000, 12),
                        ("read", "/etc/hosts"))
    client_out, client = run(profile(segment=seg, hostname="beta", hostname_resolution=True),
                             ("wait", "alpha", 7000, "tcp", 10), ("try", "alpha", 7000, "udp"),
                             ("read", "/etc/hosts"), ("try", "127.0.0.1", host_listener, "tcp"))
    alpha = [line.split()[0] for line in client_out[2].splitlines() if line.endswith("alpha")][0]
    third_out, third = run(profile(segment=other, egress=[f"{WORLD_A}:8001"]),
                           ("try", alpha, 7000, "tcp"), ("try", alpha, 7000, "udp"),
                           ("try", client.network["address"], 7000, "tcp"))
    lonely_out, _ = run(profile(segment=unique("alone")), ("try", alpha, 7000, "tcp"))
    server_out, served = server.result()
    assert client_out[0][0] == "ok:pong:alpha" and client_out[1][0] == "ok:pong:alpha"
    assert client.network["segment"] == seg and served.network["segment"] == seg
    assert served.network["address"] == alpha
    # /etc/hosts lists the members while they are there, and is updated in place as they leave
    assert f"{client.network['address']}\tbeta" in client_out[2] and f"{alpha}\talpha" in client_out[2]
    assert f"{alpha}\talpha" in server_out[1] and "beta" not in server_out[1]
    # another segment: routed to its own segment's namespace, refused there (EHOSTUNREACH) at once
    assert [r[0] for r in third_out] == ["EHOSTUNREACH"] * 3, third_out
    assert all(r[1] < FAST for r in third_out), third_out
    # no egress at all: no route out of the segment
    assert lonely_out[0][0] == "ENETUNREACH" and lonely_out[0][1] < FAST
    # the host's loopback listener is not the sandbox's loopback
    assert client_out[3][0] == "ECONNREFUSED"
    assert third.network["segment"] == other


def test_host_loopback_and_segment_gateway_refuse(host_listener):
    require("root", "userns")
    out, result = run(profile(segment=unique("gw"), egress=[f"{WORLD_A}:8001"]),
                      ("try", "127.0.0.1", host_listener, "tcp"), ("try", "10.231.0.1", host_listener, "tcp"),
                      ("try", "169.254.231.1", host_listener, "tcp"), ("try", "169.254.231.2", host_listener, "tcp"))
    gateway = result.network["gateway"]
    assert out[0][0] == "ECONNREFUSED"
    assert all(r[0] in ("EHOSTUNREACH", "ECONNREFUSED") and r[1] < FAST for r in out[1:]), out
    again, _ = run(profile(segment=unique("gw")), ("try", gateway, host_listener, "tcp"), ("try", gateway, 22, "tcp"))
    assert all(r[0] == "EHOSTUNREACH" and r[1] < FAST for r in again), again


def test_no_egress_means_no_default_route():
    require("root", "userns")
    out, _ = run(profile(), ("routes",))
    routes = [line.split() for line in out[0].splitlines()[1:]]
    assert routes and all(r[1] != "00000000" for r in routes), out


# ---------------------------------------------------------------- egress to the lab's world

@pytest.fixture
def lab():
    require("root", "userns")
    lab = Lab()
    yield lab
    lab.remove()


def _egress_actions():
    return [("try", WORLD_A, 8001, "tcp"), ("try", WORLD_A, 8001, "udp"), ("try", WORLD_A, 8002, "tcp"),
            ("try", WORLD_A, 8002, "udp"), ("try", WORLD_B, 8001, "tcp")]


def _check_egress(out, lab):
    allowed_tcp, allowed_udp, other_port, other_port_udp, other_address = out
    assert allowed_tcp[0] == f"ok:pong:world:{WORLD_A}:8001", out
    assert allowed_udp[0] == f"ok:pong:world:{WORLD_A}:8001", out
    for refused in (other_port, other_port_udp, other_address):
        assert refused[0] == "EHOSTUNREACH" and refused[1] < FAST, out
    # nothing refused ever reached the world
    assert {(a, p, proto) for a, p, proto, _ in lab.seen} <= {(WORLD_A, 8001, "tcp"), (WORLD_A, 8001, "udp")}


def test_egress_allowed_reached_others_refused_fast_root(lab, tmp_path):
    path = bridge_profile(tmp_path, "egress", egress=[f"{WORLD_A}:8001"])
    done = subprocess.run(lab.launcher(sandbox_command("run", "-q", str(path), "--", *probe_argv(*_egress_actions()))),
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    _check_egress(probe_output(done.stdout), lab)


# A host /dev/net/tun of mode 0600 (no udev: minimal VMs, containers), whatever this machine's is:
# the command runs in a private mount namespace with such a node bound over the host's.
TUN_0600 = tun_node_of_mode("600")


def test_egress_from_a_root_launch_where_tun_is_0600(lab, tmp_path):
    """pasta opens tun as the segment's root (host nobody): a root launcher gives it a 0666 node in
    a mount namespace of its own, and the host's node keeps its mode."""
    path = bridge_profile(tmp_path, "egress", egress=[f"{WORLD_A}:8001"])
    before = os.stat("/dev/net/tun")
    done = subprocess.run(TUN_0600 + lab.launcher(sandbox_command("run", "-q", str(path), "--",
                                                                  *probe_argv(*_egress_actions()))),
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    _check_egress(probe_output(done.stdout), lab)
    after = os.stat("/dev/net/tun")
    assert (after.st_mode, after.st_ino, after.st_dev) == (before.st_mode, before.st_ino, before.st_dev)


def test_egress_from_a_rootless_launch_where_tun_is_0600_says_what_to_do(lab, rootless):
    state = rootless_state_dir(NET_SESSION)
    try:
        path = bridge_profile(Path(state).parent, "egress", egress=[f"{WORLD_A}:8001"])
        # (not lab.launcher(rootless=True), whose wrapper would bind a 0666 node over ours)
        done = subprocess.run(TUN_0600 + ["nsenter", f"--net={lab.host_path}", "--", *AS_NOBODY, rootless.sandbox,
                                          "run", "-q", str(path), "--", "/bin/true"],
                              capture_output=True, text=True, timeout=90, cwd="/",
                              env={**os.environ, "SANDBOX_NET_DIR": state})
        assert done.returncode == 125, (done.returncode, done.stderr)
        assert "usable by every user" in done.stderr and "chmod 0666 /dev/net/tun" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert os.listdir(os.path.join(state, "segments")) == []
    finally:
        remove_state_dir(state)


def test_egress_allowed_reached_others_refused_fast_rootless(lab, tmp_path, rootless):
    state = rootless_state_dir(NET_SESSION)
    try:
        path = bridge_profile(Path(state).parent, "egress", egress=[f"{WORLD_A}:8001"])
        done = subprocess.run(lab.launcher([rootless.sandbox, "run", "-q", str(path), "--",
                                            *probe_argv(*_egress_actions())], rootless=True),
                              capture_output=True, text=True, timeout=90, cwd="/",
                              env={**os.environ, "SANDBOX_NET_DIR": state})
        assert done.returncode == 0, done.stderr
        _check_egress(probe_output(done.stdout), lab)
        assert os.listdir(os.path.join(state, "segments")) == []
    finally:
        remove_state_dir(state)


# ---------------------------------------------------------------- cleanup after a killed launcher

def _collect_after_kill(launcher_pid: int, env=None, segment_dir: str | None = None) -> None:
    """A killed launcher's sandbox dies with it; gc then removes its cgroups and its segment.
    Retried: the cgroup stays busy until the kernel has reaped the sandbox's last process."""
    from sandbox import cgroups

    def clean() -> bool:
        subprocess.run(sandbox_command("gc"), capture_output=True, env=env, cwd="/")
        return not [p for p in cgroups.leaked() if f"sandbox-{launcher_pid}-" in p] and \
            not (segment_dir and os.path.isdir(segment_dir))
    assert wait_until(clean, 20)


def _segment_dirs(state_root: str) -> list[str]:
    try:
        return os.listdir(os.path.join(state_root, "segments"))
    except FileNotFoundError:
        return []


def _killed_launcher_leaves_and_gc_removes(command, env, state_root, lab=None):
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd="/")
    try:
        assert wait_until(lambda: any(os.path.exists(os.path.join(state_root, "segments", s, "members"))
                                      and os.listdir(os.path.join(state_root, "segments", s, "members"))
                                      for s in _segment_dirs(state_root)), 30), launcher.stderr.read1()
        segment = _segment_dirs(state_root)[0]
        record = net_state.read_json(os.path.join(state_root, "segments", segment, "segment.json"))
        assert wait_until(lambda: (net_state.read_json(os.path.join(state_root, "segments", segment,
                                                                    "segment.json")) or {}).get("pasta"), 30)
        record = net_state.read_json(os.path.join(state_root, "segments", segment, "segment.json"))
        members = os.path.join(state_root, "segments", segment, "members")
        assert wait_until(lambda: all((net_state.read_json(os.path.join(members, m)) or {}).get("init")
                                      for m in os.listdir(members)), 20)
        inits = [net_state.read_json(os.path.join(members, m))["init"] for m in os.listdir(members)]
    finally:
        launcher.kill()
        launcher.wait()
    from sandbox.net import procs
    # the sandbox dies with its launcher (parent-death signal); what it leaves is for gc
    assert wait_until(lambda: not any(procs.alive(init) for init in inits), 10)
    assert _segment_dirs(state_root) == [segment]  # nothing removed it: the launcher was killed
    assert procs.alive(record["pasta"])
    gc = subprocess.run(command[:command.index("run")] + ["gc"], capture_output=True, text=True, env=env, cwd="/")
    assert gc.returncode == 0, gc.stderr
    assert f"segment {segment}" in gc.stdout
    assert _segment_dirs(state_root) == []
    assert wait_until(lambda: not procs.alive(record["pasta"]), 5)
    if record.get("keeper"):
        assert wait_until(lambda: not procs.alive(record["keeper"]), 5)
    _collect_after_kill(launcher.pid, env)


def test_sigkill_of_a_launcher_then_gc_removes_everything_root(lab, tmp_path):
    path = bridge_profile(tmp_path, "killed", segment=unique("killed"), egress=[f"{WORLD_A}:8001"])
    state_root = os.environ["SANDBOX_NET_DIR"]
    command = lab.launcher(sandbox_command("run", "-q", str(path), "--", "sleep", "60"))
    _killed_launcher_leaves_and_gc_removes(command, dict(os.environ), state_root)


def test_sigkill_of_a_launcher_then_gc_removes_everything_rootless(lab, rootless):
    state = rootless_state_dir(NET_SESSION)
    try:
        path = bridge_profile(Path(state).parent, "killed", segment=unique("killed"), egress=[f"{WORLD_A}:8001"])
        command = lab.launcher([rootless.sandbox, "run", "-q", str(path), "--", "sleep", "60"], rootless=True)
        _killed_launcher_leaves_and_gc_removes(command, {**os.environ, "SANDBOX_NET_DIR": state}, state)
    finally:
        remove_state_dir(state)


# ---------------------------------------------------------------- publish, names, dns

def _relay_of(state_root: str) -> list | None:
    for segment in _segment_dirs(state_root):
        members = os.path.join(state_root, "segments", segment, "members")
        for entry in os.listdir(members) if os.path.isdir(members) else ():
            record = net_state.read_json(os.path.join(members, entry)) or {}
            if record.get("relay"):
                return record["relay"]
    return None


def _host_listening_ports(pid: int) -> set[tuple[str, int]]:
    """(proto, port) of the host-namespace sockets process pid holds (from the host's /proc/net)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for proto in ("tcp", "udp"):
        with open(f"/proc/self/net/{proto}") as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    found.add((proto, int(fields[1].split(":")[1], 16)))
    return found


def _free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_publish_from_host_loopback_reaches_only_the_published_port():
    require("root", "userns")
    tcp_port, udp_port = _free_port(), _free_port(socket.SOCK_DGRAM)
    prof = profile(publish=[f"127.0.0.1:{tcp_port}:7000", f"{udp_port}:7000/udp"])
    server = Background(prof, ("serve", 7000, 8))
    state_root = os.environ["SANDBOX_NET_DIR"]
    try:
        assert wait_until(lambda: _relay_of(state_root), 20)
        relay = _relay_of(state_root)
        assert _host_listening_ports(relay[0]) == {("tcp", tcp_port), ("udp", udp_port)}
        status = open(f"/proc/{relay[0]}/status").read()
        assert [int(v, 16) for k, v in (l.split(":") for l in status.splitlines()) if k == "CapEff"] == [0]
        got = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", tcp_port), timeout=2) as conn:
                    conn.sendall(b"ping")
                    got = conn.recv(64)
                if got:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        assert got == b"pong:sandbox"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(3)
            udp.sendto(b"ping", ("127.0.0.1", udp_port))
            assert udp.recvfrom(64)[0] == b"pong:sandbox"
    finally:
        _, result = server.result()
    # the host has no route or interface into any segment: the relay is the only way in
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        destinations = {r.get_attr("RTA_DST") for r in ipr.get_routes(family=socket.AF_INET)}
    assert not any(d and d.startswith("10.231.") for d in destinations)
    assert result.network["publish"] == [f"127.0.0.1:{tcp_port}:7000", f"{udp_port}:7000/udp"]
    from sandbox.net import procs
    assert wait_until(lambda: not procs.alive(relay), 5)


def test_publish_port_in_use_fails_before_launch(host_listener):
    require("root", "userns")
    with pytest.raises(sandbox.SetupError) as caught:
        sandbox.run(profile(publish=[f"127.0.0.1:{host_listener}:80"]), ["/bin/true"])
    assert "cannot listen on 127.0.0.1" in str(caught.value) and caught.value.step == "network"


def test_dns_and_unallowed_server_warning():
    require("root", "userns")
    out, result = run(profile(dns=["198.51.100.53"], egress=["198.51.100.53:53/udp"]), ("read", "/etc/resolv.conf"))
    assert out[0] == "nameserver 198.51.100.53\n"
    assert not any("network.dns" in w for w in result.warnings)
    _, warned = run(profile(dns=["198.51.100.53"]), ("read", "/etc/resolv.conf"))
    assert any("network.dns 198.51.100.53 is not allowed" in w for w in warned.warnings)


def test_duplicate_hostname_on_a_segment_is_refused():
    require("root", "userns")
    seg = unique("dup")
    first = Background(profile(segment=seg, hostname="same", hostname_resolution=True), ("serve", 7000, 4))
    state_root = os.environ["SANDBOX_NET_DIR"]
    try:
        assert wait_until(lambda: os.path.isdir(os.path.join(state_root, "segments", seg, "members"))
                          and os.listdir(os.path.join(state_root, "segments", seg, "members")), 20)
        with pytest.raises(sandbox.SetupError) as caught:
            sandbox.run(profile(segment=seg, hostname="same", hostname_resolution=True), ["/bin/true"])
        assert "hostname 'same' is already taken" in str(caught.value)
    finally:
        first.result()


def test_egress_names_are_resolved_at_launch_and_recorded(lab, tmp_path):
    """A name resolved through the launcher's own resolver (an /etc/hosts of a private mount
    namespace here), recorded in the result and the audit trail."""
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{WORLD_A} world.test\n")
    path = bridge_profile(tmp_path, "named", egress=["world.test:8001/tcp"])
    log = tmp_path / "audit.jsonl"
    inner = sandbox_command("run", "-q", "--result-json", str(tmp_path / "result.json"), str(path), "--",
                            *probe_argv(("try", WORLD_A, 8001, "tcp"), ("try", WORLD_A, 8001, "udp")))
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               f'mount --bind "{hosts}" /etc/hosts && exec "$@"', "sh"] + lab.launcher(inner)
    done = subprocess.run(command, capture_output=True, text=True, timeout=90,
                          env={**os.environ, "SANDBOX_AUDIT_LOG": str(log)})
    assert done.returncode == 0, done.stderr
    out = probe_output(done.stdout)
    assert out[0][0].startswith("ok:") and out[1][0] == "EHOSTUNREACH"
    recorded = json.loads((tmp_path / "result.json").read_text())["network"]
    assert recorded["resolved"] == {"world.test": [WORLD_A]}
    end = [json.loads(line) for line in log.read_text().splitlines() if '"end"' in line][-1]
    assert end["network"]["resolved"] == {"world.test": [WORLD_A]}


def test_egress_name_that_does_not_resolve_fails_the_launch():
    require("root", "userns")
    with pytest.raises(sandbox.SetupError) as caught:
        sandbox.run(profile(egress=["no-such-host.invalid:443"]), ["/bin/true"])
    assert "no-such-host.invalid does not resolve" in str(caught.value)


# ---------------------------------------------------------------- verifier and lint

def test_verify_checks_segment_membership_and_egress_canaries(lab, tmp_path):
    path = bridge_profile(tmp_path, "verified", segment=unique("verified"), egress=[f"{WORLD_A}:8001/tcp"])
    done = subprocess.run(lab.launcher(sandbox_command("verify", "--json", str(path))), capture_output=True,
                          text=True, timeout=120)
    results = {r["id"]: r for r in json.loads(done.stdout)["results"]}
    assert results["outside.net.segment"]["status"] == "PASS", results["outside.net.segment"]
    assert results["net.egress_allowed"]["status"] == "PASS", results["net.egress_allowed"]
    refused = [r for cid, r in results.items() if cid.startswith("net.egress_refused")]
    assert len(refused) == 2 and all(r["status"] == "PASS" for r in refused), refused
    assert f"{WORLD_A}:9/tcp" in refused[0]["observed"] and "192.0.2.1:9/tcp" in refused[1]["observed"]
    assert results["net.canary_tcp"]["status"] == "PASS"
    assert done.returncode == 0, [r for r in results.values() if r["status"] == "FAIL"]


# ---------------------------------------------------------------- attacks from inside

SPOOF = r'''
import json, socket, subprocess, time
victim = socket.gethostbyname("victim")
run = lambda *a: subprocess.run(a, capture_output=True, text=True)
out = {"victim": victim}
out["addr"] = run("ip", "addr", "add", victim + "/24", "dev", "eth0").returncode
def attempt(source):
    s = socket.socket(); s.settimeout(2)
    try:
        if source:
            s.bind((source, 0))
        s.connect(("198.51.100.10", 8001)); s.send(b"ping"); return "ok:" + s.recv(64).decode()
    except OSError as exc:
        return type(exc).__name__ + ":" + str(exc.errno)
    finally:
        s.close()
out["as_victim"] = attempt(victim)
run("ip", "link", "set", "eth0", "address", "02:5b:00:00:00:99")
out["new_mac"] = attempt(None)
print(json.dumps(out))
'''


def test_a_workload_with_cap_net_admin_cannot_take_a_neighbours_egress(lab, tmp_path):
    """The rules live in the segment's namespace: a workload holding CAP_NET_ADMIN in its own
    namespaces may renumber its interface, but frames with a neighbour's address (or a MAC not
    its own) are dropped at its bridge port, so the neighbour's allowlist never applies to it."""
    seg = unique("spoof")
    victim = bridge_profile(tmp_path, "victim", segment=seg, hostname="victim", hostname_resolution=True,
                            egress=[f"{WORLD_A}:8001/tcp"])
    attacker = tmp_path / "attacker.toml"
    attacker.write_text(bridge_profile(tmp_path, "a", segment=seg, hostname="attacker", hostname_resolution=True,
                                       egress=[f"{WORLD_A}:8002/tcp"]).read_text()
                        + '[capabilities]\nkeep = ["CAP_NET_ADMIN"]\n')
    background = subprocess.Popen(lab.launcher(sandbox_command("run", "-q", str(victim), "--", "sleep", "30")),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        state_root = os.environ["SANDBOX_NET_DIR"]
        members = os.path.join(state_root, "segments", seg, "members")
        assert wait_until(lambda: os.path.isdir(members) and any(
            (net_state.read_json(os.path.join(members, m)) or {}).get("init") for m in os.listdir(members)), 30)
        done = subprocess.run(lab.launcher(sandbox_command("run", "-q", str(attacker), "--", "python3", "-c", SPOOF)),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout.splitlines()[-1])
    finally:
        background.kill()
        background.wait()
    assert out["addr"] == 0  # it may renumber itself: CAP_NET_ADMIN in its own namespace
    assert not out["as_victim"].startswith("ok"), out
    assert not out["new_mac"].startswith("ok"), out
    assert not [s for s in lab.seen if s[1] == 8001], lab.seen  # the world never saw it
    # the victim's launcher was killed: once its sandbox is gone, gc removes its cgroups and segment
    _collect_after_kill(background.pid, segment_dir=os.path.join(os.environ["SANDBOX_NET_DIR"], "segments", seg))
