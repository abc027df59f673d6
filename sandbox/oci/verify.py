"""`start` proves the floor from inside before the workload runs (org.sandbox.verify = "true", or a
floor with verify = true).

The verifier's standalone probe (sandbox/verify/probe.py) runs as a process of the created
container, made as `exec` makes one: the container's namespaces and cgroup, its process's user,
capabilities and rlimits, no_new_privs, both seccomp filters and its Landlock rules. Its results are
judged against what the floor promised (sandbox/verify/floor.py); a failure refuses `start`, and
the workload, waiting at the start gate, never runs.

The interpreter is the host's own python3, never the image's: an image's interpreter could report
anything. It is reached through a descriptor of the host's Python prefix (/usr), opened by the
runtime and passed to the probe alone: its loader, libraries and standard library are read as
/proc/self/fd/N/..., nothing is mounted into the container, and the probe's Landlock rules add
read access to that one tree. The image needs no python3 of its own.
"""
from __future__ import annotations

import json
import os
import select
import struct
import time

from .state import Container, RuntimeFailure

PROBE_TIMEOUT = 120.0
# Reads the probe's source from stdin and runs its main() with the context given as argv[1].
BOOTSTRAP = ("import sys, types\n"
             "source = sys.stdin.read()\n"
             "module = types.ModuleType('probe')\n"
             "module.__file__ = 'probe.py'\n"
             "sys.modules['probe'] = module\n"
             "exec(compile(source, 'probe.py', 'exec'), module.__dict__)\n"
             "sys.exit(module.main(['--json', '--context', sys.argv[1]]))\n")
CANDIDATES = ("/usr/bin/python3",)


def _elf_interpreter(path: str) -> str | None:
    """PT_INTERP of an ELF64 little-endian executable (its dynamic loader)."""
    with open(path, "rb") as handle:
        header = handle.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            return None
        phoff, = struct.unpack_from("<Q", header, 32)
        phentsize, phnum = struct.unpack_from("<HH", header, 54)
        for index in range(phnum):
            handle.seek(phoff + index * phentsize)
            kind, _flags, offset, _vaddr, _paddr, size = struct.unpack("<IIQQQQ", handle.read(40))
            if kind == 3:  # PT_INTERP
                handle.seek(offset)
                return handle.read(size).rstrip(b"\0").decode()
    return None


def host_python() -> dict:
    """The host interpreter the probe runs on: its prefix and, relative to it, the executable, the
    loader and the library directory. Raises RuntimeFailure when none is usable (everything must
    lie under one prefix that anyone may read, as Debian's /usr/bin/python3 does)."""
    import subprocess
    for candidate in CANDIDATES:
        if not os.path.exists(candidate):
            continue
        done = subprocess.run([candidate, "-S", "-c", "import sys, sysconfig; print(sys.base_prefix); "
                               "print(sysconfig.get_config_var('MULTIARCH') or ''); print(sys.version_info >= (3, 8))"],
                              capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            continue
        prefix, multiarch, recent = done.stdout.split("\n")[:3]
        executable = os.path.realpath(candidate)
        loader = _elf_interpreter(executable)
        loader = os.path.realpath(loader) if loader else None
        libdir = os.path.join(prefix, "lib", multiarch) if multiarch else os.path.join(prefix, "lib")
        if recent != "True" or loader is None:
            continue
        paths = {"executable": executable, "loader": loader, "libdir": libdir}
        if all(path.startswith(prefix.rstrip("/") + "/") for path in paths.values()) and _world_readable(prefix):
            return {"prefix": prefix, **{key: os.path.relpath(path, prefix) for key, path in paths.items()}}
    raise RuntimeFailure("runtime floor: verify: no usable host python3 for the probe (expected /usr/bin/python3, "
                         "3.8 or newer, its loader and libraries under its prefix)")


def _world_readable(path: str) -> bool:
    info = os.stat(path)
    return bool(info.st_mode & 0o005)


def run_probe(container: Container, context: dict, log) -> dict:
    """Run the probe inside the container; its JSON report (or RuntimeFailure saying why not)."""
    from .. import _libc, landlock
    from ..verify.verifier import PROBE_SOURCE
    from .exec import _floor_fields, _translate, spawn_in_container
    config = container.config()
    process = dict(config.get("process") or {})
    process["terminal"] = False
    fields, _terminal, _agent = _translate(process, "config.json", config, container.id)
    fields.update(_floor_fields(container, process, "config.json", fields, log))
    fields["seccomp_agent"] = False
    python = host_python()
    prefix_fd = os.open(python["prefix"], os.O_PATH | os.O_DIRECTORY)
    base = f"/proc/self/fd/{prefix_fd}"
    fields["argv"] = (f"{base}/{python['loader']}", "--library-path", f"{base}/{python['libdir']}",
                      f"{base}/{python['executable']}", "-S", "-c", BOOTSTRAP, json.dumps(context))
    fields["env"] = {"PYTHONHOME": base, "PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                     "LC_ALL": "C.UTF-8"}
    fields["cwd"] = "/"
    if fields.get("landlock_rules") is not None:
        fields["landlock_rules"] = tuple(fields["landlock_rules"]) + ((base, landlock.READ),)
    pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(3)]
    _libc.prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: the probe comes back to us to be waited for
    try:
        pid, report = spawn_in_container(container, fields, stdio=(pipes[0][0], pipes[1][1], pipes[2][1]),
                                         pass_fds=(prefix_fd,))
    finally:
        os.close(prefix_fd)
        for fd in (pipes[0][0], pipes[1][1], pipes[2][1]):
            os.close(fd)
    stdin, stdout, stderr = pipes[0][1], pipes[1][0], pipes[2][0]
    try:
        if report:
            from .exec import _exec_failure
            raise RuntimeFailure(f"runtime floor: verify: the probe could not start: "
                                 f"{_exec_failure(report, 'python3')}")
        out, err = _communicate(stdin, stdout, stderr, PROBE_SOURCE.read_bytes(), pid)
    finally:
        for fd in (stdin, stdout, stderr):
            try:
                os.close(fd)
            except OSError:
                pass
        if pid:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        _libc.prctl(36, 0)
    try:
        return json.loads(out)
    except ValueError:
        said = err.decode(errors="replace").strip().splitlines()
        raise RuntimeFailure("runtime floor: verify: the probe gave no report"
                             + (f": {said[-1]}" if said else "")) from None


def _communicate(stdin: int, stdout: int, stderr: int, data: bytes, pid: int) -> tuple[bytes, bytes]:
    deadline = time.monotonic() + PROBE_TIMEOUT
    out, err = bytearray(), bytearray()
    writing = memoryview(data)
    open_fds = {stdout: out, stderr: err}
    while open_fds:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            os.kill(pid, 9)
            raise RuntimeFailure(f"runtime floor: verify: the probe did not finish within {PROBE_TIMEOUT:.0f} s")
        writers = [stdin] if writing else []
        readable, writable, _ = select.select(list(open_fds), writers, [], remaining)
        if writable:
            try:
                sent = os.write(stdin, writing[:65536])
                writing = writing[sent:]
            except BrokenPipeError:
                writing = memoryview(b"")
            if not writing:
                os.close(stdin)
        for fd in readable:
            chunk = os.read(fd, 65536)
            if chunk:
                open_fds[fd] += chunk
            else:
                del open_fds[fd]
    return bytes(out), bytes(err)


def verify_at_start(container: Container, log) -> dict:
    """Run the probe and judge it against the floor; RuntimeFailure on any failed promise.
    Returns the judgement ({"failed": [...], "checked": [...]}) for the audit trail."""
    from ..verify import floor as promises
    context = promises.context(container.extra.get("floor") or {}, container.config())
    report = run_probe(container, context, log)
    judged = promises.judge(report.get("results") or [], container.extra.get("floor") or {})
    for failed in judged["failed"]:
        line = (f"runtime floor: verify: {failed['id']}: {failed['description']}: expected {failed.get('expected')}, "
                f"found {failed.get('observed')}")
        judged.setdefault("lines", []).append(line)
    if judged["failed"] and (container.extra.get("floor") or {}).get("mode") == "enforce":
        more = len(judged["failed"]) - 1
        raise RuntimeFailure(judged["lines"][0] + (f" (and {more} more)" if more else "")
                             + "; not starting the workload")
    for line in judged.get("lines", []):
        log.warning(f"floor (warn): {line}")
    return judged
