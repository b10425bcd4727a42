"""Browsing a dead-letter queue for re-drive: its consumer, chunks of deliveries kept reserved, batch
acknowledgement.

A dead-letter queue is *browsed* by receiving from it until it stays empty for ``idle`` seconds (or
``limit`` messages came, or the prefetch); closing the consumer gives every delivery not settled back to
the queue untouched. On drivers with leases, what re-drive holds is kept reserved by a
:class:`~kq.core._leases.Leases`, in chunks of at most :data:`LEASE_CHUNK` deliveries acted on at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from kq.core._driver import Driver
from kq.core._driver_consumer import Consumer
from kq.core._leases import Leases
from kq.core._message import Delivery

if TYPE_CHECKING:
    from kq.core._app import App

logger = logging.getLogger(__name__.replace("._", "."))

#: On drivers with leases: deliveries acted on (published again, acknowledged) at a time, before more
#: are received, so that what re-drive holds stays small and no lease lapses while it works.
LEASE_CHUNK = 100


@contextmanager
def open_dead_letters(
    app: App, queue: str, driver: str | None, prefetch: int, limit: int | None
) -> Iterator[tuple[Driver, str, Consumer]]:
    """A consumer of the dead-letter queue of ``queue``; closing it releases what was not settled.

    The consume loop dead-letters through the driver of the original queue, so the dead-letter queue
    is read through that same driver instance.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    if prefetch < 1:
        raise ValueError(f"prefetch must be at least 1, not {prefetch}")
    instance, spec = app.queue(queue, driver)
    dead_letter_queue = spec.dead_letter_queue
    consumer = instance.consumer(dead_letter_queue, prefetch=min(prefetch, limit or prefetch))
    try:
        yield instance, dead_letter_queue, consumer
    finally:
        try:
            consumer.close()
        except Exception as exc:  # a dead connection often fails to close; the broker releases anyway
            logger.warning(
                "dead-letter queue %s: closing the consumer failed (%s); the messages not handled "
                "come back once the broker notices",
                dead_letter_queue,
                exc,
            )


def leases_of(instance: Driver, dead_letter_queue: str, consumer: Consumer) -> Leases:
    """What re-drive keeps reserved: nothing unless the driver extends leases on that queue."""
    lease = consumer.lease_duration if instance.capabilities_for(dead_letter_queue).lease_extension else None
    return Leases(consumer, lease, where="dead-letter queue")


def chunks(
    consumer: Consumer, dead_letter_queue: str, leases: Leases, *, limit: int | None, idle: float
) -> Iterator[list[Delivery]]:
    """The deliveries of the dead-letter queue, in the order received, in chunks to act on one after
    the other; what the caller settles in a chunk makes room for the next.

    Receiving ends when the queue stays empty for ``idle`` seconds, or ``limit`` deliveries came, or as
    many as the prefetch. Without leases the whole browse is one chunk. With leases a chunk holds at
    most :data:`LEASE_CHUNK` deliveries, and receiving also ends when what is held (not settled) fills
    what can be kept reserved (:meth:`Leases.capacity`).
    """
    most = min(limit or consumer.prefetch, consumer.prefetch)
    step = LEASE_CHUNK if leases.active else most
    seen = 0
    full = False
    chunk: list[Delivery] = []
    while seen < most:
        room = leases.room()
        if room is not None and room <= 0:
            if not leases.timed:
                leases.keep(now=True)  # time an extension: the real capacity
                continue
            if chunk:
                yield chunk  # what the caller settles makes room
                leases.forget_settled()
                chunk = []
                continue
            full = True
            break
        delivery = _receive(consumer, leases, idle)
        if delivery is None:
            break
        seen += 1
        leases.add(delivery)
        chunk.append(delivery)
        if len(chunk) >= step:
            yield chunk
            leases.forget_settled()
            chunk = []
    if chunk:
        yield chunk
    if full:
        logger.warning(
            "dead-letter queue %s: looked at the first %d messages only: %d (those not removed or queued "
            "again) are as many as can be kept reserved at once on this driver (extending more would "
            "take longer than a third of the %gs lease); handle these first, or raise the queue's "
            "visibility timeout",
            dead_letter_queue,
            seen,
            len(leases.held),
            leases.lease,
        )
    elif seen == consumer.prefetch and (limit is None or limit > consumer.prefetch):
        logger.warning(
            "dead-letter queue %s: looked at the first %d messages only (the prefetch); "
            "run again for the rest",
            dead_letter_queue,
            seen,
        )
    logger.debug("dead-letter queue %s: %d messages browsed", dead_letter_queue, seen)


def _receive(consumer: Consumer, leases: Leases, idle: float) -> Delivery | None:
    """The next delivery, or ``None`` once none came for ``idle`` seconds; with leases, the wait is cut
    in slices of a sixth of the lease so that what is held is kept reserved meanwhile."""
    deadline = time.monotonic() + idle
    while True:
        leases.keep()
        wait = max(0.0, deadline - time.monotonic())
        if leases.lease is not None:
            wait = min(wait, leases.lease / 6)
        delivery = consumer.receive(wait)
        if delivery is not None or time.monotonic() >= deadline:
            return delivery


def ack_all(consumer: Consumer, deliveries: Sequence[Delivery]) -> str | None:
    """Acknowledge ``deliveries`` in one :meth:`Consumer.ack_many`; return the error, or ``None``."""
    if not deliveries:
        return None
    try:
        consumer.ack_many(deliveries)
    except Exception as exc:
        logger.error(
            "dead-letter queue %s messages %s: could not be acknowledged (%s: %s)",
            consumer.queue.name,
            ", ".join(d.message_id for d in deliveries),
            type(exc).__name__,
            exc,
        )
        return f"could not be acknowledged: {type(exc).__name__}: {exc}"
    return None


def log_left(delivery: Delivery, why: str) -> None:
    logger.error(
        "dead-letter queue %s message %s: left in the dead-letter queue: %s",
        delivery.queue,
        delivery.message_id,
        why,
    )


#: Why a delivery whose lease was lost is left alone.
LOST = (
    "its lease lapsed while re-drive held it (another consumer may hold it now); it was left in the "
    "dead-letter queue: run the command again"
)
