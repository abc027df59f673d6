"""Shared by the sandbox-runtime tests: a busybox rootfs, bundles, the runtime as a command, an
engine-like subreaper around it, and checks that nothing was left behind."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ls", "cat", "id", "echo", "sleep", "true", "false", "env", "mount", "ps", "grep", "touch",
           "mkdir", "rm", "hostname", "head", "wc", "tty", "stat", "readlink", "kill", "trap", "ip", "uname",
           "domainname", "sysctl", "test", "nproc", "mknod")


def make_rootfs(directory: Path) -> Path:
    rootfs = directory / "rootfs"
    for sub in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "run", "var/tmp"):
        (rootfs / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        link = rootfs / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    os.chmod(rootfs / "tmp", 0o1777)
    return rootfs


def runtime_command() -> list[str]:
    return [str(ROOT / ".venv" / "bin" / "python"), "-c", "from sandbox.oci.cli import entry; entry()"]


def portable_runtime(directory: Path, audit_log: Path | None = None) -> Path:
    """The runtime as an executable any user may run (the venv's interpreter may sit in root's
    home): the system python 3.11 with this tree and the venv's packages on its path. The engines
    do not pass our environment on: audit_log, when given, is where its audit records go (else
    the system's /var/log/sandbox)."""
    site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"))
    path = directory / "sandbox-runtime"
    environment = f"os.environ.setdefault('SANDBOX_AUDIT_LOG', {str(audit_log)!r})" if audit_log else ""
    path.write_text(textwrap.dedent(f"""\
        #!/usr/bin/python3 -s
        import os, sys
        {environment}
        sys.path[:0] = [{str(ROOT)!r}, {str(site)!r}]
        from sandbox.oci.cli import entry
        entry()
        """))
    path.chmod(0o755)
    for parent in [directory, *directory.parents]:
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o011)
    return path


def base_config(args: list[str], **linux) -> dict:
    from sandbox.oci.defaults import default_config
    config = default_config()
    config["process"]["args"] = args
    config["process"]["env"] = ["PATH=/bin", "TERM=dumb"]
    config["root"]["readonly"] = True
    config["linux"].update(linux)
    return config


def write_bundle(directory: Path, config: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "rootfs").exists():
        make_rootfs(directory)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def runtime(state_root: Path, *args, log: Path | None = None, timeout: float = 60, **kwargs):
    argv = runtime_command() + ["--root", str(state_root)]
    if log is not None:
        argv += ["--log", str(log), "--log-format", "json"]
    return subprocess.run(argv + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          **kwargs)


# What an engine's monitor does around a runtime (conmon, containerd's shim): it is the subreaper
# that inherits the container's init when `create` exits, and reaps it.
MONITOR = textwrap.dedent("""
    import ctypes, json, os, subprocess, sys, tempfile, time
    ctypes.CDLL(None).prctl(36, 1)
    runtime, steps = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    out = []
    init = None
    for step in steps:
        if step == ["wait-init"]:
            # reap everything until init: its pid namespace's processes that came to us (exec'd
            # ones) must be reaped before init can finish exiting (as conmon and the shim do)
            while True:
                pid, status = os.waitpid(-1, 0)
                if pid == init:
                    break
            out.append({"step": step, "status": os.waitstatus_to_exitcode(status)})
            continue
        if step[0] == "sleep":
            time.sleep(float(step[1])); out.append({"step": step}); continue
        # files, not pipes: a container keeps the runtime's stdio (as it keeps conmon's)
        with tempfile.TemporaryFile() as o, tempfile.TemporaryFile() as e:
            done = subprocess.run(runtime + step, stdout=o, stderr=e, stdin=subprocess.DEVNULL)
            o.seek(0); e.seek(0)
            out.append({"step": step, "rc": done.returncode, "stdout": o.read().decode(),
                        "stderr": e.read().decode()})
        if step[0] == "create" and done.returncode == 0:
            init = int(open(step[step.index("--pid-file") + 1]).read())
    # reap whatever came back to us (exec'd processes, init), for a while
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                time.sleep(0.05)
        except ChildProcessError:
            break
    print(json.dumps(out))
""")


def monitor(state_root: Path, steps: list[list[str]], timeout: float = 90) -> list[dict]:
    runtime = runtime_command() + ["--root", str(state_root)]
    done = subprocess.run([sys.executable, "-c", MONITOR, json.dumps(runtime), json.dumps(steps)],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def cgroup_dirs_of(path: str) -> list[str]:
    from sandbox.cgroups import oci as oci_cgroups
    return [d for d in oci_cgroups.dirs_for(path).values() if os.path.isdir(d)]


def left_behind(state_root: Path, container_id: str, cgroup_path: str | None = None) -> list[str]:
    """What a container left: its state directory, cgroups, processes."""
    found = []
    if (state_root / container_id).exists():
        found.append(f"state directory {state_root / container_id}")
    found += [f"cgroup {d}" for d in cgroup_dirs_of(cgroup_path or f"/sandbox-runtime/{container_id}")]
    return found


def remove_cgroups(path: str) -> None:
    from sandbox.cgroups import _fs
    for directory in cgroup_dirs_of(path):
        _fs.remove_tree(directory)


def state_root_fixture(tmp_path: Path):
    """The body of the OCI tests' `state_root` fixture: a state directory under tmp_path; after
    the test, whatever a failing test left is deleted (containers killed, cgroups removed), and the
    default parent cgroup goes once empty."""
    root = tmp_path / "state"
    yield root
    if root.exists():
        for name in os.listdir(root):
            runtime(root, "delete", "--force", name)
    for directory in cgroup_dirs_of("/sandbox-runtime"):
        try:
            os.rmdir(directory)
        except OSError:
            pass
