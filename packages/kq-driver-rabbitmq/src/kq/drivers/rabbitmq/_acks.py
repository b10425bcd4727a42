"""Acknowledgements written straight to the socket, instead of through pika's blocking I/O loop.

``BlockingChannel.basic_ack`` queues the frame in pika's transport, then runs the I/O loop until it is
written: it turns on the writability watcher, polls, sends, and turns the watcher off again, two
``epoll_ctl`` calls, a poll and a send for 21 bytes. On a consumer handling thousands of messages a
second that loop cost more than the rest of the driver's work per message (profiled: 125-180 µs of
CPU per message with it, 93-95 µs without, prefetch 16, 1 KiB messages).

An ack frame needs no answer, so when pika has nothing else waiting to be written (frames must keep
their order on the wire), :class:`DirectAcks` writes it to the non-blocking socket itself. What the
socket does not take at once (a full send buffer) is handed to pika's transport and written by its
loop as before. The ack is on its way to the broker when ``ack`` returns, as with pika's own call.

Only the plain-TCP transport is written to directly; on TLS, or with a pika whose internals differ
from what is checked here (``_impl``, ``_transport``, ``_sock``), every ack goes through
``basic_ack``. A failed send is left to ``basic_ack`` too, which reports the broken connection the
way the rest of the driver expects.

Acks can also wait a moment to leave together (:meth:`DirectAcks.add`, then :meth:`DirectAcks.flush`):
the consumer does so while more deliveries are already buffered, so that a burst of short handlers
costs one send, and one wake-up of the broker, instead of one each. Each ack is still its own frame
for its own delivery, sent after its handler returned; the consumer bounds the wait (see
``_consumer.py``).
"""

from __future__ import annotations

import logging
import select
import socket
import struct
from typing import Any

import pika.spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

logger = logging.getLogger(__name__.replace("._", "."))

try:  # pika's plain-TCP transport; absent or renamed in another pika, and then nothing is direct
    from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport as _PlainTransport
except ImportError:  # pragma: no cover - depends on the installed pika
    _PlainTransport = None


#: A ``basic.ack`` frame: type 1 (method), channel, payload size 13, class 60 (basic), method 80 (ack),
#: delivery tag, bits (``multiple`` off), frame end 0xCE.
_ACK_FRAME = struct.Struct(">BHIIQBB")
_ACK_METHOD = pika.spec.Basic.Ack.INDEX  # class and method ids in one


def ack_frame(channel_number: int, delivery_tag: int) -> bytes:
    """The AMQP ``basic.ack`` frame for one delivery, byte for byte as pika marshals it (a test holds
    them equal), packed directly: pika's frame objects cost more than the rest of an ack."""
    return _ACK_FRAME.pack(
        pika.spec.FRAME_METHOD, channel_number, 13, _ACK_METHOD, delivery_tag, 0, pika.spec.FRAME_END
    )


def plain_transport(connection: BlockingConnection) -> tuple[Any, Any] | None:
    """pika's connection implementation and its plain-TCP transport, when kq can write to the socket
    itself (pika's internals as this module and ``_publish.py`` use them); ``None`` otherwise (TLS,
    another pika)."""
    impl: Any = getattr(connection, "_impl", None)
    transport = getattr(impl, "_transport", None)
    if (
        _PlainTransport is not None
        and isinstance(transport, _PlainTransport)
        and isinstance(getattr(transport, "_sock", None), socket.socket)
        and hasattr(transport, "get_write_buffer_size")
        and hasattr(impl, "bytes_sent")
        and hasattr(impl, "frames_sent")
    ):
        return impl, transport
    return None


def pollable(impl: Any, transport: Any) -> bool:
    """Whether kq can wait on the socket itself (``_publish.py``, ``_deliveries.py``): the transport's
    state can be read, pika's loop runs its due timers on request, and ``poll`` exists here."""
    return (
        hasattr(transport, "_state")
        and hasattr(transport, "_STATE_ACTIVE")
        and callable(getattr(getattr(impl, "ioloop", None), "process_timeouts", None))
        and hasattr(select, "poll")
    )


def readable(impl: Any) -> bool:
    """Whether kq can take bytes from the socket itself: pika's frame buffer and its byte and frame
    counters are where kq keeps them as pika would, and ``MSG_PEEK`` exists here."""
    return (
        isinstance(getattr(impl, "_frame_buffer", None), bytes)
        and hasattr(impl, "bytes_received")
        and hasattr(impl, "frames_received")
        and hasattr(socket, "MSG_PEEK")
    )


def quiet(transport: Any, impl: Any) -> bool:
    """Nothing waits to be written, the transport is active and the connection open: what kq writes or
    reads itself cannot come out of order with pika's own."""
    return (
        not transport.get_write_buffer_size()
        and transport._sock is not None
        and transport._state == transport._STATE_ACTIVE
        and impl.is_open
    )


class DirectAcks:
    """Writes the ack frames of one consumer's channel to its connection's socket (see module doc).

    Args:
        connection: The consumer's own connection (used by one thread at a time: the consumer's lock).
        channel: Its channel.
    """

    def __init__(self, connection: BlockingConnection, channel: BlockingChannel) -> None:
        self._connection = connection
        self._channel = channel
        self._pending: list[int] = []
        found = plain_transport(connection) if hasattr(connection, "_flush_output") else None
        self._impl: Any = found[0] if found else None
        self._transport: Any = found[1] if found else None
        if found is None:
            transport = getattr(getattr(connection, "_impl", None), "_transport", None)
            logger.debug("acks go through pika's basic_ack (transport %s)", type(transport).__name__)

    @property
    def direct(self) -> bool:
        """Whether acks can be written to the socket here (plain TCP, pika's internals as expected)."""
        return self._transport is not None

    @property
    def pending(self) -> int:
        """How many acks :meth:`add` holds, not written yet."""
        return len(self._pending)

    def ack(self, delivery_tag: int) -> None:
        """Send the ack of ``delivery_tag`` now (with any held by :meth:`add` before it)."""
        self._pending.append(delivery_tag)
        self.flush()

    def add(self, delivery_tag: int) -> None:
        """Hold the ack of ``delivery_tag`` until the next :meth:`flush`."""
        self._pending.append(delivery_tag)

    def flush(self) -> None:
        """Send the acks held: to the socket in one write when nothing else waits to be written,
        through ``basic_ack`` otherwise (or when the socket refuses)."""
        if not self._pending:
            return
        tags, self._pending = self._pending, []
        transport = self._transport
        if (
            transport is None
            or transport.get_write_buffer_size()
            or transport._sock is None
            or not self._channel.is_open
        ):
            for tag in tags:
                self._channel.basic_ack(delivery_tag=tag)
            return
        number = self._channel.channel_number
        data = b"".join([ack_frame(number, tag) for tag in tags])
        try:
            sent = transport._sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # The connection broke: pika's own path meets the same error and reports it as pika does.
            for tag in tags:
                self._channel.basic_ack(delivery_tag=tag)
            return
        # pika's counters, as its own _output_marshaled_frames keeps them.
        self._impl.bytes_sent += len(data)
        self._impl.frames_sent += len(tags)
        if sent < len(data):
            transport.write(data[sent:])
            self._connection._flush_output()
