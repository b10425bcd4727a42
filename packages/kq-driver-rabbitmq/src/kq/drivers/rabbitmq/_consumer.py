"""The consumer: ``basic_consume`` with manual acks, pumped by the caller, kept alive during handlers.

pika's connections are not thread-safe and exchange heartbeats only while somebody pumps their event
loop. ``receive`` pumps the connection in the caller's thread, exactly as plain pika would, and ``ack``
sends at once: the per-message path pays no thread hand-off. Between the two, while the handler runs
(a command may take hours), nobody would pump, heartbeats would stop and the broker would drop the
connection with the unacknowledged message (pika issues #418, #1104). So a keeper thread pumps the
connection while a delivery is out, every quarter of the heartbeat interval. One lock decides who
touches the connection; the keeper only ever takes it when it is free and the caller is busy elsewhere.

Closing cancels the consumer and closes the channel: the broker requeues whatever was delivered and
not acknowledged (prefetched messages included).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, cast

import pika
import pika.exceptions
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from kq.core import Consumer, Delivery, QueueSpec
from kq.drivers.rabbitmq._connection import close_quietly
from kq.drivers.rabbitmq._producer import REDELIVERY_HEADER, ROUTING_KEY_HEADER, RabbitMQProducer
from kq.drivers.rabbitmq._topology import Topology

if TYPE_CHECKING:
    from kq.drivers.rabbitmq._driver import RabbitMQDriver

logger = logging.getLogger(__name__)
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
        heartbeat = driver.options["heartbeat"]  # pika always uses the client's value when one is set
        self._keeper_interval = min(5.0, heartbeat / 4) if heartbeat else 5.0
        self._stopped = threading.Event()
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
        self._buffer.append(self._delivery(method, properties, body))

    def _delivery(
        self, method: pika.spec.Basic.Deliver, properties: pika.BasicProperties, body: bytes
    ) -> Delivery:
        raw_headers = properties.headers or {}
        # What the broker adds on the way (dead-lettering through a delay queue, quorum delivery
        # counts) is its bookkeeping, not the producer's headers: left in, it would break signatures.
        headers = {
            str(name): _text(value) for name, value in raw_headers.items() if str(name) not in BROKER_HEADERS
        }
        # A retried copy came through the default exchange: its routing key is in a header.
        routing_key = headers.pop(ROUTING_KEY_HEADER, None)
        if routing_key is None:
            routing_key = method.routing_key or ""
        # A delayed requeue is a copy: it carries the deliveries the original had.
        previous_deliveries = headers.pop(REDELIVERY_HEADER, None)
        # Quorum queues count earlier deliveries in x-delivery-count; classic queues only flag redeliveries.
        previous = raw_headers.get("x-delivery-count")
        if isinstance(previous, int) and not isinstance(previous, bool):
            count = previous + 1
        else:
            count = 2 if method.redelivered else 1
        if previous_deliveries is not None and previous_deliveries.isdigit():
            count = max(count, int(previous_deliveries) + 1)
        return Delivery(
            body=body,
            content_type=properties.content_type or "",
            headers=headers,
            routing_key=routing_key,
            message_id=properties.message_id or _content_id(body),
            queue=self.queue.name,
            delivery_count=count,
            handle=method.delivery_tag,
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
            self._guard(self._channel.basic_ack, delivery_tag=delivery.handle)

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
            self._guard(self._channel.basic_reject, delivery_tag=delivery.handle, requeue=requeue)

    def _retry(self, delivery: Delivery, headers: dict[str, str], delay: float) -> None:
        # Straight into this consumer's AMQP queue (through a delay queue when delayed), then ack: other
        # queues bound to the exchange must not receive the copy.
        producer = cast(RabbitMQProducer, self.driver.producer(self.queue.name))
        producer.publish_to_queue([delivery.to_message(headers=headers, delay=delay)], self.topology.queue)
        self._ack(delivery)

    def _pump(self, seconds: float) -> None:
        self._guard(self._connection.process_data_events, time_limit=seconds)

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
        while not self._stopped.wait(self._keeper_interval):
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

    def _close(self) -> None:
        self._stopped.set()
        self._keeper.join(timeout=10)
        with self._lock:
            if self._error is None:
                try:
                    self._channel.basic_cancel(self._consumer_tag)
                    self._channel.close()  # the broker requeues unacknowledged deliveries
                except Exception as exc:
                    logger.debug("queue %s: closing the AMQP channel failed: %s", self.queue.name, exc)
            close_quietly(self._connection)
            self._buffer.clear()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, str):
        return value
    return str(value)


def _content_id(body: bytes) -> str:
    """An id for a message published without one (plain pika, PHP): stable across redeliveries."""
    return "sha256-" + hashlib.sha256(body).hexdigest()[:32]
