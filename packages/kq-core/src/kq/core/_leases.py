"""The lease keeper: extends the lease of the delivery being handled, for drivers whose deliveries time
out (``Capabilities.lease_extension``: sqlite, SQS)."""

from __future__ import annotations

import logging
import threading
import time

from kq.core._driver import Consumer
from kq.core._errors import LeaseLostError
from kq.core._message import Delivery

logger = logging.getLogger(__name__)


class LeaseKeeper:
    """Extends the lease of the delivery being handled, from one background thread per loop.

    Drivers with visibility timeouts (sqlite, SQS) would hand a message to another consumer while a
    long handler still runs; the keeper extends the lease every third of its length. The hot path only
    swaps a tuple under an uncontended lock: the thread wakes on its own short tick instead of being
    notified for every message, which would cost two thread switches per message.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (consumer, delivery, lease length, when to extend next)
        self._current: tuple[Consumer, Delivery, float, float] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kq-lease-keeper", daemon=True)
        self._thread.start()

    def watch(self, consumer: Consumer, delivery: Delivery) -> None:
        lease = consumer.lease_duration or 30.0
        # A third of the lease after it started: when the broker handed the delivery over, which for a
        # buffered delivery was before receive() returned it.
        expires = delivery.lease_expires
        due = expires - lease * 2 / 3 if expires is not None else time.monotonic() + lease / 3
        with self._lock:
            self._current = (consumer, delivery, lease, due)

    def release(self) -> None:
        # Taking the lock also waits for an extension in progress: nothing is extended after this.
        with self._lock:
            self._current = None

    def shutdown(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        tick = 1.0
        while not self._stopping.wait(tick):
            with self._lock:
                current = self._current
                if current is None:
                    tick = 1.0
                    continue
                consumer, delivery, lease, due = current
                tick = min(1.0, lease / 6)
                now = time.monotonic()
                if now < due:
                    continue
                try:
                    consumer.extend(delivery, lease)
                    logger.debug(
                        "queue %s message %s: lease extended by %.0fs",
                        delivery.queue,
                        delivery.message_id,
                        lease,
                    )
                except LeaseLostError as exc:
                    # Nothing to keep any more; the handler goes on, and its settlement is a no-op.
                    logger.warning(
                        "queue %s message %s: its lease had lapsed before it could be extended (%s); "
                        "another consumer may run it too",
                        delivery.queue,
                        delivery.message_id,
                        exc,
                    )
                    self._current = None
                    continue
                except Exception as exc:
                    logger.warning(
                        "queue %s message %s: could not extend the lease (%s); another consumer "
                        "may receive it",
                        delivery.queue,
                        delivery.message_id,
                        exc,
                    )
                self._current = (consumer, delivery, lease, now + lease / 3)
