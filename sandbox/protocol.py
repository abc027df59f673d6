"""The parent/child protocol: a few small messages over pipes (the full sequence diagram is in
docs/architecture.md).

    child -> parent, one pipe shared by A, B and C:  ready (A: id maps wanted), init_pid (A: B's
        host pid), warning, created (C: everything set up, waiting at the start gate), exec (C:
        through the gate, about to execve), exit (B: the workload's wait status), error (any:
        step, errno, message), then EOF once every writer has gone
    parent -> A, the go pipe:       one byte once the id maps are written
    parent -> B, the placed pipe:   one byte once A and B are in the sandbox's cgroup
    the start gate -> C:            one byte when the workload may exec (launch.start(); a plain
                                    run writes it before the workload gets there). A detached
                                    launch's gate is a FIFO that `sandbox-runtime start` writes,
                                    and its children close the message pipe after "created".

Without A (init cloned straight into the namespaces, see child.spawn) there is no ready and no
init_pid: the parent knows init's pid from the clone, writes the maps at once, and the go pipe
goes to init.

Child-to-parent messages are single JSON lines below PIPE_BUF, so writes from the three processes
never interleave. Each parent-to-child pipe carries one byte, 'g' (go), or nothing (EOF: abort).
"""
from __future__ import annotations

import json
import os
import select
import time

READY = "ready"
INIT_PID = "init_pid"
CREATED = "created"
EXEC = "exec"
EXIT = "exit"
ERROR = "error"
WARNING = "warning"
HOOKS = "hooks"  # init: the namespaces exist; run the createRuntime hooks, then one byte on the hooks pipe
GO = b"g"
PIPE_BUF = 4096


def send(fd: int, kind: str, **fields) -> None:
    data = _without_json(kind, fields)
    if data is not None:
        os.write(fd, data)
        return
    data = (json.dumps({"kind": kind, **fields}, separators=(",", ":")) + "\n").encode()
    if len(data) > PIPE_BUF:
        fields["message"] = str(fields.get("message", ""))[:PIPE_BUF // 2]
        data = (json.dumps({"kind": kind, **fields}, separators=(",", ":")) + "\n").encode()[:PIPE_BUF]
    os.write(fd, data)


def _without_json(kind: str, fields: dict) -> bytes | None:
    """The line for a message of integers only (ready, init_pid, exec, exit), formatted here: the
    json module's first use in a freshly forked child costs it ~110 copy-on-write faults (~0.3 ms),
    and each of A, init and the workload sends one. None when a field needs JSON's escaping."""
    parts = ['{"kind":"', kind, '"']
    for name, value in fields.items():
        if type(value) is not int:
            return None
        parts += (',"', name, '":', str(value))
    parts.append("}\n")
    return "".join(parts).encode()


def send_error(fd: int, step: str, err: int, message: str, **extra) -> None:
    try:
        send(fd, ERROR, step=step, errno=err, message=message, **extra)
    except OSError:
        pass  # the parent is gone; nobody is left to tell


class Reader:
    """Reads messages from the child side, with a deadline."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buffer = b""
        self.eof = False

    def next(self, deadline: float | None = None) -> dict | None:
        """The next message; None on EOF or when the deadline passes (check .eof)."""
        while b"\n" not in self.buffer:
            if self.eof:
                return None
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.eof = True
                continue
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError:
            return {"kind": ERROR, "step": "protocol", "errno": 0, "message": f"garbled message {line[:80]!r}"}
