"""The sqlite producer: one transaction per batch."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

from kq.core.driver import Message, Producer, QueueSpec
from kq.drivers.sqlite._driver import SqliteDriver
from kq.drivers.sqlite._store import file_identity, write_transaction

logger = logging.getLogger(__name__.replace("._", "."))

_INSERT = (
    "INSERT INTO kq_messages (queue, message_id, body, content_type, headers, routing_key,"
    " available_at, expires_at, enqueued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


# Built once: json.dumps with separators builds an encoder per call.
_encode_headers = json.JSONEncoder(separators=(",", ":")).encode


class SqliteProducer(Producer):
    """Inserts messages into the database, a batch per transaction."""

    driver: SqliteDriver

    def __init__(self, driver: SqliteDriver, queue: QueueSpec) -> None:
        super().__init__(driver, queue)
        self._connection = driver.connect()
        self._write_lock = driver.write_lock()
        self._checkpoints = driver.checkpoints(self._connection, autocheckpoint=True)
        self._path = driver.path  # resolved once: it is checked before every batch
        self._file = file_identity(self._path)
        self._registered = False

    def _send_batch(self, messages: Sequence[Message]) -> None:
        now = time.time()
        rows = [
            (
                self.queue.name,
                m.message_id,
                m.body,
                m.content_type,
                _encode_headers(dict(m.headers)) if m.headers else "{}",
                m.routing_key,
                now + m.delay,
                None if m.ttl is None else now + m.ttl,
                now,
            )
            for m in messages
        ]
        if file_identity(self._path) != self._file:
            self._reopen()
        if self._registered and len(rows) == 1:
            # One statement is its own transaction: no BEGIN and COMMIT round trips.
            with self._write_lock.held():
                self._connection.execute(_INSERT, rows[0])
            self._checkpoints.committed(self._write_lock)
            return
        with write_transaction(self._connection, self._write_lock) as connection:
            if not self._registered:
                connection.execute(
                    "INSERT OR IGNORE INTO kq_queues (name, created_at) VALUES (?, ?)", (self.queue.name, now)
                )
            connection.executemany(_INSERT, rows)
        self._registered = True
        self._checkpoints.committed(self._write_lock)

    def _reopen(self) -> None:
        # Writing on would put messages in a file that no consumer will ever open again.
        logger.warning(
            "queue %s: database file %s was deleted or replaced since this producer opened it; "
            "reopening it before publishing",
            self.queue.name,
            self.driver.path,
        )
        self._connection.close()
        self._write_lock.close()
        self._connection = self.driver.connect()
        self._write_lock = self.driver.write_lock()
        self._checkpoints = self.driver.checkpoints(self._connection, autocheckpoint=True)
        self._file = file_identity(self._path)
        self._registered = False

    def _close(self) -> None:
        self._connection.close()
        self._write_lock.close()
