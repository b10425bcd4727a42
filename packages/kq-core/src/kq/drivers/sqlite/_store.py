"""The sqlite database: connection settings, schema, and the routing-key SQL function.

One table holds every queue's messages. A row is *ready* when ``available_at`` has passed; receiving a
row stamps it with a random ``lease`` token and moves ``available_at`` one visibility timeout ahead, so
that other consumers skip it until the lease is acknowledged (row deleted), released, or expires. Times
are wall-clock seconds because several processes share the file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path

from kq.core.driver import topic_matches

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kq_queues (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS kq_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    content_type TEXT NOT NULL,
    headers TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    available_at REAL NOT NULL,
    expires_at REAL,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    lease TEXT,
    enqueued_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS kq_messages_queue ON kq_messages (queue, id);
"""

# Threads of one process initialise one at a time; processes are kept apart by BEGIN IMMEDIATE.
_initialise_lock = threading.Lock()


def _match(pattern: str, key: str) -> int:
    return 1 if topic_matches(pattern, key) else 0


FileIdentity = tuple[int, int]


def file_identity(path: Path) -> FileIdentity | None:
    """The device and inode of ``path`` (``None`` when it does not exist): a database file deleted or
    replaced under an open connection has another identity, or none."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def connect(path: Path, *, busy_timeout: float, synchronous: str) -> sqlite3.Connection:
    """Open ``path`` (creating it and its directory), in WAL mode, with kq's schema and functions."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    connection = sqlite3.connect(
        str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    connection.create_function("kq_match", 2, _match, deterministic=True)
    connection.execute(f"PRAGMA synchronous = {synchronous}")
    # A read of the header is enough to know the schema is there; a file deleted and made again (whose
    # inode number may be the old one's) has version 0 and gets it anew.
    if connection.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
        with _initialise_lock:
            _initialise(connection, busy_timeout)
    return connection


def rollback(connection: sqlite3.Connection) -> None:
    """Roll back after a failed statement, without hiding why it failed.

    On "database or disk is full", I/O errors and the like, sqlite has often rolled back already; a
    ROLLBACK then raises "cannot rollback - no transaction is active", which would replace the real error.
    """
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")


def _initialise(connection: sqlite3.Connection, busy_timeout: float) -> None:
    # WAL lets readers (idle consumers polling) run beside one writer; the setting is stored in the file.
    _use_wal(connection, busy_timeout)
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"database schema version {version} is newer than this kq-core understands ({SCHEMA_VERSION})"
            )
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        rollback(connection)
        raise


def _use_wal(connection: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch the file to WAL, waiting up to ``busy_timeout`` for other connections.

    sqlite does not call its busy handler for a journal-mode change: while another process holds a write
    lock (workers starting together on a new file, one of them creating the schema) the pragma fails at
    once with "database is locked", so it is retried here.
    """
    deadline = time.monotonic() + busy_timeout
    pause = 0.005
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def routing_filter(routing_keys: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """SQL condition (and parameters) selecting rows whose routing key matches one of the patterns."""
    if not routing_keys or "#" in routing_keys:
        return "", ()
    condition = " OR ".join("kq_match(?, routing_key)" for _ in routing_keys)
    return f" AND ({condition})", routing_keys
