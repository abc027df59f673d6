"""Where events go: one JSON line each, written by a thread of its own.

The threads that observe (the seccomp listener's, the monitor's) only queue lines: a reader of
`--events -` that stops reading must not stop the workload, whose system calls wait for those
threads. The queue is bounded; what does not fit is counted and said in a `lost` event.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter, deque

MAX_QUEUED = 100_000  # lines waiting for the writer; beyond, events are counted as lost
MAX_EVENTS = 1_000_000  # lines written for one sandbox; beyond, only counted
FLUSH_TIMEOUT = 5.0  # seconds the end of a launch waits for a stalled reader
FLUSH_INTERVAL = 0.1  # seconds between writes (so `sandbox events --follow` lags by as much)
WAKE_AT = 1000  # queued events that wake the writer at once


def iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment * 1000) % 1000:03d}Z"


class EventSink:
    """Events of one sandbox to zero or more file descriptors (owned, closed by close())."""

    def __init__(self, sandbox_id: str, fds: list[int], started: float | None = None):
        self.sandbox_id = sandbox_id
        self.fds = list(fds)
        self.started = started if started is not None else time.monotonic()
        self.counts: Counter = Counter()
        self.lost = 0
        self.written = 0
        self.errors: list[str] = []
        self._queue: deque = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._closing = False
        self._thread = None
        if self.fds:
            self._thread = threading.Thread(target=self._write_loop, name="sandbox-events", daemon=True)
            self._thread.start()

    def emit(self, kind: str, fields: dict) -> dict:
        # "time" is formatted by the writer (off the path of the threads that observe)
        event = {"time": time.time(), "t": round(time.monotonic() - self.started, 3), "sandbox": self.sandbox_id,
                 "kind": kind, **fields}
        with self._lock:
            self.counts[kind] += 1
            if not self.fds:
                return event
            if len(self._queue) >= MAX_QUEUED or self.written + len(self._queue) >= MAX_EVENTS:
                self.lost += 1
                return event
            self._queue.append(event)
            if len(self._queue) >= WAKE_AT:  # else the writer comes by itself, every FLUSH_INTERVAL
                self._ready.notify()
        return event

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                while not self._closing:
                    # Woken rarely on purpose: each wake-up takes the interpreter from the
                    # threads that answer the workload's system calls.
                    self._ready.wait(FLUSH_INTERVAL)
                    if self._queue:
                        break
                if not self._queue and self._closing:
                    return
                batch = list(self._queue)
                self._queue.clear()
            lines = []
            for index, event in enumerate(batch):
                if index % 32 == 31:
                    time.sleep(0)  # let the threads that answer the workload have the interpreter
                if isinstance(event["time"], float):
                    event["time"] = iso(event["time"])
                lines.append(json.dumps(event, separators=(",", ":"), default=str) + "\n")
            data = "".join(lines).encode()
            for fd in list(self.fds):
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                except OSError as exc:  # a closed pipe, a full disk: that destination stops
                    self.errors.append(f"events not written any more ({exc.strerror or exc})")
                    self.fds.remove(fd)
                    os.close(fd)
            with self._lock:
                self.written += len(batch)

    def close(self) -> None:
        """Write what is queued (waiting at most FLUSH_TIMEOUT for a stalled reader), then close."""
        if self._thread is not None:
            if self.lost:
                with self._lock:
                    self._queue.append({"time": iso(time.time()), "t": round(time.monotonic() - self.started, 3),
                                        "sandbox": self.sandbox_id, "kind": "lost", "events": self.lost})
            with self._lock:
                self._closing = True
                self._ready.notify()
            self._thread.join(FLUSH_TIMEOUT)
            if self._thread.is_alive():
                self.errors.append("events: the reader stopped reading; the last events were dropped")
                return  # the thread keeps the fds: closing them under it would hit reused numbers
            self._thread = None
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


def open_destination(path: str) -> int:
    """An fd to append events to: "-" is this process's standard output (a file description of
    its own when it is a pipe or a file, so that nothing we do changes the caller's), else the
    file, created 0600."""
    if path == "-":
        try:
            return os.open("/proc/self/fd/1", os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError:
            return os.dup(1)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
