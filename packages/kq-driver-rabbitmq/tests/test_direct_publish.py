"""Publishes written straight to the socket (``_publish.DirectPublish``): the bytes pika would send, in
order with what pika still has to write, and pika's own path wherever the direct one does not apply."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pika
import pika.connection
import pika.frame
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport

from kq.drivers.rabbitmq._publish import DirectPublish, confirms, content_frames, method_frame

PROPERTIES = pika.BasicProperties(
    content_type="application/json", delivery_mode=2, message_id="m1", headers={"a": "b"}, app_id="kq"
)


class _Marshalled:
    """Just enough of a pika ``Connection`` for its own ``_send_message`` to marshal into a list."""

    def __init__(self, body_max_length: int) -> None:
        self._body_max_length = body_max_length
        self.frames: list[bytes] = []

    def _output_marshaled_frames(self, frames: list[bytes]) -> None:
        self.frames.extend(frames)


def _pikas(channel: int, exchange: str, key: str, body: bytes, mandatory: bool, body_max: int) -> list[bytes]:
    """The frames pika's connection itself marshals for this publish."""
    out = _Marshalled(body_max)
    method = pika.spec.Basic.Publish(exchange=exchange, routing_key=key, mandatory=mandatory)
    pika.connection.Connection._send_message(out, channel, method, (PROPERTIES, body))
    return out.frames


class _IO:
    """The I/O services pika's transport registers its watchers with (nothing is polled here)."""

    def __init__(self) -> None:
        self.writers: list[int] = []
        self.callbacks: list[Any] = []

    def set_reader(self, fd: int, callback: Any) -> None:
        pass

    def remove_reader(self, fd: int) -> bool:
        return True

    def set_writer(self, fd: int, callback: Any) -> None:
        self.writers.append(fd)

    def remove_writer(self, fd: int) -> bool:
        return True

    def add_callback_threadsafe(self, callback: Any) -> None:
        self.callbacks.append(callback)


class _Protocol:
    """pika's connection as its transport sees it: what it was handed, and an EOF closes it."""

    def __init__(self) -> None:
        self.received = b""

    def data_received(self, data: bytes) -> None:
        self.received += data

    def eof_received(self) -> bool:
        return False


class _IOLoop:
    def __init__(self) -> None:
        self.timeouts_processed = 0

    def process_timeouts(self) -> None:
        self.timeouts_processed += 1


class _Impl:
    is_open = True

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._body_max_length = 4096
        self.bytes_sent = 0
        self.frames_sent = 0
        self.bytes_received = 0
        self.frames_received = 0
        self._frame_buffer = b""
        self.ioloop = _IOLoop()


class _ChannelImpl:
    channel_number = 3
    is_open = True

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    def basic_publish(self, **kwargs: Any) -> None:
        self.published.append(kwargs)


class _Channel:
    def __init__(self) -> None:
        self._impl = _ChannelImpl()


class _Connection:
    def __init__(self, transport: Any) -> None:
        self._impl = _Impl(transport)


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    yield ours, broker
    ours.close()
    broker.close()


def _parts(ours: socket.socket) -> tuple[_Connection, _Channel, Any, _IO]:
    io = _IO()
    transport = _AsyncPlaintextTransport(ours, _Protocol(), io)
    return _Connection(transport), _Channel(), transport, io


def _recv(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += sock.recv(size - len(data))
    return data


@pytest.mark.parametrize(
    ("body", "body_max"), [(b"", 4096), (b"x" * 1024, 4096), (bytes(range(256)) * 40, 4088)]
)
def test_the_frames_are_pikas(body: bytes, body_max: int) -> None:
    """Method, header and body frames, the body cut where pika cuts it (10 KiB in pieces of 4088)."""
    ours = [method_frame(5, "jobs", "a.b", True), *content_frames(5, body, PROPERTIES, body_max)]
    assert ours == _pikas(5, "jobs", "a.b", body, True, body_max)


def test_a_publish_goes_to_the_socket_in_one_piece(sockets: tuple[socket.socket, socket.socket]) -> None:
    ours, broker = sockets
    connection, channel, transport, io = _parts(ours)
    publish = DirectPublish(connection, channel)
    assert publish.direct
    body = b"y" * 1024
    publish.publish("jobs", "a.b", body, PROPERTIES, False)
    publish.publish("jobs", "a.b", body, PROPERTIES, False)
    expected = b"".join(_pikas(3, "jobs", "a.b", body, False, 4096))
    assert _recv(broker, 2 * len(expected)) == expected * 2
    assert channel._impl.published == []  # pika's path was not taken
    assert (connection._impl.frames_sent, connection._impl.bytes_sent) == (6, 2 * len(expected))
    assert io.writers == []  # no writability watcher turned on
    assert transport.get_write_buffer_size() == 0


def test_pending_output_keeps_its_place(sockets: tuple[socket.socket, socket.socket]) -> None:
    """With a frame of pika's still buffered, the publish goes behind it, through basic_publish."""
    ours, _ = sockets
    connection, channel, transport, _ = _parts(ours)
    publish = DirectPublish(connection, channel)
    transport.write(b"earlier frame")
    publish.publish("jobs", "k", b"body", PROPERTIES, True)
    assert channel._impl.published == [
        {"exchange": "jobs", "routing_key": "k", "body": b"body", "properties": PROPERTIES, "mandatory": True}
    ]
    assert connection._impl.frames_sent == 0


def test_what_the_socket_does_not_take_is_left_to_pika(sockets: tuple[socket.socket, socket.socket]) -> None:
    ours, _ = sockets
    connection, channel, transport, io = _parts(ours)
    publish = DirectPublish(connection, channel)
    filler = b"x" * 65536
    while True:  # fill the socket's send buffer until it refuses more
        try:
            ours.send(filler)
        except BlockingIOError:
            break
    body = b"z" * 1024
    publish.publish("jobs", "k", body, PROPERTIES, False)
    expected = b"".join(_pikas(3, "jobs", "k", body, False, 4096))
    assert 0 < transport.get_write_buffer_size() <= len(expected)  # the rest waits in pika's buffer
    assert io.writers == [ours.fileno()]  # and pika's loop will write it
    assert channel._impl.published == []
    assert connection._impl.bytes_sent == len(expected)
    # A publish behind it keeps its place: pika's path.
    publish.publish("jobs", "k", body, PROPERTIES, False)
    assert len(channel._impl.published) == 1


@pytest.mark.parametrize("closed", ["channel", "connection"])
def test_a_closed_channel_or_connection_is_pikas_to_report(
    sockets: tuple[socket.socket, socket.socket], closed: str
) -> None:
    ours, broker = sockets
    connection, channel, _, _ = _parts(ours)
    publish = DirectPublish(connection, channel)
    (channel._impl if closed == "channel" else connection._impl).is_open = False
    publish.publish("jobs", "k", b"body", PROPERTIES, False)
    assert len(channel._impl.published) == 1  # pika raises its own wrong-state error there
    broker.setblocking(False)
    with pytest.raises(BlockingIOError):
        broker.recv(1024)


def test_another_transport_uses_basic_publish() -> None:
    class _TLS:  # not pika's plain-TCP transport
        _sock = None

        def get_write_buffer_size(self) -> int:
            return 0

    connection, channel = _Connection(_TLS()), _Channel()
    publish = DirectPublish(connection, channel)
    assert not publish.direct
    publish.publish("jobs", "k", b"body", PROPERTIES, False)
    assert len(channel._impl.published) == 1


def test_a_broken_socket_is_left_to_pika(sockets: tuple[socket.socket, socket.socket]) -> None:
    ours, broker = sockets
    connection, channel, _, _ = _parts(ours)
    publish = DirectPublish(connection, channel)
    broker.close()
    ours.shutdown(socket.SHUT_WR)  # any send now fails with EPIPE
    publish.publish("jobs", "k", b"body", PROPERTIES, False)
    assert len(channel._impl.published) == 1  # pika's path meets the error and reports it its own way
    assert connection._impl.frames_sent == 0


def test_a_wait_hands_what_comes_in_to_pika_and_runs_its_timers(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    ours, broker = sockets
    connection, channel, transport, _ = _parts(ours)
    publish = DirectPublish(connection, channel)
    protocol = transport._protocol
    broker.sendall(b"confirm")
    assert publish.wait(lambda: protocol.received == b"confirm", timeout=5)
    assert connection._impl.ioloop.timeouts_processed == 1


def test_a_wait_that_nothing_ends_is_left_to_pika_after_its_slice(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = sockets
    connection, channel, transport, _ = _parts(ours)
    publish = DirectPublish(connection, channel)
    assert not publish.wait(lambda: False, timeout=0.05)
    assert transport._protocol.received == b""


def test_pending_output_leaves_the_wait_to_pika(sockets: tuple[socket.socket, socket.socket]) -> None:
    """Something of pika's to write (a heartbeat, a close-ok): its loop writes it, and waits there."""
    ours, broker = sockets
    connection, channel, transport, _ = _parts(ours)
    publish = DirectPublish(connection, channel)
    broker.sendall(b"confirm")
    transport.write(b"heartbeat")
    assert not publish.wait(lambda: transport._protocol.received != b"", timeout=5)
    assert transport._protocol.received == b""  # not read here


def test_done_with_output_left_still_goes_to_pika(sockets: tuple[socket.socket, socket.socket]) -> None:
    """A timer that ran at the end queued a frame: the wait is over, but pika's loop must write it."""
    ours, _ = sockets
    connection, channel, transport, _ = _parts(ours)
    publish = DirectPublish(connection, channel)
    connection._impl.ioloop.process_timeouts = lambda: transport.write(b"heartbeat")  # type: ignore[method-assign]
    assert not publish.wait(lambda: True, timeout=5)


def test_a_broker_gone_is_pikas_to_report(sockets: tuple[socket.socket, socket.socket]) -> None:
    ours, broker = sockets
    connection, channel, transport, io = _parts(ours)
    publish = DirectPublish(connection, channel)
    broker.close()
    assert not publish.wait(lambda: False, timeout=5)
    assert transport._state != transport._STATE_ACTIVE  # pika's handler met the EOF and began its abort
    assert len(io.callbacks) == 1  # the connection-lost notice pika's loop delivers


def test_another_transport_waits_in_pikas_loop() -> None:
    connection, channel = _Connection(object()), _Channel()
    publish = DirectPublish(connection, channel)
    assert not publish.wait(lambda: True, timeout=5)


def _confirm(channel: int, tag: int, multiple: bool = False, nack: bool = False) -> bytes:
    method = pika.spec.Basic.Nack(tag, multiple) if nack else pika.spec.Basic.Ack(tag, multiple)
    return bytes(pika.frame.Method(channel, method).marshal())


@given(
    st.lists(st.tuples(st.integers(0, 2**64 - 1), st.booleans(), st.booleans()), min_size=1, max_size=5),
    st.integers(1, 65535),
)
def test_confirm_frames_read_as_pika_writes_them(found: list[tuple[int, bool, bool]], channel: int) -> None:
    data = b"".join(_confirm(channel, tag, multiple, nack) for tag, multiple, nack in found)
    assert confirms(data, channel) == found
    assert confirms(data, channel % 65535 + 1) is None  # another channel's
    assert confirms(data[:-1], channel) is None  # a frame cut short


@pytest.mark.parametrize(
    "frame",
    [
        pika.frame.Heartbeat().marshal(),
        pika.frame.Method(3, pika.spec.Basic.Return(312, "NO_ROUTE", "jobs", "k")).marshal(),
        pika.frame.Method(3, pika.spec.Channel.Close(406, "PRECONDITION_FAILED", 60, 40)).marshal(),
        pika.frame.Method(3, pika.spec.Basic.Reject(5)).marshal(),
        b"",
    ],
)
def test_anything_else_is_not_a_confirm(frame: bytes) -> None:
    assert confirms(frame, 3) is None
    assert confirms(_confirm(3, 1) + frame, 3) in (None, [(1, False, False)])
    if frame:
        assert confirms(_confirm(3, 1) + frame, 3) is None


def _confirming(ours: socket.socket) -> tuple[_Connection, DirectPublish, Any, list[tuple[int, bool, bool]]]:
    connection, channel, transport, _ = _parts(ours)
    seen: list[tuple[int, bool, bool]] = []

    def on_confirm(tag: int, multiple: bool, nack: bool) -> None:
        seen.append((tag, multiple, nack))

    publish = DirectPublish(connection, channel, on_confirm)
    return connection, publish, transport, seen


def test_confirms_alone_are_taken_without_pika(sockets: tuple[socket.socket, socket.socket]) -> None:
    ours, broker = sockets
    connection, publish, transport, seen = _confirming(ours)
    broker.sendall(_confirm(3, 4) + _confirm(3, 6, multiple=True, nack=True))
    assert publish.wait(lambda: len(seen) == 2, timeout=5)
    assert seen == [(4, False, False), (6, True, True)]
    assert transport._protocol.received == b""  # pika's reading was not needed
    assert (connection._impl.bytes_received, connection._impl.frames_received) == (42, 2)
    broker.sendall(b"next")  # nothing of the confirms was left behind in the socket
    assert publish.wait(lambda: transport._protocol.received == b"next", timeout=5)


def test_a_confirm_with_anything_else_is_all_pikas(sockets: tuple[socket.socket, socket.socket]) -> None:
    """A return before its confirm, a heartbeat: pika reads them all, in order, and dispatches."""
    ours, broker = sockets
    _, publish, transport, seen = _confirming(ours)
    data = pika.frame.Heartbeat().marshal() + _confirm(3, 4)
    broker.sendall(data)
    assert publish.wait(lambda: transport._protocol.received == data, timeout=5)
    assert seen == []


def test_a_frame_pika_holds_in_part_keeps_the_rest_pikas(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    ours, broker = sockets
    connection, publish, transport, seen = _confirming(ours)
    connection._impl._frame_buffer = b"\x01\x00"  # the start of a frame pika read before
    broker.sendall(_confirm(3, 4))
    assert publish.wait(lambda: transport._protocol.received != b"", timeout=5)
    assert seen == []


def test_another_channels_confirm_is_pikas(sockets: tuple[socket.socket, socket.socket]) -> None:
    ours, broker = sockets
    _, publish, transport, seen = _confirming(ours)
    broker.sendall(_confirm(4, 1))
    assert publish.wait(lambda: transport._protocol.received != b"", timeout=5)
    assert seen == []
