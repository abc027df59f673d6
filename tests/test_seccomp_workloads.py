"""Both built-in policies must run ordinary work: sh, coreutils, python3, gcc, make, git."""
import os
import shutil
import sys

import pytest

from sandbox.seccomp import compile_bpf, default_policy, import_docker, strict_policy
from sandbox.seccomp.probe import run_under

MOBY = "/work/shared/interop/moby-default-seccomp.json"
PYTHON = shutil.which("python3", path="/usr/bin:/usr/local/bin") or sys.executable

SCRIPT = r"""
set -eu
cd "$1"
echo hello | tr a-z A-Z | grep -q HELLO
cp /etc/hostname x && mv x y && rm y && mkdir -p d/e && rmdir d/e d
mkdir tree && echo t > tree/f && chmod 750 tree && cp -a tree copy && cp -p tree/f g && install -m 755 g h
tar -cf t.tar tree && mkdir un && tar -xpf t.tar -C un && test -f un/tree/f && rm -r tree copy un t.tar g h
sort </etc/passwd | head -n 1 >/dev/null && date >/dev/null && ls -la >/dev/null
printf '#include <stdio.h>\nint main(void){puts("built");return 0;}\n' > hello.c
gcc -O1 -o hello hello.c
./hello
printf 'all: out\nout: hello.c\n\tcp hello.c out\n' > Makefile
make -s
test -f out
git init -q repo
cd repo
git config user.email t@example.com && git config user.name t
echo x > f && git add f && git commit -qm first
git log --oneline | wc -l
cd ..
"$2" - <<'EOF'
import subprocess, threading
results = []
threads = [threading.Thread(target=lambda: results.append(1)) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
out = subprocess.run(["echo", "child"], capture_output=True, text=True).stdout.strip()
print("python", sum(results), out)
EOF
"""


def needs(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    return pytest.mark.skipif(bool(missing), reason=f"missing {missing}")


@needs("sh", "gcc", "make", "git")
@pytest.mark.parametrize("policy", [default_policy(), strict_policy()], ids=["default", "strict"])
def test_everyday_tools_run_under_policy(policy, tmp_path):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C"}
    result = run_under(compile_bpf(policy, use_cache=False), ["sh", "-c", SCRIPT, "sh", str(tmp_path), PYTHON],
                       capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["built", "1", "python", "4", "child"]


@needs("sh")
@pytest.mark.skipif(not os.path.exists(MOBY), reason="needs the moby profile")
def test_shell_runs_under_imported_docker_policy(tmp_path):
    bpf = compile_bpf(import_docker(MOBY), use_cache=False)
    result = run_under(bpf, ["sh", "-c", "echo ok | tr a-z A-Z; ls / >/dev/null"],
                       capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout) == (0, "OK\n")
