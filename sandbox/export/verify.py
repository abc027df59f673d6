"""Run the isolation probe in an exported OCI bundle under an OCI runtime (runc, crun,
sandbox-runtime) and compare it, check by check, with `sandbox verify` of the same profile.

    host: plant the canaries, export the profile as a bundle whose process is a tiny init
          (python3 -I -c INIT) that forks `python3 -I - --json --context CTX --stop-when-done`
    RUNTIME --root STATE run --bundle B ID    probe source on stdin, its JSON on stdout
    host: outside checks on the stopped probe (its pid: the child of the container's init), SIGCONT

The init is there because a process that is pid 1 of its namespace cannot stop itself (the kernel
drops signals to init that it has no handler for), and the launcher's workload is not pid 1 either.
The differences a runtime is known to have are listed in KNOWN_DIFFERENCES, each with its reason;
`compare()` returns the others.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from ..profile.model import Profile
from ..verify.verifier import _is_stopped

PROBE_TIMEOUT = 120.0
# Fork the probe and exit with its status: the probe must not be pid 1 (see the module doc).
INIT = ("import os,sys\n"
        "pid=os.fork()\n"
        "if pid==0: os.execv(sys.executable,[sys.executable,'-I','-']+sys.argv[1:])\n"
        "sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid,0)[1]) & 255)\n")

# check id -> why the OCI bundle under runc differs from `sandbox verify` (docs/oci.md lists them).
KNOWN_DIFFERENCES = {
    "mount.ro./": "runtime-spec has no mount options for the root: runc binds rootfs/ without nosuid and "
                  "nodev (it is read-only and holds only directories, symlinks and the profile's small "
                  "files, none setuid, no device nodes)",
    "ns.time": "runc 1.1 does not know the time namespace (--compat runc-1.1 leaves it out)",
    "outside.ns.time": "runc 1.1 does not know the time namespace (--compat runc-1.1 leaves it out)",
    "ids.setgroups": "runc writes /proc/PID/setgroups 'deny' only when rootless; rootful it stays 'allow'. "
                     "The workload holds no CAP_SETGID and one mapped gid, so it cannot drop or add groups",
    "terminal.tiocsti": "the seccomp export cannot say 'ioctl allowed unless TIOCSTI' (OCI's format has no "
                        "argument exceptions); without a terminal both SKIP",
}


# While the Docker seccomp exporter drops socket family exceptions (it did before branch "everyday"
# taught it to list families), every socket() of the bundle fails: the network checks cannot run.
SOCKETS_DROPPED = {
    "probe.error.network": "the exported filter denies every socket family (see the export warning)",
    **{check: "the exported filter denies every socket family, so the probe's network checks stop at "
              "their first socket()" for check in ("net.abstract_unix", "net.af_alg", "net.canary_tcp",
                                                    "net.raw_icmp", "net.raw_packet", "net.vsock")},
}


def known_differences(export_warnings: list[str]) -> dict[str, str]:
    """KNOWN_DIFFERENCES, plus what this export's own warnings explain."""
    known = dict(KNOWN_DIFFERENCES)
    if any(w.startswith("seccomp: socket: argument exceptions") for w in export_warnings):
        known.update(SOCKETS_DROPPED)
    return known


def probe_argv(context: dict) -> list[str]:
    return ["/usr/bin/python3", "-I", "-c", INIT, "--json", "--context", json.dumps(context), "--stop-when-done"]


def _state_pid(runtime: list[str], state: str, cid: str) -> int | None:
    done = subprocess.run([*runtime, "--root", state, "state", cid], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return None
    try:
        pid = json.loads(done.stdout).get("pid") or None
    except ValueError:
        return None
    return pid


def _stopped_descendant(pid: int) -> int | None:
    """The stopped probe below the container's first process: its child under runc (our init is
    the container's pid 1), a grandchild under a runtime with an init of its own (sandbox-runtime)."""
    todo, seen = [pid], set()
    while todo:
        current = todo.pop(0)
        if current in seen:
            continue
        seen.add(current)
        if current != pid and _is_stopped(current):
            return current
        try:
            with open(f"/proc/{current}/task/{current}/children") as handle:
                todo += [int(child) for child in handle.read().split()]
        except (OSError, ValueError):
            continue
    return None


def verify_bundle(profile: Profile, runtime: list[str], *, compat: str | None = None,
                  workdir: str | None = None) -> dict:
    """Export `profile` with the probe as its process, run it under `runtime` (an argv such as
    ["runc"]) and return {"results": [...], "warnings": [...], "exit_code": N, "stderr": "..."}."""
    from ..verify import probe
    from ..verify.canaries import Canaries
    from ..verify.verifier import PROBE_SOURCE, expectations
    from .oci import write_bundle
    own_dir = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="sandbox-bundle-")
    os.chmod(workdir, 0o755)  # the container's host id must reach rootfs/
    bundle, state = os.path.join(workdir, "bundle"), os.path.join(workdir, "state")
    cid = "sandbox-verify-" + secrets.token_hex(4)
    expect = expectations(profile)
    try:
        with Canaries(expect=expect) as context:
            warnings = write_bundle(profile, bundle, probe_argv(context), compat=compat)
            process = subprocess.Popen([*runtime, "--root", state, "run", "--bundle", bundle, cid],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

            outside: list = []
            inspector = threading.Thread(target=lambda: outside.extend(
                _inspect(runtime, state, cid, process, context, probe)), daemon=True)
            inspector.start()
            try:
                stdout, stderr = process.communicate(PROBE_SOURCE.read_bytes(), timeout=PROBE_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            inspector.join(timeout=10)
        try:
            inside = json.loads(stdout or b"{}").get("results", [])
        except ValueError:
            inside = []
        return {"results": inside + outside, "warnings": warnings, "exit_code": process.returncode,
                "stderr": stderr.decode(errors="replace")}
    finally:
        subprocess.run([*runtime, "--root", state, "delete", "--force", cid], capture_output=True, timeout=30)
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)


def _cpu_limit(pid: int, expect: dict) -> list[dict]:
    """The verifier's own outside check of the cpu limit (not part of the standalone probe)."""
    from ..verify import verifier
    check = getattr(verifier, "_cpu_limit", None)
    return check(pid, expect) if check else []


def _inspect(runtime, state, cid, process, context, probe) -> list[dict]:
    deadline = time.monotonic() + PROBE_TIMEOUT
    init = None
    while process.poll() is None and time.monotonic() < deadline:
        if init is None:
            init = _state_pid(runtime, state, cid)
        child = _stopped_descendant(init) if init is not None else None
        if child is not None:
            try:
                return probe.outside_checks(child, context) + _cpu_limit(child, context.get("expect") or {})
            finally:
                os.kill(child, signal.SIGCONT)
        time.sleep(0.02)
    return [probe.result("outside.unavailable", "process", "the probe could be inspected from outside",
                         probe.WARN, "a stopped probe process", "it ended before it could be inspected", "")]


def statuses(results: list[dict]) -> dict[str, str]:
    return {r["id"]: r["status"] for r in results}


def compare(sandbox_results: list[dict], bundle_results: list[dict],
            known: dict[str, str] = KNOWN_DIFFERENCES) -> tuple[list[str], list[str]]:
    """(explained, unexplained) differences, one line per check id whose status differs."""
    ours, theirs = statuses(sandbox_results), statuses(bundle_results)
    explained, unexplained = [], []
    for check in sorted(set(ours) | set(theirs)):
        a, b = ours.get(check, "absent"), theirs.get(check, "absent")
        if a == b:
            continue
        line = f"{check}: sandbox {a}, bundle {b}"
        (explained if check in known else unexplained).append(
            line + (f" ({known[check]})" if check in known else ""))
    return explained, unexplained
