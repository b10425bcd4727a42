"""The driver contract: a :class:`Driver` hands out a :class:`Producer`, a :class:`Consumer` and a
:class:`QueueManager` for logical queues.

Consuming is a *bounded pull*: the core's consume loop calls :meth:`Consumer.receive` with a timeout and
gets one :class:`~kq.core.Delivery` or ``None``. The loop, not the driver, owns limits, signals, events,
acknowledgement and error policy. A delivery is acknowledged only **after** the handler finished
(at-least-once), rejected with or without requeue (optionally after a delay), or *extended* while a long
handler runs. Closing a consumer releases what it fetched and did not settle.

How the three broker models map onto it:

AMQP 0-9-1 (RabbitMQ through pika): push-based. The consumer starts ``basic_consume`` with a prefetch
    (QoS) and buffers pushed deliveries; ``receive(timeout)`` pumps the connection's I/O loop for at most
    ``timeout`` seconds and pops one. ``ack`` is ``basic_ack``, ``reject`` is ``basic_reject`` /
    ``basic_nack`` with ``requeue``; a delayed requeue republishes through a delay queue (TTL plus
    dead-letter exchange). ``extend`` is a no-op: an unacked delivery stays with its channel until the
    channel closes, which is what makes the broker redeliver after a crash. The delivery count comes from
    ``x-delivery-count`` on quorum queues (``delivery_count = "exact"``) or from ``redelivered`` on
    classic queues (``"flag"``: 2 for any redelivery). A consumer's own routing key reads a queue of its
    own (``consumer_routing = "own-queue"``). Publishing a batch waits for publisher confirms once per
    batch.

Amazon SQS (boto3): pull-based with visibility timeouts. ``receive`` is a long poll (``WaitTimeSeconds`` =
    min(20, floor(timeout)), an int: below 1 s it is a short poll that may miss waiting messages) that may
    return up to 10 messages; the extra ones are buffered with their ``lease_expires``, one whose
    visibility lapsed in the buffer is released and never handed out, and all are released (visibility 0)
    on close. The receipt handle is the delivery's ``handle``; ``ack`` is ``DeleteMessage`` (a stale
    receipt handle raises ``LeaseLostError``, never a plain client error), ``reject(requeue=True,
    delay=d)`` is ``ChangeMessageVisibility(d)`` (``max_requeue_delay`` 43200), ``reject(requeue=False)``
    deletes (SQS cannot move a message to its redrive dead-letter queue on demand), and ``extend`` is
    ``ChangeMessageVisibility`` while a handler runs past the timeout (12 h in all at most).
    ``ApproximateReceiveCount`` counts every receive, releases, browses and skips included
    (``delivery_count = "receives"``): the loop does not apply ``max_deliveries``; the queue's redrive
    policy is the poison protection. Batches are ``SendMessageBatch`` calls of at most 10 entries and
    1 MiB, a partial failure raising ``PublishError``; publish delays are ``DelaySeconds``
    (``max_publish_delay`` 900 s, 0 on FIFO queues, whose de-duplication ids are fresh per publish call,
    never derived from the message id or body). SQS cannot filter: the producer publishes only messages
    whose key matches the queue's ``routing_keys``, and a consumer's own narrower key is refused
    (``consumer_routing = "none"``).

STOMP (ActiveMQ, RabbitMQ's STOMP plugin, through stomp.py): push-based subscriptions with
    ``ack: client-individual``, one connection per consumer with stomp.py's auto-reconnect off (the loop
    rebuilds the consumer), and a prefetch. A listener thread buffers ``MESSAGE`` frames; ``receive``
    waits on that buffer; ``ack`` sends ``ACK``. ``NACK`` is no requeue on ActiveMQ: it is a poison ack
    (the message goes to ``ActiveMQ.DLQ``, or is dropped when non-persistent), so ``reject(requeue=True,
    delay=d)`` sends a copy carrying the count in ``kq-redelivery`` (with ``AMQ_SCHEDULED_DELAY`` = d·1000
    when d > 0) and ACKs the original, in one transaction; RabbitMQ's plugin requeues on ``NACK`` and
    delays through delay queues. ``AMQ_SCHEDULED_DELAY`` works only with ActiveMQ's scheduler
    (``schedulerSupport="true"``; otherwise it is silently ignored), so ``delayed_delivery`` comes from a
    driver option, and the ``scheduledJobId`` header it adds is stripped on receive. Unacked messages
    return to the queue when the connection drops (closing DISCONNECTs; never NACK to release on
    ActiveMQ). The delivery count is a flag: ActiveMQ sends ``redelivered:true`` and no counter, as
    RabbitMQ classic queues do; only RabbitMQ quorum queues send ``x-delivery-count``. Routing: ActiveMQ
    filters with a selector on an identifier-safe kq header (``consumer_routing = "filter"``); on
    RabbitMQ the driver addresses ``/queue/`` directly, filters on the producer side and refuses a
    consumer's own key (``"none"``). Every SEND carries a ``receipt``, awaited once per batch, so a
    refused frame is an error, not a silent disconnect; header names brokers reserve are refused by
    ``Message`` itself.

The embedded drivers behave like SQS, with exact delivery counts and filtering consumers: the sqlite
driver leases a row for ``visibility_timeout`` seconds and the memory driver keeps an in-flight table with
deadlines.

Drivers implement the protected ``_hooks``; the public methods own the state checks, so every driver
rejects a double ack, a settle through the wrong consumer and use after close in the same way.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from kq.core._errors import (
    ClosedError,
    DeliveryStateError,
    LeaseLostError,
    UnknownQueueError,
    UnsupportedOperationError,
)
from kq.core._message import Delivery, Message
from kq.core._numbers import check_number
from kq.core._options import Option, resolve_options
from kq.core._spec import DriverSpec, QueueSpec

logger = logging.getLogger(__name__)

#: Queue-manager actions every driver offers.
STANDARD_ACTIONS = ("list-configured", "list-available", "info", "purge", "delete")


#: How far ``Delivery.delivery_count`` can be trusted (``Capabilities.delivery_count``).
DELIVERY_COUNTS = ("exact", "receives", "flag")
#: What a consumer's own routing key does (``Capabilities.consumer_routing``).
CONSUMER_ROUTINGS = ("filter", "own-queue", "none")


@dataclass(frozen=True)
class Capabilities:
    """What a driver instance can do for a queue; ``kq managedriver list`` and ``kq managequeue info``
    show them, and the core's policies read them (:meth:`Driver.capabilities_for`), never assume them.

    Attributes:
        routing_keys: ``"native"`` (the broker routes by topic), ``"emulated"`` (kq filters with its own
            AMQP topic matcher) or ``"none"``.
        consumer_routing: What a consumer's own routing key (``kq consume -r``) does: ``"filter"`` (it
            takes only matching messages from the shared queue and leaves the others to other consumers:
            sqlite, memory), ``"own-queue"`` (it reads a queue of its own bound with that key, a copy of
            each matching message: RabbitMQ) or ``"none"`` (refused, with an error: a broker that cannot
            filter without losing or delaying other consumers' messages, such as SQS).
        delayed_delivery: Messages and requeues can be delayed.
        max_publish_delay: Longest delay of a published message, retry copies included, in seconds
            (``None``: unbounded; SQS: 900, SQS FIFO: 0).
        max_requeue_delay: Longest delay of a rejected, requeued delivery, in seconds (``None``:
            unbounded; SQS: 43200, its visibility timeout limit).
        delivery_count: How ``Delivery.delivery_count`` counts: ``"exact"`` (handing-outs that were not
            settled: sqlite, memory, RabbitMQ quorum queues), ``"receives"`` (every receive, including
            releases, browses and routing skips: SQS's ApproximateReceiveCount) or ``"flag"`` (only
            whether it was delivered before: 1 or 2; RabbitMQ classic queues, ActiveMQ). Poison
            protection (``max_deliveries``) works only where the count is exact; see docs/failures.md.
        priorities: Messages can carry a priority.
        native_dead_letter: The broker itself can route rejected messages to a dead-letter queue.
        batch_send: Publishing a batch is cheaper than publishing its messages one by one.
        batch_receive: One receive call can fetch several messages.
        message_ttl: Per-message time-to-live is enforced.
        lease_extension: Deliveries time out unless extended while a long handler runs.
        cross_process: Producers and consumers may live in different processes.
        queue_actions: Queue-manager actions (``kq managequeue``).
    """

    routing_keys: str = "emulated"
    consumer_routing: str = "filter"
    delayed_delivery: bool = False
    max_publish_delay: float | None = None
    max_requeue_delay: float | None = None
    delivery_count: str = "exact"
    priorities: bool = False
    native_dead_letter: bool = False
    batch_send: bool = False
    batch_receive: bool = False
    message_ttl: bool = False
    lease_extension: bool = False
    cross_process: bool = True
    queue_actions: tuple[str, ...] = STANDARD_ACTIONS

    def __post_init__(self) -> None:
        if self.delivery_count not in DELIVERY_COUNTS:
            raise ValueError(f"delivery_count must be one of {DELIVERY_COUNTS}, not {self.delivery_count!r}")
        if self.consumer_routing not in CONSUMER_ROUTINGS:
            raise ValueError(
                f"consumer_routing must be one of {CONSUMER_ROUTINGS}, not {self.consumer_routing!r}"
            )
        for name in ("max_publish_delay", "max_requeue_delay"):
            value = getattr(self, name)
            if value is not None:
                check_number(value, name)

    def as_dict(self) -> dict[str, Any]:
        """Return the capabilities as a JSON-friendly dict."""
        values = asdict(self)
        values["queue_actions"] = list(self.queue_actions)
        return values

    def delay_problem(self, delay: float, *, requeue: bool) -> str | None:
        """Why ``delay`` seconds cannot be honoured for a publish (or a requeue), or ``None`` if it can."""
        if not delay:
            return None
        if not self.delayed_delivery:
            return "cannot delay messages"
        limit = self.max_requeue_delay if requeue else self.max_publish_delay
        if limit is not None and delay > limit:
            what = "a requeue" if requeue else "a published message"
            return f"delays {what} by at most {limit:.0f}s"
        return None


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


class Producer(abc.ABC):
    """Publishes messages to one logical queue. A single message is a batch of one."""

    def __init__(self, driver: Driver, queue: QueueSpec) -> None:
        self.driver = driver
        self.queue = queue
        self.closed = False

    def send(self, message: Message) -> None:
        """Send one message."""
        self.send_batch((message,))

    def send_batch(self, messages: Sequence[Message]) -> None:
        """Send ``messages``; confirms, transactions and batch calls are paid once per batch.

        A message id and a body are not unique per publication: retry copies, requeue copies and
        re-drives publish them again. A driver must never derive a broker de-duplication id from them
        (an SQS FIFO ``MessageDeduplicationId`` is fresh per publish call), or copies are dropped.

        Raises:
            UnsupportedOperationError: a message asks for a delay or a TTL the queue cannot honour.
            PublishError: the batch failed part-way; it says which messages were published.
        """
        if self.closed:
            raise ClosedError(f"the producer of queue '{self.queue.name}' is closed")
        if not messages:
            return
        caps = self.driver.capabilities_for(self.queue.name)
        for message in messages:
            if message.ttl is not None and not caps.message_ttl:
                raise UnsupportedOperationError(
                    f"driver '{self.driver.name}' cannot expire messages "
                    f"(message {message.message_id} has a TTL)"
                )
            problem = caps.delay_problem(message.delay, requeue=False)
            if problem:
                raise UnsupportedOperationError(
                    f"driver '{self.driver.name}' {problem} on queue '{self.queue.name}' "
                    f"(message {message.message_id} asks for {message.delay:g}s)"
                )
        self._send_batch(messages)

    def close(self) -> None:
        """Release the producer's resources."""
        if not self.closed:
            self.closed = True
            self._close()

    @abc.abstractmethod
    def _send_batch(self, messages: Sequence[Message]) -> None:
        """Send ``messages`` (validated, non-empty)."""

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class Consumer(abc.ABC):
    """Receives deliveries from one logical queue, one bounded wait at a time."""

    #: Seconds a delivery stays reserved for this consumer unless extended (``None``: until settled or
    #: disconnected). The consume loop extends it while a long handler runs.
    lease_duration: float | None = None

    def __init__(
        self, driver: Driver, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int
    ) -> None:
        self.driver = driver
        self.queue = queue
        self.routing_keys = routing_keys
        self.prefetch = prefetch
        self.closed = False

    def receive(self, timeout: float) -> Delivery | None:
        """Wait at most ``timeout`` seconds for the next delivery; ``None`` when none came."""
        if self.closed:
            raise ClosedError(f"the consumer of queue '{self.queue.name}' is closed")
        if timeout < 0:
            raise ValueError(f"timeout must not be negative, not {timeout}")
        delivery = self._receive(timeout)
        if delivery is None:
            return None
        if delivery.lease_expires is not None and delivery.lease_expires <= time.monotonic():
            # A driver bug (a buffered delivery handed out after its lease lapsed): another consumer may
            # hold it now, so this one must not run it. It comes back by itself; nothing is lost.
            logger.warning(
                "queue %s message %s: the driver handed over a delivery whose lease had already "
                "lapsed; skipping it (it is redelivered to whoever holds it now)",
                self.queue.name,
                delivery.message_id,
            )
            return None
        delivery.owner = self
        return delivery

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge ``delivery``: the broker forgets the message.

        If its lease was lost meanwhile (the driver raises :class:`LeaseLostError`), the copy another
        consumer now holds is left alone and a warning says the message may run again.
        """
        self._settle(delivery, "ack")
        try:
            self._ack(delivery)
        except LeaseLostError as exc:
            self._lease_lost(delivery, "acknowledgement", exc)

    def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge several deliveries; drivers with batch calls (SQS) make it one round trip per batch."""
        for delivery in deliveries:
            self._settle(delivery, "ack")
        try:
            self._ack_many(deliveries)
        except LeaseLostError as exc:
            self._lease_lost(None, "acknowledgement", exc)

    def reject(self, delivery: Delivery, *, requeue: bool = True, delay: float = 0.0) -> None:
        """Reject ``delivery``.

        Args:
            delivery: The delivery to reject.
            requeue: Put the message back on the queue (with its delivery count increased on the next
                delivery); ``False`` drops it, or hands it to the broker's dead-letter queue where one is
                configured natively.
            delay: With ``requeue``, seconds before the message becomes visible again.
        """
        if requeue:
            self._check_delay(delay, requeue=True)
        else:
            check_number(delay, "delay")
        self._settle(delivery, "reject")
        try:
            self._reject(delivery, requeue, delay)
        except LeaseLostError as exc:
            self._lease_lost(delivery, "rejection", exc)

    def retry(self, delivery: Delivery, headers: Mapping[str, str], *, delay: float = 0.0) -> None:
        """Put a copy of ``delivery`` with ``headers`` back on this consumer's queue, visible after
        ``delay`` seconds, then settle the original.

        The copy keeps the message id, body, content type and routing key, and goes to this queue only
        (not to other queues sharing an exchange). If queueing the copy fails, the delivery stays
        unsettled so that the caller can still dead-letter or reject it.
        """
        self._check_delay(delay, requeue=False)
        self._check_owned(delivery, "retry")
        try:
            self._retry(delivery, dict(headers), delay)
        except LeaseLostError as exc:
            # The copy is queued; the original's lease lapsed before it could be settled.
            delivery.settled = True
            self._lease_lost(delivery, "acknowledgement of the retried original", exc)
            return
        delivery.settled = True

    def extend(self, delivery: Delivery, seconds: float) -> None:
        """Keep ``delivery`` invisible to other consumers for ``seconds`` more (a no-op where unneeded).

        Raises:
            LeaseLostError: the lease had lapsed; another consumer may hold the message now.
        """
        self._check_extendable(delivery)
        self._extend(delivery, seconds)
        if delivery.lease_expires is not None:
            delivery.lease_expires = time.monotonic() + seconds

    def extend_many(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Extend several deliveries (one round trip per batch where the broker has batch calls).

        Raises:
            LeaseLostError: some leases had lapsed (``exc.deliveries`` says which); the others were
                extended.
        """
        for delivery in deliveries:
            self._check_extendable(delivery)
        until = time.monotonic() + seconds
        try:
            self._extend_many(deliveries, seconds)
        except LeaseLostError as exc:
            lost = {id(d) for d in exc.deliveries}
            _move_leases([d for d in deliveries if id(d) not in lost], until)
            raise
        _move_leases(deliveries, until)

    def _check_extendable(self, delivery: Delivery) -> None:
        if delivery.owner is not self or delivery.settled:
            raise DeliveryStateError(
                f"cannot extend {delivery!r}: it is settled or not owned by this consumer"
            )

    def _lease_lost(self, delivery: Delivery | None, what: str, exc: LeaseLostError) -> None:
        ids = [d.message_id for d in exc.deliveries] or ([delivery.message_id] if delivery else [])
        logger.warning(
            "queue %s message %s: the %s came after the lease had lapsed (%s); the copy another consumer "
            "may hold was left alone, so the message may run again",
            self.queue.name,
            ", ".join(ids) or "?",
            what,
            exc,
        )

    def close(self) -> None:
        """Stop consuming and release the deliveries received but not settled."""
        if not self.closed:
            self.closed = True
            self._close()

    def _check_delay(self, delay: float, *, requeue: bool) -> None:
        check_number(delay, "delay")
        problem = self.driver.capabilities_for(self.queue.name).delay_problem(delay, requeue=requeue)
        if problem:
            raise UnsupportedOperationError(
                f"driver '{self.driver.name}' {problem} on queue '{self.queue.name}' (asked for {delay:g}s)"
            )

    def _settle(self, delivery: Delivery, what: str) -> None:
        self._check_owned(delivery, what)
        delivery.settled = True

    def _check_owned(self, delivery: Delivery, what: str) -> None:
        if delivery.owner is not self:
            raise DeliveryStateError(f"cannot {what} {delivery!r}: it was received by another consumer")
        if delivery.settled:
            raise DeliveryStateError(f"cannot {what} {delivery!r}: it is already settled")
        if self.closed:
            raise ClosedError(f"cannot {what} {delivery!r}: the consumer is closed")

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def _receive(self, timeout: float) -> Delivery | None:
        """Return the next delivery within ``timeout`` seconds, or ``None``."""

    @abc.abstractmethod
    def _ack(self, delivery: Delivery) -> None:
        """Acknowledge; raise :class:`LeaseLostError` (and change nothing) if the lease had lapsed."""

    def _ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge several deliveries; the default acknowledges them one by one."""
        _one_by_one(self._ack, deliveries)

    @abc.abstractmethod
    def _reject(self, delivery: Delivery, requeue: bool, delay: float) -> None:
        """Reject, requeueing after ``delay`` seconds when ``requeue``; raise :class:`LeaseLostError`
        (and change nothing) if the lease had lapsed."""

    def _retry(self, delivery: Delivery, headers: dict[str, str], delay: float) -> None:
        """Queue the copy, then acknowledge the original. The default publishes through the driver's
        producer for this logical queue, which suits brokers that address queues directly (sqlite,
        SQS); brokers that route through exchanges override it to reach this queue only."""
        self.driver.producer(self.queue.name).send(delivery.to_message(headers=headers, delay=delay))
        self._ack(delivery)

    def _extend(self, delivery: Delivery, seconds: float) -> None:  # noqa: B027 - optional hook
        """Extend the delivery's lease to ``seconds`` from now (no-op by default); raise
        :class:`LeaseLostError` (and change nothing) if the lease had lapsed."""

    def _extend_many(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Extend several leases; the default extends them one by one."""
        _one_by_one(lambda delivery: self._extend(delivery, seconds), deliveries)

    @abc.abstractmethod
    def _close(self) -> None:
        """Release unsettled deliveries and connections."""


def _one_by_one(settle: Callable[[Delivery], None], deliveries: Sequence[Delivery]) -> None:
    """Apply ``settle`` to each delivery; the lapsed leases are raised together at the end."""
    lost: list[Delivery] = []
    for delivery in deliveries:
        try:
            settle(delivery)
        except LeaseLostError:
            lost.append(delivery)
    if lost:
        raise LeaseLostError(f"{len(lost)} of {len(deliveries)} leases had lapsed", lost)


def _move_leases(deliveries: Iterable[Delivery], until: float) -> None:
    for delivery in deliveries:
        if delivery.lease_expires is not None:
            delivery.lease_expires = until


class QueueManager(abc.ABC):
    """Administrative actions on a driver's queues (``kq managequeue``).

    ``info`` returns a dict with at least ``messages``: the number of messages waiting to be delivered.
    Drivers add what their broker knows (``in_flight``, ``delayed``, ``consumers``, ...).
    """

    #: Actions that need a queue argument.
    queue_actions: ClassVar[frozenset[str]] = frozenset({"info", "purge", "delete"})

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    @property
    def actions(self) -> tuple[str, ...]:
        """The actions this manager supports: the driver's declared ``Capabilities.queue_actions``."""
        return self.driver.capabilities_for().queue_actions

    def execute(
        self, action: str, queue: str | None = None, arguments: Mapping[str, str] | None = None
    ) -> Any:
        """Run ``action`` by name (as the CLI does) and return its JSON-friendly result."""
        if action not in self.actions:
            raise UnsupportedOperationError(
                f"driver '{self.driver.name}' has no queue action '{action}'; "
                f"available: {', '.join(self.actions)}"
            )
        if action in self.queue_actions and not queue:
            raise UnsupportedOperationError(f"action '{action}' needs a queue name")
        method = getattr(self, action.replace("-", "_"))
        accepted = [
            p.name
            for p in inspect.signature(method).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "queue"
        ]
        for name in arguments or {}:
            if name not in accepted:
                takes = f"takes {', '.join(accepted)}" if accepted else "takes no arguments"
                raise UnsupportedOperationError(f"action '{action}' has no argument '{name}' (it {takes})")
        if action in self.queue_actions or "queue" in inspect.signature(method).parameters:
            return method(queue, **(arguments or {}))
        return method(**(arguments or {}))

    def list_configured(self) -> list[dict[str, Any]]:
        """The queues configured for this driver instance."""
        return [
            {
                "queue": spec.name,
                "driver": self.driver.name,
                "consumer": spec.consumer,
                "routing_keys": list(spec.routing_keys),
                "dead_letter_queue": spec.dead_letter_queue,
            }
            for spec in self.driver.configured_queues.values()
            if spec.configured
        ]

    @abc.abstractmethod
    def list_available(self) -> list[str]:
        """Names of the queues that exist on the broker."""

    @abc.abstractmethod
    def info(self, queue: str) -> dict[str, Any]:
        """State of ``queue``: at least ``messages`` (waiting to be delivered)."""

    @abc.abstractmethod
    def purge(self, queue: str) -> int | None:
        """Delete every waiting message; return how many when the broker says."""

    @abc.abstractmethod
    def delete(self, queue: str) -> None:
        """Delete the queue and its messages."""
