"""`sandbox export --format systemd`: the [Service] hardening lines, checked line by line and with
`systemd-analyze verify` (it parses a unit offline; no systemd needs to run, none does here)."""
from __future__ import annotations

import os
import subprocess

import pytest

from conftest import require

import sandbox
from sandbox.export import Warnings
from sandbox.export.systemd import unit_text
from sandbox.profile.load import profile_from_dict
from sandbox.seccomp.plan import evaluate


def _lines(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def _unit(profile, **kwargs):
    warnings = Warnings()
    text, layout = unit_text(profile, root_directory="/srv/sandbox/rootfs", warnings=warnings, **kwargs)
    return text, _lines(text), list(warnings)


def test_untrusted_unit_has_every_hardening_line():
    profile = sandbox.load_profile("untrusted")
    text, keys, warnings = _unit(profile)
    expected = {
        "PrivateUsers": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateNetwork": "yes",
        "PrivateIPC": "yes", "ProtectHostname": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
        "ProtectProc": "invisible", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
        "AmbientCapabilities": "", "SystemCallArchitectures": "native", "RestrictNamespaces": "yes",
        "LockPersonality": "yes", "MemoryMax": str(512 << 20), "MemorySwapMax": "0", "TasksMax": "128",
        "CPUQuota": "100%", "LimitCORE": "0", "LimitNOFILE": "1024", "DynamicUser": "yes",
        "RootDirectory": "/srv/sandbox/rootfs", "PrivateDevices": "yes", "SystemCallErrorNumber": "EPERM",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK", "ExecStart": "/bin/sh",
        "WorkingDirectory": "/tmp",
    }
    for key, value in expected.items():
        assert keys.get(key) == [value], (key, keys.get(key))
    assert "MemoryDenyWriteExecute" not in keys  # no profile key implies it
    assert keys["BindReadOnlyPaths"][0] == "/usr" and "-/etc/ld.so.cache" in keys["BindReadOnlyPaths"]
    assert keys["TemporaryFileSystem"] == [f"/tmp:nosuid,nodev,size={128 << 20},mode=1777"]
    assert "-/proc/kcore" in " ".join(keys["InaccessiblePaths"]).split()
    # The allowlist is the policy's: what it allows is listed, what it denies is not.
    allowed = set(" ".join(keys["SystemCallFilter"]).split())
    for name in ("read", "write", "openat", "execve", "futex", "clone", "socket"):
        assert name in allowed, name
    for name in ("mount", "ptrace", "unshare", "setns", "bpf", "kexec_load", "init_module", "keyctl"):
        assert name not in allowed and evaluate(profile.seccomp, name).denies, name
    for name in allowed - {"clone", "clone3", "socket", "socketpair", "personality"}:
        assert not evaluate(profile.seccomp, name).denies, name
    for key in ("landlock:", "namespaces.pid:", "seccomp: ioctl:"):
        assert any(w.startswith(key) for w in warnings), key


def test_relaxations_and_identity():
    profile = profile_from_dict({
        "extends": "untrusted", "network": {"mode": "host"}, "namespaces": {"network": False, "ipc": False},
        "process": {"host_user": 4000, "host_group": 4000, "env_passthrough": ["LANG", "LC_*"]},
        "capabilities": {"keep": ["CAP_NET_BIND_SERVICE"]},
        "limits": {"timeout": "10m", "kill_after": "5s", "rlimits": {"nofile": [100, 200]}},
        "seccomp": {"policy": "none", "mode": "denylist", "default_action": "allow",
                    "deny": ["ptrace"], "rules": [{"syscalls": ["mount"], "action": "errno(EACCES)"}]}})
    text, keys, warnings = _unit(profile)
    assert keys["User"] == ["4000"] and keys["Group"] == ["4000"] and "DynamicUser" not in keys
    assert "PrivateNetwork" not in keys and "PrivateIPC" not in keys
    assert keys["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"] == keys["AmbientCapabilities"]
    assert keys["RuntimeMaxSec"] == ["600"] and keys["TimeoutStopSec"] == ["5"]
    assert keys["LimitNOFILE"] == ["100:200"] and keys["PassEnvironment"] == ["LANG"]
    assert keys["SystemCallFilter"] == ["~mount:EACCES ptrace:EPERM"]
    assert any(w.startswith("process.env_passthrough:") for w in warnings)


@pytest.mark.parametrize("name", ["untrusted", "ci"])
def test_systemd_analyze_verify_accepts_the_unit(name, sandbox_cli, tmp_path, monkeypatch):
    require("systemd_analyze")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "unit"
    done = sandbox_cli("export", name, "--format", "systemd", "-o", str(out))
    assert done.returncode == 0, done.stderr
    unit = out / f"{name}.service"
    assert (out / "rootfs" / "etc" / "passwd").exists() and os.readlink(out / "rootfs" / "bin") == "usr/bin"
    checked = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                             timeout=60)
    # verify exits 0 even for keys and values it ignores: those show on stderr, which must be empty.
    assert checked.returncode == 0 and checked.stderr.strip() == "", checked.stderr
    if name == "ci":
        keys = _lines(unit.read_text())
        assert f"{tmp_path}:/workspace" in keys["BindPaths"] and keys["RuntimeMaxSec"] == ["3600"]


def test_systemd_analyze_catches_a_bad_line(tmp_path):
    """The check above would notice: a misspelt value is reported on stderr."""
    require("systemd_analyze")
    unit = tmp_path / "bad.service"
    unit.write_text("[Service]\nExecStart=/usr/bin/true\nProtectProc=bogus\nSystemCallFilter=notacall\n")
    checked = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "bogus" in checked.stderr and "notacall" in checked.stderr


def test_exec_allow_list_and_secrets(tmp_path):
    require("systemd_analyze")
    (tmp_path / "token").write_text("x")
    profile = profile_from_dict({"extends": "untrusted", "name": "keys",
                                 "exec": {"allow": ["/usr/bin/python3", "/usr/lib/**"]},
                                 "secrets": [{"name": "token", "file": str(tmp_path / "token")},
                                             {"name": "api", "env": "API_KEY"}]})
    text, keys, warnings = _unit(profile)
    assert keys["NoExecPaths"] == ["/"] and keys["ExecPaths"] == ["/usr/bin/python3 /usr/lib"]
    assert keys["LoadCredential"] == [f"token:{tmp_path / 'token'}"]
    assert "%d/token:/run/secrets/token" in keys["BindReadOnlyPaths"]
    assert any(w.startswith("secrets:") and "API_KEY" in w for w in warnings)
    unit = tmp_path / "keys.service"
    unit.write_text(text.replace("/srv/sandbox/rootfs", str(tmp_path)))
    checked = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and checked.stderr.strip() == "", checked.stderr
    globbed = profile_from_dict({"extends": "untrusted", "exec": {"allow": ["/usr/bin/py*"]}})
    _, keys, warnings = _unit(globbed)
    assert "ExecPaths" not in keys and any(w.startswith("exec.allow:") for w in warnings)
