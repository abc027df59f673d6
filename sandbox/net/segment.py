"""A segment: its own user and network namespaces holding a bridge, its rules, and, while a member
needs egress, pasta. Every function here runs with the state lock held.

Both namespaces belong to the segment, never to a sandbox:

* the network namespace (S) holds the bridge, one veth end per member, the egress interface and
  the nftables rules; no workload ever runs in it, so none can change them;
* the user namespace (U) owns S. Root creates it with uid 0 mapped to host nobody, so that pasta
  and the publish relays run as root of U, with capabilities over S and nothing else on the host.
  A rootless caller creates it with its own uid as 0 and nests its sandboxes' user namespaces
  inside: the kernel lets one move a veth end between two network namespaces only with
  CAP_NET_ADMIN over both owners, through a netlink socket whose opener has it too, and a
  rootless caller has that over S and a sandbox's namespace only when the sandbox's user
  namespace descends from U (see docs/network.md).

Root keeps U and S alive by bind-mounting them in the segment's directory; a rootless caller
cannot mount, so a keeper process (sleep, in U and S) holds them.
"""
from __future__ import annotations

import errno
import ipaddress
import json
import os
import shutil
import stat
import time

from .. import _libc, network as loopback
from ..errors import SetupError
from . import nsexec, procs, rules
from .state import POOL, STEP, State, read_json, subnet, write_json

HELPER_UID = 65534  # root's segments: the host uid their root (pasta, relays) is
EGRESS_ADDRESS = "169.254.231.2"  # the segment's side of pasta's interface (link-local, /30)
EGRESS_GATEWAY = "169.254.231.1"
TUN = "/dev/net/tun"


def rootless() -> bool:
    return os.geteuid() != 0


# ---------------------------------------------------------------- where its namespaces are

def namespace_path(state: State, name: str, record: dict, kind: str) -> str:
    if record.get("keeper"):
        return f"/proc/{record['keeper'][0]}/ns/{kind}"
    return os.path.join(state.segment_dir(name), f"{kind}ns")


def inside(state: State, name: str, record: dict) -> list[tuple[str, str]]:
    """The namespaces to join to act in S: U too when rootless (capabilities come from there)."""
    net = ("net", namespace_path(state, name, record, "net"))
    if rootless():
        return [("user", namespace_path(state, name, record, "user")), net]
    return [net]


def as_segment_root(state: State, name: str, record: dict) -> list[tuple[str, str]]:
    """Join U (then S) to run as U's root: for pasta and relays, never host root."""
    return [("user", namespace_path(state, name, record, "user"))]


def usable(state: State, name: str, record: dict | None) -> bool:
    """Do the segment's namespaces still exist (a keeper alive, or the bind mounts in place)?"""
    if record is None:
        return False
    if record.get("keeper"):
        return procs.alive(record["keeper"])
    path = namespace_path(state, name, record, "net")
    try:
        return os.stat(path).st_dev != os.stat(os.path.dirname(path)).st_dev  # a mount point (nsfs)
    except OSError:
        return False


# ---------------------------------------------------------------- creation

def _configure_new_netns() -> None:
    """In S, as its creator: loopback up, forwarding on (S's own sysctls, not the host's), ICMP
    errors not rate-limited (refusals are admin-prohibited errors: past the default burst a
    program refused again and again would wait for its retransmission timer), no IPv6 (segments
    carry IPv4; this also keeps link-local IPv6 chatter off the bridge)."""
    loopback.bring_up_loopback()
    for path, value in (("/proc/sys/net/ipv4/ip_forward", "1"), ("/proc/sys/net/ipv4/icmp_ratelimit", "0"),
                        ("/proc/sys/net/ipv4/icmp_msgs_per_sec", "100000"),
                        ("/proc/sys/net/ipv4/icmp_msgs_burst", "100000"),
                        ("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1"),
                        ("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")):
        try:
            with open(path, "w") as handle:
                handle.write(value)
        except FileNotFoundError:
            if "ipv4" in path:
                raise


def _map_self() -> None:
    uid, gid = os.geteuid(), os.getegid()
    for name, text in (("uid_map", f"0 {uid} 1\n"), ("setgroups", "deny"), ("gid_map", f"0 {gid} 1\n")):
        with open(f"/proc/self/{name}", "w") as handle:
            handle.write(text)


def _create_namespaces_root(directory: str) -> None:
    """U (uid 0 = host nobody) and S, bind-mounted at directory/userns and directory/netns."""
    for kind in ("user", "net"):
        os.close(os.open(os.path.join(directory, f"{kind}ns"), os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_CLOEXEC,
                         0o444))
    to_child_r, to_child_w = os.pipe2(os.O_CLOEXEC)
    to_parent_r, to_parent_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            nsexec.forked({to_child_r, to_parent_w})
            _libc.unshare(_libc.CLONE_NEWUSER)
            os.write(to_parent_w, b"u")
            if os.read(to_child_r, 1) == b"g":
                _libc.unshare(_libc.CLONE_NEWNET)
                _configure_new_netns()
                os.write(to_parent_w, b"n")
                os.read(to_child_r, 1)  # until the parent has mounted the namespaces
                code = 0
        except BaseException as exc:  # noqa: BLE001
            try:
                os.write(to_parent_w, b"E" + str(exc).encode()[:400])
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(to_child_r)
    os.close(to_parent_w)
    try:
        answer = os.read(to_parent_r, 512)
        if answer != b"u":
            raise OSError(errno.EPERM, f"user namespace: {answer[1:].decode(errors='replace') or 'refused'}")
        for file, text in (("setgroups", "deny"), ("uid_map", f"0 {HELPER_UID} 1\n"),
                           ("gid_map", f"0 {HELPER_UID} 1\n")):
            with open(f"/proc/{pid}/{file}", "w") as handle:
                handle.write(text)
        os.write(to_child_w, b"g")
        answer = os.read(to_parent_r, 512)
        if answer != b"n":
            raise OSError(errno.EPERM, f"network namespace: {answer[1:].decode(errors='replace') or 'refused'}")
        for kind in ("user", "net"):
            _libc.mount(f"/proc/{pid}/ns/{kind}", os.path.join(directory, f"{kind}ns"), None, _libc.MS_BIND)
    finally:
        os.close(to_child_w)
        os.close(to_parent_r)
        os.waitpid(pid, 0)


def _create_namespaces_rootless(directory: str) -> list[int]:
    """U (uid 0 = the caller) and S, held by a keeper; returns the keeper's identity."""
    sleep = shutil.which("sleep") or "/bin/sleep"

    def enter():
        _libc.unshare(_libc.CLONE_NEWUSER)
        _map_self()
        _libc.unshare(_libc.CLONE_NEWNET)
        _configure_new_netns()
    pid = nsexec.spawn_detached([], [f"sbx-segment-keeper:{directory}", "infinity"], prepare=enter,
                                executable=sleep)
    keeper = procs.identity(pid)
    deadline = time.monotonic() + 5
    # It has exec'd sleep (spawn_detached waits for that), so its namespaces are final.
    if keeper is None or time.monotonic() > deadline:
        raise OSError(errno.ESRCH, "the segment keeper died at start")
    return keeper


def create(state: State, name: str) -> dict:
    """Make segment `name` (state lock held): namespaces, bridge, rules. Its record."""
    directory = state.segment_dir(name)
    if os.path.lexists(directory):  # the remains of a failed creation: gone first
        destroy(state, name, state.segment_record(name) or {})
    os.makedirs(os.path.join(directory, "members"), mode=0o755 if not rootless() else 0o700)
    record = {"name": name, "index": state.free_index(), "created": time.time(), "keeper": None, "pasta": None}
    record["subnet"] = str(subnet(record["index"]))
    write_json(os.path.join(directory, "segment.json"), record)  # before anything exists: gc finds it
    try:
        if rootless():
            record["keeper"] = _create_namespaces_rootless(directory)
        else:
            _create_namespaces_root(directory)
        write_json(os.path.join(directory, "segment.json"), record)
        gateway = ipaddress.IPv4Network(record["subnet"])[1]
        with nsexec.iproute(inside(state, name, record)) as ipr, nsexec.netlink_errors():
            ipr.link("add", ifname=rules.BRIDGE, kind="bridge")
            index = ipr.link_lookup(ifname=rules.BRIDGE)[0]
            ipr.addr("add", index=index, address=str(gateway), prefixlen=24)
            ipr.link("set", index=index, state="up")
        apply_rules(state, name, record)
        write_hosts(state, name)
    except OSError as exc:
        destroy(state, name, record)
        raise SetupError(STEP, exc.errno or 0, f"segment {name!r} could not be created: {exc.strerror or exc}") \
            from None
    return record


def destroy(state: State, name: str, record: dict) -> None:
    """Remove segment `name` and everything of it (state lock held); safe on a half-made one."""
    directory = state.segment_dir(name)
    procs.stop(record.get("pasta"))
    procs.stop(record.get("keeper"))
    for kind in ("net", "user"):
        path = os.path.join(directory, f"{kind}ns")
        try:
            _libc.umount2(path, _libc.MNT_DETACH)
        except OSError:
            pass
    shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------- rules, names, egress

def member_rules(state: State, name: str) -> list[dict]:
    return [dict(record, id=member) for member, record in sorted(state.members(name).items())
            if record.get("veth")]


def apply_rules(state: State, name: str, record: dict) -> None:
    ruleset = rules.ruleset(member_rules(state, name), str(POOL))
    nft = shutil.which("nft") or "/usr/sbin/nft"
    status, _, err = nsexec.run(inside(state, name, record), [nft, "-j", "-f", "-"], json.dumps(ruleset).encode(),
                                as_root=rootless())
    if status != 0:
        raise OSError(errno.EINVAL, f"nft: {err.decode(errors='replace').strip()[:400]}")


def write_hosts(state: State, name: str) -> None:
    """The segment's /etc/hosts, rewritten in place: members bind this very file (its inode)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for _, member in sorted(state.members(name).items(), key=lambda item: item[1].get("address", "")):
        if member.get("hostname"):
            lines.append(f"{member['address']}\t{member['hostname']}")
    content = ("\n".join(lines) + "\n").encode()
    path = os.path.join(state.segment_dir(name), "hosts")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.pwrite(fd, content, 0)
        os.ftruncate(fd, len(content))
    finally:
        os.close(fd)


def check_tun() -> bool:
    """pasta opens /dev/net/tun as an unprivileged user (root of the segment's user namespace):
    it must be readable and writable by everyone, as udev's default rule makes it. Without udev
    (minimal VMs, containers) it is often 0600: a root launcher then gives pasta a node of its own
    (private_tun); a rootless one cannot. True when the host's node is usable as it is."""
    try:
        mode = os.stat(TUN).st_mode & 0o777
    except OSError as exc:
        raise SetupError(STEP, exc.errno or 0, f"egress needs {TUN} (the tun module): {exc.strerror}") from None
    if mode & 0o006 == 0o006:
        return True
    if rootless():
        raise SetupError(STEP, errno.EACCES, f"egress needs {TUN} usable by every user (mode 0666, as udev's "
                         f"default rule sets it); here it is {mode:04o}: run `chmod 0666 {TUN}`")
    return False


def private_tun() -> None:
    """In pasta's process, before it leaves host root: a mount namespace of its own in which a
    tmpfs over /dev/net holds a 0666 tun node, the one pasta opens as the segment's root. The
    host's /dev stays as it is; the node gives nothing the segment's root could not already ask of
    pasta, which drops it once the interface exists (it then sandboxes itself)."""
    _libc.unshare(_libc.CLONE_NEWNS)
    _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)
    _libc.mount("tmpfs", os.path.dirname(TUN), "tmpfs", _libc.MS_NOSUID | _libc.MS_NOEXEC, "mode=0755,size=16k")
    # The tun driver's fixed number, never whatever the host's path holds: a node of another
    # device made 0666 would open that device to the segment's root.
    os.mknod(TUN, 0o666 | stat.S_IFCHR, os.makedev(10, 200))
    os.chmod(TUN, 0o666)  # (mknod applies the umask)


def ensure_egress(state: State, name: str, record: dict) -> dict:
    """pasta attached to S (once per segment), its interface addressed and the default route."""
    if record.get("pasta") and procs.alive(record["pasta"]):
        return record
    pasta = shutil.which("pasta")
    if pasta is None:
        raise SetupError(STEP, errno.ENOENT, "egress needs pasta (Debian/Ubuntu package passt, Fedora passt)")
    host_tun_usable = check_tun()
    directory = state.segment_dir(name)
    options = ["-f", "-q", "--netns", namespace_path(state, name, record, "net"), "-I", rules.EGRESS,
               "-a", EGRESS_ADDRESS, "-n", "30", "-g", EGRESS_GATEWAY, "--no-map-gw", "-t", "none", "-u", "none",
               "-T", "none", "-U", "none", "--no-dhcp", "--no-ndp", "--no-dhcpv6", "--no-ra", "-4"]
    if rootless():  # pasta joins U itself, as rootless podman runs it
        argv, join = [pasta, *options, "--userns", namespace_path(state, name, record, "user")], []
    else:  # started as root of U (host nobody): this pasta cannot setns() before it drops root
        argv, join = [pasta, "--runas", "0:0", *options, "--netns-only"], as_segment_root(state, name, record)
    try:
        pid = nsexec.spawn_detached(join, argv, as_root=not rootless(),
                                    stderr_path=os.path.join(directory, "pasta.log"),
                                    before_join=None if host_tun_usable else private_tun)
        record["pasta"] = procs.identity(pid) or [pid, 0]
        write_json(os.path.join(directory, "segment.json"), record)
        with nsexec.iproute(inside(state, name, record)) as ipr, nsexec.netlink_errors():
            deadline = time.monotonic() + 10
            while not ipr.link_lookup(ifname=rules.EGRESS):
                if time.monotonic() > deadline or not procs.alive(record["pasta"]):
                    raise OSError(errno.EIO, f"pasta did not start: {_tail(os.path.join(directory, 'pasta.log'))}")
                time.sleep(0.01)
            index = ipr.link_lookup(ifname=rules.EGRESS)[0]
            ipr.addr("add", index=index, address=EGRESS_ADDRESS, prefixlen=30)
            ipr.link("set", index=index, state="up")
            ipr.route("add", dst="0.0.0.0/0", gateway=EGRESS_GATEWAY)
    except OSError as exc:
        procs.stop(record.get("pasta"))
        record["pasta"] = None
        write_json(os.path.join(directory, "segment.json"), record)
        raise SetupError(STEP, exc.errno or 0, f"egress of segment {name!r}: {exc.strerror or exc}") from None
    return record


def _tail(path: str) -> str:
    try:
        with open(path, errors="replace") as handle:
            lines = [l.strip() for l in handle if l.strip() and "syslog" not in l]
        return lines[-1] if lines else "no message"
    except OSError:
        return "no message"


# ---------------------------------------------------------------- collection

def member_alive(record: dict) -> bool:
    keeper = record.get("init") or record.get("owner")
    return procs.alive(keeper)


def remove_member(state: State, name: str, member: str, record: dict | None, segment: dict) -> None:
    """Forget a member (state lock held): relay, veth, rules, hosts line, record."""
    record = record or {}
    procs.stop(record.get("relay"))
    try:
        os.unlink(state.member_path(name, member))
    except FileNotFoundError:
        pass
    if record.get("veth") and usable(state, name, segment):
        try:
            with nsexec.iproute(inside(state, name, segment)) as ipr:
                found = ipr.link_lookup(ifname=record["veth"])
                if found:
                    ipr.link("del", index=found[0])
        except Exception:  # noqa: BLE001 - OSError or pyroute2's NetlinkError: gone with the sandbox's
            pass           # namespace already, most likely (the kernel removes both ends of a veth)


def collect_locked(state: State) -> list[str]:
    removed = []
    for name in state.segment_names():
        segment = state.segment_record(name)
        if segment is None or not usable(state, name, segment):
            destroy(state, name, segment or {})
            removed.append(f"segment {name} (its namespaces were gone)")
            continue
        members = state.members(name)
        dead = {member: record for member, record in members.items() if not member_alive(record)}
        for member, record in dead.items():
            remove_member(state, name, member, record, segment)
            removed.append(f"member {member} of segment {name}")
        if len(dead) == len(members):
            destroy(state, name, segment)
            removed.append(f"segment {name}")
        elif dead:
            try:
                apply_rules(state, name, segment)
                write_hosts(state, name)
            except OSError:
                pass
    return removed
