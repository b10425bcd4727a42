"""kq's frame parser against stomp.py's: the same frames out of the same bytes, and installed only where
stomp.py has the step it replaces; the other per-message shortcuts of the consumer and the close."""

from __future__ import annotations

import random
import socket
import threading
from typing import Any

import pytest
import stomp  # type: ignore[import-untyped,unused-ignore]
import stomp.utils  # type: ignore[import-untyped,unused-ignore]

from kq.drivers.stomp import _wire
from kq.drivers.stomp._connection import Session, Settings
from kq.drivers.stomp._frames import install, parse_frame
from kq.drivers.stomp._wire import is_broker_header, producer_header_names

_MESSAGE = (
    b"MESSAGE\nsubscription:s1\ndestination:/queue/q\nmessage-id:T_s1@@session-x@@1\nredelivered:false\n"
    b"ack:T_s1@@session-x@@1\ncontent-type:application/json\nkq-message-id:abc\ncontent-length:7\n\n"
    b'{"a":1}'
)

_FRAMES = [
    _MESSAGE,
    b"RECEIPT\nreceipt-id:r-1\n\n",
    b"CONNECTED\r\nversion:1.2\r\nheart-beat:10000,10000\r\n\r\n",
    b"MESSAGE\r\na:b\n\r\nbody\r\n",  # CRLF and LF mixed
    b"MESSAGE\na:1\na:2\nb\\c:x\\ny\\\\z\\t\n\n",  # repeated name, escapes, an unknown escape
    b"MESSAGE\n:no-name\nno-colon\nempty:\nc:d:e\n\nbody with\n\nblank lines",
    b"\n\r\nERROR\nmessage:bad\n\nsomething went wrong",  # blank lines before the command
    b"\n\n",
    b"",
    b"\r",
    b"MESSAGE",
    b"MESSAGE\nx:\xff\xfe\n\n\xff",  # not UTF-8
    b"MESSAGE\nk\\:v\n\n",  # a trailing backslash in the name
    b"MESSAGE\r\n\r\n\r\n",
    b"MESSAGE\r\nk:v\r\r\n\n",
]


def _same(data: bytes) -> None:
    expected = stomp.utils.parse_frame(data)
    got = parse_frame(data)
    if expected is None:
        assert got is None, data
        return
    assert got is not None, data
    assert (got.cmd, got.headers, got.body) == (expected.cmd, expected.headers, expected.body), data
    assert got.original_headers == expected.original_headers


@pytest.mark.parametrize("data", _FRAMES)
def test_parse_frame_reads_what_stomp_py_reads(data: bytes) -> None:
    _same(data)


def test_parse_frame_reads_what_stomp_py_reads_on_generated_frames() -> None:
    pieces = [b"\n", b"\r", b"\r\n", b":", b"\\", b"\\c", b"\\n", b"\\r", b"\\\\", b"\\x", b"a", b"bc"]
    pieces += [b"\xc3\xa9", b"\xff"]  # UTF-8, and not
    rng = random.Random(15)
    for _ in range(5000):
        _same(b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 24))))


def test_installed_on_a_session_and_frames_reach_the_listeners() -> None:
    """A session parses with kq's parser, and what stomp.py's loop reads through it arrives as stomp.py
    would deliver it (MESSAGE to the callback, RECEIPT to the receipts, heart-beats to the listener)."""
    received: list[Any] = []
    session = Session(Settings(hosts=(("127.0.0.1", 9),)), "test", on_message=received.append)
    transport = session.connection.transport
    assert transport._BaseTransport__read_frames.__name__ == "read_frames"
    heartbeats: list[None] = []
    listener = stomp.ConnectionListener()
    listener.on_heartbeat = lambda: heartbeats.append(None)
    session.connection.set_listener("probe", listener)
    ours, theirs = socket.socketpair()
    try:
        transport.socket = ours
        transport.running = True
        theirs.sendall(b"RECEIPT\nreceipt-id:r-1\n\n\x00" + _MESSAGE + b"\x00\n")
        reader = threading.Thread(target=transport._BaseTransport__read_frames)
        reader.start()
        reader.join(5)
        theirs.sendall(b"\n")
        transport._BaseTransport__read_frames()
    finally:
        transport.running = False
        theirs.close()
        ours.close()
    assert [(f.cmd, f.headers, f.body) for f in received] == [
        (f.cmd, f.headers, f.body) for f in [stomp.utils.parse_frame(_MESSAGE)]
    ]
    got, _ = session.wait_receipts(["r-1"], 0)
    assert got == {"r-1"}
    assert heartbeats == [None]


class _Recorder(stomp.ConnectionListener):  # type: ignore[misc]
    def __init__(self, name: str, calls: list[tuple[str, str]]) -> None:
        self.name = name
        self.calls = calls

    def on_before_message(self, frame: Any) -> None:
        self.calls.append((self.name, "before " + frame.headers["n"]))

    def on_message(self, frame: Any) -> None:
        self.calls.append((self.name, "message " + frame.headers["n"]))


def test_messages_reach_the_listeners_as_through_stomp_py() -> None:
    """The MESSAGE frames kq hands over itself reach every listener in the order stomp.py's
    process_frame would call them, the heart-beat listener included (a message counts as a sign of
    life)."""
    calls: dict[str, list[tuple[str, str]]] = {"kq": [], "stomp.py": []}
    for who, record in calls.items():
        connection = stomp.Connection12([("127.0.0.1", 9)], auto_decode=False)
        transport = connection.transport
        for name in ("b", "a", "c"):
            connection.set_listener(name, _Recorder(name, record))
        if who == "kq":
            assert install(transport)
        heartbeats = connection.get_listener("protocol-listener")
        heartbeats.received_heartbeat = 0.0
        ours, theirs = socket.socketpair()
        try:
            transport.socket = ours
            transport.running = True
            theirs.sendall(b"MESSAGE\nn:1\n\n\x00MESSAGE\nn:2\n\n\x00")
            transport._BaseTransport__read_frames()
        finally:
            transport.running = False
            theirs.close()
            ours.close()
        assert heartbeats.received_heartbeat > 0.0
    assert calls["kq"] == calls["stomp.py"]
    assert calls["kq"][:3] == [("a", "before 1"), ("b", "before 1"), ("c", "before 1")]


def test_not_installed_where_stomp_py_decodes_bodies_or_lacks_the_step() -> None:
    decoding = stomp.Connection12([("127.0.0.1", 9)], auto_decode=True).transport
    assert not install(decoding)
    assert decoding._BaseTransport__read_frames.__name__ != "read_frames"

    class Old:
        auto_decode = False

    assert not install(Old())


def test_producer_header_names_are_those_no_broker_adds() -> None:
    names = ("message-id", "ack", "x-custom", "kq-message-id", "JMSType", "tenant", "x odd")
    expected = tuple(name for name in names if not is_broker_header(name))
    assert expected == ("x-custom", "tenant", "x odd")
    assert producer_header_names(names) == expected
    assert producer_header_names(names) == expected  # the second time from the cache
    for index in range(_wire._PRODUCER_NAMES_MAX + 5):  # a foreign producer varying its names
        assert producer_header_names(("ack", f"h{index}")) == (f"h{index}",)
    assert len(_wire._PRODUCER_NAMES) <= _wire._PRODUCER_NAMES_MAX


def test_close_turns_nagle_off_so_disconnect_is_not_held_back() -> None:
    """DISCONNECT right after a small ACK would wait for the broker's delayed TCP acknowledgement (40 ms
    on Linux) with Nagle's algorithm on; close turns it off first."""
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    try:
        session = Session(Settings(hosts=(("127.0.0.1", 9),)), "test")
        session.connection.transport.socket = client
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        session._no_delay()
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        client.close()
        server.close()
