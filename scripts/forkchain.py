"""The floor of the launcher's process layout, for scripts/bench.py: a process forks, its child
forks and that child execs /bin/true (launcher -> init -> workload, the layout of a launch from a
process with one thread), with no namespace, mount or cgroup work. Imports nothing but os, so it
can run in a small process."""
import os


def chain(depth: int = 2) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            if depth > 1:
                chain(depth - 1)
                os._exit(0)
            os.execv("/bin/true", ["/bin/true"])
        finally:
            os._exit(127)
    os.waitpid(pid, 0)


if __name__ == "__main__":  # python forkchain.py ROOT COUNT: per chain, after importing the child side
    import sys
    import time
    sys.path.insert(0, sys.argv[1])
    import sandbox.child  # noqa: F401  (what a fork server would hold in memory)
    count = int(sys.argv[2])
    start = time.perf_counter()
    for _ in range(count):
        chain()
    print((time.perf_counter() - start) / count)
