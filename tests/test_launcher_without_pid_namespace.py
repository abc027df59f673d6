"""Without a pid namespace the kernel does not kill what the workload leaves behind: init does."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid

from conftest import processes_with, ROOT, as_nobody, require




def test_daemons_die_with_the_workload_even_rootless_without_a_cgroup():
    require("rootless")
    work = tempfile.mkdtemp(prefix="sbxtest-nopid-", dir="/tmp")
    try:
        os.chmod(work, 0o755)
        profile = os.path.join(work, "nopid.toml")
        with open(profile, "w") as handle:
            handle.write('extends = "untrusted"\n[namespaces]\npid = false\n[filesystem]\nproc = false\n')
        marker = f"30.{uuid.uuid4().int % 10**9:09d}"  # a sleep duration no one else uses
        done = as_nobody([str(ROOT / ".venv/bin/sandbox"), "run", "-q", profile, "--", "/bin/sh", "-c",
                          f"(sleep {marker} &); (sleep {marker} &); sleep 0.2; echo started"],
                         cwd=work, timeout=20, env={"PATH": "/usr/bin:/bin", "HOME": work,
                                                   "SANDBOX_AUDIT_LOG": os.path.join(work, "audit.jsonl")})
        assert done.returncode == 0 and done.stdout == "started\n", done.stderr
        time.sleep(0.3)
        assert processes_with(marker) == []
        # and the daemons did run: the same line without the sandbox leaves them behind
        os.system(f"(sleep {marker} &)")
        try:
            assert processes_with(marker)
        finally:
            os.system(f"pkill -f 'sleep {marker}'")
    finally:
        shutil.rmtree(work, ignore_errors=True)
