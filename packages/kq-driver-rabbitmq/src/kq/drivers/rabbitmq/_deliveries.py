"""Deliveries read straight from the socket, instead of through pika's blocking I/O loop.

A delivery is three frames or more on the consumer's channel: ``basic.deliver`` (its delivery tag, the
redelivered flag, the exchange and the routing key), a content header (the body's size and the
message's properties: content type, headers, message id, ...) and the body in one frame or more. pika's
loop polls through its timer heap and poller, reads 4 KiB at a time, decodes every frame into objects
through its generic codecs, routes them through its content assembler, its channel's callback table
and the blocking adapter's event queue, and only then calls the consumer. Profiled on a no-op worker
(prefetch 16, 1 KiB messages, kq's four signature headers), that was two thirds of the worker's CPU;
reading them here took the worker from about 5,900 to 9,000 messages a second (medians of 5 alternating
runs of 20,000 messages).

**Reading.** :meth:`DirectDeliveries.pump` polls the socket itself. What came in is looked at first
without taking it (``MSG_PEEK``, up to 64 KiB), after the start of a frame pika read and could not
decode yet, if it holds one. When that starts with whole deliveries of this consumer (the three kinds
of frames, on this channel, with this consumer tag, sizes and frame ends as the protocol has them), and
pika holds nothing else of its own (no content half assembled, no event waiting to be dispatched),
exactly those bytes are taken (pika's part, then the socket's), decoded here, and handed to the
consumer in the order they came, with pika's byte and frame counters kept (its heartbeat checker reads
them). Whatever follows them stays in the socket. Taking over pika's partial frame matters under a
steady flow: pika reads 4 KiB at a time, so the frame it stops in is rarely complete, and without it
every read after the first one pika made would be pika's again. Anything else at the front (a heartbeat, a
``basic.cancel``, a channel or connection close, a delivery not complete yet, the end of the stream, an
error) is left to pika: its loop reads, decodes and dispatches it exactly as it would have. The timers
that fell due run after each read (heartbeats); output they queued is written by pika's loop.

**Decoding** gives what pika's own decoding gives, value for value: the method and the properties are
pika's classes, short strings and long strings are text when they are UTF-8 and bytes otherwise, and
header values of any type but a long string are decoded by pika's ``decode_value``. A test holds the two
equal on frames marshalled by pika.

Only the plain-TCP transport is read directly; on TLS, or with a pika whose internals differ from what
is checked here, every read is pika's.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
from collections.abc import Callable
from typing import Any

import pika.data
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from kq.drivers.rabbitmq._acks import plain_transport, pollable, quiet, readable

logger = logging.getLogger(__name__.replace("._", "."))

#: What the consumer is given for each delivery: the method, the properties and the body, as pika's
#: consumer callback has them.
DeliveryCallback = Callable[[pika.spec.Basic.Deliver, pika.spec.BasicProperties, bytes], None]

#: Bytes looked at before reading: a prefetch window of small messages, in one system call.
_PEEK_BYTES = 65536
#: A frame's type, channel and payload size.
_FRAME_HEAD = struct.Struct(">BHI")
#: Class and method ids in one (pika's ``INDEX``).
_U32 = struct.Struct(">I")
#: A content header after its class id: weight, body size, the first property flags.
_CONTENT_HEAD = struct.Struct(">HQH")
_U64 = struct.Struct(">Q")
_DELIVER = pika.spec.Basic.Deliver.INDEX
_BASIC_CLASS = pika.spec.Basic.INDEX
_METHOD, _HEADER, _BODY, _END = (
    pika.spec.FRAME_METHOD,
    pika.spec.FRAME_HEADER,
    pika.spec.FRAME_BODY,
    pika.spec.FRAME_END,
)
_LONG_STRING = ord("S")
_Properties = pika.spec.BasicProperties
#: An instance without ``__init__``: every property is set by :func:`_properties`.
_new_properties = object.__new__
_SHORT, _TABLE, _OCTET, _U64_KIND = range(4)
#: The properties of the basic class in their order on the wire: flag, name, how it is encoded.
_LAYOUT = (
    (_Properties.FLAG_CONTENT_TYPE, "content_type", _SHORT),
    (_Properties.FLAG_CONTENT_ENCODING, "content_encoding", _SHORT),
    (_Properties.FLAG_HEADERS, "headers", _TABLE),
    (_Properties.FLAG_DELIVERY_MODE, "delivery_mode", _OCTET),
    (_Properties.FLAG_PRIORITY, "priority", _OCTET),
    (_Properties.FLAG_CORRELATION_ID, "correlation_id", _SHORT),
    (_Properties.FLAG_REPLY_TO, "reply_to", _SHORT),
    (_Properties.FLAG_EXPIRATION, "expiration", _SHORT),
    (_Properties.FLAG_MESSAGE_ID, "message_id", _SHORT),
    (_Properties.FLAG_TIMESTAMP, "timestamp", _U64_KIND),
    (_Properties.FLAG_TYPE, "type", _SHORT),
    (_Properties.FLAG_USER_ID, "user_id", _SHORT),
    (_Properties.FLAG_APP_ID, "app_id", _SHORT),
    (_Properties.FLAG_CLUSTER_ID, "cluster_id", _SHORT),
)


class DirectDeliveries:
    """Reads the deliveries of one consumer from its connection's socket (see the module doc).

    Args:
        connection: The consumer's own connection (used by one thread at a time: the consumer's lock).
        channel: Its channel.
        consumer_tag: The tag ``basic_consume`` returned.
        on_delivery: Where each delivery goes (the consumer's buffer): called for the deliveries read
            here and, through the callback given to ``basic_consume``, for those pika reads.
    """

    def __init__(
        self,
        connection: BlockingConnection,
        channel: BlockingChannel,
        consumer_tag: str,
        on_delivery: DeliveryCallback,
    ) -> None:
        self._connection: Any = connection
        self._channel: Any = channel
        self._impl_channel: Any = getattr(channel, "_impl", None)
        self._consumer_tag = consumer_tag
        self._on_delivery = on_delivery
        found = plain_transport(connection)
        impl: Any = found[0] if found else None
        transport: Any = found[1] if found else None
        assembler = getattr(self._impl_channel, "_content_assembler", None)
        usable = (
            found is not None
            and pollable(impl, transport)
            and readable(impl)
            and hasattr(assembler, "_method_frame")
            and isinstance(getattr(connection, "_channels_pending_dispatch", None), set)
            and hasattr(connection, "_ready_events")
            and hasattr(channel, "_pending_events")
            and isinstance(getattr(self._impl_channel, "channel_number", None), int)
        )
        self._impl: Any = impl if usable else None
        self._transport: Any = transport if usable else None
        self._poller: Any = None
        if usable:
            self._poller = select.poll()
            self._poller.register(transport._sock.fileno(), select.POLLIN)
        else:
            logger.debug("deliveries are read by pika (transport %s)", type(transport).__name__)

    @property
    def direct(self) -> bool:
        """Whether deliveries can be read from the socket here (plain TCP, pika's internals as expected)."""
        return self._transport is not None

    def pump(self, seconds: float) -> None:
        """Wait up to ``seconds`` for what the broker sends and take it in: deliveries read here when
        they come first, everything else through pika's loop (which also raises its errors)."""
        if self._transport is not None and self._plain():
            if self._poller.poll(max(0.0, seconds) * 1000):
                if self._take():
                    self._impl.ioloop.process_timeouts()  # heartbeats and pika's callbacks that fell due
                    if self._plain():
                        return
                    seconds = 0.0  # what is left is pika's: output the timers queued, a half-read frame
            else:
                self._impl.ioloop.process_timeouts()
                if self._plain():
                    return
                seconds = 0.0
        self._connection.process_data_events(time_limit=seconds)

    def _plain(self) -> bool:
        """pika holds nothing of its own but, perhaps, the start of a frame: nothing to write, no content
        half assembled, no event waiting for dispatch; the transport active, the connection and channel
        open."""
        channel = self._impl_channel
        return (
            quiet(self._transport, self._impl)
            and channel.is_open
            and channel._content_assembler._method_frame is None
            and not self._connection._channels_pending_dispatch
            and not self._connection._ready_events
            and not self._channel._pending_events
        )

    def _take(self) -> bool:
        """Take the whole deliveries at the front of what came in (after pika's partial frame) and hand
        them over; ``False``, with everything left where it was, when something else comes first."""
        sock = self._transport._sock
        impl = self._impl
        held: bytes = impl._frame_buffer
        try:
            peeked = sock.recv(_PEEK_BYTES, socket.MSG_PEEK)
        except OSError:
            return False  # nothing was taken: pika's read meets the same error and reports it
        data = held + peeked if held else peeked
        found, consumed, frames = deliveries(data, self._impl_channel.channel_number, self._consumer_tag)
        from_socket = consumed - len(held)
        if not found or from_socket < 0:  # pika's partial frame is one, so never negative: pika's, if so
            return False
        try:
            taken = sock.recv(from_socket)  # what was looked at: already there, so all of it
        except OSError:  # pragma: no cover - a peeked stream gives its bytes; pika's, if not
            return False
        if taken != peeked[:from_socket]:  # pragma: no cover - a stream gives the same bytes twice
            self._transport._protocol.data_received(taken)
            return True
        impl._frame_buffer = b""
        # pika's counters, as its own reading keeps them (the heartbeat checker watches bytes_received).
        self._impl.bytes_received += consumed
        self._impl.frames_received += frames
        on_delivery = self._on_delivery
        for method, properties, body in found:
            on_delivery(method, properties, body)
        return True


def deliveries(
    data: bytes, channel_number: int, consumer_tag: str
) -> tuple[list[tuple[pika.spec.Basic.Deliver, pika.spec.BasicProperties, bytes]], int, int]:
    """The whole deliveries at the front of ``data`` for ``consumer_tag`` on channel ``channel_number``,
    decoded as pika decodes them, with the number of bytes and of frames they take; it stops before the
    first thing that is not one (an incomplete delivery included)."""
    found: list[tuple[pika.spec.Basic.Deliver, pika.spec.BasicProperties, bytes]] = []
    offset = 0
    frames = 0
    size = len(data)
    while True:
        try:
            taken = _delivery(data, offset, size, channel_number, consumer_tag)
        except Exception:  # malformed or cut short (struct, index, pika's field type errors)
            taken = None  # pika reads it, and reports what it finds
        if taken is None:
            return found, offset, frames
        delivery, offset, count = taken
        found.append(delivery)
        frames += count


def _delivery(
    data: bytes, offset: int, size: int, channel_number: int, consumer_tag: str
) -> tuple[tuple[pika.spec.Basic.Deliver, pika.spec.BasicProperties, bytes], int, int] | None:
    """One whole delivery at ``offset``: (method, properties, body), where it ends, its frame count."""
    # basic.deliver
    payload, end = _frame(data, offset, size, _METHOD, channel_number)
    if payload < 0 or _U32.unpack_from(data, payload)[0] != _DELIVER:
        return None
    tag, position = _short_string(data, payload + 4)
    if tag != consumer_tag:
        return None
    delivery_tag = _U64.unpack_from(data, position)[0]
    redelivered = bool(data[position + 8] & 1)
    exchange, position = _short_string(data, position + 9)
    routing_key, position = _short_string(data, position)
    if position != end:
        return None
    method = pika.spec.Basic.Deliver(consumer_tag, delivery_tag, redelivered, exchange, routing_key)
    # content header
    payload, end = _frame(data, end + 1, size, _HEADER, channel_number)
    if payload < 0 or (data[payload] << 8 | data[payload + 1]) != _BASIC_CLASS:
        return None
    _weight, body_size, flags = _CONTENT_HEAD.unpack_from(data, payload + 2)
    if flags & 1:
        return None  # a second flag word: no property of basic uses one; pika's
    properties, position = _properties(data, payload + 14, flags)
    if position != end:
        return None
    # body frames
    offset = end + 1
    count = 2
    pieces: list[bytes] = []
    received = 0
    while received < body_size:
        payload, end = _frame(data, offset, size, _BODY, channel_number)
        if payload < 0 or end == payload:
            return None
        pieces.append(data[payload:end])
        received += end - payload
        offset = end + 1
        count += 1
    if received != body_size:
        return None
    body = pieces[0] if len(pieces) == 1 else b"".join(pieces)  # b"" when there is no body frame
    return (method, properties, body), offset, count


def _frame(data: bytes, offset: int, size: int, kind: int, channel_number: int) -> tuple[int, int]:
    """Where the payload of the whole frame of ``kind`` on ``channel_number`` at ``offset`` starts and
    ends (its frame end byte is at the end); ``(-1, -1)`` when it is another frame, or not all here."""
    if offset + 7 > size:
        return -1, -1
    frame_kind, channel, length = _FRAME_HEAD.unpack_from(data, offset)
    start = offset + 7
    end = start + length
    if frame_kind != kind or channel != channel_number or end >= size or data[end] != _END:
        return -1, -1
    return start, end


def _short_string(data: bytes, offset: int) -> tuple[Any, int]:
    """A short string, as pika decodes it: text when UTF-8, bytes otherwise."""
    end = offset + 1 + data[offset]
    value: Any = data[offset + 1 : end]
    try:  # noqa: SIM105 - contextlib.suppress costs a context manager per string, on every delivery
        value = value.decode()
    except UnicodeDecodeError:
        pass
    return value, end


def _table(data: bytes, offset: int) -> tuple[dict[Any, Any], int]:
    """A field table, as pika decodes it: long strings here (what kq's headers are), the rest by pika."""
    end = offset + 4 + _U32.unpack_from(data, offset)[0]
    offset += 4
    table: dict[Any, Any] = {}
    while offset < end:
        key, offset = _short_string(data, offset)
        if data[offset] == _LONG_STRING:
            start = offset + 5
            offset = start + _U32.unpack_from(data, offset + 1)[0]
            value: Any = data[start:offset]
            try:  # noqa: SIM105 - as in _short_string
                value = value.decode()
            except UnicodeDecodeError:
                pass
        else:
            value, offset = pika.data.decode_value(data, offset)
        table[key] = value
    if offset != end:
        raise ValueError("a field table overruns its size")
    return table, offset


def _properties(data: bytes, offset: int, flags: int) -> tuple[pika.spec.BasicProperties, int]:
    """The properties of a content header, in the order and with the flags of AMQP 0-9-1's basic class,
    every one set (``None`` when absent) as pika's own ``BasicProperties.decode`` sets them."""
    properties: Any = _new_properties(_Properties)
    values = properties.__dict__
    for flag, name, kind in _LAYOUT:
        if not flags & flag:
            values[name] = None
        elif kind == _SHORT:
            values[name], offset = _short_string(data, offset)
        elif kind == _OCTET:
            values[name] = data[offset]
            offset += 1
        elif kind == _TABLE:
            values[name], offset = _table(data, offset)
        else:
            values[name] = _U64.unpack_from(data, offset)[0]
            offset += 8
    return properties, offset
