"""The sqlite driver's table without AUTOINCREMENT (issue 15): databases made by earlier versions keep
working, and a row id that comes back never lets a stale handle act on the row that got it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kq.core.driver import DriverSpec, LeaseLostError, Message, QueueSpec
from kq.core.testing import receive_within
from kq.drivers.sqlite import SqliteDriver
from kq.drivers.sqlite._consumer import SqliteConsumer

# The schema kq-core 0.1.0 created, word for word.
_OLD_SCHEMA = """
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


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "q.sqlite3"


@contextlib.contextmanager
def _driver(path: Path, visibility: float = 30.0) -> Iterator[SqliteDriver]:
    spec = DriverSpec(
        name="db",
        type="sqlite",
        options={"path": str(path), "poll_interval": 0.02, "visibility_timeout": visibility},
    )
    driver = SqliteDriver(spec, [QueueSpec(name="jobs", driver="db")])
    try:
        yield driver
    finally:
        driver.close()


def _old_database(path: Path, messages: int) -> None:
    """A file as kq-core 0.1.0 left it: its schema, version 1, ``messages`` rows published to "jobs"
    of which the first ones were acknowledged (so that the AUTOINCREMENT counter is ahead of the rows)."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.executescript(_OLD_SCHEMA)
        connection.execute("PRAGMA user_version = 1")
        connection.execute("INSERT INTO kq_queues VALUES ('jobs', 0)")
        for n in range(messages + 3):
            connection.execute(
                "INSERT INTO kq_messages (queue, message_id, body, content_type, headers, routing_key,"
                " available_at, enqueued_at) VALUES ('jobs', ?, ?, 'application/json', '{}', '', 0, 0)",
                (f"old-{n}", f'"{n}"'.encode()),
            )
        connection.execute("DELETE FROM kq_messages WHERE message_id IN ('old-0', 'old-1', 'old-2')")


def _table_sql(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        (sql,) = connection.execute("SELECT sql FROM sqlite_master WHERE name = 'kq_messages'").fetchone()
    return str(sql)


def _ids(path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return dict(connection.execute("SELECT message_id, id FROM kq_messages").fetchall())


def test_a_new_database_has_no_autoincrement_counter(path: Path) -> None:
    with _driver(path) as driver:
        driver.producer("jobs").send(Message(b"1"))
    assert "AUTOINCREMENT" not in _table_sql(path).upper()
    with contextlib.closing(sqlite3.connect(path)) as connection:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
        (version,) = connection.execute("PRAGMA user_version").fetchone()
    assert "sqlite_sequence" not in tables
    assert version == 1


def test_a_database_made_by_the_previous_release_keeps_working(path: Path) -> None:
    """Its messages are delivered in order with the new ones after them; its table keeps AUTOINCREMENT
    (same columns and statements: nothing to migrate), so its ids never come back."""
    _old_database(path, 2)
    with _driver(path) as driver:
        new = [Message(b'"new-0"'), Message(b'"new-1"')]
        producer = driver.producer("jobs")
        producer.send(new[0])
        producer.send_batch([new[1]])
        with driver.consumer("jobs", prefetch=2) as consumer:
            got = []
            for _ in range(4):
                delivery = receive_within(consumer, 5)
                got.append(delivery.message_id)
                consumer.ack(delivery)
            assert consumer.receive(0.05) is None
        assert got == ["old-3", "old-4", new[0].message_id, new[1].message_id]
        # Emptied, the old table still counts on from its sequence rather than reusing ids.
        producer.send(Message(b'"again"'))
        (again,) = _ids(path).values()
        assert again == 8
    assert "AUTOINCREMENT" in _table_sql(path).upper()
    with contextlib.closing(sqlite3.connect(path)) as connection:
        (version,) = connection.execute("PRAGMA user_version").fetchone()
    assert version == 1


def test_two_processes_opening_an_old_database_at_once_change_nothing(path: Path) -> None:
    _old_database(path, 1)
    with _driver(path) as first, _driver(path) as second:
        first.producer("jobs").send(Message(b"a"))
        second.producer("jobs").send(Message(b"b"))
        assert len(_ids(path)) == 3
    assert "AUTOINCREMENT" in _table_sql(path).upper()


def test_a_stale_handle_never_acts_on_the_row_that_got_its_id_back(path: Path) -> None:
    """Without AUTOINCREMENT, deleting the row with the largest id frees that id for the next insert. A
    consumer whose lease lapsed still holds a handle naming it: its ack, extend and reject must fail
    (LeaseLostError) and leave the new row alone, because each also names the lease token."""
    with _driver(path, visibility=0.3) as driver:
        producer = driver.producer("jobs")
        producer.send(Message(b'"first"'))
        slow = driver.consumer("jobs")
        assert isinstance(slow, SqliteConsumer)
        stale = receive_within(slow, 5)
        with driver.consumer("jobs") as fast:
            # The lease lapses; another consumer takes the message and acknowledges it.
            taken = receive_within(fast, 5)
            assert taken.message_id == stale.message_id
            fast.ack(taken)
        second = Message(b'"second"')
        producer.send(second)
        assert _ids(path) == {second.message_id: stale.handle[0]}, "the id did not come back"

        # The driver's own calls (the Consumer methods turn a lost lease into a warning, except extend).
        settles: list[Callable[[], None]] = [
            lambda: slow._extend(stale, 30),
            lambda: slow._reject(stale, True, 0.0),
            lambda: slow._reject(stale, False, 0.0),
            lambda: slow._ack(stale),
            lambda: slow._ack_many([stale]),
        ]
        for settle in settles:
            with pytest.raises(LeaseLostError):
                settle()
        with contextlib.closing(sqlite3.connect(path)) as connection:
            rows = connection.execute("SELECT id, lease, delivery_count FROM kq_messages").fetchall()
        # Still there; the acknowledgement's transaction leased it ahead, as it leases any ready row,
        # under a token of its own.
        assert len(rows) == 1, "a stale handle deleted the row that got its id"
        row_id, lease, count = rows[0]
        assert row_id == stale.handle[0]
        assert lease != stale.handle[1]
        assert count == 1

        # The same consumer hands the new row out, under that id, while still holding the stale handle.
        fresh = receive_within(slow, 5)
        assert fresh.message_id == second.message_id
        assert fresh.handle[0] == stale.handle[0]
        with pytest.raises(LeaseLostError):
            slow.extend(stale, 30)
        slow.ack(stale)  # a warning: the lease had lapsed
        assert len(_ids(path)) == 1, "the stale acknowledgement deleted the fresh row"
        # Settling the stale handle did not forget the fresh lease: closing gives it back at once.
        slow.close()
        with contextlib.closing(sqlite3.connect(path)) as connection:
            (lease,) = connection.execute("SELECT lease FROM kq_messages").fetchone()
        assert lease is None, "close did not release the fresh lease"
        with driver.consumer("jobs") as other:
            again = receive_within(other, 5)
            assert again.message_id == second.message_id
            assert again.delivery_count == 2
            other.ack(again)
        assert _ids(path) == {}
