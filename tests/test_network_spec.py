"""[network] entries: parsing (sandbox/net/spec.py), the loader's one line per bad entry, the rules
made from them, lint findings, the verifier's canaries. No network traffic here."""
from __future__ import annotations

import ipaddress
import json

import pytest

import sandbox
from sandbox.errors import ProfileError
from sandbox.lint import lint
from sandbox.net import rules, spec
from sandbox.verify.verifier import egress_canaries, expectations


@pytest.mark.parametrize("text, network, name, ports, protocols", [
    ("index.example.com:443", None, "index.example.com", (443, 443), ("tcp", "udp")),
    ("192.0.2.0/24", "192.0.2.0/24", None, None, ("tcp", "udp")),
    ("198.51.100.7:5432/tcp", "198.51.100.7/32", None, (5432, 5432), ("tcp",)),
    ("53/udp", None, None, (53, 53), ("udp",)),
    ("8000-8100", None, None, (8000, 8100), ("tcp", "udp")),
    ("0.0.0.0/0", "0.0.0.0/0", None, None, ("tcp", "udp")),
    ("Example.COM", None, "example.com", None, ("tcp", "udp")),
])
def test_egress_forms(text, network, name, ports, protocols):
    entry = spec.parse_egress(text)
    assert (str(entry.network) if entry.network else None, entry.name, entry.ports, entry.protocols) == \
        (network, name, ports, protocols)


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:80", "outside 127.0.0.0/8"), ("x:0", "port from 1 to 65535"), ("::1", "IPv4"),
    ("[2001:db8::1]:443", "IPv4"), ("192.0.2.7/24", "without host bits"), ("a b", "host name"),
    ("10-5", "LOW <= HIGH"), ("", "a destination"), (":80", "a host before"),
])
def test_egress_refusals(text, expected):
    with pytest.raises(spec.SpecError, match=expected):
        spec.parse_egress(text)


def test_publish_and_dns_forms():
    assert spec.parse_publish("127.0.0.1:8080:80") == spec.Publish("127.0.0.1:8080:80", "127.0.0.1", 8080, 80, "tcp")
    assert spec.parse_publish("5353:53/udp").address == "127.0.0.1"
    assert not spec.parse_publish("192.0.2.1:80:80").loopback
    for bad in ("80", "a:1:2", "1:2:3:4", "1.2.3.4:0:1", "[::1]:1:2"):
        with pytest.raises(spec.SpecError):
            spec.parse_publish(bad)
    assert spec.parse_dns("192.0.2.53") == "192.0.2.53"
    for bad in ("127.0.0.53", "dns.example"):
        with pytest.raises(spec.SpecError):
            spec.parse_dns(bad)


def test_loader_reports_each_bad_entry_on_its_own_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('extends = "untrusted"\n[network]\nmode = "bridge"\nsegment = "Bad Name"\n'
                    'egress = ["ok.example:443", "127.0.0.1:80", "x:99999"]\npublish = ["1:2", "127.0.0.1:1:2/tcp"]\n'
                    'dns = ["nope"]\n')
    with pytest.raises(ProfileError) as caught:
        sandbox.load_profile(str(path))
    lines = [str(p) for p in caught.value.problems]
    keys = [p.key for p in caught.value.problems]
    assert keys == ["network.segment", "network.egress[1]", "network.egress[2]", "network.dns[0]",
                    "network.publish[1]"], lines
    assert all(line.startswith(f"{path}: ") and "expected" in line for line in lines)


def test_bridge_needs_a_network_namespace():
    with pytest.raises(ProfileError) as caught:
        sandbox.profile_from_dict({"extends": "untrusted", "namespaces": {"network": False},
                                   "network": {"mode": "bridge"}})
    assert [p.key for p in caught.value.problems] == ["namespaces.network"]


def test_cli_network_option_takes_the_modes(sandbox_cli):
    done = sandbox_cli("run", "--network", "bridged", "untrusted", "--", "/bin/true")
    assert done.returncode == 125 and "'bridge'" in done.stderr
    from sandbox.options import run_overrides
    table, _ = run_overrides(network="bridge", style="cli")
    assert table["network"]["mode"] == "bridge" and table["namespaces"]["network"] is True


def test_dump_and_load_keep_the_network_table(tmp_path):
    from sandbox.profile.dump import to_toml
    prof = sandbox.profile_from_dict({"extends": "untrusted", "network": {
        "mode": "bridge", "segment": "build-42", "egress": ["index.example.com:443", "53/udp"],
        "publish": ["127.0.0.1:8080:80"], "hostname_resolution": True, "dns": ["192.0.2.53"]}})
    path = tmp_path / "again.toml"
    path.write_text(to_toml(prof))
    assert sandbox.load_profile(str(path)).network == prof.network


def test_rules_refuse_by_default_and_name_each_member():
    members = [{"id": "a", "address": "10.231.0.2", "mac": "02:5b:0a:e7:00:02", "veth": "sbx-a",
                "egress": [{"network": "192.0.2.0/24", "ports": [443, 443], "protocols": ["tcp"]}]},
               {"id": "b", "address": "10.231.0.3", "mac": "02:5b:0a:e7:00:03", "veth": "sbx-b", "egress": []}]
    commands = rules.ruleset(members, "10.231.0.0/16")["nftables"]
    text = json.dumps(commands)
    chains = [c["add"]["chain"] for c in commands if "add" in c and "chain" in c["add"]]
    assert {(c["name"], c.get("policy")) for c in chains if "hook" in c} == {
        ("ports", "drop"), ("forward", "drop"), ("input", "drop"), ("postrouting", "accept")}
    assert "egress_a" in text and "egress_b" not in text  # b may reach nothing outside
    assert text.count('"admin-prohibited"') >= 3
    # a chain is defined before any rule jumps to it (the kernel refuses the batch otherwise)
    order = [json.dumps(c) for c in commands]
    assert min(i for i, c in enumerate(order) if '"name": "egress_a"' in c) < \
        min(i for i, c in enumerate(order) if '"target": "egress_a"' in c)


def test_lint_network_findings():
    prof = sandbox.profile_from_dict({"extends": "untrusted", "network": {
        "mode": "bridge", "egress": ["0.0.0.0/0", "53/udp", "169.254.169.254:80"],
        "publish": ["0.0.0.0:80:80", "192.0.2.1:81:81", "8080:80"]}})
    findings = {(f.severity, f.key) for f in lint(prof)}
    assert ("danger", "network.egress[0]") in findings
    assert ("warning", "network.egress[1]") in findings
    assert ("danger", "network.egress[2]") in findings
    assert ("danger", "network.publish[0]") in findings and ("warning", "network.publish[1]") in findings
    assert not any(key == "network.publish[2]" for _, key in findings)
    host = sandbox.profile_from_dict({"extends": "untrusted", "namespaces": {"network": False},
                                      "network": {"mode": "host"}})
    assert ("warning", "network.mode") in {(f.severity, f.key) for f in lint(host)}  # SBX-NET-001
    ignored = sandbox.profile_from_dict({"extends": "untrusted", "network": {"egress": ["192.0.2.1:1"]}})
    assert ("info", "network.egress") in {(f.severity, f.key) for f in lint(ignored)}


def test_verifier_canaries_from_the_allowlist():
    canaries = egress_canaries(("198.51.100.10:8001/tcp",))
    assert canaries == {"egress_allowed": ["198.51.100.10", 8001, "tcp"],
                        "egress_refused": [["198.51.100.10", 9, "tcp"], ["192.0.2.1", 9, "tcp"]]}
    assert egress_canaries(("0.0.0.0/0",))["egress_refused"] == []
    covered = egress_canaries(("192.0.2.0/24",))
    assert covered["egress_allowed"] is None and covered["egress_refused"] == [["198.51.100.1", 9, "tcp"]]
    expect = expectations(sandbox.profile_from_dict({"extends": "untrusted", "network": {"mode": "bridge"}}))
    assert expect["network"] == "private" and expect["egress_allowed"] is None
