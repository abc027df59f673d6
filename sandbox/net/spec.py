"""The [network] entries as data: egress destinations, published ports, name servers, segment names.

Pure parsing (no I/O, no name resolution), shared by the profile loader, which reports a bad entry as
one line, and by the launch, which resolves names and builds the rules. Everything here is IPv4:
segments carry IPv4 only (see docs/network.md).
"""
from __future__ import annotations

import ipaddress
import re

from ..compiled_dataclass import dataclass

PROTOCOLS = ("tcp", "udp")
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
LINK_LOCAL = ipaddress.IPv4Network("169.254.0.0/16")
ANYWHERE = ipaddress.IPv4Network("0.0.0.0/0")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
SEGMENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")


class SpecError(ValueError):
    """What was expected, for the loader's one-line message."""


@dataclass(frozen=True)
class Egress:
    """One allowlist entry: a destination (a network, or a name resolved at launch; None: any),
    a port range (None: every port) and the protocols it covers."""

    text: str
    network: ipaddress.IPv4Network | None
    name: str | None
    ports: tuple[int, int] | None
    protocols: tuple[str, ...]

    @property
    def anywhere(self) -> bool:
        return self.name is None and (self.network is None or self.network.prefixlen == 0)


@dataclass(frozen=True)
class Publish:
    """Connections to host `address`:`host_port` are relayed to the sandbox's `port`."""

    text: str
    address: str
    host_port: int
    port: int
    protocol: str

    @property
    def loopback(self) -> bool:
        return ipaddress.IPv4Address(self.address) in LOOPBACK


def _port(text: str, what: str = "a port") -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise SpecError(f"{what} from 1 to 65535")
    return int(text)


def _ports(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    first = _port(low)
    last = _port(high) if sep else first
    if last < first:
        raise SpecError("a port range LOW-HIGH with LOW <= HIGH")
    return first, last


def _split_protocol(text: str) -> tuple[str, tuple[str, ...]]:
    head, sep, tail = text.rpartition("/")
    if sep and tail in PROTOCOLS:
        return head, (tail,)
    return text, PROTOCOLS


def _refuse_ipv6(text: str) -> None:
    if text.startswith("[") or text.count(":") > 1:
        raise SpecError("an IPv4 destination (segments carry IPv4 only)")


def hostname_ok(name: str) -> bool:
    labels = name.rstrip(".").split(".")
    return len(name) <= 253 and all(_LABEL.match(label) for label in labels) and not name.replace(".", "").isdigit()


def parse_egress(text: str) -> Egress:
    """HOST[:PORT[-PORT]][/PROTO], PORT[-PORT][/PROTO] or HOST[/PROTO]; HOST is an address, a CIDR
    network or a name. Without a protocol, tcp and udp; without a port, every port (and ICMP)."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError("a destination such as \"index.example.com:443\", \"192.0.2.0/24\" or \"53/udp\"")
    canonical = text.strip().lower()
    rest, protocols = _split_protocol(canonical)
    _refuse_ipv6(rest)
    host: str | None
    ports = None
    if re.fullmatch(r"[0-9]+(-[0-9]+)?", rest):
        host = None
        ports = _ports(rest)
    elif ":" in rest:
        host, port_text = rest.rsplit(":", 1)
        ports = _ports(port_text)
    else:
        host = rest
    if host is not None and not host:
        raise SpecError("a host before ':'")
    if host is None and ports is None:
        raise SpecError("a destination, a port, or both")
    network = name = None
    if host is not None:
        try:
            network = ipaddress.IPv4Network(host, strict=True)
        except ipaddress.AddressValueError:
            if not hostname_ok(host):
                raise SpecError("an IPv4 address, a CIDR network or a host name") from None
            name = host.rstrip(".")
        except ValueError:
            raise SpecError("a CIDR network without host bits set, e.g. 192.0.2.0/24") from None
        if network is not None and network.prefixlen and network.overlaps(LOOPBACK):
            raise SpecError("a destination outside 127.0.0.0/8 (inside the sandbox, loopback is its own)")
    return Egress(canonical, network, name, ports, protocols)


def parse_publish(text: str) -> Publish:
    """[ADDRESS:]HOSTPORT:PORT[/PROTO]: host ADDRESS (default 127.0.0.1) port HOSTPORT to the
    sandbox's PORT; tcp unless /udp."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError("\"[ADDRESS:]HOSTPORT:PORT[/tcp|udp]\", e.g. \"127.0.0.1:8080:80\"")
    canonical = text.strip().lower()
    rest, protocols = _split_protocol(canonical)
    protocol = protocols[0] if len(protocols) == 1 else "tcp"
    if rest.startswith("[") or rest.count(":") > 2:
        raise SpecError("an IPv4 host address (published ports are IPv4 only)")
    parts = rest.split(":")
    if len(parts) == 2:
        parts.insert(0, "127.0.0.1")
    if len(parts) != 3:
        raise SpecError("\"[ADDRESS:]HOSTPORT:PORT[/tcp|udp]\", e.g. \"127.0.0.1:8080:80\"")
    try:
        address = str(ipaddress.IPv4Address(parts[0]))
    except ValueError:
        raise SpecError("an IPv4 host address before HOSTPORT (default 127.0.0.1)") from None
    host_port = _port(parts[1], "a host port")
    port = _port(parts[2], "a sandbox port")
    return Publish(canonical, address, host_port, port, protocol)


def parse_dns(text: str) -> str:
    try:
        address = ipaddress.IPv4Address(text.strip() if isinstance(text, str) else text)
    except ValueError:
        raise SpecError("an IPv4 address of a name server") from None
    if address in LOOPBACK:
        raise SpecError("a name server outside 127.0.0.0/8 (the sandbox's loopback is its own)")
    return str(address)


def parse_segment(text: str) -> str:
    if not isinstance(text, str) or not SEGMENT_NAME.match(text):
        raise SpecError("a segment name of lower-case letters, digits, '.', '_' and '-', starting with a "
                        "letter or digit, at most 40 characters")
    return text
