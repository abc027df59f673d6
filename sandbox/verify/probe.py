#!/usr/bin/env python3
"""Isolation probe: run inside any container and report what it can reach.

This file is self-contained (Python 3.8+ standard library only, raw syscalls
through ctypes) so it can be copied into Docker, bubblewrap, firejail, a CI
runner or a bare host and run as::

    python3 probe.py [--json] [--context FILE_OR_JSON] [--stress] [--outside PID]

It never performs a harmful operation for real: dangerous syscalls are called
with deliberately invalid arguments (bad pointer 1, fd -1, unknown flags) in a
forked child, so "allowed" shows up as EFAULT/EINVAL/EBADF and "denied" as
EPERM/ENOSYS or death by SIGSYS; kernel knobs are opened for writing and
closed at once, never written; device nodes are listed, never opened. In
each writable mount it creates scratch files (.sandbox-probe-*), tries to make
them setuid/setgid or give them a file capability, and removes them; with a
verifier's context it leaves one empty marker per rw bind until the verifier
has looked at it from the host.

Result
------
Each check yields a dict::

    {"id": "ns.pid", "layer": "namespaces", "description": "...",
     "status": "PASS" | "FAIL" | "WARN" | "SKIP",
     "expected": "...", "observed": "...", "hint": "..."}

PASS  isolated as expected.            FAIL  reachable / shared / too privileged.
WARN  the probe could not tell.        SKIP  not applicable here, or a relaxation
                                             the profile asked for (reason given).

Layers: namespaces, ids, capabilities, seccomp, filesystem, proc, devices,
process, network, ipc, cgroups, terminal.

Context (optional; ``--context`` takes a file path, ``-`` for stdin, or JSON text)
-------------------------------------------------------------------------------
Every key is optional. The verifier builds it with sandbox.verify.canaries::

    {
      "host_ns": {"pid": 4026531836, "net": ..., "mnt": ..., "user": ...,
                  "uts": ..., "ipc": ..., "cgroup": ..., "time": ...},
                              # os.stat("/proc/self/ns/X").st_ino on the host
      "host_hostname": "build-7",         # the host's hostname
      "host_sid": 1234,                   # the launcher's session id
      "canary_token": "sandbox-canary-1a2b3c4d",  # in the canary process argv
      "canary_env": "SANDBOX_CANARY_1A2B3C4D",    # env var set on the host
      "canary_pids": [4321],              # host pids of canary processes
      "canary_tcp_port": 40123,           # listener on host 127.0.0.1
      "canary_abstract_socket": "sandbox-canary-1a2b3c4d",  # without the NUL
      "canary_sysv_shm_key": 123456789,   # SysV shm segment key on the host
      "canary_posix_shm": "sandbox-canary-1a2b3c4d",  # /dev/shm/NAME on host
      "expect": { ... see below ... }
    }

expect (derived from a profile; without it the probe judges by the secure ideal)
----------------------------------------------------------------------------------
::

    {
      "namespaces": {"pid": true, "net": true, ...},  # true = must be new;
                                                      # false = shared on purpose
      "network": "none" | "private" | "host",   # none: only lo; private: own
                                                # netns with more interfaces;
                                                # host: shares the host's
      "capabilities": ["CAP_NET_BIND_SERVICE"], # names kept (default: none)
      "seccomp": true,                 # a filter must be installed
      "no_new_privs": true,
      "allow_userns": false,           # nested user namespaces allowed
      "readonly_paths": ["/usr", "/"], # must be ro,nosuid,nodev
      "rw_paths": ["/tmp"],            # writable, nosuid,nodev
      "masked_paths": ["/proc/kcore"], # absent, empty, unreadable or /dev/null
      "mounts": ["/data"],             # further mount points that may exist
      "devices": ["fuse"],             # extra /dev nodes allowed
      "hostname": "sandbox",
      "new_session": true,             # setsid() expected
      "rw_sources": {"/workspace": "/srv/proj"},  # rw bind -> its real host path
      "write_owner": {"/workspace": [1000, 1000]},  # host uid/gid of files written there
      "allowed_system_paths": [],      # system paths the profile allows (allow_system_path)
      "memory_limit": 268435456,       # bytes, or null for "no expectation"
      "pids_limit": 64,                # or null
      "exec_allow": ["/usr/bin/python3*"],  # [exec] allow patterns, or null for no list
      "egress_allowed": ["192.0.2.7", 443, "tcp"],      # bridge: must be reachable
      "egress_refused": [["192.0.2.7", 9, "tcp"]],      # bridge: must be refused at once
      "stress": false                  # also allocate/fork past the limits
    }

A relaxation the profile asks for (network "host", a namespace false, a kept
capability, seccomp false) turns the matching checks into SKIP with the
reason, never into a silent PASS.

API: run_checks(context) -> list[dict]; outside_checks(pid, context) -> list[dict]
(run on the host against the probe's pid while it runs); main(argv) -> exit
status (0 when nothing FAILed, 1 otherwise, 2 on usage errors).
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import resource
import signal
import socket
import stat
import sys

PROBE_VERSION = 1
PASS, FAIL, WARN, SKIP = "PASS", "FAIL", "WARN", "SKIP"
LAYERS = ("namespaces", "ids", "capabilities", "seccomp", "filesystem", "proc",
          "devices", "process", "network", "ipc", "cgroups", "terminal")

NAMESPACES = ("pid", "net", "mnt", "user", "uts", "ipc", "cgroup", "time")
LOW_IMPACT_NS = {"time"}
# Inode numbers the kernel gives the initial namespaces (include/linux/proc_ns.h;
# net and mnt got fixed ones in 6.x). Seeing one means "not isolated at all".
INIT_NS_INODES = {"ipc": 0xEFFFFFFF, "uts": 0xEFFFFFFE, "user": 0xEFFFFFFD,
                  "pid": 0xEFFFFFFC, "cgroup": 0xEFFFFFFB, "time": 0xEFFFFFFA,
                  "net": 0xEFFFFFF9, "mnt": 0xEFFFFFF8}

CAP_NAMES = ("chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill",
             "setgid", "setuid", "setpcap", "linux_immutable", "net_bind_service",
             "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
             "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
             "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time",
             "sys_tty_config", "mknod", "lease", "audit_write", "audit_control",
             "setfcap", "mac_override", "mac_admin", "syslog", "wake_alarm",
             "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore")
CAP_SETS = (("CapInh", "inheritable"), ("CapPrm", "permitted"), ("CapEff", "effective"),
            ("CapBnd", "bounding"), ("CapAmb", "ambient"))

def _uname(field, proc_file):
    """A field of uname(2), or its copy under /proc/sys/kernel when a seccomp policy refuses
    uname() (a learned profile allows only what the learned command called)."""
    try:
        return getattr(os.uname(), field)
    except OSError:
        pass
    try:
        with open(proc_file) as f:
            return f.read().strip()
    except OSError:
        pass
    if field == "machine":  # the interpreter's own build: x86_64-linux-gnu
        import sysconfig
        return (sysconfig.get_config_var("MULTIARCH") or "unknown").split("-")[0]
    return "unknown"


_ARCH = _uname("machine", "/proc/sys/kernel/arch")
_ARCH_COL = {"x86_64": 0, "aarch64": 2}.get(_ARCH)

# Dangerous syscalls probed with arguments the kernel rejects before doing
# anything: name -> ((x86_64, i386, aarch64) numbers, args, what it could do).
# The comment on each line says which check fails first if the call is allowed.
SYSCALLS = {
    "mount": ((165, 21, 40), (1, 1, 1, 0, 1), "mount filesystems"),  # EFAULT on fstype
    "umount2": ((166, 52, 39), (1, -1), "unmount filesystems"),  # EINVAL flags
    "pivot_root": ((155, 217, 41), (1, 1), "change the root mount"),  # EFAULT
    "unshare": ((272, 310, 97), (1,), "create namespaces"),  # EINVAL flags
    "setns": ((308, 346, 268), (-1, 0), "join other namespaces"),  # EBADF
    "ptrace": ((101, 26, 117), (0x7FFFFFFF, -1, 0, 0), "trace processes"),  # ESRCH
    "kexec_load": ((246, 283, 104), (0, 0x7FFFFFFF, 1, 0x100), "boot a new kernel"),  # EINVAL
    "kexec_file_load": ((320, None, 294), (-1, -1, 0, 1, 0x100), "boot a new kernel"),  # EINVAL
    "init_module": ((175, 128, 105), (1, 0, 1), "load kernel modules"),  # ENOEXEC len 0
    "finit_module": ((313, 350, 273), (-1, 1, -1), "load kernel modules"),  # EINVAL flags
    "delete_module": ((176, 129, 106), (1, 0), "unload kernel modules"),  # EFAULT
    "bpf": ((321, 357, 280), (0x7FFFFFFF, 1, 0), "load eBPF programs"),  # EINVAL cmd
    "perf_event_open": ((298, 336, 241), (1, -1, -1, -1, -1), "profile the kernel"),  # EINVAL
    "keyctl": ((250, 288, 219), (0x7FFFFFFF, 0, 0, 0, 0), "reach the kernel keyring"),
    "add_key": ((248, 286, 217), (1, 1, 1, 0, 0), "add kernel keys"),  # EFAULT
    "userfaultfd": ((323, 374, 282), (-1,), "stall kernel page faults (exploit aid)"),
    "open_by_handle_at": ((304, 342, 265), (-1, 1, 0), "open host files by handle"),
    "swapon": ((167, 87, 224), (1, -1), "enable swap"),  # EINVAL flags
    "swapoff": ((168, 115, 225), (1,), "disable swap"),  # EFAULT
    "reboot": ((169, 88, 142), (0, 0, 0, 1), "reboot the machine"),  # EINVAL magic
    "clock_settime": ((227, 264, 112), (0, 1), "set the system clock"),  # EFAULT
    "settimeofday": ((164, 79, 170), (1, 1), "set the system clock"),  # EFAULT
    "acct": ((163, 51, 89), (1,), "switch process accounting"),  # EFAULT (never NULL)
    "iopl": ((172, 110, None), (4,), "raw I/O port access"),  # EINVAL level
    "ioperm": ((173, 101, None), (0xFFFFFFFF, 1, 0), "raw I/O port access"),  # EINVAL
    "fsopen": ((430, 430, 430), (1, -1), "create filesystem contexts"),  # EINVAL
    "open_tree": ((428, 428, 428), (-1, 1, -1), "clone mount trees"),  # EINVAL
    "process_vm_writev": ((311, 348, 271), (0, 1, 1, 1, 1, 1), "write other processes"),
    "syslog": ((103, 103, 116), (0x7FFFFFFF, 1, 0), "read/clear the kernel log"),
    "io_uring_setup": ((425, 425, 425), (0, 1), "io_uring (large attack surface)"),
    # Sets ADDR_NO_RANDOMIZE, but only in the throwaway child that runs it.
    "personality": ((135, 136, 92), (0x0040000,), "disable ASLR"),
}
DENIED_ERRNOS = {errno.EPERM, errno.EACCES, errno.ENOSYS}

DEFAULT_READONLY = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/boot", "/opt")
DEFAULT_RW = ("/tmp",)
DEFAULT_MASKED = ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                  "/proc/latency_stats", "/proc/timer_stats", "/proc/acpi", "/proc/scsi",
                  "/sys/firmware", "/sys/devices/virtual/powercap")
ALLOWED_DEVICES = {"null", "zero", "full", "random", "urandom", "tty", "ptmx"}
DISK_FS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "zfs", "vfat", "exfat", "ntfs",
           "ntfs3", "reiserfs", "jfs", "9p", "virtiofs", "nfs", "nfs4", "cifs", "smb3",
           "fuse", "fuseblk", "ceph", "overlay", "squashfs", "erofs"}
RUNTIME_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
                   "/run/crio/crio.sock", "/run/podman/podman.sock", "/var/run/crio/crio.sock",
                   "/run/user/0/podman/podman.sock", "/var/run/cri-dockerd.sock")
SECRET_ENV_WORDS = ("SECRET", "TOKEN", "PASSWORD", "PASSWD", "API_KEY", "PRIVATE_KEY",
                    "SSH_AUTH_SOCK", "AWS_ACCESS_KEY", "CREDENTIAL")
UNLIMITED = 1 << 62  # cgroup v1 reports "no limit" as a number near 2**63

try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.syscall.restype = ctypes.c_long
except OSError:  # pragma: no cover - static binaries without a libc.so
    _libc = None


# --------------------------------------------------------------------- helpers

def result(id, layer, description, status, expected="", observed="", hint=""):
    return {"id": id, "layer": layer, "description": description, "status": status,
            "expected": str(expected), "observed": str(observed), "hint": str(hint)}


def _read(path, limit=1 << 20):
    with open(path, "rb") as f:
        return f.read(limit).decode("utf-8", "replace")


def _try_read(path, default=None):
    try:
        return _read(path)
    except OSError:
        return default


def _errname(err):
    return errno.errorcode.get(err, str(err))


# What a seccomp policy answers a call it refuses (its default errno, the socket family rules,
# clone3's ENOSYS). A probe call refused this way is reported as "denied by the policy" for the
# check that needed it, never as a probe bug: the probe runs under any policy, a learned one too.
POLICY_ERRNOS = (errno.EPERM, errno.EACCES, errno.EAFNOSUPPORT, errno.ENOSYS)
_FILTERED = []


def _filtered():
    """Is a seccomp filter installed on this process (read once)?"""
    if not _FILTERED:
        status = _try_read("/proc/self/status", "")
        _FILTERED.append(_status_fields(status).get("Seccomp") == "2")
    return _FILTERED[0]


def _refused_by_policy(exc):
    return isinstance(exc, OSError) and exc.errno in POLICY_ERRNOS and _filtered()


def _own_pid():
    """getpid(): it cannot fail, so a policy that refuses it makes it return -1; then /proc."""
    pid = os.getpid()
    if pid > 0:
        return pid
    link = _try_read_link("/proc/self")
    return int(link) if link and link.isdigit() else pid


def _real(path):
    """os.path.realpath(), None when the policy refuses getcwd() for a relative path."""
    try:
        return os.path.realpath(path)
    except OSError as exc:
        if _refused_by_policy(exc):
            return None
        raise


def _refusal(call, exc):
    """'socket(AF_INET) denied by the policy (EAFNOSUPPORT)', or the plain error."""
    if _refused_by_policy(exc):
        return f"{call} denied by the policy ({_errname(exc.errno)})"
    return f"{call}: {_errname(exc.errno) if getattr(exc, 'errno', None) else exc}"


def _status_fields(text):
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def decode_caps(hexmask):
    """'0000000000003000' -> ['CAP_NET_BIND_SERVICE', 'CAP_NET_BROADCAST'...]."""
    mask = int(hexmask, 16)
    names = []
    for bit in range(64):
        if mask >> bit & 1:
            names.append("CAP_" + (CAP_NAMES[bit] if bit < len(CAP_NAMES) else str(bit)).upper())
    return names


def _cap_name(name):
    name = name.strip().upper()
    return name if name.startswith("CAP_") else "CAP_" + name


def parse_id_map(text):
    """uid_map/gid_map text -> [(inside, outside, count)]."""
    return [tuple(int(x) for x in line.split()) for line in text.splitlines() if line.strip()]


def _unescape(path):
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\" and path[i + 1:i + 4].isdigit():
            out.append(chr(int(path[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text):
    mounts = []
    for line in text.splitlines():
        parts = line.split()
        if "-" not in parts:
            continue
        sep = parts.index("-")
        mounts.append({"id": parts[0], "parent": parts[1], "root": _unescape(parts[3]),
                       "mountpoint": _unescape(parts[4]), "options": parts[5].split(","),
                       "tags": parts[6:sep], "fstype": parts[sep + 1],
                       "source": parts[sep + 2] if len(parts) > sep + 2 else "",
                       "super": parts[sep + 3].split(",") if len(parts) > sep + 3 else []})
    return mounts


def _mountinfo(pid="self"):
    text = _try_read(f"/proc/{pid}/mountinfo")
    return parse_mountinfo(text) if text is not None else None


def _under(path, top):
    return path == top or top == "/" or path.startswith(top.rstrip("/") + "/")


def _mount_of(path, mounts):
    """The mount that serves path: the last listed among the longest matches."""
    best = None
    for m in mounts:
        if _under(path, m["mountpoint"]):
            if best is None or len(m["mountpoint"]) >= len(best["mountpoint"]):
                best = m
    return best


def _ino(path):
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


class Context:
    """The verifier's context plus helpers to read expectations."""

    def __init__(self, context=None):
        self.raw = dict(context or {})
        self.host_ns = {k: int(v) for k, v in (self.raw.get("host_ns") or {}).items() if v}
        self.expect = dict(self.raw.get("expect") or {})
        self._cache = {}

    def want(self, key, ideal):
        """The expectation for key, or the secure ideal when the profile is silent."""
        value = self.expect.get(key)
        return ideal if value is None else value

    def ns_expected_new(self, name):
        spec = self.expect.get("namespaces") or {}
        if name in spec:
            return bool(spec[name])
        if name == "net" and self.expect.get("network") == "host":
            return False
        return True

    def cached(self, key, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def ns_state(self, name):
        """'new', 'shared' or None (unknown) for our namespace vs the host's."""
        ino = _ino(f"/proc/self/ns/{name}")
        if ino is None:
            return None
        if ino == INIT_NS_INODES.get(name):
            return "shared" if self.host_ns.get(name, ino) == ino else "new"
        if name in self.host_ns:
            return "shared" if self.host_ns[name] == ino else "new"
        return None


# ---------------------------------------------------------- forked-child runner

def run_in_child(fn, timeout=5, inline=False):
    """Run fn() in a forked child; return ("value", str) or ("signal", signum), or
    ("error", text) when it raised or no child could be made.

    Dangerous calls run here so a seccomp kill (SIGSYS) is observed instead of
    killing the probe, and so no state (namespaces, personality) leaks back.
    With inline=True (for calls that change nothing, e.g. opening a socket) fn runs
    in the probe itself when the policy refuses fork() or pipe() with an errno: a
    policy that answers those with an errno is unlikely to kill on the next call.
    """
    try:
        rfd, wfd = os.pipe()
    except OSError as exc:
        return _no_child(fn, inline, "pipe()", exc)
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(rfd)
        os.close(wfd)
        return _no_child(fn, inline, "fork()", exc)
    if pid == 0:  # child
        status = 0
        try:
            os.close(rfd)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGSYS would dump core
            signal.signal(signal.SIGSYS, signal.SIG_DFL)
            signal.alarm(timeout)
            os.write(wfd, str(fn()).encode())
        except BaseException as exc:  # noqa: BLE001 - report anything
            try:
                os.write(wfd, ("error: " + repr(exc)).encode())
            except OSError:
                status = 3
        os._exit(status)
    os.close(wfd)
    chunks = []
    while True:
        chunk = os.read(rfd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(rfd)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return ("signal", os.WTERMSIG(status))
    text = b"".join(chunks).decode("utf-8", "replace")
    if text.startswith("error: "):
        return ("error", text[7:])
    return ("value", text)


def _no_child(fn, inline, call, exc):
    if inline and _refused_by_policy(exc):
        try:
            return ("value", str(fn()))
        except Exception as inner:  # noqa: BLE001 - reported like a child's error
            return ("error", repr(inner))
    return ("error", _refusal(call, exc) + ": the probe cannot run this test in a child")


def _raw_syscall(nr, args):
    """In the child: -> 'ret errno'."""
    ctypes.set_errno(0)
    ret = _libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return f"{ret} {ctypes.get_errno() if ret < 0 else 0}"


def classify(outcome):
    """Outcome of run_in_child(_raw_syscall) -> (denied: bool|None, text)."""
    kind, value = outcome
    if kind == "signal":
        name = signal.Signals(value).name if value in signal.Signals._value2member_map_ else value
        if value == signal.SIGSYS:
            return True, "killed by SIGSYS (seccomp)"
        return None, f"child died of {name}"
    if kind == "error":
        return None, value
    ret, err = (int(x) for x in value.split())
    if ret >= 0:
        return False, f"succeeded (returned {ret})"
    if err == errno.ENOSYS:
        return True, "ENOSYS (filtered, or not built into this kernel)"
    if err in DENIED_ERRNOS:
        return True, f"{_errname(err)}"
    return False, f"reached the kernel ({_errname(err)})"


# -------------------------------------------------------------------- i386 ABI

# long stub(long nr, long a1, ..., long a6): int $0x80 with the i386 register
# convention (eax=nr, ebx, ecx, edx, esi, edi, ebp) from 64-bit code.
_I386_STUB = bytes([
    0x53,                          # push rbx
    0x55,                          # push rbp
    0x48, 0x89, 0xF8,              # mov rax, rdi   (nr)
    0x48, 0x89, 0xF3,              # mov rbx, rsi   (a1)
    0x49, 0x89, 0xD3,              # mov r11, rdx   (a2)
    0x48, 0x89, 0xCA,              # mov rdx, rcx   (a3)
    0x4C, 0x89, 0xD9,              # mov rcx, r11   (a2)
    0x4C, 0x89, 0xC6,              # mov rsi, r8    (a4)
    0x4C, 0x89, 0xCF,              # mov rdi, r9    (a5)
    0x48, 0x8B, 0x6C, 0x24, 0x18,  # mov rbp, [rsp+24] (a6, 7th C argument)
    0xCD, 0x80,                    # int 0x80
    0x5D,                          # pop rbp
    0x5B,                          # pop rbx
    0xC3,                          # ret
])


def _i386_stub():
    """Map the stub RW, copy it, flip to RX (W^X friendly). None if refused."""
    if _ARCH != "x86_64" or _libc is None:
        return None
    mmap_ = _libc.mmap
    mmap_.restype = ctypes.c_void_p
    mmap_.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long)
    addr = mmap_(None, 4096, 0x3, 0x22, -1, 0)  # PROT_READ|WRITE, MAP_PRIVATE|ANONYMOUS
    if addr in (None, ctypes.c_void_p(-1).value):
        return None
    ctypes.memmove(addr, _I386_STUB, len(_I386_STUB))
    if _libc.mprotect(ctypes.c_void_p(addr), ctypes.c_size_t(4096), 0x5) != 0:  # READ|EXEC
        return None
    proto = ctypes.CFUNCTYPE(ctypes.c_long, *([ctypes.c_long] * 7))
    return proto(addr)


def _i386_syscall(nr, args):
    stub = _i386_stub()
    if stub is None:
        return "nostub"
    full = [a & 0xFFFFFFFF for a in args] + [0] * (6 - len(args))
    ret = stub(nr, *full) & 0xFFFFFFFF
    ret = ret - (1 << 32) if ret >= 1 << 31 else ret  # sign-extend eax
    return f"{ret} {-ret if ret < 0 else 0}"


# ---------------------------------------------------------------------- checks

def check_namespaces(ctx):
    for name in NAMESPACES:
        cid, desc = f"ns.{name}", f"runs in its own {name} namespace"
        path = f"/proc/self/ns/{name}"
        ino = _ino(path)
        if ino is None:
            if not os.path.exists("/proc/self"):
                yield result(cid, "namespaces", desc, WARN, "a new namespace", "/proc not mounted",
                             "mount /proc so the probe can read /proc/self/ns")
            else:
                yield result(cid, "namespaces", desc, SKIP, "a new namespace",
                             f"{path} absent (kernel without {name} namespaces)")
            continue
        want_new = ctx.ns_expected_new(name)
        state = ctx.ns_state(name)
        observed = f"inode {ino}" + (f", host {ctx.host_ns[name]}" if name in ctx.host_ns else "")
        expected = "a new namespace" if want_new else "shared with the host (profile)"
        hint = f"unshare the {name} namespace (CLONE_NEW{name.upper()})"
        if state == "new":
            yield result(cid, "namespaces", desc, PASS, expected, observed + " (differs)")
        elif state == "shared" and not want_new:
            yield result(cid, "namespaces", desc, SKIP, expected,
                         observed + f" (shared: the profile keeps the host {name} namespace)")
        elif state == "shared":
            why = " (the initial namespace)" if ino == INIT_NS_INODES.get(name) else ""
            # Unless the profile asks for it, a shared time namespace only
            # exposes clock offsets: worth a warning, not a failure.
            low = name in LOW_IMPACT_NS and "namespaces" not in ctx.expect
            yield result(cid, "namespaces", desc, WARN if low else FAIL, expected,
                         observed + " shared" + why + (" (low impact)" if low else ""), hint)
        else:
            yield result(cid, "namespaces", desc, WARN, expected,
                         observed + "; not the initial namespace, but no host inode to compare",
                         "pass host_ns in --context (the verifier does)")


def check_hostname(ctx):
    desc = "hostname is the sandbox's, not the host's"
    name = _uname("nodename", "/proc/sys/kernel/hostname")
    want = ctx.expect.get("hostname") or ctx.raw.get("hostname")
    host = ctx.raw.get("host_hostname")
    if want:
        ok = name == want
        yield result("uts.hostname", "namespaces", desc, PASS if ok else FAIL, want, name,
                     "" if ok else "set the hostname inside a new UTS namespace")
    elif host:
        same = name == host
        yield result("uts.hostname", "namespaces", desc, FAIL if same else PASS,
                     f"not the host's ({host})", name,
                     "unshare the UTS namespace and set a hostname" if same else "")
    else:
        yield result("uts.hostname", "namespaces", desc, WARN, "an expected hostname", name,
                     "pass expect.hostname or host_hostname in --context")


def _host_root_probe():
    """Is our euid the host's uid 0? Sysctl permissions use the global root uid.

    A mode-0600 sysctl opens for reading only when euid is GLOBAL_ROOT_UID,
    whatever the namespaces or capabilities (kernel/sysctl test_perm); opening
    for read has no effect. -> (True/False/None, text)
    """
    for path in ("/proc/sys/kernel/cad_pid", "/proc/sys/kernel/usermodehelper/bset"):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_IMODE(st.st_mode) != 0o600:
            continue
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
            return True, f"{path} (mode 0600, host root only) opens"
        except OSError as exc:
            if exc.errno == errno.EACCES:
                return False, f"{path} (mode 0600) refused: EACCES"
            return None, f"{path}: {_errname(exc.errno)}"
    return None, "no mode-0600 sysctl visible (/proc/sys masked?)"


def _host_zero_seen_as(kind):
    """How the host's uid/gid 0 appears inside: (inside id, overflow id) or None.

    /proc/sys/kernel files belong to the global root, so stat() shows which
    inside id host 0 maps to, or the overflow id when host 0 is unmapped.
    """
    try:
        st = os.stat("/proc/sys/kernel/ostype")
    except OSError:
        return None
    overflow = _try_read(f"/proc/sys/kernel/overflow{kind}", "65534").strip()
    return (st.st_uid if kind == "uid" else st.st_gid), int(overflow or 65534)


def judge_id_map(kind, lines, own_id, host_root, seen_as):
    """-> (status, note) for a uid_map/gid_map seen from inside.

    host_root: is our euid the host's uid 0 (True/False/None);
    seen_as: _host_zero_seen_as(kind). Outside id 0 in a map is the parent
    namespace's 0, which is the host's only if the parent is the host's.
    """
    zero = [l for l in lines if l[1] == 0]
    if lines == [(0, 0, 4294967295)]:
        return FAIL, "the host's identity map: no user namespace"
    if not zero:
        return PASS, ""
    in_zero = lambda i: any(l[0] <= i < l[0] + l[2] for l in zero)  # noqa: E731
    if kind == "uid" and host_root:
        return FAIL, "our uid is the host's uid 0"
    if seen_as is not None:
        inside, overflow = seen_as
        if inside != overflow:
            return FAIL, f"the host's {kind} 0 appears inside as {inside}"
        if not in_zero(overflow):
            return PASS, f"maps the parent's 0, which is not the host's ({kind} 0 is unmapped)"
    if kind == "uid" and host_root is False and in_zero(own_id):
        # We map to the parent's 0 yet are not host root: the parent is an
        # intermediate user namespace (bubblewrap nests one when unprivileged).
        return PASS, "0 of an intermediate user namespace: ids.host_root shows we are not host root"
    if kind == "gid" and host_root is False:
        return WARN, ("0 of the parent user namespace, which may be intermediate; "
                      "confirm with outside_checks")
    return FAIL, f"maps to {kind} 0 of the parent namespace"


def check_ids(ctx):
    host_root, how = ctx.cached("host_root", _host_root_probe)
    euid = os.geteuid()
    yield result("ids.host_root", "ids", "the process is not uid 0 of the host",
                 {True: FAIL, False: PASS, None: WARN}[host_root], "euid is not host uid 0",
                 f"euid {euid} inside; {how}",
                 "run the sandbox under an unprivileged host uid (user namespace map to a non-0 "
                 "id)" if host_root else ("" if host_root is False else
                                          "run outside_checks from the host to confirm"))
    userns_new = ctx.ns_state("user")
    for kind, own in (("uid", euid), ("gid", os.getegid())):
        cid, desc = f"ids.{kind}_map", f"no {kind} maps to the host's {kind} 0"
        text = _try_read(f"/proc/self/{kind}_map")
        if text is None:
            yield result(cid, "ids", desc, WARN, "no line with outside id 0",
                         f"/proc/self/{kind}_map unreadable")
            continue
        lines = parse_id_map(text)
        shown = "; ".join(" ".join(map(str, line)) for line in lines) or "(empty)"
        status, note = judge_id_map(kind, lines, own, host_root, _host_zero_seen_as(kind))
        if status == FAIL and not ctx.ns_expected_new("user") and host_root is False:
            # No user namespace on purpose: the identity map is expected; ids.host_root decides.
            status, note = SKIP, "no user namespace, as the profile asks; see ids.host_root"
        yield result(cid, "ids", desc, status, "no line mapping to host 0",
                     shown + (f" ({note})" if note else ""),
                     "" if status == PASS else
                     f"map the sandbox {kind} to an unprivileged host {kind} in a new user "
                     "namespace; if the launcher nests user namespaces, confirm with "
                     "outside_checks")
    sg = _try_read("/proc/self/setgroups")
    desc = "setgroups() is denied in the user namespace"
    if sg is None:
        yield result("ids.setgroups", "ids", desc, WARN, "deny", "/proc/self/setgroups unreadable")
    elif userns_new == "shared" or _try_read("/proc/self/uid_map", "").split() == ["0", "0",
                                                                                  "4294967295"]:
        yield result("ids.setgroups", "ids", desc, SKIP, "deny",
                     f"{sg.strip()} (no user namespace; see ns.user)")
    else:
        ok = sg.strip() == "deny"
        yield result("ids.setgroups", "ids", desc, PASS if ok else WARN, "deny", sg.strip(),
                     "" if ok else "write 'deny' to /proc/PID/setgroups before gid_map, so "
                     "the sandbox cannot drop groups that deny it access")


def _judge_caps(prefix, fields, ctx, in_new_userns):
    kept = {_cap_name(c) for c in ctx.expect.get("capabilities") or []}
    for field, setname in CAP_SETS:
        cid = f"{prefix}caps.{setname}"
        desc = f"the {setname} capability set is empty (or only what the profile keeps)"
        if field not in fields:
            yield result(cid, "capabilities", desc, WARN, "empty", f"{field} not in status")
            continue
        names = decode_caps(fields[field])
        extra = [c for c in names if c not in kept]
        expected = "none" if not kept else "at most " + ",".join(sorted(kept))
        scope = " (scoped to a new user namespace)" if in_new_userns and names else ""
        shown = (",".join(names) if len(names) < 8 else f"{len(names)} capabilities") or "none"
        if extra:
            yield result(cid, "capabilities", desc, FAIL, expected, shown + scope,
                         "drop every capability not needed (capset, PR_CAPBSET_DROP, "
                         "PR_CAP_AMBIENT_CLEAR_ALL)")
        elif names:
            yield result(cid, "capabilities", desc, SKIP, expected,
                         f"{shown}: kept as the profile asks{scope}")
        else:
            yield result(cid, "capabilities", desc, PASS, expected, "none")


def check_capabilities(ctx):
    fields = _status_fields(_try_read("/proc/self/status", ""))
    yield from _judge_caps("", fields, ctx, ctx.ns_state("user") == "new")


def _thread_statuses(pid="self"):
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tids = []
    for tid in tids:
        text = _try_read(f"/proc/{pid}/task/{tid}/status")
        if text is not None:
            out[tid] = _status_fields(text)
    return out


def _judge_seccomp(prefix, threads, ctx):
    want = bool(ctx.want("seccomp", True))
    desc = "a seccomp filter is installed on every thread"
    if not threads:
        yield result(f"{prefix}seccomp.mode", "seccomp", desc, WARN, "Seccomp: 2 on every thread",
                     "no /proc/PID/task/*/status")
        return
    modes = {tid: (f.get("Seccomp", "?"), f.get("Seccomp_filters", "?")) for tid, f in
             threads.items()}
    shown = ", ".join(f"tid {t}: mode {m} filters {n}" for t, (m, n) in sorted(modes.items()))
    bad = [t for t, (m, _) in modes.items() if m not in ("1", "2")]
    if not bad:
        yield result(f"{prefix}seccomp.mode", "seccomp", desc, PASS, "mode 2 (filter)", shown)
    elif not want:
        yield result(f"{prefix}seccomp.mode", "seccomp", desc, SKIP, "no filter (profile)",
                     shown + "; the profile disables seccomp")
    else:
        yield result(f"{prefix}seccomp.mode", "seccomp", desc, FAIL, "mode 2 (filter) everywhere",
                     shown, "install the filter before exec, with TSYNC if threads exist")
    nnp = {f.get("NoNewPrivs") for f in threads.values()}
    want_nnp = bool(ctx.want("no_new_privs", True))
    desc = "no_new_privs is set (setuid/file caps cannot raise privileges)"
    if nnp == {"1"}:
        yield result(f"{prefix}process.no_new_privs", "process", desc, PASS, "1", "1")
    elif not want_nnp:
        yield result(f"{prefix}process.no_new_privs", "process", desc, SKIP, "0 (profile)",
                     ",".join(sorted(x or "?" for x in nnp)) + "; the profile allows it")
    else:
        yield result(f"{prefix}process.no_new_privs", "process", desc, FAIL, "1",
                     ",".join(sorted(x or "?" for x in nnp)),
                     "prctl(PR_SET_NO_NEW_PRIVS, 1) before exec")


def check_seccomp_mode(ctx):
    yield from _judge_seccomp("", _thread_statuses(), ctx)


def _seccomp_verdict(ctx, cid, desc, denied, text, expected="denied", hint=""):
    if denied is True:
        return result(cid, "seccomp", desc, PASS, expected, text)
    if denied is None:
        return result(cid, "seccomp", desc, WARN, expected, text)
    if not ctx.want("seccomp", True):
        return result(cid, "seccomp", desc, SKIP, expected,
                      text + "; the profile disables seccomp")
    return result(cid, "seccomp", desc, FAIL, expected, text,
                  hint or "deny it in the seccomp filter (SCMP_ACT_ERRNO(EPERM) or KILL)")


def check_syscalls(ctx):
    if _libc is None or _ARCH_COL is None:
        yield result("seccomp.denied", "seccomp", "dangerous syscalls are denied", SKIP,
                     "denied", f"no syscall table for {_ARCH}")
        return
    # Without a filter an EPERM can only come from a capability check.
    filtered = _status_fields(_try_read("/proc/self/status", "")).get("Seccomp") == "2"
    for name, (nrs, args, harm) in SYSCALLS.items():
        nr = nrs[_ARCH_COL]
        if nr is None:
            continue
        denied, text = classify(run_in_child(lambda: _raw_syscall(nr, args)))
        if text == "EPERM" and not filtered:
            text = "EPERM (a capability check: no seccomp filter)"
        if name == "personality" and denied is False:
            yield result("seccomp.denied.personality", "seccomp",
                         "personality() cannot " + harm, WARN, "denied", text,
                         "allow personality() only for 0, 8, 0x20000, 0x20008, 0xffffffff")
            continue
        yield _seccomp_verdict(ctx, f"seccomp.denied.{name}", f"{name}() is denied ({harm})",
                               denied, text)


def check_compat_abis(ctx):
    """The same calls through the i386 (int 0x80) and x32 entry points."""
    if _ARCH != "x86_64" or _libc is None:
        yield result("seccomp.i386", "seccomp", "i386 syscalls are denied", SKIP, "denied",
                     f"not x86_64 ({_ARCH})")
        return
    allowed, unknown, denied = [], [], []
    for name, (nrs, args, _) in SYSCALLS.items():
        if nrs[1] is None or name == "personality":
            continue
        outcome = run_in_child(lambda: _i386_syscall(nrs[1], args))
        if outcome == ("value", "nostub"):
            yield result("seccomp.i386", "seccomp", "i386 syscalls are denied", WARN, "denied",
                         "cannot map executable memory for the int $0x80 stub")
            break
        if outcome[0] == "signal" and outcome[1] == signal.SIGSEGV:
            yield result("seccomp.i386", "seccomp", "i386 syscalls are denied", PASS, "denied",
                         "int $0x80 raises SIGSEGV: the kernel has no i386 emulation")
            break
        verdict, text = classify(outcome)
        {True: denied, False: allowed, None: unknown}[verdict].append(f"{name}: {text}")
    else:
        desc = "dangerous syscalls are denied through the i386 ABI (int $0x80) too"
        if allowed:
            yield _seccomp_verdict(ctx, "seccomp.i386", desc, False,
                                   f"{len(allowed)} reach the kernel: " + "; ".join(allowed),
                                   hint="the filter must check seccomp_data.arch and kill or "
                                   "deny AUDIT_ARCH_I386 (or filter it the same way)")
        elif unknown:
            yield result("seccomp.i386", "seccomp", desc, WARN, "denied", "; ".join(unknown))
        else:
            yield result("seccomp.i386", "seccomp", desc, PASS, "denied",
                         f"all {len(denied)} denied (e.g. {denied[0]})")
    # x32: x86_64 numbers with bit 30 set; ENOSYS when the kernel lacks x32.
    nr = SYSCALLS["mount"][0][0] | 0x40000000
    denied, text = classify(run_in_child(lambda: _raw_syscall(nr, SYSCALLS["mount"][1])))
    yield _seccomp_verdict(ctx, "seccomp.x32", "mount() is denied through the x32 ABI "
                           "(nr | 0x40000000)", denied, text,
                           hint="the filter must reject syscall numbers >= 0x40000000")


CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (0x08000000, 0x10000000,
                                                           0x20000000, 0x40000000)
_CLONE_NR = {"x86_64": (56, 435, 272), "aarch64": (220, 435, 97)}


def _clone_child(kind, flags):
    """In the probe's child: try to create namespaces; any new process _exits at once."""
    clone_nr, clone3_nr, unshare_nr = _CLONE_NR[_ARCH]
    ctypes.set_errno(0)
    if kind == "unshare":
        ret = _libc.syscall(ctypes.c_long(unshare_nr), ctypes.c_long(flags))
        return f"{ret} {ctypes.get_errno() if ret < 0 else 0}"
    if kind == "clone":
        # No CLONE_VM and stack 0: behaves like fork(), exit signal SIGCHLD.
        ret = _libc.syscall(ctypes.c_long(clone_nr), ctypes.c_long(flags | signal.SIGCHLD),
                            ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0),
                            ctypes.c_long(0))
    else:
        cargs = (ctypes.c_uint64 * 8)(flags, 0, 0, 0, signal.SIGCHLD, 0, 0, 0)
        ret = _libc.syscall(ctypes.c_long(clone3_nr), ctypes.byref(cargs), ctypes.c_long(64))
    if ret == 0:
        os._exit(0)  # the new process: leave immediately
    err = ctypes.get_errno() if ret < 0 else 0
    if ret > 0:
        os.waitpid(ret, 0)
    return f"{ret} {err}"


def check_namespace_creation(ctx):
    if _libc is None or _ARCH not in _CLONE_NR:
        return
    allow_userns = bool(ctx.expect.get("allow_userns", False))
    others = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWCGROUP
    cases = (("seccomp.clone.newuser", "clone", CLONE_NEWUSER),
             ("seccomp.clone3.newuser", "clone3", CLONE_NEWUSER),
             ("seccomp.unshare.newuser", "unshare", CLONE_NEWUSER),
             ("seccomp.clone.newns", "clone", others))
    for cid, kind, flags in cases:
        desc = f"{kind}() cannot create " + ("a user namespace" if flags == CLONE_NEWUSER
                                              else "mnt/uts/ipc/net/pid/cgroup namespaces")
        denied, text = classify(run_in_child(lambda: _clone_child(kind, flags)))
        if denied is False and text.startswith("reached"):
            denied = True  # EINVAL etc: nothing was created
            text = text.replace("reached the kernel", "refused")
        if denied is False and flags == CLONE_NEWUSER and allow_userns:
            yield result(cid, "seccomp", desc, SKIP, "refused",
                         text + "; the profile allows nested user namespaces")
            continue
        yield _seccomp_verdict(ctx, cid, desc, denied, text, "refused (EPERM/ENOSYS/SIGSYS)",
                               "deny clone/unshare with CLONE_NEW* flags and clone3 (ENOSYS) in "
                               "the filter, or set user.max_user_namespaces=0 in the sandbox")


# ---------------------------------------------------------------- filesystem

def _show_flags(flags):
    return ",".join(("ro" if flags["ro"] else "rw", "nosuid" if flags["nosuid"] else "suid",
                     "nodev" if flags["nodev"] else "dev"))


def _flags_of(path):
    try:
        st = os.statvfs(path)
    except OSError as exc:
        if not _refused_by_policy(exc):
            raise
        # statfs() denied by the policy: the same flags from the mount table.
        where = _mount_of(path, _mountinfo() or [])
        if where is None:
            raise
        options = set(where["options"]) | ({"ro"} & set(where["super"]))
        return {"ro": "ro" in options, "nosuid": "nosuid" in options, "nodev": "nodev" in options}
    return {"ro": bool(st.f_flag & os.ST_RDONLY), "nosuid": bool(st.f_flag & os.ST_NOSUID),
            "nodev": bool(st.f_flag & getattr(os, "ST_NODEV", 4))}


def check_mounts(ctx):
    mounts = ctx.cached("mounts", _mountinfo)
    if mounts is None:
        yield result("mount.table", "filesystem", "the mount table is readable", WARN,
                     "/proc/self/mountinfo", "unreadable", "mount /proc inside the sandbox")
        mounts = []
    ro_paths = ctx.want("readonly_paths", None)
    explicit = ro_paths is not None
    seen = set()
    for path in (ro_paths if explicit else DEFAULT_READONLY):
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        cid, desc = f"mount.ro.{path}", f"{path} is mounted read-only, nosuid, nodev"
        if not os.path.exists(real):
            yield result(cid, "filesystem", desc, FAIL if explicit else SKIP, "ro,nosuid,nodev",
                         "absent", "bind the path the profile names" if explicit else "")
            continue
        flags = _flags_of(real)
        missing = [k for k, v in flags.items() if not v]
        where = _mount_of(real, mounts)
        on = f" (mount {where['mountpoint']}, {where['fstype']})" if where else ""
        yield result(cid, "filesystem", desc, FAIL if missing else PASS, "ro,nosuid,nodev",
                     _show_flags(flags) + on,
                     "remount with MS_RDONLY|MS_NOSUID|MS_NODEV (bind mounts need a remount)"
                     if missing else "")
    for path in ctx.want("rw_paths", [p for p in DEFAULT_RW if os.path.isdir(p)]):
        cid, desc = f"mount.rw.{path}", f"{path} is writable but nosuid, nodev"
        if not os.path.exists(path):
            yield result(cid, "filesystem", desc, WARN, "rw,nosuid,nodev", "absent")
            continue
        flags = _flags_of(path)
        unsafe = [k for k in ("nosuid", "nodev") if not flags[k]]
        status = FAIL if unsafe else (WARN if flags["ro"] else PASS)
        yield result(cid, "filesystem", desc, status, "rw,nosuid,nodev",
                     _show_flags(flags),
                     "mount it MS_NOSUID|MS_NODEV" if unsafe else
                     ("the profile wants it writable" if flags["ro"] else ""))
    yield from _check_propagation(mounts)
    yield from _check_host_writable(ctx, mounts)
    yield from _check_unexpected_mounts(ctx, mounts)
    present = [p for p in RUNTIME_SOCKETS if os.path.exists(p)]
    yield result("mount.runtime_sockets", "filesystem", "no container-runtime socket is reachable",
                 FAIL if present else PASS, "none", ", ".join(present) or "none",
                 "never bind docker/containerd/podman sockets into a sandbox" if present else "")


def _check_propagation(mounts):
    shared = [m["mountpoint"] for m in mounts if any(t.startswith("shared:") for t in m["tags"])]
    slaves = [m["mountpoint"] for m in mounts if any(t.startswith("master:") for t in m["tags"])]
    desc = "no mount propagates events to or from the host (no shared: peer groups)"
    note = f"; {len(slaves)} slave mounts receive host events" if slaves else ""
    yield result("mount.propagation", "filesystem", desc, FAIL if shared else PASS,
                 "private or slave mounts",
                 (f"{len(shared)} shared: " + ", ".join(shared[:6]) if shared else "none shared")
                 + note, "mount --make-rprivate / (MS_REC|MS_PRIVATE) before building the root"
                 if shared else "")


def _check_host_writable(ctx, mounts):
    rw_allowed = list(ctx.want("rw_paths", DEFAULT_RW))
    found = []
    for m in mounts:
        if "ro" in m["options"] or m["fstype"] not in DISK_FS:
            continue
        if any(_under(m["mountpoint"], p) for p in rw_allowed if p != "/"):
            continue
        if m["mountpoint"] == _real(__file__):
            continue
        found.append(f"{m['mountpoint']} ({m['fstype']} {m['source']})")
    yield result("mount.host_writable", "filesystem",
                 "no host-backed filesystem is writable outside the profile's rw paths",
                 FAIL if found else PASS, "only " + (", ".join(rw_allowed) or "nothing"),
                 "; ".join(found[:8]) or "none",
                 "bind host directories read-only (MS_BIND then MS_REMOUNT|MS_RDONLY)"
                 if found else "")


def _check_unexpected_mounts(ctx, mounts):
    base = ["/", "/proc", "/dev", "/sys", "/tmp", "/run", "/dev/pts", "/dev/shm", "/dev/mqueue"]
    allowed = set(base)
    for key in ("readonly_paths", "rw_paths", "masked_paths", "mounts"):
        allowed.update(ctx.expect.get(key) or [])
    if "readonly_paths" not in ctx.expect:
        allowed.update(DEFAULT_READONLY)
    own = {_real(__file__), _real(sys.argv[0] or "/")}
    odd = []
    for m in mounts:
        mp = m["mountpoint"]
        if mp in allowed or mp in own:
            continue
        if any(mp.startswith(p + "/") for p in ("/proc", "/dev", "/sys")):
            continue  # masks, devices and ro covers live there; judged elsewhere
        if any(_under(mp, p) for p in allowed if p not in base):
            continue
        odd.append(f"{mp} ({m['fstype']})")
    strict = "readonly_paths" in ctx.expect or "mounts" in ctx.expect
    yield result("mount.unexpected", "filesystem", "no mounts beyond those the profile declares",
                 (FAIL if strict else WARN) if odd else PASS, "only declared mounts",
                 f"{len(odd)}: " + ", ".join(odd[:10]) if odd else "none",
                 "remove the extra binds, or declare them in the profile" if odd else "")


# ---------------------------------------------------- writable mounts: what a run leaves behind

# The launcher's rule (sandbox/sources.py; tests check the copies agree). Trees: the directory and
# everything below; dirs: only the directory itself.
SYSTEM_TREES = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/boot", "/dev", "/proc", "/sys", "/run",
                "/var/spool/cron")
SYSTEM_TREE_PREFIXES = ("/lib",)
SYSTEM_DIRS = ("/", "/var", "/root", "/home", "/tmp", "/var/tmp", "/var/lib", "/srv", "/opt", "/mnt",
               "/media", "/var/lib/docker", "/var/lib/containerd", "/var/lib/containers", "/var/lib/kubelet",
               "/var/lib/lxd")
RUNTIME_SOCKET_NAMES = ("docker.sock", "containerd.sock", "podman.sock", "crio.sock", "cri-dockerd.sock",
                        "buildkitd.sock", "dockershim.sock", "containerd-shim.sock", "lxd.socket")
PSEUDO_FS = {"proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2", "securityfs", "debugfs",
             "tracefs", "bpf", "pstore", "configfs", "fusectl", "binfmt_misc", "hugetlbfs",
             "efivarfs", "autofs", "nsfs"}
S_ISUID, S_ISGID = 0o4000, 0o2000
# struct vfs_cap_data, revision 2, effective, permitting CAP_NET_BIND_SERVICE: a real file
# capability, which only CAP_SETFCAP over the file may write.
FILE_CAPABILITY = (0x02000001).to_bytes(4, "little") + (1 << 10).to_bytes(4, "little") + bytes(12)
_FCHMODAT2 = {"x86_64": 452, "aarch64": 452}
_CREAT = {"x86_64": 85}
_OWNER_MARKERS = []  # files the verifier's outside check reads; removed after it (see main)


def system_path_reason(path):
    """Why a host path must not be bound read-write (as sandbox.sources says), or None."""
    path = os.path.normpath(path) if path else path
    if path in SYSTEM_DIRS:
        return "the root directory" if path == "/" else f"{path} is a system directory"
    for tree in SYSTEM_TREES:
        if path == tree or path.startswith(tree + "/"):
            return f"{path} is a system directory" if path == tree else f"{path} is inside {tree}"
    top = "/" + path.split("/")[1] if path.startswith("/") else path
    if any(top.startswith(prefix) for prefix in SYSTEM_TREE_PREFIXES):
        return f"{path} is a system directory" if path == top else f"{path} is inside {top}"
    if os.path.basename(path) in RUNTIME_SOCKET_NAMES:
        return f"{path} is a container runtime socket"
    return None


def _writable_mounts(mounts):
    """Writable, non-pseudo file systems (where a workload can leave files), one per mount point:
    the one on top, which is the one a path reaches."""
    found = {}
    for m in mounts:
        found.pop(m["mountpoint"], None)
        if "ro" in m["options"] or m["fstype"] in PSEUDO_FS:
            continue
        if m["mountpoint"].startswith(("/proc/", "/sys/")) or not os.path.isdir(m["mountpoint"]):
            continue
        found[m["mountpoint"]] = m
    return list(found.values())


def _scratch(directory, tag):
    return os.path.join(directory, f".sandbox-probe-{tag}-{os.getpid()}-{os.urandom(3).hex()}")


def _setid_routes(directory):
    """Try every way to give a file the setuid/setgid bit or a file capability in `directory`.
    -> (None, why) when we cannot create files there at all, else (list of routes that worked,
    list of "route: outcome")."""
    base = _scratch(directory, "setid")
    try:
        fd = os.open(base, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o755)
    except OSError as exc:
        return None, _errname(exc.errno)
    made = [base]
    worked, seen = [], []

    def has_bits(path, bits):
        try:
            return bool(os.lstat(path).st_mode & bits)
        except OSError:
            return False

    def route(name, action, path, bits):
        try:
            action()
            outcome = "set" if has_bits(path, bits) else "no bit (kernel dropped it)"
        except OSError as exc:
            outcome = _errname(exc.errno)
        if outcome == "set":
            worked.append(name)
            try:
                os.chmod(path, 0o755)
            except OSError:
                pass
        seen.append(f"{name}: {outcome}")

    def fresh(tag, create):
        path = _scratch(directory, tag)
        made.append(path)
        return lambda: create(path), path

    try:
        name = os.path.basename(base)
        dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            route("chmod 4755", lambda: os.chmod(base, 0o4755), base, S_ISUID)
            route("chmod 2755", lambda: os.chmod(base, 0o2755), base, S_ISGID)
            route("fchmod 4755", lambda: os.fchmod(fd, 0o4755), base, S_ISUID)
            route("fchmodat 6755", lambda: os.chmod(name, 0o6755, dir_fd=dirfd), base, S_ISUID | S_ISGID)
            nr = _FCHMODAT2.get(_ARCH)
            if nr is not None and _libc is not None:
                def fchmodat2():
                    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(dirfd), name.encode(),
                                        ctypes.c_uint(0o4755), ctypes.c_uint(0))
                    if ret < 0:
                        err = ctypes.get_errno()
                        raise OSError(err, os.strerror(err))
                route("fchmodat2 4755", fchmodat2, base, S_ISUID)
            create, path = fresh("open", lambda p: os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                                                                     0o4755)))
            route("openat(O_CREAT, 04755)", create, path, S_ISUID)
            create, path = fresh("mknod", lambda p: os.mknod(p, stat.S_IFREG | 0o2755))
            route("mknod(S_IFREG|02755)", create, path, S_ISGID)
            nr = _CREAT.get(_ARCH)
            if nr is not None and _libc is not None:
                def creat(p):
                    ret = _libc.syscall(ctypes.c_long(nr), p.encode(), ctypes.c_uint(0o4755))
                    if ret < 0:
                        err = ctypes.get_errno()
                        raise OSError(err, os.strerror(err))
                    os.close(ret)
                create, path = fresh("creat", creat)
                route("creat 04755", create, path, S_ISUID)
            try:
                os.setxattr(base, "security.capability", FILE_CAPABILITY)
                try:
                    kept = bool(os.getxattr(base, "security.capability"))
                except OSError:
                    kept = False
                if kept:
                    worked.append("security.capability")
                    os.removexattr(base, "security.capability")
                seen.append(f"setxattr security.capability: {'set' if kept else 'no capability'}")
            except OSError as exc:
                seen.append(f"setxattr security.capability: {_errname(exc.errno)}")
        finally:
            os.close(dirfd)
    finally:
        os.close(fd)
        for path in made:
            try:
                os.unlink(path)
            except OSError:
                pass
    return worked, seen


def check_writable_mounts(ctx):
    """What a workload can leave in the file systems it can write: setuid/setgid files and file
    capabilities (never, for any owner), files owned by host root (never), and no rw system path."""
    mounts = ctx.cached("mounts", _mountinfo) or []
    seccomp_on = ctx.want("seccomp", True)
    fcap_kept = "CAP_SETFCAP" in {_cap_name(c) for c in ctx.want("capabilities", [])}
    rw_sources = ctx.expect.get("rw_sources") or {}
    for m in _writable_mounts(mounts):
        where = m["mountpoint"]
        host_backed = m["fstype"] in DISK_FS or where in rw_sources
        worked, seen = _setid_routes(where)
        cid, desc = f"fs.setid.{where}", f"no setuid/setgid bit or file capability can be set in {where}"
        if worked is None:
            yield result(cid, "filesystem", desc, PASS, "EPERM", f"no file can be created here ({seen})")
            continue
        if fcap_kept and worked == ["security.capability"]:
            yield result(cid, "filesystem", desc, SKIP, "EPERM", "; ".join(seen),
                         "CAP_SETFCAP is kept (a relaxation the profile asks for)")
            continue
        if not worked:
            yield result(cid, "filesystem", desc, PASS, "EPERM", "; ".join(seen))
        elif not seccomp_on:
            yield result(cid, "filesystem", desc, WARN, "EPERM", "; ".join(seen),
                         "no seccomp filter (the profile turned it off): only the filter refuses "
                         "setuid bits")
        else:
            yield result(cid, "filesystem", desc, FAIL if host_backed else WARN, "EPERM", "; ".join(seen),
                         "deny chmod/fchmod/fchmodat/fchmodat2/creat/mknod and O_CREAT opens with "
                         "S_ISUID|S_ISGID in the mode (seccomp masked_eq rules), and setxattr without "
                         "CAP_SETFCAP" + ("" if host_backed else "; this tmpfs dies with the sandbox"))
    yield from _check_write_owners(ctx, mounts)
    yield from _check_system_binds(ctx, mounts)


def _check_write_owners(ctx, mounts):
    """Files written in an rw bind belong on the host to write_owner[target] (the launcher's
    decision, from the context): never uid or gid 0. Marks each bind with a file the verifier's
    outside check stats on the host."""
    owners = ctx.expect.get("write_owner") or {}
    rw_sources = ctx.expect.get("rw_sources") or {}
    token = ctx.raw.get("canary_token")
    by_point = {m["mountpoint"]: m for m in mounts}
    for target in sorted(set(owners) | {m["mountpoint"] for m in _writable_mounts(mounts)
                                        if "idmapped" in m["options"]}):
        m = by_point.get(target)
        idmapped = bool(m and "idmapped" in m["options"])
        cid, desc = f"fs.write_owner.{target}", f"files written in {target} do not belong to host root"
        owner = owners.get(target)
        if owner is None:
            yield result(cid, "filesystem", desc, WARN, "not host uid/gid 0",
                         "idmapped; which host ids it writes as cannot be told from inside",
                         "run the verifier, which knows the mapping and checks a real file")
            continue
        root = 0 in owner
        yield result(cid, "filesystem", desc, FAIL if root else PASS, "not host uid/gid 0",
                     f"{'idmapped' if idmapped else 'no id mapping'}: host uid {owner[0]}, gid {owner[1]}",
                     "never idmap a bind to host root: a setuid file there would be a root shell"
                     if root else "")
        if token and target in rw_sources:
            marker = os.path.join(target, f".sandbox-probe-owner-{token}")
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644))
                _OWNER_MARKERS.append(marker)
            except OSError:
                pass


def _check_system_binds(ctx, mounts):
    rw_sources = ctx.expect.get("rw_sources")
    allowed = set(ctx.expect.get("allowed_system_paths") or [])
    desc = "no host system directory or runtime socket is bound read-write"
    if rw_sources is not None:
        bad = [f"{target} <- {source} ({reason})" for target, source in sorted(rw_sources.items())
               if source not in allowed and (reason := system_path_reason(source))]
        relaxed = [f"{t} <- {s}" for t, s in sorted(rw_sources.items()) if s in allowed]
        if bad:
            yield result("mount.system_rw", "filesystem", desc, FAIL, "none", "; ".join(bad),
                         "bind a directory of its own, never /, /etc, /usr, /home...")
        elif relaxed:
            yield result("mount.system_rw", "filesystem", desc, SKIP, "none", "; ".join(relaxed),
                         "allow_system_path = true (a relaxation the profile asks for)")
        else:
            yield result("mount.system_rw", "filesystem", desc, PASS, "none",
                         f"{len(rw_sources)} rw bind(s), none a system path")
        return
    # Without the launcher's word: the path each mount shows of its file system (mountinfo's root).
    suspect = [f"{m['mountpoint']} (root {m['root']} of {m['source'] or m['fstype']})"
               for m in _writable_mounts(mounts)
               if m["fstype"] in DISK_FS and m["root"] != "/" and system_path_reason(m["root"])]
    yield result("mount.system_rw", "filesystem", desc, WARN if suspect else PASS, "none",
                 "; ".join(suspect) or "no writable host mount shows a system path",
                 "check what these are bound from" if suspect else "")


def owner_markers_checks(ctx):
    """Outside (host side): the marker files the probe left in each rw bind, as the host's own
    view of the source shows them (lstat: the workload could have swapped the marker)."""
    token = ctx.raw.get("canary_token")
    out = []
    for target, source in sorted((ctx.expect.get("rw_sources") or {}).items()):
        if not token:
            break
        cid = f"outside.fs.write_owner.{target}"
        desc = f"a file written in {target} belongs on the host to whom the launcher said, not root"
        try:
            st = os.lstat(os.path.join(source, f".sandbox-probe-owner-{token}"))
        except OSError as exc:
            out.append(result(cid, "filesystem", desc, SKIP, "a marker file", f"none ({_errname(exc.errno)}): "
                              "the sandbox could not write there"))
            continue
        want = (ctx.expect.get("write_owner") or {}).get(target)
        got = [st.st_uid, st.st_gid]
        status = FAIL if 0 in got else (PASS if want is None or list(want) == got else WARN)
        out.append(result(cid, "filesystem", desc, status,
                          f"uid/gid {want[0]}/{want[1]}" if want else "not 0",
                          f"uid {st.st_uid}, gid {st.st_gid} on the host ({source})",
                          "the sandbox's files are host root's: a setuid file there is a root shell"
                          if status == FAIL else ""))
    return out


def remove_owner_markers():
    while _OWNER_MARKERS:
        try:
            os.unlink(_OWNER_MARKERS.pop())
        except OSError:
            pass


# ----------------------------------------------------------------------- proc

KNOBS = (  # (id, layer, path, why writing it is an escape)
    ("proc.write.core_pattern", "proc", "/proc/sys/kernel/core_pattern",
     "a '|prog' pattern makes the host run prog as root on the next crash"),
    ("proc.write.sysrq_trigger", "proc", "/proc/sysrq-trigger",
     "a single byte can crash or reboot the host"),
    ("proc.write.modprobe", "proc", "/proc/sys/kernel/modprobe",
     "the host runs this program as root to load modules"),
    ("fs.write.uevent_helper", "filesystem", "/sys/kernel/uevent_helper",
     "the host runs this program as root on device events"),
)
_DEVNULL = (1, 3)


def _is_devnull(st):
    return stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == _DEVNULL


def _open_for_write(path):
    """Open O_WRONLY (no O_TRUNC/O_CREAT) and close at once: never writes a byte.

    -> (writable: bool|None, text)
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False, "absent"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return False, f"refused: {_errname(exc.errno)}"
        return None, _errname(exc.errno)
    try:
        if _is_devnull(os.fstat(fd)):
            return False, "masked by /dev/null"
    finally:
        os.close(fd)
    return True, "opened for writing"


def check_kernel_knobs(ctx):
    for cid, layer, path, why in KNOBS:
        writable, text = _open_for_write(path)
        yield result(cid, layer, f"{path} cannot be opened for writing", 
                     {True: FAIL, False: PASS, None: WARN}[writable], "refused or absent", text,
                     f"{why}: mount /proc/sys and /sys read-only and mask the file"
                     if writable else "")
    agents = []
    for m in ctx.cached("mounts", _mountinfo) or []:
        if m["fstype"] == "cgroup" and m["root"] == "/":
            agents.append(os.path.join(m["mountpoint"], "release_agent"))
    verdicts = {path: _open_for_write(path) for path in agents}
    writable = [p for p, (w, _) in verdicts.items() if w]
    unknown = [f"{p}: {t}" for p, (w, t) in verdicts.items() if w is None]
    status = FAIL if writable else (WARN if unknown else PASS)
    yield result("cgroups.write.release_agent", "cgroups",
                 "no cgroup v1 release_agent can be opened for writing", status,
                 "refused or absent",
                 ("writable: " + ", ".join(writable)) if writable else "; ".join(unknown) or
                 (f"{len(agents)} refused" if agents else "no cgroup v1 hierarchy root mounted"),
                 "release_agent runs as host root (CVE-2022-0492): mount cgroupfs read-only or "
                 "not at all" if writable else "")


def _masked(path):
    """-> (masked: bool|None, text). Masked: absent, unreadable, /dev/null or empty."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return (True, "absent") if exc.errno == errno.ENOENT else (True, _errname(exc.errno))
    if _is_devnull(st):
        return True, "bound to /dev/null"
    if stat.S_ISDIR(st.st_mode):
        try:
            entries = os.listdir(path)
        except OSError as exc:
            return True, f"unreadable ({_errname(exc.errno)})"
        return (True, "empty directory") if not entries else (False, f"{len(entries)} entries")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return True, f"unreadable ({_errname(exc.errno)})"
    try:
        data = os.read(fd, 4096)
    except OSError as exc:
        return True, f"read refused ({_errname(exc.errno)})"
    finally:
        os.close(fd)
    return (False, "readable") if data else (True, "readable but empty")


def _kallsyms():
    try:
        with open("/proc/kallsyms") as f:
            lines = [f.readline() for _ in range(20)]
    except OSError as exc:
        return True, f"unreadable ({_errname(exc.errno)})"
    real = [l.split()[0] for l in lines if l.strip() and int(l.split()[0], 16) != 0]
    return (False, f"real kernel addresses shown (e.g. {real[0]})") if real else \
        (True, "addresses zeroed (kptr_restrict)")


def check_proc_masks(ctx):
    paths = ctx.want("masked_paths", DEFAULT_MASKED)
    for path in paths:
        layer = "proc" if path.startswith("/proc") else "filesystem"
        prefix = "proc" if layer == "proc" else "fs"
        masked, text = _masked(path)
        yield result(f"{prefix}.masked.{path}", layer, f"{path} is masked",
                     PASS if masked else FAIL, "absent, empty or unreadable", text,
                     "" if masked else "bind /dev/null (files) or an empty read-only tmpfs "
                     "(directories) over it")
    masked, text = _kallsyms()
    yield result("proc.kallsyms", "proc", "/proc/kallsyms does not leak kernel addresses",
                 PASS if masked else FAIL, "zeroed or unreadable", text,
                 "" if masked else "KASLR is defeated; set kernel.kptr_restrict or mask it")
    if os.path.isdir("/proc/sys"):
        ro = _flags_of("/proc/sys")["ro"]
        yield result("proc.sys_ro", "proc", "/proc/sys is mounted read-only", PASS if ro else WARN,
                     "ro", "ro" if ro else "rw (knobs protected only by permissions, see "
                     "proc.write.*)", "" if ro else "bind /proc/sys read-only over itself")
    else:
        yield result("proc.sys_ro", "proc", "/proc/sys is mounted read-only", PASS, "ro",
                     "absent")


# -------------------------------------------------------------------- devices

def _device_nodes(root="/dev"):
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir in ("pts", "shm", "mqueue"):
            dirnames[:] = []
            continue
        for name in filenames + dirnames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                kind = "block" if stat.S_ISBLK(st.st_mode) else "char"
                found.append((os.path.relpath(path, root), kind,
                              f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"))
    return found


def check_devices(ctx):
    # Listed from lstat only: opening a device can act (a watchdog reboots).
    allowed = ALLOWED_DEVICES | {d.replace("/dev/", "", 1) for d in ctx.expect.get("devices") or []}
    if not os.path.isdir("/dev"):
        yield result("dev.nodes", "devices", "/dev holds only the minimal device set", PASS,
                     "null zero full random urandom tty ptmx", "/dev absent")
        return
    nodes = _device_nodes()
    extra = [f"{n} ({kind} {num})" for n, kind, num in nodes if n not in allowed]
    yield result("dev.nodes", "devices", "/dev holds only the minimal device set",
                 FAIL if extra else PASS, "only " + " ".join(sorted(allowed)),
                 f"{len(extra)} extra: " + ", ".join(extra[:12]) if extra else
                 f"{len(nodes)} allowed nodes",
                 "build /dev as a tmpfs with bind-mounted null/zero/full/random/urandom/tty and a "
                 "private devpts" if extra else "")
    devmount = _mount_of("/dev", ctx.cached("mounts", _mountinfo) or [])
    if devmount and devmount["fstype"] == "devtmpfs" and devmount["mountpoint"] == "/dev":
        yield result("dev.devtmpfs", "devices", "/dev is not the host's devtmpfs", FAIL,
                     "a private tmpfs", "the host devtmpfs is mounted on /dev",
                     "never mount devtmpfs in a sandbox: it exposes every host device")


# -------------------------------------------------------------------- process

def _reaches_root(fd):
    """Walk '..' from a directory fd: does it end at our root? (CVE-2024-21626)."""
    try:
        root = os.stat("/")
    except OSError:
        return None
    cur = os.dup(fd)
    try:
        for _ in range(512):
            st = os.fstat(cur)
            if (st.st_dev, st.st_ino) == (root.st_dev, root.st_ino):
                return True
            parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=cur)
            pst = os.fstat(parent)
            os.close(cur)
            cur = parent
            if (pst.st_dev, pst.st_ino) == (st.st_dev, st.st_ino):
                return False  # reached a top that is not our root
        return None
    except OSError:
        return None
    finally:
        os.close(cur)


def _open_fds():
    """[(fd, readlink target)] for every open fd."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # no /proc: probe the numbers
        return [(fd, "?") for fd in range(0, 1024) if _fd_ok(fd)]
    fds = []
    for name in names:
        try:
            fds.append((int(name), os.readlink(f"/proc/self/fd/{name}")))
        except OSError:
            pass  # the directory fd listdir used, closed by now
    return fds


def _fd_ok(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _judge_fd(fd, target):
    """-> (status, text) for one inherited fd."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None, ""
    if stat.S_ISDIR(st.st_mode):
        inside = _reaches_root(fd)
        if inside is False:
            return FAIL, f"fd {fd}: directory outside the root ({target})"
        return WARN, f"fd {fd}: directory {target}"
    if stat.S_ISREG(st.st_mode):
        try:
            same = os.stat(target)
            if (same.st_dev, same.st_ino) == (st.st_dev, st.st_ino):
                return WARN, f"fd {fd}: file {target}"
        except OSError:
            pass
        return FAIL, f"fd {fd}: file not reachable by path inside ({target})"
    return WARN, f"fd {fd}: {target}"


def check_fds(ctx):
    bad, odd = [], []
    for fd, target in _open_fds():
        if target == f"/proc/{_own_pid()}/fd":
            continue
        if fd <= 2:
            try:
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    bad.append(f"fd {fd}: directory {target}")
            except OSError:
                pass
            continue
        status, text = _judge_fd(fd, target)
        if status == FAIL:
            bad.append(text)
        elif status:
            odd.append(text)
    desc = "no file descriptors beyond stdio are inherited"
    if bad:
        yield result("process.fds", "process", desc, FAIL, "only 0, 1, 2", "; ".join(bad + odd),
                     "close every fd above 2 before exec (close_range(3, ~0, 0)); a directory fd "
                     "from outside lets the sandbox fchdir out of its root (CVE-2024-21626)")
    elif odd:
        yield result("process.fds", "process", desc, WARN, "only 0, 1, 2", "; ".join(odd),
                     "close fds the workload does not need (close_range)")
    else:
        yield result("process.fds", "process", desc, PASS, "only 0, 1, 2", "none")
    unreachable = False
    try:
        cwd = os.getcwd()
        unreachable = cwd.startswith("(unreachable)")
    except OSError as exc:
        if _refused_by_policy(exc):  # the walk below still tells
            cwd = _try_read_link("/proc/self/cwd") or _refusal("getcwd()", exc)
        else:
            cwd, unreachable = f"unreachable ({_errname(exc.errno)})", True
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        inside = _reaches_root(fd)
    finally:
        os.close(fd)
    status = {True: PASS, False: FAIL, None: WARN}[inside]
    if unreachable:
        status = FAIL
    yield result("process.cwd", "process", "the working directory is inside the root", status,
                 "a directory under /", cwd,
                 "chdir into the new root after pivot_root/chroot" if status == FAIL else "")


def _try_read_link(path):
    try:
        return os.readlink(path)
    except OSError:
        return None


def check_environment(ctx):
    name = ctx.raw.get("canary_env")
    desc = "the host's environment does not leak in (canary variable)"
    if not name:
        yield result("process.env_canary", "process", desc, SKIP, "absent", "no canary in context")
    else:
        present = name in os.environ
        yield result("process.env_canary", "process", desc, FAIL if present else PASS, "absent",
                     f"{name} present" if present else f"{name} absent",
                     "start the workload with a fresh environment (execve with an explicit "
                     "envp)" if present else "")
    suspicious = sorted(k for k in os.environ if any(w in k.upper() for w in SECRET_ENV_WORDS))
    yield result("process.env_secrets", "process", "no secret-looking variables in the environment",
                 WARN if suspicious else PASS, "none", ", ".join(suspicious) or "none",
                 "pass secrets explicitly, never by inheriting the host environment"
                 if suspicious else "")


def _argv(pid):
    text = _try_read(f"/proc/{pid}/cmdline")
    return None if text is None else text.split("\0")


def check_host_processes(ctx):
    # The canary's argv holds the token as a whole argument; our own argv may
    # hold it inside the --context JSON, which is not a whole-argument match.
    pids = [int(p) for p in ctx.raw.get("canary_pids") or []]
    token = ctx.raw.get("canary_token")
    desc = "host processes are invisible (canary process)"
    if not pids and not token:
        yield result("process.host_pids", "process", desc, SKIP, "invisible", "no canary in context")
        return
    seen = {}
    for pid in pids:
        try:
            os.kill(pid, 0)
            how = "signalable"
        except ProcessLookupError:
            continue
        except PermissionError as exc:
            if _refused_by_policy(exc) and os.path.isdir("/proc/self") and \
                    not os.path.exists(f"/proc/{pid}"):
                continue  # kill() itself denied by the policy, and /proc does not show the pid
            how = "exists (EPERM)"
        argv = _argv(pid)
        if token and argv is not None and token not in argv:
            continue  # same number, another process: our own pid namespace
        seen[pid] = f"pid {pid} {how}" + ("" if argv is None else f" ({' '.join(argv)[:60]})")
    if token:
        for name in _listdir("/proc"):
            if name.isdigit() and int(name) not in seen and token in (_argv(name) or []):
                seen[int(name)] = f"/proc/{name} is the canary"
    yield result("process.host_pids", "process", desc, FAIL if seen else PASS, "invisible",
                 "; ".join(seen.values()) or f"canary pids {pids} not visible",
                 "run in a new pid namespace with its own /proc" if seen else "")


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def check_session(ctx):
    desc = "the sandbox runs in its own session (no shared terminal session)"
    want = ctx.want("new_session", True)
    sid, pid = _session_id(), _own_pid()
    host_sid = ctx.raw.get("host_sid")
    if sid == pid:
        status, text = PASS, f"session leader (sid {sid})"
    elif sid == 0:
        status, text = FAIL, "session leader lives outside our pid namespace (getsid = 0)"
    elif host_sid and sid == host_sid and ctx.ns_state("pid") != "new":
        status, text = FAIL, f"sid {sid} is the launcher's session"
    elif ctx.ns_state("pid") == "new":
        status, text = PASS, f"sid {sid}, a session inside our pid namespace"
    else:
        status, text = WARN, f"sid {sid}; host session unknown"
    if status == FAIL and not want:
        status, text = SKIP, text + "; the profile keeps the session"
    yield result("process.session", "process", desc, status, "a new session (setsid)", text,
                 "call setsid() before exec (bwrap --new-session)" if status == FAIL else "")


def _session_id():
    """getsid(0), or field 6 of /proc/self/stat when the policy refuses getsid()."""
    try:
        return os.getsid(0)
    except OSError as exc:
        if not _refused_by_policy(exc):
            raise
        stat_text = _try_read("/proc/self/stat")
        if stat_text is None:
            raise
        return int(stat_text.rsplit(")", 1)[1].split()[3])


# -------------------------------------------------------------------- network

def _interfaces():
    """Interface names of our network namespace. /proc/self/net/dev first: if_nameindex()
    opens a socket, which a policy may answer with a kill, so it only runs in a child."""
    text = _try_read("/proc/self/net/dev")
    if text is not None:
        return sorted(l.split(":")[0].strip() for l in text.splitlines()[2:] if ":" in l)
    kind, value = run_in_child(lambda: " ".join(name for _, name in socket.if_nameindex()), inline=True)
    if kind == "value":
        return sorted(value.split())
    return None


def _net_relaxed(ctx):
    return ctx.expect.get("network") == "host" or not ctx.ns_expected_new("net")


def _net_result(ctx, cid, desc, reachable, text, expected, hint):
    if reachable is None:
        return result(cid, "network", desc, WARN, expected, text)
    if not reachable:
        return result(cid, "network", desc, PASS, expected, text)
    if _net_relaxed(ctx):
        return result(cid, "network", desc, SKIP, expected, text + "; the profile shares the "
                      "host network")
    return result(cid, "network", desc, FAIL, expected, text, hint)


def check_network(ctx):
    names = _interfaces()
    mode = ctx.want("network", "none")
    desc = "only the loopback interface exists"
    if names is None:
        yield result("net.interfaces", "network", desc, WARN, "lo", "cannot list interfaces")
    else:
        extra = [n for n in names if n != "lo"]
        if extra and mode == "private" and not _net_relaxed(ctx):
            yield result("net.interfaces", "network", desc, SKIP, "lo",
                         ", ".join(names) + "; the profile gives a private network")
        else:
            yield _net_result(ctx, "net.interfaces", desc, bool(extra), ", ".join(names) or "none",
                              "lo only", "run in a new network namespace")
    port = ctx.raw.get("canary_tcp_port")
    desc = "a TCP listener on the host's 127.0.0.1 is unreachable"
    if port:
        yield _net_result(ctx, "net.canary_tcp", desc, *_tcp_reachable(int(port)),
                          "connection refused/unreachable", "run in a new network namespace")
    else:
        yield result("net.canary_tcp", "network", desc, SKIP, "unreachable", "no canary in context")
    name = ctx.raw.get("canary_abstract_socket")
    desc = "a host abstract unix socket is unreachable"
    if name:
        yield _net_result(ctx, "net.abstract_unix", desc, *_abstract_reachable(name),
                          "ECONNREFUSED", "abstract sockets are scoped by the network namespace: "
                          "unshare it (or Landlock LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET)")
    else:
        yield result("net.abstract_unix", "network", desc, SKIP, "unreachable",
                     "no canary in context")
    for cid, family, kind, proto, what, hint in SOCKETS:
        made, text = _socket_allowed(family, kind, proto)
        relaxed = cid.startswith("net.raw") and "CAP_NET_RAW" in {
            _cap_name(c) for c in ctx.expect.get("capabilities") or []}
        reason = "; the profile keeps CAP_NET_RAW"
        # Only a seccomp filter refuses these families inside a network namespace.
        if cid in ("net.vsock", "net.af_alg") and ctx.expect.get("seccomp") is False:
            relaxed, reason = True, "; the profile disables seccomp"
        status = {True: SKIP if relaxed else FAIL, False: PASS, None: WARN}[made]
        yield result(cid, "network", f"{what} cannot be created", status, "refused",
                     text + (reason if relaxed and made else ""),
                     hint if status == FAIL else "")


def _attempt(host, port, proto, timeout=3.0):
    """Connect (and for UDP, exchange a datagram) -> (outcome, seconds): "connected", an errno
    name, "timeout"."""
    import time
    started = time.monotonic()
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(socket.AF_INET, kind)
    s.settimeout(timeout)
    try:
        s.connect((host, int(port)))
        if proto == "udp":
            s.send(b"sandbox-verify")
            s.recv(64)
        outcome = "connected"
    except socket.timeout:
        outcome = "timeout"
    except OSError as exc:
        outcome = _errname(exc.errno)
    finally:
        s.close()
    return outcome, time.monotonic() - started


POLICY_REFUSALS = ("EHOSTUNREACH", "ENETUNREACH", "EACCES", "EPERM")


def check_egress(ctx):
    """bridge mode: a destination the egress allowlist names is reachable; others are refused at
    once (ICMP admin-prohibited from the segment, or no route), not left to time out."""
    allowed = ctx.expect.get("egress_allowed")
    refused = ctx.expect.get("egress_refused")
    if allowed is None and refused is None:
        return
    desc = "an egress destination the profile allows is reachable"
    if allowed:
        host, port, proto = allowed
        outcome, took = _attempt(host, port, proto)
        where = f"{host}:{port}/{proto}: {outcome} in {took:.2f} s"
        if outcome == "connected" or outcome == "ECONNREFUSED":  # the far end answered: the path is open
            yield result("net.egress_allowed", "network", desc, PASS, "connected or refused by the far end", where)
        elif outcome == "timeout":
            yield result("net.egress_allowed", "network", desc, WARN, "an answer", where,
                         "the destination may be down or drop packets")
        else:
            yield result("net.egress_allowed", "network", desc, FAIL, "connected", where,
                         "the segment refuses what the profile allows: check `sandbox gc` and pasta")
    else:
        yield result("net.egress_allowed", "network", desc, SKIP, "a reachable destination",
                     "the profile allows no egress destination with an address and a port")
    desc = "egress the profile does not allow is refused at once"
    if not refused:
        yield result("net.egress_refused", "network", desc, SKIP, "refused",
                     "the profile's egress allows every destination")
        return
    for index, (host, port, proto) in enumerate(refused):
        outcome, took = _attempt(host, port, proto, timeout=3.0)
        where = f"{host}:{port}/{proto}: {outcome} in {took:.2f} s"
        cid = f"net.egress_refused.{index}"
        if outcome in POLICY_REFUSALS and took < 1.5:
            yield result(cid, "network", desc, PASS, "refused by policy", where)
        elif outcome == "connected" or outcome == "ECONNREFUSED":
            yield result(cid, "network", desc, FAIL, "refused by policy", where,
                         "the destination was reached: the segment's rules are missing")
        else:
            yield result(cid, "network", desc, WARN, "refused at once", where,
                         "a refusal should come at once (admin-prohibited), not after a timeout")


SOCKETS = (  # (id, family, type, protocol, what, remediation)
    ("net.raw_packet", 17, socket.SOCK_RAW, 0, "AF_PACKET raw sockets",
     "drop CAP_NET_RAW; deny socket(AF_PACKET) in the seccomp filter"),
    ("net.raw_icmp", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP, "raw ICMP sockets",
     "drop CAP_NET_RAW"),
    ("net.vsock", 40, socket.SOCK_STREAM, 0, "AF_VSOCK sockets (reach the hypervisor host)",
     "deny socket(AF_VSOCK) in the seccomp filter: vsock is not network-namespaced"),
    ("net.af_alg", 38, socket.SOCK_SEQPACKET, 0, "AF_ALG sockets (kernel crypto API)",
     "deny socket(AF_ALG) in the seccomp filter (a recurring kernel attack surface)"),
)


def _reach(family, address, shown):
    """Connect to address in a child (the filter may kill on socket() or connect()), or in the
    probe when the policy refuses fork(): -> (reached: bool|None, text). A socket() or connect()
    the policy refuses is isolation too: "unreachable, denied by the policy"."""
    def attempt():
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            return "refused " + _refusal(f"socket({_FAMILIES.get(family, family)})", exc)
        s.settimeout(1.5)
        try:
            s.connect(address)
            return "reached"
        except socket.timeout:
            return "refused timed out"
        except OSError as exc:  # EPERM here may be Landlock's scoping as well as seccomp
            return f"refused {_errname(exc.errno) if exc.errno else exc}"
        finally:
            s.close()
    kind, value = run_in_child(attempt, inline=True)
    if kind == "signal":
        return _killed(value, f"{shown}: the child")
    if kind == "error":
        return None, f"{shown}: {value}"
    if value == "reached":
        return True, f"connected to {shown}"
    return False, f"{shown}: {value.split(' ', 1)[1]}"


def _killed(signum, who):
    if signum == signal.SIGSYS:
        return False, f"{who} was killed by SIGSYS: denied by the policy"
    return None, f"{who} died of signal {signum}"


def _tcp_reachable(port):
    return _reach(socket.AF_INET, ("127.0.0.1", port), f"127.0.0.1:{port}")


def _abstract_reachable(name):
    return _reach(socket.AF_UNIX, "\0" + name, f"@{name}")


_FAMILIES = {socket.AF_INET: "AF_INET", socket.AF_UNIX: "AF_UNIX", 17: "AF_PACKET", 38: "AF_ALG",
             40: "AF_VSOCK"}


def _socket_allowed(family, kind, proto):
    """Create and close at once, in a child (the filter may kill on socket())."""
    def attempt():
        try:
            socket.socket(family, kind, proto).close()
            return "ok"
        except OSError as exc:
            name = _errname(exc.errno)
            return f"{name}, denied by the policy" if _refused_by_policy(exc) else name
    kind_, value = run_in_child(attempt, inline=True)
    if kind_ == "signal":
        return _killed(value, "socket() in a child")
    if kind_ == "error":
        return None, value
    if value == "ok":
        return True, "created"
    return False, f"refused: {value}"


# ------------------------------------------------------------------------ ipc

def check_ipc(ctx):
    key = ctx.raw.get("canary_sysv_shm_key")
    desc = "the host's SysV shared memory is invisible (canary segment)"
    if key is None or _libc is None:
        yield result("ipc.sysv_shm", "ipc", desc, SKIP, "ENOENT", "no canary in context")
    else:
        ctypes.set_errno(0)
        shmid = _libc.shmget(ctypes.c_int(int(key)), ctypes.c_size_t(0), ctypes.c_int(0))
        err = ctypes.get_errno()
        if shmid >= 0 or err == errno.EACCES:
            yield result("ipc.sysv_shm", "ipc", desc, FAIL, "ENOENT",
                         f"key {key} visible" + (f" (shmid {shmid})" if shmid >= 0 else
                                                 " (EACCES)"),
                         "run in a new IPC namespace")
        elif _refused_by_policy(OSError(err, "")):  # strict denies SysV IPC altogether
            yield result("ipc.sysv_shm", "ipc", desc, PASS, "ENOENT",
                         f"shmget() denied by the policy ({_errname(err)})")
        else:
            yield result("ipc.sysv_shm", "ipc", desc, PASS if err == errno.ENOENT else WARN,
                         "ENOENT", f"shmget: {_errname(err)}")
    name = ctx.raw.get("canary_posix_shm")
    desc = "the host's /dev/shm is invisible (canary file)"
    if not name:
        yield result("ipc.posix_shm", "ipc", desc, SKIP, "absent", "no canary in context")
    else:
        present = os.path.lexists(f"/dev/shm/{name}")
        yield result("ipc.posix_shm", "ipc", desc, FAIL if present else PASS, "absent",
                     f"/dev/shm/{name} " + ("present" if present else "absent"),
                     "mount a private tmpfs on /dev/shm" if present else "")


# -------------------------------------------------------------------- cgroups

def parse_cgroup(text):
    """/proc/PID/cgroup -> [(hierarchy, [controllers], path)]."""
    out = []
    for line in text.splitlines():
        hid, ctrls, path = line.split(":", 2)
        out.append((hid, [c for c in ctrls.split(",") if c], path))
    return out


def _cgroup_dir(controller, cgroups, mounts, proc_root=""):
    """Directory of our cgroup for a controller (v2 when controller is None)."""
    for hid, ctrls, path in cgroups:
        v2 = hid == "0" and not ctrls
        if (controller is None) != v2 or (controller and controller not in ctrls):
            continue
        for m in mounts:
            if v2 and m["fstype"] != "cgroup2":
                continue
            if not v2 and (m["fstype"] != "cgroup" or controller not in m["super"]):
                continue
            if not _under(path, m["root"]):
                continue
            rel = path[len(m["root"].rstrip("/")):].lstrip("/")
            top = proc_root + m["mountpoint"]
            d = os.path.join(top, rel) if rel else top
            if os.path.isdir(d):
                return d, top
    return None, None


def _limit_from(files, cgroups, mounts, proc_root=""):
    """Smallest limit on the path from our cgroup up to the mount top.

    -> (limit or None for unlimited, where) or (False, reason) when invisible.
    """
    visible = None
    for controller, name in files:
        d, top = _cgroup_dir(controller, cgroups, mounts, proc_root)
        if d is None:
            continue
        visible = visible or d
        best, where, seen = None, None, False
        while True:
            text = _try_read(os.path.join(d, name))
            if text is not None:
                seen = True
                value = text.strip()
                num = None if value == "max" else int(value)
                if num is not None and num >= UNLIMITED:
                    num = None
                if num is not None and (best is None or num < best):
                    best, where = num, os.path.join(d, name)
            if d == top or len(d) <= len(top):
                break
            d = os.path.dirname(d)
        if seen:
            return best, where or os.path.join(top, name)
    if visible:
        return None, f"no {files[0][1]} on the path of {visible}"
    return False, "no cgroup filesystem visible"


MEMORY_FILES = ((None, "memory.max"), ("memory", "memory.limit_in_bytes"))
PIDS_FILES = ((None, "pids.max"), ("pids", "pids.max"))


def check_cgroups(ctx):
    text = _try_read("/proc/self/cgroup")
    mounts = ctx.cached("mounts", _mountinfo) or []
    desc = "/proc/self/cgroup shows only '/' (cgroup namespace)"
    if text is None:
        yield result("cgroups.ns", "cgroups", desc, WARN, "/", "/proc/self/cgroup unreadable")
        cgroups = []
    else:
        cgroups = parse_cgroup(text)
        paths = sorted({p for _, _, p in cgroups})
        state = ctx.ns_state("cgroup")
        if any(p.startswith("/..") for p in paths):
            status = FAIL
        elif state == "shared":
            status = FAIL if ctx.ns_expected_new("cgroup") else SKIP
        elif paths == ["/"] or state == "new":
            status = PASS
        else:
            status = WARN
        yield result("cgroups.ns", "cgroups", desc, status, "/", ", ".join(paths),
                     "unshare the cgroup namespace after joining the sandbox cgroup"
                     if status == FAIL else "")
    rw = [m["mountpoint"] for m in mounts if m["fstype"] in ("cgroup", "cgroup2")
          and "ro" not in m["options"]]
    yield result("cgroups.mount_ro", "cgroups", "cgroup filesystems are not writable",
                 FAIL if rw else PASS, "read-only or not mounted", ", ".join(rw) or "none rw",
                 "mount cgroupfs read-only inside the sandbox (or not at all)" if rw else "")
    own_userns = ctx.ns_state("user") == "new" or \
        _try_read("/proc/self/uid_map", "").split() not in ([], ["0", "0", "4294967295"])
    rlimits = _own_rlimits()
    for cid, files, key, what in (("cgroups.memory_limit", MEMORY_FILES, "memory_limit", "memory"),
                                  ("cgroups.pids_limit", PIDS_FILES, "pids_limit", "pids")):
        limit, where = _limit_from(files, cgroups, mounts)
        yield _judge_limit(cid, what, limit, where, ctx.expect.get(key), inside=True,
                           optional=what in (ctx.expect.get("optional_limits") or ()),
                           fallback=_rlimit_fallback(what, rlimits, own_userns))
    if ctx.expect.get("stress"):
        yield from _stress(ctx)


# Where no cgroup limit applies, what an unprivileged launcher sets instead (sandbox/rlimits.py).
# RLIMIT_NPROC counts per uid and user namespace since Linux 5.14: in a user namespace of the
# sandbox's own it bounds the sandbox like pids.max. RLIMIT_DATA bounds each process, not the whole.
_RLIMIT_NAMES = {"Max processes": "nproc", "Max data size": "data", "Max address space": "as"}


def _own_rlimits():
    return {"nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0],
            "data": resource.getrlimit(resource.RLIMIT_DATA)[0],
            "as": resource.getrlimit(resource.RLIMIT_AS)[0]}


def _rlimits_of(pid):
    """/proc/PID/limits -> {"nproc": soft, ...}; -1 for unlimited."""
    out = {}
    for line in (_try_read(f"/proc/{pid}/limits") or "").splitlines():
        for label, name in _RLIMIT_NAMES.items():
            if line.startswith(label):
                soft = line[len(label):].split()[0]
                out[name] = -1 if soft == "unlimited" else int(soft)
    return out


def _kernel_counts_nproc_per_userns():
    release = _uname("release", "/proc/sys/kernel/osrelease").split("-")[0].split(".")
    try:
        return tuple(int(x) for x in release[:2]) >= (5, 14)
    except ValueError:
        return False


def _rlimit_fallback(what, rlimits, own_userns):
    """-> (value, text, bounds the whole sandbox) for the rlimit standing in for a cgroup limit."""
    if what == "pids":
        value = rlimits.get("nproc", -1)
        if value is None or value < 0 or value == resource.RLIM_INFINITY:
            return None
        whole = own_userns and _kernel_counts_nproc_per_userns()
        return value, f"RLIMIT_NPROC {value}" + (" in a user namespace of its own: it counts the "
                                                 "sandbox's processes" if whole else
                                                 " (counts every process of the host user)"), whole
    if what == "memory":
        found = [(rlimits[n], n.upper()) for n in ("data", "as")
                 if rlimits.get(n, -1) not in (-1, None, resource.RLIM_INFINITY)]
        if not found:
            return None
        value, name = min(found)
        return value, f"RLIMIT_{name} {value} per process only", False
    return None


def _judge_limit(cid, what, limit, where, want, inside, optional=False, fallback=None):
    """A limit the profile promises (want) is a FAIL when nothing enforces it, unless the
    profile marks it optional (then WARN); an rlimit that bounds the whole sandbox counts."""
    desc = f"the {what} limit matches the profile"
    expected = "a limit" if want is None else f"<= {want}"
    unenforced = limit is None or (limit is not False and want is not None and limit > int(want))
    if want is not None and fallback is not None and (limit is False or unenforced):
        value, text, whole = fallback
        if whole and value <= int(want):
            return result(cid, "cgroups", desc, PASS, expected, f"no cgroup limit; {text}")
        where = f"{where}; {text}"
    if limit is False:
        return result(cid, "cgroups", desc, WARN, expected, where,
                      "mount cgroupfs read-only inside, or rely on outside_checks" if inside else "")
    shown = f"unlimited ({where})" if limit is None else f"{limit} ({where})"
    if want is None:
        return result(cid, "cgroups", desc, PASS if limit is not None else WARN, expected, shown,
                      "" if limit is not None else f"set {what}.max for the sandbox cgroup")
    ok = limit is not None and limit <= int(want)
    if ok:
        return result(cid, "cgroups", desc, PASS, expected, shown)
    if optional:
        return result(cid, "cgroups", desc, WARN, expected, shown + "; optional in the profile "
                      "(limits.optional)")
    return result(cid, "cgroups", desc, FAIL, expected, shown,
                  f"not enforced: run where the sandbox gets a cgroup with the {what} controller "
                  f"(e.g. systemd-run --user -p Delegate=yes), or list \"{what}\" in limits.optional")


def _stress(ctx):
    """Opt-in: allocate / fork past the limits in a child; expect the kernel to stop it."""
    mem = ctx.expect.get("memory_limit")
    if mem:
        def hog():
            chunks, total, step = [], 0, 8 << 20
            while total < int(mem) + (64 << 20):  # never far past the limit
                chunks.append(bytearray(step))  # zero-filled: pages are touched
                total += step
            return "survived"
        kind, value = run_in_child(hog, timeout=30)
        stopped = kind == "signal" or "MemoryError" in str(value)
        optional = "memory" in (ctx.expect.get("optional_limits") or ())
        status = PASS if stopped else WARN if optional or "in a child" in str(value) else FAIL
        yield result("cgroups.stress_memory", "cgroups", "allocating past memory_limit is stopped",
                     status, "OOM kill or MemoryError",
                     f"child {'killed by signal ' + str(value) if kind == 'signal' else value}",
                     "" if status != FAIL else "the memory limit is not enforced")
    pids = ctx.expect.get("pids_limit")
    if pids and int(pids) <= 4096:
        def forker():
            kids = []
            try:
                for _ in range(int(pids) + 16):
                    pid = os.fork()
                    if pid == 0:
                        signal.pause()
                        os._exit(0)
                    kids.append(pid)
                return f"forked {len(kids)}"
            except OSError as exc:
                return f"fork stopped after {len(kids)}: {_errname(exc.errno)}"
            finally:
                for pid in kids:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
        kind, value = run_in_child(forker, timeout=30)
        # A policy that refuses fork() stops a fork bomb before any limit does.
        stopped = "stopped" in str(value) or "fork() denied by the policy" in str(value)
        optional = "pids" in (ctx.expect.get("optional_limits") or ())
        status = PASS if stopped else WARN if optional else FAIL
        yield result("cgroups.stress_pids", "cgroups", "forking past pids_limit is stopped",
                     status, "EAGAIN", value, "" if status != FAIL else "the pids limit is not enforced")


# ------------------------------------------------------------------- terminal

TIOCSTI = 0x5412


def _tiocsti(fd):
    """In the child: TIOCSTI with a bad pointer: EFAULT = allowed, never injects."""
    ctypes.set_errno(0)
    ret = _libc.ioctl(ctypes.c_int(fd), ctypes.c_ulong(TIOCSTI), ctypes.c_void_p(1))
    return f"{ret} {ctypes.get_errno() if ret < 0 else 0}"


def check_terminal(ctx):
    desc = "TIOCSTI cannot push keystrokes into a terminal"
    targets = [fd for fd in (0, 1, 2) if _isatty(fd)]
    tty_fd = None
    try:
        tty_fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK)
        targets.append(tty_fd)
    except OSError:
        pass
    try:
        if not targets or _libc is None:
            yield result("terminal.tiocsti", "terminal", desc, SKIP, "EPERM/EIO",
                         "no terminal on fds 0-2 and no controlling terminal")
            return
        allowed, refused = [], []
        for fd in targets:
            name = "/dev/tty" if fd == tty_fd else f"fd {fd}"
            outcome = run_in_child(lambda: _tiocsti(fd))
            if outcome[0] == "value" and outcome[1].split()[1] == str(errno.EFAULT):
                allowed.append(f"{name}: allowed (EFAULT on the bad pointer)")
            else:
                refused.append(f"{name}: {classify(outcome)[1]}")
        yield result("terminal.tiocsti", "terminal", desc, FAIL if allowed else PASS,
                     "EPERM/EIO/ENOTTY", "; ".join(allowed + refused),
                     "start the sandbox in a new session (setsid), give it a fresh pty, or deny "
                     "ioctl(TIOCSTI) in the filter" if allowed else "")
    finally:
        if tty_fd is not None:
            os.close(tty_fd)


def _isatty(fd):
    try:
        return os.isatty(fd)
    except OSError:
        return False


# ---------------------------------------------------------- safe-listed executables

_EXEC_CANDIDATES = ("true", "false", "id", "echo", "sh", "ls", "cat", "env", "uname", "date")


def _exec_allowed_by(patterns, path):
    """Whether an [exec] allow pattern names `path` (fnmatch: '*' may cross '/' here, which only
    makes the probe avoid more candidates)."""
    import fnmatch
    for pattern in patterns:
        if pattern.endswith("/**"):
            base = pattern[:-3].rstrip("/")
            if not base or path == base or fnmatch.fnmatchcase(path, base + "/*"):
                return True
        elif fnmatch.fnmatchcase(path, pattern):
            return True
    return False


def _exec_errno(path, fd=None):
    """errno of execve(path) (or fexecve(fd)) in a child; 0 when the program started."""
    rfd, wfd = os.pipe()  # close-on-exec: EOF without a byte means the exec happened
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(rfd)
        os.close(wfd)
        return -exc.errno
    if pid == 0:
        try:
            os.close(rfd)
            null = os.open("/dev/null", os.O_RDWR)
            for target in (0, 1, 2):
                os.dup2(null, target)
            os.execve(path if fd is None else fd, [path, "--version"], {"PATH": "/usr/bin:/bin"})
        except OSError as exc:
            os.write(wfd, str(exc.errno).encode())
        except BaseException:  # noqa: BLE001
            os.write(wfd, b"-1")
        os._exit(127)
    os.close(wfd)
    data = os.read(rfd, 32)
    os.close(rfd)
    try:
        os.kill(pid, signal.SIGKILL)  # whatever started need not finish
    except OSError:
        pass
    os.waitpid(pid, 0)
    return int(data) if data else 0


def _exec_candidate(patterns):
    dirs = [d for d in os.environ.get("PATH", "").split(":") if d] + ["/usr/bin", "/bin", "/usr/sbin"]
    seen = set()
    for names in (_EXEC_CANDIDATES, None):
        for directory in dirs:
            try:
                entries = names or sorted(os.listdir(directory))
            except OSError:
                continue
            for name in entries:
                path = os.path.join(directory, name)
                real = os.path.realpath(path)
                if path in seen or real == os.path.realpath(sys.executable):
                    continue
                seen.add(path)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if (stat.S_ISREG(st.st_mode) and st.st_mode & 0o111
                        and not _exec_allowed_by(patterns, path) and not _exec_allowed_by(patterns, real)):
                    return path
    return None


def _writable_dir(ctx):
    for directory in list(ctx.expect.get("rw_paths") or []) + ["/tmp", "/dev/shm"]:
        if os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK):
            return directory
    return None


def check_exec(ctx):
    """[exec] allow: only listed files run. Landlock's execute right is what enforces it."""
    patterns = ctx.expect.get("exec_allow")
    layer = "filesystem"
    if patterns is None:
        yield result("exec.allowlist", layer, "only safe-listed executables run", SKIP,
                     "an [exec] allow list", "none in the profile" if ctx.expect else "no expectation given")
        return
    hint = "enforce the list with Landlock's execute right (LANDLOCK_ACCESS_FS_EXECUTE)"
    candidate = _exec_candidate(patterns)
    if candidate is None:
        yield result("exec.unlisted", layer, "an executable not on the list is refused", SKIP,
                     "EACCES", "no executable outside the list found to try")
    else:
        err = _exec_errno(candidate)
        yield result("exec.unlisted", layer, "an executable not on the list is refused",
                     PASS if err in (errno.EACCES, errno.EPERM) else FAIL if err == 0 else WARN, "EACCES",
                     f"{candidate}: " + ("it ran" if err == 0 else _errname(abs(err))), hint if err == 0 else "")
    directory = _writable_dir(ctx)
    if directory is None:
        yield result("exec.written", layer, "a program written inside is refused", SKIP, "EACCES",
                     "no writable directory")
    else:
        copy = os.path.join(directory, f".sandbox-probe-exec-{os.getpid()}")
        try:
            with open(sys.executable, "rb") as source, open(copy, "wb") as target:
                target.write(source.read())
            os.chmod(copy, 0o700)
            err = _exec_errno(copy)
            yield result("exec.written", layer, "a program written inside is refused",
                         PASS if err in (errno.EACCES, errno.EPERM) else FAIL if err == 0 else WARN, "EACCES",
                         f"a copy of {sys.executable} in {directory}: "
                         + ("it ran" if err == 0 else _errname(abs(err))),
                         "grant execute on no writable path" if err == 0 else "")
        except OSError as exc:
            yield result("exec.written", layer, "a program written inside is refused", SKIP, "EACCES",
                         f"could not write {copy}: {_errname(exc.errno)}")
        finally:
            try:
                os.unlink(copy)
            except OSError:
                pass
    if not hasattr(os, "memfd_create"):
        yield result("exec.memfd", layer, "a program in a memfd is refused", SKIP, "refused", "no memfd_create")
        return
    try:
        fd = os.memfd_create("sandbox-probe", os.MFD_CLOEXEC)
    except OSError as exc:
        yield result("exec.memfd", layer, "a program in a memfd is refused", PASS, "refused",
                     f"memfd_create without MFD_NOEXEC_SEAL: {_errname(exc.errno)}")
        return
    try:
        with open(sys.executable, "rb") as source:
            os.write(fd, source.read())
        err = _exec_errno("memfd", fd)
        yield result("exec.memfd", layer, "a program in a memfd is refused",
                     PASS if err in (errno.EACCES, errno.EPERM) else FAIL if err == 0 else WARN, "refused",
                     "fexecve of a memfd: " + ("it ran" if err == 0 else _errname(abs(err))),
                     "Landlock lets memfds through: limit memfd_create to MFD_NOEXEC_SEAL with seccomp"
                     if err == 0 else "")
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- runner

CHECKS = (check_namespaces, check_hostname, check_ids, check_capabilities, check_seccomp_mode,
          check_syscalls, check_compat_abis, check_namespace_creation, check_mounts,
          check_writable_mounts, check_kernel_knobs, check_proc_masks, check_devices, check_fds, check_environment,
          check_host_processes, check_session, check_network, check_egress, check_ipc, check_cgroups,
          check_terminal, check_exec)


def run_checks(context=None):
    """Run every check inside the current process's sandbox; -> list of result dicts."""
    ctx = Context(context)
    results = []
    for check in CHECKS:
        try:
            results.extend(check(ctx))
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the rest
            layer = check.__name__.replace("check_", "")
            if _refused_by_policy(exc):  # the checks before it are kept (extend appends as it goes)
                results.append(result(f"probe.denied.{layer}", "process", f"{check.__name__} ran",
                                      WARN, "no error",
                                      f"a call this check makes was denied by the policy: {exc}",
                                      "the rest of this check could not run; verify the profile "
                                      "with a policy that allows the call, to see what it hides"))
                continue
            results.append(result(f"probe.error.{layer}", "process", f"{check.__name__} ran",
                                  WARN, "no error", f"{type(exc).__name__}: {exc}",
                                  "report this probe bug"))
    return results


def outside_checks(pid, context=None):
    """Checks the verifier runs on the host against the sandboxed pid while it runs.

    Reading /proc/PID from the host shows host ids and the real cgroup, which
    the inside cannot see. Ids are prefixed "outside.".
    """
    ctx = Context(context)
    if not ctx.host_ns:
        ctx.host_ns = {n: i for n in NAMESPACES if (i := _ino(f"/proc/self/ns/{n}"))}
    out = []
    status_text = _try_read(f"/proc/{pid}/status")
    if status_text is None:
        return [result("outside.process", "process", "the sandboxed process can be inspected",
                       WARN, f"/proc/{pid}/status", "unreadable (process gone?)")]
    fields = _status_fields(status_text)
    for name in NAMESPACES:
        ino = _ino(f"/proc/{pid}/ns/{name}")
        if ino is None:
            continue
        host = ctx.host_ns.get(name)
        want_new = ctx.ns_expected_new(name)
        shared = ino == host
        status = PASS if not shared else (SKIP if not want_new else FAIL)
        out.append(result(f"outside.ns.{name}", "namespaces", f"pid {pid} has its own {name} "
                          "namespace", status, "new" if want_new else "shared (profile)",
                          f"inode {ino}, host {host}", f"unshare {name}" if status == FAIL else ""))
    uids = fields.get("Uid", "").split()
    gids = fields.get("Gid", "").split()
    root = "0" in uids or "0" in gids
    out.append(result("outside.ids.host_uid", "ids", "the process runs as an unprivileged host "
                      "uid/gid", FAIL if root else PASS, "no 0 among real/effective/saved/fs ids",
                      f"Uid {' '.join(uids)}; Gid {' '.join(gids)}",
                      "map the sandbox to an unprivileged host id" if root else ""))
    for kind in ("uid", "gid"):
        text = _try_read(f"/proc/{pid}/{kind}_map")
        if text is None:
            continue
        lines = parse_id_map(text)
        zero = [l for l in lines if l[1] == 0]
        identity = lines == [(0, 0, 4294967295)]
        relaxed = zero and identity and not ctx.ns_expected_new("user")
        status = SKIP if relaxed else FAIL if zero else PASS
        out.append(result(f"outside.ids.{kind}_map", "ids", f"no sandbox {kind} maps to host 0",
                          status, "no line with outside id 0",
                          "; ".join(" ".join(map(str, l)) for l in lines)
                          + ("; no user namespace, as the profile asks (see outside.ids.host_uid)"
                             if relaxed else ""),
                          f"map an unprivileged host {kind} range" if status == FAIL else ""))
    userns_new = _ino(f"/proc/{pid}/ns/user") != ctx.host_ns.get("user")
    out.extend(_judge_caps("outside.", fields, ctx, userns_new))
    out.extend(_judge_seccomp("outside.", _thread_statuses(pid), ctx))
    out.extend(owner_markers_checks(ctx))
    cg = _try_read(f"/proc/{pid}/cgroup")
    if cg is not None:
        cgroups, mounts = parse_cgroup(cg), _mountinfo() or []
        rlimits = _rlimits_of(pid)
        for cid, files, key, what in (("outside.cgroups.memory_limit", MEMORY_FILES,
                                       "memory_limit", "memory"),
                                      ("outside.cgroups.pids_limit", PIDS_FILES, "pids_limit",
                                       "pids")):
            limit, where = _limit_from(files, cgroups, mounts)
            out.append(_judge_limit(cid, what, limit, where, ctx.expect.get(key), inside=False,
                                    optional=what in (ctx.expect.get("optional_limits") or ()),
                                    fallback=_rlimit_fallback(what, rlimits, userns_new)))
    return out


# ------------------------------------------------------------------ rendering

def summary_line(results):
    counts = {s: sum(1 for r in results if r["status"] == s) for s in (PASS, FAIL, WARN, SKIP)}
    line = (f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[WARN]} warning"
            f"{'' if counts[WARN] == 1 else 's'}")
    return line + (f", {counts[SKIP]} skipped" if counts[SKIP] else "")


def render_text(results):
    """Plain table grouped by layer (sandbox.verify.report has the coloured one)."""
    lines = []
    order = {layer: i for i, layer in enumerate(LAYERS)}
    for layer in sorted({r["layer"] for r in results}, key=lambda l: order.get(l, 99)):
        lines.append(f"== {layer}")
        for r in (r for r in results if r["layer"] == layer):
            lines.append(f"  {r['status']:<4}  {r['id']:<34} {r['observed']}")
            if r["status"] == FAIL and r["hint"]:
                lines.append(f"        {'':<34} fix: {r['hint']}")
    lines.append(summary_line(results))
    return "\n".join(lines)


def _load_context(arg):
    if arg is None:
        return None
    if arg.lstrip().startswith("{"):
        return json.loads(arg)
    if arg == "-":
        return json.load(sys.stdin)
    with open(arg) as f:
        return json.load(f)


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="probe.py", description="Report what this process "
                                     "can reach: namespaces, privileges, syscalls, files, network.")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--context", help="context JSON: a file, '-' for stdin, or JSON text")
    parser.add_argument("--stress", action="store_true",
                        help="also allocate and fork past the expected limits (in a child)")
    parser.add_argument("--stop-when-done", action="store_true",
                        help="stop (SIGSTOP) after printing, so a verifier can inspect this process "
                             "from outside; it sends SIGCONT when done")
    parser.add_argument("--outside", type=int, metavar="PID",
                        help="run the host-side checks against PID instead")
    args = parser.parse_args(argv)
    try:
        context = _load_context(args.context) or {}
    except (OSError, ValueError) as exc:
        print(f"probe.py: bad --context: {exc}", file=sys.stderr)
        return 2
    if args.stress:
        context.setdefault("expect", {})["stress"] = True
    results = outside_checks(args.outside, context) if args.outside else run_checks(context)
    stop = None
    if args.stop_when_done:
        stop = _stopper()
        if stop is None:
            results.append(result("probe.stop", "process", "the probe can stop itself for the "
                                  "outside checks", WARN, "kill(self, SIGSTOP) or tgkill",
                                  "both denied by the policy: the host-side checks cannot run",
                                  "verify the profile with a policy that allows kill()"))
    if args.json:
        counts = {name: sum(1 for r in results if r["status"] == s) for s, name in
                  ((PASS, "passed"), (FAIL, "failed"), (WARN, "warnings"), (SKIP, "skipped"))}
        print(json.dumps({"probe_version": PROBE_VERSION, "pid": _own_pid(),
                          "kernel": _uname("release", "/proc/sys/kernel/osrelease"), "arch": _ARCH,
                          "summary": counts, "results": results}, indent=1))
    else:
        print(render_text(results))
    if stop is not None:
        sys.stdout.flush()
        stop()
    remove_owner_markers()
    return 1 if any(r["status"] == FAIL for r in results) else 0


def _stopper():
    """A way to SIGSTOP ourselves that the policy allows (tested with signal 0), or None."""
    try:
        os.kill(_own_pid(), 0)
        return lambda: os.kill(_own_pid(), signal.SIGSTOP)
    except OSError:
        pass
    import threading
    try:
        signal.pthread_kill(threading.get_ident(), 0)
        return lambda: signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
