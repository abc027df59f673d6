"""Named syscall groups, in the spirit of systemd's SystemCallFilter= sets.

A group name starts with "@"; a group may include other groups. Members that the
installed libseccomp does not know (32-bit-only names are known, brand-new
syscalls may not be) are dropped silently at expansion time, so one table serves
every architecture and libseccomp version.

Deviations from systemd: process_vm_readv/writev sit in @debug (they read and
write another process's memory), io_uring has its own @io-uring group, and
@namespaces, @memory and @sandbox are ours.
"""
from __future__ import annotations

import functools

from . import syscalls as _syscalls


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "@default": ("Calls every program needs: process exit, time, identity queries, futexes", _names("""
        arch_prctl clock_getres clock_getres_time64 clock_gettime clock_gettime64
        clock_nanosleep clock_nanosleep_time64 execve exit exit_group futex futex_time64
        futex_waitv futex_wait futex_wake futex_requeue get_robust_list get_thread_area
        getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32
        getpgid getpgrp getpid getppid getresgid getresgid32 getresuid getresuid32
        getrlimit getsid gettid gettimeofday getuid getuid32 membarrier nanosleep pause
        prlimit64 restart_syscall rseq rt_sigreturn sched_yield set_robust_list
        set_thread_area set_tid_address set_tls sigreturn time ugetrlimit
        @memory""")),
    "@memory": ("Memory mapping of the process itself", _names("""
        brk madvise map_shadow_stack mincore mmap mmap2 mprotect mremap msync munmap
        remap_file_pages cachestat""")),
    "@aio": ("Linux native asynchronous IO (not io_uring)", _names("""
        io_cancel io_destroy io_getevents io_pgetevents io_pgetevents_time64 io_setup
        io_submit""")),
    "@io-uring": ("io_uring, a large kernel attack surface", _names("""
        io_uring_enter io_uring_register io_uring_setup""")),
    "@basic-io": ("Read, write, seek, duplicate and close file descriptors", _names("""
        _llseek close close_range dup dup2 dup3 lseek pread64 preadv preadv2 pwrite64
        pwritev pwritev2 read readv write writev""")),
    "@chown": ("Change file ownership", _names("""
        chown chown32 fchown fchown32 fchownat lchown lchown32""")),
    "@clock": ("Set the system clock", _names("""
        adjtimex clock_adjtime clock_adjtime64 clock_settime clock_settime64 settimeofday
        stime""")),
    "@cpu-emulation": ("CPU emulation: segment descriptors, vm86, endianness", _names("""
        modify_ldt subpage_prot switch_endian vm86 vm86old""")),
    "@debug": ("Debugging, tracing, performance monitoring, other processes' memory", _names("""
        lookup_dcookie perf_event_open pidfd_getfd process_madvise process_vm_readv
        process_vm_writev ptrace kcmp rtas s390_runtime_instr sys_debug_setcontext""")),
    "@file-system": ("File system operations", _names("""
        access chdir chmod creat faccessat faccessat2 fallocate fchdir fchmod fchmodat
        fchmodat2 fcntl fcntl64 fgetxattr flistxattr flock fremovexattr fsetxattr fstat
        fstat64 fstatat64 fstatfs fstatfs64 ftruncate ftruncate64 futimesat getcwd
        getdents getdents64 getxattr inotify_add_watch inotify_init inotify_init1
        inotify_rm_watch lgetxattr link linkat listxattr llistxattr lremovexattr
        lsetxattr lstat lstat64 mkdir mkdirat mknod mknodat newfstatat oldfstat oldlstat
        oldstat open openat openat2 readlink readlinkat removexattr rename renameat
        renameat2 rmdir setxattr stat stat64 statfs statfs64 statx symlink symlinkat
        truncate truncate64 umask unlink unlinkat utime utimensat utimensat_time64 utimes
        readdir""")),
    "@io-event": ("Event loops: poll, select, epoll, eventfd", _names("""
        _newselect epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait
        epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 poll ppoll ppoll_time64
        pselect6 pselect6_time64 select""")),
    "@ipc": ("Pipes, memfd, SysV IPC and POSIX message queues", _names("""
        ipc memfd_create mq_getsetattr mq_notify mq_open mq_timedreceive
        mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink msgctl msgget
        msgrcv msgsnd pipe pipe2 semctl semget semop semtimedop semtimedop_time64 shmat
        shmctl shmdt shmget""")),
    "@keyring": ("Kernel keyring", _names("add_key keyctl request_key")),
    "@memlock": ("Lock memory into RAM", _names("mlock mlock2 mlockall munlock munlockall")),
    "@module": ("Load and unload kernel modules", _names("delete_module finit_module init_module")),
    "@mount": ("Mount, unmount and change the root of file systems", _names("""
        chroot fsconfig fsmount fsopen fspick mount mount_setattr move_mount open_tree
        pivot_root umount umount2""")),
    "@namespaces": ("Create or join namespaces (clone flags are filtered separately)", _names("""
        setns unshare""")),
    "@network-io": ("Sockets: create, connect, send, receive", _names("""
        accept accept4 bind connect getpeername getsockname getsockopt listen recv
        recvfrom recvmmsg recvmmsg_time64 recvmsg send sendmmsg sendmsg sendto setsockopt
        shutdown socket socketcall socketpair""")),
    "@obsolete": ("Unusual, obsolete or unimplemented calls", _names("""
        _sysctl afs_syscall bdflush break create_module ftime get_kernel_syms getpmsg gtty
        idle lock mpx prof profil putpmsg query_module security sgetmask ssetmask stty
        sysfs tuxcall ulimit uselib ustat vserver""")),
    "@pkey": ("Memory protection keys", _names("pkey_alloc pkey_free pkey_mprotect")),
    "@privileged": ("Calls that need a capability to do anything useful", _names("""
        @chown @clock @module @raw-io @reboot @swap _sysctl acct bpf capset chroot
        fanotify_init nfsservctl open_by_handle_at pivot_root quotactl quotactl_fd
        setdomainname setfsuid setfsuid32 setgroups setgroups32 sethostname setresuid
        setresuid32 setreuid setreuid32 setuid setuid32 syslog vhangup""")),
    "@process": ("Create, signal and wait for processes and threads", _names("""
        capget clone clone3 execveat fork getrusage kill pidfd_open pidfd_send_signal
        prctl process_mrelease rt_sigqueueinfo rt_tgsigqueueinfo setns swapcontext tgkill
        times tkill unshare vfork wait4 waitid waitpid""")),
    "@raw-io": ("Raw I/O port and PCI access", _names("""
        ioperm iopl pciconfig_iobase pciconfig_read pciconfig_write s390_pci_mmio_read
        s390_pci_mmio_write""")),
    "@reboot": ("Reboot and kexec", _names("kexec_file_load kexec_load reboot")),
    "@resources": ("Change scheduling, NUMA placement and resource limits", _names("""
        ioprio_set mbind migrate_pages move_pages nice sched_setaffinity sched_setattr
        sched_setparam sched_setscheduler set_mempolicy set_mempolicy_home_node
        setpriority setrlimit""")),
    "@sandbox": ("Self-sandboxing: seccomp and landlock (can only drop rights)", _names("""
        landlock_add_rule landlock_create_ruleset landlock_restrict_self seccomp""")),
    "@setuid": ("Change user and group credentials", _names("""
        setgid setgid32 setgroups setgroups32 setregid setregid32 setresgid setresgid32
        setresuid setresuid32 setreuid setreuid32 setuid setuid32""")),
    "@signal": ("Signal handling", _names("""
        rt_sigaction rt_sigpending rt_sigprocmask rt_sigsuspend rt_sigtimedwait
        rt_sigtimedwait_time64 sigaction sigaltstack signal signalfd signalfd4 sigpending
        sigprocmask sigsuspend""")),
    "@swap": ("Enable and disable swap", _names("swapoff swapon")),
    "@sync": ("Flush files and memory to storage", _names("""
        fdatasync fsync msync sync sync_file_range sync_file_range2 syncfs""")),
    "@timer": ("Timers and alarms", _names("""
        alarm getitimer setitimer timer_create timer_delete timer_getoverrun timer_gettime
        timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime
        timerfd_gettime64 timerfd_settime timerfd_settime64 times""")),
    "@system-service": ("What an ordinary service or command-line program uses", _names("""
        @aio @basic-io @chown @default @file-system @io-event @ipc @keyring @memlock
        @network-io @process @resources @setuid @signal @sync @timer brk capget capset
        copy_file_range fadvise64 fadvise64_64 flock get_mempolicy getcpu getpriority
        getrandom ioctl ioprio_get kcmp madvise mprotect mremap name_to_handle_at
        oldolduname olduname personality readahead readdir remap_file_pages
        sched_get_priority_max sched_get_priority_min sched_getaffinity sched_getattr
        sched_getparam sched_getscheduler sched_rr_get_interval
        sched_rr_get_interval_time64 sched_yield sendfile sendfile64 setfsgid setfsgid32
        setfsuid setfsuid32 setpgid setsid splice sysinfo tee uname userfaultfd
        vmsplice""")),
}


def is_group(name: str) -> bool:
    return name.startswith("@")


def members(name: str) -> tuple[str, ...]:
    """Direct members (names and sub-groups) as written."""
    return GROUPS[name][1]


@functools.lru_cache(maxsize=None)
def expand_group(name: str) -> frozenset[str]:
    """All syscall names in a group, recursively, limited to names libseccomp knows."""
    out: set[str] = set()
    for member in GROUPS[name][1]:
        if is_group(member):
            out |= expand_group(member)
        elif _syscalls.is_known(member):
            out.add(member)
    return frozenset(out)


def expand(names) -> list[str]:
    """Expand a mix of names and groups, keeping first-seen order, dropping unknown names."""
    seen: dict[str, None] = {}
    for name in names:
        if is_group(name):
            for member in sorted(expand_group(name)):
                seen.setdefault(member)
        elif _syscalls.is_known(name):
            seen.setdefault(name)
    return list(seen)
