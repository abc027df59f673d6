"""A segment's nftables ruleset, as libnftables JSON (`nft -j -f -`), made from its members.

Two tables, both in the segment's own network namespace, which no workload ever enters:

    table bridge sandbox   every frame entering the bridge from a member's port must carry that
                           member's MAC and IPv4 address (ARP included); anything else, IPv6 too,
                           is dropped: a member cannot speak for another, nor take its egress.
    table inet sandbox     forward: replies; member to member; never another segment's range;
                           to the egress interface only what the member's own allowlist names
                           (looked up by its source address, which the bridge table vouches for);
                           everything else is refused with ICMP admin-prohibited, so programs fail
                           at once instead of waiting for a timeout.
                           input: nothing of the segment's namespace answers but ping.
                           postrouting: egress leaves with the egress interface's address.

The whole ruleset is replaced in one transaction at every change of membership (add, delete, add
the tables in one batch): no member ever sees a half-made state.
"""
from __future__ import annotations

BRIDGE = "sbx-br"
EGRESS = "sbx-egress"
TABLE = "sandbox"
REFUSE = {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}
ACCEPT = {"accept": None}
DROP = {"drop": None}


def _match(left: dict, right, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> dict:
    return {"meta": {"key": key}}


def _payload(protocol: str, field: str) -> dict:
    return {"payload": {"protocol": protocol, "field": field}}


def _address(network: str):
    address, _, length = network.partition("/")
    if not length or length == "32":
        return address
    return {"prefix": {"addr": address, "len": int(length)}}


def egress_rule(entry: dict) -> list[dict]:
    """One allowlist entry ({"network": "a.b.c.d/n" or None, "ports": [lo, hi] or None,
    "protocols": [...]}) as the expressions of an accepting rule."""
    exprs = []
    if entry.get("network") and not entry["network"].endswith("/0"):
        exprs.append(_match(_payload("ip", "daddr"), _address(entry["network"])))
    protocols = entry.get("protocols") or ["tcp", "udp"]
    ports = entry.get("ports")
    if ports:
        port = ports[0] if ports[0] == ports[1] else {"range": list(ports)}
        if len(protocols) == 1:
            exprs.append(_match(_payload(protocols[0], "dport"), port))
        else:
            exprs.append(_match(_meta("l4proto"), {"set": sorted(protocols)}))
            exprs.append(_match(_payload("th", "dport"), port))
    elif len(protocols) == 1:
        exprs.append(_match(_meta("l4proto"), protocols[0]))
    return exprs + [ACCEPT]


def _chain(family: str, name: str, **base) -> dict:
    chain = {"family": family, "table": TABLE, "name": name}
    chain.update(base)
    return {"add": {"chain": chain}}


def _rule(family: str, chain: str, exprs: list[dict]) -> dict:
    return {"add": {"rule": {"family": family, "table": TABLE, "chain": chain, "expr": exprs}}}


def ruleset(members: list[dict], pool: str) -> dict:
    """The segment's whole ruleset; members: [{"id", "address", "mac", "veth", "egress": [...]}]."""
    commands: list[dict] = []
    for family in ("inet", "bridge"):
        table = {"table": {"family": family, "name": TABLE}}
        commands += [{"add": table}, {"delete": table}, {"add": table}]

    # bridge: each port speaks only with its member's MAC and address (chains before their jumps)
    for m in members:
        chain = f"port_{m['id']}"
        commands.append(_chain("bridge", chain))
        commands.append(_rule("bridge", chain, [_match(_payload("ether", "saddr"), m["mac"], "!="), DROP]))
        commands.append(_rule("bridge", chain, [_match(_payload("arp", "saddr ip"), m["address"]), ACCEPT]))
        commands.append(_rule("bridge", chain, [_match(_payload("ip", "saddr"), m["address"]), ACCEPT]))
        commands.append(_rule("bridge", chain, [DROP]))
    commands.append(_chain("bridge", "ports", type="filter", hook="prerouting", prio=-200, policy="drop"))
    if members:
        commands.append(_rule("bridge", "ports", [{"vmap": {"key": _meta("iifname"), "data": {"set": [
            [m["veth"], {"jump": {"target": f"port_{m['id']}"}}] for m in members]}}}]))

    # inet: what is routed out of the segment, and what reaches the segment's namespace itself
    from_bridge = _match(_meta("iifname"), BRIDGE)
    egressing = [m for m in members if m.get("egress")]
    for m in egressing:
        chain = f"egress_{m['id']}"
        commands.append(_chain("inet", chain))
        for entry in m["egress"]:
            commands.append(_rule("inet", chain, egress_rule(entry)))
    commands.append(_chain("inet", "forward", type="filter", hook="forward", prio=0, policy="drop"))
    commands += [
        _rule("inet", "forward", [_match({"ct": {"key": "state"}}, ["established", "related"], "in"), ACCEPT]),
        _rule("inet", "forward", [_match({"ct": {"key": "state"}}, "invalid", "in"), DROP]),
        # bridged IPv4 passes here too where br_netfilter is loaded: members reach each other
        _rule("inet", "forward", [from_bridge, _match(_meta("oifname"), BRIDGE), ACCEPT]),
        _rule("inet", "forward", [from_bridge, _match(_payload("ip", "daddr"), _address(pool)), REFUSE]),
    ]
    if egressing:
        commands.append(_rule("inet", "forward", [from_bridge, _match(_meta("oifname"), EGRESS), {"vmap": {
            "key": _payload("ip", "saddr"), "data": {"set": [
                [m["address"], {"jump": {"target": f"egress_{m['id']}"}}] for m in egressing]}}}]))
    commands.append(_rule("inet", "forward", [from_bridge, REFUSE]))

    commands.append(_chain("inet", "input", type="filter", hook="input", prio=0, policy="drop"))
    commands += [
        _rule("inet", "input", [_match(_meta("iifname"), "lo"), ACCEPT]),
        _rule("inet", "input", [_match({"ct": {"key": "state"}}, ["established", "related"], "in"), ACCEPT]),
        _rule("inet", "input", [from_bridge, _match(_payload("icmp", "type"), "echo-request"), ACCEPT]),
        _rule("inet", "input", [from_bridge, REFUSE]),
    ]
    commands.append(_chain("inet", "postrouting", type="nat", hook="postrouting", prio=100, policy="accept"))
    commands.append(_rule("inet", "postrouting", [_match(_meta("oifname"), EGRESS), {"masquerade": None}]))
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}] + commands}
