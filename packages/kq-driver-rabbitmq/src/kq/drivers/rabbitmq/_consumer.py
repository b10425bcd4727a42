"""The consumer: ``basic_consume`` on a connection owned by an I/O thread.

pika's connections are not thread-safe and only exchange heartbeats while someone pumps their event loop.
A command that runs longer than the heartbeat timeout would otherwise cost the connection, and with it
the acknowledgement (pika issues #418, #1104). So each consumer owns a connection served by one thread
that does nothing but pump it: deliveries are handed to ``receive`` through a thread-safe queue, and
acks and rejects travel back with ``add_callback_threadsafe``, the one thread-safe call pika has. The
handler can run for hours; heartbeats keep flowing.

Closing cancels the consumer after the pending acknowledgements are sent, then closes the channel: the
broker requeues whatever was delivered and not acknowledged (prefetched messages included).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import queue as queue_module
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from kq.core import Consumer, Delivery, QueueSpec
from kq.drivers.rabbitmq._topology import Topology

if TYPE_CHECKING:
    from kq.drivers.rabbitmq._driver import RabbitMQDriver

logger = logging.getLogger(__name__)

# Put on the delivery queue to wake a receiver when the I/O thread stops.
_STOPPED = object()


class RabbitMQConsumer(Consumer):
    """Consumes one AMQP queue with manual acknowledgements and a prefetch (QoS) limit."""

    driver: RabbitMQDriver

    def __init__(
        self, driver: RabbitMQDriver, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int
    ) -> None:
        super().__init__(driver, queue, routing_keys, prefetch)
        self.topology = Topology.of(queue, routing_keys)
        self._deliveries: queue_module.Queue[Any] = queue_module.Queue()
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._stopping = False
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._consumer_tag = ""
        self._thread = threading.Thread(target=self._run, name=f"kq-amqp-{queue.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=driver.options["socket_timeout"] * 3 + 5):
            self._stopping = True
            raise pika.exceptions.AMQPConnectionError(f"timed out connecting to {driver.describe()}")
        self._raise_if_broken()

    # -- the I/O thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            connection = self.driver.connect()
        except BaseException as exc:
            self._fail(exc)
            return
        self._connection = connection
        try:
            channel = connection.channel()
            self.topology.declare(channel, self.queue, self.driver.describe())
            channel.basic_qos(prefetch_count=self.prefetch)
            self._consumer_tag = channel.basic_consume(self.topology.queue, self._on_message, auto_ack=False)
            self._channel = channel
            self._ready.set()
            logger.debug(
                "consuming AMQP queue %s on %s (prefetch %d)",
                self.topology.queue,
                self.driver.describe(),
                self.prefetch,
            )
            while not self._stopping:
                connection.process_data_events(time_limit=1.0)
            self._shutdown(connection, channel)
        except BaseException as exc:
            self._fail(exc)
        finally:
            _close_quietly(connection)
            self._deliveries.put(_STOPPED)

    def _on_message(
        self,
        channel: BlockingChannel,
        method: pika.spec.Basic.Deliver,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        self._deliveries.put(self._delivery(method, properties, body))

    def _delivery(
        self, method: pika.spec.Basic.Deliver, properties: pika.BasicProperties, body: bytes
    ) -> Delivery:
        raw_headers = properties.headers or {}
        headers = {str(name): _text(value) for name, value in raw_headers.items()}
        # Quorum queues count earlier deliveries in x-delivery-count; classic queues only flag redeliveries.
        previous = raw_headers.get("x-delivery-count")
        if isinstance(previous, int) and not isinstance(previous, bool):
            count = previous + 1
        else:
            count = 2 if method.redelivered else 1
        return Delivery(
            body=body,
            content_type=properties.content_type or "",
            headers=headers,
            routing_key=method.routing_key or "",
            message_id=properties.message_id or _content_id(body),
            queue=self.queue.name,
            delivery_count=count,
            handle=method.delivery_tag,
        )

    def _shutdown(self, connection: BlockingConnection, channel: BlockingChannel) -> None:
        # Runs on the I/O thread after every queued ack: cancel, then close (unacked ones are requeued).
        try:
            if self._consumer_tag:
                channel.basic_cancel(self._consumer_tag)
            channel.close()
        except Exception as exc:
            logger.debug("queue %s: closing the AMQP channel failed: %s", self.queue.name, exc)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None and not self._stopping:
            self._error = exc
        self._ready.set()

    # -- the consume loop's side ----------------------------------------------------------------

    def _receive(self, timeout: float) -> Delivery | None:
        self._raise_if_broken()
        try:
            item = self._deliveries.get(timeout=timeout)
        except queue_module.Empty:
            return None
        if item is _STOPPED:
            self._deliveries.put(_STOPPED)  # keep waking later calls too
            self._raise_if_broken()
            return None
        delivery: Delivery = item
        return delivery

    def _ack(self, delivery: Delivery) -> None:
        self._call(functools.partial(self._send_settlement, "ack", delivery.handle, False))

    def _reject(self, delivery: Delivery, requeue: bool, delay: float) -> None:
        self._call(functools.partial(self._send_settlement, "reject", delivery.handle, requeue))

    def _send_settlement(self, what: str, tag: int, requeue: bool) -> None:
        channel = self._channel
        if channel is None or not channel.is_open:
            return  # the broker requeues it with the channel; nothing else can be done from here
        if what == "ack":
            channel.basic_ack(delivery_tag=tag)
        else:
            channel.basic_reject(delivery_tag=tag, requeue=requeue)

    def _call(self, callback: Callable[[], None]) -> None:
        self._raise_if_broken()
        connection = self._connection
        if connection is None:
            raise pika.exceptions.ConnectionWrongStateError("the consumer has no connection")
        connection.add_callback_threadsafe(callback)

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise self._error

    def _close(self) -> None:
        connection = self._connection
        if connection is not None and self._thread.is_alive():
            try:
                connection.add_callback_threadsafe(self._stop)
            except Exception:  # the connection is already gone: the thread is ending by itself
                self._stopping = True
        else:
            self._stopping = True
        self._thread.join(timeout=30)

    def _stop(self) -> None:
        self._stopping = True


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, str):
        return value
    return str(value)


def _content_id(body: bytes) -> str:
    """An id for a message published without one (plain pika, PHP): stable across redeliveries."""
    return "sha256-" + hashlib.sha256(body).hexdigest()[:32]


def _close_quietly(connection: BlockingConnection) -> None:
    try:
        if connection.is_open:
            connection.close()
    except Exception as exc:
        logger.debug("closing an AMQP connection failed: %s", exc)
