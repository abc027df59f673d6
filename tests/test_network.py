"""Network namespace helpers, exercised only inside namespaces created here
(forked children) and on loopback."""
from __future__ import annotations

import errno
import socket

import pytest

from sandbox import _libc, network

from conftest import attempt, run_in_child






def echo_roundtrip() -> str:
    """Listen and connect on 127.0.0.1 inside the current namespace."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.create_connection(srv.getsockname(), timeout=5) as cli:
            conn, _ = srv.accept()
            with conn:
                cli.sendall(b"ping")
                return conn.recv(4).decode()


@pytest.fixture
def host_listener():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        yield srv.getsockname()[1]


@pytest.mark.parametrize("flags", [
    _libc.CLONE_NEWNET,
    _libc.CLONE_NEWUSER | _libc.CLONE_NEWNET,  # the rootless shape: caps come from the new userns
], ids=["netns", "userns+netns"])
def test_loopback_in_new_namespace(flags, host_listener):
    def child():
        _libc.unshare(flags)
        out = {"ifaces": network.interfaces()}
        with socket.socket() as s:
            out["before_up"] = attempt(lambda: s.connect(("127.0.0.1", host_listener)))
        network.bring_up_loopback()
        network.bring_up_loopback()  # idempotent
        out["echo"] = echo_roundtrip()
        with socket.socket() as s:
            s.settimeout(5)
            out["host"] = attempt(lambda: s.connect(("127.0.0.1", host_listener)))
        out["ifaces_after"] = network.interfaces()
        return out

    res = run_in_child(child)
    assert res["ifaces"] == res["ifaces_after"] == ["lo"]
    assert res["before_up"] == "ENETUNREACH"
    assert res["echo"] == "ping"
    # The host's listener lives in another namespace: nothing listens here.
    assert res["host"] == "ECONNREFUSED"


def test_host_interfaces_listed():
    assert "lo" in network.interfaces()


def test_errors_name_the_call():
    with pytest.raises(ValueError):
        network.set_up("x" * 16)
    with pytest.raises(ValueError):
        network.set_up("")

    def child():
        _libc.unshare(_libc.CLONE_NEWNET)
        try:
            network.set_up("nosuchif0")
        except OSError as exc:
            return [exc.errno, str(exc)]
        return None

    err, msg = run_in_child(child)
    assert err == errno.ENODEV
    assert "ioctl(SIOCGIFFLAGS, 'nosuchif0')" in msg
