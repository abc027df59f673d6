"""sandbox.program: the garbage collector's schedule for the `sandbox` program, and only for it."""
import gc
import os
import subprocess
import sys

from sandbox import program


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
