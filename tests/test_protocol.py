"""The child-to-parent messages: every kind round-trips through a real pipe, whichever way it was
formatted (by hand for integer-only messages, by json otherwise)."""
import json
import os

import pytest

from sandbox import protocol


def roundtrip(*messages):
    read_fd, write_fd = os.pipe()
    try:
        for kind, fields in messages:
            protocol.send(write_fd, kind, **fields)
        os.close(write_fd)
        write_fd = -1
        reader = protocol.Reader(read_fd)
        received = []
        while (message := reader.next(1.0)) is not None:
            received.append(message)
        return received
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


@pytest.mark.parametrize("kind, fields", [
    (protocol.READY, {}), (protocol.EXEC, {}), (protocol.INIT_PID, {"pid": 4242}),
    (protocol.EXIT, {"status": 0}), (protocol.EXIT, {"status": 9}), (protocol.EXIT, {"status": -1}),
    (protocol.WARNING, {"message": 'quotes " and \\ and a\nnewline, \u00e9'}),
    (protocol.ERROR, {"step": "mount", "errno": 2, "message": "/nonexistent: No such file"}),
    ("flag", {"value": True}), ("nothing", {"value": None}),
])
def test_every_message_round_trips(kind, fields):
    assert roundtrip((kind, fields)) == [{"kind": kind, **fields}]


def test_integer_messages_are_the_json_the_parent_expects():
    line = protocol._without_json(protocol.INIT_PID, {"pid": 7})
    assert json.loads(line) == {"kind": "init_pid", "pid": 7} and line.endswith(b"\n")
    assert protocol._without_json(protocol.WARNING, {"message": "x"}) is None  # strings go through json
    assert protocol._without_json("x", {"flag": True}) is None  # bool is an int subclass, but not JSON's


def test_an_oversized_message_is_cut_to_one_atomic_write():
    [message] = roundtrip((protocol.ERROR, {"step": "mount", "errno": 1, "message": "x" * 10_000}))
    assert message["kind"] == protocol.ERROR and 0 < len(message["message"]) <= protocol.PIPE_BUF


def test_a_garbled_line_is_reported_not_raised():
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"{not json\n")
    os.close(write_fd)
    try:
        message = protocol.Reader(read_fd).next(1.0)
    finally:
        os.close(read_fd)
    assert message["kind"] == protocol.ERROR and message["step"] == "protocol"
