"""Many sandboxes on a few segments at once: every pair on one segment talks, no pair across
segments does. The full run (SANDBOX_STRESS=full) is 32 sandboxes on 4 segments; by default 16 on 4.

Each sandbox writes its segment and address to a shared directory, waits for everyone's, connects
to each of them, writes what it saw, and keeps serving until everyone has finished."""
from __future__ import annotations

import json
import os
import threading

import pytest

import sandbox
from conftest import require
from netlab import unique

pytestmark = [pytest.mark.stress, pytest.mark.timeout(600)]
FULL = os.environ.get("SANDBOX_STRESS") == "full"
SANDBOXES, SEGMENTS = (32, 4) if FULL else (16, 4)

MEMBER = r'''
import errno, json, os, socket, sys, threading, time
me, segment, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
shared = "/shared"
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 7000)); srv.listen(256)
def serve():
    while True:
        c, _ = srv.accept()
        try:
            c.recv(16); c.sendall(me.encode())
        except OSError:
            pass
        c.close()
threading.Thread(target=serve, daemon=True).start()
import fcntl, struct
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
address = socket.inet_ntoa(fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", b"eth0"))[20:24])
with open(f"{shared}/{me}.json.tmp", "w") as f:
    json.dump({"me": me, "segment": segment, "address": address}, f)
os.rename(f"{shared}/{me}.json.tmp", f"{shared}/{me}.json")
deadline = time.monotonic() + 150
while len([n for n in os.listdir(shared) if n.endswith(".json") and not n.startswith("seen")]) < total:
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.2)
peers = [json.load(open(f"{shared}/{n}")) for n in os.listdir(shared) if n.endswith(".json") and not n.startswith("seen")]
seen = {}
for peer in peers:
    if peer["me"] == me:
        continue
    c = socket.socket(); c.settimeout(5)
    started = time.monotonic()
    try:
        c.connect((peer["address"], 7000)); c.sendall(b"hi"); got = "ok:" + c.recv(16).decode()
    except socket.timeout:
        got = "timeout"
    except OSError as exc:
        got = errno.errorcode.get(exc.errno, str(exc.errno))
    c.close()
    seen[peer["me"]] = [got, round(time.monotonic() - started, 3)]
with open(f"{shared}/seen-{me}.json", "w") as f:
    json.dump(seen, f)
while len([n for n in os.listdir(shared) if n.startswith("seen-")]) < total and time.monotonic() < deadline:
    time.sleep(0.2)
'''


def test_many_sandboxes_on_a_few_segments(world_dir):
    require("root", "userns")
    # owned by the sandboxes' host uid: no idmapped mount is needed for the rw bind (the helper that
    # makes one deadlocks when many threads launch at once: see the report of this change)
    os.chown(world_dir, 65534, 65534)
    segments = [unique(f"many{i}") for i in range(SEGMENTS)]
    outcomes: dict[str, object] = {}

    def launch(index: int) -> None:
        segment = segments[index % SEGMENTS]
        prof = sandbox.profile_from_dict({
            "extends": "untrusted", "network": {"mode": "bridge", "segment": segment,
                                                # a rule out of the segment, so that reaching another
                                                # segment is refused by a rule, not only for want of a route
                                                "egress": ["192.0.2.1:9/tcp"] if index % 2 else []},
            "filesystem": {"mounts": [{"source": str(world_dir), "target": "/shared", "mode": "rw"}]},
            "limits": {"pids": 64}})
        try:
            result = sandbox.run(prof, ["python3", "-c", MEMBER, f"s{index}", segment, str(SANDBOXES)],
                                 capture_output=True, timeout=400)
            outcomes[f"s{index}"] = (result.exit_code, result.stderr.decode()[-400:])
        except BaseException as exc:  # noqa: BLE001
            outcomes[f"s{index}"] = ("error", repr(exc))

    threads = [threading.Thread(target=launch, args=(i,)) for i in range(SANDBOXES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(code == 0 for code, _ in outcomes.values()), outcomes
    members = {f"s{i}": segments[i % SEGMENTS] for i in range(SANDBOXES)}
    wrong = []
    for me, segment in members.items():
        seen = json.loads((world_dir / f"seen-{me}.json").read_text())
        for peer, (got, took) in seen.items():
            same = members[peer] == segment
            if same and got != f"ok:{peer}":
                wrong.append((me, peer, "same segment", got))
            if not same and (got not in ("EHOSTUNREACH", "ENETUNREACH") or took > 1.0):
                wrong.append((me, peer, "other segment", got, took))
    assert not wrong, wrong[:10]
