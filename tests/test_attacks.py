"""Escape attempts from inside the sandbox.

Safety first: every attack script begins with a gate that checks, from inside, that it runs in its
own pid, mount and user namespaces (the host's namespace inodes are passed in through the
environment), as pid 2 under our init, with no uid_map line reaching host uid 0. If any check fails
the script exits 99 without attempting anything, and the test fails. Attempts that could change
state (namespaces, chroot) run in forked children; nothing ever writes to /proc/sys (the script
only tries to *open* sysctls for writing and closes at once); network use is none.
"""
from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import stat
import subprocess
import tempfile
import textwrap
import time
import tty
from pathlib import Path

import pytest

import sandbox
from sandbox import namespaces

from conftest import BUILD_USER, ROOT, as_nobody, machine, nobody_install, require

PY = "/usr/bin/python3"
NOT_ISOLATED = 99

GATE = textwrap.dedent(r"""
    import errno, json, os, sys
    host = json.loads(os.environ["SBX_HOST_NS"])
    me = {n: os.stat(f"/proc/self/ns/{n}").st_ino for n in ("pid", "mnt", "user")}
    maps = [line.split() for line in open("/proc/self/uid_map").read().splitlines()]
    gate = {
        "own pid namespace": me["pid"] != host["pid"],
        "own mount namespace": me["mnt"] != host["mnt"],
        "own user namespace": me["user"] != host["user"],
        "pid 2 under our init": os.getpid() == 2 and os.getppid() == 1,
        "host uid is not 0": bool(maps) and all(int(host_id) > 0 for _, host_id, _ in maps),
    }
    if not all(gate.values()):
        print(json.dumps({"gate": gate}))
        sys.exit(99)
""")

ATTACKS = textwrap.dedent(r"""
    import ctypes, fcntl, signal, stat, time
    libc = ctypes.CDLL(None, use_errno=True)
    results = {"gate": gate}

    def code(exc):
        return errno.errorcode.get(exc.errno, str(exc.errno))

    def attempt(fn):
        try:
            fn()
            return "ok"
        except OSError as exc:
            return code(exc)

    def call(name, *args):
        if getattr(libc, name)(*args) == -1:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def in_child(fn):
        # Run an attempt that could change our state (namespaces, root) in a throwaway child.
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.write(w, attempt(fn).encode())
            os._exit(0)
        os.close(w)
        out = os.read(r, 100).decode()
        os.close(r)
        os.waitpid(pid, 0)
        return out

    # kill(-1): a sacrificial process of ours dies, nothing outside can be reached.
    victim = os.fork()
    if victim == 0:
        time.sleep(30)
        os._exit(0)
    results["kill_-1"] = attempt(lambda: os.kill(-1, signal.SIGKILL))
    _, status = os.waitpid(victim, 0)
    results["kill_-1_killed_our_own"] = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL

    MS_BIND, MNT_DETACH = 0x1000, 2
    results["mount_tmpfs"] = in_child(lambda: call("mount", b"none", b"/usr", b"tmpfs", 0, None))
    results["mount_bind_proc_root"] = in_child(lambda: call("mount", b"/proc/1/root", b"/tmp", None, MS_BIND, None))
    results["umount_usr"] = in_child(lambda: call("umount2", b"/usr", MNT_DETACH))
    results["umount_proc"] = in_child(lambda: call("umount2", b"/proc", MNT_DETACH))
    results["unshare_mount"] = in_child(lambda: call("unshare", 0x00020000))
    results["unshare_user"] = in_child(lambda: call("unshare", 0x10000000))
    results["unshare_pid_net"] = in_child(lambda: call("unshare", 0x20000000 | 0x40000000))
    def setns_init_mnt():
        fd = os.open("/proc/1/ns/mnt", os.O_RDONLY)
        call("setns", fd, 0)
    results["setns_init_mnt"] = in_child(setns_init_mnt)
    results["pivot_root"] = in_child(lambda: call("syscall", 155, b".", b"."))  # SYS_pivot_root (x86_64)
    def chroot_escape():
        os.makedirs("/tmp/jail/sub", exist_ok=True)
        os.chroot("/tmp/jail/sub")  # the classic escape needs this first step; it must fail
        for _ in range(20):
            os.chdir("..")
        os.chroot(".")
        raise OSError(0, "escaped?" + str(os.listdir("/")))
    results["chroot"] = in_child(chroot_escape)

    # sysctls: opening for write must fail; never write.
    sysctl = {}
    for path in ("/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe", "/proc/sys/kernel/hostname",
                 "/proc/sys/kernel/randomize_va_space", "/proc/sys/vm/drop_caches", "/proc/sysrq-trigger"):
        def open_for_write(path=path):
            os.close(os.open(path, os.O_WRONLY))
        sysctl[path] = attempt(open_for_write)
    results["sysctl_open_write"] = sysctl

    PTRACE_ATTACH, PTRACE_DETACH = 16, 17
    def ptrace_init():
        if libc.ptrace(PTRACE_ATTACH, 1, None, None) == -1:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        libc.ptrace(PTRACE_DETACH, 1, None, None)
    results["ptrace_init"] = in_child(ptrace_init)
    results["init_mem"] = attempt(lambda: open("/proc/1/mem", "rb").read(1))
    results["init_environ"] = attempt(lambda: open("/proc/1/environ", "rb").read())

    # open_by_handle_at (the "shocker" escape): a handle for inode 2, the root of the host fs
    class FileHandle(ctypes.Structure):
        _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                    ("f_handle", ctypes.c_ubyte * 8)]
    def shocker():
        handle = FileHandle(8, 1, (ctypes.c_ubyte * 8)(2, 0, 0, 0, 0, 0, 0, 0))
        mount_fd = os.open("/usr", os.O_RDONLY | os.O_DIRECTORY)
        fd = libc.open_by_handle_at(mount_fd, ctypes.byref(handle), os.O_RDONLY | os.O_DIRECTORY)
        os.close(mount_fd)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        raise OSError(0, "opened the host root: " + str(os.listdir(fd)))
    results["open_by_handle_at"] = attempt(shocker)

    # host files through /proc: our init's root, fd tables, a host pid (the launcher's)
    secret = os.environ["SBX_HOST_SECRET"]
    results["secret_direct"] = attempt(lambda: open(secret).read())
    results["secret_via_proc_1_root"] = attempt(lambda: open("/proc/1/root" + secret).read())
    results["secret_via_proc_self_root"] = attempt(lambda: open("/proc/self/root" + secret).read())
    results["proc_1_root_list"] = attempt(lambda: os.listdir("/proc/1/root"))
    results["proc_1_cwd"] = attempt(lambda: os.listdir("/proc/1/cwd"))
    results["proc_1_fd"] = attempt(lambda: os.listdir("/proc/1/fd"))
    launcher = os.environ["SBX_LAUNCHER_PID"]
    results["launcher_fd"] = attempt(lambda: os.listdir(f"/proc/{launcher}/fd"))
    results["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    links = []  # what other processes here (our init) hold open, as far as we can see
    for pid in results["pids"]:
        if pid == os.getpid():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
                except OSError:
                    pass
        except OSError:
            pass
    results["fd_links"] = links

    # terminal injection into the caller's terminal (our stdin is a pty the test holds)
    results["stdin_isatty"] = os.isatty(0)
    results["tiocsti"] = attempt(lambda: fcntl.ioctl(0, termios_TIOCSTI, b"X"))

    # device nodes
    results["mknod_null"] = attempt(lambda: os.mknod("/tmp/null2", 0o666 | stat.S_IFCHR, os.makedev(1, 3)))
    results["mknod_disk"] = attempt(lambda: os.mknod("/tmp/vda", 0o666 | stat.S_IFBLK, os.makedev(254, 0)))
    results["mknod_shm"] = attempt(lambda: os.mknod("/dev/shm/mem", 0o666 | stat.S_IFCHR, os.makedev(1, 1)))

    # a setuid-root binary bound in from the host
    import subprocess
    run = subprocess.run(["/suid/id", "-u"], capture_output=True, text=True)
    results["setuid_id"] = run.stdout.strip() or run.stderr.strip()
    results["euid_after"] = os.geteuid()
    print(json.dumps(results))
""").replace("termios_TIOCSTI", "0x5412")

ALLOWED_FAILURES = {"EPERM", "EACCES", "EROFS", "ENOENT", "ENOSYS"}


@pytest.fixture
def canaries():
    """Host processes that must survive whatever happens inside: one as root, one as the very
    host uid the sandbox user maps to (65534), which kill(-1) would reach without a pid namespace."""
    procs = [subprocess.Popen(["sleep", "60"])]
    if machine()["setpriv"] and machine()["root"]:
        procs.append(subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                       "sleep", "60"]))
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def _host_ns() -> str:
    inodes = namespaces.namespace_inodes()
    return json.dumps({"pid": inodes["pid"], "mnt": inodes["mnt"], "user": inodes["user"]})


def _run_attacks(world_dir: Path, *, seccomp: bool) -> dict:
    require("root", "userns", "system_python")
    suid = world_dir / "suid"
    suid.mkdir(mode=0o755)
    shutil.copy2("/usr/bin/id", suid / "id")
    os.chown(suid / "id", 0, 0)
    os.chmod(suid / "id", 0o4755)
    secret = world_dir / "host-secret"
    secret.write_text("host secret")
    os.chmod(secret, 0o644)  # readable by 65534 on the host: only the mount namespace keeps it out
    env = {"SBX_HOST_NS": _host_ns(), "SBX_HOST_SECRET": str(secret), "SBX_LAUNCHER_PID": str(os.getpid())}
    profile = sandbox.profile_from_dict({"extends": "untrusted", "process": {"env": env},
                                         "filesystem": {"mounts": [{"source": str(suid), "target": "/suid"}]}})
    if not seccomp:
        profile = profile.replace(seccomp=None)
    master, slave = pty.openpty()
    try:
        tty.setraw(slave)
        result = sandbox.run(profile, [PY, "-c", GATE + ATTACKS], capture_output=True, stdin=slave, timeout=30)
        os.set_blocking(slave, False)
        try:
            injected = os.read(slave, 100)
        except BlockingIOError:
            injected = b""
    finally:
        os.close(master)
        os.close(slave)
    assert result.exit_code != NOT_ISOLATED, f"isolation gate failed, no attack attempted: {result.stdout}"
    assert result.exit_code == 0, result.stderr.decode()
    out = json.loads(result.stdout)
    assert all(out["gate"].values())
    out["injected"] = injected.decode(errors="replace")
    return out


def _check(out: dict, *, seccomp: bool) -> None:
    failures = []

    def denied(name, value, allowed=ALLOWED_FAILURES):
        if value not in allowed:
            failures.append(f"{name}: {value}")

    denied("kill(-1) reported", out["kill_-1"], {"ok"})  # it "works", within the namespace
    if not out["kill_-1_killed_our_own"]:
        failures.append("kill(-1) did not even reach our own process: test is not testing")
    for name in ("mount_tmpfs", "mount_bind_proc_root", "umount_usr", "umount_proc", "unshare_mount",
                 "unshare_pid_net", "setns_init_mnt", "pivot_root", "chroot", "ptrace_init", "init_mem",
                 "init_environ", "open_by_handle_at", "secret_direct", "secret_via_proc_1_root",
                 "secret_via_proc_self_root", "proc_1_root_list", "proc_1_cwd", "proc_1_fd", "launcher_fd",
                 "mknod_null", "mknod_disk", "mknod_shm"):
        denied(name, out[name])
    # without the filter a nested user namespace is the kernel's to allow; it gives no way out
    denied("unshare_user", out["unshare_user"], ALLOWED_FAILURES | ({"ok"} if not seccomp else set()))
    for path, value in out["sysctl_open_write"].items():
        denied(f"open({path}, O_WRONLY)", value, {"EROFS", "EACCES", "EPERM", "ENOENT"})
    assert out["stdin_isatty"], "the pty did not reach the workload: the TIOCSTI check is not testing"
    denied("TIOCSTI", out["tiocsti"], {"EPERM", "EIO", "EACCES"})
    if out["injected"]:
        failures.append(f"TIOCSTI injected {out['injected']!r} into the caller's terminal")
    if out["setuid_id"] != "65534" or out["euid_after"] != 65534:
        failures.append(f"setuid binary elevated: id -u = {out['setuid_id']}")
    if out["pids"] != [1, 2]:
        failures.append(f"host or foreign processes visible: {out['pids']}")
    if out["fd_links"]:
        failures.append(f"the fd table of our init is readable: {out['fd_links']}")
    assert not failures, "\n".join(failures)


def test_escape_attempts_fail(world_dir, canaries):
    out = _run_attacks(world_dir, seccomp=True)
    _check(out, seccomp=True)
    for proc in canaries:
        assert proc.poll() is None, "a host process died of kill(-1) from inside"


def test_escape_attempts_fail_without_seccomp(world_dir, canaries):
    """The filter is one layer; namespaces, the id map, dropped capabilities and the mount setup
    must hold on their own."""
    out = _run_attacks(world_dir, seccomp=False)
    _check(out, seccomp=False)
    for proc in canaries:
        assert proc.poll() is None, "a host process died of kill(-1) from inside"


# ---------------------------------------------------------------- resource exhaustion

BOMB = textwrap.dedent(r"""
    import errno, os, sys, time
    count, error = 0, None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            pid = os.fork()
        except OSError as exc:
            error = errno.errorcode[exc.errno]
            break
        if pid == 0:
            time.sleep(3)
            os._exit(0)
        count += 1
    print(count, error)
""")


def test_fork_bomb_is_contained_by_the_pids_limit():
    require("root", "userns", "system_python")
    profile = sandbox.profile_from_dict({"extends": "untrusted", "limits": {"pids": 32, "required": ["pids"]}})
    try:
        result = sandbox.run(profile, [PY, "-c", BOMB], capture_output=True, timeout=15)
    except sandbox.LimitsUnavailable as exc:
        pytest.skip(f"no pids limit here: {exc}")
    assert result.exit_code == 0, result.stderr
    count, error = result.stdout.decode().split()
    assert error == "EAGAIN" and int(count) < 32, result.stdout
    # the real thing, killed by the timeout; the host must not notice
    started = time.monotonic()
    result = sandbox.run(profile, ["/bin/sh", "-c", "b() { b | b & }; b; sleep 30"], capture_output=True, timeout=2)
    assert result.timed_out and result.exit_code == 124
    assert time.monotonic() - started < 6
    if result.pids_peak is not None:
        assert result.pids_peak <= 32
    check = subprocess.run(["/bin/true"])  # the host can still fork
    assert check.returncode == 0


# ---------------------------------------------------------------- setuid plant (issue 20)

SETID_PLANT = textwrap.dedent(r"""
    import ctypes, stat, subprocess, tarfile, io
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    W = "/workspace"
    out = {"gate": gate}

    def code(fn):
        try:
            fn()
            return "ok"
        except OSError as exc:
            return errno.errorcode.get(exc.errno, str(exc.errno))

    def raw(nr, *args):
        def call():
            ret = libc.syscall(ctypes.c_long(nr), *[a if isinstance(a, bytes) else ctypes.c_long(a) for a in args])
            if ret < 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            if nr in (2, 85, 257):  # open, creat, openat: close what we got
                os.close(ret)
        return call

    def in_child(fn):  # an attempt the filter may answer by killing the process
        pid = os.fork()
        if pid == 0:
            os._exit({"ok": 0, "EPERM": 1, "ENOSYS": 2}.get(code(fn), 3))
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            return f"signal {os.WTERMSIG(status)}"
        return ("ok", "EPERM", "ENOSYS", "other")[os.WEXITSTATUS(status)]

    # The issue's command, as a build script would run it.
    run = subprocess.run(["/bin/sh", "-c", "cp /bin/sh /workspace/rootsh && chmod 4755 /workspace/rootsh"],
                         capture_output=True, text=True)
    out["shell"] = [run.returncode, run.stderr.strip()]
    # install(1), cp -p of a setuid binary, tar -p of an archive with setuid members
    out["install"] = subprocess.run(["install", "-m", "4755", "/bin/sh", W + "/installed"],
                                    capture_output=True, text=True).returncode
    out["cp_p"] = subprocess.run(["cp", "-p", "/usr/bin/su", W + "/su"], capture_output=True,
                                 text=True).stderr.strip()
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as archive:
        member = tarfile.TarInfo("tarred")
        member.mode, member.size = 0o6755, 4
        archive.addfile(member, io.BytesIO(b"#!/x"))
    open("/tmp/a.tar", "wb").write(data.getvalue())
    out["tar"] = subprocess.run(["tar", "-xpf", "/tmp/a.tar", "-C", W], capture_output=True, text=True).stderr.strip()

    # Every system call that gives a file a mode.
    target = W + "/target"
    open(target, "w").close()
    fd = os.open(target, os.O_RDONLY)
    dirfd = os.open(W, os.O_RDONLY | os.O_DIRECTORY)
    p = target.encode()
    routes = {
        "chmod 4755": lambda: os.chmod(target, 0o4755),
        "chmod 2755": lambda: os.chmod(target, 0o2755),
        "chmod u+s high bits": raw(90, p, (1 << 32) | 0o4755),
        "fchmod": lambda: os.fchmod(fd, 0o4755),
        "fchmodat": lambda: os.chmod("target", 0o6755, dir_fd=dirfd),
        "fchmodat2": raw(452, dirfd, b"target", 0o4755, 0),
        "open O_CREAT": raw(2, (W + "/o1").encode(), os.O_CREAT | os.O_WRONLY, 0o4755),
        "openat O_CREAT": lambda: os.close(os.open("o2", os.O_CREAT | os.O_WRONLY, 0o2755, dir_fd=dirfd)),
        "openat O_TMPFILE": lambda: os.close(os.open(W, os.O_TMPFILE | os.O_WRONLY, 0o4755)),
        "creat": raw(85, (W + "/c1").encode(), 0o4755),
        "mknod S_IFREG": lambda: os.mknod(W + "/m1", stat.S_IFREG | 0o4755),
        "mknodat S_IFREG": raw(259, dirfd, b"m2", stat.S_IFREG | 0o2755, 0),
        "setxattr security.capability": lambda: os.setxattr(
            target, "security.capability", (0x02000001).to_bytes(4, "little") + (1 << 21).to_bytes(4, "little") + bytes(12)),
    }
    out["routes"] = {name: in_child(fn) for name, fn in routes.items()}
    # openat2 carries its mode in a struct the filter cannot read: ENOSYS, nothing created.
    how = (ctypes.c_uint64 * 3)(os.O_CREAT | os.O_WRONLY, 0o4755, 0)
    out["openat2"] = in_child(lambda: raw(437, dirfd, b"o3", ctypes.addressof(how), 24)())
    # Foreign ABIs are not even for chmod: the process dies (x32 numbers too, or ENOSYS).
    out["x32 chmod"] = in_child(raw(0x40000000 | 90, p, 0o4755))
    print(json.dumps(out))
""")

FORBIDDEN_BITS = stat.S_ISUID | stat.S_ISGID


# Every built-in profile with a writable host directory: ci's own ${CWD}, and a command-line bind.
WORKSPACE_SETUPS = {"ci": ["ci"], "untrusted --bind": ["--bind", "{ws}:/workspace:rw", "untrusted"]}


def _setid_profile_run(workspace: Path, rootless, setup: str = "ci") -> dict:
    """rootless: the `rootless` fixture's install (run as uid 65534), or None (root, the checkout's)."""
    profile_args = [arg.format(ws=workspace) for arg in WORKSPACE_SETUPS[setup]]
    sandbox = rootless.sandbox if rootless else str(ROOT / ".venv" / "bin" / "sandbox")
    argv = [sandbox, "run", "-q", "--env", f"SBX_HOST_NS={_host_ns()}",
            *profile_args, "--", PY, "-c", GATE + SETID_PLANT]
    if rootless:
        proc = as_nobody(argv, cwd=str(workspace), timeout=60,
                         env={"PATH": "/usr/bin:/bin", "SANDBOX_AUDIT_LOG": str(workspace.parent / "audit.jsonl")})
    else:
        proc = subprocess.run(argv, cwd=workspace, capture_output=True, text=True, timeout=60)
    assert proc.returncode != NOT_ISOLATED, f"isolation gate failed, no attack attempted: {proc.stdout}"
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert all(out["gate"].values())
    return out


def _no_privileges_left(workspace: Path, owner: int) -> None:
    for entry in [workspace, *workspace.rglob("*")]:
        info = entry.lstat()
        assert not info.st_mode & FORBIDDEN_BITS, f"{entry}: {oct(info.st_mode)}"
        assert (info.st_uid, info.st_gid) == (owner, owner), f"{entry}: {info.st_uid}:{info.st_gid}"
        if stat.S_ISREG(info.st_mode):
            assert "security.capability" not in os.listxattr(entry), entry


@pytest.mark.parametrize("setup", sorted(WORKSPACE_SETUPS))
@pytest.mark.parametrize("rootless", [False, True], ids=["root", "rootless"])
def test_setuid_plant_through_a_workspace_fails(rootless, setup, request):
    """Issue 20: `cp /bin/sh /workspace/rootsh && chmod 4755` (and every other way to give a file a
    setuid/setgid bit or a file capability) under `ci` and through `untrusted --bind ...:rw`, in
    a build user's workspace: EPERM for each, and nothing setuid, setgid, capable or root-owned is
    left on the host."""
    require("userns", "system_python", *(("rootless",) if rootless else ("root",)))
    owner = 65534 if rootless else BUILD_USER
    base = Path(tempfile.mkdtemp(prefix="sbxtest-plant-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        os.chown(base, owner, owner)
        workspace = base / "ws"
        workspace.mkdir()
        os.chown(workspace, owner, owner)
        out = _setid_profile_run(workspace, nobody_install(request.getfixturevalue("installed")) if rootless else None,
                                 setup)
        assert out["shell"][0] != 0 and "Operation not permitted" in out["shell"][1], out["shell"]
        assert out["install"] != 0
        assert "Operation not permitted" in out["cp_p"] or not os.path.exists("/usr/bin/su"), out["cp_p"]
        assert "Operation not permitted" in out["tar"], out["tar"]
        denied = {name: result for name, result in out["routes"].items() if result != "EPERM"}
        assert not denied, denied
        assert out["openat2"] == "ENOSYS"
        assert out["x32 chmod"] in (f"signal {signal.SIGSYS}", "ENOSYS"), out["x32 chmod"]
        assert (workspace / "rootsh").exists()  # the copy itself is allowed, the bit is not
        _no_privileges_left(workspace, owner)
    finally:
        shutil.rmtree(base, ignore_errors=True)
