"""`sandbox-runtime exec`: a new process in a running container.

The runtime forks a helper that joins the container's cgroup (still in the host's namespaces),
connects the console socket if there is a terminal, and enters every namespace of the container's
main process at once (setns with a pidfd and all the flags: the user namespace first, as the
kernel orders them); it then forks, because a pid namespace is entered by children only. That
child takes the process's rlimits, ids, capabilities, no_new_privs and the container's seccomp
filter, in the workload's order (child.run_exec), and execs. A close-on-exec pipe tells the runtime
whether the exec happened; its pid goes to --pid-file before the runtime returns (--detach) or
the runtime waits for it and exits with its status.
"""
from __future__ import annotations

import json
import os

from .spec import SpecError, _Fields, _Translation
from .state import Container, RuntimeFailure

PR_SET_CHILD_SUBREAPER = 36


def _process_config(options, positionals, config: dict) -> tuple[dict, str]:
    """The process to run (from --process, or the container's process with the flags applied)."""
    if options.process:
        try:
            with open(options.process) as handle:
                process = json.load(handle)
        except OSError as exc:
            raise RuntimeFailure(f"{options.process}: {exc.strerror}") from None
        except ValueError as exc:
            raise RuntimeFailure(f"{options.process}: expected a JSON process ({exc})") from None
        if not isinstance(process, dict):
            raise RuntimeFailure(f"{options.process}: expected a JSON object (an OCI process)")
        return process, os.path.basename(options.process)
    base = dict(config.get("process") or {})
    args = positionals[1:]
    if not args:
        raise RuntimeFailure("exec: no command given (arguments after the container id, or --process)")
    process = {**base, "args": args, "terminal": bool(options.tty)}
    env = list(base.get("env") or [])
    for item in options.env or []:
        env.append(item)
    process["env"] = env
    if options.cwd:
        process["cwd"] = options.cwd
    if options.user:
        uid, _, gid = options.user.partition(":")
        process["user"] = {"uid": int(uid), "gid": int(gid or 0)}
    if options.additional_gids:
        process.setdefault("user", {})["additionalGids"] = [int(g) for g in options.additional_gids]
    if options.cap:
        caps = {name: list((base.get("capabilities") or {}).get(name) or []) for name in
                ("bounding", "effective", "permitted", "inheritable", "ambient")}
        for cap in options.cap:
            for name in ("bounding", "effective", "permitted"):
                if cap not in caps[name]:
                    caps[name].append(cap)
        process["capabilities"] = caps
    if options.no_new_privs:
        process["noNewPrivileges"] = True
    if options.apparmor:
        process["apparmorProfile"] = options.apparmor
    if options.process_label:
        process["selinuxLabel"] = options.process_label
    return process, "process.json"


def _translate(process: dict, file: str, config: dict, container_id: str):
    """(ChildContext-ready fields) of the exec'd process; errors name the process file's field."""
    from ..plan import CapabilitySets
    fields = _Fields(process)
    try:
        args = fields.strings("args")
        if not args:
            raise SpecError("args", "expected at least one argument (the command)")
        env = {}
        for i, item in enumerate(fields.strings("env")):
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise SpecError(f"env[{i}]", "expected NAME=value", item)
            env[name] = value
        cwd = fields.get("cwd", str, "/") or "/"
        if not cwd.startswith("/"):
            raise SpecError("cwd", "expected an absolute path", cwd)
        user = fields.obj("user")
        uid, gid = user.get("uid", int, 0), user.get("gid", int, 0)
        groups = tuple(_Translation._ints(user, "additionalGids"))
        umask = user.get("umask", int, 0o022)
        fields.refuse("apparmorProfile", "this host has no AppArmor (the profile cannot be applied)")
        fields.refuse("selinuxLabel", "this host has no SELinux (the label cannot be applied)")
        fields.refuse("ioPriority", "I/O priorities are not applied by this runtime")
        fields.refuse("scheduler", "scheduling policies are not applied by this runtime")
        translation = _Translation.__new__(_Translation)
        caps = translation._capabilities(fields.obj("capabilities"))
        rlimits = translation._rlimits(fields)
        oom = fields.get("oomScoreAdj", int)
        nnp = fields.get("noNewPrivileges", bool, False)
        terminal = fields.get("terminal", bool, False)
    except SpecError as exc:
        raise SpecError(exc.field, str(exc).split(": ", 2)[-1], file=file) from None
    seccomp_bpf, log, agent = None, False, None
    linux = _Fields(config.get("linux") or {}, "linux")
    if linux.has("seccomp"):
        translation = _Translation.__new__(_Translation)
        translation.container_id = container_id
        translation.warnings = []
        policy, log = translation._seccomp(linux, caps)
        agent = translation.seccomp_agent
        if policy is not None:
            from ..seccomp import compile_bpf
            seccomp_bpf = compile_bpf(policy)
    personality = None
    persona = (config.get("linux") or {}).get("personality") or {}
    if persona.get("domain") == "LINUX32":
        personality = 0x0008
    return dict(argv=tuple(args), env=env, cwd=cwd, uid=uid, gid=gid, groups=groups, umask=umask,
                cap_sets=CapabilitySets(**caps), rlimits=rlimits, oom_score_adj=oom, no_new_privs=nnp,
                seccomp_bpf=seccomp_bpf, seccomp_log=log, personality=personality,
                seccomp_agent=agent is not None), terminal, agent


def _floor_fields(container: Container, process: dict, file: str, fields: dict, log) -> dict:
    """The runtime floor recorded at create, for an exec'd process too: capabilities within the
    floor's (beyond them: refused in enforce mode, a warning in warn mode), no_new_privs, the
    default filter when the container has none, the floor filter below the container's, and its
    Landlock rules. Nothing with the floor off (or for a container created before the floor)."""
    floor = container.extra.get("floor") or {}
    extra: dict = {"landlock_rules": None}
    if not floor or floor.get("mode") == "off":
        return extra
    from .policy import check_exec_capabilities
    beyond = check_exec_capabilities(floor, process, file)
    if beyond:
        if floor.get("mode") == "enforce":
            raise RuntimeFailure(f"runtime floor: {beyond[0]}" + (f" (and {len(beyond) - 1} more)" if len(beyond) > 1
                                                                  else ""))
        for line in beyond:
            log.warning(f"floor (warn): {line}")
    if floor.get("no_new_privs"):
        extra["no_new_privs"] = True
    from ..seccomp import compile_bpf
    from ..seccomp.floor import floor_policy
    name = floor.get("seccomp_floor") or "none"
    if floor.get("default_seccomp"):
        from ..seccomp import default_policy
        extra["seccomp_bpf"] = compile_bpf(default_policy())
        name = "strict" if name == "strict" else "none"
    policy = floor_policy(name)
    extra["seccomp_floor_bpf"] = compile_bpf(policy) if policy is not None else None
    rules = container.extra.get("landlock")
    if rules is not None:
        extra["landlock_rules"] = tuple(tuple(rule) for rule in rules)
        extra["landlock_scoped"] = False
    return extra


def spawn_in_container(container: Container, fields: dict, stdio: tuple | None = None,
                       **ctx_fields) -> tuple[int, bytes]:
    """Start a process in the container (fields: ChildContext's, from _translate and the floor):
    (its host pid or 0, the error report of a failed start, empty once it exec'd). A helper joins
    the container's cgroup and namespaces, then forks it into its pid namespace (child.run_exec).
    stdio: fds to become its 0, 1, 2 (default: ours)."""
    target = container.workload_pid() or container.pid
    from .commands import _namespace_flags_of
    flags = _namespace_flags_of(target)
    pidfd = os.pidfd_open(target)
    procs_files = [os.path.join(d, "cgroup.procs") for d in dict.fromkeys((container.extra.get("cgroup_dirs")
                                                                           or {}).values())]
    from .. import _libc, child, protocol
    error_r, error_w = os.pipe2(os.O_CLOEXEC)
    pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
    ctx = child.ChildContext(
        hostname=None, new_user_ns=False, unshare_flags=0, new_cgroup_ns=False, new_pid_ns=False,
        new_net_ns=False, plan=None, keep_caps=(), new_session=False, landlock_best_effort=True,
        message_fd=error_w, go_fd=-1, placed_fd=-1, parent_pid=os.getpid(), **ctx_fields, **fields)
    helper = os.fork()
    if helper == 0:
        try:
            os.close(error_r)
            os.close(pid_r)
            for target, fd in enumerate(stdio or ()):
                if fd is not None and fd != target:
                    os.dup2(fd, target)
            for path in procs_files:  # the container's cgroup first, from the host's view of it
                try:
                    fd = os.open(path, os.O_WRONLY)
                    os.write(fd, str(os.getpid()).encode())
                    os.close(fd)
                except OSError as exc:
                    protocol.send_error(error_w, "cgroup", exc.errno or 0, f"{path}: {exc.strerror}")
                    os._exit(1)
            try:
                if flags:
                    _libc.setns(pidfd, flags)
            except OSError as exc:
                protocol.send_error(error_w, "namespaces", exc.errno or 0, str(exc.strerror or exc))
                os._exit(1)
            os.close(pidfd)
            pid = os.fork()
            if pid == 0:
                os.close(pid_w)
                child.run_exec(ctx)
                os._exit(125)
            os.write(pid_w, str(pid).encode())
            os._exit(0)
        except BaseException:
            os._exit(1)
    os.close(pidfd)
    os.close(error_w)
    os.close(pid_w)
    os.waitpid(helper, 0)
    data = b""
    while chunk := os.read(pid_r, 64):
        data += chunk
    os.close(pid_r)
    report = b""
    while chunk := os.read(error_r, 65536):  # EOF: the process exec'd (the pipe is close-on-exec)
        report += chunk
    os.close(error_r)
    return (int(data) if data else 0), report


def exec_process(root: str, options, positionals: list[str], log) -> int:
    container = Container(root, positionals[0])
    if not container.exists():
        raise RuntimeFailure(f"container {positionals[0]!r} does not exist")
    container.load()
    status = container.status()
    if status == "stopped":
        raise RuntimeFailure("cannot exec in a stopped container")
    if status == "paused" and not options.ignore_paused:
        raise RuntimeFailure("cannot exec in a paused container (use --ignore-paused)")
    config = container.config()
    process, file = _process_config(options, positionals, config)
    fields, terminal, agent = _translate(process, file, config, container.id)
    fields.update(_floor_fields(container, process, file, fields, log))
    if terminal and not options.console_socket:
        raise RuntimeFailure("cannot allocate tty if runc will detach without setting console socket")
    preserve = int(options.preserve_fds or 0)
    from .. import _libc
    if not options.detach:
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1)  # the exec'd process comes back to us to be waited for
    agent_ours = agent_theirs = None
    if agent is not None:  # the exec'd process's listener comes back on this, for the agent
        import socket
        agent_ours, agent_theirs = socket.socketpair()
    console = None
    if terminal:
        import socket
        console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        console.connect(options.console_socket)
    try:
        pid, report = spawn_in_container(container, fields, tty=terminal,
                                         channel_fd=console.fileno() if console is not None else -1,
                                         pass_fds=tuple(range(3, 3 + preserve)),
                                         agent_fd=agent_theirs.fileno() if agent_theirs is not None else -1)
    finally:
        if console is not None:
            console.close()
        if agent_theirs is not None:
            agent_theirs.close()
    if report:
        if pid and not options.detach:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        raise RuntimeFailure(_exec_failure(report, fields["argv"][0]))
    if not pid:
        raise RuntimeFailure("exec failed: the process could not be started")
    if agent_ours is not None:
        _send_listener_to_agent(agent_ours, agent, container, pid)
    if options.pid_file:
        from .commands import _write_pid_file
        _write_pid_file(options.pid_file, pid)
    if options.detach:
        return 0
    from .commands import wait_forwarding_signals
    return wait_forwarding_signals(pid)


def _send_listener_to_agent(channel, agent, container: Container, pid: int) -> None:
    """The exec'd process's listener (it has exec'd: the filter is loaded) to the seccomp agent,
    in the same message create sends, with the process's pid."""
    import socket
    try:
        message, fds, _, _ = socket.recv_fds(channel, 16, 1)
    finally:
        channel.close()
    if message != b"L" or not fds:
        raise RuntimeFailure("exec: the seccomp listener of the process was not received")
    path, metadata = agent
    state = {"ociVersion": container.state.get("ociVersion", "1.2.0"), "id": container.id, "status": "running",
             "pid": container.pid, "bundle": container.state.get("bundle", "")}
    message = {"ociVersion": state["ociVersion"], "fds": ["seccompFd"], "pid": pid, "metadata": metadata,
               "state": state}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.connect(path)
            socket.send_fds(connection, [json.dumps(message).encode()], [fds[0]])
    except OSError as exc:
        raise RuntimeFailure(f"exec: linux.seccomp.listenerPath: {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fds[0])


def _exec_failure(report: bytes, argv0: str) -> str:
    """runc's wording, which the engines read (podman maps "executable file not found" to 127 and
    "permission denied" to 126)."""
    import errno
    try:
        message = json.loads(report.splitlines()[0])
    except (ValueError, IndexError):
        return f"exec failed: {report.decode(errors='replace').strip()}"
    step, err, text = message.get("step"), message.get("errno"), message.get("message", "")
    if step == "exec" and err == errno.ENOENT:
        return f'exec failed: unable to start container process: exec: "{argv0}": executable file not found in $PATH'
    if step == "exec" and err == errno.EACCES:
        return f'exec failed: unable to start container process: exec: "{argv0}": permission denied'
    if step == "working directory":
        return f"exec failed: unable to start container process: chdir to cwd: {text}"
    return f"exec failed: unable to start container process: {step}: {text}"
