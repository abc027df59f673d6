"""The package as users get it: the sdist, the wheel built from that sdist, and a fresh venv with the
wheel installed, outside the checkout (tests/conftest.py's `installed`, built once per session).

Everything the tool reads at run time must be in them: the built-in profiles (profiles/ in the
source, sandbox/builtin_profiles once installed), the schema, the standalone probe. Every command
here runs from a directory that is not the checkout, with an environment that cannot point back at
it, so a file that only the checkout has cannot make these tests pass.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, require

PROFILES = sorted(p.name for p in (ROOT / "profiles").glob("*.toml"))


def _package_files() -> list[str]:
    """What the checkout's package holds (sources and data), as paths relative to ROOT."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "sandbox").rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


@pytest.fixture
def elsewhere(tmp_path):
    """(cwd, env) for commands run as a user would, away from the checkout."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
           "SANDBOX_AUDIT_LOG": str(tmp_path / "audit.jsonl"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return tmp_path, env


def _run(argv: list[str], elsewhere, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    directory, env = elsewhere
    return subprocess.run(argv, cwd=str(cwd or directory), env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_the_wheel_carries_the_package_the_profiles_and_the_schema(installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    missing = [f for f in _package_files() if f not in names]
    packages = sorted({os.path.dirname(f).replace("/", ".") for f in missing if f.endswith(".py")})
    assert not missing, (f"not in the wheel: {missing}" + (f"; add {packages} to [tool.setuptools] packages "
                                                           "in pyproject.toml" if packages else ""))
    assert {f"sandbox/builtin_profiles/{name}" for name in PROFILES} <= names
    assert "sandbox/schema/profile.schema.json" in names
    assert not [n for n in names if n.startswith(("profiles/", "tests/", "docs/")) or "__pycache__" in n]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(installed.wheel) as wheel:
        assert "sandbox = sandbox.program:entry" in wheel.read(entry_points).decode()


def test_the_sdist_is_the_source_tree(installed):
    with tarfile.open(installed.sdist) as sdist:
        top = sdist.getnames()[0].split("/")[0]
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    wanted = {"pyproject.toml", "MANIFEST.in", "README.md", *_package_files(),
              *(f"profiles/{name}" for name in PROFILES)}
    assert wanted <= names, f"not in the sdist: {sorted(wanted - names)}"
    assert {"tests/conftest.py", "docs/packaging.md", "scripts/dist.py"} <= names
    assert top == installed.sdist.name.removesuffix(".tar.gz")
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.startswith(".venv")]


def test_the_install_runs_from_its_venv_not_from_the_checkout(installed, elsewhere):
    done = _run([installed.python, "-c", "import json, sandbox; from sandbox.profile.load import _profile_dirs; "
                 "print(json.dumps([sandbox.__file__, {k: str(v) for k, v in sandbox.builtin_profile_names().items()},"
                 " _profile_dirs()]))"], elsewhere)
    assert done.returncode == 0, done.stderr
    module, profiles, dirs = json.loads(done.stdout)
    venv = str(installed.venv) + "/"
    assert module.startswith(venv)
    assert sorted(profiles) == [name.removesuffix(".toml") for name in PROFILES]
    assert all(path.startswith(venv) and "/sandbox/builtin_profiles/" in path for path in profiles.values())
    assert not [d for d in dirs if d.startswith(str(ROOT))]  # never the checkout's profiles/


def test_sandbox_profiles_lists_the_builtins(installed, elsewhere):
    done = _run([installed.sandbox, "profiles"], elsewhere)
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert {"untrusted", "ci"} <= set(listed)
    assert "(unreadable)" not in done.stdout


def test_sandbox_run_untrusted(installed, elsewhere):
    require("root", "userns")
    done = _run([installed.sandbox, "run", "-q", "untrusted", "--", "/bin/echo", "ok"], elsewhere)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")


def test_sandbox_run_ci_in_a_workspace(installed, elsewhere, world_dir):
    require("root", "userns")
    workspace = world_dir / "project"
    workspace.mkdir()
    (workspace / "input.txt").write_text("from the host\n")
    os.chown(workspace, 1000, 1000)  # a build user's checkout, as in CI: root's is not idmapped (issue 20)
    done = _run([installed.sandbox, "run", "-q", "ci", "--", "/bin/sh", "-c",
                 "pwd; cat input.txt; echo built > output.txt"], elsewhere, cwd=workspace)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "/workspace\nfrom the host\n"
    assert (workspace / "output.txt").read_text() == "built\n"


def test_sandbox_verify_untrusted(installed, elsewhere):
    require("root", "userns", "system_python")
    done = _run([installed.sandbox, "verify", "--json", "untrusted"], elsewhere, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout[-2000:]
    results = json.loads(done.stdout)["results"]
    assert results and not [r["id"] for r in results if r["status"] == "FAIL"]


def test_the_installed_probe_runs_alone_with_the_system_python(installed, tmp_path):
    """Copied anywhere on its own (into someone else's container, say) it needs no package."""
    require("system_python")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(installed.probe, alone / "probe.py")
    done = subprocess.run(["/usr/bin/python3", "-I", "probe.py", "--json"], cwd=str(alone), capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL)
    assert done.stdout, done.stderr
    report = json.loads(done.stdout)
    assert "Traceback" not in done.stderr
    assert len(report["results"]) > 50
    assert done.returncode == (1 if report["summary"]["failed"] else 0)
    by_id = {r["id"]: r["status"] for r in report["results"]}
    assert by_id["ns.pid"] == "FAIL"  # on the host, in the initial pid namespace: it does look


def test_a_profiles_directory_of_another_distribution_is_not_ours(installed, elsewhere):
    """site-packages/profiles (beside the installed package) belongs to whoever put it there."""
    done = _run([installed.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], elsewhere)
    foreign = Path(done.stdout.strip()) / "profiles"
    assert str(foreign).startswith(str(installed.venv)) and not foreign.exists()
    foreign.mkdir()
    try:
        (foreign / "untrusted.toml").write_text('description = "not ours"\n[namespaces]\nnetwork = false\n')
        (foreign / "foreign.toml").write_text('description = "not ours"\n')
        done = _run([installed.sandbox, "profiles"], elsewhere)
        assert done.returncode == 0 and "not ours" not in done.stdout, done.stdout
        assert "foreign" not in done.stdout
    finally:
        shutil.rmtree(foreign)
