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


def _sources(profile: Profile) -> dict:
    """What the launch will bind read-write, from the launcher's own decisions (sources.py):
    each rw bind's real host path, and the host ids files written there will have."""
    from .. import namespaces, sources
    from ..errors import SandboxError
    if not profile.namespaces.mount:
        return {}
    trees = sources.SourceTrees()
    try:
        idmap = namespaces.id_map_for(profile.process)
        trees.open(profile, idmap, clone=False)
    except (SandboxError, ValueError):
        return {}  # the launch refuses it, with the reason
    rw = {m.target for m in profile.filesystem.mounts if m.mode == "rw" and m.target in trees.resolved}
    if profile.namespaces.user:
        default_owner = [idmap.host_uid, idmap.host_gid]
    else:
        default_owner = [profile.process.user, profile.process.group]
    return {
        "rw_sources": {t: trees.resolved[t][0] for t in sorted(rw)},
        "write_owner": {t: list(trees.idmaps.get(t, default_owner)) for t in sorted(rw)},
        "allowed_system_paths": sorted(m.source for m in profile.filesystem.mounts if m.allow_system_path),
    }


def expectations(profile: Profile) -> dict:
    from .. import mounts, namespaces
    ns, fs = profile.namespaces, profile.filesystem
    plan = mounts.build_plan(profile) if ns.mount else None
    mount_targets = sorted({op.target for op in (plan.operations if plan else ())
                            if not isinstance(op, (mounts.Symlink, mounts.File))})
    new_net = namespaces.creates_network_namespace(ns, profile.network.mode)
    return {
        "namespaces": {"pid": ns.pid, "net": new_net, "mnt": ns.mount, "user": ns.user, "uts": ns.uts,
                       "ipc": ns.ipc, "cgroup": ns.cgroup, "time": ns.time},
        # The probe's words: "private" is a namespace of its own with more than loopback in it.
        "network": "host" if not new_net else {"none": "none", "bridge": "private"}.get(profile.network.mode, "private"),
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
        # Promises, whether or not this machine can keep them: one not kept is a FAIL unless the
        # profile lists it in limits.optional (then a WARN).
        "memory_limit": profile.limits.memory,
        "pids_limit": profile.limits.pids,
        "cpu_limit": profile.limits.cpus,
        "optional_limits": list(profile.limits.optional),
        "exec_allow": list(profile.exec.allow) if profile.exec.allow is not None else None,
        "stress": False,
        **_sources(profile),
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
    from ..launcher import Launch
    profile, probe_needs = _with_probe_executables(profile)
    expect = expectations(against or profile)
    expect["stress"] = stress
    if expect["exec_allow"] is not None:
        expect["exec_allow"] += probe_needs  # the probe must not pick one of these as "unlisted"
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
    if probe_needs:
        verdict.warnings = verdict.warnings + [f"exec.allow: the probe's own {', '.join(probe_needs)} added for "
                                               "this run"]
    try:
        inside = json.loads(result.stdout or b"{}").get("results", [])
    except ValueError:
        inside = []
    if not inside:
        raise SetupError("verify", 0, _why_no_report(profile, result))
    if any(r["id"] == "probe.stop" for r in inside):  # the probe said why it could not stop
        outside = [r for r in outside if r["id"] != "outside.unavailable"]
    verdict.results = inside + outside
    return verdict


def _why_no_report(profile: Profile, result) -> str:
    """python3 ran (it was found) but the probe printed nothing: say what stopped it."""
    if result.signal == signal.SIGSYS:
        return ("the probe (python3) was killed by the seccomp policy (SIGSYS): the policy kills a call "
                "python3 or the probe makes, so its isolation cannot be probed from inside")
    denied = _denied_calls(profile) if profile.seccomp is not None else []
    if denied:
        return (f"the probe (python3) could not run under this profile's seccomp policy, which denies "
                f"{', '.join(denied)} (exit {result.exit_code}, its errors are above); a policy learned "
                "from another command allows only what that command used: verify the profile it "
                "extends, or allow these calls")
    return f"the probe (python3) ran but did not report (exit {result.exit_code}, its errors are above)"


def _denied_calls(profile: Profile) -> list[str]:
    """The system calls the policy denies the probe, from a second launch that reports them."""
    from ..launcher import Launch
    source = os.memfd_create("sandbox-probe", os.MFD_CLOEXEC)
    try:
        os.write(source, PROBE_SOURCE.read_bytes())
        os.lseek(source, 0, os.SEEK_SET)
        launch = Launch(profile, ["python3", "-I", "-", "--json"], stdin=source, capture_output=True,
                        timeout=PROBE_TIMEOUT, forward_signals=False, seccomp_mode="report")
        try:
            result = launch.run()
        except Exception:  # noqa: BLE001 - only a diagnosis: the first error stands
            return []
    finally:
        os.close(source)
    return [v["syscall"] for v in result.violations]


def _cpu_bandwidth(pid: int) -> tuple[float | None, str] | None:
    """The smallest CPU bandwidth (cores) on the path of pid's cgroups: v2 cpu.max, v1 cfs quota;
    (None, where) when unlimited, None when no cpu controller is visible."""
    text = probe._try_read(f"/proc/{pid}/cgroup")
    if text is None:
        return None
    cgroups, mounts = probe.parse_cgroup(text), probe._mountinfo() or []
    found = None
    for controller, read in ((None, _cpu_max), ("cpu", _cfs_quota)):
        directory, top = probe._cgroup_dir(controller, cgroups, mounts)
        if directory is None:
            continue
        best, where = None, directory
        while True:
            cores = read(directory)
            if cores is not False:
                found = found or (None, directory)
                if cores is not None and (best is None or cores < best):
                    best, where = cores, directory
            if directory == top or len(directory) <= len(top):
                break
            directory = os.path.dirname(directory)
        if best is not None:
            return best, where
    return found


def _cpu_max(directory: str):
    text = probe._try_read(os.path.join(directory, "cpu.max"))
    if text is None:
        return False
    quota, period = text.split()[:2]
    return None if quota == "max" else int(quota) / int(period)


def _cfs_quota(directory: str):
    quota = probe._try_read(os.path.join(directory, "cpu.cfs_quota_us"))
    period = probe._try_read(os.path.join(directory, "cpu.cfs_period_us"))
    if quota is None or period is None:
        return False
    return None if int(quota) < 0 else int(quota) / int(period)


def _cpu_limit(pid: int, expect: dict) -> list[dict]:
    """outside.cgroups.cpu_limit: the profile's cpus, enforced or not (FAIL unless optional)."""
    want = expect.get("cpu_limit")
    if want is None:
        return []
    desc, expected = "the cpu limit matches the profile", f"<= {want} cores"
    seen = _cpu_bandwidth(pid)
    if seen is None:
        observed = "no cpu controller visible for the sandbox's cgroup"
    elif seen[0] is None:
        observed = f"unlimited ({seen[1]})"
    elif seen[0] <= want + 1e-6:
        return [probe.result("outside.cgroups.cpu_limit", "cgroups", desc, probe.PASS, expected,
                             f"{seen[0]:g} cores ({seen[1]})")]
    else:
        observed = f"{seen[0]:g} cores ({seen[1]})"
    if "cpus" in (expect.get("optional_limits") or ()):
        return [probe.result("outside.cgroups.cpu_limit", "cgroups", desc, probe.WARN, expected,
                             observed + "; optional in the profile (limits.optional)")]
    return [probe.result("outside.cgroups.cpu_limit", "cgroups", desc, probe.FAIL, expected, observed,
                         "not enforced: run where the sandbox gets a cgroup with the cpu controller "
                         "(e.g. systemd-run --user -p Delegate=yes), or list \"cpus\" in limits.optional")]


def _with_probe_executables(profile: Profile) -> tuple[Profile, list[str]]:
    """An [exec] allow list must let the probe itself (python3 and its loader) run: add what is
    missing, as named on this host, and say so."""
    allow = profile.exec.allow
    if allow is None:
        return profile, []
    from .. import execlist
    python = "/usr/bin/python3"
    needed = [python] + execlist.interpreter_chain(os.path.realpath(python))
    missing = [path for path in needed if not execlist.covered(allow, path)]
    if not missing:
        return profile, []
    from ..profile.model import Exec
    return profile.replace(exec=Exec(allow + tuple(missing))), missing


def _inspect_while_stopped(launch, thread: threading.Thread, context: dict) -> list[dict]:
    deadline = time.monotonic() + PROBE_TIMEOUT
    pid = None
    while thread.is_alive() and time.monotonic() < deadline:
        if pid is None and launch.init_pid:
            pid = _workload_pid(launch.init_pid)
        if pid is not None and _is_stopped(pid):
            try:
                return (probe.outside_checks(pid, context) + _cpu_limit(pid, context.get("expect") or {})
                        + segment_membership(launch, pid))
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
