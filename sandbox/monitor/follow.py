"""`sandbox events ID [--follow]`: the events of one running sandbox, from its events file."""
from __future__ import annotations

import json
import os
import sys
import time

POLL = 0.1  # seconds between looks at a quiet file


def follow_events(running, path: str, *, follow: bool, kinds: set[str] | None = None, out=None) -> int:
    """Print the sandbox's lines of `path` (a file may hold several sandboxes' events); with follow,
    keep reading until its `end` event, or until its launcher is gone. Returns an exit status."""
    out = out or sys.stdout
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        print(f"sandbox: {path}: {exc.strerror or exc}", file=sys.stderr)
        return 125
    pending = b""
    try:
        while True:
            chunk = os.read(fd, 1 << 16)
            if chunk:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if _show(line, running.id, kinds, out):
                        return 0
                continue
            if not follow:
                return 0
            if not os.path.exists(running.path) or not running.launcher_alive():
                # The record goes after the last event is written: read what is left, then stop.
                rest = os.read(fd, 1 << 24)
                for line in (pending + rest).split(b"\n"):
                    _show(line, running.id, kinds, out)
                return 0
            time.sleep(POLL)
    except BrokenPipeError:
        return 0
    finally:
        os.close(fd)


def _show(line: bytes, sandbox_id: str, kinds, out) -> bool:
    """Print `line` when it is one of this sandbox's wanted events; True at its end event."""
    if not line.strip():
        return False
    try:
        event = json.loads(line)
    except ValueError:
        return False
    if not isinstance(event, dict) or event.get("sandbox") != sandbox_id:
        return False
    if kinds is None or event.get("kind") in kinds:
        out.write(line.decode(errors="replace") + "\n")
        out.flush()
    return event.get("kind") == "end"
