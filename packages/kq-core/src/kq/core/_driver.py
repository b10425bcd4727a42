"""The driver contract: a :class:`Driver` hands out a :class:`Producer`, a :class:`Consumer` and a
:class:`QueueManager` for logical queues, and says what it can do in :class:`Capabilities`.

Consuming is a *bounded pull*: the core's consume loop calls :meth:`Consumer.receive` with a timeout and
gets one :class:`~kq.core.Delivery` or ``None``. The loop, not the driver, owns limits, signals, events,
acknowledgement and error policy. A delivery is acknowledged only **after** the handler finished
(at-least-once), rejected with or without requeue (optionally after a delay), or *extended* while a long
handler runs. Closing a consumer releases what it fetched and did not settle.

Drivers implement the protected ``_hooks``; the public methods own the state checks, so every driver
rejects a double ack, a settle through the wrong consumer and use after close in the same way. How
AMQP 0-9-1, SQS and STOMP brokers map onto the contract is in ``docs/writing-a-driver.md``. Driver
authors import these names from :mod:`kq.core.driver`.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from kq.core._capabilities import Capabilities
from kq.core._driver_consumer import Consumer
from kq.core._driver_producer import Producer
from kq.core._errors import ClosedError, UnknownQueueError, UnsupportedOperationError
from kq.core._options import Option, resolve_options
from kq.core._queue_manager import QueueManager
from kq.core._spec import DriverSpec, QueueSpec

logger = logging.getLogger(__name__.replace("._", "."))


class Driver(abc.ABC):
    """One configured driver instance (``[drivers.<name>]``), for example a RabbitMQ server.

    Subclasses declare ``capabilities``, ``connection_errors`` (the exceptions after which the consume
    loop rebuilds the consumer), the options they accept, and implement the three ``_create_*`` hooks.

    Args:
        spec: The driver instance's name, type and raw options (checked against ``driver_options``).
        queues: The logical queues configured for this instance; their raw options are checked against
            ``queue_options``.
    """

    #: Capabilities of the driver type.
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: Exceptions meaning "the connection is gone": the consume loop reconnects with backoff.
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    #: Options of ``[drivers.<name>]``.
    driver_options: ClassVar[Mapping[str, Option]] = {}
    #: Broker-specific options of ``[queues.<name>]``.
    queue_options: ClassVar[Mapping[str, Option]] = {}
    #: Whether a queue that is not configured can be used (created on first use).
    dynamic_queues: ClassVar[bool] = False
    #: One line saying what the driver is, for ``kq managedriver list``.
    description: ClassVar[str] = ""
    #: The loggers of the client libraries it uses (``("pika",)``): the CLI holds them back unless
    #: asked (``-vv``), since they report in their words what kq reports in its own.
    client_loggers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: DriverSpec, queues: Iterable[QueueSpec] = ()) -> None:
        self.name = spec.name
        self.source = spec.source
        self.root = spec.root
        self.options: dict[str, Any] = resolve_options(
            self.driver_options, spec.options, prefix=f"drivers.{spec.name}", source=spec.source
        )
        self._queues: dict[str, QueueSpec] = {}
        for queue in queues:
            self._queues[queue.name] = self._check_queue(queue)
        self._producers: dict[str, Producer] = {}
        self._manager: QueueManager | None = None
        self._closed = False

    def _check_queue(self, queue: QueueSpec) -> QueueSpec:
        options = resolve_options(
            self.queue_options, queue.options, prefix=f"queues.{queue.name}", source=queue.source
        )
        return dataclasses.replace(queue, options=options)

    @property
    def configured_queues(self) -> Mapping[str, QueueSpec]:
        """The queues configured for this driver instance, by name."""
        return self._queues

    def queue(self, name: str) -> QueueSpec:
        """Return the settings of logical queue ``name``.

        Raises:
            UnknownQueueError: the queue is not configured and the driver cannot create queues on demand.
        """
        spec = self._queues.get(name)
        if spec is not None:
            return spec
        if not name:
            raise UnknownQueueError("queue name must not be empty")
        if not self.dynamic_queues:
            known = ", ".join(sorted(self._queues)) or "none"
            raise UnknownQueueError(
                f"queue '{name}' is not configured for driver '{self.name}' (configured: {known})"
            )
        spec = self._check_queue(QueueSpec(name=name, driver=self.name, configured=False))
        self._queues[name] = spec
        return spec

    def capabilities_for(self, queue: str | None = None) -> Capabilities:
        """What this driver instance can do, for ``queue`` when one is named.

        The class attribute ``capabilities`` describes the driver type with its default options; drivers
        whose options or queues change what they can do (a broker flavour, a scheduler switched on, FIFO
        queues, quorum queues) override this. The core reads capabilities only through it. It is called
        for every published batch: cache what it computes.
        """
        return self.capabilities

    def sources(self, queue: str) -> set[str]:
        """The logical queues whose published messages can arrive in ``queue``: itself, and others
        where the broker routes (RabbitMQ queues sharing an exchange). Signatures name the queue a
        message was published to, so a consumer accepts those signed for any of these."""
        return {queue}

    def producer(self, queue: str) -> Producer:
        """Return the producer of ``queue``, created on first use and reused afterwards."""
        self._check_open()
        producer = self._producers.get(queue)
        if producer is None or producer.closed:
            producer = self._create_producer(self.queue(queue))
            self._producers[queue] = producer
        return producer

    def consumer(self, queue: str, *, routing_key: str | None = None, prefetch: int = 1) -> Consumer:
        """Return a new consumer of ``queue``.

        Args:
            queue: The logical queue.
            routing_key: Binding key overriding the queue's configured ``routing_keys``.
            prefetch: How many deliveries the broker may hand this consumer ahead of time.
        """
        self._check_open()
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, not {prefetch}")
        spec = self.queue(queue)
        keys = (routing_key,) if routing_key is not None else spec.routing_keys
        narrowed = routing_key is not None and (routing_key,) != (tuple(spec.routing_keys) or ("#",))
        if narrowed and self.capabilities_for(queue).consumer_routing == "none":
            raise UnsupportedOperationError(
                f"driver '{self.name}' cannot narrow queue '{queue}' to routing key {routing_key!r} for "
                "one consumer without losing or delaying the other consumers' messages: set the "
                f"queue's routing_keys instead (now {list(spec.routing_keys) or 'all'})"
            )
        return self._create_consumer(spec, tuple(keys), prefetch)

    def queue_manager(self) -> QueueManager:
        """Return the driver's queue manager."""
        self._check_open()
        if self._manager is None:
            self._manager = self._create_queue_manager()
        return self._manager

    def close(self) -> None:
        """Close every producer this driver handed out and release its connections."""
        if self._closed:
            return
        self._closed = True
        for producer in self._producers.values():
            try:
                producer.close()
            except Exception:
                logger.warning(
                    "driver %s: closing the producer of queue %s failed",
                    self.name,
                    producer.queue.name,
                    exc_info=True,
                )
        self._producers.clear()
        self._close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"driver '{self.name}' is closed")

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    @abc.abstractmethod
    def _create_producer(self, queue: QueueSpec) -> Producer:
        """Build a producer for ``queue`` (declaring broker topology if needed)."""

    @abc.abstractmethod
    def _create_consumer(self, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int) -> Consumer:
        """Build a consumer for ``queue`` bound to ``routing_keys`` (empty: every message)."""

    @abc.abstractmethod
    def _create_queue_manager(self) -> QueueManager:
        """Build the queue manager."""

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release driver-wide resources (connections, pools)."""
