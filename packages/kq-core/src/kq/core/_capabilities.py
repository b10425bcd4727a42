"""What a driver can do: :class:`Capabilities`, which kq's policies read and never assume."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from kq.core._numbers import check_number

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
        retry_in_place: :meth:`Consumer.retry` leaves the delivery where it is instead of queueing a
            copy at the back: made visible again after the delay (bounded by ``max_requeue_delay``),
            it comes back before the messages published after it (SQS FIFO: at the head of its group,
            whose order a copy would break). The headers given to ``retry`` are checked but not stored;
            the driver counts the attempt itself (``kq-attempt`` of the next delivery is one more), and
            the signature, nonce included, stays the original's.
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
    retry_in_place: bool = False
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
