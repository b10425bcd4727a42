"""The consumer: ``basic_consume`` with manual acks, pumped by the caller, kept alive during handlers.

pika's connections are not thread-safe and exchange heartbeats only while somebody pumps their event
loop. ``receive`` pumps the connection in the caller's thread, exactly as plain pika would, and ``ack``
sends at once, written straight to the socket when pika has nothing else to write (:mod:`._acks`): the
per-message path pays no thread hand-off. Between the two, while the handler runs
(a command may take hours), nobody would pump, heartbeats would stop and the broker would drop the
connection with the unacknowledged message (pika issues #418, #1104). So a keeper thread pumps the
connection while a delivery is out, every quarter of the heartbeat interval. One lock decides who
touches the connection; the keeper only ever takes it when it is free and the caller is busy elsewhere.

Closing cancels the consumer and closes the channel: the broker requeues whatever was delivered and
not acknowledged (prefetched messages included).
"""

from __future__ import annotations

import collections
import datetime
import decimal
import json
import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any, cast

import pika
import pika.exceptions
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from kq.core.driver import DRIVER_REDELIVERY as REDELIVERY_HEADER
from kq.core.driver import DRIVER_ROUTING_KEY as ROUTING_KEY_HEADER
from kq.core.driver import Consumer, Delivery, QueueSpec
from kq.drivers.rabbitmq._acks import DirectAcks
from kq.drivers.rabbitmq._connection import close_quietly
from kq.drivers.rabbitmq._deliveries import DirectDeliveries
from kq.drivers.rabbitmq._topology import Topology

if TYPE_CHECKING:
    from kq.drivers.rabbitmq._driver import RabbitMQDriver
    from kq.drivers.rabbitmq._producer import RabbitMQProducer

logger = logging.getLogger(__name__.replace("._", "."))
#: Headers RabbitMQ itself adds to messages; kq takes them off deliveries.
BROKER_HEADERS = frozenset(
    {
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
    }
)

#: Longest single pump of the connection inside ``receive``, so that a stop request is seen promptly.
_PUMP_SLICE = 0.5
#: Most acks held back to leave together while more deliveries are buffered (see ``_ack``); never more
#: than half the prefetch (see ``ack_batch``).
_ACK_BATCH = 16
#: Seconds the keeper thread lets held acks wait for the consumer to send them itself; a handler that
#: runs longer than this does not delay the acks of the messages handled before it.
_ACK_DELAY = 0.005


def ack_batch(prefetch: int) -> int:
    """How many acks may wait to leave together on a consumer with this prefetch (0: no limit).

    At most half the prefetch: the broker sends the next deliveries as acks free its window, so acks
    held until the whole window was handled would leave the consumer waiting a round trip for each
    window (profiled, then measured: 4 to 10 % of a no-op worker's rate at prefetch 16); with half, the
    next deliveries arrive while the rest of the window is handled.
    """
    if prefetch <= 0:
        return _ACK_BATCH
    return max(1, min(_ACK_BATCH, prefetch // 2))


class RabbitMQConsumer(Consumer):
    """Consumes one AMQP queue with manual acknowledgements and a prefetch (QoS) limit."""

    driver: RabbitMQDriver

    def __init__(
        self, driver: RabbitMQDriver, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int
    ) -> None:
        super().__init__(driver, queue, routing_keys, prefetch)
        self.topology = Topology.of(queue, routing_keys)
        self._buffer: collections.deque[Delivery] = collections.deque()
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        # Deliveries handed out and not settled yet: while there are any, the keeper pumps.
        self._outstanding = 0
        self._connection: BlockingConnection = driver.connect()
        try:
            channel = self._connection.channel()
            self.topology.declare(channel, queue, driver.describe())
            channel.basic_qos(prefetch_count=prefetch)
            self._consumer_tag = channel.basic_consume(self.topology.queue, self._on_message, auto_ack=False)
        except BaseException:
            close_quietly(self._connection)
            raise
        self._channel: BlockingChannel = channel
        self._acks = DirectAcks(self._connection, channel)
        self._reader = DirectDeliveries(self._connection, channel, self._consumer_tag, self._append)
        self._ack_batch = ack_batch(prefetch)
        heartbeat = driver.options["heartbeat"]  # pika always uses the client's value when one is set
        self._keeper_interval = min(5.0, heartbeat / 4) if heartbeat else 5.0
        self._stopped = threading.Event()
        # Set when acks are held back (see _ack): the keeper then writes them if the consumer does not.
        self._acks_held = threading.Event()
        self._keeper = threading.Thread(target=self._keep_alive, name=f"kq-amqp-{queue.name}", daemon=True)
        self._keeper.start()
        logger.debug(
            "consuming AMQP queue %s on %s (prefetch %d)", self.topology.queue, driver.describe(), prefetch
        )

    def _on_message(
        self,
        channel: BlockingChannel,
        method: pika.spec.Basic.Deliver,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        self._append(method, properties, body)

    def _append(self, method: pika.spec.Basic.Deliver, properties: pika.BasicProperties, body: bytes) -> None:
        self._buffer.append(self._delivery(method, properties, body))

    def _delivery(
        self, method: pika.spec.Basic.Deliver, properties: pika.BasicProperties, body: bytes
    ) -> Delivery:
        """The :class:`Delivery` of what the broker handed over, whatever a foreign producer put in it.

        This runs inside pika's callback: an exception here would escape ``receive`` and stop the
        worker. What cannot be read faithfully is salvaged and described in ``Delivery.defect`` (the
        consume loop dead-letters it as ``malformed``); see :func:`read_delivery`.
        """
        try:
            return read_delivery(self.queue.name, method, properties, body)
        except Exception as exc:  # a bug in read_delivery: still no crash, and the message is kept
            logger.exception(
                "queue %s: could not read a delivery (tag %s); handing it over as malformed",
                self.queue.name,
                getattr(method, "delivery_tag", "?"),
            )
            return Delivery(
                body=body if isinstance(body, bytes) else b"",
                content_type="application/octet-stream",
                headers={},
                routing_key="",
                message_id=_content_id(body if isinstance(body, bytes) else b""),
                queue=self.queue.name,
                delivery_count=2 if getattr(method, "redelivered", False) else 1,
                handle=getattr(method, "delivery_tag", None),
                defect=f"the RabbitMQ driver could not read it ({type(exc).__name__}: {exc})"[:300],
            )

    def _receive(self, timeout: float) -> Delivery | None:
        deadline = time.monotonic() + timeout
        with self._lock:
            self._raise_if_broken()
            while not self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._pump(min(remaining, _PUMP_SLICE))
            self._outstanding += 1
            return self._buffer.popleft()

    def _ack(self, delivery: Delivery) -> None:
        with self._lock:
            self._outstanding -= 1
            self._raise_if_broken()
            self._acks.add(delivery.handle)
            if self._buffer and self._acks.pending < self._ack_batch:
                # More deliveries are here already: this ack leaves with the next ones, in one write
                # (at the latest when the buffer runs dry, or _ACK_DELAY later from the keeper).
                if self._acks.pending == 1:
                    self._acks_held.set()
                return
            self._guard(self._acks.flush)

    def _reject(self, delivery: Delivery, requeue: bool, delay: float) -> None:
        if requeue and delay:
            # AMQP requeues at once; a delayed requeue is a copy through a delay queue, which remembers
            # how often the original was delivered.
            headers = {**delivery.headers, REDELIVERY_HEADER: str(delivery.delivery_count)}
            self._retry(delivery, headers, delay)
            return
        with self._lock:
            self._outstanding -= 1
            self._raise_if_broken()
            self._guard(self._acks.flush)
            self._guard(self._channel.basic_reject, delivery_tag=delivery.handle, requeue=requeue)

    def _retry(self, delivery: Delivery, headers: dict[str, str], delay: float) -> None:
        # Straight into this consumer's AMQP queue (through a delay queue when delayed), then ack: other
        # queues bound to the exchange must not receive the copy.
        producer = cast("RabbitMQProducer", self.driver.producer(self.queue.name))
        producer.publish_to_queue([delivery.to_message(headers=headers, delay=delay)], self.topology.queue)
        self._ack(delivery)

    def _pump(self, seconds: float) -> None:
        self._guard(self._acks.flush)  # nothing held while waiting for the broker
        self._guard(self._reader.pump, seconds=seconds)

    def _guard(self, call: Any, **kwargs: Any) -> None:
        # Remember a connection failure so that every later call reports it, from whichever thread.
        try:
            call(**kwargs)
        except BaseException as exc:
            if self._error is None:
                self._error = exc
            raise

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise self._error

    def _keep_alive(self) -> None:
        # Pump only while the caller is away handling a delivery, and never wait for the lock: when the
        # caller holds it, the caller is pumping or settling, which keeps the connection alive anyway.
        while not self._stopped.is_set():
            if self._acks_held.wait(self._keeper_interval):
                self._write_held_acks()
                continue
            if not self._outstanding or self._error is not None:
                continue
            if not self._lock.acquire(blocking=False):
                continue
            try:
                self._pump(0)
            except BaseException as exc:
                logger.warning(
                    "queue %s: the AMQP connection failed while a message was being handled (%s)",
                    self.queue.name,
                    exc,
                )
            finally:
                self._lock.release()

    def _write_held_acks(self) -> None:
        """Write the acks ``_ack`` held back, unless the consumer did within ``_ACK_DELAY``: a long
        handler must not keep the acks of the messages handled before it from the broker."""
        self._stopped.wait(_ACK_DELAY)
        self._acks_held.clear()
        if self._stopped.is_set():
            return  # close() writes them
        # While acks are held the consumer holds the lock only briefly (it writes them before it waits
        # for the broker), so waiting for it here is short.
        with self._lock:
            held = self._acks.pending
            if self._error is not None or not held:
                return
            try:
                self._guard(self._acks.flush)
            except BaseException as exc:
                logger.warning(
                    "queue %s: the AMQP connection failed while writing %d acknowledgements; the broker "
                    "will deliver those messages again (%s)",
                    self.queue.name,
                    held,
                    exc,
                )

    def _close(self) -> None:
        self._stopped.set()
        self._acks_held.set()  # wakes the keeper
        self._keeper.join(timeout=10)
        with self._lock:
            if self._error is None:
                try:
                    self._acks.flush()  # what was handled stays handled
                    self._channel.basic_cancel(self._consumer_tag)
                    self._channel.close()  # the broker requeues unacknowledged deliveries
                except Exception as exc:
                    logger.debug("queue %s: closing the AMQP channel failed: %s", self.queue.name, exc)
            close_quietly(self._connection)
            self._buffer.clear()


def read_delivery(
    queue: str, method: pika.spec.Basic.Deliver, properties: pika.BasicProperties, body: bytes
) -> Delivery:
    """Build the :class:`Delivery` of one AMQP message of logical queue ``queue``.

    kq's producers send text headers only, and those are taken as they are (so their signatures
    verify). Other AMQP clients send typed values; they become text deterministically:

    - integers (and floats) in decimal, booleans ``true``/``false``, void ``null``;
    - decimals in plain notation (``3.14``), timestamps in ISO 8601, UTC (``2024-05-01T12:00:00+00:00``);
    - byte arrays as their UTF-8 text;
    - tables and arrays as JSON (``{"a": [1, true]}``, insertion order kept; decimals and timestamps
      in them as JSON strings).

    What has no faithful text is salvaged and named in ``Delivery.defect``, which makes the consume
    loop dead-letter the message as ``malformed``: bytes that are not UTF-8 (in a header name or value,
    the routing key, the content type or the message id; salvaged with ``\\xNN`` escapes, or replaced),
    tables nested deeper than 32 levels, values of unknown types, and the driver's own bookkeeping
    headers (``kq-routing-key``, ``kq-redelivery``) holding what the driver never writes. RabbitMQ's
    own headers (``x-death``, ``x-delivery-count``, ...) are taken off; an ``x-delivery-count`` that is
    not a non-negative integer is ignored (the ``redelivered`` flag counts instead).
    """
    defects: list[str] = []
    raw = properties.headers
    if raw is None:
        raw = {}
    elif not isinstance(raw, dict):
        defects.append(f"its headers are {_kind(raw)}, not a table")
        raw = {}
    # What the broker adds on the way (dead-lettering through a delay queue, quorum delivery
    # counts) is its bookkeeping, not the producer's headers: left in, it would break signatures.
    headers: dict[str, str] = {}
    for raw_name, value in raw.items():
        name = _name(raw_name, defects)
        if name in BROKER_HEADERS or name in _BOOKKEEPING:
            continue
        headers[name] = value if isinstance(value, str) else _render(name, value, defects)
    routing_key = method.routing_key
    if not isinstance(routing_key, str):
        defects.append(f"its routing key {_kind(routing_key)} is not UTF-8 text")
        routing_key = ""
    # A retried copy came through the default exchange: its routing key is in a header.
    if ROUTING_KEY_HEADER in raw:
        copied_key = raw.get(ROUTING_KEY_HEADER)
        if isinstance(copied_key, str) and len(copied_key.encode()) <= _SHORTSTR:
            routing_key = copied_key
        else:
            defects.append(f"its {ROUTING_KEY_HEADER} header holds {_kind(copied_key)}, not a routing key")
    # Quorum queues count earlier deliveries in x-delivery-count; classic queues only flag redeliveries.
    count = 2 if method.redelivered else 1
    previous = raw.get("x-delivery-count")
    if isinstance(previous, int) and not isinstance(previous, bool) and previous >= 0:
        count = previous + 1
    elif previous is not None:
        logger.debug(
            "queue %s: ignoring x-delivery-count %s (not a count) of delivery tag %s",
            queue,
            _kind(previous),
            method.delivery_tag,
        )
    # A delayed requeue is a copy: it carries the deliveries the original had.
    if REDELIVERY_HEADER in raw:
        previous_deliveries = raw.get(REDELIVERY_HEADER)
        if isinstance(previous_deliveries, str) and _COUNT.match(previous_deliveries):
            count = max(count, int(previous_deliveries) + 1)
        else:
            defects.append(
                f"its {REDELIVERY_HEADER} header holds {_kind(previous_deliveries)}, not a delivery count"
            )
    content_type = properties.content_type
    if content_type is None:
        content_type = ""
    elif not isinstance(content_type, str):
        defects.append(f"its content type {_kind(content_type)} is not UTF-8 text")
        content_type = "application/octet-stream"
    message_id = properties.message_id
    if message_id is not None and not isinstance(message_id, str):
        defects.append(f"its message id {_kind(message_id)} is not UTF-8 text")
        message_id = None
    delivery = Delivery(
        body=body,
        content_type=content_type,
        headers=headers,
        routing_key=routing_key,
        message_id=message_id or _content_id(body),
        queue=queue,
        delivery_count=count,
        handle=method.delivery_tag,
        defect="; ".join(defects)[:_MAX_DEFECT] if defects else None,
    )
    if delivery.defect:
        logger.debug(
            "queue %s message %s: unreadable parts (%s); handed over as malformed",
            queue,
            delivery.message_id,
            delivery.defect,
        )
    return delivery


#: The driver's own headers (the producer's), taken off deliveries (see _producer.py).
_BOOKKEEPING = frozenset({ROUTING_KEY_HEADER, REDELIVERY_HEADER})
#: AMQP short strings (routing keys, content types, message ids) hold at most 255 bytes.
_SHORTSTR = 255
#: Tables and arrays nested deeper than this are not rendered (a defect).
_MAX_DEPTH = 32
#: What kq writes in kq-redelivery: a delivery count in ASCII digits. (str.isdigit() accepts "²",
#: which int() refuses, and int() refuses more than 4300 digits.)
_COUNT = re.compile(r"[0-9]{1,18}\Z")
#: ``Delivery.defect`` ends up in a dead letter's header and in log lines: keep it short.
_MAX_DEFECT = 500


def _name(name: object, defects: list[str]) -> str:
    """A header name as text (pika hands over bytes when a name is not UTF-8)."""
    if isinstance(name, str):
        return name
    if isinstance(name, bytes):
        defects.append(f"header name {_kind(name)} is not UTF-8 text")
        return name.decode("utf-8", "backslashreplace")
    defects.append(f"header name {_kind(name)} is not text")
    return repr(name)


def _render(name: str, value: Any, defects: list[str]) -> str:
    """A header value that is not a string, as text (see :func:`read_delivery` for the rules)."""
    problems: list[str] = []
    if isinstance(value, dict | list):
        text = json.dumps(_plain(value, 1, problems), ensure_ascii=False)
    else:
        plain = _plain(value, 0, problems)
        text = plain if isinstance(plain, str) else json.dumps(plain)
    if problems:
        defects.append(f"header {name[:60]!r}: {problems[0]}")
    return text


def _plain(value: Any, depth: int, problems: list[str]) -> Any:
    """``value`` as what ``json.dumps`` writes faithfully; problems are described in ``problems`` and
    salvaged."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{len(value)} bytes that are not UTF-8 text")
            return value.decode("utf-8", "backslashreplace")
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, datetime.datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=datetime.timezone.utc)
        return moment.astimezone(datetime.timezone.utc).isoformat()
    if isinstance(value, dict | list):
        if depth > _MAX_DEPTH:
            problems.append(f"tables or arrays nested deeper than {_MAX_DEPTH} levels")
            return "..."
        if isinstance(value, list):
            return [_plain(item, depth + 1, problems) for item in value]
        return {_name(key, problems): _plain(item, depth + 1, problems) for key, item in value.items()}
    problems.append(f"a value of type {type(value).__name__}")
    return repr(value)[:100]


def _kind(value: Any) -> str:
    """``value`` in a few words, for a defect: short reprs of scalars, type names of containers."""
    if isinstance(value, dict):
        return f"a table of {len(value)} entries"
    if isinstance(value, list):
        return f"an array of {len(value)} items"
    return repr(value)[:40]


def _content_id(body: bytes) -> str:
    """An id for a message published without one (plain pika, PHP): stable across redeliveries."""
    import hashlib  # loads OpenSSL's digests: only for such messages, not at every worker start

    return "sha256-" + hashlib.sha256(body).hexdigest()[:32]
