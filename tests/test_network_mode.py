"""network.mode = "host" means the host's network however it is given: a profile key alone,
`--network host`, or the Python API (issue 21, item 1). Traffic goes to loopback listeners only."""
from __future__ import annotations

import os
import socket

import pytest

import sandbox
from conftest import as_nobody, require
from sandbox import namespaces
from sandbox.profile.model import Namespaces
from sandbox.verify.verifier import expectations

HOST_NET = os.readlink("/proc/self/ns/net")
# Inside: which network namespace, and can it reach the host's loopback listener?
PROBE = ("import os, socket, sys\n"
         "s = socket.socket(); s.settimeout(5)\n"
         "try:\n"
         "    s.connect(('127.0.0.1', int(sys.argv[1]))); reached = 'reached'\n"
         "except OSError as e:\n"
         "    reached = 'refused'\n"
         "print(os.readlink('/proc/self/ns/net'), reached)\n")


@pytest.fixture
def listener():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        yield srv.getsockname()[1]


def test_one_derivation_of_the_network_namespace():
    new = Namespaces()
    assert namespaces.creates_network_namespace(new, "none")
    assert not namespaces.creates_network_namespace(new, "host")
    assert namespaces.creates_network_namespace(new, "bridge")  # any other mode: a namespace of its own
    assert not namespaces.creates_network_namespace(Namespaces(network=False), "host")
    flags = namespaces.unshare_flags(new, "host")
    assert not flags & namespaces.NAMESPACE_FLAGS["network"]
    assert flags & namespaces.NAMESPACE_FLAGS["pid"]
    assert namespaces.unshare_flags(new, "none") & namespaces.NAMESPACE_FLAGS["network"]


def _inside(result) -> tuple[str, str]:
    assert result.exit_code == 0, result
    netns, reached = result.stdout.decode().split()
    return netns, reached


def test_profile_key_alone_shares_the_host_network(tmp_path, listener):
    require("userns")
    path = tmp_path / "hostnet.toml"
    path.write_text('extends = "untrusted"\n[network]\nmode = "host"\n')
    profile = sandbox.load_profile(str(path))
    assert profile.namespaces.network  # the key alone: namespaces.network stays at its default
    result = sandbox.run(profile, ["/usr/bin/python3", "-c", PROBE, str(listener)], capture_output=True)
    assert _inside(result) == (HOST_NET, "reached")
    expect = expectations(profile)
    assert expect["namespaces"]["net"] is False and expect["network"] == "host"


def test_api_and_default_agree(listener):
    require("userns")
    shared = sandbox.profile_from_dict({"extends": "untrusted", "network": {"mode": "host"}})
    result = sandbox.run(shared, ["/usr/bin/python3", "-c", PROBE, str(listener)], capture_output=True)
    assert _inside(result) == (HOST_NET, "reached")
    own = sandbox.run("untrusted", ["/usr/bin/python3", "-c", PROBE, str(listener)], capture_output=True)
    netns, reached = _inside(own)
    assert netns != HOST_NET and reached == "refused"


def test_network_none_on_the_command_line_over_a_host_profile(tmp_path, sandbox_cli, listener):
    require("userns")
    path = tmp_path / "oldstyle.toml"  # the older spelling of host networking: both keys
    path.write_text('extends = "untrusted"\n[network]\nmode = "host"\n[namespaces]\nnetwork = false\n')
    done = sandbox_cli("run", "--network", "none", str(path), "--", "/usr/bin/python3", "-c", PROBE,
                       str(listener))
    assert done.returncode == 0, done.stderr
    netns, reached = done.stdout.split()
    assert netns != HOST_NET and reached == "refused"


def test_rootless_host_mode_from_the_profile(world_dir, listener, rootless):
    path = world_dir / "hostnet.toml"
    path.write_text('extends = "untrusted"\n[network]\nmode = "host"\n')
    os.chmod(path, 0o644)
    done = as_nobody([rootless.sandbox, "run", "-q", str(path), "--", "/usr/bin/python3", "-c",
                      PROBE, str(listener)], cwd=str(world_dir), timeout=60,
                     env={**os.environ, "SANDBOX_AUDIT_LOG": str(world_dir / "audit.jsonl"),
                          "XDG_CACHE_HOME": str(world_dir / "cache"), "HOME": str(world_dir)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [HOST_NET, "reached"]
