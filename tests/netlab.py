"""Test helpers for bridge networking: a probe program run inside sandboxes, and a lab of network
namespaces made by the test (a "host" with a "world" behind it) so that egress traffic only ever
goes to addresses in namespaces the test created.

    world (W): 198.51.100.10 and .20, listeners on 8001/tcp, 8002/tcp, 8001/udp (echo)
        | veth
    host (H):  198.51.100.1, default route to W; the launcher runs here (nsenter), so pasta's
               sockets leave from H and can reach nothing but W
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from sandbox.net import nsexec

WORLD_A, WORLD_B, HOST_ADDRESS = "198.51.100.10", "198.51.100.20", "198.51.100.1"
ROOT = Path(__file__).resolve().parents[1]

# Run inside sandboxes as: python3 -c PROBE '<json list of actions>'. Prints one JSON result.
PROBE = r'''
import json, socket, sys, time, errno
def attempt(host, port, proto, timeout=4.0):
    started = time.monotonic()
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(socket.AF_INET, kind)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        s.send(b"ping")
        data = s.recv(64)
        out = "ok:" + data.decode()
    except socket.timeout:
        out = "timeout"
    except socket.gaierror as exc:
        out = "noname"
    except OSError as exc:
        out = errno.errorcode.get(exc.errno, str(exc.errno))
    finally:
        s.close()
    return [out, round(time.monotonic() - started, 3)]
def serve(port, seconds):
    tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("0.0.0.0", port)); tcp.listen(64); tcp.settimeout(0.05)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("0.0.0.0", port)); udp.settimeout(0.05)
    print("listening", flush=True)
    end = time.monotonic() + seconds
    served = 0
    while time.monotonic() < end:
        try:
            c, _ = tcp.accept(); c.settimeout(2)
            try:
                d = c.recv(64); c.sendall(d.replace(b"ping", b"pong:" + socket.gethostname().encode()))
                served += 1
            except OSError:
                pass
            c.close()
        except socket.timeout:
            pass
        try:
            d, peer = udp.recvfrom(64); udp.sendto(d.replace(b"ping", b"pong:" + socket.gethostname().encode()), peer)
            served += 1
        except socket.timeout:
            pass
    return served
def wait_for(host, port, proto, seconds):
    end = time.monotonic() + seconds
    while True:
        got = attempt(host, port, proto, 1.0)
        if got[0].startswith("ok") or time.monotonic() > end:
            return got
        time.sleep(0.1)
results = []
for action in json.loads(sys.argv[1]):
    if action[0] == "serve":
        results.append(serve(*action[1:]))
    elif action[0] == "wait":
        results.append(wait_for(*action[1:]))
    elif action[0] == "try":
        results.append(attempt(*action[1:]))
    elif action[0] == "read":
        results.append(open(action[1]).read())
    elif action[0] == "routes":
        results.append(open("/proc/net/route").read())
print(json.dumps(results), flush=True)
'''


def probe_argv(*actions) -> list[str]:
    return ["python3", "-c", PROBE, json.dumps([list(a) for a in actions])]


def probe_output(stdout: bytes | str) -> list:
    text = stdout.decode() if isinstance(stdout, bytes) else stdout
    return json.loads([line for line in text.splitlines() if line.startswith("[")][-1])


def bridge_profile(tmp: Path, name: str, **network) -> Path:
    """A profile file extending untrusted with [network] mode = "bridge" and `network` keys."""
    lines = ['extends = "untrusted"', "[process]", f'hostname = "{network.pop("hostname", "sandbox")}"',
             "[network]", 'mode = "bridge"']
    for key, value in network.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path = tmp / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o644)
    return path


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid() % 10000}-{secrets.token_hex(2)}"


# ---------------------------------------------------------------- the lab: host H and world W

class Lab:
    """H and W network namespaces (bind-mounted under /run/netns/sbxtest-*), linked by a veth,
    echo services in W; remove() takes it all down."""

    def __init__(self):
        from pyroute2 import IPRoute, netns
        tag = f"{os.getpid()}-{secrets.token_hex(2)}"  # this test run's: others may run beside it
        self.host, self.world = f"sbxtest-h-{tag}", f"sbxtest-w-{tag}"
        self.host_path, self.world_path = f"/run/netns/{self.host}", f"/run/netns/{self.world}"
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.seen: list[tuple] = []  # (address, port, proto, peer) of every connection W got
        netns.create(self.host)
        netns.create(self.world)
        try:
            world_fd = os.open(self.world_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                with IPRoute(netns=self.host) as ipr:
                    ipr.link("add", ifname="sbxtest-hw", kind="veth", peer={"ifname": "sbxtest-wh", "net_ns_fd": world_fd})
                    index = ipr.link_lookup(ifname="sbxtest-hw")[0]
                    ipr.addr("add", index=index, address=HOST_ADDRESS, prefixlen=24)
                    ipr.link("set", index=index, state="up")
                    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                    # pasta needs a default route; it leads into W, and nowhere else
                    ipr.route("add", dst="0.0.0.0/0", gateway=WORLD_A)
            finally:
                os.close(world_fd)
            with IPRoute(netns=self.world) as ipr:
                index = ipr.link_lookup(ifname="sbxtest-wh")[0]
                for address in (WORLD_A, WORLD_B):
                    ipr.addr("add", index=index, address=address, prefixlen=24)
                ipr.link("set", index=index, state="up")
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            self._serve()
        except BaseException:
            self.remove()
            raise

    def _serve(self) -> None:
        plan = [(WORLD_A, 8001, "tcp"), (WORLD_A, 8002, "tcp"), (WORLD_B, 8001, "tcp"), (WORLD_A, 8001, "udp"),
                (WORLD_A, 8002, "udp")]

        def make():
            fds = []
            for address, port, proto in plan:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((address, port))
                if proto == "tcp":
                    s.listen(64)
                fds.append(s.detach())
            return None, fds
        _, fds = nsexec.call([("net", self.world_path)], make)
        for fd, (address, port, proto) in zip(fds, plan):
            kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
            sock = socket.socket(socket.AF_INET, kind, fileno=fd)
            sock.settimeout(0.2)
            self._sockets.append(sock)
            thread = threading.Thread(target=self._echo, args=(sock, address, port, proto), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _echo(self, sock: socket.socket, address: str, port: int, proto: str) -> None:
        reply = f"pong:world:{address}:{port}".encode()
        while not self._stop.is_set():
            try:
                if proto == "tcp":
                    conn, peer = sock.accept()
                    with conn:
                        conn.settimeout(2)
                        conn.recv(64)
                        conn.sendall(reply)
                else:
                    _, peer = sock.recvfrom(64)
                    sock.sendto(reply, peer)
                self.seen.append((address, port, proto, peer[0]))
            except (socket.timeout, OSError):
                continue

    def launcher(self, argv: list[str], rootless: bool = False) -> list[str]:
        """argv run inside H (as uid 65534 when rootless; then with /dev/net/tun made usable if the
        machine's is not, see tun_wrapper: a root launcher copes with a 0600 node by itself)."""
        command = ["nsenter", f"--net={self.host_path}", "--"]
        if not rootless:
            return command + argv
        from conftest import AS_NOBODY, refuse_checkout_paths
        command += [*AS_NOBODY, *refuse_checkout_paths(argv)]
        return tun_wrapper() + command

    def remove(self) -> None:
        from pyroute2 import netns
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        for sock in self._sockets:
            sock.close()
        for name in (self.host, self.world):
            try:
                netns.remove(name)
            except OSError:
                pass


def tun_wrapper() -> list[str]:
    """A rootless launcher's pasta opens /dev/net/tun as that user: it must be mode 0666 (udev's
    default). Where this machine's is not, the command runs in a private mount namespace with a
    0666 node bound over it: the host's /dev is left as it is. (Rootless segments live as long as a
    keeper process, not bind mounts, so launchers in different mount namespaces still share them.)"""
    try:
        if os.stat("/dev/net/tun").st_mode & 0o006 == 0o006:
            return []
    except OSError:
        return []
    return tun_node_of_mode("666")


def tun_node_of_mode(mode: str) -> list[str]:
    """A prefix that runs a command in a private mount namespace where /dev/net/tun is a node of
    this mode (octal digits) bound over the host's, which is left as it is."""
    script = (f'd=$(mktemp -d) && mknod -m {mode} "$d/tun" c 10 200 && mount --bind "$d/tun" /dev/net/tun '
              '&& rm -rf "$d"; exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]


def sandbox_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sandbox", *args]


def rootless_state_dir(session: Path) -> str:
    """A state directory uid 65534 owns, for rootless launches in tests (its parent, 0755, holds
    their profiles too)."""
    path = tempfile.mkdtemp(prefix="rootless-", dir=session)
    os.chmod(path, 0o755)
    inner = os.path.join(path, "state")
    os.mkdir(inner, 0o700)
    os.chown(inner, 65534, 65534)
    return inner


def remove_state_dir(inner: str) -> None:
    shutil.rmtree(os.path.dirname(inner), ignore_errors=True)


def mode_of(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)
