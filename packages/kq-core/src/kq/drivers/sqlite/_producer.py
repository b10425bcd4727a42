"""The sqlite producer: one transaction per batch."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

from kq.core.driver import Message, Producer, QueueSpec
from kq.drivers.sqlite._driver import SqliteDriver
from kq.drivers.sqlite._store import file_identity, rollback

logger = logging.getLogger(__name__)


class SqliteProducer(Producer):
    """Inserts messages into the database, a batch per transaction."""

    driver: SqliteDriver

    def __init__(self, driver: SqliteDriver, queue: QueueSpec) -> None:
        super().__init__(driver, queue)
        self._connection = driver.connect()
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
                json.dumps(dict(m.headers), separators=(",", ":")),
                m.routing_key,
                now + m.delay,
                None if m.ttl is None else now + m.ttl,
                now,
            )
            for m in messages
        ]
        if file_identity(self._path) != self._file:
            self._reopen()
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            if not self._registered:
                connection.execute(
                    "INSERT OR IGNORE INTO kq_queues (name, created_at) VALUES (?, ?)", (self.queue.name, now)
                )
            connection.executemany(
                "INSERT INTO kq_messages (queue, message_id, body, content_type, headers, routing_key,"
                " available_at, expires_at, enqueued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            connection.execute("COMMIT")
        except BaseException:
            rollback(connection)
            raise
        self._registered = True

    def _reopen(self) -> None:
        # Writing on would put messages in a file that no consumer will ever open again.
        logger.warning(
            "queue %s: database file %s was deleted or replaced since this producer opened it; "
            "reopening it before publishing",
            self.queue.name,
            self.driver.path,
        )
        self._connection.close()
        self._connection = self.driver.connect()
        self._file = file_identity(self._path)
        self._registered = False

    def _close(self) -> None:
        self._connection.close()
