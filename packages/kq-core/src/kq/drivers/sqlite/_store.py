"""The sqlite database: connection settings, schema, and the routing-key SQL function.

One table holds every queue's messages. A row is *ready* when ``available_at`` has passed; receiving a
row stamps it with a random ``lease`` token and moves ``available_at`` one visibility timeout ahead, so
that other consumers skip it until the lease is acknowledged (row deleted), released, or expires. Times
are wall-clock seconds because several processes share the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from kq.core.driver import topic_matches

if sys.platform != "win32":  # on Windows, sqlite's own busy handler is the only wait
    import fcntl

logger = logging.getLogger(__name__.replace("._", "."))

SCHEMA_VERSION = 1

# A writer finding the lock file taken retries after about this long, then twice as long each time, up to
# _LONGEST_WAIT: a kq transaction takes from a few tens of microseconds to a disk sync.
_FIRST_WAIT = 0.00005
_LONGEST_WAIT = 0.002
# Commits of a consumer between two checkpoints it runs itself: a few pages each, about the thousand
# pages at which sqlite would checkpoint by itself.
CHECKPOINT_EVERY = 250

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


class WriteLock:
    """Makes kq's writers to one database file take turns on a lock file, not in sqlite's busy handler.

    sqlite makes a writer that finds the file locked sleep 1, 2, 5, 10... milliseconds between retries
    (its busy handler): two workers whose transactions take a tenth of a millisecond then spend much of
    their time asleep, and a second worker adds little. An exclusive ``flock`` on a file beside the
    database (``<database>-lock``), held around each write transaction, lets a waiting writer retry
    every few tens of microseconds at the cost of one system call, and take its turn as soon as the
    lock is free; after ``timeout`` seconds it gives up with sqlite's own "database is locked" error.
    It only orders kq's writers: sqlite's locking still guards the data (a writer that does not take
    this lock, such as the ``sqlite3`` shell, is waited for by sqlite's busy handler, up to
    ``busy_timeout``). A process that dies holding it releases it with its files. Without ``fcntl``
    (Windows), or where the file cannot be opened, it does nothing.
    """

    def __init__(self, database: Path, timeout: float) -> None:
        self.path = database.with_name(database.name + "-lock")
        self.timeout = timeout
        self._database = database
        self._fd: int | None = None
        self._unavailable = False
        # Threads of one process sharing this object take turns here; flock orders the processes.
        self._threads = threading.Lock()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the ``with`` block."""
        with self._threads:
            fd = self._open()
            if fd is None or sys.platform == "win32":
                yield
                return
            self._acquire(fd)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _acquire(self, fd: int) -> None:
        if sys.platform == "win32":
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        deadline = time.monotonic() + self.timeout
        pause = _FIRST_WAIT
        while True:
            # A little jitter: two waiters do not keep retrying in step.
            time.sleep(pause * (0.5 + random.random()))  # noqa: S311 - jitter, not a secret
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise sqlite3.OperationalError(
                        f"database is locked: another kq writer held {self.path} for {self.timeout:g}s "
                        "(busy_timeout)"
                    ) from None
            pause = min(pause * 2, _LONGEST_WAIT)

    def _open(self) -> int | None:
        if sys.platform == "win32" or self._unavailable:
            return None
        if self._fd is None:
            try:
                # Read access is enough to lock it: whoever may read the database may open it.
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, self._mode())
            except OSError as exc:
                # A directory this process may not write to: sqlite's busy handler still orders the
                # writers, more slowly.
                self._unavailable = True
                logger.debug(
                    "cannot open the write lock file %s (%s); writers wait in sqlite", self.path, exc
                )
                return None
        return self._fd

    def _mode(self) -> int:
        try:
            return os.stat(self._database).st_mode & 0o666
        except OSError:
            return 0o600

    def close(self) -> None:
        """Close the lock file (the lock is never held between transactions)."""
        with self._threads:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class Checkpoints:
    """Copies the WAL back into the database outside the write lock, every :data:`CHECKPOINT_EVERY`
    commits of one connection.

    sqlite checkpoints inside the commit that makes the WAL pass a thousand pages, a write and a disk
    sync of a few milliseconds; under the lock file, the other workers would wait for it. A consumer's
    connection turns that off and checkpoints here instead, after the lock is released (a ``PASSIVE``
    checkpoint runs beside other writers). Producers keep sqlite's own: a queue only published to, with
    an idle worker holding the file open, would otherwise never be checkpointed.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        connection.execute("PRAGMA wal_autocheckpoint = 0")
        self._connection = connection
        self._commits = 0

    def committed(self) -> None:
        """Count a commit; checkpoint when enough have passed (the connection outside a transaction)."""
        self._commits += 1
        if self._commits < CHECKPOINT_EVERY:
            return
        self._commits = 0
        try:
            self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.OperationalError as exc:
            # Another connection checkpointing at the same time: it does the work.
            logger.debug("WAL checkpoint skipped (%s)", exc)


@contextlib.contextmanager
def write_transaction(connection: sqlite3.Connection, lock: WriteLock) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` under ``lock``, rolled back if the block raises.

    ``IMMEDIATE`` takes sqlite's write lock before the first read, so that two writers never both read
    and then find, at their first write, that the other one changed the file (an error sqlite's busy
    handler cannot wait out). ``COMMIT`` returning means the transaction is in the file (with
    ``synchronous = FULL``, on the disk).
    """
    with lock.held():
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
            connection.execute("COMMIT")
        except BaseException:
            rollback(connection)
            raise


def routing_filter(routing_keys: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """SQL condition (and parameters) selecting rows whose routing key matches one of the patterns."""
    if not routing_keys or "#" in routing_keys:
        return "", ()
    condition = " OR ".join("kq_match(?, routing_key)" for _ in routing_keys)
    return f" AND ({condition})", routing_keys
