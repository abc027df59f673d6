"""`sandbox verify PROFILE`: launch the profile with the probe as its workload and check what the
sandbox really enforces against what the profile asks for.

    host: plant canaries (listener, abstract socket, shm, process, env var), note namespace inodes
    launch the profile: python3 -I - --json --context CTX --stop-when-done  (probe source on stdin)
    probe, inside: every inside check, print JSON, SIGSTOP itself
    host: outside checks on the stopped probe (/proc/PID/status, ns links, maps, cgroup), SIGCONT
    merge both lists into one report

The probe's source is fed on stdin so the verifier adds no mount and no fd to the sandbox it checks.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import field
from pathlib import Path

from ..compiled_dataclass import dataclass
from ..errors import ExecError, SetupError
from ..profile.model import DEFAULT_DEVICES, MASKED_PROC_PATHS, Profile
from . import probe, report
from .canaries import Canaries

PROBE_SOURCE = Path(probe.__file__)
PROBE_TIMEOUT = 120.0


def expectations(profile: Profile, cgroup_limits: bool = True) -> dict:
    from .. import mounts
    ns, fs = profile.namespaces, profile.filesystem
    plan = mounts.build_plan(profile) if ns.mount else None
    mount_targets = sorted({op.target for op in (plan.operations if plan else ())
                            if not isinstance(op, (mounts.Symlink, mounts.File))})
    return {
        "namespaces": {"pid": ns.pid, "net": ns.network, "mnt": ns.mount, "user": ns.user, "uts": ns.uts,
                       "ipc": ns.ipc, "cgroup": ns.cgroup, "time": ns.time},
        "network": {"none": "none", "host": "host", "bridge": "private"}[profile.network.mode],
        "capabilities": list(profile.capabilities.keep),
        "seccomp": profile.seccomp is not None,
        "no_new_privs": True,
        "allow_userns": profile.seccomp is None,
        "readonly_paths": sorted({m.target for m in fs.mounts if m.mode == "ro" and os.path.exists(m.source)}
                                 | ({"/"} if fs.readonly_root else set())),
        "rw_paths": sorted({m.target for m in fs.mounts if m.mode == "rw"} | {t.target for t in fs.tmpfs}),
        "masked_paths": [p for p in MASKED_PROC_PATHS if p.startswith("/proc/")] + list(fs.masked_paths),
        "mounts": mount_targets,
        "devices": [d for d in fs.devices if d not in DEFAULT_DEVICES],
        "hostname": profile.process.hostname if ns.uts else None,
        "new_session": profile.process.new_session,
        "memory_limit": profile.limits.memory if cgroup_limits else None,
        "pids_limit": profile.limits.pids if cgroup_limits else None,
        "stress": False,
        **(egress_canaries(profile.network.egress) if profile.network.mode == "bridge" and ns.network else {}),
    }


# Destinations tried as "refused" when the profile does not name them (documentation networks:
# if a rule were missing, nothing answers there anyway).
REFUSED_CANDIDATES = ("192.0.2.1", "198.51.100.1", "203.0.113.1")


def egress_canaries(egress: tuple[str, ...]) -> dict:
    """bridge mode: one destination the allowlist names (to be reached) and up to two it does not
    (to be refused at once): another port of the allowed address, and another address."""
    import ipaddress
    from ..net.attach import _covered, resolve_egress
    rules, _ = resolve_egress(egress)
    allowed = None
    for rule in rules:
        if rule["network"] and rule["ports"]:
            address = str(ipaddress.IPv4Network(rule["network"])[0 if rule["network"].endswith("/32") else 1])
            allowed = [address, rule["ports"][0], "tcp" if "tcp" in rule["protocols"] else "udp"]
            break
    refused = []
    if allowed is not None:
        port = next((p for p in (9, 1, 7, 13, 37, 79) if not _covered(rules, allowed[0], p, allowed[2])), None)
        if port is not None:
            refused.append([allowed[0], port, allowed[2]])
    other = next((a for a in REFUSED_CANDIDATES if not _covered(rules, a, 9, "tcp")), None)
    if other is not None:
        refused.append([other, 9, "tcp"])
    return {"egress_allowed": allowed, "egress_refused": refused}


@dataclass
class VerifyReport:
    profile: str
    results: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return report.exit_status(self.results) == 0

    def render(self, colour: bool = False) -> str:
        text = report.render(self.results, colour=colour)
        return f"Verification of profile '{self.profile}'\n{text}"

    def to_json(self) -> str:
        return report.to_json(self.results, profile=self.profile, warnings=self.warnings)


def _workload_pid(init_pid: int) -> int | None:
    try:
        with open(f"/proc/{init_pid}/task/{init_pid}/children") as handle:
            children = handle.read().split()
        return int(children[0]) if children else None
    except (OSError, ValueError):
        return None


def _is_stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except OSError:
        return False


def verify_profile(profile: Profile, *, stress: bool = False, against: Profile | None = None) -> VerifyReport:
    """Launch `profile` with the probe and return the merged inside and outside results.

    The expectations come from `profile` itself, or from `against` (e.g. "does this sandbox hold
    to what `untrusted` promises?"), in which case its relaxations show as failures."""
    from .. import cgroups
    from ..launcher import Launch
    limits_possible = cgroups.detect().kind != "none"
    expect = expectations(against or profile, cgroup_limits=limits_possible)
    expect["stress"] = stress
    verdict = VerifyReport(profile.name)
    with Canaries(expect=expect) as context:
        argv = ["python3", "-I", "-", "--json", "--context", json.dumps(context), "--stop-when-done"]
        source_r, source_w = os.pipe2(os.O_CLOEXEC)
        # stderr stays the caller's: run from a terminal, the probe then tries TIOCSTI on it, the
        # very injection a sandboxed program would attempt.
        launch = Launch(profile, argv, stdin=source_r, capture_output="stdout", timeout=PROBE_TIMEOUT,
                        forward_signals=False)
        outcome: dict = {}

        def run_launch():
            try:
                outcome["result"] = launch.run()
            except BaseException as exc:  # re-raised in the caller's thread
                outcome["error"] = exc
        def feed_source():
            try:
                with os.fdopen(source_w, "wb") as handle:
                    handle.write(PROBE_SOURCE.read_bytes())
            except OSError:
                pass  # the sandbox never started reading: the launch reports why
        thread = threading.Thread(target=run_launch, name="sandbox-verify")
        feeder = threading.Thread(target=feed_source, name="sandbox-verify-feed", daemon=True)
        thread.start()
        feeder.start()
        outside = _inspect_while_stopped(launch, thread, context)
        thread.join()
        os.close(source_r)  # a feeder still blocked on a full pipe now gets EPIPE
        feeder.join(timeout=5)
    if "error" in outcome:
        if isinstance(outcome["error"], ExecError):  # the verifier's fault to explain, not the user's command
            raise SetupError("verify", outcome["error"].errno, "no python3 inside the sandbox to run the probe "
                             "with; the profile must make /usr/bin/python3 available (e.g. bind /usr)")
        raise outcome["error"]
    result = outcome["result"]
    verdict.warnings = result.warnings
    try:
        inside = json.loads(result.stdout or b"{}").get("results", [])
    except ValueError:
        inside = []
    if not inside:
        raise SetupError("verify", 0, f"the probe did not report (exit {result.exit_code}, its errors are "
                                      "above); the profile needs python3 inside (e.g. /usr bound)")
    verdict.results = inside + outside
    return verdict


def _inspect_while_stopped(launch, thread: threading.Thread, context: dict) -> list[dict]:
    deadline = time.monotonic() + PROBE_TIMEOUT
    pid = None
    while thread.is_alive() and time.monotonic() < deadline:
        if pid is None and launch.init_pid:
            pid = _workload_pid(launch.init_pid)
        if pid is not None and _is_stopped(pid):
            try:
                return probe.outside_checks(pid, context) + segment_membership(launch, pid)
            finally:
                os.kill(pid, signal.SIGCONT)
        time.sleep(0.01)
    return [probe.result("outside.unavailable", "process", "the probe could be inspected from outside",
                         probe.WARN, "a stopped probe process", "it ended before it could be inspected",
                         "run the verifier again")]


def segment_membership(launch, pid: int) -> list[dict]:
    """bridge mode, from the host: the sandbox's interface has the address its segment leased it,
    and the other end of its veth sits on that segment's bridge."""
    attachment = getattr(launch, "network", None)
    if attachment is None:
        return []
    desc = "the sandbox sits on its segment, with the address leased to it"
    try:
        ok, observed = attachment.membership(pid)
    except Exception as exc:  # noqa: BLE001 - a check that cannot look is a warning, not a crash
        return [probe.result("outside.net.segment", "network", desc, probe.WARN, "on the segment",
                             f"could not look: {exc}")]
    return [probe.result("outside.net.segment", "network", desc, probe.PASS if ok else probe.FAIL,
                         f"{attachment.address} on segment {attachment.segment}", observed,
                         "" if ok else "the segment's state and the kernel disagree: run `sandbox gc`")]
