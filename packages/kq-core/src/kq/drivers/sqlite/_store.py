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
from pathlib import Path

from kq.core.driver import topic_matches

if sys.platform != "win32":  # on Windows, sqlite's own busy handler is the only wait
    import fcntl

logger = logging.getLogger(__name__.replace("._", "."))

SCHEMA_VERSION = 1

# A writer finding the lock file taken retries at once, yielding the processor in between, for _SPIN
# seconds; then after about _FIRST_WAIT (plus the system's timer slack, some 50 microseconds) until
# _SHORT_WAITS seconds have passed; then twice as long each time, up to _LONGEST_WAIT: a kq transaction
# takes from a few tens of microseconds (the acknowledgement of one message) to a disk sync.
_SPIN = 0.0003
_FIRST_WAIT = 0.00002
_SHORT_WAITS = 0.001
_LONGEST_WAIT = 0.002
# Commits of a connection between two checkpoints it runs itself (:class:`Checkpoints`), two to five
# pages each: with synchronous NORMAL, about the thousand pages at which sqlite would checkpoint by
# itself; with FULL or EXTRA, a WAL of a few hundred pages, overwritten from its start after each one.
CHECKPOINT_EVERY = 250
CHECKPOINT_EVERY_SYNCED = 128

# Row ids are sqlite's plain ones (the largest plus one), not AUTOINCREMENT's: AUTOINCREMENT writes its
# counter in sqlite_sequence, one more page per insert, a third of a single publish's WAL writes. Ids keep
# the queue order, but an id can come back once the row that had the largest one is deleted: nothing acts
# on a row by its id alone (every acknowledgement, release and extension also names the lease token, a
# random one per lease), so a stale handle never touches the row that got its id. Databases made by
# earlier versions keep their AUTOINCREMENT table: same columns, same statements, same schema version.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS kq_queues (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS kq_messages (
    id INTEGER PRIMARY KEY,
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

# Gives the processor to another runnable thread or process, if there is one.
_yield = getattr(os, "sched_yield", lambda: time.sleep(0))

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
        self._holding: int | None = None  # the descriptor locked by the current holder, if any
        # Threads of one process sharing this object take turns here; flock orders the processes.
        self._threads = threading.Lock()

    def held(self) -> WriteLock:
        """The lock, to hold for a ``with`` block (``with lock.held(): ...``)."""
        return self

    def __enter__(self) -> WriteLock:
        self._threads.acquire()
        try:
            fd = self._open()
            if fd is not None:
                self._acquire(fd)
        except BaseException:
            self._threads.release()
            raise
        self._holding = fd
        return self

    def __exit__(self, *exc: object) -> None:
        fd, self._holding = self._holding, None
        try:
            if fd is not None and sys.platform != "win32":
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _acquire(self, fd: int) -> None:
        if sys.platform == "win32":
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        started = time.monotonic()
        # First, retry after only giving the processor away (to the holder, if it waits for one): most
        # transactions end within _SPIN, and a sleep, however short, lasts the system's timer slack.
        spin = started + _SPIN
        while time.monotonic() < spin:
            _yield()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
        deadline = started + self.timeout
        # Retry soon while the holder is likely in a transaction of a fraction of a millisecond; back off
        # once it has held the lock for longer (a disk sync, a batch), up to _LONGEST_WAIT.
        patient = started + _SHORT_WAITS
        pause = _FIRST_WAIT
        while True:
            # A little jitter: two waiters do not keep retrying in step.
            time.sleep(pause * (0.5 + random.random()))  # noqa: S311 - jitter, not a secret
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                now = time.monotonic()
                if now >= deadline:
                    raise sqlite3.OperationalError(
                        f"database is locked: another kq writer held {self.path} for {self.timeout:g}s "
                        "(busy_timeout)"
                    ) from None
            if now >= patient:
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
    """Copies the WAL back into the database, mostly outside the write lock, every
    :data:`CHECKPOINT_EVERY` commits of one connection (:data:`CHECKPOINT_EVERY_SYNCED` with
    ``synchronous`` FULL or EXTRA).

    sqlite checkpoints inside the commit that makes the WAL pass a thousand pages, a write and a disk
    sync of a few milliseconds; under the lock file, the other writers would wait for it. kq's
    connections checkpoint here instead, after the lock is released (a ``PASSIVE`` checkpoint runs
    beside other writers).

    With a disk sync at every commit, they also checkpoint more often than sqlite would: a WAL that was
    checkpointed is written again from its start, overwriting its file in place, whereas a WAL that
    grows changes its file's size at every commit, and the sync of each such commit writes the file's
    metadata too, about twice the cost of one that only overwrites. Kept to a few hundred pages, the WAL
    stops growing after a few dozen commits.

    A ``PASSIVE`` checkpoint copies the frames committed before it started, and sqlite writes the WAL
    from its start again only once all of its frames are copied. Other writers committing meanwhile
    (two busy workers on one file always do) leave frames behind every time: the WAL would grow for as
    long as they stay busy (55 MB after 6,000 messages with two workers, against 3 MB with one), every
    commit extending the file, each some 40% slower, under the lock. So a checkpoint is followed by a
    second one under the caller's write lock (``committed(lock)``), with no kq writer committing: it
    copies only the frames committed during the first (with its disk syncs, about a millisecond that
    the other writers wait), and the next write transaction writes the WAL from its start again. Not
    when the WAL has fewer frames than the commits this connection counted (each writes one or more):
    another connection's checkpoint had it written from its start a moment ago, and the next
    checkpoint finishes it.

    A consumer's connection turns sqlite's own checkpoint off. A producer's keeps it as a backstop
    (``autocheckpoint=True``): short-lived producers (one publish per ``kq queuecommand``) never count
    enough commits, and with an idle worker holding the file open, a queue only published to would
    otherwise never be checkpointed.
    """

    def __init__(self, connection: sqlite3.Connection, *, synced: bool, autocheckpoint: bool = False) -> None:
        if not autocheckpoint:
            connection.execute("PRAGMA wal_autocheckpoint = 0")
        self._connection = connection
        self._synced = synced
        self._commits = 0

    def committed(self, lock: WriteLock | None = None) -> None:
        """Count a commit; checkpoint when enough have passed (the connection outside a transaction,
        ``lock`` not held: it is taken to finish a checkpoint other writers kept from copying it all)."""
        self._commits += 1
        every = CHECKPOINT_EVERY_SYNCED if self._synced else CHECKPOINT_EVERY
        if self._commits < every:
            return
        self._commits = 0
        try:
            busy, frames = self._checkpoint()
            # It copied the frames there were when it started; it cannot tell whether others came since.
            if lock is not None and not busy and frames >= every:
                with lock.held():
                    self._checkpoint()
        except sqlite3.OperationalError as exc:
            # Another connection checkpointing at the same time (it does the work), or another writer
            # holding the lock file past busy_timeout (the next checkpoint copies what is left).
            logger.debug("WAL checkpoint skipped (%s)", exc)

    def _checkpoint(self) -> tuple[int, int]:
        """One ``PASSIVE`` checkpoint: whether another connection's kept it from running, and how many
        frames the WAL had when it started (-1 outside WAL mode)."""
        busy, frames, _ = self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(frames)


class write_transaction:  # noqa: N801 - used as a function: ``with write_transaction(...)``
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` under ``lock``, rolled back if the block raises.

    ``IMMEDIATE`` takes sqlite's write lock before the first read, so that two writers never both read
    and then find, at their first write, that the other one changed the file (an error sqlite's busy
    handler cannot wait out). ``COMMIT`` returning means the transaction is in the file (with
    ``synchronous = FULL``, on the disk). A class rather than a generator: other writers wait while it
    runs, and it runs once per message.
    """

    __slots__ = ("_connection", "_lock")

    def __init__(self, connection: sqlite3.Connection, lock: WriteLock) -> None:
        self._connection = connection
        self._lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.__enter__()
        try:
            self._connection.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.__exit__()
            raise
        return self._connection

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        try:
            if kind is None:
                try:
                    self._connection.execute("COMMIT")
                except BaseException:
                    rollback(self._connection)
                    raise
            else:
                rollback(self._connection)
        finally:
            self._lock.__exit__()


def routing_filter(routing_keys: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """SQL condition (and parameters) selecting rows whose routing key matches one of the patterns."""
    if not routing_keys or "#" in routing_keys:
        return "", ()
    condition = " OR ".join("kq_match(?, routing_key)" for _ in routing_keys)
    return f" AND ({condition})", routing_keys
