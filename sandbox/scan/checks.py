"""The checks: files, credentials, image configuration. Each yields Findings.

Contents are read only where credentials live (configuration and key files by name or extension,
outside documentation and test trees), at most READ_LIMIT bytes each: that keeps a scan of a full
/usr to a few seconds, and it is also why a credential pasted into a binary is not found.
"""
from __future__ import annotations

import datetime
import posixpath
import re

from .findings import Finding
from .tree import Entry

READ_LIMIT = 256 << 10
SPARSE_SIZE = 1 << 30
OLD_DAYS = 365

# Names and extensions whose contents are read for credentials.
SECRET_NAMES = {".env", ".netrc", ".pgpass", ".npmrc", ".pypirc", ".git-credentials", ".dockercfg", "config.json",
                "credentials", "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", ".htpasswd", "settings.xml",
                "wp-config.php", ".s3cfg", ".boto", "secrets", ".bash_history", ".ash_history", ".psql_history",
                ".mysql_history"}
SECRET_EXTENSIONS = {".env", ".pem", ".key", ".p8", ".conf", ".cfg", ".ini", ".cnf", ".yaml", ".yml", ".toml",
                     ".json", ".properties", ".xml", ".sh", ".py", ".js", ".ts", ".rb", ".php", ".txt", ".config",
                     ".tf", ".tfvars", ".ovpn"}
# Trees full of examples and test keys: reading them finds noise, not secrets.
NOISE_DIRS = ("/usr/share/doc", "/usr/share/man", "/usr/share/info", "/usr/share/locale", "/usr/share/i18n",
              "/usr/share/zoneinfo", "/usr/include", "/usr/share/perl", "/usr/share/ca-certificates",
              "/etc/ssl/certs", "/proc", "/sys")
NOISE_PARTS = ("/test/", "/tests/", "/testing/", "/testdata/", "/test_data/", "/fixtures/", "/examples/",
               "/node_modules/", "/site-packages/", "/dist-packages/", "/.git/")
# Under /usr only key files are read: programs and libraries are not where deployments keep secrets.
USR_EXTENSIONS = {".pem", ".key", ".env", ".p8"}

PRIVATE_KEY = re.compile(rb"-----BEGIN ((RSA|DSA|EC|OPENSSH|ENCRYPTED|PGP) )?PRIVATE KEY( BLOCK)?-----")
CLOUD_KEYS = [
    (re.compile(rb"\b((AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16})\b"), "an AWS access key id"),
    (re.compile(rb"(?i)aws_?secret_?access_?key\s*[=:]\s*[\"']?([A-Za-z0-9/+=]{40})\b"), "an AWS secret access key"),
    (re.compile(rb"\b(AIza[0-9A-Za-z_\-]{35})\b"), "a Google API key"),
    (re.compile(rb"\"type\":\s*\"service_account\"[^}]*\"private_key\""), "a Google service account key"),
    (re.compile(rb"(?i)DefaultEndpointsProtocol=https?;AccountName=[^;]+;AccountKey=([A-Za-z0-9+/=]{40,})"),
     "an Azure storage account key"),
]
TOKENS = [
    (re.compile(rb"\b(gh[pousr]_[A-Za-z0-9]{36,})\b"), "a GitHub token"),
    (re.compile(rb"\b(github_pat_[A-Za-z0-9_]{40,})\b"), "a GitHub token"),
    (re.compile(rb"\b(glpat-[A-Za-z0-9_\-]{20,})\b"), "a GitLab token"),
    (re.compile(rb"\b(xox[baprs]-[A-Za-z0-9-]{10,})\b"), "a Slack token"),
    (re.compile(rb"\b(sk_live_[A-Za-z0-9]{20,})\b"), "a Stripe secret key"),
    (re.compile(rb"\b(npm_[A-Za-z0-9]{36})\b"), "an npm token"),
    (re.compile(rb"\b(pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,})"), "a PyPI token"),
    (re.compile(rb"//[^/\s]+/:_authToken=([^\s$][^\s]{8,})"), "an npm registry token"),
    (re.compile(rb"\"auth\"\s*:\s*\"([A-Za-z0-9+/=]{12,})\""), "a registry login (docker config.json)"),
]
URL_CREDENTIALS = re.compile(rb"\b[a-z][a-z0-9+.-]{1,20}://([^\s:/@\"'<>]{1,64}):([^\s@/\"'<>]{3,128})@[\w.-]+")
PASSWORD_LINE = re.compile(
    rb"(?im)^\s*(?:export\s+)?[\"']?([A-Za-z0-9_.\-]*(?:password|passwd|passphrase|secret|api_?key|access_?key"
    rb"|auth_?token|private_?key|client_?secret|token))[\"']?\s*(?:=|:|=>)\s*[\"']?([^\s\"'#;,]{4,})")
PLACEHOLDERS = re.compile(rb"(?i)^(\$\{?[A-Za-z_][\w]*\}?|%\(?\w+\)?s?|<[^>]*>|\{\{.*\}\}|x{3,}|\*{3,}|null|none|nil|"
                          rb"true|false|changeme-in-production|example|your[_-].*|\.\.\.|env\(.*|os\.environ.*|"
                          rb"getenv.*|process\.env.*|required|optional|string|str|bool|int|file|path)$")
SECRET_NAME = re.compile(r"(?i)(password|passwd|secret|token|api_?key|access_?key|private_?key|credential|auth)")


def _redact(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if len(text) <= 8:
        return text[:2] + "*" * max(0, len(text) - 2)
    return text[:4] + "*" * 4 + text[-2:]


# ---------------------------------------------------------------- files

class FileChecks:
    """Metadata checks, entry by entry; `finish()` adds what needs the whole tree."""

    def __init__(self, source_kind: str, image_root: bool, top: str = "/"):
        self.image_root = image_root
        self.top = top.rstrip("/") or "/"
        self.findings: list[Finding] = []
        self.owners: list[tuple[str, int, int]] = []
        self.links_seen: dict[tuple[int, int], list] = {}

    def check(self, entry: Entry) -> None:
        add = self.findings.append
        if entry.kind in ("char", "block"):
            add(Finding("SBX-FILE-DEVICE", entry.path, f"{entry.kind} device"))
        elif entry.kind in ("fifo", "socket") and not self.image_root:
            add(Finding("SBX-FILE-FIFO", entry.path, entry.kind))
        if entry.kind == "file":
            if entry.mode & 0o6000:
                bits = " and ".join(b for b, m in (("setuid", 0o4000), ("setgid", 0o2000)) if entry.mode & m)
                owner = entry.uid if entry.mode & 0o4000 else entry.gid
                severity = "high" if owner == 0 else "medium"
                add(Finding("SBX-FILE-SETUID", entry.path, f"{bits}, owner {entry.uid}:{entry.gid}, mode "
                            f"{entry.mode:04o}", severity=severity))
            if entry.capabilities:
                add(Finding("SBX-FILE-CAPS", entry.path, "security.capability is set"))
            if entry.mode & 0o002:
                add(Finding("SBX-FILE-WORLD-WRITABLE", entry.path, f"mode {entry.mode:04o}"))
            if entry.size >= SPARSE_SIZE and entry.inode is not None and entry.blocks * 512 < entry.size // 8:
                add(Finding("SBX-FILE-SPARSE", entry.path, f"{entry.size} bytes, {entry.blocks * 512} on disk"))
            if entry.nlink > 1 and entry.inode is not None:
                self.links_seen.setdefault(entry.inode, [entry.path, entry.nlink, 0])[2] += 1
        elif entry.kind == "dir" and entry.mode & 0o002 and not entry.mode & 0o1000:
            add(Finding("SBX-DIR-WORLD-WRITABLE", entry.path, f"mode {entry.mode:04o}"))
        elif entry.kind == "symlink" and entry.link:
            self._symlink(entry)
        self.owners.append((entry.path, entry.uid, entry.gid))

    def _symlink(self, entry: Entry) -> None:
        target = entry.link
        if target.startswith("/"):
            if self.image_root:
                return  # resolved inside the image's root, where it belongs
            self.findings.append(Finding("SBX-SYMLINK-ESCAPE", entry.path, f"-> {target} (an absolute path: on the "
                                         "host, a host file)"))
            return
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), target))
        climbs = _depth_escapes(posixpath.dirname(entry.path), target, self.top)
        if climbs:
            severity = "low" if self.image_root else "medium"
            self.findings.append(Finding("SBX-SYMLINK-ESCAPE", entry.path, f"-> {target} (climbs above "
                                         f"{self.top}; {resolved})", severity=severity))

    def finish(self, passwd: set[int] | None, groups: set[int] | None) -> list[Finding]:
        for inode, (path, nlink, seen) in self.links_seen.items():
            if seen < nlink:
                self.findings.append(Finding("SBX-HARDLINK-OUTSIDE", path, f"{nlink} links, {seen} of them in "
                                             "the tree"))
        if passwd:
            unknown: dict[tuple[str, int], list[str]] = {}
            for path, uid, gid in self.owners:
                if uid not in passwd:
                    unknown.setdefault(("uid", uid), []).append(path)
                if groups and gid not in groups:
                    unknown.setdefault(("gid", gid), []).append(path)
            for (what, number), paths in sorted(unknown.items()):
                more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
                self.findings.append(Finding("SBX-FILE-UNKNOWN-OWNER", paths[0],
                                             f"{what} {number} is in no /etc/{'passwd' if what == 'uid' else 'group'} "
                                             f"entry ({len(paths)} files: {paths[0]}{more})"))
        return self.findings


def _depth_escapes(directory: str, target: str, top: str) -> bool:
    """Does following relative `target` from `directory` climb above `top`?"""
    base = [p for p in directory.split("/") if p]
    floor = len([p for p in top.split("/") if p])
    depth = len(base)
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            depth -= 1
            if depth < floor:
                return True
        else:
            depth += 1
    return False


def ids_from(data: bytes | None) -> set[int] | None:
    if data is None:
        return None
    ids = set()
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2].isdigit():
            ids.add(int(fields[2]))
    return ids


# ---------------------------------------------------------------- credentials in files

def wants_content(entry: Entry) -> bool:
    if entry.kind != "file" or entry.size == 0 or entry.size > READ_LIMIT * 4:
        return False
    path = entry.path
    if path.startswith(NOISE_DIRS) or any(part in path for part in NOISE_PARTS):
        return False
    name = posixpath.basename(path)
    extension = posixpath.splitext(name)[1].lower()
    if path.startswith("/usr/") and not path.startswith("/usr/local/etc/"):
        return name in SECRET_NAMES or extension in USR_EXTENSIONS
    return name in SECRET_NAMES or extension in SECRET_EXTENSIONS or name.endswith(".env") or \
        name.startswith(".env.")


def content_findings(path: str, data: bytes) -> list[Finding]:
    found: list[Finding] = []
    if b"\0" in data[:8192]:
        return found
    name = posixpath.basename(path)
    if name == ".env" or name.endswith(".env") or name.startswith(".env."):
        found.append(Finding("SBX-SECRET-ENV-FILE", path, "an environment file"))
    if PRIVATE_KEY.search(data):
        kind = PRIVATE_KEY.search(data).group(0).decode()[11:-5]
        found.append(Finding("SBX-SECRET-PRIVATE-KEY", path, kind.lower()))
    for pattern, what in CLOUD_KEYS:
        match = pattern.search(data)
        if match:
            found.append(Finding("SBX-SECRET-CLOUD-KEY", path, f"{what} ({_redact(match.group(1) if match.groups() else match.group(0))})"))
    for pattern, what in TOKENS:
        match = pattern.search(data)
        if match:
            found.append(Finding("SBX-SECRET-TOKEN", path, f"{what} ({_redact(match.group(1))})"))
    match = URL_CREDENTIALS.search(data)
    if match and not PLACEHOLDERS.match(match.group(2)):
        found.append(Finding("SBX-SECRET-URL", path, f"user {match.group(1).decode('utf-8', 'replace')} with a "
                             f"password ({_redact(match.group(2))})"))
    for match in PASSWORD_LINE.finditer(data):
        key, value = match.group(1), match.group(2)
        if PLACEHOLDERS.match(value) or (value.startswith(b"$") or b"://" in value):
            continue
        found.append(Finding("SBX-SECRET-PASSWORD", path, f"{key.decode('utf-8', 'replace')} = {_redact(value)}"))
        break  # one a file: the file is the thing to fix
    return found


# ---------------------------------------------------------------- image configuration

def config_findings(config: dict, now: float | None = None) -> list[Finding]:
    found: list[Finding] = []
    inner = config.get("config") or {}
    user = (inner.get("User") or "").strip()
    if not user:
        found.append(Finding("SBX-CONFIG-NO-USER", "config:User", "no USER: the image runs as root"))
    elif user.split(":")[0] in ("root", "0"):
        found.append(Finding("SBX-CONFIG-ROOT", "config:User", f"USER {user}"))
    ports = inner.get("ExposedPorts") or {}
    if any(str(port).split("/")[0] == "22" for port in ports):
        found.append(Finding("SBX-CONFIG-SSH-PORT", "config:ExposedPorts", "22/tcp"))
    for index, item in enumerate(inner.get("Env") or ()):
        if not isinstance(item, str) or "=" not in item:
            continue
        name, _, value = item.partition("=")
        if value and SECRET_NAME.search(name) and not PLACEHOLDERS.match(value.encode()) and name not in (
                "PATH", "GPG_KEY", "GPG_KEYS"):
            found.append(Finding("SBX-CONFIG-SECRET-ENV", f"config:Env[{index}]", f"{name}={_redact(value)}"))
        else:
            for finding in content_findings(f"config:Env[{index}]", item.encode()):
                if finding.rule != "SBX-SECRET-ENV-FILE":
                    finding.rule = "SBX-CONFIG-SECRET-ENV"
                    finding.title, finding.fix = "", ""
                    finding.__post_init__()
                    found.append(finding)
    for label, value in (inner.get("Labels") or {}).items():
        text = f"{label}={value}"
        if isinstance(value, str) and value and SECRET_NAME.search(label) and not PLACEHOLDERS.match(value.encode()):
            found.append(Finding("SBX-CONFIG-SECRET-LABEL", f"config:Labels.{label}", f"{label}={_redact(value)}"))
        elif any(p.search(text.encode()) for p, _ in CLOUD_KEYS + TOKENS) or PRIVATE_KEY.search(text.encode()):
            found.append(Finding("SBX-CONFIG-SECRET-LABEL", f"config:Labels.{label}", "a credential in the value"))
    for index, step in enumerate(config.get("history") or ()):
        created_by = str(step.get("created_by", "")) if isinstance(step, dict) else ""
        if re.search(r"\bADD\b.*\bhttps?://", created_by) or re.search(r"ADD (file|multi):[^ ]* in .*https?://",
                                                                        created_by):
            url = re.search(r"https?://\S+", created_by).group(0)
            found.append(Finding("SBX-CONFIG-ADD-REMOTE", f"config:history[{index}]", f"ADD {url}"))
        data = created_by.encode()
        secret = (any(p.search(data) for p, _ in CLOUD_KEYS + TOKENS) or PRIVATE_KEY.search(data)
                  or URL_CREDENTIALS.search(data)
                  or re.search(r"(?i)(--password[= ]|(PASSWORD|SECRET|TOKEN|API_KEY)=)(?!\$)\S{4,}", created_by))
        if secret:
            found.append(Finding("SBX-CONFIG-SECRET-HISTORY", f"config:history[{index}]",
                                 _redact(created_by[:60]) if len(created_by) > 8 else "a credential"))
    created = config.get("created")
    if not created or str(created).startswith(("0001-01-01", "1970-01-01")):
        found.append(Finding("SBX-CONFIG-NO-DATE", "config:created", str(created or "unset")))
    else:
        when = parse_time(str(created))
        if when is not None:
            import time
            now = time.time() if now is None else now
            age = (now - when.timestamp()) / 86400
            if age > OLD_DAYS:
                found.append(Finding("SBX-CONFIG-OLD", "config:created", f"built {str(created)[:10]}, {int(age)} "
                                     f"days ago", severity="medium" if age > 2 * OLD_DAYS else "low"))
    return found


def parse_time(text: str) -> datetime.datetime | None:
    """RFC 3339 as image configs write it (nanoseconds, Z), or None."""
    match = re.match(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$", text.strip())
    if not match:
        return None
    fraction = (match.group(3) or "")[:7]
    zone = match.group(4) or "Z"
    zone = "+00:00" if zone == "Z" else zone
    try:
        return datetime.datetime.fromisoformat(f"{match.group(1)}T{match.group(2)}{fraction}{zone}")
    except ValueError:
        return None
