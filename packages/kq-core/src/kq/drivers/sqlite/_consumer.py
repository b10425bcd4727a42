"""The sqlite consumer: leases ready rows, polling an empty queue with a growing pause."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid

from kq.core import Consumer, Delivery, DeliveryStateError, QueueSpec
from kq.drivers.sqlite._driver import SqliteDriver
from kq.drivers.sqlite._store import routing_filter

logger = logging.getLogger(__name__)

# First pause after finding the queue empty; it doubles up to the driver's poll_interval.
_FIRST_PAUSE = 0.01
# How often expired messages are deleted, in seconds.
_CLEANUP_EVERY = 60.0


class SqliteConsumer(Consumer):
    """Receives by leasing one row at a time for ``visibility_timeout`` seconds."""

    driver: SqliteDriver

    def __init__(
        self, driver: SqliteDriver, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int
    ) -> None:
        super().__init__(driver, queue, routing_keys, prefetch)
        self.lease_duration = driver.visibility_timeout(queue)
        self._poll_interval = float(driver.options["poll_interval"])
        self._connection = driver.connect()
        # The consume loop's lease keeper extends from another thread.
        self._lock = threading.Lock()
        self._leases: dict[int, str] = {}
        condition, params = routing_filter(routing_keys)
        # Only placeholders are interpolated: the condition is "kq_match(?, routing_key)" repeated.
        available = (
            " FROM kq_messages WHERE queue = ? AND available_at <= ?"
            f" AND (expires_at IS NULL OR expires_at > ?){condition} ORDER BY id LIMIT 1"
        )
        # The plain read outside the transaction needs the id only; inside, the whole row.
        self._select = "SELECT id" + available
        self._select_row = (
            "SELECT id, message_id, body, content_type, headers, routing_key, delivery_count" + available
        )
        self._select_params = params
        self._next_cleanup = 0.0

    def _receive(self, timeout: float) -> Delivery | None:
        deadline = time.monotonic() + timeout
        pause = _FIRST_PAUSE
        while True:
            delivery = self._try_lease()
            if delivery is not None:
                return delivery
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, self._poll_interval)

    def _try_lease(self) -> Delivery | None:
        now = time.time()
        params = (self.queue.name, now, now, *self._select_params)
        with self._lock:
            connection = self._connection
            if now >= self._next_cleanup:
                self._cleanup(now)
            # A plain read first: an idle consumer never takes the write lock producers need.
            if connection.execute(self._select, params).fetchone() is None:
                return None
            connection.execute("BEGIN IMMEDIATE")
            try:
                row = connection.execute(self._select_row, params).fetchone()
                if row is None:
                    connection.execute("COMMIT")
                    return None
                row_id, message_id, body, content_type, headers, routing_key, previous = row
                lease = uuid.uuid4().hex
                connection.execute(
                    "UPDATE kq_messages SET available_at = ?, lease = ?, delivery_count = ? WHERE id = ?",
                    (now + (self.lease_duration or 0.0), lease, previous + 1, row_id),
                )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            self._leases[row_id] = lease
        return Delivery(
            body=bytes(body),
            content_type=content_type,
            headers=json.loads(headers),
            routing_key=routing_key,
            message_id=message_id,
            queue=self.queue.name,
            delivery_count=previous + 1,
            handle=(row_id, lease),
        )

    def _cleanup(self, now: float) -> None:
        self._next_cleanup = now + _CLEANUP_EVERY
        deleted = self._connection.execute(
            "DELETE FROM kq_messages WHERE queue = ? AND expires_at IS NOT NULL AND expires_at <= ?"
            " AND available_at <= ?",
            (self.queue.name, now, now),
        ).rowcount
        if deleted:
            logger.info("queue %s: deleted %d expired messages (TTL passed)", self.queue.name, deleted)

    def _ack(self, delivery: Delivery) -> None:
        row_id, lease = delivery.handle
        with self._lock:
            self._leases.pop(row_id, None)
            deleted = self._connection.execute(
                "DELETE FROM kq_messages WHERE id = ? AND lease = ?", (row_id, lease)
            ).rowcount
        if not deleted:
            logger.warning(
                "queue %s message %s: the lease expired before the acknowledgement "
                "(visibility timeout %.0fs);"
                " another consumer may process it again",
                self.queue.name,
                delivery.message_id,
                self.lease_duration,
            )

    def _reject(self, delivery: Delivery, requeue: bool, delay: float) -> None:
        row_id, lease = delivery.handle
        with self._lock:
            self._leases.pop(row_id, None)
            if requeue:
                self._connection.execute(
                    "UPDATE kq_messages SET available_at = ?, lease = NULL WHERE id = ? AND lease = ?",
                    (time.time() + delay, row_id, lease),
                )
            else:
                self._connection.execute(
                    "DELETE FROM kq_messages WHERE id = ? AND lease = ?", (row_id, lease)
                )

    def _extend(self, delivery: Delivery, seconds: float) -> None:
        row_id, lease = delivery.handle
        with self._lock:
            updated = self._connection.execute(
                "UPDATE kq_messages SET available_at = ? WHERE id = ? AND lease = ?",
                (time.time() + seconds, row_id, lease),
            ).rowcount
        if not updated:
            raise DeliveryStateError(
                f"the lease of message {delivery.message_id} on queue {self.queue.name} had already expired"
            )

    def _close(self) -> None:
        with self._lock:
            try:
                if self._leases:
                    self._connection.executemany(
                        "UPDATE kq_messages SET available_at = ?, lease = NULL WHERE id = ? AND lease = ?",
                        [(time.time(), row_id, lease) for row_id, lease in self._leases.items()],
                    )
                    logger.info(
                        "queue %s: released %d unacknowledged messages", self.queue.name, len(self._leases)
                    )
                self._leases.clear()
            except sqlite3.Error as exc:
                logger.warning(
                    "queue %s: could not release unacknowledged messages (%s); they come back "
                    "after the visibility timeout",
                    self.queue.name,
                    exc,
                )
            finally:
                self._connection.close()

    def abandon(self) -> None:
        """Drop this consumer without releasing its deliveries, as a crash would (for tests).

        Its unacknowledged messages come back once their lease (``visibility_timeout``) expires.
        """
        with self._lock:
            self._leases.clear()
        self.close()
