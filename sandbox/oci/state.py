"""A container's state on disk, under the runtime's --root, surviving every runtime process.

    ROOT/ID/state.json    the OCI state (ociVersion, id, status, pid, bundle, annotations) plus what
                          later commands need under "sandbox": init's start time (pid reuse guard),
                          the cgroup directories, the creation time, the config digest, hooks
    ROOT/ID/config.json   the bundle's config as it was at create (exec reads the process defaults,
                          capabilities and seccomp from it; the bundle may change or go)
    ROOT/ID/exec.fifo     the start gate while the container is created; `start` removes it
    ROOT/ID/lock          flock()ed by every command that changes the container

Status is derived as runc derives it: stopped once init is gone (or its pid belongs to another
process now), created while the FIFO exists, paused while the cgroup is frozen, else running.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time

OCI_VERSION = "1.2.0"
_ID_PUNCTUATION = set("_+-.")


class RuntimeFailure(Exception):
    """A command that cannot be carried out (runc's wording where the engines look for it).
    Not a SandboxError: start, kill, state and delete must not import the error tree's dataclasses."""

    exit_code = 1

    def one_line(self) -> str:
        return str(self)


def default_root() -> str:
    """/run/sandbox-runtime for host root; $XDG_RUNTIME_DIR/sandbox-runtime otherwise (rootless
    podman runs the runtime as root of its user namespace, with its XDG_RUNTIME_DIR)."""
    from .spec import in_initial_user_namespace
    if os.geteuid() == 0 and in_initial_user_namespace():
        return "/run/sandbox-runtime"
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return os.path.join(runtime_dir, "sandbox-runtime")
    return f"/tmp/sandbox-runtime-{os.geteuid()}"


def check_id(container_id: str) -> None:
    if not container_id or container_id in (".", "..") or not all(
            ch.isalnum() or ch in _ID_PUNCTUATION for ch in container_id) or not container_id.isascii():
        raise RuntimeFailure(f"invalid container id format: {container_id!r}")


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot): a pid reused later has another."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    if fields[0] == b"Z":  # exited, not yet reaped by the engine's monitor
        return None
    return int(fields[19])


def now_rfc3339() -> str:
    seconds = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1e9):09d}Z"


class Container:
    """One container's directory under the root."""

    def __init__(self, root: str, container_id: str):
        check_id(container_id)
        self.root, self.id = root, container_id
        self.dir = os.path.join(root, container_id)
        self.state: dict = {}
        self._lock_fd = -1

    # -- files --------------------------------------------------------------------------

    @property
    def fifo(self) -> str:
        return os.path.join(self.dir, "exec.fifo")

    def exists(self) -> bool:
        return os.path.exists(os.path.join(self.dir, "state.json"))

    def make(self) -> None:
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        try:
            os.mkdir(self.dir, 0o711)
        except FileExistsError:
            raise RuntimeFailure(f"container with id exists: {self.id}") from None

    def lock(self, blocking: bool = True) -> "Container":
        fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        self._lock_fd = fd
        return self

    def unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def load(self) -> "Container":
        """From state.marshal, a copy of state.json that needs no json import (start, kill and
        delete run once or more per container: the json module and its regular expressions are
        ~8 ms of each); from state.json when there is no copy."""
        import marshal
        try:
            with open(os.path.join(self.dir, "state.marshal"), "rb") as handle:
                state = marshal.loads(handle.read())
            if isinstance(state, dict):
                self.state = state
                return self
        except (OSError, ValueError, EOFError, TypeError):
            pass
        import json
        try:
            with open(os.path.join(self.dir, "state.json")) as handle:
                self.state = json.load(handle)
        except FileNotFoundError:
            raise RuntimeFailure(f"container {self.id!r} does not exist") from None
        except ValueError as exc:
            raise RuntimeFailure(f"container {self.id!r}: state.json is damaged ({exc})") from None
        return self

    def save(self) -> None:
        import json
        import marshal
        for name, data in (("state.json", json.dumps(self.state).encode()), ("state.marshal", marshal.dumps(self.state))):
            write_private(os.path.join(self.dir, name), data)

    def config(self) -> dict:
        import json
        with open(os.path.join(self.dir, "config.json")) as handle:
            return json.load(handle)

    def remove(self) -> None:
        for name in ("state.json", "state.json.tmp", "state.marshal", "state.marshal.tmp", "config.json", "exec.fifo",
                     "lock"):
            try:
                os.unlink(os.path.join(self.dir, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self.dir)
        except OSError:
            pass

    # -- what it is ---------------------------------------------------------------------

    @property
    def extra(self) -> dict:
        return self.state.setdefault("sandbox", {})

    @property
    def pid(self) -> int:
        return int(self.state.get("pid") or 0)

    def init_alive(self) -> bool:
        pid = self.pid
        return pid > 0 and process_start_time(pid) == self.extra.get("init_start_time")

    def status(self) -> str:
        if not self.init_alive():
            return "stopped"
        if os.path.exists(self.fifo):
            return "created"
        if self.frozen():
            return "paused"
        return "running"

    def cgroup(self):
        from ..cgroups import oci as oci_cgroups
        return oci_cgroups.attach(self.extra.get("cgroup_dirs") or {})

    def frozen(self) -> bool:
        """Read straight from the freezer's files: the cgroups package is not needed for this."""
        for name, directory in (self.extra.get("cgroup_dirs") or {}).items():
            if "freezer" in name.split(","):
                if _read(os.path.join(directory, "freezer.state")).strip() in ("FROZEN", "FREEZING"):
                    return True
            elif name in ("", "unified"):
                if "frozen 1" in _read(os.path.join(directory, "cgroup.events")):
                    return True
        return False

    def destroy_cgroups(self, timeout: float = 5.0) -> list[str]:
        """Kill every process of the container's cgroups and remove them (what `delete` needs,
        without the cgroups package); returns the directories that could not be removed."""
        dirs = list(dict.fromkeys((self.extra.get("cgroup_dirs") or {}).values()))
        for name, directory in (self.extra.get("cgroup_dirs") or {}).items():
            if "freezer" in name.split(","):
                _write(os.path.join(directory, "freezer.state"), "THAWED")  # frozen tasks act on no signal
            elif name in ("", "unified"):
                _write(os.path.join(directory, "cgroup.freeze"), "0")
                _write(os.path.join(directory, "cgroup.kill"), "1")
        deadline = time.monotonic() + timeout
        while True:
            pids = set()
            for directory in dirs:
                for sub, _, _ in os.walk(directory):
                    pids.update(int(p) for p in _read(os.path.join(sub, "cgroup.procs")).split())
            if not pids or time.monotonic() > deadline:
                break
            for pid in pids:
                try:
                    os.kill(pid, 9)  # SIGKILL, without signal's enums (~3 ms to import)
                except OSError:
                    pass
            time.sleep(0.005)
        left = []
        for directory in dirs:
            for sub, _, _ in sorted(os.walk(directory), key=lambda entry: -entry[0].count("/")):
                for _ in range(200):
                    try:
                        os.rmdir(sub)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.01)  # tasks still exiting
            if os.path.isdir(directory):
                left.append(directory)
        return left

    def oci_state(self) -> dict:
        status = self.status()
        state = {"ociVersion": self.state.get("ociVersion", OCI_VERSION), "id": self.id, "status": status,
                 "pid": self.pid if status != "stopped" else 0, "bundle": self.state.get("bundle", ""),
                 "rootfs": self.extra.get("rootfs", ""), "created": self.extra.get("created", ""),
                 "owner": ""}
        if self.state.get("annotations"):
            state["annotations"] = self.state["annotations"]
        return state

    def workload_pid(self) -> int | None:
        """The container's main process: init's child (init itself when it has none yet)."""
        pid = self.pid
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as handle:
                children = [int(word) for word in handle.read().split()]
        except OSError:
            return None
        return children[0] if children else None


def write_private(path: str, data: bytes) -> None:
    """Atomically, readable by the owner only: a config's environment may hold secrets."""
    temporary = path + ".tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def _read(path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        return os.read(fd, 65536).decode()
    except OSError:
        return ""
    finally:
        os.close(fd)


def _write(path: str, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, value.encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def all_containers(root: str) -> list[Container]:
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        try:
            container = Container(root, name)
        except RuntimeFailure:
            continue
        if container.exists():
            try:
                found.append(container.load())
            except RuntimeFailure:
                continue
    return found


def errno_name(err: int) -> str:
    return errno.errorcode.get(err, str(err))
