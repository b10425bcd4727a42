"""The sqlite queue manager: counts, purge and delete with plain SQL."""

from __future__ import annotations

import time
from typing import Any

from kq.core.driver import QueueManager
from kq.drivers.sqlite._driver import SqliteDriver


class SqliteQueueManager(QueueManager):
    """Inspects and administers the queues of one database file."""

    driver: SqliteDriver

    def list_available(self) -> list[str]:
        """Queues that were ever published to, plus any that still hold messages."""
        with self._connection() as connection:
            rows = connection.execute(
                "SELECT name FROM kq_queues UNION SELECT DISTINCT queue FROM kq_messages ORDER BY 1"
            ).fetchall()
        return [row[0] for row in rows]

    def info(self, queue: str) -> dict[str, Any]:
        """``messages`` (ready), ``delayed``, ``in_flight`` and ``expired`` (not yet deleted) counts."""
        now = time.time()
        with self._connection() as connection:
            exists = connection.execute("SELECT 1 FROM kq_queues WHERE name = ?", (queue,)).fetchone()
            ready, delayed, in_flight, expired, oldest = connection.execute(
                "SELECT"
                " COALESCE(SUM(available_at <= :now AND (expires_at IS NULL OR expires_at > :now)), 0),"
                " COALESCE(SUM(available_at > :now AND lease IS NULL), 0),"
                " COALESCE(SUM(available_at > :now AND lease IS NOT NULL), 0),"
                " COALESCE(SUM(available_at <= :now AND expires_at IS NOT NULL AND expires_at <= :now), 0),"
                " MIN(enqueued_at)"
                " FROM kq_messages WHERE queue = :queue",
                {"now": now, "queue": queue},
            ).fetchone()
        return {
            "queue": queue,
            "exists": bool(exists) or bool(ready or delayed or in_flight or expired),
            "messages": ready,
            "delayed": delayed,
            "in_flight": in_flight,
            "expired": expired,
            "oldest_age": None if oldest is None else round(now - oldest, 3),
            "database": str(self.driver.path.absolute()),
        }

    def purge(self, queue: str) -> int:
        """Delete every message that is not being handled right now; return how many."""
        now = time.time()
        with self._connection() as connection:
            deleted: int = connection.execute(
                "DELETE FROM kq_messages WHERE queue = ? AND (lease IS NULL OR available_at <= ?)",
                (queue, now),
            ).rowcount
        return deleted

    def delete(self, queue: str) -> None:
        """Delete the queue and all its messages, including those being handled."""
        with self._connection() as connection:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("DELETE FROM kq_messages WHERE queue = ?", (queue,))
            connection.execute("DELETE FROM kq_queues WHERE name = ?", (queue,))
            connection.execute("COMMIT")

    def _connection(self) -> _Closing:
        return _Closing(self.driver.connect())


class _Closing:
    """Closes a connection at the end of a ``with`` block (sqlite3's own context manager does not)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def __enter__(self) -> Any:
        return self.connection

    def __exit__(self, *exc: object) -> None:
        self.connection.close()
