"""One sandbox's place on its segment: prepared before the fork, attached once its init exists,
detached when it ends (see sandbox/net/__init__.py for the order the launcher calls these in)."""
from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import secrets
import socket

from ..errors import SetupError
from . import nsexec, procs, segment, spec
from .state import STEP, State, write_json

SANDBOX_IFNAME = "eth0"


def _mac(address: str) -> str:
    return "02:5b:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(address).packed)


def resolve_egress(entries: tuple[str, ...]) -> tuple[list[dict], dict[str, list[str]]]:
    """The allowlist as rule entries, names resolved now (IPv4); and what each name resolved to."""
    rules, resolved = [], {}
    for text in entries:
        entry = spec.parse_egress(text)
        networks: list[str | None]
        if entry.name is not None:
            try:
                infos = socket.getaddrinfo(entry.name, None, socket.AF_INET, socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise SetupError(STEP, errno.ENOENT, f"egress {text!r}: {entry.name} does not resolve "
                                 f"({exc.strerror})") from None
            addresses = sorted({info[4][0] for info in infos}, key=lambda a: ipaddress.IPv4Address(a))
            resolved[entry.name] = addresses
            networks = [f"{address}/32" for address in addresses]
        else:
            networks = [str(entry.network) if entry.network is not None else None]
        for network in networks:
            rules.append({"network": network, "ports": list(entry.ports) if entry.ports else None,
                          "protocols": list(entry.protocols), "from": text})
    return rules, resolved


def _covered(rules: list[dict], address: str, port: int, protocol: str) -> bool:
    for rule in rules:
        if rule["network"] and ipaddress.IPv4Address(address) not in ipaddress.IPv4Network(rule["network"]):
            continue
        if rule["ports"] and not rule["ports"][0] <= port <= rule["ports"][1]:
            continue
        if protocol in rule["protocols"]:
            return True
    return False


class Attachment:
    """A sandbox's membership of a segment: address, rules, helpers. detach() undoes it all."""

    def __init__(self, profile, member: str, sandbox_id: str):
        self.profile = profile
        self.member = member
        self.sandbox_id = sandbox_id
        self.state = State()
        network = profile.network
        self.segment = network.segment or f"_{member}"
        self.private = not network.segment
        self.address: str | None = None
        self.gateway: str | None = None
        self.subnet: str | None = None
        self.egress: list[dict] = []
        self.resolved: dict[str, list[str]] = {}
        self.publish = [spec.parse_publish(text) for text in network.publish]
        self.listeners: list[socket.socket] = []
        self.userns_fd = -1
        self.warnings: list[str] = []
        self.files: list[tuple[str, str]] = []  # (host file, path inside) bound read-only
        self.init_pid: int | None = None
        self._detached = False
        self._nested = segment.rootless()

    # ------------------------------------------------------------ before the fork

    @classmethod
    def prepare(cls, profile, sandbox_id: str | None = None) -> "Attachment":
        sandbox_id = sandbox_id or secrets.token_hex(8)
        member = hashlib.sha256(sandbox_id.encode()).hexdigest()[:10]
        self = cls(profile, member, sandbox_id)
        try:
            self._prepare()
        except BaseException:
            self.detach()
            raise
        return self

    def _prepare(self) -> None:
        network = self.profile.network
        self.egress, self.resolved = resolve_egress(network.egress)
        self._bind_listeners()
        state = self.state.ensure()
        with state.locked():
            segment.collect_locked(state)
            record = state.segment_record(self.segment)
            if not segment.usable(state, self.segment, record):
                record = segment.create(state, self.segment)
            hostname = self.profile.process.hostname if network.hostname_resolution else None
            members = state.members(self.segment)
            if hostname and any(m.get("hostname") == hostname for m in members.values()):
                raise SetupError(STEP, errno.EEXIST, f"hostname {hostname!r} is already taken on segment "
                                 f"{self.segment!r} (network.hostname_resolution needs a unique process.hostname)")
            self.subnet = record["subnet"]
            net = ipaddress.IPv4Network(self.subnet)
            self.gateway = str(net[1])
            taken = {m.get("address") for m in members.values()}
            free = [str(a) for a in list(net.hosts())[1:] if str(a) not in taken]
            if not free:
                raise SetupError(STEP, errno.ENOSPC, f"segment {self.segment!r} is full ({len(taken)} members)")
            self.address = free[0]
            write_json(state.member_path(self.segment, self.member), self._record(hostname))
            if self.egress:
                segment.ensure_egress(state, self.segment, record)
            if self._nested:
                self.userns_fd = os.open(segment.namespace_path(state, self.segment, record, "user"),
                                         os.O_RDONLY | os.O_CLOEXEC)
            if hostname:
                self.files.append((os.path.join(state.segment_dir(self.segment), "hosts"), "/etc/hosts"))
        if network.dns:
            self.files.append((self._resolv_conf(network.dns), "/etc/resolv.conf"))
            for server in network.dns:
                if not _covered(self.egress, server, 53, "udp"):
                    self.warnings.append(f"network.dns {server} is not allowed by network.egress (53/udp): "
                                         "name lookups will fail")

    def _record(self, hostname: str | None, **more) -> dict:
        return {"sandbox_id": self.sandbox_id, "address": self.address, "mac": _mac(self.address),
                "veth": None, "hostname": hostname, "egress": self.egress, "resolved": self.resolved,
                "publish": [p.text for p in self.publish], "owner": procs.identity(os.getpid()),
                "init": None, "relay": None, **more}

    def _bind_listeners(self) -> None:
        for entry in self.publish:
            kind = socket.SOCK_STREAM if entry.protocol == "tcp" else socket.SOCK_DGRAM
            sock = socket.socket(socket.AF_INET, kind)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((entry.address, entry.host_port))
                if kind == socket.SOCK_STREAM:
                    sock.listen(128)
            except OSError as exc:
                sock.close()
                raise SetupError(STEP, exc.errno or 0, f"publish {entry.text!r}: cannot listen on "
                                 f"{entry.address}:{entry.host_port}: {exc.strerror}") from None
            self.listeners.append(sock)

    def _resolv_conf(self, servers: tuple[str, ...]) -> str:
        content = "".join(f"nameserver {server}\n" for server in servers)
        path = os.path.join(self.state.files_dir, f"resolv-{hashlib.sha256(content.encode()).hexdigest()[:16]}.conf")
        if not os.path.exists(path):
            write_json_text(path, content)
        return path

    def write_id_maps(self, pid: int, idmap) -> None:
        """The id maps of the sandbox's user namespace. Nested in a rootless segment's, they can
        only be written from inside that one (the kernel reads a map's outer ids in the writer's
        user namespace, and accepts a writer from the parent namespace only)."""
        from .. import namespaces
        if not self._nested:
            namespaces.write_id_maps(pid, idmap)
            return
        if (idmap.host_uid, idmap.host_gid) != (os.geteuid(), os.getegid()):
            raise OSError(errno.EPERM, "a rootless sandbox on a segment maps only the caller's own ids")
        inner = type(idmap)(idmap.inside_uid, 0, idmap.inside_gid, 0)  # the caller is 0 in U
        record = self.state.segment_record(self.segment)

        def write():
            namespaces.write_id_maps(pid, inner)
            return None, []
        nsexec.call([("user", segment.namespace_path(self.state, self.segment, record, "user"))], write)

    # ------------------------------------------------------------ init exists

    def attach(self, init_pid: int) -> None:
        """Give the sandbox (whose init is init_pid, in its new network namespace) its interface
        on the segment, its address and routes, and its rules; start its publish relay."""
        self.init_pid = init_pid
        state = self.state
        veth = f"sbx-{self.member}"
        try:
            sandbox_ns = [("net", f"/proc/{init_pid}/ns/net")]
            if self._nested:
                sandbox_ns.insert(0, ("user", f"/proc/{init_pid}/ns/user"))
            sandbox_net = os.open(f"/proc/{init_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            with state.locked():
                record = state.segment_record(self.segment)
                try:
                    with nsexec.iproute(segment.inside(state, self.segment, record)) as ipr, nsexec.netlink_errors():
                        ipr.link("add", ifname=veth, kind="veth",
                                 peer={"ifname": SANDBOX_IFNAME, "net_ns_fd": sandbox_net, "address": _mac(self.address)})
                        index = ipr.link_lookup(ifname=veth)[0]
                        bridge = ipr.link_lookup(ifname="sbx-br")[0]
                        ipr.link("set", index=index, master=bridge, state="up")
                finally:
                    os.close(sandbox_net)
                with nsexec.iproute(sandbox_ns) as ipr, nsexec.netlink_errors():
                    index = ipr.link_lookup(ifname=SANDBOX_IFNAME)[0]
                    ipr.addr("add", index=index, address=self.address, prefixlen=24)
                    ipr.link("set", index=index, state="up")
                    if self.egress:
                        ipr.route("add", dst="0.0.0.0/0", gateway=self.gateway)
                hostname = self.profile.process.hostname if self.profile.network.hostname_resolution else None
                write_json(state.member_path(self.segment, self.member),
                           self._record(hostname, veth=veth, init=procs.identity(init_pid)))
                segment.apply_rules(state, self.segment, record)
                segment.write_hosts(state, self.segment)
                if self.publish:
                    from .relay import start
                    relay = start(state, self.segment, record, self.address, self.publish, self.listeners, init_pid)
                    write_json(state.member_path(self.segment, self.member),
                               self._record(hostname, veth=veth, init=procs.identity(init_pid), relay=relay))
        except OSError as exc:
            raise SetupError(STEP, exc.errno or 0, f"attaching to segment {self.segment!r}: "
                             f"{exc.strerror or exc}") from None
        finally:
            for listener in self.listeners:  # the relay has its own copies now
                listener.close()
            self.listeners = []

    # ------------------------------------------------------------ the end

    def detach(self) -> None:
        """Leave the segment; the last member out removes it. Idempotent; never raises (what it
        could not remove is a warning, and the next gc's to remove)."""
        if self._detached:
            return
        self._detached = True
        try:
            self._detach()
        except Exception as exc:  # noqa: BLE001 - the launch's own outcome matters more
            self.warnings.append(f"network: leaving segment {self.segment!r}: {exc} (sandbox gc removes the rest)")

    def _detach(self) -> None:
        for listener in self.listeners:
            listener.close()
        self.listeners = []
        if self.userns_fd >= 0:
            os.close(self.userns_fd)
            self.userns_fd = -1
        state = self.state
        if not os.path.isdir(state.root) or self.address is None:
            return
        with state.locked():
            record = state.segment_record(self.segment)
            from .state import read_json
            member = read_json(state.member_path(self.segment, self.member))
            segment.remove_member(state, self.segment, self.member, member, record or {})
            if record is None:
                return
            if not state.members(self.segment):
                segment.destroy(state, self.segment, record)
            elif segment.usable(state, self.segment, record):
                try:
                    segment.apply_rules(state, self.segment, record)
                    segment.write_hosts(state, self.segment)
                except OSError:
                    pass  # the next gc tries again

    def membership(self, pid: int) -> tuple[bool, str]:
        """(ok, what was seen): pid's eth0 carries our address, its veth's other end is enslaved
        to the segment's bridge and up."""
        sandbox_ns = [("net", f"/proc/{pid}/ns/net")]
        if self._nested:
            sandbox_ns.insert(0, ("user", f"/proc/{pid}/ns/user"))
        with nsexec.iproute(sandbox_ns) as ipr, nsexec.netlink_errors():
            addresses = sorted(a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET)
                               if a.get_attr("IFA_LABEL") == SANDBOX_IFNAME)
        record = self.state.segment_record(self.segment)
        with nsexec.iproute(segment.inside(self.state, self.segment, record)) as ipr, nsexec.netlink_errors():
            found = ipr.link_lookup(ifname=f"sbx-{self.member}")
            bridge = ipr.link_lookup(ifname="sbx-br")
            link = ipr.get_links(found[0])[0] if found else None
            master = link.get_attr("IFLA_MASTER") if link else None
            up = bool(link and link.get_attr("IFLA_OPERSTATE") == "UP")
        on_bridge = bool(bridge) and master == bridge[0]
        observed = (f"eth0 {', '.join(addresses) or 'without an address'}; veth sbx-{self.member} "
                    f"{'on the bridge' if on_bridge else 'not on the bridge'}{', up' if up else ', down'}")
        return addresses == [self.address] and on_bridge and up, observed

    # ------------------------------------------------------------ what it was

    @property
    def record(self) -> dict:
        """For the audit trail and the result: where the sandbox sat and what it could reach."""
        return {"mode": "bridge", "segment": self.profile.network.segment or None, "address": self.address,
                "gateway": self.gateway, "egress": [r["from"] + ("" if not r["network"] else f" -> {r['network']}")
                                                    for r in self.egress],
                "resolved": self.resolved, "publish": [p.text for p in self.publish]}


def write_json_text(path: str, content: str) -> None:
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w") as handle:
        handle.write(content)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
