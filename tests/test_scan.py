"""`sandbox scan`: files, credentials, image configuration, SBOM, vulnerabilities from an offline
OSV database, allowlists, output formats, and the CI gate."""
from __future__ import annotations

import json
import os
import socket

import pytest

import imagebuild
from sandbox.image import Store
from sandbox.scan import run_scan, scan_directory, scan_image
from sandbox.scan import vulns


@pytest.fixture
def debian_image(tmp_path):
    layout = tmp_path / "debian"
    imagebuild.busybox_image(str(layout), extra=imagebuild.debian_like_members(), config={
        "created": "2020-01-01T00:00:00.123456789Z",
        "config": {"Env": ["PATH=/bin", "DB_PASSWORD=hunter2hunter2", "AWS_REGION=eu-west-1"],
                   "ExposedPorts": {"22/tcp": {}}, "Labels": {"api_token": "abcd1234efgh"}},
        "history": [{"created_by": "/bin/sh -c #(nop) ADD https://example.com/tool.tar.gz /opt/"},
                    {"created_by": "/bin/sh -c echo hi"}]})
    store = Store(str(tmp_path / "store"))
    return store, store.pull(f"oci:{layout}:latest")


OSV = {
    "DEBIAN-CVE-2023-0001": {"id": "DEBIAN-CVE-2023-0001", "aliases": ["CVE-2023-0001"], "summary": "openssl bug",
                             "affected": [{"package": {"ecosystem": "Debian:12", "name": "openssl"},
                                           "ranges": [{"type": "ECOSYSTEM", "events": [
                                               {"introduced": "0"}, {"fixed": "3.0.13-1~deb12u1"}]}]}],
                             "severity": [{"type": "CVSS_V3",
                                           "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]},
    "DEBIAN-CVE-2020-0002": {"id": "DEBIAN-CVE-2020-0002", "summary": "old glibc bug",
                             "affected": [{"package": {"ecosystem": "Debian:12", "name": "glibc"},
                                           "ranges": [{"type": "ECOSYSTEM", "events": [
                                               {"introduced": "0"}, {"fixed": "2.31-1"}]}]}]},
    "DEBIAN-CVE-2011-0003": {"id": "DEBIAN-CVE-2011-0003", "summary": "another release's bug",
                             "affected": [{"package": {"ecosystem": "Debian:11", "name": "openssl"},
                                           "ranges": [{"type": "ECOSYSTEM", "events": [
                                               {"introduced": "0"}, {"fixed": "9:9"}]}]}]},
    "GHSA-j8r2-6x86-q33q": {"id": "GHSA-j8r2-6x86-q33q", "aliases": ["CVE-2023-32681"],
                            "summary": "requests leaks Proxy-Authorization",
                            "database_specific": {"severity": "MODERATE"},
                            "affected": [{"package": {"ecosystem": "PyPI", "name": "Requests"},
                                          "ranges": [{"type": "ECOSYSTEM", "events": [
                                              {"introduced": "2.3.0"}, {"fixed": "2.31.0"}]}]}]},
    "GHSA-35jh-r3h4-6jhm": {"id": "GHSA-35jh-r3h4-6jhm", "summary": "lodash command injection",
                            "database_specific": {"severity": "HIGH"},
                            "affected": [{"package": {"ecosystem": "npm", "name": "lodash"},
                                          "ranges": [{"type": "SEMVER", "events": [
                                              {"introduced": "0"}, {"fixed": "4.17.21"}]}]}]},
    "GHSA-last-affected": {"id": "GHSA-last-affected", "summary": "fixed long ago",
                           "affected": [{"package": {"ecosystem": "npm", "name": "lodash"},
                                         "ranges": [{"type": "SEMVER", "events": [
                                             {"introduced": "0"}, {"last_affected": "4.17.4"}]}]}]},
}


@pytest.fixture
def vuln_db(tmp_path):
    directory = tmp_path / "osv"
    for ecosystem in ("Debian", "PyPI", "npm"):
        (directory / ecosystem).mkdir(parents=True)
    for vid, record in OSV.items():
        ecosystem = record["affected"][0]["package"]["ecosystem"].split(":")[0]
        (directory / ecosystem / f"{vid}.json").write_text(json.dumps(record))
    return str(directory)


def _rules(report) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for finding in report.findings:
        found.setdefault(finding.rule, []).append(finding.location)
    return found


def test_image_scan_finds_each_class(debian_image):
    store, image = debian_image
    report = scan_image(image)
    rules = _rules(report)
    assert rules["SBX-FILE-SETUID"] == ["/usr/bin/su"]
    assert rules["SBX-FILE-CAPS"] == ["/usr/bin/ping"]
    assert rules["SBX-DIR-WORLD-WRITABLE"] == ["/srv/drop"]
    assert "/srv/app/orphan" in rules["SBX-FILE-UNKNOWN-OWNER"]
    assert rules["SBX-SYMLINK-ESCAPE"] == ["/srv/app/escape"]
    assert rules["SBX-SECRET-PRIVATE-KEY"] == ["/srv/app/id_rsa"]
    assert rules["SBX-SECRET-CLOUD-KEY"] == ["/srv/app/settings.ini"]
    assert rules["SBX-SECRET-URL"] == ["/srv/app/.env"] and rules["SBX-SECRET-ENV-FILE"] == ["/srv/app/.env"]
    assert rules["SBX-CONFIG-SECRET-ENV"] == ["config:Env[1]"]  # DB_PASSWORD, not AWS_REGION
    assert rules["SBX-CONFIG-SECRET-LABEL"] == ["config:Labels.api_token"]
    assert rules["SBX-CONFIG-ADD-REMOTE"] == ["config:history[0]"]
    assert rules["SBX-CONFIG-SSH-PORT"] and rules["SBX-CONFIG-NO-USER"]
    old = next(f for f in report.findings if f.rule == "SBX-CONFIG-OLD")
    assert old.severity == "medium" and "2020-01-01" in old.detail
    assert all(f.fix and f.severity in ("info", "low", "medium", "high", "critical") for f in report.findings)
    assert "hunter2hunter2" not in report.to_json()  # secrets are shown redacted
    # the escaping symlink inside an image is resolved in the image's root: low, not medium
    escape = next(f for f in report.findings if f.rule == "SBX-SYMLINK-ESCAPE")
    assert escape.severity == "low"
    # stable ids: the same image scanned again gives the same fingerprints
    again = scan_image(image)
    assert [f.fingerprint for f in again.findings] == [f.fingerprint for f in report.findings]


def test_sbom_lists_every_ecosystem_in_cyclonedx(debian_image, tmp_path):
    store, image = debian_image
    report = scan_image(image)
    purls = {c.purl for c in report.components}
    assert "pkg:deb/debian/libc6@2.36-9%2Bdeb12u1?arch=amd64" in purls
    assert "pkg:deb/debian/openssl@3.0.11-1~deb12u1?arch=amd64" in purls
    assert "pkg:pypi/requests@2.25.0" in purls and "pkg:npm/lodash@4.17.20" in purls
    assert not any("removed-thing" in p for p in purls)  # deinstalled packages are not there
    sbom = json.loads(report.sbom_json())
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.5"
    assert {c["purl"] for c in sbom["components"]} == purls
    assert all(c["bom-ref"] == c["purl"] for c in sbom["components"])


def test_vulnerabilities_from_an_offline_osv_database(debian_image, vuln_db):
    store, image = debian_image
    report = scan_image(image, vuln_db=vuln_db)
    found = {f.title.split(" ")[0]: f for f in report.findings if f.rule == "SBX-VULN"}
    assert set(found) == {"DEBIAN-CVE-2023-0001", "GHSA-j8r2-6x86-q33q", "GHSA-35jh-r3h4-6jhm"}
    assert found["DEBIAN-CVE-2023-0001"].severity == "critical"  # CVSS 9.8
    assert "3.0.13-1~deb12u1" in found["DEBIAN-CVE-2023-0001"].fix
    assert found["GHSA-j8r2-6x86-q33q"].severity == "medium" and found["GHSA-35jh-r3h4-6jhm"].severity == "high"
    sbom = report.sbom()
    assert {v["id"] for v in sbom["vulnerabilities"]} == set(found)
    refs = {c["bom-ref"] for c in sbom["components"]}
    assert all(v["affects"][0]["ref"] in refs for v in sbom["vulnerabilities"])


@pytest.mark.parametrize("compare, smaller, larger", [
    (vulns.compare_dpkg, "1.0~rc1-1", "1.0-1"), (vulns.compare_dpkg, "1.0-1", "1:0.1-1"),
    (vulns.compare_dpkg, "3.0.11-1~deb12u1", "3.0.11-1"), (vulns.compare_dpkg, "2.36-9", "2.36-9+deb12u1"),
    (vulns.compare_dpkg, "1.2.9", "1.2.10"), (vulns.compare_dpkg, "1.0a", "1.0b"),
    (vulns.compare_pep440, "1.0.dev0", "1.0a1"), (vulns.compare_pep440, "1.0a1", "1.0rc1"),
    (vulns.compare_pep440, "1.0rc1", "1.0"), (vulns.compare_pep440, "1.0", "1.0.post1"),
    (vulns.compare_pep440, "2.9", "2.10"), (vulns.compare_pep440, "2.0", "1!0.1"),
    (vulns.compare_semver, "1.0.0-alpha", "1.0.0-alpha.1"), (vulns.compare_semver, "1.0.0-beta.11", "1.0.0-rc.1"),
    (vulns.compare_semver, "1.0.0-rc.1", "1.0.0"), (vulns.compare_semver, "4.17.9", "4.17.20"),
    (vulns.compare_apk, "1.2.3_rc1-r0", "1.2.3-r0"), (vulns.compare_apk, "1.2.3-r2", "1.2.3-r10"),
])
def test_version_order_per_ecosystem(compare, smaller, larger):
    assert compare(smaller, larger) < 0 and compare(larger, smaller) > 0 and compare(smaller, smaller) == 0


def test_equal_versions_in_other_spellings():
    assert vulns.compare_pep440("1.0", "1.0.0") == 0 and vulns.compare_pep440("1.0RC1", "1.0rc1") == 0
    assert vulns.compare_dpkg("0:1.0-1", "1.0-1") == 0


def test_cvss_scores():
    assert vulns.cvss3_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H") == 9.8
    assert vulns.cvss3_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N") == 6.1
    assert vulns.cvss3_score("CVSS:3.0/AV:L/AC:H/PR:H/UI:R/S:U/C:N/I:N/A:N") == 0.0


def test_directory_scan_reports_what_a_workload_can_leave_behind(tmp_path):
    tree = tmp_path / "workspace"
    (tree / "src").mkdir(parents=True)
    (tree / "src" / "ok").symlink_to("../README")  # stays inside: fine
    (tree / "src" / "up").symlink_to("../../../etc/shadow")
    (tree / "abs").symlink_to("/etc/shadow")
    (tree / "README").write_text("hello\n")
    outside = tmp_path / "outside-file"
    outside.write_text("x")
    os.link(outside, tree / "linked")
    os.mkfifo(tree / "pipe")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tree / "sock"))
    (tree / "suid").write_text("#!/bin/sh\n")
    os.chmod(tree / "suid", 0o4755)
    (tree / "shared").mkdir()
    os.chmod(tree / "shared", 0o777)
    with open(tree / "sparse", "wb") as handle:
        handle.truncate(2 << 30)
    (tree / ".env").write_text("API_KEY=sk_live_0123456789abcdefghijklmnop\n")
    report = scan_directory(str(tree))
    assert report.target == str(tree)
    rules = {rule: [p.removeprefix(str(tree)) for p in paths] for rule, paths in _rules(report).items()}
    assert sorted(rules["SBX-SYMLINK-ESCAPE"]) == ["/abs", "/src/up"]
    assert all(f.severity == "medium" for f in report.findings if f.rule == "SBX-SYMLINK-ESCAPE")
    assert rules["SBX-HARDLINK-OUTSIDE"] == ["/linked"]
    assert sorted(rules["SBX-FILE-FIFO"]) == ["/pipe", "/sock"]
    assert rules["SBX-FILE-SETUID"] == ["/suid"] and rules["SBX-DIR-WORLD-WRITABLE"] == ["/shared"]
    assert rules["SBX-FILE-SPARSE"] == ["/sparse"]
    assert rules["SBX-SECRET-TOKEN"] == ["/.env"]
    assert "SBX-FILE-UNKNOWN-OWNER" not in rules  # no /etc/passwd in the tree: nothing to judge owners by


def test_allowlist_formats_and_the_ci_gate(debian_image, tmp_path, sandbox_cli, vuln_db):
    store, image = debian_image
    allow = tmp_path / "allow.toml"
    allow.write_text('''
[[accept]]
id = "SBX-FILE-SETUID"
path = "/usr/bin/*"
reason = "inert in sandboxes"

[[accept]]
id = "GHSA-35jh-r3h4-6jhm"
reason = "not reachable"

[[accept]]
id = "SBX-FILE-CAPS"
reason = "expired"
expires = 2001-01-01
''')
    report = scan_image(image, allowlist=str(allow), vuln_db=vuln_db)
    accepted = {f.rule if f.rule != "SBX-VULN" else f.title.split()[0] for f in report.findings if f.accepted}
    assert accepted == {"SBX-FILE-SETUID", "GHSA-35jh-r3h4-6jhm"}
    env = {"SANDBOX_IMAGE_STORE": store.root}
    target = image.id
    proc = sandbox_cli("scan", target, "--fail-on", "critical", "--allow", str(allow), env=env)
    assert proc.returncode == 1 and "SBX-SECRET-CLOUD-KEY" in proc.stdout
    proc = sandbox_cli("scan", target, "--json", "--sbom", str(tmp_path / "bom.json"), env=env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["kind"] == "image" and data["counts"]["critical"] >= 1
    assert json.loads((tmp_path / "bom.json").read_text())["bomFormat"] == "CycloneDX"
    proc = sandbox_cli("scan", target, "--sarif", env=env)
    sarif = json.loads(proc.stdout)
    assert sarif["version"] == "2.1.0" and sarif["runs"][0]["results"]
    rule_ids = {r["id"] for r in sarif["runs"][0]["tool"]["driver"]["rules"]}
    assert {r["ruleId"] for r in sarif["runs"][0]["results"]} <= rule_ids
    bad = tmp_path / "bad.toml"
    bad.write_text("[[accept]]\nreason = 'no id'\n")
    proc = sandbox_cli("scan", target, "--allow", str(bad), env=env)
    assert proc.returncode == 125 and proc.stderr.count("\n") == 1 and "accept[0]" in proc.stderr


def test_profile_scan_sees_the_image_and_the_binds(debian_image, tmp_path):
    store, image = debian_image
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "deploy.yaml").write_text("password: Sup3rS3cretValue\n")
    (workspace / "host-link").symlink_to("/etc/passwd")
    profile = tmp_path / "p.toml"
    profile.write_text(f'extends = "untrusted"\n[image]\nref = "{image.references[0]}"\n'
                       f'[[filesystem.mounts]]\nsource = "{workspace}"\ntarget = "/workspace"\nmode = "rw"\n')
    os.environ["SANDBOX_IMAGE_STORE"] = store.root
    try:
        report = run_scan(str(profile))
    finally:
        del os.environ["SANDBOX_IMAGE_STORE"]
    rules = _rules(report)
    assert rules["SBX-SECRET-PASSWORD"] == ["/workspace/deploy.yaml"]
    assert "/workspace/host-link" in rules["SBX-SYMLINK-ESCAPE"]
    assert rules["SBX-FILE-SETUID"] == ["/usr/bin/su"]  # from the image
    assert report.kind == "profile" and report.image["id"] == image.id
