"""sandbox.execfail.explain: why execve failed, on real files and real execve errors (issue 21,
item 12), and inside a sandbox, where it runs (under seccomp and Landlock, in the sandbox's root)."""
from __future__ import annotations

import errno
import os
import shutil
import textwrap

import pytest

from conftest import require, run_in_child
from sandbox.execfail import explain

LOADER = "/lib64/ld-linux-x86-64.so.2"


def exec_errno(path: str) -> int:
    """The errno a real execve of path gives (in a child)."""
    def child():
        try:
            os.execv(path, [path])
        except OSError as exc:
            return exc.errno
    return run_in_child(child)


def test_script_whose_interpreter_is_missing(tmp_path):
    script = tmp_path / "tool"
    script.write_text("#!/usr/local/bin/no-such-interp -x\necho hi\n")
    script.chmod(0o755)
    err = exec_errno(str(script))
    assert err == errno.ENOENT
    assert explain(str(script), err, "") == f"{script}: bad interpreter /usr/local/bin/no-such-interp (not inside the sandbox)"
    # found through PATH, as execvpe would
    assert explain("tool", err, f"/nonexistent:{tmp_path}") == explain(str(script), err, "")


def test_dangling_symbolic_link(tmp_path):
    link = tmp_path / "tool"
    link.symlink_to("/opt/nowhere/tool")
    assert exec_errno(str(link)) == errno.ENOENT
    assert explain("tool", errno.ENOENT, str(tmp_path)) == \
        f"{link}: broken symbolic link to /opt/nowhere/tool (not inside the sandbox)"


def test_elf_whose_loader_is_missing(tmp_path):
    if not os.path.exists(LOADER):
        pytest.skip("not an x86_64 glibc system")
    binary = tmp_path / "true"
    data = bytearray(open("/bin/true", "rb").read())
    at = data.index(LOADER.encode())
    data[at:at + len(LOADER)] = b"/lib64/ld-linux-x86-64.so.X"  # same length: a valid ELF, another loader
    binary.write_bytes(bytes(data))
    binary.chmod(0o755)
    assert exec_errno(str(binary)) == errno.ENOENT
    assert explain(str(binary), errno.ENOENT) == f"{binary}: its dynamic loader /lib64/ld-linux-x86-64.so.X is not inside the sandbox"
    assert explain("/bin/true", errno.ENOENT) is None  # nothing missing: no story to tell


def test_not_found_and_other_errors(tmp_path):
    assert explain("no-such-command-anywhere", errno.ENOENT, "/usr/bin:/bin") is None
    plain = tmp_path / "data"
    plain.write_text("x")
    plain.chmod(0o644)
    assert exec_errno(str(plain)) == errno.EACCES
    assert explain(str(plain), errno.EACCES) == f"{plain}: not executable (mode 0644)"
    assert explain(str(tmp_path), errno.EACCES) == f"{tmp_path}: is a directory"
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01binary junk")
    garbage.chmod(0o755)
    assert exec_errno(str(garbage)) == errno.ENOEXEC
    assert "exec format error" in explain(str(garbage), errno.ENOEXEC)


def test_inside_a_sandbox(world_dir, sandbox_cli):
    """Where it runs for real: after the workload's execve failed, with the sandbox's root (the
    interpreter exists on the host, not inside), seccomp and Landlock in force."""
    require("userns", "system_python")
    module = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sandbox", "execfail.py")
    shutil.copy(module, world_dir / "execfail.py")
    interpreter = world_dir / "interp"
    interpreter.write_text("#!/bin/sh\n")
    interpreter.chmod(0o755)
    (world_dir / "job").mkdir()
    script = world_dir / "job" / "tool"
    script.write_text(f"#!{interpreter}\n")
    script.chmod(0o755)
    for path in (world_dir / "execfail.py", world_dir / "job"):
        os.chmod(path, 0o755)
    code = textwrap.dedent("""
        import os, sys
        sys.path.insert(0, "/lib-x")
        import execfail
        try:
            os.execvp("tool", ["tool"])
        except OSError as exc:
            print(execfail.explain("tool", exc.errno, os.environ["PATH"]))
    """)
    done = sandbox_cli("run", "-q", "--bind", f"{world_dir / 'job'}:/job", "--bind", f"{world_dir}/execfail.py:/lib-x/execfail.py",
                       "--env", "PATH=/job:/usr/bin", "untrusted", "--", "/usr/bin/python3", "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"/job/tool: bad interpreter {interpreter} (not inside the sandbox)"
