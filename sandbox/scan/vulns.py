"""Known vulnerabilities: the SBOM matched against an OSV database directory, offline.

The directory holds OSV JSON records (one vulnerability a file, in any subdirectories, as OSV's
per-ecosystem exports unpack). A package is affected when its ecosystem and name match an
`affected` entry and its version is listed there or lies in one of its ranges, each compared the
ecosystem's own way: dpkg for Debian (epochs, `~`), PEP 440 for PyPI, SemVer for npm, apk's
rules for Alpine. Severity comes from the record (database_specific or ecosystem_specific), else
from its CVSS v3 vector, scored here.
"""
from __future__ import annotations

import json
import math
import os
import re

from .findings import Component, Finding

ECOSYSTEMS = {"deb": "Debian", "apk": "Alpine", "pypi": "PyPI", "npm": "npm"}


# ---------------------------------------------------------------- dpkg (Debian policy 5.6.12)

def _dpkg_order(char: str) -> int:
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _dpkg_part(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _dpkg_order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            bc = _dpkg_order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ac != bc:
                return -1 if ac < bc else 1
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return -1 if first_diff < 0 else 1
    return 0


def _dpkg_split(version: str) -> tuple[int, str, str]:
    epoch, sep, rest = version.partition(":")
    if not sep:
        epoch, rest = "0", version
    upstream, sep, revision = rest.rpartition("-")
    if not sep:
        upstream, revision = rest, ""
    return int(epoch) if epoch.isdigit() else 0, upstream, revision


def compare_dpkg(a: str, b: str) -> int:
    ea, ua, ra = _dpkg_split(a)
    eb, ub, rb = _dpkg_split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _dpkg_part(ua, ub) or _dpkg_part(ra, rb)


# ---------------------------------------------------------------- PEP 440

_PEP440 = re.compile(r"^\s*v?(?:(\d+)!)?(\d+(?:\.\d+)*)(?:[-_.]?(a|b|c|rc|alpha|beta|pre|preview)[-_.]?(\d*))?"
                     r"(?:-(\d+)|[-_.]?(post|rev|r)[-_.]?(\d*))?(?:[-_.]?(dev)[-_.]?(\d*))?(?:\+([a-z0-9.]+))?\s*$",
                     re.I)


def pep440_key(version: str):
    match = _PEP440.match(version)
    if not match:
        return (-1, (), ("~", 0), (-1,), (1,), version)  # invalid: ordered before every valid version
    epoch, release, pre_l, pre_n, post_implicit, post_l, post_n, dev_l, dev_n, local = match.groups()
    numbers = [int(x) for x in release.split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    if pre_l:
        letter = {"alpha": "a", "beta": "b", "c": "rc", "pre": "rc", "preview": "rc"}.get(pre_l.lower(), pre_l.lower())
        pre = (letter, int(pre_n or 0))
    elif dev_l and not (post_l or post_implicit):
        pre = ("", 0)  # X.devN sorts before X.aN
    else:
        pre = ("z", 0)  # a final release sorts after its pre-releases
    post = (int(post_implicit),) if post_implicit else (int(post_n or 0),) if post_l else (-1,)
    dev = (int(dev_n or 0),) if dev_l else (float("inf"),)
    local_key = tuple((0, int(p)) if p.isdigit() else (-1, p) for p in (local or "").lower().split(".") if p)
    return (int(epoch or 0), tuple(numbers), pre, post, dev, local_key)


def compare_pep440(a: str, b: str) -> int:
    ka, kb = pep440_key(a), pep440_key(b)
    try:
        return (ka > kb) - (ka < kb)
    except TypeError:
        return (str(ka) > str(kb)) - (str(ka) < str(kb))


# ---------------------------------------------------------------- SemVer 2.0 (npm)

def semver_key(version: str):
    text = version.strip().lstrip("v=")
    text = text.split("+", 1)[0]
    core, _, pre = text.partition("-")
    numbers = []
    for part in core.split(".")[:3]:
        digits = re.match(r"\d*", part).group(0)
        numbers.append(int(digits) if digits else 0)
    while len(numbers) < 3:
        numbers.append(0)
    if not pre:
        return (tuple(numbers), (1,))
    identifiers = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (tuple(numbers), (0, identifiers))


def compare_semver(a: str, b: str) -> int:
    ka, kb = semver_key(a), semver_key(b)
    return (ka > kb) - (ka < kb)


# ---------------------------------------------------------------- apk (Alpine)

def compare_apk(a: str, b: str) -> int:
    """apk versions: numbers, letters, _suffixes (alpha < beta < pre < rc < none < p), -rN."""
    suffixes = {"alpha": -4, "beta": -3, "pre": -2, "rc": -1, "": 0, "cvs": 1, "svn": 2, "git": 3, "hg": 4, "p": 5}

    def key(version: str):
        main, _, release = version.partition("-r")
        body, *rest = main.split("_")
        numbers = []
        for token in re.findall(r"\d+|[a-z]", body):
            numbers.append((int(token), "") if token.isdigit() else (0, token))
        suffix_keys = []
        for suffix in rest:
            name = re.match(r"[a-z]*", suffix).group(0)
            number = suffix[len(name):]
            suffix_keys.append((suffixes.get(name, 0), int(number) if number.isdigit() else 0))
        if not suffix_keys:
            suffix_keys = [(0, 0)]
        return (tuple(numbers), tuple(suffix_keys), int(release) if release.isdigit() else 0)
    ka, kb = key(a), key(b)
    return (ka > kb) - (ka < kb)


COMPARE = {"deb": compare_dpkg, "pypi": compare_pep440, "npm": compare_semver, "apk": compare_apk}


# ---------------------------------------------------------------- the database

def load_database(directory: str) -> dict[tuple[str, str], list[dict]]:
    """(ecosystem base, package name) -> the OSV records naming it."""
    index: dict[tuple[str, str], list[dict]] = {}
    if not os.path.isdir(directory):
        raise FileNotFoundError(directory)
    for folder, _, names in os.walk(directory):
        for name in sorted(names):
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(folder, name), "rb") as handle:
                    record = json.load(handle)
            except (OSError, ValueError):
                continue
            if not isinstance(record, dict) or not isinstance(record.get("affected"), list):
                continue
            for affected in record["affected"]:
                package = (affected or {}).get("package") or {}
                ecosystem = str(package.get("ecosystem", "")).split(":")[0]
                name_key = str(package.get("name", ""))
                if ecosystem == "PyPI":
                    name_key = re.sub(r"[-_.]+", "-", name_key).lower()
                index.setdefault((ecosystem, name_key), []).append(record)
    return index


def _ecosystem_matches(wanted: str, component: Component) -> bool:
    base, _, release = wanted.partition(":")
    if base != ECOSYSTEMS.get(component.ecosystem):
        return False
    if release and component.distro_version:
        return release.lstrip("v").split(".")[:2] == component.distro_version.lstrip("v").split(".")[:2] or \
            release.lstrip("v") == component.distro_version.lstrip("v").split(".")[0]
    return True


def affected(component: Component, entry: dict) -> tuple[bool, str]:
    """(is the component's version affected by this `affected` entry, the first fixed version)."""
    compare = COMPARE[component.ecosystem]
    version = component.version
    if version in (entry.get("versions") or ()):
        return True, _fixed(entry)
    for range_ in entry.get("ranges") or ():
        if range_.get("type") not in ("ECOSYSTEM", "SEMVER"):
            continue
        events = range_.get("events") or []
        introduced = None
        for event in events:
            if "introduced" in event:
                introduced = event["introduced"]
            elif introduced is not None and ("fixed" in event or "last_affected" in event or "limit" in event):
                above = introduced == "0" or compare(version, introduced) >= 0
                if "fixed" in event:
                    below = compare(version, event["fixed"]) < 0
                elif "last_affected" in event:
                    below = compare(version, event["last_affected"]) <= 0
                else:
                    below = compare(version, event["limit"]) < 0
                if above and below:
                    return True, event.get("fixed", "")
                introduced = None
        if introduced is not None and (introduced == "0" or compare(version, introduced) >= 0):
            return True, ""
    return False, ""


def _fixed(entry: dict) -> str:
    for range_ in entry.get("ranges") or ():
        for event in range_.get("events") or ():
            if "fixed" in event:
                return event["fixed"]
    return ""


def severity_of(record: dict, entry: dict) -> str:
    for source in (entry.get("ecosystem_specific") or {}, entry.get("database_specific") or {},
                   record.get("database_specific") or {}):
        value = str(source.get("severity", "")).lower()
        if value in ("low", "medium", "high", "critical"):
            return value
        if value == "moderate":
            return "medium"
        if value in ("negligible", "unimportant"):
            return "low"
    best = None
    for item in record.get("severity") or ():
        vector = str(item.get("score", ""))
        if item.get("type") in ("CVSS_V3", "CVSS_V4") and vector.startswith("CVSS:3"):
            score = cvss3_score(vector)
            if score is not None:
                best = max(best or 0.0, score)
    if best is None:
        return "medium"  # unrated: neither ignored nor alarming
    return "critical" if best >= 9.0 else "high" if best >= 7.0 else "medium" if best >= 4.0 else \
        "low" if best > 0 else "info"


def cvss3_score(vector: str) -> float | None:
    """The CVSS v3.x base score of a vector (FIRST's specification)."""
    try:
        metrics = dict(part.split(":", 1) for part in vector.split("/")[1:])
        av = {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2}[metrics["AV"]]
        ac = {"L": 0.77, "H": 0.44}[metrics["AC"]]
        changed = metrics["S"] == "C"
        pr = {"N": 0.85, "L": 0.68 if changed else 0.62, "H": 0.5 if changed else 0.27}[metrics["PR"]]
        ui = {"N": 0.85, "R": 0.62}[metrics["UI"]]
        c, i, a = ({"H": 0.56, "L": 0.22, "N": 0.0}[metrics[m]] for m in ("C", "I", "A"))
    except (KeyError, ValueError):
        return None
    iss = 1 - (1 - c) * (1 - i) * (1 - a)
    impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15 if changed else 6.42 * iss
    exploitability = 8.22 * av * ac * pr * ui
    if impact <= 0:
        return 0.0
    raw = min(1.08 * (impact + exploitability), 10) if changed else min(impact + exploitability, 10)
    return math.ceil(raw * 10 - 1e-9) / 10


def match(components: list[Component], database: dict) -> list[Finding]:
    found: list[Finding] = []
    for component in components:
        names = {component.name}
        if component.source:
            names.add(component.source)  # Debian's OSV records name source packages
        seen = set()
        for name in sorted(names):
            for record in database.get((ECOSYSTEMS.get(component.ecosystem, ""), name), ()):
                if record.get("id") in seen or record.get("withdrawn"):
                    continue
                for entry in record["affected"]:
                    package = entry.get("package") or {}
                    package_name = package.get("name", "")
                    if component.ecosystem == "pypi":
                        package_name = re.sub(r"[-_.]+", "-", package_name).lower()
                    if package_name != name or not _ecosystem_matches(str(package.get("ecosystem", "")), component):
                        continue
                    hit, fixed = affected(component, entry)
                    if not hit:
                        continue
                    seen.add(record.get("id"))
                    aliases = [a for a in record.get("aliases") or () if a.startswith("CVE-")]
                    summary = record.get("summary") or record.get("details", "")[:100]
                    title = f"{record.get('id')} {summary}".strip()
                    fix = (f"upgrade {component.name} to {fixed} or later" if fixed
                           else "no fixed version is known: remove the package or accept the risk")
                    detail = f"{component.name} {component.version}" + (f" ({', '.join(aliases)})" if aliases else "")
                    found.append(Finding("SBX-VULN", component.purl, detail, severity=severity_of(record, entry),
                                         fix=fix, title=title))
                    break
    return found
