"""The producer: persistent messages, publisher confirms awaited once per batch, recovery by retrying.

pika's ``BlockingChannel`` in confirm mode waits for the broker after *each* publish: one round trip per
message. To pay that once per batch, this producer puts the channel's underlying implementation in
confirm mode itself, publishes the whole batch, then pumps the connection until every delivery tag has
been acknowledged (``Basic.Ack`` with ``multiple`` included). A nack, an unroutable ``mandatory``
message or a missing confirm is an error naming the message ids.

A lost connection (broker restart, network) is retried with backoff for up to ``publish_timeout``
seconds: the whole unconfirmed batch is published again, so a message may arrive twice but is never
silently lost. Only when this method returns were the messages confirmed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pika
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from kq.core import (
    DRIVER_REDELIVERY,
    DRIVER_ROUTING_KEY,
    ConsumerClosedError,
    KqError,
    Message,
    Producer,
    QueueSpec,
    UnsupportedOperationError,
)
from kq.drivers.rabbitmq._connection import close_quietly
from kq.drivers.rabbitmq._delays import declare_for_exchange, declare_for_queue, step_ms
from kq.drivers.rabbitmq._topology import Topology

if TYPE_CHECKING:
    from kq.drivers.rabbitmq._driver import RabbitMQDriver

logger = logging.getLogger(__name__)

#: Header carrying the routing key of a message published straight to a queue (see publish_to_queue).
ROUTING_KEY_HEADER = DRIVER_ROUTING_KEY
#: Header of a delayed requeue's copy: how often the original was delivered.
REDELIVERY_HEADER = DRIVER_REDELIVERY


class PublishError(KqError):
    """The broker refused, returned or never confirmed messages."""


class RabbitMQProducer(Producer):
    """Publishes to the logical queue's exchange."""

    driver: RabbitMQDriver

    def __init__(self, driver: RabbitMQDriver, queue: QueueSpec) -> None:
        super().__init__(driver, queue)
        self.topology = Topology.of(queue)
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._confirming = bool(driver.options["confirm_delivery"])
        self._mandatory = bool(queue.options["mandatory"])
        self._delivery_mode = 2 if queue.options["persistent"] else 1
        # Per batch: delivery tags not yet confirmed, tags nacked, message ids returned as unroutable.
        self._next_tag = 0
        self._pending: set[int] = set()
        self._nacked: list[int] = []
        self._returned: list[str] = []
        # Delay targets declared on this connection: (kind, target, ms) -> exchange or queue name.
        self._delays: dict[tuple[str, str, int], str] = {}

    def _publish_batch(self, messages: Sequence[Message]) -> None:
        _check_delayed_ttls(messages)
        self._publish(messages, self.topology.exchange, None)

    def publish_to_queue(self, messages: Sequence[Message], amqp_queue: str) -> None:
        """Publish straight into ``amqp_queue`` through the default exchange, bypassing this queue's
        bindings (a retried message must not reach the other queues of a shared exchange). The routing
        key each message had travels in the ``kq-routing-key`` header and is restored by the consumer."""
        if self.closed:
            raise ConsumerClosedError(f"the producer of queue '{self.queue.name}' is closed")
        _check_delayed_ttls(messages)
        copies = [
            dataclasses.replace(m, headers={**m.headers, ROUTING_KEY_HEADER: m.routing_key}) for m in messages
        ]
        self._publish(copies, "", amqp_queue)

    def _publish(self, messages: Sequence[Message], exchange: str, routing_key: str | None) -> None:
        deadline = time.monotonic() + self.driver.options["publish_timeout"]
        attempt = 0
        while True:
            try:
                self._publish_once(messages, exchange, routing_key)
                return
            except self.driver.connection_errors as exc:
                self._drop_connection()
                attempt += 1
                wait = min(5.0, 0.25 * 2**attempt)
                if time.monotonic() + wait > deadline:
                    raise PublishError(
                        f"could not publish {len(messages)} message(s) to queue {self.queue.name} on "
                        f"{self.driver.describe()}: {type(exc).__name__}: {exc} "
                        f"(gave up after {attempt} attempts)"
                    ) from exc
                logger.warning(
                    "queue %s: publishing %d message(s) failed (%s: %s); reconnecting to %s in %.1fs",
                    self.queue.name,
                    len(messages),
                    type(exc).__name__,
                    exc,
                    self.driver.describe(),
                    wait,
                )
                time.sleep(wait)

    def _publish_once(self, messages: Sequence[Message], exchange: str, routing_key: str | None) -> None:
        connection, channel = self._ensure_channel()
        impl = channel._impl  # see the module docstring: batch confirms need the implementation
        self._pending.clear()
        self._nacked.clear()
        self._returned.clear()
        now = int(time.time())
        tags: dict[int, str] = {}
        # Delay queues first (a declaration is a round trip: not between publishes awaiting confirms).
        targets = [self._target(channel, m, exchange, routing_key) for m in messages]
        for message, (target_exchange, target_key) in zip(messages, targets, strict=True):
            impl.basic_publish(
                exchange=target_exchange,
                routing_key=target_key,
                body=message.body,
                properties=self._properties(message, now),
                mandatory=self._mandatory,
            )
            if self._confirming:
                self._next_tag += 1
                self._pending.add(self._next_tag)
                tags[self._next_tag] = message.message_id
        if self._confirming:
            self._wait_for_confirms(connection, len(messages))
        else:
            connection.process_data_events(0)  # flush the frames to the socket
        if self._nacked:
            ids = ", ".join(tags.get(tag, "?") for tag in self._nacked)
            raise PublishError(f"the broker refused (nack) message(s) {ids} for queue {self.queue.name}")
        if self._returned:
            raise PublishError(
                f"message(s) {', '.join(self._returned)} matched no binding of exchange "
                f"{self.topology.exchange} "
                f"(mandatory publishing to queue {self.queue.name})"
            )
        logger.debug(
            "queue %s: %d message(s) published%s",
            self.queue.name,
            len(messages),
            " and confirmed" if self._confirming else "",
        )

    def _target(
        self, channel: BlockingChannel, message: Message, exchange: str, routing_key: str | None
    ) -> tuple[str, str]:
        """Where to publish ``message``: the exchange (or queue) itself, or its delay (see _delays.py)."""
        if not message.delay:
            return exchange, message.routing_key if routing_key is None else routing_key
        ms = step_ms(message.delay)
        if routing_key is None:
            key = ("x", exchange, ms)
            if key not in self._delays:
                self._delays[key] = declare_for_exchange(channel, exchange, ms)
            return self._delays[key], message.routing_key
        key = ("q", routing_key, ms)
        if key not in self._delays:
            self._delays[key] = declare_for_queue(channel, routing_key, ms)
        return "", self._delays[key]

    def _properties(self, message: Message, now: int) -> pika.BasicProperties:
        return pika.BasicProperties(
            content_type=message.content_type,
            delivery_mode=self._delivery_mode,
            headers=dict(message.headers) or None,
            message_id=message.message_id,
            expiration=None if message.ttl is None else str(max(1, round(message.ttl * 1000))),
            timestamp=now,
            app_id="kq",
        )

    def _wait_for_confirms(self, connection: BlockingConnection, count: int) -> None:
        deadline = time.monotonic() + self.driver.options["confirm_timeout"]
        while self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishError(
                    f"the broker did not confirm {len(self._pending)} of {count} message(s) for queue "
                    f"{self.queue.name} within {self.driver.options['confirm_timeout']:g}s"
                )
            connection.process_data_events(time_limit=remaining)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tags = (
            {tag for tag in self._pending if tag <= method.delivery_tag}
            if method.multiple
            else {method.delivery_tag}
        )
        self._pending -= tags
        if isinstance(method, pika.spec.Basic.Nack):
            self._nacked.extend(sorted(tags))
        if not self._pending and self._connection is not None:
            # Wake process_data_events: confirm callbacks alone do not end its wait. (On the connection's
            # own thread, a zero-delay timer is cheaper than add_callback_threadsafe's wake-up pipe.)
            self._connection.call_later(0, _nothing)

    def _on_return(self, channel: Any, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
        self._returned.append(properties.message_id or "?")

    def _ensure_channel(self) -> tuple[BlockingConnection, BlockingChannel]:
        if self._connection is not None and self._channel is not None and self._channel.is_open:
            return self._connection, self._channel
        self._drop_connection()
        connection = self.driver.connect()
        try:
            channel = connection.channel()
            self.topology.declare(channel, self.queue, self.driver.describe())
            channel._impl.add_on_return_callback(self._on_return)
            if self._confirming:
                self._select_confirms(channel)
        except BaseException:
            close_quietly(connection)
            raise
        self._connection, self._channel, self._next_tag = connection, channel, 0
        self._delays.clear()
        return connection, channel

    def _select_confirms(self, channel: BlockingChannel) -> None:
        """Put ``channel`` in confirm mode with this producer's own ack/nack callback.

        Confirm.Select is a round trip. Its Select-Ok is delivered to the implementation's callback,
        and a callback alone does not end ``process_data_events`` (only timers and channel events
        do): waiting for it in ``process_data_events(time_limit=...)`` slept the whole time limit on
        every new connection. Instead, wait as pika's own ``BlockingChannel.confirm_delivery`` does:
        pump I/O until the callback has fired, giving up, with pika's own error, if the channel or the
        connection closes meanwhile.
        """
        selected: list[bool] = []
        channel._impl.confirm_delivery(
            ack_nack_callback=self._on_confirm, callback=lambda _frame: selected.append(True)
        )
        channel._flush_output(lambda: bool(selected))
        logger.debug(
            "queue %s: publisher confirms on for exchange %s", self.queue.name, self.topology.exchange
        )

    def _drop_connection(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            close_quietly(connection)

    def _close(self) -> None:
        self._drop_connection()


def _check_delayed_ttls(messages: Sequence[Message]) -> None:
    for message in messages:
        if message.delay and message.ttl is not None:
            # The broker drops a message's expiration when its delay ends (dead-lettering removes it), so
            # the TTL could not be enforced: refuse rather than deliver a message that should have expired.
            raise UnsupportedOperationError(
                f"message {message.message_id}: RabbitMQ cannot expire a delayed message; give it a delay "
                "or a TTL, not both"
            )


def _nothing() -> None:
    """A callback that only wakes the connection's event loop."""
