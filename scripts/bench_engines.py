"""sandbox-runtime against runc behind the engines: `podman run --rm IMAGE true` and `ctr run --rm`,
interleaved in one run (each engine with its own storage and daemon in a temp dir, as the tests
start them). scripts/bench.py runs it with the checkout's .venv (the engines' helpers are the
tests', which need pytest), timing the `sandbox-runtime` of the installed wheel it passes:
`python scripts/bench_engines.py ROUNDS [RUNTIME] [--json]`."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

IMAGE = "localhost/sbxbench:latest"


def _timed(argv: list[str], env=None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                   env=env)
    return time.perf_counter() - start


def bench_engines(rounds: int, warmup: int = 3, runtime: str | None = None) -> dict:
    """Median seconds of each case; {} when the engines are not installed. `runtime`: the
    sandbox-runtime to time (default: the checkout's, through the system python)."""
    if not all(shutil.which(tool) for tool in ("podman", "conmon", "containerd", "ctr", "runc")):
        return {}
    from oci_helpers import make_rootfs, portable_runtime
    import test_oci_engines as engines
    top = Path(tempfile.mkdtemp(prefix="bench-engines-", dir="/tmp"))
    os.chmod(top, 0o755)
    podman = containerd = None
    try:
        make_rootfs(top)
        with tarfile.open(top / "rootfs.tar", "w") as tar:
            tar.add(top / "rootfs", arcname=".")
        runtime = runtime or str(portable_runtime(top))
        runc = shutil.which("runc")
        podman = engines.Podman(top / "podman", runtime, str(top / "rootfs.tar"))
        archive = top / "oci.tar"
        podman("save", "--format", "oci-archive", "-o", str(archive), engines.IMAGE)
        containerd = engines.Containerd(top / "containerd", runtime)
        subprocess.run(containerd.ctr + ["image", "import", str(archive)], check=True, capture_output=True)
        counter = iter(range(10 ** 9))

        def podman_run(binary):
            return lambda: _timed(podman.base + ["--runtime", binary, "run", "--rm", "--network", "none",
                                                 engines.IMAGE, "true"], env=podman.env)

        def ctr_run(binary):
            return lambda: _timed(containerd.ctr + ["run", "--rm", "--runc-binary", binary, engines.IMAGE,
                                                    f"bench-{os.getpid()}-{next(counter)}", "true"])
        cases = {"podman, runc": podman_run(runc), "podman, sandbox-runtime": podman_run(runtime),
                 "ctr, runc": ctr_run(runc), "ctr, sandbox-runtime": ctr_run(runtime)}
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for index in range(warmup + rounds):
            for name, action in cases.items():
                elapsed = action()
                if index >= warmup:
                    samples[name].append(elapsed)
        import statistics
        return {name: statistics.median(values) for name, values in samples.items()}
    finally:
        if containerd is not None:
            containerd.close()
        if podman is not None:
            podman.close()
        shutil.rmtree(top, ignore_errors=True)


def render_engines(results: dict) -> list[str]:
    if not results:
        return []
    lines = []
    for engine, label in (("podman", "`podman run --rm IMAGE true`"), ("ctr", "`ctr run --rm IMAGE ID true`")):
        ours, runc = results[f"{engine}, sandbox-runtime"], results[f"{engine}, runc"]
        lines.append(f"| {label} with sandbox-runtime | {ours*1000:.0f} ms | runc {runc*1000:.0f} ms "
                     f"| {ours/runc:.2f}x | at most 1.25x |")
    return lines


def run_engines(rounds: int, runtime: str) -> dict:
    """bench_engines() in a process of the checkout's .venv (for scripts/bench.py, whose own
    interpreter is the installed wheel's, without the tests' dependencies)."""
    import json
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), __file__, str(rounds), runtime, "--json"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        print(f"engines benchmark failed: {done.stderr.strip()[-500:]}", file=sys.stderr)
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--json"]
    figures = bench_engines(int(args[0]) if args else 10, runtime=args[1] if len(args) > 1 else None)
    if "--json" in sys.argv:
        import json
        print(json.dumps(figures))
    else:
        print(figures)
        print("\n".join(render_engines(figures)))
