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
        "network": "none" if profile.network.mode == "none" else "host",
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
        "exec_allow": list(profile.exec.allow) if profile.exec.allow is not None else None,
        "stress": False,
    }


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
    profile, probe_needs = _with_probe_executables(profile)
    expect = expectations(against or profile, cgroup_limits=limits_possible)
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
        raise SetupError("verify", 0, f"the probe did not report (exit {result.exit_code}, its errors are "
                                      "above); the profile needs python3 inside (e.g. /usr bound)")
    verdict.results = inside + outside
    return verdict


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
                return probe.outside_checks(pid, context)
            finally:
                os.kill(pid, signal.SIGCONT)
        time.sleep(0.01)
    return [probe.result("outside.unavailable", "process", "the probe could be inspected from outside",
                         probe.WARN, "a stopped probe process", "it ended before it could be inspected",
                         "run the verifier again")]
