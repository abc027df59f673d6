"""Without a pid namespace the kernel does not kill what the workload leaves behind: init does."""
from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

from conftest import as_nobody, nobody_env, processes_with


def test_daemons_die_with_the_workload_even_rootless_without_a_cgroup(rootless, nobody_dir):
    profile = nobody_dir / "nopid.toml"
    profile.write_text('extends = "untrusted"\n[namespaces]\npid = false\n[filesystem]\nproc = false\n')
    marker = f"30.{uuid.uuid4().int % 10**9:09d}"  # a sleep duration no one else uses
    done = as_nobody([rootless.sandbox, "run", "-q", str(profile), "--", "/bin/sh", "-c",
                      f"(sleep {marker} &); (sleep {marker} &); sleep 0.2; echo started"],
                     cwd=str(nobody_dir), timeout=20, env=nobody_env(nobody_dir))
    assert done.returncode == 0 and done.stdout == "started\n", done.stderr
    time.sleep(0.3)
    assert processes_with(marker) == []
    # and the daemons did run: the same line without the sandbox leaves them behind
    subprocess.run(["/bin/sh", "-c", f"(sleep {marker} &)"], check=True)
    try:
        assert processes_with(marker)
    finally:
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)
