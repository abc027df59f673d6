"""Shared fixtures: what this machine allows (probed once), strict skips for CI, and leak checks.

A test that cannot run here calls `require("userns")` etc. and is skipped with the reason; with
SANDBOX_STRICT_SKIPS=1 (scripts/test sets it under CI) such a skip is a failure instead, so CI never
passes by skipping what it was meant to prove.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess
import time
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STRICT = os.environ.get("SANDBOX_STRICT_SKIPS") == "1"
# An ordinary user who owns CI workspaces in tests (a number: no passwd entry is needed).
BUILD_USER = 1000


def _try_fork(action) -> bool:
    pid = os.fork()
    if pid == 0:
        try:
            action()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


@functools.cache
def machine() -> dict[str, bool]:
    from sandbox import _libc
    from sandbox.landlock import abi_version
    facts = {
        "root": os.geteuid() == 0,
        "userns": _try_fork(lambda: _libc.unshare(_libc.CLONE_NEWUSER)),
        "seccomp": os.path.exists("/proc/self/status") and "Seccomp:" in Path("/proc/self/status").read_text(),
        "landlock": abi_version() > 0,
        "cgroup_v1": os.path.isdir("/sys/fs/cgroup/memory") and os.path.exists("/sys/fs/cgroup/memory/cgroup.procs"),
        "cgroup_v2": os.path.exists("/sys/fs/cgroup/cgroup.controllers")
                     or os.path.exists("/sys/fs/cgroup/unified/cgroup.controllers"),
        "setpriv": shutil.which("setpriv") is not None,
        "bwrap": shutil.which("bwrap") is not None,
        "system_python": os.path.exists("/usr/bin/python3"),
        "gcc": os.path.exists("/usr/bin/gcc"),
        "runc": shutil.which("runc") is not None,
        "systemd_analyze": shutil.which("systemd-analyze") is not None,
    }
    facts["rootless"] = facts["root"] and facts["setpriv"] and facts["userns"]
    return facts


REASONS = {
    "root": "needs root", "userns": "user namespaces are not available to this user",
    "seccomp": "kernel without seccomp", "landlock": "kernel without Landlock",
    "cgroup_v1": "no cgroup v1 hierarchies on this machine", "cgroup_v2": "no cgroup v2 hierarchy on this machine",
    "setpriv": "setpriv (util-linux) is not installed", "bwrap": "bubblewrap is not installed",
    "system_python": "/usr/bin/python3 is not installed", "gcc": "gcc is not installed",
    "runc": "runc is not installed (scripts/setup installs it)",
    "systemd_analyze": "systemd-analyze is not installed (Debian's systemd package; scripts/setup installs it)",
    "rootless": "rootless tests need root (to switch to uid 65534 with setpriv) and user namespaces",
}


def require(*features: str) -> None:
    facts = machine()
    for feature in features:
        if not facts.get(feature):
            reason = REASONS.get(feature, feature)
            if STRICT:
                pytest.fail(f"required by this test but unavailable (SANDBOX_STRICT_SKIPS=1): {reason}")
            pytest.skip(reason)


@pytest.fixture
def needs():
    return require


# ---------------------------------------------------------------- leak checks

def _child_pids() -> list[int]:
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            found.append(int(entry))
    return found


def _sandbox_mounts() -> list[str]:
    try:
        with open("/proc/self/mountinfo") as handle:
            return [line.split()[4] for line in handle if "sandbox" in line.split()[4]
                    and line.split()[4].startswith(("/tmp", "/run", "/var/tmp"))]
    except OSError:
        return []


def _leaked_cgroups() -> list[str]:
    """Our own sandbox cgroups only: other test runs on the machine make theirs concurrently."""
    from sandbox import cgroups
    mine = f"sandbox-{os.getpid()}-"
    return [path for path in cgroups.leaked() if os.path.basename(path).startswith(mine)]


# Network state of this test session (sandbox/net): a directory of its own, which uid 65534 (pasta
# and relays run as root of a segment's user namespace, i.e. host nobody) can traverse, and whose
# path marks the helper processes this session starts.
NET_SESSION = Path(f"/tmp/sbxtest-net-{os.getpid()}")


def _net_objects() -> dict[str, set]:
    """What of bridge networking exists now: links named like ours in this (the host's) network
    namespace, namespaces under /run/netns named like ours, nftables tables named like ours,
    segments and helper processes of this session."""
    found: dict[str, set] = {"links": set(), "netns": set(), "segments": set(), "processes": set(), "nft": set()}
    try:
        found["links"] = {n for n in os.listdir("/sys/class/net") if "sbx" in n or "sandbox" in n}
    except OSError:
        pass
    try:
        # The test lab's namespaces carry the test run's pid: other runs on the machine make theirs.
        found["netns"] = {n for n in os.listdir("/run/netns") if n.startswith(("sbx", "sandbox"))
                          and (not n.startswith("sbxtest-") or f"-{os.getpid()}-" in n)}
    except OSError:
        pass
    for state in NET_SESSION.glob("**/segments") if NET_SESSION.exists() else ():
        found["segments"] |= {str(state / name) for name in os.listdir(state)}
    marker = str(NET_SESSION).encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if marker in handle.read():
                        found["processes"].add(int(entry))
            except OSError:
                pass
    nft = shutil.which("nft")
    if nft and os.geteuid() == 0:
        listed = subprocess.run([nft, "list", "tables"], capture_output=True, text=True)
        found["nft"] = {line for line in listed.stdout.splitlines() if "sandbox" in line or "sbx" in line}
    return found


@pytest.fixture(scope="session", autouse=True)
def net_session():
    NET_SESSION.mkdir(mode=0o755, exist_ok=True)
    os.chmod(NET_SESSION, 0o755)
    (NET_SESSION / "root").mkdir(mode=0o755, exist_ok=True)
    yield NET_SESSION
    from sandbox.net.state import State, collect
    try:
        collect(State(str(NET_SESSION / "root")))
    finally:
        shutil.rmtree(NET_SESSION, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_leaks(request, tmp_path_factory, monkeypatch):
    """Fail a test that leaves cgroups, mounts, child processes or network objects behind."""
    monkeypatch.setenv("SANDBOX_AUDIT_LOG", str(tmp_path_factory.getbasetemp() / "audit.jsonl"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("SANDBOX_NET_DIR", str(NET_SESSION / "root"))
    before_cgroups = set(_leaked_cgroups())
    before_mounts = set(_sandbox_mounts())
    before_net = _net_objects()
    yield
    problems = []
    net_now = _net_objects()
    for kind, now in net_now.items():
        left = now - before_net[kind]
        if left:
            problems.append(f"network {kind} left behind: {sorted(map(str, left))}")
    if any(net_now[k] - before_net[k] for k in ("segments", "processes")):
        from sandbox.net.state import State, collect
        for state in NET_SESSION.glob("**/segments"):
            if state.parent.stat().st_uid == os.geteuid():
                collect(State(str(state.parent)))
    children = _child_pids()
    if children:
        for pid in children:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass
        problems.append(f"child processes left running: {children}")
    # reap zombies the test forgot
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        problems.append(f"unreaped child {pid}")
    cgroups_now = set(_leaked_cgroups()) - before_cgroups
    if cgroups_now:
        from sandbox import cgroups
        cgroups.gc()
        problems.append(f"cgroups left behind: {sorted(cgroups_now)}")
    mounts_now = set(_sandbox_mounts()) - before_mounts
    if mounts_now:
        problems.append(f"mounts left behind: {sorted(mounts_now)}")
    if problems:
        pytest.fail("leak: " + "; ".join(problems))


@pytest.fixture
def world_dir():
    """A scratch directory uid 65534 can traverse (pytest's tmp_path is root-only)."""
    path = shared_tempdir("sbxtest-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sandbox_cli():
    """Run the real `sandbox` command; returns a CompletedProcess (text)."""
    def run(*args, input=None, cwd=None, env=None, timeout=60):
        return subprocess.run([sys.executable, "-m", "sandbox", *args], input=input, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    return run


def run_in_child(fn, timeout: float = 10.0):
    """Run fn() in a forked child; return its JSON-able result or raise its error.

    For tests that change the process irreversibly (namespaces, seccomp, Landlock, rlimits)."""
    import json
    import select
    import signal
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = {"ok": fn()}
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            # repr only: formatting a traceback reads source files, which Landlock may forbid by now
            out = {"error": repr(exc)}
        try:
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    try:
        while True:
            ready, _, _ = select.select([r], [], [], timeout)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise TimeoutError("child did not answer")
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    out = json.loads(data)
    if "error" in out:
        raise AssertionError(f"child failed: {out['error']}")
    return out["ok"]


def attempt(fn) -> str:
    """'ok', or the errno name of the OSError fn raised."""
    import errno
    try:
        fn()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


def wait_until(predicate, timeout: float) -> bool:
    """Poll predicate every 20 ms until it holds or timeout seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def processes_with(marker: str) -> list[int]:
    """Pids whose command line contains marker (to find what a sandbox left running)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if marker.encode() in handle.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


# ---------------------------------------------------------------- the package as installed; rootless callers
#
# Every test that runs the launcher as an unprivileged user goes through the `rootless` fixture:
# uid 65534 may not be able to enter the checkout (a clone in root's 0700 home) nor run the
# checkout venv's interpreter (one under /root, say), so those tests never use either. They run the
# package as a user installs it: `installed` builds the sdist, the wheel from that sdist, and a
# fresh venv with that wheel, once per session, in a temporary directory of its own that uid 65534
# can enter, made by an interpreter that user can execute; it is removed at the end of the session.
# Nobody's permissions are changed anywhere else.

NOBODY = 65534
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


def refuse_checkout_paths(argv: list[str]) -> list[str]:
    """argv, unless it names something inside the checkout: uid 65534 cannot enter a clone in a
    0700 home (as most are), so a test that passes here would fail there. The `rootless` fixture's
    install is where that user's launcher lives."""
    inside = [arg for arg in argv if isinstance(arg, (str, Path))
              and (str(arg) == str(ROOT) or str(arg).startswith(str(ROOT) + os.sep))]
    if inside:
        pytest.fail(f"runs {inside[0]} as uid 65534, who may not enter the checkout (a clone in a 0700 "
                    "home): use the `rootless` fixture's install instead")
    return argv


def as_nobody(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run argv as uid/gid 65534 with no supplementary groups (a rootless caller)."""
    return subprocess.run([*AS_NOBODY, *refuse_checkout_paths(argv)], capture_output=True, text=True, **kwargs)


def _usable_by_others(directory: str) -> bool:
    """Every ancestor searchable by others, and executables may run from it."""
    path = os.path.realpath(directory)
    try:
        if os.statvfs(path).f_flag & os.ST_NOEXEC:
            return False
        while True:
            if not os.stat(path).st_mode & 0o001:
                return False
            if path == "/":
                return True
            path = os.path.dirname(path)
    except OSError:
        return False


def shared_tempdir(prefix: str) -> Path:
    """A new 0755 directory that uid 65534 can reach (the caller removes it)."""
    import tempfile
    for base in (tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"):
        if _usable_by_others(base):
            path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
            os.chmod(path, 0o755)
            return path
    pytest.fail("no temporary directory that uid 65534 can enter (tried $TMPDIR, /tmp, /var/tmp, /dev/shm)")


def _interpreter_facts(python: str, nobody: bool) -> str | None:
    # Through env: setpriv itself execs with root's capabilities still in effect, so it could start
    # an interpreter that uid 65534 cannot reach (which then runs on another libpython it finds).
    argv = ["/usr/bin/env", python, "-I", "-c", "import sys; print(sys.version_info[:2], sys.prefix)"]
    try:
        done = subprocess.run([*AS_NOBODY, *argv] if nobody else argv, capture_output=True, text=True,
                              cwd="/", timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _interpreters() -> list[str]:
    """Interpreters of the running Python's version: its own base first, then the system's."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = [getattr(sys, "_base_executable", "") or sys.executable, os.path.realpath(sys.executable)]
    found += [f"/usr/bin/{version}", f"/usr/local/bin/{version}", shutil.which(version) or ""]
    unique: list[str] = []
    for python in found:
        if python and os.path.exists(python) and python not in unique:
            unique.append(python)
    return unique


def _nobody_interpreter() -> tuple[str | None, list[str]]:
    """The first interpreter that uid 65534 runs as root does (same version, same prefix): the
    wheels of compiled dependencies are for this version; (None, tried) when there is none."""
    tried = _interpreters()
    if machine()["root"] and machine()["setpriv"]:
        for python in tried:
            facts = _interpreter_facts(python, nobody=False)
            if facts and facts == _interpreter_facts(python, nobody=True):
                return python, tried
    return None, tried


@dataclasses.dataclass(frozen=True)
class Install:
    directory: Path         # the session's temporary directory (0755): dist/, venv/
    sdist: Path
    wheel: Path             # built from the unpacked sdist
    venv: Path
    python: str             # venv/bin/python
    sandbox: str            # venv/bin/sandbox, the console script
    probe: str              # the installed sandbox/verify/probe.py
    nobody_can_run: bool    # made by an interpreter that uid 65534 can execute
    tried: tuple[str, ...]  # the interpreters considered for that


def _dist_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("sandbox_dist", ROOT / "scripts" / "dist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def installed():
    """The package built and installed as a user would (see the comment above `as_nobody`)."""
    dist = _dist_module()
    python, tried = _nobody_interpreter()
    directory = shared_tempdir("sandbox-tests-install-")
    try:
        sdist, wheel = dist.build(directory / "dist")
        sandbox = dist.install(directory / "venv", dist.wheelhouse(wheel, directory / "wheels"),
                               python or sys.executable)
        venv = directory / "venv"
        probe = subprocess.run([str(venv / "bin/python"), "-I", "-c", "import sandbox.verify.probe as p; "
                                "print(p.__file__)"], capture_output=True, text=True, check=True, cwd="/")
        yield Install(directory, sdist, wheel, venv, str(venv / "bin/python"), str(sandbox),
                      probe.stdout.strip(), python is not None, tuple(tried))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def rootless(installed) -> Install:
    """The install, for tests that run as uid 65534: they fail (never skip) when it cannot run it."""
    return nobody_install(installed)


def nobody_install(installed: Install) -> Install:
    """What the `rootless` fixture gives, for tests parametrized on a `rootless` flag (which hides
    that fixture): `nobody_install(request.getfixturevalue("installed"))`."""
    require("rootless")
    if not installed.nobody_can_run:
        pytest.fail("no Python {}.{} that uid 65534 can execute (tried {}): the rootless tests need one "
                    "outside directories that user cannot enter, e.g. the distribution's python3"
                    .format(*sys.version_info[:2], ", ".join(installed.tried)))
    return installed


@pytest.fixture
def nobody_dir():
    """A fresh directory owned by 65534 (with out/, also 65534's), for a rootless launch's cwd,
    files and audit log; removed after the test."""
    path = shared_tempdir("sbxtest-rootless-")
    os.chown(path, NOBODY, NOBODY)
    (path / "out").mkdir()
    os.chown(path / "out", NOBODY, NOBODY)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def nobody_env(directory: Path, **extra: str) -> dict[str, str]:
    """A minimal environment for a rootless caller whose files go to `directory`."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(directory), "SANDBOX_AUDIT_LOG": str(directory / "audit.jsonl"),
            **extra}


def pytest_collection_modifyitems(items):
    """Mark the tests that use the install (`installed`) and those that run as uid 65534
    (`rootless`): .ci/run reruns `-m "rootless or installed"` from a copy of the checkout in a 0700
    directory."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "installed" in names:
            item.add_marker(pytest.mark.installed)
        if "rootless" in names:
            item.add_marker(pytest.mark.rootless)
