"""The sqlite consumer: leases ready rows, polling an empty queue with a growing pause.

One commit per message in a steady stream: the transaction that acknowledges a message (deletes its row)
also leases the next ones, up to ``prefetch`` unsettled in all, as a broker pushes the next message once
one is acknowledged (with a larger prefetch, once half of it is free, so that rows leased together share
their pages). ``ack`` still returns only once the deletion is committed. The rows leased ahead
wait in a buffer, in queue order; their lease runs from when they were leased, is renewed before one is
handed out late, and they are released (their delivery count given back) on close.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, NamedTuple

from kq.core.driver import Consumer, Delivery, LeaseLostError, QueueSpec
from kq.drivers.sqlite._driver import SqliteDriver
from kq.drivers.sqlite._store import file_identity, routing_filter, write_transaction

logger = logging.getLogger(__name__.replace("._", "."))

# First pause after finding the queue empty; it doubles up to the driver's poll_interval.
_FIRST_PAUSE = 0.001
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


class _Leased(NamedTuple):
    """A row this consumer leased and has not handed out yet."""

    row: tuple[Any, ...]
    deliveries: int  # its delivery count, this lease included
    lease: str
    expires: float  # time.monotonic() when the lease ends


_LEASE = "UPDATE kq_messages SET available_at = ?, lease = ?, delivery_count = ? WHERE id = ?"
_DELETE = "DELETE FROM kq_messages WHERE id = ? AND lease = ?"
_EXTEND = "UPDATE kq_messages SET available_at = ? WHERE id = ? AND lease = ?"
_RELEASE = "UPDATE kq_messages SET available_at = ?, lease = NULL WHERE id = ? AND lease = ?"
# A row leased ahead and never handed out gives its hand-out back: the count stays exact.
_RELEASE_UNHANDED = (
    "UPDATE kq_messages SET available_at = ?, lease = NULL, delivery_count = MAX(delivery_count - 1, 0)"
    " WHERE id = ? AND lease = ?"
)


def _new_lease() -> str:
    """A lease token: 128 random bits, so that no other lease, of this consumer or another, has it."""
    return os.urandom(16).hex()


def _next_count(previous: Any) -> int:
    """The delivery count after one more hand-out; another tool may have written the row: a count that
    is not a number starts again."""
    return previous + 1 if type(previous) is int and previous >= 0 else 1


class SqliteConsumer(Consumer):
    """Leases ready rows for ``visibility_timeout`` seconds: up to ``prefetch`` in one transaction when
    the buffer is empty, and the next ones in the transaction of an acknowledgement that leaves half of
    ``prefetch`` or more free."""

    driver: SqliteDriver
    wakeable = True

    def __init__(
        self, driver: SqliteDriver, queue: QueueSpec, routing_keys: tuple[str, ...], prefetch: int
    ) -> None:
        super().__init__(driver, queue, routing_keys, prefetch)
        self.lease_duration = driver.visibility_timeout(queue)
        self._poll_interval = float(driver.options["poll_interval"])
        self._connection = driver.connect()
        self._write_lock = driver.write_lock()
        self._checkpoints = driver.checkpoints(self._connection)
        # The consume loop's lease keeper extends from another thread.
        self._lock = threading.Lock()
        # Every lease held and not settled, the buffered ones included, as (row id, lease token): a row
        # id alone can come back (an id freed by the last row's deletion is given to the next insert).
        self._leases: set[tuple[int, str]] = set()
        self._buffer: deque[_Leased] = deque()
        condition, params = routing_filter(routing_keys)
        # Only placeholders are interpolated: the condition is "kq_match(?, routing_key)" repeated.
        available = (
            " FROM kq_messages WHERE queue = ? AND available_at <= ?"
            f" AND (expires_at IS NULL OR expires_at > ?){condition} ORDER BY id"
        )
        # The plain read outside the transaction needs the id only; inside, the whole rows.
        self._select = "SELECT id" + available + " LIMIT 1"
        self._select_rows = (
            "SELECT id, message_id, body, content_type, headers, routing_key, delivery_count"
            + available
            + " LIMIT ?"
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
                delivery = self._next_buffered() or self._try_lease()
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

    def _next_buffered(self) -> Delivery | None:
        """The first row leased ahead, its lease renewed first when half of it has passed."""
        with self._lock:
            if not self._buffer:
                return None
            if self._buffer[0].expires - time.monotonic() < (self.lease_duration or 0.0) / 2:
                self._renew_buffer()
                if not self._buffer:
                    return None
            leased = self._buffer.popleft()
        return self._deliver(leased)

    def _renew_buffer(self) -> None:
        """Renew the leases of the buffered rows (lock held); drop those another consumer took after
        their lease lapsed."""
        duration = self.lease_duration or 0.0
        now, clock = time.time(), time.monotonic()
        kept: deque[_Leased] = deque()
        lost: list[_Leased] = []
        with write_transaction(self._connection, self._write_lock) as connection:
            for leased in self._buffer:
                renewed = connection.execute(_EXTEND, (now + duration, leased.row[0], leased.lease)).rowcount
                if renewed:
                    kept.append(leased._replace(expires=clock + duration))
                else:
                    lost.append(leased)
        self._buffer = kept
        for leased in lost:
            self._leases.discard((leased.row[0], leased.lease))
        if lost:
            logger.debug(
                "queue %s: %d messages leased ahead were taken by another consumer after their lease "
                "lapsed in this one's buffer; not handing them out",
                self.queue.name,
                len(lost),
            )

    def _try_lease(self) -> Delivery | None:
        now = time.time()
        with self._lock:
            connection = self._connection
            if now >= self._next_cleanup:
                self._cleanup(now)
            # A plain read first: an idle consumer never takes the write lock producers need.
            if (
                connection.execute(self._select, (self.queue.name, now, now, *self._select_params)).fetchone()
                is None
            ):
                return None
            # At least one: this receive was asked for one, whatever the caller holds.
            room = max(1, self.prefetch - len(self._leases))
            lease = _new_lease()
            with write_transaction(connection, self._write_lock):
                leased = self._lease(connection, room, lease)
            self._hold(leased)
            self._checkpoints.committed(self._write_lock)
            if not self._buffer:
                return None
            first = self._buffer.popleft()
        return self._deliver(first)

    def _lease(self, connection: sqlite3.Connection, limit: int, lease: str) -> list[_Leased]:
        """Lease up to ``limit`` ready rows with token ``lease`` (one token for the rows of one
        transaction: a handle is the row id and the token), inside the caller's write transaction.

        The other writers wait while this runs: the token is made before, and a single row (prefetch 1,
        the console commands' default) is updated by one statement rather than a batch of one.
        """
        now = time.time()
        duration = self.lease_duration or 0.0
        rows = connection.execute(
            self._select_rows, (self.queue.name, now, now, *self._select_params, limit)
        ).fetchall()
        if not rows:
            return []
        expires = time.monotonic() + duration
        until = now + duration
        if len(rows) == 1:
            row = rows[0]
            count = _next_count(row[-1])
            connection.execute(_LEASE, (until, lease, count, row[0]))
            return [_Leased(row, count, lease, expires)]
        leased = [_Leased(row, _next_count(row[-1]), lease, expires) for row in rows]
        connection.executemany(_LEASE, [(until, lease, item.deliveries, item.row[0]) for item in leased])
        return leased

    def _hold(self, leased: list[_Leased]) -> None:
        """Buffer rows whose lease was committed (lock held)."""
        for item in leased:
            self._leases.add((item.row[0], item.lease))
            self._buffer.append(item)

    def _deliver(self, leased: _Leased) -> Delivery:
        row_id = leased.row[0]
        delivery = read_row(leased.row, self.queue.name, leased.deliveries, (row_id, leased.lease))
        delivery.lease_expires = leased.expires
        return delivery

    def _cleanup(self, now: float) -> None:
        self._next_cleanup = now + _CLEANUP_EVERY
        with self._write_lock.held():
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
            self._leases.discard((row_id, lease))
            # The next messages are leased in the same commit once half of prefetch is free (each time
            # with prefetch 1 or 2), unless the loop is stopping: a batch of rows leased at once shares
            # their leaf pages, where leasing one per acknowledgement writes another page each time.
            unsettled = len(self._leases)
            room = 0 if self.woken or unsettled > self.prefetch // 2 else self.prefetch - unsettled
            if room > 0:
                token = _new_lease()
                with write_transaction(self._connection, self._write_lock) as connection:
                    deleted = connection.execute(_DELETE, (row_id, lease)).rowcount
                    leased = self._lease(connection, room, token)
                self._hold(leased)  # once committed
            else:
                with self._write_lock.held():
                    deleted = self._connection.execute(_DELETE, (row_id, lease)).rowcount
            self._checkpoints.committed(self._write_lock)
        if not deleted:
            raise LeaseLostError(
                f"the lease of message {delivery.message_id} on queue {self.queue.name} had lapsed "
                f"(visibility timeout {self.lease_duration:g}s)"
            )

    def _ack_many(self, deliveries: Sequence[Delivery]) -> None:
        # One transaction for the batch: one commit (and one fsync with synchronous=FULL), not one each.
        lost: list[Delivery] = []
        with self._lock, write_transaction(self._connection, self._write_lock) as connection:
            for delivery in deliveries:
                row_id, lease = delivery.handle
                self._leases.discard((row_id, lease))
                if not connection.execute(_DELETE, (row_id, lease)).rowcount:
                    lost.append(delivery)
        if lost:
            raise LeaseLostError(f"{len(lost)} of {len(deliveries)} leases had lapsed", lost)

    def _reject(self, delivery: Delivery, requeue: bool, delay: float) -> None:
        row_id, lease = delivery.handle
        with self._lock:
            self._leases.discard((row_id, lease))
            released = 0
            with write_transaction(self._connection, self._write_lock) as connection:
                if requeue:
                    now = time.time()
                    changed = connection.execute(_RELEASE, (now + delay, row_id, lease)).rowcount
                    if delay <= 0:
                        # The rows leased ahead would overtake it: back to the queue with it.
                        released = self._release_buffer(connection, now)
                else:
                    changed = connection.execute(_DELETE, (row_id, lease)).rowcount
            if released:
                self._forget_buffer()
        if not changed:
            raise LeaseLostError(
                f"the lease of message {delivery.message_id} on queue {self.queue.name} had lapsed"
            )

    def _release_buffer(self, connection: sqlite3.Connection, now: float) -> int:
        """Give back the rows leased ahead, inside the caller's write transaction (lock held); return
        how many. The caller forgets them (:meth:`_forget_buffer`) once the transaction is committed."""
        connection.executemany(_RELEASE_UNHANDED, [(now, item.row[0], item.lease) for item in self._buffer])
        return len(self._buffer)

    def _forget_buffer(self) -> None:
        for item in self._buffer:
            self._leases.discard((item.row[0], item.lease))
        self._buffer.clear()

    def _extend(self, delivery: Delivery, seconds: float) -> None:
        row_id, lease = delivery.handle
        with self._lock, self._write_lock.held():
            updated = self._connection.execute(_EXTEND, (time.time() + seconds, row_id, lease)).rowcount
        if not updated:
            raise LeaseLostError(
                f"the lease of message {delivery.message_id} on queue {self.queue.name} had already expired"
            )

    def _close(self) -> None:
        with self._lock:
            try:
                if self._leases:
                    now = time.time()
                    buffered = {(item.row[0], item.lease) for item in self._buffer}
                    handed = [(now, row_id, lease) for row_id, lease in self._leases - buffered]
                    with write_transaction(self._connection, self._write_lock) as connection:
                        connection.executemany(_RELEASE, handed)
                        ahead = self._release_buffer(connection, now)
                    self._forget_buffer()
                    if handed:
                        logger.info(
                            "queue %s: released %d unacknowledged messages", self.queue.name, len(handed)
                        )
                    if ahead:
                        logger.debug(
                            "queue %s: released %d messages leased ahead and never handed out",
                            self.queue.name,
                            ahead,
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
                self._buffer.clear()
                self._connection.close()
                self._write_lock.close()

    def abandon(self) -> None:
        """Drop this consumer without releasing its deliveries, as a crash would (for tests).

        Its unacknowledged messages, and the ones it had leased ahead, come back once their lease
        (``visibility_timeout``) expires.
        """
        with self._lock:
            self._leases.clear()
            self._buffer.clear()
        self.close()
