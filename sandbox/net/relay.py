"""Published ports: a relay process per sandbox that publishes any.

The launcher binds the host addresses (so a port in use fails the launch before the fork) and
hands the sockets to a fresh interpreter that joins the segment's user and network namespaces,
drops every capability, and relays each connection (or UDP peer) to the sandbox's port from inside
the segment: the sandbox sees it come from the segment's gateway, and nothing but the published
ports leads in. It exits when the sandbox's init does (a pidfd), and gc stops it if it lingers.

"""
from __future__ import annotations

import os
import selectors
import socket
import sys
import time

UDP_IDLE = 120.0  # seconds a UDP peer's flow is kept without traffic
BUFFER = 1 << 16


def start(state, name: str, record: dict, address: str, publish, listeners, init_pid: int) -> list[int] | None:
    """Fork the relay (no exec: the interpreter's path may not be readable by the host id it runs
    as, and everything it needs is imported here), in the segment's namespaces as their root."""
    from . import nsexec, procs, segment
    spec = {"address": address, "init": procs.identity(init_pid), "state": state.root,
            "ports": [[sock.fileno(), entry.port, entry.protocol] for sock, entry in zip(listeners, publish)]}
    namespaces = segment.as_segment_root(state, name, record) + [
        ("net", segment.namespace_path(state, name, record, "net"))]

    def main():
        relay = _Relay(spec)
        _drop_privileges()
        relay.serve(spec["init"])
    pid = nsexec.spawn_detached(namespaces, ["sandbox-relay"], as_root=True,
                                pass_fds=tuple(s.fileno() for s in listeners), main=main,
                                stderr_path=os.path.join(state.segment_dir(name), "relay.log"))
    return procs.identity(pid) or [pid, 0]


def _drop_privileges() -> None:
    """Root of the segment's user namespace holds capabilities over its rules: not the relay."""
    from .. import capabilities
    capabilities.prepare(())
    capabilities.finish(())
    capabilities.set_no_new_privs()


class _Relay:
    def __init__(self, spec: dict):
        self.target = spec["address"]
        self.selector = selectors.DefaultSelector()
        self.udp_flows: dict[tuple, tuple[socket.socket, socket.socket, float]] = {}
        self.half_closed: set[socket.socket] = set()
        for fd, port, protocol in spec["ports"]:
            kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
            sock = socket.socket(socket.AF_INET, kind, fileno=fd)
            sock.setblocking(False)
            handler = self._accept if protocol == "tcp" else self._udp_from_host
            self.selector.register(sock, selectors.EVENT_READ, (handler, port))

    # TCP: one pair of sockets per connection, each side's EOF passed on as a half close
    def _accept(self, listener: socket.socket, port: int) -> None:
        try:
            client, _ = listener.accept()
        except BlockingIOError:
            return
        inner = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # made in the segment's namespace
        try:
            inner.settimeout(5)
            inner.connect((self.target, port))
        except OSError:
            client.close()  # the sandbox refused: so does the published port
            inner.close()
            return
        for sock in (client, inner):
            sock.setblocking(False)
        self.selector.register(client, selectors.EVENT_READ, (self._pump, inner))
        self.selector.register(inner, selectors.EVENT_READ, (self._pump, client))

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            data = source.recv(BUFFER)
        except BlockingIOError:
            return
        except OSError:
            data = None
        if data:
            try:
                sink.setblocking(True)
                sink.sendall(data)
                sink.setblocking(False)
                return
            except OSError:
                pass
        elif data == b"":  # an orderly end of one direction: pass it on, close when both are done
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self.selector.unregister(source)
            if sink in self.half_closed:
                self.half_closed.discard(sink)
                self._close(source, sink)
            else:
                self.half_closed.add(source)
            return
        self._close(source, sink)

    def _close(self, *socks: socket.socket) -> None:
        for sock in socks:
            try:
                self.selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            self.half_closed.discard(sock)
            sock.close()

    # UDP: one socket in the segment per host peer, so replies find their way back
    def _udp_from_host(self, listener: socket.socket, port: int) -> None:
        try:
            data, peer = listener.recvfrom(BUFFER)
        except BlockingIOError:
            return
        flow = self.udp_flows.get(peer)
        if flow is None:
            inner = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            inner.connect((self.target, port))
            inner.setblocking(False)
            self.selector.register(inner, selectors.EVENT_READ, (self._udp_from_sandbox, (listener, peer)))
            flow = (inner, listener, 0.0)
        self.udp_flows[peer] = (flow[0], listener, time.monotonic())
        try:
            flow[0].send(data)
        except OSError:
            pass

    def _udp_from_sandbox(self, inner: socket.socket, where) -> None:
        listener, peer = where
        try:
            data = inner.recv(BUFFER)
        except OSError:
            return
        try:
            listener.sendto(data, peer)
        except OSError:
            pass

    def _expire_udp(self) -> None:
        now = time.monotonic()
        for peer, (inner, _, seen) in list(self.udp_flows.items()):
            if now - seen > UDP_IDLE:
                self.selector.unregister(inner)
                inner.close()
                del self.udp_flows[peer]

    def serve(self, init: list[int]) -> None:
        pidfd = os.pidfd_open(init[0])
        from .procs import start_time
        if start_time(init[0]) != init[1]:
            return
        self.selector.register(pidfd, selectors.EVENT_READ, (None, None))
        while True:
            for key, _ in self.selector.select(timeout=30):
                handler, extra = key.data
                if handler is None:  # the sandbox's init has exited
                    return
                try:
                    handler(key.fileobj, extra)
                except Exception as exc:  # noqa: BLE001 - one bad flow must not end the others
                    print(f"relay: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            self._expire_udp()

