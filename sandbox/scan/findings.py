"""Findings, the allowlist, and the report in its formats (text, JSON, SARIF, CycloneDX)."""
from __future__ import annotations

import datetime
import fnmatch
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field

SEVERITIES = ("info", "low", "medium", "high", "critical")
RANK = {name: index for index, name in enumerate(SEVERITIES)}
TOOL = "sandbox scan"
TOOL_VERSION = "1"  # bump when rules change what they find: cached gate results are keyed by it

# Every rule: id -> (title, severity by default, fix). Ids are stable; new rules get new ids.
RULES: dict[str, tuple[str, str, str]] = {
    "SBX-FILE-SETUID": ("setuid or setgid file", "high",
                        "remove the bit (chmod u-s,g-s) or the file; a sandbox ignores it (nosuid, no_new_privs), "
                        "other runtimes and hosts may not"),
    "SBX-FILE-CAPS": ("file with capabilities (security.capability)", "high",
                      "remove them (setcap -r) unless the program needs them outside sandboxes"),
    "SBX-FILE-WORLD-WRITABLE": ("world-writable file", "medium", "chmod o-w"),
    "SBX-DIR-WORLD-WRITABLE": ("world-writable directory without the sticky bit", "medium",
                               "chmod o-w, or +t if it is meant to be shared like /tmp"),
    "SBX-FILE-DEVICE": ("device node", "high", "remove it: images get their devices from the runtime"),
    "SBX-FILE-UNKNOWN-OWNER": ("owned by an id the tree's /etc/passwd or /etc/group does not know", "low",
                               "chown to a known user; an unknown id may later belong to someone else"),
    "SBX-SYMLINK-ESCAPE": ("symlink that leaves the scanned tree", "medium",
                           "make it relative within the tree, or remove it before other tools handle the tree"),
    "SBX-HARDLINK-OUTSIDE": ("file with hardlinks outside the scanned tree", "medium",
                             "remove it: writing to it changes a file elsewhere"),
    "SBX-FILE-FIFO": ("FIFO or socket", "low", "remove it before other tools handle the tree (reads can block)"),
    "SBX-FILE-SPARSE": ("huge sparse file", "low", "remove it: copying or archiving it fills disks"),
    "SBX-SECRET-PRIVATE-KEY": ("private key", "high", "remove it from the image; mount it at run time"),
    "SBX-SECRET-CLOUD-KEY": ("cloud access key", "critical", "revoke the key, remove it, use a secret store"),
    "SBX-SECRET-TOKEN": ("access token", "high", "revoke the token, remove it, pass it at run time"),
    "SBX-SECRET-PASSWORD": ("password in a configuration file", "high",
                            "move it out of the file (environment at run time, a secret store)"),
    "SBX-SECRET-URL": ("credentials in a URL", "high", "remove them from the URL"),
    "SBX-SECRET-ENV-FILE": (".env file", "medium", "keep .env files out of images and workspaces"),
    "SBX-CONFIG-SECRET-ENV": ("credential in the image's Env", "high",
                              "pass it at run time ([process] env or env_passthrough), not in the image"),
    "SBX-CONFIG-SECRET-LABEL": ("credential in an image label", "high", "remove the label"),
    "SBX-CONFIG-SECRET-HISTORY": ("credential in the image's build history", "high",
                                  "rebuild without it (build secrets, not ARG/ENV); history is public"),
    "SBX-CONFIG-ROOT": ("image runs as root", "medium", "USER a non-root user in the image"),
    "SBX-CONFIG-NO-USER": ("image sets no USER (runs as root)", "medium", "USER a non-root user in the image"),
    "SBX-CONFIG-SSH-PORT": ("image exposes port 22 (ssh)", "medium", "do not run sshd in containers"),
    "SBX-CONFIG-ADD-REMOTE": ("image ADDs a remote archive", "medium",
                              "download with a checksum check (RUN curl | sha256sum -c) or COPY"),
    "SBX-CONFIG-OLD": ("old image: re-audit", "low", "rebuild from a current base and scan again"),
    "SBX-CONFIG-NO-DATE": ("image without a creation date", "info", "build with a real timestamp"),
    "SBX-VULN": ("known vulnerability", "medium", "upgrade the package to a fixed version"),
}


@dataclass
class Finding:
    """One problem: a rule, where, what exactly, how severe, how to fix it."""

    rule: str
    location: str
    detail: str
    severity: str = ""
    fix: str = ""
    title: str = ""
    accepted: str = ""  # the allowlist's reason, when accepted
    fingerprint: str = ""

    def __post_init__(self):
        title, severity, fix = RULES[self.rule]
        self.title = self.title or title
        self.severity = self.severity or severity
        self.fix = self.fix or fix
        if not self.fingerprint:
            key = f"{self.rule}\0{self.location}\0{self.title if self.rule == 'SBX-VULN' else ''}"
            self.fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class Component:
    """One installed package, for the SBOM."""

    ecosystem: str  # deb, apk, pypi, npm
    name: str
    version: str
    location: str
    distro: str = ""  # debian, alpine...
    distro_version: str = ""
    source: str = ""  # the source package (dpkg)
    arch: str = ""

    @property
    def purl(self) -> str:
        from urllib.parse import quote
        name = quote(self.name, safe="@/")
        if self.ecosystem == "deb":
            base = f"pkg:deb/{self.distro or 'debian'}/{name}@{quote(self.version, safe='')}"
            return base + (f"?arch={self.arch}" if self.arch else "")
        if self.ecosystem == "apk":
            return f"pkg:apk/{self.distro or 'alpine'}/{name}@{quote(self.version, safe='')}" + (
                f"?arch={self.arch}" if self.arch else "")
        if self.ecosystem == "npm" and self.name.startswith("@"):
            scope, _, bare = self.name.partition("/")
            return f"pkg:npm/{quote(scope, safe='')}/{quote(bare, safe='')}@{quote(self.version, safe='')}"
        return f"pkg:{self.ecosystem}/{name}@{quote(self.version, safe='')}"


# ---------------------------------------------------------------- the allowlist

@dataclass
class Acceptance:
    """[[accept]] in an allowlist file: a rule or vulnerability id, optionally a location glob."""

    id: str
    path: str = "*"
    reason: str = ""
    expires: datetime.date | None = None

    def matches(self, finding: Finding, today: datetime.date) -> bool:
        if self.expires is not None and today > self.expires:
            return False
        ids = {finding.rule, finding.fingerprint}
        if finding.rule == "SBX-VULN":
            ids.add(finding.title.split(" ", 1)[0])
        return self.id in ids and fnmatch.fnmatchcase(finding.location, self.path)


class AllowlistError(ValueError):
    """An allowlist file that cannot be used."""


def load_allowlist(path: str) -> list[Acceptance]:
    """An allowlist: TOML with [[accept]] tables (id, optional path glob, reason, expires date)."""
    import tomllib
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise AllowlistError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AllowlistError(f"{path}: not valid TOML: {exc}") from None
    accepted = []
    for index, item in enumerate(document.get("accept", [])):
        where = f"{path}: accept[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            raise AllowlistError(f"{where}: expected a table with id = \"RULE-OR-VULNERABILITY-ID\"")
        unknown = set(item) - {"id", "path", "reason", "expires"}
        if unknown:
            raise AllowlistError(f"{where}: expected keys id, path, reason, expires, found {sorted(unknown)}")
        expires = item.get("expires")
        if expires is not None and not isinstance(expires, datetime.date):
            raise AllowlistError(f"{where}.expires: expected a date (2027-01-31)")
        if isinstance(expires, datetime.datetime):
            expires = expires.date()
        path_glob = item.get("path", "*")
        if not isinstance(path_glob, str):
            raise AllowlistError(f"{where}.path: expected a string (a glob over locations)")
        accepted.append(Acceptance(item["id"], path_glob, str(item.get("reason", "")), expires))
    unknown = set(document) - {"accept"}
    if unknown:
        raise AllowlistError(f"{path}: expected only [[accept]] tables, found {sorted(unknown)}")
    return accepted


# ---------------------------------------------------------------- the report

@dataclass
class Report:
    """What a scan found."""

    target: str
    kind: str  # image, directory, profile
    findings: list[Finding] = field(default_factory=list)
    components: list[Component] = field(default_factory=list)
    vulnerability_db: str = ""
    files: int = 0
    elapsed: float = 0.0
    image: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def accept(self, allowlist: list[Acceptance]) -> None:
        today = datetime.date.today()
        for finding in self.findings:
            for rule in allowlist:
                if rule.matches(finding, today):
                    finding.accepted = rule.reason or "accepted"
                    break

    def sort(self) -> None:
        self.findings.sort(key=lambda f: (-RANK[f.severity], f.rule, f.location))

    def open_findings(self) -> list[Finding]:
        return [f for f in self.findings if not f.accepted]

    def failing(self, threshold: str) -> list[Finding]:
        return [f for f in self.open_findings() if RANK[f.severity] >= RANK[threshold]]

    def counts(self) -> dict[str, int]:
        counts = {name: 0 for name in reversed(SEVERITIES)}
        for finding in self.open_findings():
            counts[finding.severity] += 1
        return counts

    def render(self) -> str:
        lines = []
        for finding in self.findings:
            mark = f" (accepted: {finding.accepted})" if finding.accepted else ""
            lines.append(f"{finding.severity.upper():<8} {finding.rule:<26} {finding.location}: {finding.detail}{mark}")
            if not finding.accepted:
                lines.append(f"{'':<35} fix: {finding.fix}")
        counts = self.counts()
        summary = ", ".join(f"{n} {name}" for name, n in counts.items())
        accepted = sum(1 for f in self.findings if f.accepted)
        lines.append(f"{self.target}: {summary}" + (f", {accepted} accepted" if accepted else "")
                     + f"; {len(self.components)} packages, {self.files} files in {self.elapsed:.2f} s")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"target": self.target, "kind": self.kind, "image": self.image, "files": self.files,
                "elapsed": round(self.elapsed, 3), "counts": self.counts(),
                "findings": [asdict(f) for f in self.findings],
                "packages": [{**asdict(c), "purl": c.purl} for c in self.components],
                "vulnerability_db": self.vulnerability_db, "notes": self.notes}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_sarif(self) -> str:
        levels = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
        scores = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "2.0", "info": "0.0"}
        used = sorted({f.rule for f in self.findings})
        rules = [{"id": rule, "name": rule, "shortDescription": {"text": RULES[rule][0]},
                  "help": {"text": RULES[rule][2]},
                  "properties": {"security-severity": scores[RULES[rule][1]], "tags": ["security"]}}
                 for rule in used]
        results = []
        for finding in self.findings:
            result = {"ruleId": finding.rule, "level": levels[finding.severity],
                      "message": {"text": f"{finding.title}: {finding.detail} (fix: {finding.fix})"},
                      "locations": [{"physicalLocation": {"artifactLocation": {"uri": finding.location.lstrip("/")
                                                                               or "."}}}],
                      "partialFingerprints": {"sandboxFinding/v1": finding.fingerprint},
                      "properties": {"severity": finding.severity}}
            if finding.accepted:
                result["suppressions"] = [{"kind": "external", "justification": finding.accepted}]
            results.append(result)
        document = {"$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0",
                    "runs": [{"tool": {"driver": {"name": TOOL, "version": TOOL_VERSION, "rules": rules}},
                              "results": results,
                              "properties": {"target": self.target, "kind": self.kind}}]}
        return json.dumps(document, indent=2)

    def sbom(self) -> dict:
        import uuid
        components = []
        seen = set()
        for component in self.components:
            ref = component.purl
            if ref in seen:
                continue
            seen.add(ref)
            entry = {"type": "library", "bom-ref": ref, "name": component.name, "version": component.version,
                     "purl": ref, "properties": [{"name": "sandbox:location", "value": component.location}]}
            if component.source and component.source != component.name:
                entry["properties"].append({"name": "sandbox:source-package", "value": component.source})
            components.append(entry)
        document = {
            "bomFormat": "CycloneDX", "specVersion": "1.5", "serialNumber": f"urn:uuid:{uuid.uuid4()}", "version": 1,
            "metadata": {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         "tools": [{"vendor": "sandbox", "name": TOOL, "version": TOOL_VERSION}],
                         "component": {"type": "container" if self.kind == "image" else "file",
                                       "name": self.target, "bom-ref": "target",
                                       **({"version": self.image["id"]} if self.image.get("id") else {})}},
            "components": components,
        }
        vulnerabilities = [f for f in self.findings if f.rule == "SBX-VULN"]
        if vulnerabilities:
            document["vulnerabilities"] = [
                {"id": f.title.split(" ", 1)[0], "source": {"name": self.vulnerability_db or "OSV"},
                 "ratings": [{"severity": f.severity}], "description": f.detail, "recommendation": f.fix,
                 "affects": [{"ref": f.location}]} for f in vulnerabilities]
        return document

    def sbom_json(self) -> str:
        return json.dumps(self.sbom(), indent=2) + "\n"
