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
from conftest import NET_SESSION, require, wait_until
from netlab import (WORLD_A, WORLD_B, Lab, bridge_profile, probe_argv, probe_output, remove_state_dir,
                    rootless_state_dir, sandbox_command, unique)
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


@pytest.fixture
def host_listener():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        yield srv.getsockname()[1]


def test_two_on_a_segment_talk_tcp_and_udp_a_third_elsewhere_reaches_neither(host_listener):
    require("root", "userns")
    seg, other = unique("seg"), unique("other")
    server = Background(profile(segment=seg, hostname="alpha", hostname_resolution=True), ("serve", 7000, 12))
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


def test_egress_allowed_reached_others_refused_fast_rootless(lab, tmp_path):
    require("rootless")
    state = rootless_state_dir(NET_SESSION)
    try:
        path = bridge_profile(Path(state).parent, "egress", egress=[f"{WORLD_A}:8001"])
        done = subprocess.run(lab.launcher(sandbox_command("run", "-q", str(path), "--", *probe_argv(*_egress_actions())),
                                           rootless=True),
                              capture_output=True, text=True, timeout=90, cwd="/",
                              env={**os.environ, "SANDBOX_NET_DIR": state})
        assert done.returncode == 0, done.stderr
        _check_egress(probe_output(done.stdout), lab)
        assert os.listdir(os.path.join(state, "segments")) == []
    finally:
        remove_state_dir(state)
