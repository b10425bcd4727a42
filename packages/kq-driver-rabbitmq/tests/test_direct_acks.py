"""Acks written straight to the socket (``_acks.DirectAcks``): the bytes pika would send, in order with
what pika still has to write, and pika's own path wherever the direct one does not apply."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport

from kq.drivers.rabbitmq._acks import DirectAcks, ack_frame


def _expected(channel: int, tag: int) -> bytes:
    """basic.ack written out by hand from the AMQP 0-9-1 spec: method frame (type 1), channel, payload
    size 13, class 60 (basic), method 80 (ack), the 64-bit tag, the "multiple" bit off, frame end."""
    payload = (60).to_bytes(2, "big") + (80).to_bytes(2, "big") + tag.to_bytes(8, "big") + b"\x00"
    return b"\x01" + channel.to_bytes(2, "big") + len(payload).to_bytes(4, "big") + payload + b"\xce"


class _IO:
    """The I/O services pika's transport registers its watchers with (nothing is polled here)."""

    def __init__(self) -> None:
        self.writers: list[int] = []

    def set_reader(self, fd: int, callback: Any) -> None:
        pass

    def set_writer(self, fd: int, callback: Any) -> None:
        self.writers.append(fd)

    def remove_writer(self, fd: int) -> bool:
        return True


class _Impl:
    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.bytes_sent = 0
        self.frames_sent = 0


class _Channel:
    channel_number = 3
    is_open = True

    def __init__(self) -> None:
        self.acked: list[int] = []

    def basic_ack(self, delivery_tag: int) -> None:
        self.acked.append(delivery_tag)


class _Connection:
    def __init__(self, transport: Any) -> None:
        self._impl = _Impl(transport)
        self.flushed = 0

    def _flush_output(self) -> None:
        self.flushed += 1


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    yield ours, broker
    ours.close()
    broker.close()


def _parts(ours: socket.socket) -> tuple[_Connection, _Channel, Any]:
    transport = _AsyncPlaintextTransport(ours, object(), _IO())
    return _Connection(transport), _Channel(), transport


def test_the_frame_is_pikas_and_the_specs() -> None:
    assert ack_frame(3, 5) == _expected(3, 5)
    assert ack_frame(1, 2**40 + 7) == _expected(1, 2**40 + 7)


def test_an_ack_goes_to_the_socket_when_nothing_waits(sockets: tuple[socket.socket, socket.socket]) -> None:
    ours, broker = sockets
    connection, channel, _ = _parts(ours)
    acks = DirectAcks(connection, channel)
    assert acks.direct
    acks.ack(7)
    acks.ack(8)
    assert broker.recv(1024) == _expected(3, 7) + _expected(3, 8)
    assert channel.acked == []  # pika's blocking path was not taken
    assert (connection._impl.frames_sent, connection._impl.bytes_sent) == (2, 2 * len(_expected(3, 7)))
    assert connection.flushed == 0


def test_pending_output_keeps_its_place(sockets: tuple[socket.socket, socket.socket]) -> None:
    """With a frame of pika's still buffered, the ack goes behind it, through basic_ack."""
    ours, _ = sockets
    connection, channel, transport = _parts(ours)
    acks = DirectAcks(connection, channel)
    transport.write(b"earlier frame")
    acks.ack(9)
    assert channel.acked == [9]


def test_what_the_socket_does_not_take_is_left_to_pika(sockets: tuple[socket.socket, socket.socket]) -> None:
    ours, _ = sockets
    connection, channel, transport = _parts(ours)
    acks = DirectAcks(connection, channel)
    # Fill the socket's send buffer until it refuses more.
    filler = b"x" * 65536
    while True:
        try:
            ours.send(filler)
        except BlockingIOError:
            break
    acks.ack(11)
    assert transport.get_write_buffer_size() > 0  # the rest of the frame waits in pika's buffer
    assert connection.flushed == 1  # and pika's loop was asked to write it
    assert channel.acked == []


def test_another_transport_uses_basic_ack() -> None:
    class _TLS:  # not pika's plain-TCP transport
        _sock = None

        def get_write_buffer_size(self) -> int:
            return 0

    connection, channel = _Connection(_TLS()), _Channel()
    acks = DirectAcks(connection, channel)
    assert not acks.direct
    acks.ack(4)
    assert channel.acked == [4]


def test_a_broken_socket_is_left_to_pika(sockets: tuple[socket.socket, socket.socket]) -> None:
    ours, broker = sockets
    connection, channel, _ = _parts(ours)
    acks = DirectAcks(connection, channel)
    broker.close()
    ours.shutdown(socket.SHUT_WR)  # any send now fails with EPIPE
    acks.ack(12)
    assert channel.acked == [12]  # pika's path meets the error and reports it its own way


def test_held_acks_leave_together_in_one_write(sockets: tuple[socket.socket, socket.socket]) -> None:
    """Each held ack is its own frame for its own delivery, in order; one send carries them all."""
    ours, broker = sockets
    connection, channel, _ = _parts(ours)
    acks = DirectAcks(connection, channel)
    for tag in (21, 22, 23):
        acks.add(tag)
    assert acks.pending == 3
    broker.setblocking(False)
    with pytest.raises(BlockingIOError):
        broker.recv(1024)  # nothing written before the flush
    acks.flush()
    assert acks.pending == 0
    assert broker.recv(1024) == _expected(3, 21) + _expected(3, 22) + _expected(3, 23)
    assert (connection._impl.frames_sent, connection._impl.bytes_sent) == (3, 3 * len(_expected(3, 21)))
    acks.flush()  # nothing held: nothing written
    with pytest.raises(BlockingIOError):
        broker.recv(1024)
    acks.add(24)
    acks.ack(25)  # an ack sent now takes the held ones with it, first
    assert broker.recv(1024) == _expected(3, 24) + _expected(3, 25)


def test_held_acks_behind_pikas_output_go_through_basic_ack_in_order(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = sockets
    connection, channel, transport = _parts(ours)
    acks = DirectAcks(connection, channel)
    acks.add(31)
    acks.add(32)
    transport.write(b"earlier frame")
    acks.flush()
    assert channel.acked == [31, 32]
    assert acks.pending == 0
