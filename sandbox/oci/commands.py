"""The runtime's commands: the launcher's lifecycle split across processes, with state on disk.

    create   bundle -> plan (spec.py) -> policy -> Launch(detached, FIFO start gate).create()
             -> pid file, state.json; the runtime exits and the engine's monitor reaps init
    start    one byte into the FIFO (the workload execs), then the poststart hooks
    kill     a signal to the workload (SIGKILL: to init, which takes the pid namespace with it)
    delete   kill what is left, poststop hooks, cgroups and state removed
    exec     a new process in the running container's namespaces (exec.py)
"""
from __future__ import annotations

import os
import sys
import time

from .state import Container, RuntimeFailure, all_containers, now_rfc3339, process_start_time

SIGKILL = 9  # signal's enums cost ~3 ms to import: start and delete do without them


def run_command(command: str, root: str, options, positionals: list[str], log, globals_) -> int:
    handler = globals()[f"cmd_{command}"]
    options["floor_file"] = globals_.floor  # --floor: the runtime floor's file (sandbox/oci/floor.py)
    if command == "create":
        handler(root, options, positionals, log)
        return 0
    return handler(root, options, positionals, log)


# ---------------------------------------------------------------- create, start, run

def _hook_state(container_id: str, status: str, pid: int, bundle: str, annotations: dict) -> str:
    import json
    state = {"ociVersion": "1.2.0", "id": container_id, "status": status, "pid": pid, "bundle": bundle}
    if annotations:
        state["annotations"] = annotations
    return json.dumps(state)


def _run_runtime_hooks(hooks: tuple, state: str, stage: str) -> None:
    from ..child import run_hooks
    run_hooks(hooks, state, stage)


def _run_container_hooks(hooks: tuple, state: str, init_pid: int) -> None:
    """createContainer hooks: in the container's namespaces (before pivot_root: paths as the host sees
    them), with the state on stdin."""
    import subprocess
    from .. import _libc
    flags = _namespace_flags_of(init_pid) & ~_libc.CLONE_NEWPID
    pidfd = os.pidfd_open(init_pid)
    try:
        def enter():
            _libc.setns(pidfd, flags)
        for path, args, env, timeout in hooks:
            try:
                done = subprocess.run(list(args) or [path], executable=path, input=state.encode(),
                                      env=dict(item.split("=", 1) for item in env if "=" in item),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout,
                                      preexec_fn=enter if flags else None, close_fds=True)
            except subprocess.TimeoutExpired:
                raise OSError(0, f"createContainer hook {path} did not finish within {timeout} s") from None
            except (OSError, subprocess.SubprocessError) as exc:
                raise OSError(0, f"createContainer hook {path}: {exc}") from None
            if done.returncode != 0:
                said = done.stderr.decode(errors="replace").strip().splitlines()
                raise OSError(0, f"createContainer hook {path} failed with status {done.returncode}"
                              + (f": {said[-1]}" if said else ""))
    finally:
        os.close(pidfd)


def _namespace_flags_of(pid: int) -> int:
    """The CLONE_NEW* flags of every namespace in which pid differs from us."""
    from .spec import NAMESPACE_FLAGS
    names = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts", "user": "user",
             "cgroup": "cgroup", "time": "time"}
    flags = 0
    for kind, proc_name in names.items():
        try:
            theirs = os.stat(f"/proc/{pid}/ns/{proc_name}").st_ino
            ours = os.stat(f"/proc/self/ns/{proc_name}").st_ino
        except OSError:
            continue
        if theirs != ours:
            flags |= NAMESPACE_FLAGS[kind]
    return flags


def _write_pid_file(path: str | None, pid: int) -> None:
    if not path:
        return
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as handle:
        handle.write(str(pid))
    os.replace(temporary, path)


def send_console(socket_path: str, master: int, size=None) -> None:
    """The pty master to the engine's console socket, over SCM_RIGHTS, as runc sends it."""
    import socket
    if size and all(size):
        import fcntl
        import struct
        import termios
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(socket_path)
        socket.send_fds(connection, [b"/dev/ptmx"], [master])


def send_to_seccomp_agent(bundle, init_pid: int, listener: int) -> None:
    """The filter's listener to the agent at linux.seccomp.listenerPath, as runc sends it: one JSON
    ContainerProcessState (the fd named "seccompFd", the metadata, the OCI state) over SCM_RIGHTS."""
    import json
    import socket
    path, metadata = bundle.plan.seccomp_agent
    state = {"ociVersion": bundle.config.get("ociVersion", "1.2.0"), "id": bundle.container_id,
             "status": "creating", "pid": init_pid, "bundle": bundle.directory}
    if bundle.annotations:
        state["annotations"] = bundle.annotations
    message = {"ociVersion": state["ociVersion"], "fds": ["seccompFd"], "pid": init_pid, "metadata": metadata,
               "state": state}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.connect(path)
            socket.send_fds(connection, [json.dumps(message).encode()], [listener])
    except OSError as exc:
        raise RuntimeFailure(f"config.json: linux.seccomp.listenerPath: {path}: {exc.strerror or exc}") from None


def cmd_create(root, options, positionals, log, *, keep_gate=False):
    container_id = positionals[0]
    container = Container(root, container_id)
    bundle_dir = os.path.abspath(options.bundle or ".")
    from . import floor as floors, policy, spec
    settings = floors.load(options.floor_file)  # a broken floor file fails before anything is read
    config = spec.read_config(bundle_dir)
    floor, problem = settings.choose(config.get("annotations") if isinstance(config.get("annotations"), dict)
                                     else {})
    judgement = policy.judge(config, bundle_dir, container_id, floor, problem, settings.source, settings.pool.size)
    try:
        return _create_judged(container, bundle_dir, options, log, settings, config, judgement)
    finally:
        judgement.close()


def _create_judged(container, bundle_dir, options, log, settings, config, judgement):
    import json
    from . import policy, spec
    container_id = container.id
    audit = CreateRecord(settings, container_id, bundle_dir, config, judgement)
    for warning in judgement.warnings:
        log.warning(warning)
    try:
        judgement.refuse_if_below()
    except policy.FloorRefusal as exc:
        audit.write("refused", str(exc), log)
        raise
    container.make()
    gate = -1
    created = False
    allocation = None
    opened: list[int] = []
    try:
        container.lock()
        if judgement.needs_range:
            from . import idranges
            if judgement.share is not None:
                allocation = idranges.share(settings.pool, judgement.share[0], container.dir)
                if allocation is not None:
                    judgement.apply_shared(judgement.share[1], allocation)
                else:
                    judgement.config["linux"].setdefault("namespaces", []).append({"type": "user"})
            if allocation is None:
                allocation = idranges.allocate(settings.pool, container.dir)
                judgement.apply_range(allocation)
        bundle = spec.load_bundle(bundle_dir, container_id, config=judgement.config)
        for warning in bundle.warnings:
            log.warning(warning)
        spec.check_hooks_exist(bundle)
        if bundle.terminal and not options.console_socket:
            raise RuntimeFailure("cannot allocate tty if runc will detach without setting console socket")
        bundle, opened = policy.finish(bundle, judgement, allocation)
        if options.no_new_keyring:
            import dataclasses
            bundle = dataclasses.replace(bundle, plan=bundle.plan.replace(new_keyring=None))
        preserve = int(options.preserve_fds or 0)
        from .state import write_private
        write_private(os.path.join(container.dir, "config.json"), json.dumps(bundle.config).encode())
        os.mkfifo(container.fifo, 0o600)
        gate = os.open(container.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        launch = _launch(bundle, gate, preserve)
        try:
            launch.create()
        finally:
            for warning in launch.warnings:
                log.warning(warning)
            for fd in opened:
                os.close(fd)
            opened = []
        created = True
        try:
            cgroup = launch.cgroup
            from ..digest import sha256
            container.state = {
                "ociVersion": bundle.config.get("ociVersion", "1.2.0"), "id": container_id, "status": "created",
                "pid": launch.init_pid, "bundle": bundle_dir, "annotations": bundle.annotations,
                "sandbox": {"init_start_time": process_start_time(launch.init_pid), "created": now_rfc3339(),
                            "cgroup_path": bundle.plan.cgroup_path,
                            "cgroup_dirs": {name: path for name, path in bundle.cgroup_dirs.items()
                                            if cgroup is not None and path in cgroup.directories()},
                            "rootfs": _root_path(bundle.plan.mounts),
                            "config_digest": sha256(json.dumps(bundle.config, sort_keys=True).encode()).hexdigest(),
                            "hooks": {stage: [list(h) for h in hooks] for stage, hooks in bundle.hooks.items()
                                      if stage in ("poststart", "poststop")},
                            "rootless": bundle.rootless, "owner": os.geteuid(), "floor": judgement.state(),
                            "landlock": [list(rule) for rule in bundle.plan.landlock_rules or ()]
                            if bundle.plan.landlock_rules is not None else None}}
            if allocation is not None:
                container.extra["id_range"] = {**allocation.record(), "registry": settings.pool.registry}
            if judgement.workdir:
                container.extra["overlay_workdir"] = judgement.workdir
            if settings.audit_log:
                container.extra["audit_log"] = settings.audit_log
            container.save()
            if launch.seccomp_listener >= 0:
                try:
                    send_to_seccomp_agent(bundle, launch.init_pid, launch.seccomp_listener)
                finally:
                    os.close(launch.seccomp_listener)
            elif bundle.plan.seccomp_agent is not None:
                raise RuntimeFailure("the container's seccomp listener was not received")
            if bundle.terminal:
                master = launch.terminal_master
                if master < 0:
                    raise RuntimeFailure("the container's terminal was not received")
                try:
                    send_console(options.console_socket, master, bundle.console_size)
                finally:
                    os.close(master)
            _write_pid_file(options.pid_file, launch.init_pid)
            audit.id_range = allocation
            audit.write("created", None, log)
        except BaseException:
            _destroy(container, launch.cgroup)
            created = False  # nothing of it stays: the state goes too (finally, below)
            raise
        finally:
            launch.delete()  # what this process holds; the container lives on
        return launch
    except BaseException as exc:
        if not created and not isinstance(exc, policy.FloorRefusal):
            audit.write("failed", getattr(exc, "one_line", lambda: str(exc))() if hasattr(exc, "one_line")
                        else str(exc), log)
        raise
    finally:
        for fd in opened:
            os.close(fd)
        if gate >= 0:
            os.close(gate)
        if not created:
            container.remove()
            if judgement.workdir:
                from .idmap import remove_workdir
                remove_workdir(judgement.workdir)
            if allocation is not None:
                from . import idranges
                idranges.release(settings.pool, container.dir, allocation.slot)
        container.unlock()


def _root_path(mounts) -> str:
    root = mounts.root_source if mounts is not None else ""
    return getattr(root, "source", root) or ""


class CreateRecord:
    """The audit trail's record of one create (sandbox/audit.py's hash-chained log): the container,
    its bundle, config.json's digest as the engine wrote it, its annotations, the floor and every
    decision, and the outcome. A record that cannot be written is a warning in the log, or, when
    the floor requires the audit trail, a failed create."""

    def __init__(self, settings, container_id: str, bundle_dir: str, config: dict, judgement):
        self.settings, self.container_id, self.bundle_dir = settings, container_id, bundle_dir
        self.config, self.judgement = config, judgement
        self.id_range = None

    def write(self, result: str, error: str | None, log) -> None:
        from ..audit import AuditLog, log_path
        from ..digest import sha256
        judgement = self.judgement
        try:
            with open(os.path.join(self.bundle_dir, "config.json"), "rb") as handle:
                digest = sha256(handle.read()).hexdigest()
        except OSError:
            digest = None
        record = {"event": "oci-create", "id": os.urandom(8).hex(), "time": now_rfc3339(), "uid": os.getuid(),
                  "pid": os.getpid(), "container": self.container_id, "bundle": self.bundle_dir,
                  "config_digest": digest, "annotations": self.config.get("annotations") or {},
                  "floor": judgement.floor.summary(), "mode": judgement.floor.mode,
                  "decisions": [d.record() for d in judgement.decisions], "result": result}
        if judgement.floor.mode == "off":
            record["floor_off"] = "the runtime floor is off (conformance testing): nothing was checked or raised"
        if error:
            record["error"] = error
        if self.id_range is not None:
            record["id_range"] = self.id_range.record()
        path = self.settings.audit_log or log_path()
        try:
            AuditLog(path).append(record)
        except OSError as exc:
            message = f"audit log {path}: {exc.strerror or exc}"
            if judgement.floor.audit_required and result == "created":
                raise RuntimeFailure(f"{message}, and the floor requires the audit trail (audit.required): "
                                     "not creating the container") from None
            log.warning(message)


def _launch(bundle, gate: int, preserve: int):
    from ..launcher import Launch
    from ..program import startup_done
    startup_done()  # sheds root's supplementary groups: init can then be cloned directly
    plan = bundle.plan
    hooks = bundle.hooks
    launch = Launch(plan, detached=True, start_gate=gate, tty=bundle.terminal,
                    pass_fds=tuple(range(3, 3 + preserve)),
                    namespaces_ready=_namespace_hooks(bundle) if _has_namespace_hooks(hooks) else None)
    if hooks.get("startContainer"):
        launch.start_hooks = hooks["startContainer"]
        launch.hook_state = _hook_state(bundle.container_id, "created", 0, bundle.directory, bundle.annotations)
    return launch


def _has_namespace_hooks(hooks: dict) -> bool:
    return any(hooks.get(stage) for stage in ("prestart", "createRuntime", "createContainer"))


def _namespace_hooks(bundle):
    def run(init_pid: int) -> None:
        state = _hook_state(bundle.container_id, "creating", init_pid, bundle.directory, bundle.annotations)
        for stage in ("prestart", "createRuntime"):
            if bundle.hooks.get(stage):
                _run_runtime_hooks(bundle.hooks[stage], state, stage)
        if bundle.hooks.get("createContainer"):
            _run_container_hooks(bundle.hooks["createContainer"], state, init_pid)
    return run


def _destroy(container: Container, cgroup=None) -> None:
    """Kill everything of the container and remove its cgroups (state is the caller's)."""
    pid = container.pid
    if pid and container.init_alive():
        try:
            os.kill(pid, SIGKILL)
        except ProcessLookupError:
            pass
    if cgroup is not None:
        if cgroup.active:
            cgroup.thaw()
            cgroup.destroy()
    elif container.extra.get("cgroup_dirs"):
        left = container.destroy_cgroups()
        if left:
            raise RuntimeFailure(f"cgroups still busy after kill: {', '.join(left)}")


def cmd_start(root, options, positionals, log):
    container = _existing(root, positionals[0]).lock()
    try:
        container.load()
        status = container.status()
        if status == "stopped":
            raise RuntimeFailure("cannot start a container that has stopped")
        if status != "created":
            raise RuntimeFailure(f"cannot start an already {status} container")
        if (container.extra.get("floor") or {}).get("verify"):
            _verify(container, log)
        try:
            gate = os.open(container.fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise RuntimeFailure(f"cannot start container {container.id}: its init is not waiting ({exc.strerror})") \
                from None
        try:
            os.write(gate, b"g")
            os.unlink(container.fifo)  # the status is "running" from now on (state.py derives it)
            _wait_for_exec(gate)
        finally:
            os.close(gate)
        hooks = (container.extra.get("hooks") or {}).get("poststart")
        if hooks:
            state = _hook_state(container.id, "running", container.pid, container.state.get("bundle", ""),
                                container.state.get("annotations") or {})
            try:
                _run_runtime_hooks(tuple(tuple(h) for h in hooks), state, "poststart")
            except OSError as exc:
                log.warning(str(exc.strerror or exc))  # the spec: a failing poststart hook is a warning
    finally:
        container.unlock()
    return 0


def _verify(container: Container, log) -> None:
    """The probe inside the container, against the floor's promises (sandbox/oci/verify.py); the
    outcome goes to the audit trail; a broken promise refuses start (the workload never runs)."""
    from .verify import verify_at_start
    record = {"event": "oci-verify", "id": os.urandom(8).hex(), "time": now_rfc3339(), "container": container.id,
              "bundle": container.state.get("bundle", "")}
    try:
        judged = verify_at_start(container, log)
    except RuntimeFailure as exc:
        record.update(result="refused", error=str(exc))
        _audit(container, record, log)
        raise
    record.update(result="verified", checked=len(judged["checked"]))
    _audit(container, record, log)


def _audit(container: Container, record: dict, log) -> None:
    from ..audit import AuditLog, log_path
    path = container.extra.get("audit_log") or log_path()
    try:
        AuditLog(path).append(record)
    except OSError as exc:
        log.warning(f"audit log {path}: {exc.strerror or exc}")


def _wait_for_exec(gate: int, timeout: float = 120.0) -> None:
    """The workload holds the FIFO's read end, close-on-exec, from the gate to its exec (through
    the startContainer hooks): its end shows as POLLERR on our write end. start returns after it,
    so the poststart hooks run once the container's process runs, as the spec says."""
    import select
    poller = select.poll()
    poller.register(gate, select.POLLERR)
    poller.poll(int(timeout * 1000))


def _existing(root: str, container_id: str) -> Container:
    container = Container(root, container_id)
    if not container.exists():
        raise RuntimeFailure(f"container {container_id!r} does not exist")
    return container


def wait_forwarding_signals(pid: int, target=None) -> int:
    """Wait for our child `pid` (run, or exec without --detach), passing the signals a user sends
    the runtime on to target() (default: pid itself); its exit code, 128+N for signal N, 255 when
    it cannot be waited for."""
    import signal  # (not at module level: start and delete do without it)

    def forward(signum, _frame):
        try:
            os.kill(target() if target else pid, signum)
        except ProcessLookupError:
            pass
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, forward)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            return 255
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.waitstatus_to_exitcode(status)


def cmd_run(root, options, positionals, log):
    """create + start (+ wait and delete unless --detach), in this one process."""
    from .. import _libc
    if not options.detach:
        _libc.prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: init comes back to us to be waited for
    cmd_create(root, options, positionals, log)
    cmd_start(root, options, positionals, log)
    if options.detach:
        return 0
    container = Container(root, positionals[0]).load()
    pid = container.pid
    code = wait_forwarding_signals(pid, lambda: container.workload_pid() or pid)
    if not options.keep:
        container.lock()
        try:
            _delete(container, log)
        finally:
            container.unlock()
    return code


# ---------------------------------------------------------------- state, list

def cmd_state(root, options, positionals, log):
    import json
    container = _existing(root, positionals[0]).load()
    print(json.dumps(container.oci_state(), indent=2))
    return 0


def cmd_list(root, options, positionals, log):
    import json
    containers = all_containers(root)
    fmt = options.format or "table"
    if fmt not in ("table", "json"):
        raise RuntimeFailure(f"invalid format option: {fmt}")
    if options.quiet:
        for container in containers:
            print(container.id)
        return 0
    states = [container.oci_state() for container in containers]
    if fmt == "json":
        print(json.dumps(states))
        return 0
    import pwd
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    for container, state in zip(containers, states):
        owner = container.extra.get("owner", 0)
        try:
            owner = pwd.getpwuid(owner).pw_name
        except KeyError:
            owner = f"#{owner}"
        rows.append((state["id"], str(state["pid"]), state["status"], state["bundle"], state["created"], owner))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    for row in rows:
        print("   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


# ---------------------------------------------------------------- kill, delete

def parse_signal(text: str) -> int:
    import signal
    if text.isdigit():
        number = int(text)
        if 0 < number < 65:
            return number
    upper = text.upper()
    if not upper.startswith("SIG"):
        upper = "SIG" + upper
    number = getattr(signal, upper, None)  # SIGTERM...: module constants, no enum walk
    if upper.startswith("SIG") and not upper.startswith(("SIG_", "SIGRTM")) and isinstance(number, int):
        return int(number)
    for base in ("SIGRTMIN", "SIGRTMAX"):
        if upper.startswith(base) and upper[len(base):] and upper[len(base)] in "+-":
            offset = int(upper[len(base):])
            value = (signal.SIGRTMIN if base == "SIGRTMIN" else signal.SIGRTMAX) + offset
            if signal.SIGRTMIN <= value <= signal.SIGRTMAX:
                return int(value)
    raise RuntimeFailure(f"unknown signal {text!r}")


def cmd_kill(root, options, positionals, log):
    container = _existing(root, positionals[0]).load()
    signum = parse_signal(positionals[1] if len(positionals) > 1 else "SIGTERM")
    status = container.status()
    if status == "stopped":
        raise RuntimeFailure("container not running")
    _signal_container(container, signum, options.all)
    return 0


def _signal_container(container: Container, signum: int, everything: bool) -> None:
    import signal
    init = container.pid
    cgroup = container.cgroup() if container.extra.get("cgroup_dirs") else None
    if everything and cgroup is not None and cgroup.active:
        if signum == signal.SIGKILL:
            cgroup.kill_all()
        else:
            for pid in cgroup.pids():
                if pid != init:
                    try:
                        os.kill(pid, signum)
                    except ProcessLookupError:
                        pass
        if container.frozen():
            cgroup.thaw()  # a frozen task acts on no signal
    if signum == signal.SIGKILL or container.status() == "created":
        # init takes the pid namespace with it; a created container's workload waits at the gate
        targets = [init]
    else:
        targets = [container.workload_pid() or init]
    for pid in targets:
        if process_start_time(init) != container.extra.get("init_start_time"):
            return  # init has gone meanwhile: its pid may be another process's now
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def cmd_delete(root, options, positionals, log):
    container = Container(root, positionals[0])
    if not container.exists():
        if options.force and not os.path.isdir(container.dir):
            return 0
        if not os.path.isdir(container.dir):
            raise RuntimeFailure(f"container {positionals[0]!r} does not exist")
    container.lock()
    try:
        if container.exists():
            container.load()
        status = container.status()
        if status in ("running", "paused") and not options.force:
            raise RuntimeFailure(f"cannot delete container {container.id} that is not stopped: {status}")
        _delete(container, log)
    finally:
        container.unlock()
    return 0


def _delete(container: Container, log) -> None:
    _destroy(container)
    deadline = time.monotonic() + 5
    while container.init_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    hooks = (container.extra.get("hooks") or {}).get("poststop")
    if hooks:
        state = _hook_state(container.id, "stopped", 0, container.state.get("bundle", ""),
                            container.state.get("annotations") or {})
        try:
            _run_runtime_hooks(tuple(tuple(h) for h in hooks), state, "poststop")
        except OSError as exc:
            log.warning(str(exc.strerror or exc))
    id_range = container.extra.get("id_range")
    if container.extra.get("overlay_workdir"):
        from .idmap import remove_workdir
        remove_workdir(container.extra["overlay_workdir"])
    container.remove()
    if id_range:  # the container's processes are gone: its host id range is free again
        from .floor import IdPool
        from .idranges import release
        release(IdPool(registry=id_range["registry"]), container.dir, id_range.get("slot"))


# ---------------------------------------------------------------- pause, resume, ps, events, update

def _running_cgroup(root: str, container_id: str, action: str):
    container = _existing(root, container_id).load()
    status = container.status()
    if status == "stopped":
        raise RuntimeFailure("container not running")
    cgroup = container.cgroup() if container.extra.get("cgroup_dirs") else None
    if cgroup is None or not cgroup.active:
        raise RuntimeFailure(f"cannot {action} container {container_id}: it has no cgroup (rootless without "
                             "a delegated cgroup)")
    return container, cgroup


def cmd_pause(root, options, positionals, log):
    container, cgroup = _running_cgroup(root, positionals[0], "pause")
    container.lock()
    try:
        if not cgroup.freeze():
            cgroup.thaw()
            raise RuntimeFailure(f"cannot pause container {container.id}: its cgroup did not freeze")
    finally:
        container.unlock()
    return 0


def cmd_resume(root, options, positionals, log):
    container, cgroup = _running_cgroup(root, positionals[0], "resume")
    container.lock()
    try:
        cgroup.thaw()
    finally:
        container.unlock()
    return 0


def cmd_ps(root, options, positionals, log):
    import json
    container = _existing(root, positionals[0]).load()
    cgroup = container.cgroup() if container.extra.get("cgroup_dirs") else None
    if cgroup is not None and cgroup.active:
        pids = cgroup.pids()
    else:
        pids = [container.pid] if container.init_alive() else []
    if (options.format or "table") == "json":
        print(json.dumps(pids))
        return 0
    import subprocess
    if pids:
        subprocess.run(["ps", "-f", "-p", ",".join(str(p) for p in pids)], check=False)
    else:
        print("UID          PID    PPID  C STIME TTY          TIME CMD")
    return 0


def _stats(container: Container) -> dict:
    cgroup = container.cgroup()
    stats = cgroup.stats() if cgroup.active else None
    data: dict = {"cpu": {"usage": {}}, "memory": {"usage": {}}, "pids": {}}
    if stats is not None:
        if stats.cpu_user_s is not None:
            user, system = int(stats.cpu_user_s * 1e9), int((stats.cpu_system_s or 0) * 1e9)
            data["cpu"]["usage"] = {"total": user + system, "user": user, "kernel": system}
        if stats.cpu_throttled_periods is not None:
            data["cpu"]["throttling"] = {"throttledPeriods": stats.cpu_throttled_periods,
                                         "throttledTime": int((stats.cpu_throttled_s or 0) * 1e9)}
        data["memory"]["usage"] = {"usage": stats.memory_current_bytes or 0, "max": stats.memory_peak_bytes or 0}
        data["pids"] = {"current": len(cgroup.pids())}
        if stats.oom_kills is not None:
            data["memory"]["oomKills"] = stats.oom_kills
    return {"type": "stats", "id": container.id, "data": data}


def cmd_events(root, options, positionals, log):
    import json
    container = _existing(root, positionals[0]).load()
    if options.stats:
        print(json.dumps(_stats(container)))
        return 0
    interval = float((options.interval or "5s").rstrip("s"))
    ooms = None
    while container.status() != "stopped":
        event = _stats(container)
        kills = event["data"]["memory"].get("oomKills")
        if ooms is not None and kills is not None and kills > ooms:
            print(json.dumps({"type": "oom", "id": container.id}), flush=True)
        ooms = kills
        print(json.dumps(event), flush=True)
        time.sleep(interval)
    return 0


def _bytes(text: str) -> int:
    text = text.strip().lower()
    if text in ("-1", "max"):
        return -1
    factors = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    unit = text[-1:] if text[-1:] in factors else (text[-2:-1] if text.endswith("b") and text[-2:-1] in factors
                                                 else "")
    number = text.rstrip("b").rstrip("kmgt") if unit else text.rstrip("b")
    return int(float(number) * factors.get(unit, 1))


def cmd_update(root, options, positionals, log):
    import json
    container, cgroup = _running_cgroup(root, positionals[0], "update")
    resources: dict = {}
    if options.resources:
        source = sys.stdin if options.resources == "-" else open(options.resources)
        with source:
            try:
                resources = json.load(source)
            except ValueError as exc:
                raise RuntimeFailure(f"{options.resources}: expected JSON linux.resources ({exc})") from None
        if not isinstance(resources, dict):
            raise RuntimeFailure(f"{options.resources}: expected a JSON object (linux.resources)")
    memory = resources.setdefault("memory", {})
    for flag, key in (("memory", "limit"), ("memory_swap", "swap"), ("memory_reservation", "reservation"),
                      ("kernel_memory", "kernel")):
        if options.get(flag):
            memory[key] = _bytes(options[flag])
    cpu = resources.setdefault("cpu", {})
    for flag, key in (("cpu_shares", "shares"), ("cpu_quota", "quota"), ("cpu_period", "period")):
        if options.get(flag):
            cpu[key] = int(options[flag])
    for flag, key in (("cpuset_cpus", "cpus"), ("cpuset_mems", "mems")):
        if options.get(flag):
            cpu[key] = options[flag]
    if options.pids_limit:
        resources["pids"] = {"limit": int(options.pids_limit)}
    if options.blkio_weight:
        resources["blockIO"] = {"weight": int(options.blkio_weight)}
    resources.pop("devices", None)  # runc's update leaves the device rules as created
    from ..cgroups import oci as oci_cgroups
    container.lock()
    try:
        oci_cgroups.apply(cgroup, {k: v for k, v in resources.items() if v})
    finally:
        container.unlock()
    return 0


# ---------------------------------------------------------------- exec, spec, features

def cmd_exec(root, options, positionals, log):
    from .exec import exec_process
    return exec_process(root, options, positionals, log)


def cmd_spec(root, options, positionals, log):
    import json
    from .defaults import default_config
    directory = options.bundle or "."
    path = os.path.join(directory, "config.json")
    if os.path.exists(path):
        raise RuntimeFailure("File config.json already exists")
    with open(path, "w") as handle:
        json.dump(default_config(rootless=bool(options.rootless)), handle, indent="\t")
        handle.write("\n")
    return 0


def cmd_features(root, options, positionals, log):
    import json
    from .defaults import features
    print(json.dumps(features(), indent=4))
    return 0
