"""Unit tests for the probe's parsers and judgements, the report and the canaries (no sandbox)."""
from __future__ import annotations

import ast
import ctypes
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from sandbox.verify import probe, report
from sandbox.verify.canaries import Canaries

PROBE = Path(probe.__file__)


def test_probe_is_self_contained_stdlib_only():
    """probe.py must run when copied alone: no imports from the sandbox package or third parties."""
    import sys
    tree = ast.parse(PROBE.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in probe.py"
            modules.add(node.module.split(".")[0])
    assert modules - {"__future__"} <= set(sys.stdlib_module_names), modules


def test_probe_runs_copied_alone_with_system_python(tmp_path):
    copy = tmp_path / "probe.py"
    copy.write_bytes(PROBE.read_bytes())
    proc = subprocess.run(["/usr/bin/python3", "-I", "-S", str(copy), "--json"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)
    doc = json.loads(proc.stdout)
    assert doc["probe_version"] == probe.PROBE_VERSION
    assert proc.returncode == (1 if doc["summary"]["failed"] else 0)
    ids = [r["id"] for r in doc["results"]]
    assert len(ids) == len(set(ids)), "check ids must be unique"
    for r in doc["results"]:
        assert r["status"] in ("PASS", "FAIL", "WARN", "SKIP")
        assert r["layer"] in probe.LAYERS, r
        assert r["description"] and set(r) == {"id", "layer", "description", "status", "expected",
                                               "observed", "hint"}


def test_context_from_text_file_and_bad_input(tmp_path):
    assert probe._load_context('{"canary_env": "X"}') == {"canary_env": "X"}
    f = tmp_path / "ctx.json"
    f.write_text('{"host_sid": 5}')
    assert probe._load_context(str(f)) == {"host_sid": 5}
    assert probe.main(["--context", "{not json"]) == 2


def test_decode_caps():
    assert probe.decode_caps("0000000000000000") == []
    assert probe.decode_caps("0000000000003000") == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    assert probe.decode_caps("0000000000200000") == ["CAP_SYS_ADMIN"]
    assert len(probe.decode_caps("000001ffffffffff")) == 41


@pytest.mark.parametrize("lines, own, host_root, seen_as, status", [
    ([(0, 0, 4294967295)], 0, True, (0, 65534), "FAIL"),          # no user namespace at all
    ([(0, 100000, 65536)], 0, False, (65534, 65534), "PASS"),     # rootless-style range
    ([(0, 0, 1)], 0, True, (0, 65534), "FAIL"),                   # root bwrap: inside 0 is host 0
    ([(1000, 0, 1)], 1000, True, (1000, 65534), "FAIL"),          # bwrap --uid 1000 as root
    ([(65534, 0, 1)], 65534, False, (65534, 65534), "PASS"),      # nested: parent is intermediate
    ([(65534, 0, 1)], 65534, None, None, "FAIL"),                 # cannot tell: conservative
    ([(5, 0, 1)], 7, False, (5, 65534), "FAIL"),                  # host 0 visible as 5
    ([(5, 0, 1)], 7, False, (65534, 65534), "PASS"),              # host 0 unmapped (overflow id)
])
def test_judge_uid_map(lines, own, host_root, seen_as, status):
    assert probe.judge_id_map("uid", lines, own, host_root, seen_as)[0] == status


def test_judge_gid_map_nested_is_a_warning():
    assert probe.judge_id_map("gid", [(65534, 0, 1)], 65534, False, (65534, 65534))[0] == "WARN"
    assert probe.judge_id_map("gid", [(0, 0, 1)], 0, True, (0, 65534))[0] == "FAIL"


def test_parse_mountinfo_and_mount_of():
    text = ("65 42 0:40 /newroot / rw,nosuid,nodev,relatime shared:5 - tmpfs tmpfs rw\n"
            "66 65 254:0 /usr /usr ro,nosuid,nodev,relatime - ext4 /dev/vda rw\n"
            "67 65 254:0 /a\\040b /mnt/a\\040b rw master:3 - ext4 /dev/vda rw\n")
    mounts = probe.parse_mountinfo(text)
    assert mounts[0]["tags"] == ["shared:5"] and mounts[0]["fstype"] == "tmpfs"
    assert mounts[2]["mountpoint"] == "/mnt/a b" and mounts[2]["root"] == "/a b"
    assert probe._mount_of("/usr/bin/python3", mounts)["mountpoint"] == "/usr"
    assert probe._mount_of("/usrx", mounts)["mountpoint"] == "/"
    shared = list(probe._check_propagation(mounts))[0]
    assert shared["status"] == "FAIL" and "/" in shared["observed"]


def test_parse_cgroup():
    text = "12:pids:/user.slice\n4:memory:/a/b\n1:name=systemd:/\n0::/sandbox/x\n"
    assert probe.parse_cgroup(text) == [("12", ["pids"], "/user.slice"), ("4", ["memory"], "/a/b"),
                                        ("1", ["name=systemd"], "/"), ("0", [], "/sandbox/x")]


def test_judge_limit():
    assert probe._judge_limit("c", "memory", 100, "f", 100, True)["status"] == "PASS"
    assert probe._judge_limit("c", "memory", None, "f", 100, True)["status"] == "FAIL"
    assert probe._judge_limit("c", "memory", 200, "f", 100, True)["status"] == "FAIL"
    assert probe._judge_limit("c", "memory", None, "f", None, True)["status"] == "WARN"
    assert probe._judge_limit("c", "memory", False, "invisible", 100, True)["status"] == "WARN"


def test_relaxations_are_skipped_with_a_reason_not_passed():
    ctx = probe.Context({"expect": {"network": "host"}})
    r = probe._net_result(ctx, "net.canary_tcp", "d", True, "connected", "refused", "hint")
    assert r["status"] == "SKIP" and "profile" in r["observed"]
    strict = probe.Context({})
    assert probe._net_result(strict, "net.canary_tcp", "d", True, "connected", "refused",
                             "h")["status"] == "FAIL"
    off = probe.Context({"expect": {"seccomp": False}})
    assert probe._seccomp_verdict(off, "x", "d", False, "reached")["status"] == "SKIP"


def test_kept_capability_is_skip_and_extra_is_fail():
    ctx = probe.Context({"expect": {"capabilities": ["net_bind_service"]}})
    fields = {"CapInh": "0", "CapPrm": "400", "CapEff": "400", "CapBnd": "401", "CapAmb": "0"}
    got = {r["id"]: r["status"] for r in probe._judge_caps("", fields, ctx, True)}
    assert got == {"caps.inheritable": "PASS", "caps.permitted": "SKIP", "caps.effective": "SKIP",
                   "caps.bounding": "FAIL", "caps.ambient": "PASS"}


def test_open_for_write_never_writes(tmp_path):
    target = tmp_path / "knob"
    target.write_text("original")
    os.chmod(target, 0o644)
    assert probe._open_for_write(str(target)) == (True, "opened for writing")
    assert target.read_text() == "original"
    assert probe._open_for_write(str(tmp_path / "missing")) == (False, "absent")
    assert probe._open_for_write("/dev/null") == (False, "masked by /dev/null")


def test_run_in_child_observes_signals_and_values():
    assert probe.run_in_child(lambda: 42) == ("value", "42")
    assert probe.run_in_child(lambda: os.kill(os.getpid(), 31)) == ("signal", 31)  # SIGSYS
    kind, text = probe.run_in_child(lambda: 1 / 0)
    assert kind == "error" and "ZeroDivisionError" in text


def test_report_render_summary_json_exit():
    results = [probe.result("ns.pid", "namespaces", "d", "PASS", "new", "inode 1"),
               probe.result("caps.effective", "capabilities", "d", "FAIL", "none", "CAP_X", "drop"),
               probe.result("net.canary_tcp", "network", "d", "WARN", "", "?"),
               probe.result("ns.time", "namespaces", "d", "SKIP", "", "shared")]
    assert report.summary_line(results) == "1 passed, 1 failed, 1 warning, 1 skipped"
    assert report.summary_line(results[:1]) == "1 passed, 0 failed, 0 warnings"
    text = report.render(results, colour=False, width=100)
    assert text.index("namespaces") < text.index("capabilities") < text.index("network")
    assert "fix: drop" in text and "\033[" not in text
    assert "\033[31;1mFAIL" in report.render(results, colour=True)
    assert report.exit_status(results) == 1 and report.exit_status(results[:1]) == 0
    doc = json.loads(report.to_json(results))
    assert doc["summary"] == {"passed": 1, "failed": 1, "warnings": 1, "skipped": 1}
    assert report.load(report.to_json(results)) == results
    assert probe.summary_line(results) == report.summary_line(results)


def test_report_colour_only_on_tty_without_no_color(monkeypatch):
    class Tty:
        def isatty(self):
            return True
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert report.use_colour(Tty())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not report.use_colour(Tty())
    assert not report.use_colour(open(os.devnull, "w"))


def _shm_exists(key: int) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.shmget(ctypes.c_int(key), ctypes.c_size_t(0), ctypes.c_int(0)) >= 0


def test_canaries_are_planted_and_fully_removed():
    with Canaries(expect={"network": "none"}) as ctx:
        port, token = ctx["canary_tcp_port"], ctx["canary_token"]
        pid = ctx["canary_pids"][0]
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        s = socket.socket(socket.AF_UNIX)
        s.connect("\0" + ctx["canary_abstract_socket"])
        s.close()
        assert _shm_exists(ctx["canary_sysv_shm_key"])
        assert os.path.exists(f"/dev/shm/{ctx['canary_posix_shm']}")
        assert os.environ[ctx["canary_env"]] == token
        assert token in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        assert set(ctx["host_ns"]) >= {"pid", "net", "mnt", "user", "uts", "ipc"}
        assert ctx["expect"] == {"network": "none"}
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    assert not _shm_exists(ctx["canary_sysv_shm_key"])
    assert not os.path.exists(f"/dev/shm/{ctx['canary_posix_shm']}")
    assert ctx["canary_env"] not in os.environ
    assert not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_canaries_clean_up_on_exception():
    with pytest.raises(RuntimeError):
        with Canaries() as ctx:
            raise RuntimeError("boom")
    assert not os.path.exists(f"/dev/shm/{ctx['canary_posix_shm']}")
    assert not _shm_exists(ctx["canary_sysv_shm_key"])
    assert ctx["canary_env"] not in os.environ


def test_canaries_clean_up_when_planting_fails(monkeypatch):
    made = {}

    def boom(self):
        made.update(self.context)
        raise OSError("no processes left")
    monkeypatch.setattr(Canaries, "_process", boom)
    with pytest.raises(OSError):
        with Canaries():
            pass
    assert not os.path.exists(f"/dev/shm/{made['canary_posix_shm']}")
    assert not _shm_exists(made["canary_sysv_shm_key"])


def _mount(point, options="rw", fstype="ext4", root="/"):
    return {"id": "1", "parent": "0", "root": root, "mountpoint": point, "options": options.split(","),
            "tags": [], "fstype": fstype, "source": "/dev/vda", "super": []}


def test_a_bind_writing_as_host_root_fails_inside_and_outside(tmp_path):
    """The launcher never idmaps to host 0 (sources.py); the verifier would say so if it did."""
    ctx = probe.Context({"canary_token": "t0k", "expect": {
        "rw_sources": {str(tmp_path): str(tmp_path)}, "write_owner": {str(tmp_path): [0, 0]}}})
    mounts = [_mount(str(tmp_path), "rw,nosuid,nodev,idmapped")]
    (inside,) = [r for r in probe._check_write_owners(ctx, mounts)]
    assert inside["status"] == "FAIL" and "idmapped" in inside["observed"]
    try:
        marker = tmp_path / ".sandbox-probe-owner-t0k"
        assert marker.exists()  # left for the outside check, which reads it on the host
        os.chown(marker, 0, 0)
        (outside,) = probe.owner_markers_checks(ctx)
        assert outside["status"] == "FAIL" and "uid 0" in outside["observed"]
        os.chown(marker, 1000, 1000)
        ctx.expect["write_owner"] = {str(tmp_path): [1000, 1000]}
        (outside,) = probe.owner_markers_checks(ctx)
        assert outside["status"] == "PASS"
    finally:
        probe.remove_owner_markers()
    assert not marker.exists()
    # Without the launcher's word, an idmapped rw mount is a warning: inside cannot tell.
    (unknown,) = probe._check_write_owners(probe.Context({}), mounts)
    assert unknown["status"] == "WARN"


def test_a_system_directory_bound_rw_fails():
    ctx = probe.Context({"expect": {"rw_sources": {"/workspace": "/etc", "/out": "/srv/out"}}})
    (verdict,) = probe._check_system_binds(ctx, [])
    assert verdict["status"] == "FAIL" and "/workspace <- /etc" in verdict["observed"]
    ctx = probe.Context({"expect": {"rw_sources": {"/w": "/etc"}, "allowed_system_paths": ["/etc"]}})
    assert [r["status"] for r in probe._check_system_binds(ctx, [])] == ["SKIP"]
    # without context: mountinfo's root of a writable host mount
    (guess,) = probe._check_system_binds(probe.Context({}), [_mount("/tmp", root="/etc")])
    assert guess["status"] == "WARN"


def test_setid_routes_in_a_directory_we_cannot_protect(tmp_path):
    """Outside any sandbox (root, no filter) every route works: the check must see it."""
    from conftest import require
    require("root")  # (the file capability)
    worked, seen = probe._setid_routes(str(tmp_path))
    assert {"chmod 4755", "fchmod 4755", "openat(O_CREAT, 04755)", "security.capability"} <= set(worked), seen
    assert list(tmp_path.iterdir()) == []  # cleaned up
