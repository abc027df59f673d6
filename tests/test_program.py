"""sandbox.program: the garbage collector's schedule for the `sandbox` program, and only for it."""
import gc
import os
import subprocess

import pytest
import sys

from sandbox import program

from conftest import require


def test_outside_the_program_the_collector_is_left_alone():
    frozen = gc.get_freeze_count()
    assert gc.isenabled()
    program.startup_done()
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_a_run_freezes_start_up_and_collects_again_afterwards():
    code = ("import atexit, gc, sys\n"
            "from sandbox import program\n"
            "seen = {}\n"
            "import sandbox.cli_run as cli_run\n"
            "real = program.startup_done\n"
            "def spy():\n"
            "    seen['before'] = gc.isenabled()\n"
            "    real()\n"
            "    seen['after'] = gc.isenabled(), gc.get_freeze_count()\n"
            "    print(seen['before'], *seen['after'], flush=True)\n"
            "program.startup_done = spy\n"
            "sys.argv = ['sandbox', 'run', '-q', 'untrusted', '--', '/bin/true']\n"
            "program.entry()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    before, after, frozen = done.stdout.split()
    assert (before, after) == ("False", "True")  # no collections in start-up, normal ones during the run
    assert int(frozen) > 5000  # what start-up built is out of reach of those collections


def _sandbox(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "sandbox", *args], capture_output=True, **kwargs)


def test_exit_statuses_survive_the_quick_exit():
    require("userns")
    assert _sandbox("run", "-q", "untrusted", "--", "/bin/sh", "-c", "exit 3").returncode == 3
    assert _sandbox("run", "-q", "untrusted", "--", "/bin/sh", "-c", "kill -TERM $$").returncode == 128 + 15
    assert _sandbox("lint", "no-such-profile").returncode == 125
    assert _sandbox("no-such-command").returncode == 125
    assert _sandbox("--version").returncode == 0


def test_all_output_is_flushed_before_the_quick_exit():
    """Compared with the same command run through cli.main(), which leaves Python the usual way."""
    quick = _sandbox("schema")
    usual = subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'sandbox'; "
                            "from sandbox.cli import main; main()", "schema"], capture_output=True)
    assert quick.returncode == usual.returncode == 0
    assert len(quick.stdout) > 10_000 and quick.stdout == usual.stdout


@pytest.mark.parametrize("how", ["coverage", "SANDBOX_NO_FAST_EXIT"])
def test_an_atexit_handler_registered_before_the_program_still_runs(how, tmp_path):
    """coverage, started from a .pth file before the program: the quick exit would come before its
    handler, so with coverage loaded (or SANDBOX_NO_FAST_EXIT set) the interpreter ends as usual.
    (atexit has no public way to count the handlers registered before us.)"""
    (tmp_path / "coverage.py").write_text("")  # stands for the real package: only its name counts
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    preload = "import coverage; " if how == "coverage" else ""
    if how == "SANDBOX_NO_FAST_EXIT":
        env["SANDBOX_NO_FAST_EXIT"] = "1"
    done = subprocess.run([sys.executable, "-c", f"{preload}import atexit, sys; atexit.register(print, 'handler ran'); "
                           "sys.argv = ['sandbox', '--version']; from sandbox.program import entry; "
                           "sys.exit(entry())"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "handler ran"
