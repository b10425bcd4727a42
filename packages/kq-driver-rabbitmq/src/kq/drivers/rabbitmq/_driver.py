"""The RabbitMQ driver class: options, capabilities, connections.

Capabilities depend on the queue (:meth:`RabbitMQDriver.capabilities_for`):

- the delivery count is exact on quorum queues (``x-delivery-count``) and only a flag on classic
  queues (``redelivered``: 1 or 2), so ``max_deliveries`` above 1 protects only quorum queues;
- routing keys route on ``topic`` and ``direct`` exchanges, where a consumer's own key (``kq consume
  -r``) reads a queue of its own (see _topology.py); ``fanout`` and ``headers`` exchanges ignore routing
  keys, so a consumer's own key is refused there instead of silently receiving everything;
- stream queues keep no per-message TTL, and kq does not consume them (see :data:`STREAM_REFUSAL`).

A queue whose type is not configured (``queue_type``, or ``x-queue-type`` in ``queue_arguments``) is
taken for a classic queue, the broker's default unless the virtual host names another.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from kq.core.driver import (
    STANDARD_ACTIONS,
    BrokerUnavailableError,
    Capabilities,
    ConfigError,
    Consumer,
    Driver,
    DriverSpec,
    Option,
    Producer,
    QueueManager,
    QueueSpec,
    UnsupportedOperationError,
)
from kq.drivers.rabbitmq._connection import connection_failure, connection_parameters, describe
from kq.drivers.rabbitmq._delays import EXPIRY_MARGIN_MS

EXCHANGE_TYPES = ("topic", "direct", "fanout", "headers")
#: Exchange types that route by routing key (``fanout`` and ``headers`` ignore it).
ROUTING_EXCHANGE_TYPES = ("topic", "direct")
QUEUE_TYPES = ("classic", "quorum", "stream")
#: The largest TTL RabbitMQ accepts, in ms, for ``x-message-ttl``, ``x-expires`` and a message's
#: ``expiration``: ten 365-day years (``rabbit_misc:check_expiry`` since rabbitmq-server#4836, 3.10; 406
#: PRECONDITION_FAILED ``value_too_large`` above it, measured on 3.10.8). Older brokers had no limit and
#: crashed the queue on huge values.
MAX_EXPIRY_MS = 315_360_000_000
#: The longest delay, in seconds, of a published message or a requeue: a delay queue's TTL is the delay,
#: and it expires ``EXPIRY_MARGIN_MS`` after it (see _delays.py); both must stay within
#: :data:`MAX_EXPIRY_MS`. 315,359,700 s: ten years less five minutes.
MAX_DELAY = float((MAX_EXPIRY_MS - EXPIRY_MARGIN_MS) // 1000)
#: Why kq does not consume stream queues.
STREAM_REFUSAL = (
    "kq does not consume RabbitMQ stream queues: a stream keeps acknowledged messages, hands every "
    "message to every consumer, starts a new consumer at the next message published (so messages "
    "published while no worker ran are skipped, and one being handled when a worker died is not "
    "redelivered) and refuses basic.reject; use a classic or quorum queue (publishing to a stream works)"
)


class RabbitMQDriver(Driver):
    """AMQP 0-9-1 on RabbitMQ through pika."""

    #: A classic queue on a topic exchange (the default options); :meth:`capabilities_for` has the
    #: queue's.
    capabilities: ClassVar[Capabilities] = Capabilities(
        routing_keys="native",
        consumer_routing="own-queue",
        delivery_count="flag",
        delayed_delivery=True,
        max_publish_delay=MAX_DELAY,
        max_requeue_delay=MAX_DELAY,
        message_ttl=True,
        batch_send=True,
        lease_extension=False,
        queue_actions=(*STANDARD_ACTIONS, "setup"),
    )
    # Channel errors count too: RabbitMQ closes the channel of a consumer whose ack came too late
    # (consumer_timeout), and a new channel is the cure. Permanent ones (a queue that does not exist,
    # inequivalent arguments) are turned into configuration errors before they get here.
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = (
        pika.exceptions.AMQPConnectionError,
        pika.exceptions.AMQPChannelError,
        ConnectionError,
    )
    driver_options: ClassVar[dict[str, Option]] = {
        "url": Option(
            "amqp://guest:guest@127.0.0.1:5672/%2F",
            str,
            "amqp:// or amqps:// URL: credentials, host, port and virtual host.",
        ),
        "heartbeat": Option(60, int, "Heartbeat interval in seconds (0 disables heartbeats).", duration=True),
        "socket_timeout": Option(
            10.0, float, "Seconds to wait for the broker when connecting.", positive=True, duration=True
        ),
        "blocked_connection_timeout": Option(
            300.0,
            float,
            "Seconds a connection may stay blocked by a broker alarm before it is dropped.",
            positive=True,
            duration=True,
        ),
        "confirm_delivery": Option(True, bool, "Wait for publisher confirms (once per batch)."),
        "confirm_timeout": Option(
            30.0, float, "Seconds to wait for the confirms of a batch.", positive=True, duration=True
        ),
        "publish_timeout": Option(
            60.0,
            float,
            "Seconds to keep retrying a publish while the broker is unreachable.",
            positive=True,
            duration=True,
        ),
        "management_url": Option(None, str, "Management API URL (default: http://<host>:15672)."),
        "tls_ca_file": Option(None, str, "CA bundle to verify the broker's certificate (amqps)."),
        "tls_cert_file": Option(None, str, "Client certificate (amqps with client authentication)."),
        "tls_key_file": Option(None, str, "Key of the client certificate."),
        "tls_verify": Option(True, bool, "Verify the broker's certificate and host name."),
    }
    queue_options: ClassVar[dict[str, Option]] = {
        "exchange": Option(None, str, "Exchange to publish to and bind from (default: the queue's name)."),
        "exchange_type": Option("topic", str, "topic, direct, fanout or headers."),
        "exchange_durable": Option(True, bool, "The exchange survives a broker restart."),
        "queue_name": Option(None, str, "AMQP queue name (default: the logical queue's name)."),
        "durable": Option(True, bool, "The queue survives a broker restart."),
        "queue_type": Option(
            None, str, "x-queue-type: classic, quorum (exact delivery counts) or stream (publish only)."
        ),
        "queue_arguments": Option({}, dict, "Other queue arguments: x-message-ttl, x-max-length, ..."),
        "passive": Option(False, bool, "Only check that the exchange and queue exist; declare nothing."),
        "persistent": Option(True, bool, "Publish persistent messages (delivery mode 2)."),
        "mandatory": Option(False, bool, "Fail a publish that matches no binding instead of dropping it."),
    }
    client_loggers = ("pika",)
    dynamic_queues = True
    description = "RabbitMQ (AMQP 0-9-1) through pika: topic exchanges, publisher confirms, manual acks."

    def __init__(self, spec: DriverSpec, queues: Iterable[QueueSpec] = ()) -> None:
        super().__init__(spec, queues)
        if self.options["heartbeat"] < 0:
            raise ConfigError(
                "must not be negative", key=f"drivers.{self.name}.heartbeat", source=self.source
            )
        self.parameters = connection_parameters(
            self.options, name=self.name, key=f"drivers.{self.name}", source=self.source
        )
        for queue in self.configured_queues.values():
            self._check_queue_options(queue)
        self._capabilities: dict[str, Capabilities] = {}

    def capabilities_for(self, queue: str | None = None) -> Capabilities:
        """What this instance can do for ``queue`` (its queue type and exchange type decide), or the
        type's defaults (a classic queue on a topic exchange) when no queue is named. Cached per queue:
        it is called for every published batch."""
        if queue is None:
            return self.capabilities
        capabilities = self._capabilities.get(queue)
        if capabilities is None:
            capabilities = self._capabilities[queue] = queue_capabilities(
                self.queue(queue), self.capabilities
            )
        return capabilities

    def _check_queue_options(self, queue: QueueSpec) -> None:
        key = f"queues.{queue.name}"
        if queue.options["exchange"] == "":
            raise ConfigError(
                "the default exchange cannot route by topic; name an exchange",
                key=f"{key}.exchange",
                source=queue.source,
            )
        if queue.options["exchange_type"] not in EXCHANGE_TYPES:
            raise ConfigError(
                f"must be one of {', '.join(EXCHANGE_TYPES)}", key=f"{key}.exchange_type", source=queue.source
            )
        if queue.options["queue_type"] not in (None, *QUEUE_TYPES):
            raise ConfigError(
                f"must be one of {', '.join(QUEUE_TYPES)}", key=f"{key}.queue_type", source=queue.source
            )

    def connect(self) -> BlockingConnection:
        """A new blocking connection to the broker.

        Raises:
            BrokerUnavailableError: the broker cannot be reached or refused the connection.
        """
        try:
            return BlockingConnection(self.parameters)
        except pika.exceptions.AMQPConnectionError as exc:
            raise BrokerUnavailableError(
                f"cannot connect to RabbitMQ at {self.describe()} (driver {self.name}): "
                f"{connection_failure(exc)}"
            ) from exc

    def sources(self, queue: str) -> set[str]:
        """``queue`` and the configured queues publishing to its exchange: the broker routes their
        messages into it (by binding), so signatures made for any of them are accepted."""
        exchange = _exchange_of(self.queue(queue))
        return {queue} | {q.name for q in self.configured_queues.values() if _exchange_of(q) == exchange}

    def describe(self) -> str:
        """``host:port/vhost`` for log lines (no credentials)."""
        return describe(self.parameters)

    @contextlib.contextmanager
    def channel(self) -> Iterator[BlockingChannel]:
        """A short-lived connection and channel, for administrative actions."""
        connection = self.connect()
        try:
            yield connection.channel()
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    def _create_producer(self, queue: QueueSpec) -> Producer:
        from kq.drivers.rabbitmq._producer import RabbitMQProducer

        return RabbitMQProducer(self, queue)

    def _create_consumer(self, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int) -> Consumer:
        if queue_type(queue) == "stream":
            raise UnsupportedOperationError(f"queue {queue.name}: {STREAM_REFUSAL}")
        from kq.drivers.rabbitmq._consumer import RabbitMQConsumer

        return RabbitMQConsumer(self, queue, routing_keys, prefetch)

    def _create_queue_manager(self) -> QueueManager:
        from kq.drivers.rabbitmq._queue_manager import RabbitMQQueueManager

        return RabbitMQQueueManager(self)


def options_summary(queue: QueueSpec) -> dict[str, Any]:
    """The broker-facing settings of a queue, for ``info``."""
    return {k: queue.options[k] for k in ("exchange", "exchange_type", "queue_name", "queue_type", "durable")}


def queue_type(queue: QueueSpec) -> str | None:
    """The ``x-queue-type`` kq declares ``queue`` with: ``queue_type``, else ``x-queue-type`` in
    ``queue_arguments``, else ``None`` (the broker's default)."""
    kind = queue.options["queue_type"] or queue.options["queue_arguments"].get("x-queue-type")
    return str(kind) if kind else None


def queue_capabilities(queue: QueueSpec, defaults: Capabilities | None = None) -> Capabilities:
    """The capabilities of one logical queue (see the module docstring): ``defaults`` (the driver
    type's) adjusted to the queue's type and exchange type."""
    kind = queue_type(queue)
    routes = queue.options["exchange_type"] in ROUTING_EXCHANGE_TYPES
    return dataclasses.replace(
        defaults or RabbitMQDriver.capabilities,
        routing_keys="native" if routes else "none",
        consumer_routing="own-queue" if routes else "none",
        delivery_count="exact" if kind == "quorum" else "flag",
        message_ttl=kind != "stream",
    )


def _exchange_of(queue: QueueSpec) -> str:
    """The exchange a logical queue publishes to and binds from."""
    return str(queue.options["exchange"] or queue.name)
