"""sandbox.program: the garbage collector's schedule for the `sandbox` program, and only for it."""
import gc
import os
import subprocess
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
            "program.startup_done = spy\n"
            "atexit.register(lambda: print(seen['before'], *seen['after']))\n"
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


def test_an_atexit_handler_registered_before_the_program_still_runs():
    """coverage, say, started from a .pth file: the quick exit would come before its handler."""
    done = subprocess.run([sys.executable, "-c", "import atexit, sys; atexit.register(print, 'handler ran'); "
                           "sys.argv = ['sandbox', '--version']; from sandbox.program import entry; "
                           "sys.exit(entry())"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "handler ran"
