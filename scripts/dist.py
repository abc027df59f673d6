"""Build the sdist and the wheel as a release would, and install the wheel into a venv as a user would.

    python scripts/dist.py build OUTDIR              sdist, then the wheel built from that sdist
    python scripts/dist.py venv VENV [--python PY]   VENV with the wheel installed, rebuilt when the
                                                     sources change; prints VENV/bin/sandbox

Run it with the checkout's .venv python (scripts/setup puts setuptools there): the build uses that
setuptools directly, without build isolation, and never writes into the checkout (it builds from a
copy). The wheel is built from the unpacked sdist, so a file the sdist misses breaks the wheel too.
Dependencies come as wheels pinned to the versions installed in the build's own environment (pip's
cache, or the index when a wheel is not cached), then the venv installs from those wheels only.

Used by scripts/demo and scripts/bench (VENV = .venv-dist) and by the tests (tests/conftest.py's
`installed` fixture, a venv in a temporary directory). See docs/packaging.md.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What goes into the sdist (MANIFEST.in) and can change what is installed.
SOURCES = ("pyproject.toml", "MANIFEST.in", "README.md", "sandbox", "profiles")
# Never copied into the build: environments, caches and earlier builds.
_IGNORE = shutil.ignore_patterns(".git", ".venv*", "__pycache__", "*.pyc", "*.egg-info", "build", "dist",
                                 "bench-results", ".pytest_cache", ".hypothesis")
_STAMP = ".sandbox-dist-sources"


class DistError(RuntimeError):
    """A build or install step failed; the message has its output."""


def source_digest(root: Path = ROOT) -> str:
    """A digest of every file that goes into the sdist: a different digest means a new wheel."""
    digest = hashlib.sha256()
    for top in SOURCES:
        path = root / top
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()
                                                      and "__pycache__" not in p.parts and p.suffix != ".pyc")
        for file in files:
            digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def _hook(hook: str, source: Path, outdir: Path) -> Path:
    """Call one PEP 517 hook of setuptools in `source` (a subprocess: the backend changes the cwd)."""
    code = f"from setuptools import build_meta; print(build_meta.{hook}({str(outdir)!r}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True, text=True)
    if done.returncode != 0:
        raise DistError(f"{hook} failed in {source}:\n{done.stdout}{done.stderr}")
    return outdir / done.stdout.strip().splitlines()[-1]


def build(outdir: Path, root: Path = ROOT) -> tuple[Path, Path]:
    """(sdist, wheel) in outdir; the wheel is built from the unpacked sdist."""
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sandbox-build-") as tmp:
        tree = Path(tmp) / "tree"
        shutil.copytree(root, tree, ignore=_IGNORE, symlinks=True)
        sdist = _hook("build_sdist", tree, outdir)
        unpacked = Path(tmp) / "sdist"
        with tarfile.open(sdist) as archive:
            archive.extractall(unpacked, filter="data")
        (top,) = unpacked.iterdir()
        wheel = _hook("build_wheel", top, outdir)
    return sdist, wheel


def wheelhouse(wheel: Path, outdir: Path) -> Path:
    """The wheel and wheels of its dependencies, at the versions this environment has installed."""
    outdir.mkdir(parents=True, exist_ok=True)
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                            capture_output=True, text=True, check=True).stdout
    constraints = outdir / "constraints.txt"
    constraints.write_text("".join(line + "\n" for line in frozen.splitlines() if "==" in line))
    _pip("wheel", "-w", str(outdir), "-c", str(constraints), str(wheel))
    return outdir


def _pip(*args: str, python: str | None = None) -> None:
    argv = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    if python:
        argv += ["--python", python]  # pip of this environment working on another one
    done = subprocess.run(argv + list(args), capture_output=True, text=True)
    if done.returncode != 0:
        raise DistError(f"pip {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


def install(venv: Path, wheels: Path, python: str = sys.executable) -> Path:
    """A fresh venv at `venv`, made by `python`, with the package installed from `wheels` only.

    The venv has no pip of its own (Debian's python3 may lack ensurepip): this environment's pip
    installs into it."""
    if venv.exists():
        if not (venv / "pyvenv.cfg").is_file():
            raise DistError(f"{venv} exists and is not a venv: not replacing it")
        shutil.rmtree(venv)
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
    _pip("install", "--no-index", "--find-links", str(wheels), "sandbox", python=str(venv / "bin" / "python"))
    return venv / "bin" / "sandbox"


def venv(path: Path, python: str = sys.executable, root: Path = ROOT) -> Path:
    """`path` holding the current sources' wheel: rebuilt only when the sources changed."""
    import fcntl
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)  # one builder at a time (demo and bench)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _venv(path, python, root)
    finally:
        os.close(lock)


def _venv(path: Path, python: str, root: Path) -> Path:
    digest = source_digest(root)
    stamp = path / _STAMP
    if stamp.exists() and stamp.read_text().strip() == digest and (path / "bin" / "sandbox").exists():
        return path / "bin" / "sandbox"
    if path.exists() and not (path / "pyvenv.cfg").is_file():
        raise DistError(f"{path} exists and is not a venv: not replacing it")
    print(f"scripts/dist.py: building the wheel and installing it into {path} (the sources changed)",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="sandbox-dist-") as tmp:
        _, wheel = build(Path(tmp) / "dist", root)
        sandbox = install(path, wheelhouse(wheel, Path(tmp) / "wheels"), python)
    stamp.write_text(digest + "\n")
    return sandbox


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="the sdist and the wheel built from it, into OUTDIR")
    p_build.add_argument("outdir", type=Path)
    p_venv = sub.add_parser("venv", help="a venv with the wheel installed, rebuilt when the sources change")
    p_venv.add_argument("path", type=Path)
    p_venv.add_argument("--python", default=sys.executable, help="the interpreter the venv is made from")
    args = parser.parse_args()
    try:
        if args.command == "build":
            for path in build(args.outdir.resolve()):
                print(path)
        else:
            print(venv(args.path.resolve(), args.python))
    except DistError as exc:
        raise SystemExit(f"scripts/dist.py: {exc}") from None


if __name__ == "__main__":
    main()
