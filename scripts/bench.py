"""Benchmarks: sandbox against bubblewrap and runc, in one run, interleaved, medians of repeats.

Ratios are what matter (the machine changes); absolute times are context. Not part of the tests.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import forkchain  # beside this file

ROOT = Path(__file__).resolve().parents[1]
# scripts/bench runs this with the interpreter of .venv-dist, where the wheel is installed: the
# package, the `sandbox` command and the reference interpreter are all the installed ones.
SANDBOX = [str(Path(sys.executable).parent / "sandbox")]


def bwrap_argv(seccomp_fd: int | None, command: list[str]) -> list[str]:
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
            "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin", "--proc", "/proc",
            "--dev", "/dev", "--tmpfs", "/tmp"]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return argv + command


def make_runc_bundle(directory: Path, command: list[str]) -> Path:
    from sandbox.profile import load_profile
    from sandbox.seccomp import export_docker
    bundle = directory / "bundle"
    rootfs = bundle / "rootfs"
    for sub in ("usr", "proc", "dev", "tmp"):
        (rootfs / sub).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")):
        if not (rootfs / link).exists():
            os.symlink(target, rootfs / link)
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = command
    config["process"]["user"] = {"uid": 65534, "gid": 65534}
    config["process"]["capabilities"] = {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")}
    config["root"]["readonly"] = True
    config["mounts"].append({"destination": "/usr", "type": "bind", "source": "/usr",
                             "options": ["rbind", "ro", "nosuid", "nodev"]})
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                             "options": ["nosuid", "nodev", "size=65536k"]})
    config["linux"]["seccomp"] = export_docker(load_profile("untrusted").seccomp)
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def timed(argv: list[str], **kwargs) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kwargs)
    return time.perf_counter() - start


def interleaved(cases: dict, rounds: int, warmup: int = 3) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for round_index in range(warmup + rounds):
        for name, action in cases.items():
            elapsed = action()
            if round_index >= warmup:
                samples[name].append(elapsed)
    return {name: statistics.median(values) for name, values in samples.items()}


def bench_cold(rounds: int, work: Path) -> dict:
    from sandbox.profile import load_profile
    from sandbox.seccomp import compile_bpf
    bpf_file = work / "filter.bpf"
    bpf_file.write_bytes(compile_bpf(load_profile("untrusted").seccomp))
    bundle = make_runc_bundle(work, ["/bin/true"])
    counter = iter(range(10**9))

    def run_bwrap():
        with open(bpf_file, "rb") as handle:
            return timed(bwrap_argv(3, ["/bin/true"]), pass_fds=(handle.fileno(),),
                         preexec_fn=lambda: os.dup2(handle.fileno(), 3))

    cases = {
        "sandbox": lambda: timed(SANDBOX + ["run", "-q", "untrusted", "--", "/bin/true"]),
        "bwrap": run_bwrap,
        "runc": lambda: timed(["runc", "run", "--bundle", str(bundle), f"bench-{os.getpid()}-{next(counter)}"]),
        "python": lambda: timed([sys.executable, "-c", "pass"]),  # the interpreter alone
        "import click": lambda: timed([sys.executable, "-c", "import click"]),  # + our CLI library
    }
    return interleaved(cases, rounds)


def _filter_file() -> str:
    """The untrusted profile's compiled seccomp program, in a file bwrap can read (--seccomp FD)."""
    import sandbox
    from sandbox.seccomp import compile_bpf
    path = os.path.join(tempfile.gettempdir(), f"bench-filter-{os.getpid()}.bpf")
    with open(path, "wb") as handle:
        handle.write(compile_bpf(sandbox.load_profile("untrusted").seccomp))
    return path


def spawn_bwrap_with_filter(filter_path: str, command: list[str]) -> None:
    with open(filter_path, "rb") as handle:  # its own number: this runs from several threads at once
        subprocess.run(bwrap_argv(handle.fileno(), command), check=True, pass_fds=(handle.fileno(),))


def bench_warm(count: int, references: bool = True) -> dict:
    import sandbox
    profile = sandbox.load_profile("untrusted")
    filter_path = _filter_file()
    sandbox.run(profile, ["/bin/true"])
    server = sandbox.ForkServer()
    sandbox.run(profile, ["/bin/true"], fork_server=server)

    def api(**options):
        def run():
            start = time.perf_counter()
            for _ in range(count):
                sandbox.run(profile, ["/bin/true"], **options)
            return (time.perf_counter() - start) / count
        return run

    def spawn_bwrap():  # with the same seccomp filter: the peer does the same work
        start = time.perf_counter()
        for _ in range(count):
            spawn_bwrap_with_filter(filter_path, ["/bin/true"])
        return (time.perf_counter() - start) / count

    def fork_chain():
        # The floor of our process design: the launcher makes B (init), B forks C, C execs;
        # here with no namespace, mount or cgroup work at all.
        start = time.perf_counter()
        for _ in range(count):
            forkchain.chain()
        return (time.perf_counter() - start) / count

    def fork_chain_child_side():
        # The same chain from a fresh process that has imported only what the child side needs:
        # what a fork server (a small helper forking the sandbox processes) would start from.
        import sandbox
        installed = os.path.dirname(os.path.dirname(sandbox.__file__))
        out = subprocess.run([sys.executable, str(ROOT / "scripts/forkchain.py"), installed, str(count)],
                             check=True, capture_output=True, text=True).stdout
        return float(out)

    cases = {"sandbox.run": api(), "sandbox.run, fork server": api(fork_server=server), "bwrap spawn": spawn_bwrap}
    if references:
        cases.update({"fork chain": fork_chain, "fork chain, child side only": fork_chain_child_side})
    try:
        return interleaved(cases, rounds=3, warmup=1)
    finally:
        server.close()
        os.unlink(filter_path)


def bench_api_threads(threads: int, each: int) -> dict:
    """Launches per second from one process with `threads` threads calling sandbox.run() (a CI
    system's worker pool), directly and through one shared ForkServer."""
    import sandbox
    profile = sandbox.load_profile("untrusted")
    server = sandbox.ForkServer()
    sandbox.run(profile, ["/bin/true"], fork_server=server)

    def pool(**options):
        def run():
            workers = [threading.Thread(target=lambda: [sandbox.run(profile, ["/bin/true"], **options)
                                                        for _ in range(each)]) for _ in range(threads)]
            start = time.perf_counter()
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            return threads * each / (time.perf_counter() - start)
        return run
    try:
        results = interleaved({"direct": pool(), "fork server": pool(fork_server=server)}, rounds=3, warmup=1)
    finally:
        server.close()
    results["threads"] = threads
    return results


def bench_big_caller(size_mb: int, count: int) -> dict:
    """Warm launches from a caller of about size_mb MB (a CI system's process, say), in a process of
    its own: direct launches fork it three times, the fork server and bwrap's spawn do not."""
    out = subprocess.run([sys.executable, __file__, "--as-big-caller", str(size_mb), str(count)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def _as_big_caller(size_mb: int, count: int) -> None:
    import resource
    ballast = [str(n) * 3 for n in range(size_mb * 11_000)]  # ~90 bytes of heap objects each
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results = bench_warm(count, references=False)
    results["rss_mb"] = rss_mb
    del ballast
    print(json.dumps(results))




def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _python_descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except OSError:
                pass
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            exe = ""
        if "python" in exe:
            found.append(pid)
        stack += children.get(pid, [])
    return found


def _per_second(count: int, parallel: int, launch):
    """A benchmark case: `count` calls of launch(), `parallel` threads at a time; calls per second."""
    from concurrent.futures import ThreadPoolExecutor

    def run():
        start = time.perf_counter()
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(lambda _: launch(), range(count)))
        return count / (time.perf_counter() - start)
    return run


def bench_throughput(count: int, parallel: int, rounds: int) -> dict:
    """Launches per second: `count` launches of /bin/true, `parallel` at a time, each a process of
    its own (the CLI, as a CI runner starts them), against bwrap (with the same filter) launched
    the same way, interleaved."""
    filter_path = _filter_file()
    batch = functools.partial(_per_second, count, parallel)
    try:
        results = interleaved({
            "sandbox": batch(lambda: subprocess.run(SANDBOX + ["run", "-q", "untrusted", "--", "/bin/true"],
                                                    check=True)),
            "bwrap": batch(lambda: spawn_bwrap_with_filter(filter_path, ["/bin/true"])),
        }, rounds, warmup=1)
    finally:
        os.unlink(filter_path)
    results.update(count=count, parallel=parallel)
    return results


def bench_throughput_api(count: int, parallel: int, rounds: int) -> dict:
    """Launches per second from one process (a CI system's worker pool): `count` launches,
    `parallel` threads, through sandbox.run() directly and through one ForkServer, against bwrap
    (with the same filter) spawned from `parallel` threads the same way, interleaved."""
    import sandbox
    profile = sandbox.load_profile("untrusted")
    server = sandbox.ForkServer()
    sandbox.run(profile, ["/bin/true"], fork_server=server)
    filter_path = _filter_file()
    batch = functools.partial(_per_second, count, parallel)
    try:
        results = interleaved({
            "sandbox.run": batch(lambda: sandbox.run(profile, ["/bin/true"])),
            "sandbox.run, fork server": batch(lambda: sandbox.run(profile, ["/bin/true"], fork_server=server)),
            "bwrap": batch(lambda: spawn_bwrap_with_filter(filter_path, ["/bin/true"])),
        }, rounds, warmup=1)
    finally:
        server.close()
        os.unlink(filter_path)
    results.update(count=count, parallel=parallel)
    return results


def bench_build(rounds: int) -> dict:
    """A real build: zlib's ./configure && make (scripts/fetch-zlib), under `ci` (the whole CLI
    run) against the same build outside any sandbox, both as the build user, interleaved; each
    round starts from a clean tree."""
    source = subprocess.run([str(ROOT / "scripts" / "fetch-zlib")], check=True, capture_output=True,
                            text=True).stdout.strip()
    build_user = 1000  # ci workspaces belong to a build user (root's are not idmapped)
    top = Path(tempfile.mkdtemp(prefix="bench-build-", dir="/tmp"))
    os.chmod(top, 0o755)
    trees = {}
    for name in ("inside", "outside"):
        tree = top / name
        shutil.copytree(source, tree, symlinks=True)
        for directory, dirs, files in os.walk(tree):
            for entry in [directory, *(os.path.join(directory, n) for n in dirs + files)]:
                os.lchown(entry, build_user, build_user)
        trees[name] = tree
    build = "make -s distclean >/dev/null 2>&1; ./configure >/dev/null && make -s >/dev/null"
    as_build_user = ["setpriv", f"--reuid={build_user}", f"--regid={build_user}", "--clear-groups", "--"]
    try:
        return interleaved({
            "ci": lambda: timed(SANDBOX + ["run", "-q", "ci", "--", "/bin/sh", "-c", build], cwd=trees["inside"]),
            "outside": lambda: timed(as_build_user + ["/bin/sh", "-c", build], cwd=trees["outside"]),
        }, rounds, warmup=1)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def bench_concurrent(count: int) -> dict:
    loop = "i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done"
    start = time.perf_counter()
    procs = [subprocess.Popen(SANDBOX + ["run", "-q", "untrusted", "--", "/bin/sh", "-c", loop + "; sleep 1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(count)]
    time.sleep(0.8)
    pss = [sum(_pss_kb(pid) for pid in _python_descendants(p.pid)) for p in procs if p.poll() is None]
    failures = sum(p.wait() != 0 for p in procs)
    elapsed = time.perf_counter() - start
    return {"sandboxes": count, "failures": failures, "seconds": elapsed, "per_second": count / elapsed,
            "launcher_pss_mb_median": statistics.median(pss) / 1024 if pss else None,
            "launcher_pss_mb_max": max(pss) / 1024 if pss else None}


SYSCALL_LOOP = r"""
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < 2000000; i++) syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%f\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
    return 0;
}
"""


def bench_seccomp(work: Path, rounds: int) -> dict:
    source = work / "loop.c"
    source.write_text(SYSCALL_LOOP)
    binary = work / "loop"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(source)], check=True)
    os.chmod(work, 0o755)
    no_filter = work / "nofilter.toml"
    no_filter.write_text('extends = "untrusted"\n[seccomp]\npolicy = "unconfined"\n')

    def inside(profile: str):
        def run():
            out = subprocess.run(SANDBOX + ["run", "-q", "--bind", f"{work}:/bench", profile, "--", "/bench/loop"],
                                 check=True, capture_output=True, text=True).stdout
            return float(out.strip())
        return run

    bpf_file = work / "filter.bpf"  # written by bench_cold: the same compiled default policy

    def in_bwrap(with_filter: bool):
        def run():
            argv = bwrap_argv(3 if with_filter else None, ["/bench/loop"])
            argv[1:1] = ["--ro-bind", str(work), "/bench"]
            with open(bpf_file, "rb") as handle:
                out = subprocess.run(argv, check=True, capture_output=True, text=True, pass_fds=(handle.fileno(),),
                                     preexec_fn=lambda: os.dup2(handle.fileno(), 3)).stdout
            return float(out.strip())
        return run
    # The bwrap pair shows what any seccomp filter costs on this kernel (the entry slow path),
    # which no filter layout can remove: the policy's own share is the difference of the ratios.
    return interleaved({"default policy": inside("untrusted"), "no filter": inside(str(no_filter)),
                        "bwrap, same filter": in_bwrap(True), "bwrap, no filter": in_bwrap(False)},
                       rounds, warmup=1)


# ---- live events (issue 17): what observation costs a build (docs/performance.md, "Live events")

def bench_monitor(work: Path, rounds: int) -> dict:
    """./configure && make of tests/data/tinyz under `ci`, three times in one sandbox, with and
    without --events (every mechanism: seccomp notifications, the proc connector, taskstats,
    fanotify, samples), interleaved. The build's time is the workload's own (`date` before and
    after, inside), what observation costs the workload; `/bin/true` gives the launch's fixed
    cost, whole CLI runs; 1000 short processes, the cost per process observed."""
    build_user = 1000  # ci workspaces belong to a build user (root's are not idmapped)
    base = work / "monitor"
    base.mkdir()
    os.chmod(base, 0o755)
    project = base / "tinyz"
    shutil.copytree(ROOT / "tests/data/tinyz", project)
    for entry in [base, project, *project.iterdir()]:
        os.chown(entry, build_user, build_user)
    events = base / "events.jsonl"
    work = "for i in 1 2 3; do ./configure >/dev/null && make -s >/dev/null && make -s clean; done"
    loop = "i=0; while [ $i -lt 1000 ]; do /bin/true; i=$((i+1)); done"
    timed_inside = 'start=$(date +%s%N); {}; end=$(date +%s%N); echo $((end - start))'

    def argv(command: str, observed) -> list[str]:
        options = ["--events", str(events)] if observed else []
        if observed == "no exec":  # [monitor] processes = false: no exec notification
            options += ["--set", "monitor.processes=false"]
        return SANDBOX + ["run", "-q", *options, "ci", "--", "/bin/sh", "-c", command]

    def run(command: str, observed: bool):
        def action():
            elapsed = timed(argv(command, observed), cwd=project)
            if observed:
                events.unlink()
            return elapsed
        return action

    def build(observed):
        def action():
            out = subprocess.run(argv(timed_inside.format(work), observed), cwd=project, check=True,
                                 capture_output=True, text=True).stdout
            if observed:
                events.unlink()
            return int(out.split()[-1]) / 1e9
        return action
    return interleaved({"build": build(False), "build, events": build(True), "build, events, no exec": build("no exec"),
                        "true": run("/bin/true", False), "true, events": run("/bin/true", True),
                        "1000 processes": run(loop, False), "1000 processes, events": run(loop, True)},
                       rounds, warmup=2)


def bench_verify(rounds: int) -> float:
    return statistics.median(timed(SANDBOX + ["verify", "untrusted"]) for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats (for CI smoke runs)")
    parser.add_argument("--write-docs", action="store_true", help="write docs/performance.md")
    parser.add_argument("--as-big-caller", nargs=2, type=int, metavar=("MB", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.as_big_caller:
        _as_big_caller(*args.as_big_caller)
        return
    rounds = 5 if args.quick else 30
    results: dict = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, "
                                f"kernel {platform.release()}", "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        results["cold"] = bench_cold(rounds, work)
        print("cold CLI start-up to exit (median s):", results["cold"], flush=True)
        results["warm"] = bench_warm(10 if args.quick else 50)
        print("warm launches from one process (s each):", results["warm"], flush=True)
        results["big caller"] = bench_big_caller(400, 5 if args.quick else 25)
        print("warm launches from a big process (s each):", results["big caller"], flush=True)
        results["api threads"] = bench_api_threads(8, 5 if args.quick else 20)
        print("API launches from 8 threads (per s):", results["api threads"], flush=True)
        results["concurrent"] = bench_concurrent(16 if args.quick else 64)
        print("concurrent:", results["concurrent"], flush=True)
        results["throughput"] = bench_throughput(64, 8, 2 if args.quick else 7)
        print("launches per second, 64 launches 8 at a time:", results["throughput"], flush=True)
        results["throughput api"] = bench_throughput_api(64, 8, 2 if args.quick else 7)
        print("API launches per second, 64 launches from 8 threads:", results["throughput api"], flush=True)
        results["build"] = bench_build(2 if args.quick else 7)
        print("zlib build, under ci and outside (median s):", results["build"], flush=True)
        results["seccomp"] = bench_seccomp(work, 3 if args.quick else 7)
        print("seccomp syscall loop (s for 2M getppid):", results["seccomp"], flush=True)
        from bench_engines import run_engines  # sandbox-runtime against runc behind podman and ctr
        runtime = os.path.join(os.path.dirname(sys.executable), "sandbox-runtime")  # the installed wheel's
        results["engines"] = run_engines(3 if args.quick else 15, runtime)
        print("engines, sandbox-runtime against runc (median s):", results["engines"], flush=True)
        results["monitor"] = bench_monitor(work, 5 if args.quick else 21)
        print("live events, build and 1000 processes (median s):", results["monitor"], flush=True)
    try:
        results["verify"] = bench_verify(1 if args.quick else 3)
        print("verify untrusted (s):", results["verify"], flush=True)
    except subprocess.CalledProcessError as exc:
        results["verify"] = None
        print("verify failed:", exc, flush=True)
    text = render(results)
    print(text)
    if args.write_docs:
        # Only the block between the markers is this run's; the prose around it is kept.
        doc = ROOT / "docs/performance.md"
        current = doc.read_text() if doc.exists() else "# Performance\n\n<!-- results -->\n<!-- /results -->\n"
        head, _, rest = current.partition("<!-- results -->")
        _, _, tail = rest.partition("<!-- /results -->")
        doc.write_text(head + "<!-- results -->\n" + text + "\n<!-- /results -->" + tail)
    (ROOT / "bench-results").mkdir(exist_ok=True)
    (ROOT / "bench-results/latest.json").write_text(json.dumps(results, indent=2))


def _row(what: str, ours: str, peer: str, ratio: float, target: str, met: bool | None) -> str:
    verdict = "" if met is None else ("yes" if met else "no")
    return f"| {what} | {ours} | {peer} | {ratio:.2f}x | {target} | {verdict} |"


def targets(r: dict) -> list[str]:
    """The targets of issue 19, each a ratio measured in this run."""
    cold, warm, sec = r["cold"], r["warm"], r["seccomp"]
    rows = ["| what | sandbox | measured against | ratio | target | met |", "|---|---|---|---|---|---|"]
    ratio = cold["sandbox"] / cold["import click"]
    rows.append(_row("cold `sandbox run -q untrusted -- /bin/true`", f"{cold['sandbox']*1000:.1f} ms",
                     f"`python -c \"import click\"`, same interpreter and install, {cold['import click']*1000:.1f} ms",
                     ratio, "at most 1.5x", ratio <= 1.5))
    ratio = cold["sandbox"] / cold["runc"]
    rows.append(_row("the same", f"{cold['sandbox']*1000:.1f} ms", f"runc running the same workload, "
                     f"{cold['runc']*1000:.1f} ms", ratio, "at most 3x", ratio <= 3))
    for name, label in (("sandbox.run", "warm API launch, direct"),
                        ("sandbox.run, fork server", "warm API launch, through a `ForkServer`")):
        ratio = warm[name] / warm["bwrap spawn"]
        rows.append(_row(label, f"{warm[name]*1000:.1f} ms", f"bwrap with the same seccomp filter, spawned from "
                         f"Python, {warm['bwrap spawn']*1000:.1f} ms", ratio, "at most 2x", ratio <= 2))
    through = r.get("throughput")
    if through:
        ratio = through["sandbox"] / through["bwrap"]
        rows.append(_row(f"launches per second, {through['count']} launches {through['parallel']} at a time "
                         "(each a CLI process)", f"{through['sandbox']:.1f}/s",
                         f"bwrap launched the same way, {through['bwrap']:.1f}/s", ratio, "at least 0.5x", ratio >= 0.5))
    through = r.get("throughput api")
    if through:
        for name, label in (("sandbox.run", "directly"), ("sandbox.run, fork server", "through a `ForkServer`")):
            ratio = through[name] / through["bwrap"]
            rows.append(_row(f"launches per second, {through['count']} API launches from {through['parallel']} "
                             f"threads of one process, {label}", f"{through[name]:.1f}/s",
                             f"bwrap spawned from {through['parallel']} threads, {through['bwrap']:.1f}/s", ratio,
                             "at least 0.5x", ratio >= 0.5))
    build = r.get("build")
    if build:
        ratio = build["ci"] / build["outside"]
        rows.append(_row("a real build: zlib `./configure && make` under `ci`", f"{build['ci']:.2f} s",
                         f"the same build outside any sandbox, {build['outside']:.2f} s", ratio, "at most 1.03x",
                         ratio <= 1.03))
    if "bwrap, same filter" in sec:
        ratio = sec["default policy"] / sec["bwrap, same filter"]
        rows.append(_row("seccomp on a syscall loop (2M getppid)", f"{sec['default policy']:.3f} s",
                         f"bwrap with the same filter, {sec['bwrap, same filter']:.3f} s", ratio, "at most 1.0x",
                         ratio <= 1.0))
    engines = r.get("engines") or {}
    for engine, label in (("podman", "`podman run --rm IMAGE true` with sandbox-runtime"),
                          ("ctr", "`ctr run --rm IMAGE ID true` with sandbox-runtime")):
        if f"{engine}, runc" in engines:
            ours, runc = engines[f"{engine}, sandbox-runtime"], engines[f"{engine}, runc"]
            rows.append(_row(label, f"{ours*1000:.0f} ms", f"the same with runc, {runc*1000:.0f} ms", ours / runc,
                             "at most 1.25x", ours / runc <= 1.25))
    return rows


def render(r: dict) -> str:
    cold, warm, conc, sec = r["cold"], r["warm"], r["concurrent"], r["seccomp"]
    overhead = (sec["default policy"] / sec["no filter"] - 1) * 100
    lines = [
        f"Measured {r['date']} on {r['machine']}, from the installed wheel (scripts/bench: one run, "
        "interleaved, medians).", "", *targets(r), "", "Other figures of the same run:", "",
        "| benchmark | sandbox | peer | ratio (sandbox / peer) | note |",
        "|---|---|---|---|---|",
        f"| cold CLI, `run untrusted -- /bin/true` | {cold['sandbox']*1000:.1f} ms | bwrap {cold['bwrap']*1000:.1f} ms "
        f"| {cold['sandbox']/cold['bwrap']:.2f}x | |",
    ]
    if "python" in cold:
        lines.append(f"| (reference) `python -c pass` in the venv | {cold['python']*1000:.1f} ms | | | |")
    if "import click" in cold:
        lines.append(f"| (reference) `python -c 'import click'`, our CLI library alone | "
                     f"{cold['import click']*1000:.1f} ms | runc {cold['runc']*1000:.1f} ms "
                     f"| {cold['import click']/cold['runc']:.2f}x | |")
    lines += [
    ]
    big = r.get("big caller")
    if big:
        for name, label in (("sandbox.run", "direct"), ("sandbox.run, fork server", "through a `ForkServer`")):
            lines.append(f"| warm API launch from a {big['rss_mb']:.0f} MB caller, {label} | {big[name]*1000:.1f} ms "
                         f"| bwrap spawn from it {big['bwrap spawn']*1000:.1f} ms | {big[name]/big['bwrap spawn']:.2f}x | |")
    if "fork chain" in warm:
        lines.append(f"| (reference) 2 chained `os.fork()` of the launcher process, then exec /bin/true, "
                     f"no namespaces | {warm['fork chain']*1000:.1f} ms | bwrap spawn {warm['bwrap spawn']*1000:.1f} ms "
                     f"| {warm['fork chain']/warm['bwrap spawn']:.2f}x | |")
    if "fork chain, child side only" in warm:
        small = warm["fork chain, child side only"]
        lines.append(f"| (reference) the same chain from a process with only the child side imported "
                     f"(what `ForkServer` forks from) | {small*1000:.1f} ms | bwrap spawn "
                     f"{warm['bwrap spawn']*1000:.1f} ms | {small/warm['bwrap spawn']:.2f}x | |")
    threads = r.get("api threads")
    if threads:
        lines.append(f"| API launches from {threads['threads']} threads of one process | {threads['direct']:.0f}/s direct, "
                     f"{threads['fork server']:.0f}/s through a `ForkServer` | | | |")
    lines += [
        f"| seccomp, 2M getppid() | {sec['default policy']:.3f} s | no filter {sec['no filter']:.3f} s "
        f"| {overhead:+.1f}% | (the kernel's own share: the bwrap row) |",
    ]
    if "bwrap, same filter" in sec:
        peer = (sec["bwrap, same filter"] / sec["bwrap, no filter"] - 1) * 100
        lines.append(f"| seccomp in bwrap, same filter | {sec['bwrap, same filter']:.3f} s "
                     f"| no filter {sec['bwrap, no filter']:.3f} s | {peer:+.1f}% | (reference) |")
    lines += [
        f"| {conc['sandboxes']} concurrent sandboxes | {conc['per_second']:.1f} completions/s, {conc['failures']} failures "
        f"| | | |",
        f"| launcher memory per sandbox (PSS) | median {conc['launcher_pss_mb_median'] or 0:.1f} MB, "
        f"max {conc['launcher_pss_mb_max'] or 0:.1f} MB | | | |",
    ]
    if r.get("verify") is not None:
        lines.append(f"| `sandbox verify untrusted` | {r['verify']:.2f} s | | | |")
    mon = r.get("monitor")
    if mon:
        lines += [
            f"| `./configure && make` (tinyz) x3 under `ci`, as the build sees it, `--events` | {mon['build, events']:.3f} s "
            f"| without {mon['build']:.3f} s | {(mon['build, events'] / mon['build'] - 1) * 100:+.1f}% | under 5% |",
            f"| the same, `--events` with `monitor.processes = false` | {mon['build, events, no exec']:.3f} s "
            f"| without {mon['build']:.3f} s | {(mon['build, events, no exec'] / mon['build'] - 1) * 100:+.1f}% | |",
            f"| `run ci -- /bin/true` (cold CLI), `--events` | {mon['true, events'] * 1000:.1f} ms "
            f"| without {mon['true'] * 1000:.1f} ms | {(mon['true, events'] - mon['true']) * 1000:+.1f} ms | (reference) |",
            f"| 1000 processes (`/bin/true` from sh) under `ci`, `--events` | {mon['1000 processes, events']:.3f} s "
            f"| without {mon['1000 processes']:.3f} s | {(mon['1000 processes, events'] - mon['1000 processes']):.3f} ms "
            "each | (reference) |",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
