"""Keeping leases: extending the deliveries held, for drivers whose deliveries time out
(``Capabilities.lease_extension``: sqlite, SQS, memory).

One keeper, two users. The consume loop holds one delivery at a time while its handler runs; a
:class:`LeaseKeeper` thread extends it. Re-drive holds many dead letters while it browses and calls
:meth:`Leases.keep` itself between receives; it extends them all with one ``extend_many`` and holds no
more than it can extend in time (:meth:`Leases.capacity`).
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from kq.core._driver_consumer import Consumer
from kq.core._errors import LeaseLostError
from kq.core._message import Delivery

logger = logging.getLogger(__name__.replace("._", "."))

#: Lease assumed when the consumer does not say how long its leases are, in seconds.
DEFAULT_LEASE = 30.0
#: Deliveries held before the first extension is timed (then :meth:`Leases.capacity` is measured).
LEASE_PROBE = 10


class Leases:
    """The deliveries one consumer holds, extended by a full lease whenever a third of the earliest one
    has passed; nothing is extended after a delivery is settled or released.

    Each extension is timed, so that :meth:`capacity` says how many deliveries can be held while one
    extension still ends with a third of every lease left (before the first timing, at most
    :data:`LEASE_PROBE`). A delivery whose lease the driver says lapsed (:class:`LeaseLostError`) is no
    longer extended; :meth:`is_lost` tells the holder to leave it alone.

    Args:
        consumer: The consumer holding the deliveries.
        lease: Lease length in seconds; ``None`` for a driver without leases (nothing is extended or
            capped).
        where: What the log lines name before the queue (``"queue"``, ``"dead-letter queue"``).
        batch: Extend with one ``extend_many`` (re-drive); ``False`` extends each delivery with
            ``extend``, the one call every driver implements (the loop, which holds one delivery).
    """

    def __init__(
        self, consumer: Consumer, lease: float | None, *, where: str = "queue", batch: bool = True
    ) -> None:
        self.consumer = consumer
        self.lease = lease or None
        self.where = where
        self.batch = batch
        self.held: list[Delivery] = []
        self._lost: dict[int, Delivery] = {}  # id() -> delivery (kept alive, so ids are not reused)
        self._cost: float | None = None  # seconds to extend one delivery, as last timed
        self._timed = False
        self._due = float("inf")  # time.monotonic() of the next extension

    @property
    def active(self) -> bool:
        """Whether the driver leases deliveries (and the holder must keep them)."""
        return self.lease is not None

    @property
    def timed(self) -> bool:
        """Whether an extension was timed (so :meth:`capacity` is measured, not the probe)."""
        return self._timed

    def capacity(self) -> int | None:
        """How many deliveries may be held at once (``None``: no limit here)."""
        if self.lease is None:
            return None
        if self._cost is None:
            return LEASE_PROBE
        if self._cost <= 0:
            return sys.maxsize
        return max(1, int(self.lease / 3 / self._cost))

    def room(self) -> int | None:
        """How many more deliveries may be held (``None``: no limit here); settled ones count until
        :meth:`forget_settled`."""
        capacity = self.capacity()
        return None if capacity is None else capacity - len(self.held)

    def add(self, delivery: Delivery) -> None:
        """Hold ``delivery`` until it is settled; its first extension is due a third of a lease after the
        broker handed it over (before ``receive`` returned it, for a buffered delivery)."""
        if self.lease is None:
            return
        self.held.append(delivery)
        expires = delivery.lease_expires
        if expires is None:
            expires = time.monotonic() + self.lease
        self._due = min(self._due, expires - 2 * self.lease / 3)

    def forget_settled(self) -> None:
        """Stop holding what was settled."""
        self.held = [d for d in self.held if not d.settled]

    def is_lost(self, delivery: Delivery) -> bool:
        """Whether the driver said the lease of ``delivery`` had lapsed."""
        return id(delivery) in self._lost

    def keep(self, *, now: bool = False) -> None:
        """Extend every held delivery if a third of the earliest lease has passed (or ``now``)."""
        if self.lease is None or (not now and time.monotonic() < self._due):
            return
        self.forget_settled()
        if not self.held:
            self._due = float("inf")
            return
        queue, count = self.held[0].queue, len(self.held)
        started = time.monotonic()
        try:
            self._extend(self.held, self.lease)
        except LeaseLostError as exc:
            self._mark_lost(exc)
        except Exception as exc:
            logger.warning(
                "%s %s: could not keep %d messages reserved (%s: %s); another consumer may receive them",
                self.where,
                queue,
                count,
                type(exc).__name__,
                exc,
            )
            self._timed = True
            self._due = time.monotonic() + self.lease / 6  # try again soon, not at every call
            return
        ended = time.monotonic()
        self._cost = (ended - started) / count
        self._timed = True
        self._due = started + self.lease / 3
        logger.debug(
            "%s %s: %d leases extended by %.0fs in %.3fs",
            self.where,
            queue,
            count,
            self.lease,
            ended - started,
        )

    def _extend(self, deliveries: list[Delivery], lease: float) -> None:
        if self.batch:
            self.consumer.extend_many(deliveries, lease)
            return
        lost: list[Delivery] = []
        for delivery in deliveries:
            try:
                self.consumer.extend(delivery, lease)
            except LeaseLostError:
                lost.append(delivery)
        if lost:
            raise LeaseLostError(f"{len(lost)} of {len(deliveries)} leases had lapsed", lost)

    def _mark_lost(self, exc: LeaseLostError) -> None:
        for delivery in exc.deliveries:
            self._lost[id(delivery)] = delivery
            # Nothing to keep any more: whoever holds it goes on, and its settlement is a no-op.
            logger.warning(
                "%s %s message %s: its lease had lapsed before it could be extended (%s); another "
                "consumer may hold it now",
                self.where,
                delivery.queue,
                delivery.message_id,
                exc,
            )
        self.held = [d for d in self.held if id(d) not in self._lost]


class LeaseKeeper:
    """Extends the lease of the delivery a consume loop is handling, from one background thread.

    Drivers with visibility timeouts (sqlite, SQS) would hand a message to another consumer while a
    long handler still runs. The hot path only swaps the held :class:`Leases` under an uncontended lock:
    the thread wakes on its own short tick instead of being notified for every message, which would cost
    two thread switches per message.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Leases | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kq-lease-keeper", daemon=True)
        self._thread.start()

    def watch(self, consumer: Consumer, delivery: Delivery) -> None:
        """Keep ``delivery`` reserved until :meth:`release`."""
        leases = Leases(consumer, consumer.lease_duration or DEFAULT_LEASE, batch=False)
        leases.add(delivery)
        with self._lock:
            self._current = leases

    def release(self) -> None:
        """Stop extending; taking the lock also waits for an extension in progress."""
        with self._lock:
            self._current = None

    def shutdown(self) -> None:
        """Stop the thread (within its tick)."""
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        tick = 1.0
        while not self._stopping.wait(tick):
            with self._lock:
                leases = self._current
                if leases is None or leases.lease is None:
                    tick = 1.0
                    continue
                tick = min(1.0, leases.lease / 6)
                leases.keep()
