"""The profile as data: frozen dataclasses, secure defaults, no I/O.

Each field's metadata is the single description of its TOML key: its kind (how the loader reads it),
its documentation, and whether setting it away from the default relaxes isolation.  The loader, the
JSON Schema, `sandbox check` output and docs/profiles.md are all derived from these classes.

Every class has a docstring: without one, @dataclass builds __doc__ from inspect.signature() at
import, a cost paid by every `sandbox run`.

A profile that says nothing gets the strongest isolation: every namespace, no network, a read-only
root built on an empty tmpfs, no capabilities, the default seccomp policy, Landlock, an unprivileged
user inside that never maps to host root.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import field
from typing import Any

from ..compiled_dataclass import dataclass

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NOBODY = 65534
DEFAULT_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
ALLOWED_DEVICES = DEFAULT_DEVICES + ("fuse", "net/tun", "kvm")
# /proc entries that leak host kernel state or allow host-wide effects; covered by an empty file or dir.
MASKED_PROC_PATHS = (
    "/proc/kcore", "/proc/keys", "/proc/key-users", "/proc/timer_list", "/proc/sched_debug",
    "/proc/latency_stats", "/proc/kallsyms", "/proc/kpagecount", "/proc/kpageflags",
    "/proc/kpagecgroup", "/proc/acpi", "/proc/scsi", "/proc/sysrq-trigger", "/proc/config.gz",
    "/proc/vmallocinfo", "/proc/pagetypeinfo", "/sys/firmware", "/proc/interrupts",
)
READONLY_PROC_PATHS = ("/proc/sys", "/proc/irq", "/proc/bus", "/proc/fs", "/proc/asound")
RLIMIT_NAMES = ("as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
                "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")
LIMIT_NAMES = ("memory", "swap", "memory_high", "cpus", "cpu_weight", "pids", "io_weight", "io_max")


def spec(default: Any = None, *, kind: str, doc: str, relaxes: str = "", factory=None, **extra):
    """A profile key. `relaxes` explains, for `sandbox lint`, what moving off the default gives up."""
    metadata = {"kind": kind, "doc": doc, "relaxes": relaxes, **extra}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Process:
    """[process]: the workload process."""

    command: tuple[str, ...] = spec((), kind="argv",
        doc="Command run when none is given after `--`; the first word is resolved against PATH inside.")
    cwd: str = spec("/", kind="target", doc="Working directory inside the sandbox.")
    env: tuple[tuple[str, str], ...] = spec((), kind="env",
        doc="Variables set inside. Nothing from the host leaks in unless listed in env_passthrough. "
            "PATH defaults to a standard search path and HOME to the working directory.")
    env_passthrough: tuple[str, ...] = spec((), kind="names",
        doc="Host variables copied in by name (a trailing * matches a prefix, e.g. LC_*).",
        relaxes="host environment variables (tokens, credentials) become visible to the workload")
    user: int = spec(NOBODY, kind="id", doc="User id inside the sandbox.")
    group: int = spec(NOBODY, kind="id", doc="Group id inside the sandbox.")
    host_user: int | None = spec(None, kind="id?",
        doc="Host uid the sandbox user maps to. Default: the caller's uid when rootless, "
            f"{NOBODY} when launched by root. Host uid 0 is refused.")
    host_group: int | None = spec(None, kind="id?", doc="Host gid the sandbox group maps to; like host_user.")
    hostname: str = spec("sandbox", kind="hostname", doc="Hostname inside the new UTS namespace.")
    new_session: bool = spec(True, kind="bool",
        doc="Start the workload in a new session so it cannot push input into the caller's terminal.",
        relaxes="the workload shares the caller's session and may inject terminal input (TIOCSTI)")
    umask: int = spec(0o022, kind="mode", doc="File mode creation mask.")


@dataclass(frozen=True)
class Namespaces:
    """[namespaces]: each namespace is new unless set to false."""

    user: bool = spec(True, kind="bool", doc="New user namespace (ids mapped, capabilities confined).",
                      relaxes="capabilities and ids are those of the host")
    mount: bool = spec(True, kind="bool", doc="New mount namespace with a root built from the profile.",
                       relaxes="the workload sees and can change the host mount table")
    pid: bool = spec(True, kind="bool", doc="New pid namespace; the sandbox's init is pid 1.",
                     relaxes="host processes are visible and can be signalled")
    network: bool = spec(True, kind="bool", doc="New network namespace (see [network]).",
                         relaxes="the host network stack is shared")
    ipc: bool = spec(True, kind="bool", doc="New IPC namespace (SysV IPC, POSIX message queues).",
                     relaxes="host SysV shared memory and message queues are reachable")
    uts: bool = spec(True, kind="bool", doc="New UTS namespace (hostname).",
                     relaxes="the workload can see the host's hostname")
    cgroup: bool = spec(True, kind="bool", doc="New cgroup namespace rooted at the sandbox's cgroup.",
                        relaxes="the host cgroup tree layout is visible")
    time: bool = spec(True, kind="bool", doc="New time namespace (boot and monotonic clock offsets).",
                      relaxes="host boot-time clock offsets are shared")


@dataclass(frozen=True)
class Mount:
    """[[filesystem.mounts]]: a bind mount of a host path."""

    source: str = spec(None, kind="source", doc="Host path to bind (absolute; ${CWD}, ${HOME} and "
                       "${PROFILE_DIR} are expanded).", required=True)
    target: str = spec(None, kind="target", doc="Path inside the sandbox; defaults to source.")
    mode: str = spec("ro", kind="enum", choices=("ro", "rw"), doc="ro (default) or rw.",
                     relaxes="the workload can modify these host files")
    optional: bool = spec(False, kind="bool", doc="Skip silently when the source does not exist.")
    noexec: bool = spec(False, kind="bool", doc="Forbid executing files from this mount.")
    idmap: str = spec("auto", kind="enum", choices=("auto", "yes", "no"),
                      doc="For rw binds when root launches: an idmapped mount so files written inside "
                          "belong to the source's owner. auto = when the kernel and filesystem allow it "
                          "and the owner is not root (a root-owned source is bound without a mapping; "
                          "yes on one is refused). Never maps to host uid or gid 0.")
    allow_system_path: bool = spec(False, kind="bool",
                                   doc="Allow this exact source although it is a system path: /, /etc, /usr, "
                                       "/var, /home, /root, /tmp... read-write, or a container runtime socket "
                                       "(docker.sock...) in any mode. Without it such a bind is refused at "
                                       "launch, after symlinks are resolved.",
                                   relaxes="the workload can change host system files or drive a container "
                                           "runtime (host root)")


@dataclass(frozen=True)
class Tmpfs:
    """[[filesystem.tmpfs]]: a fresh tmpfs."""

    target: str = spec(None, kind="target", doc="Path inside the sandbox.", required=True)
    size: int = spec(64 << 20, kind="size", doc="Size limit of the tmpfs.")
    mode: int = spec(0o1777, kind="mode", doc="Permissions of the tmpfs root.")
    noexec: bool = spec(False, kind="bool", doc="Forbid executing files from this tmpfs.")


@dataclass(frozen=True)
class Symlink:
    """[[filesystem.symlinks]]: a symbolic link to create."""

    target: str = spec(None, kind="target", doc="Path of the link inside the sandbox.", required=True)
    points_to: str = spec(None, kind="str", doc="What the link points to.", required=True)


@dataclass(frozen=True)
class File:
    """[[filesystem.files]]: a small file to create."""

    target: str = spec(None, kind="target", doc="Path of the file inside the sandbox.", required=True)
    content: str = spec("", kind="str", doc="Its content.")
    mode: int = spec(0o644, kind="mode", doc="Its permissions.")


@dataclass(frozen=True)
class Filesystem:
    """[filesystem]: the sandbox's file system view."""

    root: str = spec("tmpfs", kind="root",
                     doc="'tmpfs' builds the root on an empty tmpfs from the mounts below; "
                         "an absolute host path uses that directory tree (read-only) as the root.")
    root_size: int = spec(16 << 20, kind="size", doc="Size of the tmpfs the root is built on.")
    readonly_root: bool = spec(True, kind="bool", doc="Remount the root read-only once built.",
                               relaxes="the workload can create files anywhere in the root")
    mounts: tuple[Mount, ...] = spec((), kind="tables", item=Mount, doc="Bind mounts of host paths.")
    tmpfs: tuple[Tmpfs, ...] = spec((), kind="tables", item=Tmpfs, doc="Fresh tmpfs mounts.")
    symlinks: tuple[Symlink, ...] = spec((), kind="tables", item=Symlink, doc="Symbolic links to create.")
    files: tuple[File, ...] = spec((), kind="tables", item=File,
                                   doc="Small files to create (e.g. /etc/passwd), read-only with the root.")
    dev: bool = spec(True, kind="bool", doc="Mount a minimal /dev (devices below, pts, ptmx, shm).")
    devices: tuple[str, ...] = spec(DEFAULT_DEVICES, kind="devices",
                                    doc="Device nodes bound into /dev.", relaxes="extra devices are reachable")
    dev_shm_size: int = spec(64 << 20, kind="size", doc="Size of /dev/shm.")
    proc: bool = spec(True, kind="bool", doc="Mount a fresh /proc for the sandbox's pid namespace.")
    sys: bool = spec(False, kind="bool", doc="Bind the host's /sys read-only.",
                     relaxes="host hardware and kernel details in /sys become readable")
    masked_paths: tuple[str, ...] = spec((), kind="targets",
                                         doc="Extra paths hidden behind an empty file or directory "
                                             "(the sensitive /proc entries are always masked).")
    readonly_paths: tuple[str, ...] = spec((), kind="targets",
                                           doc="Extra paths remounted read-only.")


@dataclass(frozen=True)
class Network:
    """[network]: networking (see docs/network.md)."""

    mode: str = spec("none", kind="enum", choices=("none", "host", "bridge"),
                     doc="none: a new network namespace with only loopback; host: the host's network; "
                         "bridge: a new network namespace with loopback and one interface on a segment "
                         "(see segment, egress, publish).",
                     relaxes="the workload has network access beyond its own loopback")
    segment: str = spec("", kind="segment",
                        doc="bridge: sandboxes that name the same segment reach each other; others cannot. "
                            "Empty: a segment of this sandbox alone.",
                        relaxes="other sandboxes on this segment can reach this one, and it them")
    egress: tuple[str, ...] = spec((), kind="egress",
                                   doc="bridge: destinations outside the segment the workload may reach: "
                                       "\"HOST[:PORT[-PORT]][/tcp|udp]\" (HOST an IPv4 address, a CIDR network "
                                       "or a name resolved at launch) or \"PORT[/tcp|udp]\" (any host). "
                                       "Everything else is refused at once.",
                                   relaxes="the workload can reach these destinations outside its segment")
    publish: tuple[str, ...] = spec((), kind="publish",
                                    doc="bridge: \"[ADDRESS:]HOSTPORT:PORT[/tcp|udp]\": connections to the "
                                        "host's ADDRESS (default 127.0.0.1) port HOSTPORT reach the sandbox's "
                                        "PORT.",
                                    relaxes="host addresses forward connections into the sandbox")
    hostname_resolution: bool = spec(False, kind="bool",
                                     doc="bridge: /etc/hosts inside lists every sandbox on the segment that "
                                         "asks for it, by its process.hostname (kept up to date).")
    dns: tuple[str, ...] = spec((), kind="nameservers",
                                doc="bridge: name servers written to /etc/resolv.conf inside; reachable "
                                    "only if egress allows them (53/udp).")


@dataclass(frozen=True)
class IoLimit:
    """[[limits.io_max]]: block I/O limits for one device."""

    device: str = spec(None, kind="blockdev", doc="Block device: \"MAJOR:MINOR\" or its path, e.g. /dev/vda.",
                       required=True)
    read_bps: int | None = spec(None, kind="size?", doc="Read bandwidth in bytes a second, e.g. \"50M\".")
    write_bps: int | None = spec(None, kind="size?", doc="Write bandwidth in bytes a second.")
    read_iops: int | None = spec(None, kind="int?", doc="Read operations a second.")
    write_iops: int | None = spec(None, kind="int?", doc="Write operations a second.")


@dataclass(frozen=True)
class Limits:
    """[limits]: resource limits."""

    memory: int | None = spec(1 << 30, kind="size?", doc="Memory limit (cgroup).")
    swap: int = spec(0, kind="size", doc="Swap allowed on top of memory; 0 keeps the memory limit real.")
    memory_high: int | None = spec(None, kind="size?", doc="Memory throttling threshold (cgroup v2).")
    cpus: float | None = spec(None, kind="cpus", doc="CPU bandwidth as a number of cores, e.g. 0.5.")
    cpu_weight: int | None = spec(None, kind="int?", doc="Relative CPU weight (1-10000).")
    pids: int | None = spec(512, kind="int?", doc="Maximum number of processes and threads.")
    io_weight: int | None = spec(None, kind="int?", doc="Relative block I/O weight (1-10000).")
    io_max: tuple[IoLimit, ...] = spec((), kind="tables", item=IoLimit,
                                       doc="Block I/O bandwidth and operation limits, per device.")
    timeout: float | None = spec(None, kind="duration?",
        doc="Wall-clock limit. When it passes every process of the sandbox gets SIGTERM, and after "
            "kill_after the whole tree is killed; exit 124.")
    kill_after: float = spec(3.0, kind="duration",
        doc="Grace period between SIGTERM and SIGKILL when the timeout passes (0: kill at once).")
    required: tuple[str, ...] = spec((), kind="limitnames",
                                     doc="Limits that must be enforced: the launch fails when they cannot be.")
    optional: tuple[str, ...] = spec((), kind="limitnames",
                                     doc="Limits this profile accepts going unenforced where the machine cannot "
                                         "apply them (no delegated cgroup): `sandbox verify` reports them as WARN "
                                         "rather than FAIL. Every other limit set is a promise verify holds it to.")
    rlimits: tuple[tuple[str, int, int], ...] = spec((("core", 0, 0),), kind="rlimits",
        doc="Resource limits: name = value, [soft, hard] or \"unlimited\" (names as in setrlimit, "
            "lower case without RLIMIT_). Core dumps are off by default.")


@dataclass(frozen=True)
class Capabilities:
    """[capabilities]: what the workload keeps."""

    keep: tuple[str, ...] = spec((), kind="caps", doc="Capabilities kept inside (CAP_ prefix optional).",
                                 relaxes="the workload holds these capabilities in its namespaces")


@dataclass(frozen=True)
class Landlock:
    """[landlock]: Landlock file-access rules."""

    enabled: bool = spec(True, kind="bool", doc="Restrict file access with Landlock, derived from the mounts.",
                         relaxes="no Landlock file-access rules beneath the mount layout")
    read: tuple[str, ...] = spec((), kind="targets",
                                 doc="Extra paths readable (and executable, unless an [exec] allow list decides).")
    write: tuple[str, ...] = spec((), kind="targets", doc="Extra paths writable.")
    best_effort: bool = spec(True, kind="bool", doc="Run without Landlock, with a warning, on kernels without it.")


@dataclass(frozen=True)
class Exec:
    """[exec]: which executables may run (Landlock's execute right)."""

    allow: tuple[str, ...] | None = spec(None, kind="execpatterns",
        doc="Only these files may be executed (execve, execveat, and as ELF or #! interpreters, which must "
            "be listed too, e.g. /lib64/ld-linux-x86-64.so.2). Paths inside the sandbox; * ? [..] match "
            "within one component, a final /** everything beneath an existing directory. Expanded at "
            "launch inside the sandbox's view: files created later match only beneath a /** directory "
            "that existed at launch. Unset: anything the mounts let run. See docs/monitoring.md.")


SECRET_DIR = "/run/secrets"


@dataclass(frozen=True)
class Secret:
    """[[secrets]]: a secret given to the workload as the file /run/secrets/NAME."""

    name: str = spec(None, kind="secretname", required=True,
                     doc="File name under /run/secrets (letters, digits, '.', '_', '-').")
    file: str | None = spec(None, kind="source", doc="Host file holding the value, read at each launch.")
    env: str | None = spec(None, kind="envname",
                           doc="Launcher environment variable holding the value, read at each launch; "
                               "it never reaches the workload's environment.")


@dataclass(frozen=True)
class Audit:
    """[audit]: the audit trail."""

    enabled: bool = spec(True, kind="bool", doc="Record every launch in the audit log.",
                         relaxes="launches of this profile leave no audit record")
    log: str = spec("", kind="str", doc="Audit log file (JSON lines). Default: $SANDBOX_AUDIT_LOG, else "
                    "/var/log/sandbox/audit.jsonl for root and ~/.local/state/sandbox/audit.jsonl otherwise.")
    required: bool = spec(False, kind="bool",
                          doc="Refuse to launch (exit 125) when the start record cannot be written; "
                              "otherwise that is a warning.")
    syslog: bool = spec(False, kind="bool",
                        doc="Also send each record to syslog (or the journal), a copy outside the log "
                            "writer's reach.")
    syslog_socket: str = spec("/dev/log", kind="source",
                              doc="Unix datagram socket the records are sent to when syslog = true.")


@dataclass(frozen=True)
class Monitor:
    """[monitor]: live activity events while the workload runs (see docs/monitoring.md)."""

    events: str | None = spec(None, kind="output",
        doc="Write one JSON line per event while the workload runs (processes, network calls, denied "
            "system calls, resource samples and thresholds, files written, anomalies): a host file, "
            "appended to (created 0600), or \"-\" for standard output. Also `sandbox run --events`.")
    stats_interval: float = spec(1.0, kind="duration",
        doc="Seconds between resource samples (cpu, memory, pids, io) in the events; 0: no samples "
            "(thresholds are still checked every second). Also `sandbox run --stats-interval`.")
    baseline: str | None = spec(None, kind="source",
        doc="Baseline of a trusted run (`sandbox learn` writes one): every executable and network "
            "destination outside it becomes an `anomaly` event. Monitoring is on when this or events is set.")
    on_anomaly: str = spec("record", kind="enum", choices=("record", "kill"),
        doc="record: anomalies are events and are summarised in the audit trail; kill: the first one "
            "also ends the sandbox, with the reason in the result's warnings and the audit record.")
    processes: bool = spec(True, kind="bool",
        doc="Report each program started (exec events, through seccomp notification: every exec "
            "waits for the launcher, ~0.1-0.2 ms, see docs/performance.md). false: root still gets fork "
            "and exit events (the kernel's connectors, free for the workload), rootless none, and a "
            "baseline's executables are not checked.")
    files: bool = spec(True, kind="bool",
        doc="Report files written under read-write binds (fanotify, when root launches; rootless "
            "launches cannot observe them without ptrace).")


SEVERITIES = ("low", "medium", "high", "critical")


@dataclass(frozen=True)
class Image:
    """[image]: run the sandbox from a container image (see docs/images.md)."""

    ref: str = spec("", kind="str",
        doc="The image: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE or "
            "docker://HOST/NAME[:TAG|@sha256:...]. Its layers become the read-only root; its Env, "
            "WorkingDir, Entrypoint/Cmd and User fill what [process] leaves unset.")
    digest: str = spec("", kind="str",
        doc="Pin: sha256:... of the image's manifest, of the index it was chosen from, or of its config; "
            "any other image is refused. `sandbox check` shows the resolved digest.")
    allowed_registries: tuple[str, ...] = spec((), kind="strings",
        doc="Registries (HOST[:PORT], or HOST[:PORT]/REPOSITORY-PREFIX) docker:// images may come from. "
            "Empty (default): none; local forms are always allowed.",
        relaxes="images may be pulled from these registries")
    pull: str = spec("missing", kind="enum", choices=("missing", "always", "never"),
        doc="missing: use the store's copy of the reference, fetch it otherwise; always: ask the source "
            "again; never: only the store.")
    tls_verify: bool = spec(True, kind="bool", doc="Require HTTPS with a verified certificate from registries.",
        relaxes="registry traffic is not authenticated: only a digest pin protects what runs")
    setuid: bool = spec(False, kind="bool",
        doc="Keep the image's setuid/setgid bits in its root (inert there: mounts are nosuid and "
            "no_new_privs is set; for tools that look at modes). Default: stripped.",
        relaxes="setuid/setgid files from the image are kept (still inert inside the sandbox)")
    require_scan: str = spec("none", kind="enum", choices=("none",) + SEVERITIES,
        doc="Refuse to run the image when `sandbox scan` finds anything at or above this severity.")
    scan_allowlist: str | None = spec(None, kind="source",
        doc="Allowlist of accepted findings for require_scan (the format of `sandbox scan --allow`).")
    vuln_db: str | None = spec(None, kind="source",
        doc="OSV database directory matched against the image's software for require_scan.")
    rootfs: str = spec("", kind="internal", doc="The image's root tree in the store, once resolved.")
    store: str = spec("", kind="internal", doc="The store the image was resolved in.")


@dataclass(frozen=True)
class Profile:
    """A profile: the top level of a profile file, holding the tables above."""

    name: str = spec("", kind="str", doc="Name shown in reports; defaults to the file's stem.")
    description: str = spec("", kind="str", doc="One line saying what the profile is for.")
    extends: str | None = spec(None, kind="str?", doc="Profile (built-in name or path) this one builds on.")
    process: Process = spec(kind="table", doc="The workload process.", factory=Process)
    namespaces: Namespaces = spec(kind="table", doc="Namespaces; each is new unless set to false.",
                                  factory=Namespaces)
    filesystem: Filesystem = spec(kind="table", doc="The sandbox's file system view.", factory=Filesystem)
    network: Network = spec(kind="table", doc="Networking.", factory=Network)
    limits: Limits = spec(kind="table", doc="Resource limits.", factory=Limits)
    capabilities: Capabilities = spec(kind="table", doc="Capabilities.", factory=Capabilities)
    seccomp: Any = spec(kind="seccomp", doc="System call filter (see docs/seccomp.md).",
                        factory=lambda: _default_seccomp())
    landlock: Landlock = spec(kind="table", doc="Landlock file-access rules.", factory=Landlock)
    audit: Audit = spec(kind="table", doc="Audit trail.", factory=Audit)
    exec: Exec = spec(kind="table", doc="Executables allowed to run.", factory=Exec)
    monitor: Monitor = spec(kind="table", doc="Live activity events while the workload runs.", factory=Monitor)
    secrets: tuple[Secret, ...] = spec((), kind="tables", item=Secret,
                                       doc="Secrets, each a read-only file /run/secrets/NAME (mode 0400, owned "
                                           "by the sandbox user), never in the environment or any output.")
    image: Image = spec(kind="table", doc="Container image the root is made of (docs/images.md).", factory=Image)
    source: str = spec("", kind="internal", doc="File the profile was loaded from.")
    lineage: tuple[str, ...] = spec((), kind="internal", doc="Files of the extends chain, this one first.")

    def replace(self, **changes) -> "Profile":
        return dataclasses.replace(self, **changes)


def _default_seccomp():
    from ..seccomp import builtin_policy
    return builtin_policy("default")


def per_profile(function):
    """Cache function(profile) for as long as the profile lives: profiles are frozen, so a result
    never goes stale, and a CI system launches the same one many times. Kept on the profile object
    itself, by identity: hashing a whole frozen Profile (it hashes every table and entry in it)
    cost more than some of the functions cached."""
    @functools.wraps(function)
    def cached(profile):
        results = getattr(profile, "_per_profile", None)
        if results is None:
            try:
                results = {}
                object.__setattr__(profile, "_per_profile", results)  # not a field: eq, hash, replace ignore it
            except (AttributeError, TypeError):  # no __dict__ (not a Profile): just do not keep it
                return function(profile)
        try:
            return results[cached]
        except KeyError:
            value = results[cached] = function(profile)
            return value
    return cached
