"""Sequences of runs against one workspace, as a CI system makes them (issue 22 part 1, issue 20).

A hostile first run leaves symlinks in its read-write workspace; an ordinary second run must not
follow them into the host: `--bind ./out:/out:rw` where run 1 made `out -> /srv/secret`, `cd pkg`
where run 1 replaced `pkg` by a symlink, a symlink as a parent component. Each case runs as root
(workspace owned by a build user, the secret root's) and rootless (workspace and secret the
caller's own: the secret is outside what the sandbox was given), under `ci` and through
`untrusted --bind ...:rw`. Every path is in a tree the test makes under /tmp.

Run 1 is an attack: it starts with test_attacks' isolation gate and plants nothing unless it runs
in its own pid, mount and user namespaces with no uid mapped to host 0. Run 2 is the ordinary
command of the issue (`cat /out/secret; cp /usr/bin/id /out/s; chmod 4755 /out/s`); the launch must
refuse it before anything starts, with one line naming the symlink, its owner and the real path.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import BUILD_USER, ROOT, as_nobody, nobody_install, require
from test_attacks import GATE, NOT_ISOLATED, PY, _host_ns

SANDBOX = str(ROOT / ".venv" / "bin" / "sandbox")
NOBODY = 65534
SECRET = "root only"
RUN2 = "cat /out/secret; cp /usr/bin/id /out/s; chmod 4755 /out/s"
RUN2_IN_PKG = "cat secret; cp /usr/bin/id s; chmod 4755 s"


def gated(shell: str) -> list[str]:
    """`-- sh -c SHELL`, but only after the isolation gate (needs --env SBX_HOST_NS, see HOST_NS):
    should a launch that must be refused go ahead, the attack still runs only in a checked sandbox."""
    return ["--", PY, "-c", GATE + f"import subprocess\nsys.exit(subprocess.run(['/bin/sh', '-c', {shell!r}]).returncode)"]


def host_ns() -> list[str]:
    return ["--env", f"SBX_HOST_NS={_host_ns()}"]

PLANT = textwrap.dedent(r"""
    import shutil
    for name, target in json.loads(os.environ["SBX_PLANT"]):
        path = "/workspace/" + name
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        os.symlink(target, path)
    print(json.dumps({"gate": gate, "planted": sorted(os.listdir("/workspace"))}))
""")

# Run 1 under each built-in profile with a workspace: ci's ${CWD}, or a command-line rw bind.
FIRST_RUN = {"ci": ["ci"], "untrusted --bind": ["--bind", "{ws}:/workspace:rw", "untrusted"]}
# Run 2: the bind from the command line, under both profiles.
SECOND_RUN = {"ci": ["ci"], "untrusted": ["untrusted"]}


@dataclass
class Tree:
    base: Path
    workspace: Path
    secret: Path  # a directory the sandbox must never reach, holding the file "secret"
    owner: int  # of the workspace (and, rootless, of the secret)
    rootless: bool
    sandbox: str  # the launcher: rootless, the installed one (uid 65534 may not enter the checkout)

    def run(self, *args: str, cwd: Path | None = None, shell: str | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
        """`sandbox ARGS` from the workspace, as root or as the rootless caller; with shell, `sh -c
        SHELL` runs it instead (for `cd pkg && exec sandbox ...`)."""
        cwd = str(cwd or self.workspace)
        env = {"SANDBOX_AUDIT_LOG": str(self.base / "state" / "audit.jsonl"), **(env or {})}
        if self.rootless and not shell:
            return as_nobody([self.sandbox, *args], cwd=cwd, timeout=60, env={"PATH": "/usr/bin:/bin", **env})
        argv = [self.sandbox, *args]
        if self.rootless:  # setpriv execs the launcher itself (the venv's python may be where
            # only its capabilities reach); the shell's `cd` leaves $PWD as a user's shell would
            argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", *argv]
        if shell:
            argv = ["/bin/sh", "-c", shell, "sh", *argv]
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60,
                              env={**os.environ, **env} if not self.rootless else {"PATH": "/usr/bin:/bin", **env})

    def plant(self, links: list[tuple[str, str]], first: str = "ci") -> None:
        """Run 1: the hostile build leaves symlinks in its workspace (after the isolation gate)."""
        profile = [arg.format(ws=self.workspace) for arg in FIRST_RUN[first]]
        proc = self.run("run", "-q", "--env", f"SBX_HOST_NS={_host_ns()}", "--env",
                        f"SBX_PLANT={json.dumps(links)}", *profile, "--", PY, "-c", GATE + PLANT)
        assert proc.returncode != NOT_ISOLATED, f"isolation gate failed, nothing planted: {proc.stdout}"
        assert proc.returncode == 0, proc.stderr
        assert all(json.loads(proc.stdout)["gate"].values())
        for name, target in links:
            link = self.workspace / name
            assert os.readlink(link) == target
            # on the host the link is the sandbox's: the workspace owner's, never root's
            assert link.lstat().st_uid == self.owner

    def untouched(self) -> None:
        assert sorted(os.listdir(self.secret)) == ["secret"], os.listdir(self.secret)
        assert (self.secret / "secret").read_text() == SECRET


def _refused(proc: subprocess.CompletedProcess, link: Path, owner: int, real: Path) -> None:
    assert proc.returncode == 125, (proc.returncode, proc.stdout, proc.stderr)
    assert SECRET not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sandbox: bind source: "), proc.stderr
    assert f"the symlink {link} " in lines[0] and f"uid {owner}" in lines[0], lines[0]
    assert f"give the real path instead: {real}" in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


@pytest.fixture(params=[False, True], ids=["root", "rootless"])
def tree(request):
    install = nobody_install(request.getfixturevalue("installed")) if request.param else None
    yield from _tree(rootless=request.param, sandbox=install.sandbox if install else SANDBOX)


@pytest.fixture
def root_launch_tree():
    """For what only a root launch decides (id mapping, root-owned workspaces)."""
    yield from _tree(rootless=False, sandbox=SANDBOX)


def _tree(rootless: bool, sandbox: str):
    require("userns", "system_python", *(("rootless",) if rootless else ("root",)))
    base = Path(tempfile.mkdtemp(prefix="sbxtest-ws-", dir="/tmp"))
    os.chmod(base, 0o755)
    owner = NOBODY if rootless else BUILD_USER
    (base / "state").mkdir()
    os.chown(base / "state", owner, owner)
    srv = base / "srv"
    srv.mkdir(mode=0o755)
    secret = srv / "secret"
    secret.mkdir()
    os.chmod(secret, 0o700)  # root's and private; rootless, the caller's own private files
    (secret / "secret").write_text(SECRET)
    workspace = srv / "proj"
    workspace.mkdir()
    (workspace / "pkg").mkdir()
    for path in (workspace, workspace / "pkg"):
        os.chown(path, owner, owner)
    if rootless:
        for path in (secret, secret / "secret"):
            os.chown(path, owner, owner)
    yield Tree(base, workspace, secret, owner, rootless, sandbox)
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("first", sorted(FIRST_RUN))
@pytest.mark.parametrize("second", sorted(SECOND_RUN))
def test_a_planted_symlink_is_not_followed_by_a_later_bind(tree, first, second):
    """Issue 22 part 1 as written: run 1 plants out -> the secret; run 2 `--bind ./out:/out:rw`."""
    tree.plant([("out", str(tree.secret))], first)
    proc = tree.run("run", *host_ns(), "--bind", "./out:/out:rw", *SECOND_RUN[second], *gated(RUN2))
    _refused(proc, tree.workspace / "out", tree.owner, tree.secret)
    tree.untouched()
    # read-only is no different: the link is not the caller's to follow either way
    proc = tree.run("run", "--bind", "./out:/out", *SECOND_RUN[second], "--", "/bin/cat", "/out/secret")
    _refused(proc, tree.workspace / "out", tree.owner, tree.secret)


def test_cd_into_a_directory_a_run_replaced_by_a_symlink(tree):
    """Issue 22 part 1, `cd pkg` variant: run 1 replaces pkg by a symlink; a CI step's `cd pkg &&
    sandbox run ci` must not make the link's target the workspace."""
    tree.plant([("pkg", str(tree.secret))])
    proc = tree.run("run", *host_ns(), "ci", *gated(RUN2_IN_PKG), shell='cd pkg && exec "$@"')
    _refused(proc, tree.workspace / "pkg", tree.owner, tree.secret)
    tree.untouched()
    # The same through a relative --bind from inside pkg.
    proc = tree.run("run", *host_ns(), "--bind", ".:/out:rw", "untrusted", *gated(RUN2),
                    shell='cd pkg && exec "$@"')
    _refused(proc, tree.workspace / "pkg", tree.owner, tree.secret)
    tree.untouched()


def test_cd_physical_into_a_root_directory_gives_no_access(root_launch_tree):
    """`cd -P pkg` loses the trace of the symlink: the launch sees only the real directory. As
    root that is the root-owned secret, which is never idmapped: the sandbox user cannot even
    enter it. (Rootless, the real directory is the caller's own, which the caller chose to bind:
    docs/threat-model.md says what a CI system must do about that.)"""
    tree = root_launch_tree
    tree.plant([("pkg", str(tree.secret))])
    proc = tree.run("run", *host_ns(), "ci", *gated(RUN2_IN_PKG), shell='cd -P pkg && exec "$@"')
    assert proc.returncode == 125, proc.stderr
    assert SECRET not in proc.stdout
    assert "belongs to root" in proc.stderr and "cannot enter it" in proc.stderr, proc.stderr
    tree.untouched()


def test_a_planted_symlink_as_a_parent_component(tree):
    """lib -> the secret's parent; `--bind ./lib/secret:/out:rw` walks through it."""
    tree.plant([("lib", str(tree.secret.parent))])
    for second in SECOND_RUN.values():
        proc = tree.run("run", *host_ns(), "--bind", "./lib/secret:/out:rw", *second, *gated(RUN2))
        _refused(proc, tree.workspace / "lib", tree.owner, tree.secret)
    tree.untouched()


def test_planted_relative_and_chained_symlinks(tree):
    """up -> .., then out -> up/../secret: relative links and chains are judged link by link."""
    tree.plant([("up", ".."), ("out", "up/secret")])
    proc = tree.run("run", *host_ns(), "--bind", "./out:/out:rw", "ci", *gated(RUN2))
    _refused(proc, tree.workspace / "out", tree.owner, tree.secret)
    tree.untouched()


def test_a_planted_symlink_to_a_system_directory(tree):
    tree.plant([("etc", "/etc")])
    proc = tree.run("run", "--bind", "./etc:/x:rw", "untrusted", "--", "/bin/true")
    _refused(proc, tree.workspace / "etc", tree.owner, Path("/etc"))


def test_root_made_symlinks_in_root_directories_are_followed(tree):
    """The rule is about who could have made a link: root's own links in directories only root
    can change are followed (as /lib64 -> usr/lib64 or /var/run -> /run are)."""
    links = tree.base / "links"
    links.mkdir(mode=0o755)
    os.symlink(tree.workspace, links / "data")
    os.symlink("../srv/proj", links / "relative")
    for name in ("data", "relative"):
        proc = tree.run("run", "--bind", f"{links / name}:/out:rw", "untrusted", "--", "/bin/sh", "-c",
                        f"echo {name} > /out/{name}")
        assert proc.returncode == 0, proc.stderr
        written = tree.workspace / name
        assert written.read_text() == f"{name}\n" and written.stat().st_uid == tree.owner


def test_symlinks_in_a_sticky_directory(tree):
    """/tmp-like (root, 1777): root's link is followed (only root can replace it there); anyone
    else's is not, nor a hard link of root's link (whoever made the second name chose it)."""
    sticky = tree.base / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    os.symlink(tree.workspace, sticky / "roots")
    proc = tree.run("run", "--bind", f"{sticky / 'roots'}:/out", "untrusted", "--", "/bin/true")
    assert proc.returncode == 0, proc.stderr
    os.symlink(tree.workspace, sticky / "users")
    os.chown(sticky / "users", tree.owner, tree.owner, follow_symlinks=False)
    proc = tree.run("run", "--bind", f"{sticky / 'users'}:/out", "untrusted", "--", "/bin/true")
    _refused(proc, sticky / "users", tree.owner, tree.workspace)
    os.link(sticky / "roots", sticky / "second", follow_symlinks=False)
    proc = tree.run("run", "--bind", f"{sticky / 'second'}:/out", "untrusted", "--", "/bin/true")
    assert proc.returncode == 125 and "hard link" in proc.stderr, proc.stderr


# ---------------------------------------------------------------- workspaces a launch refuses


@pytest.mark.parametrize("where", ["/etc", "/", "/usr", "/home", "/var", "/root", "/tmp"])
def test_a_system_directory_as_the_workspace_is_refused(tree, where):
    """Issue 20: `cd /etc && sandbox run ci` would give the workload /etc read-write. The workload
    here is /bin/true (were the launch to go ahead, nothing is written)."""
    if not (tree.rootless and where == "/root"):  # (a rootless caller cannot even cd there)
        proc = tree.run("run", "ci", "--", "/bin/true", cwd=Path(where))
        assert proc.returncode == 125, proc.stderr
        line, = proc.stderr.strip().splitlines()
        assert line.startswith("sandbox: bind source: ") and "(the current directory)" in line, line
        assert "system directory" in line or "root directory" in line, line
        assert "allow_system_path" in line, line
    proc = tree.run("run", "--bind", f"{where}:/x:rw", "untrusted", "--", "/bin/true")
    assert proc.returncode == 125 and "refusing to bind it read-write" in proc.stderr, proc.stderr


def test_a_system_directory_reached_through_a_root_symlink_is_refused(tree):
    """The check is on the real path: a trusted link to /etc is followed, then refused as /etc."""
    links = tree.base / "links"
    links.mkdir(mode=0o755)
    os.symlink("/etc", links / "etc")
    proc = tree.run("run", "--bind", f"{links / 'etc'}:/x:rw", "untrusted", "--", "/bin/true")
    assert proc.returncode == 125 and "(really /etc)" in proc.stderr, proc.stderr
    proc = tree.run("run", "--bind", f"{links / 'etc'}:/x", "untrusted", "--", "/bin/true")
    assert proc.returncode == 0, proc.stderr  # read-only, /etc is what untrusted shows parts of anyway


def test_a_runtime_socket_is_refused_unless_allowed_by_name(tree):
    run_dir = tree.base / "run"
    run_dir.mkdir(mode=0o755)
    path = run_dir / "docker.sock"
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(str(path))
        proc = tree.run("run", "--bind", f"{path}:/var/run/docker.sock", "untrusted", "--", "/bin/true")
        assert proc.returncode == 125 and "container runtime socket" in proc.stderr, proc.stderr
        profile = tree.base / "state" / "docker.toml"
        profile.write_text(f'extends = "untrusted"\n[[filesystem.mounts]]\nsource = "{path}"\n'
                           f'target = "/var/run/docker.sock"\nallow_system_path = true\n')
        os.chmod(profile, 0o644)
        proc = tree.run("run", str(profile), "--", "/bin/sh", "-c", "test -S /var/run/docker.sock")
        assert proc.returncode == 0, proc.stderr
        lint = tree.run("lint", str(profile))
        assert "danger" in lint.stdout and "allow_system_path" in lint.stdout, lint.stdout
    finally:
        listener.close()


def test_a_root_owned_workspace_is_not_idmapped(root_launch_tree):
    """Issue 20's first case: root launches in a root-owned workspace. No id mapping: the sandbox
    writes as host 65534 where host permissions allow, never as root; the launch says how to fix.
    (Rootless launches never idmap.)"""
    tree = root_launch_tree
    workspace = tree.base / "rootws"
    workspace.mkdir(mode=0o755)
    plant = "cp /bin/sh /workspace/rootsh && chmod 4755 /workspace/rootsh"
    proc = tree.run("run", *host_ns(), "ci", *gated(plant), cwd=workspace)
    assert proc.returncode not in (0, NOT_ISOLATED), proc.stdout
    assert "belongs to root" in proc.stderr and "host_user" in proc.stderr, proc.stderr
    assert os.listdir(workspace) == []
    # World-writable (as a shared scratch directory may be): written as 65534, never setuid.
    os.chmod(workspace, 0o777)
    proc = tree.run("run", *host_ns(), "ci", *gated(plant), cwd=workspace)
    assert proc.returncode == 1 and "Operation not permitted" in proc.stderr, proc.stderr
    info = (workspace / "rootsh").stat()
    assert (info.st_uid, info.st_gid) == (NOBODY, NOBODY) and not info.st_mode & 0o6000
    # idmap = "yes" on it: refused, with the reason and the fix
    profile = tree.base / "state" / "idmap.toml"
    profile.write_text('extends = "untrusted"\n[process]\ncwd = "/workspace"\n[[filesystem.mounts]]\n'
                       'source = "${CWD}"\ntarget = "/workspace"\nmode = "rw"\nidmap = "yes"\n')
    proc = tree.run("run", str(profile), "--", "/bin/true", cwd=workspace)
    assert proc.returncode == 125, proc.stderr
    line, = proc.stderr.strip().splitlines()
    assert line.startswith("sandbox: idmapped mount: ") and "belongs to root" in line and "host_user" in line
    # The root group is root too: a build user's directory in group 0 is not idmapped either
    # (the kernel would refuse writes to it with only its uid mapped; gid 0 is never mapped).
    os.chown(workspace, BUILD_USER, 0)
    os.chmod(workspace, 0o775)
    proc = tree.run("run", "ci", "--", "/bin/sh", "-c", "touch /workspace/made", cwd=workspace)
    assert proc.returncode == 1 and "belongs to group root (gid 0)" in proc.stderr, proc.stderr
    assert not (workspace / "made").exists()
    proc = tree.run("run", str(profile), "--", "/bin/true", cwd=workspace)
    assert proc.returncode == 125 and "belongs to group root" in proc.stderr, proc.stderr


def test_lint_reports_what_the_launch_refuses(tree):
    profile = tree.base / "state" / "etc.toml"
    profile.write_text('extends = "untrusted"\n[[filesystem.mounts]]\nsource = "/etc"\ntarget = "/x"\n'
                       'mode = "rw"\n')
    os.chmod(profile, 0o644)
    lint = tree.run("lint", str(profile))
    assert lint.returncode == 1
    assert "danger  SBX-FS-008   filesystem.mounts[" in lint.stdout and "/etc is a system directory" in lint.stdout
    proc = tree.run("run", str(profile), "--", "/bin/true")
    assert proc.returncode == 125 and "/etc is a system directory" in proc.stderr
