"""The sqlite queue manager: counts, purge and delete with plain SQL."""

from __future__ import annotations

import time
from typing import Any

from kq.core.driver import QueueManager
from kq.drivers.sqlite._driver import SqliteDriver


class SqliteQueueManager(QueueManager):
    """Inspects and administers the queues of one database file.

    Asking about queues creates nothing: without a database file, there is no queue (``info`` says
    ``exists: false``, ``list-available`` lists none, ``purge`` finds 0 messages, ``delete`` returns
    ``False``), and the file is not made on the way.
    """

    driver: SqliteDriver

    def _missing(self) -> bool:
        return not self.driver.path.exists()

    def list_available(self) -> list[str]:
        """Queues that were ever published to, plus any that still hold messages."""
        if self._missing():
            return []
        with self._connection() as connection:
            rows = connection.execute(
                "SELECT name FROM kq_queues UNION SELECT DISTINCT queue FROM kq_messages ORDER BY 1"
            ).fetchall()
        return [row[0] for row in rows]

    def info(self, queue: str) -> dict[str, Any]:
        """``messages`` (ready), ``delayed``, ``in_flight`` and ``expired`` (not yet deleted) counts."""
        now = time.time()
        if self._missing():
            return {
                "queue": queue,
                "exists": False,
                "messages": 0,
                "delayed": 0,
                "in_flight": 0,
                "expired": 0,
                "oldest_age": None,
                "database": str(self.driver.path.absolute()),
            }
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
        if self._missing():
            return 0
        with self._connection() as connection:
            deleted: int = connection.execute(
                "DELETE FROM kq_messages WHERE queue = ? AND (lease IS NULL OR available_at <= ?)",
                (queue, now),
            ).rowcount
        return deleted

    def delete(self, queue: str) -> bool:
        """Delete the queue and all its messages, including those being handled; ``False`` when the
        database knows no such queue (no row in either table)."""
        if self._missing():
            return False
        with self._connection() as connection:
            connection.execute("BEGIN IMMEDIATE")
            messages = connection.execute("DELETE FROM kq_messages WHERE queue = ?", (queue,)).rowcount
            named = connection.execute("DELETE FROM kq_queues WHERE name = ?", (queue,)).rowcount
            connection.execute("COMMIT")
        return bool(messages or named)

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
