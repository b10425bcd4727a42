"""The sqlite consumer: leases ready rows, polling an empty queue with a growing pause."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from kq.core.driver import Consumer, Delivery, LeaseLostError, QueueSpec
from kq.drivers.sqlite._driver import SqliteDriver
from kq.drivers.sqlite._store import file_identity, rollback, routing_filter

logger = logging.getLogger(__name__)

# First pause after finding the queue empty; it doubles up to the driver's poll_interval.
_FIRST_PAUSE = 0.01
# How often expired messages are deleted, in seconds.
_CLEANUP_EVERY = 60.0
# How often an idle consumer checks that its database file is still the one at the path, in seconds.
_FILE_CHECK_EVERY = 1.0


class DatabaseFileChangedError(sqlite3.OperationalError):
    """The database file was deleted or replaced under an open connection (a connection error: the
    consume loop reopens it)."""


def read_row(row: tuple[Any, ...], queue: str, count: int, handle: Any) -> Delivery:
    """The delivery of a leased row, whatever another tool, a migration or corruption put in it.

    Nothing in a row may stop a worker: a value that cannot be read is replaced by what can be salvaged
    and named in ``Delivery.defect``, and the consume loop dead-letters such a delivery as ``malformed``.
    """
    _, message_id, body, content_type, headers, routing_key, _ = row
    defects: list[str] = []
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogateescape")
    elif isinstance(body, bytes):
        pass
    else:
        defects.append(f"the body column holds {_kind(body)}, not bytes")
        body = b"" if body is None else str(body).encode()
    salvaged: dict[str, str] = {}
    try:
        parsed = json.loads(headers) if isinstance(headers, str) else _NOT_TEXT
    except (ValueError, RecursionError) as exc:
        defects.append(f"the headers column is not readable JSON ({type(exc).__name__}: {exc})"[:200])
    else:
        if parsed is _NOT_TEXT:
            defects.append(f"the headers column holds {_kind(headers)}, not JSON text")
        elif not isinstance(parsed, dict):
            defects.append(f"the headers column holds a JSON {_kind(parsed)}, not an object")
        else:
            salvaged = {name: value for name, value in parsed.items() if isinstance(value, str)}
            if len(salvaged) < len(parsed):
                defects.append("the headers column has values that are not strings")
    if not isinstance(content_type, str):
        defects.append(f"the content_type column holds {_kind(content_type)}, not text")
        content_type = "application/octet-stream"
    if not isinstance(routing_key, str):
        defects.append(f"the routing_key column holds {_kind(routing_key)}, not text")
        routing_key = ""
    if not isinstance(message_id, str) or not message_id:
        defects.append(f"the message_id column holds {_kind(message_id)}, not text")
        message_id = f"row-{handle[0]}"
    return Delivery(
        body=body,
        content_type=content_type,
        headers=salvaged,
        routing_key=routing_key,
        message_id=message_id,
        queue=queue,
        delivery_count=count,
        handle=handle,
        defect="; ".join(defects) or None,
    )


_NOT_TEXT = object()


def _kind(value: Any) -> str:
    if value is None:
        return "NULL"
    return repr(value)[:40] if isinstance(value, (int, float)) else type(value).__name__


class SqliteConsumer(Consumer):
    """Receives by leasing one row at a time for ``visibility_timeout`` seconds."""

    driver: SqliteDriver
    wakeable = True

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
        # Which file the connection has open, to notice it being deleted or replaced.
        self._file = file_identity(driver.path)
        self._next_file_check = time.monotonic() + _FILE_CHECK_EVERY

    def _receive(self, timeout: float) -> Delivery | None:
        deadline = time.monotonic() + timeout
        pause = _FIRST_PAUSE
        while True:
            try:
                delivery = self._try_lease()
            except sqlite3.OperationalError:
                self._check_file(now=True)  # when the file is why, say so
                raise
            if delivery is not None:
                return delivery
            # Only an idle consumer looks: a busy one is still draining the file it has open.
            self._check_file()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if self._pause(min(pause, remaining)):
                return None
            pause = min(pause * 2, self._poll_interval)

    def _check_file(self, *, now: bool = False) -> None:
        """Raise a connection error once the database file was deleted or replaced under this consumer.

        Its connection still reads the old file, which nothing writes to any more, while producers
        write to the new one: the consume loop rebuilds the consumer, which opens the file at the path.
        """
        clock = time.monotonic()
        if clock < self._next_file_check and not now:
            return
        self._next_file_check = clock + _FILE_CHECK_EVERY
        identity = file_identity(self.driver.path)
        if identity == self._file:
            return
        what = "deleted" if identity is None else "deleted or replaced by another file"
        logger.warning(
            "queue %s: database file %s was %s while this worker had it open; reopening it",
            self.queue.name,
            self.driver.path,
            what,
        )
        raise DatabaseFileChangedError(f"database file {self.driver.path} was {what}")

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
                row_id, previous = row[0], row[-1]
                # Another tool may have written the row: a count that is not a number starts again.
                count = previous + 1 if type(previous) is int and previous >= 0 else 1
                lease = uuid.uuid4().hex
                connection.execute(
                    "UPDATE kq_messages SET available_at = ?, lease = ?, delivery_count = ? WHERE id = ?",
                    (now + (self.lease_duration or 0.0), lease, count, row_id),
                )
                connection.execute("COMMIT")
            except BaseException:
                rollback(connection)
                raise
            self._leases[row_id] = lease
        delivery = read_row(row, self.queue.name, count, (row_id, lease))
        delivery.lease_expires = time.monotonic() + (self.lease_duration or 0.0)
        return delivery

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
            raise LeaseLostError(
                f"the lease of message {delivery.message_id} on queue {self.queue.name} had lapsed "
                f"(visibility timeout {self.lease_duration:g}s)"
            )

    def _ack_many(self, deliveries: Sequence[Delivery]) -> None:
        # One transaction for the batch: one commit (and one fsync with synchronous=FULL), not one each.
        lost: list[Delivery] = []
        with self._lock:
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                for delivery in deliveries:
                    row_id, lease = delivery.handle
                    self._leases.pop(row_id, None)
                    deleted = connection.execute(
                        "DELETE FROM kq_messages WHERE id = ? AND lease = ?", (row_id, lease)
                    ).rowcount
                    if not deleted:
                        lost.append(delivery)
                connection.execute("COMMIT")
            except BaseException:
                rollback(connection)
                raise
        if lost:
            raise LeaseLostError(f"{len(lost)} of {len(deliveries)} leases had lapsed", lost)

    def _reject(self, delivery: Delivery, requeue: bool, delay: float) -> None:
        row_id, lease = delivery.handle
        with self._lock:
            self._leases.pop(row_id, None)
            if requeue:
                changed = self._connection.execute(
                    "UPDATE kq_messages SET available_at = ?, lease = NULL WHERE id = ? AND lease = ?",
                    (time.time() + delay, row_id, lease),
                ).rowcount
            else:
                changed = self._connection.execute(
                    "DELETE FROM kq_messages WHERE id = ? AND lease = ?", (row_id, lease)
                ).rowcount
        if not changed:
            raise LeaseLostError(
                f"the lease of message {delivery.message_id} on queue {self.queue.name} had lapsed"
            )

    def _extend(self, delivery: Delivery, seconds: float) -> None:
        row_id, lease = delivery.handle
        with self._lock:
            updated = self._connection.execute(
                "UPDATE kq_messages SET available_at = ? WHERE id = ? AND lease = ?",
                (time.time() + seconds, row_id, lease),
            ).rowcount
        if not updated:
            raise LeaseLostError(
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
