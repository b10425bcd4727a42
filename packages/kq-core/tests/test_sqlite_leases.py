"""The sqlite driver's commits per message: an acknowledgement leases the next messages in its own
transaction, prefetch leases several rows at once, and writers take turns on a lock file (issue 15).

What must not change with it: ``ack`` returns once the deletion is committed, the rows leased ahead keep
the queue order and their delivery count exact, a crash loses nothing.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kq.core.driver import Consumer, DriverSpec, Message, QueueSpec
from kq.core.testing import receive_within
from kq.drivers.sqlite import SqliteDriver
from kq.drivers.sqlite import _store as store
from kq.drivers.sqlite._consumer import SqliteConsumer
from kq.drivers.sqlite._store import WriteLock


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


def _publish(driver: SqliteDriver, count: int) -> list[Message]:
    sent = [Message(f'"{n}"'.encode()) for n in range(count)]
    driver.producer("jobs").send_batch(sent)
    return sent


def _rows(path: Path) -> dict[str, tuple[str | None, int]]:
    """message id -> (lease, delivery count), read with a connection of its own."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        rows = connection.execute("SELECT message_id, lease, delivery_count FROM kq_messages").fetchall()
    return {message_id: (lease, count) for message_id, lease, count in rows}


@contextlib.contextmanager
def _statements(consumer: Consumer) -> Iterator[list[str]]:
    """The SQL statements the consumer's connection runs inside the block."""
    assert isinstance(consumer, SqliteConsumer)
    seen: list[str] = []
    consumer._connection.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        consumer._connection.set_trace_callback(None)


def test_an_ack_is_committed_when_it_returns_and_leases_the_next_message_in_the_same_commit(
    path: Path,
) -> None:
    with _driver(path) as driver:
        sent = _publish(driver, 3)
        with driver.consumer("jobs") as consumer:
            first = receive_within(consumer, 5)
            with _statements(consumer) as seen:
                consumer.ack(first)
            # Another connection sees the deletion as soon as ack returns, and the next row leased.
            rows = _rows(path)
            assert sent[0].message_id not in rows
            assert rows[sent[1].message_id][0] is not None
            assert rows[sent[1].message_id][1] == 1
            assert rows[sent[2].message_id] == (None, 0), "prefetch 1 leases one message ahead, no more"
            assert [s for s in seen if s in ("BEGIN IMMEDIATE", "COMMIT")] == ["BEGIN IMMEDIATE", "COMMIT"]
            with _statements(consumer) as seen:
                second = receive_within(consumer, 5)
            assert second.message_id == sent[1].message_id
            assert not seen, f"the message leased ahead cost statements on receive: {seen}"
            assert second.lease_expires is not None
            assert second.lease_expires <= time.monotonic() + 30


def test_prefetch_leases_several_messages_in_one_transaction_in_queue_order(path: Path) -> None:
    with _driver(path) as driver:
        sent = _publish(driver, 5)
        with driver.consumer("jobs", prefetch=3) as consumer:
            with _statements(consumer) as seen:
                got = [receive_within(consumer, 5) for _ in range(3)]
            assert seen.count("COMMIT") == 1
            assert [d.message_id for d in got] == [m.message_id for m in sent[:3]]
            leased = [m.message_id for m in sent if _rows(path)[m.message_id][0] is not None]
            assert leased == [m.message_id for m in sent[:3]]
            for delivery in got:
                consumer.ack(delivery)
            rest = [receive_within(consumer, 5) for _ in range(2)]
            assert [d.message_id for d in rest] == [m.message_id for m in sent[3:]]
            for delivery in rest:
                consumer.ack(delivery)
            assert consumer.receive(0.1) is None
        assert _rows(path) == {}


def test_close_releases_the_messages_leased_ahead_and_gives_their_count_back(path: Path) -> None:
    with _driver(path) as driver:
        sent = _publish(driver, 2)
        consumer = driver.consumer("jobs")
        consumer.ack(receive_within(consumer, 5))
        assert _rows(path)[sent[1].message_id][0] is not None
        consumer.close()
        assert _rows(path)[sent[1].message_id] == (None, 0)
        with driver.consumer("jobs") as other:
            again = receive_within(other, 5)
            assert again.message_id == sent[1].message_id
            assert again.delivery_count == 1, "a message never handed out was counted as delivered"
            other.ack(again)


def test_a_crash_loses_no_message_leased_ahead(path: Path) -> None:
    """A killed worker's message leased ahead comes back when its lease ends; as it cannot tell, its
    count includes the hand-out that never happened (documented)."""
    with _driver(path, visibility=0.5) as driver:
        sent = _publish(driver, 2)
        consumer = driver.consumer("jobs")
        assert isinstance(consumer, SqliteConsumer)
        consumer.ack(receive_within(consumer, 5))
        consumer.abandon()
        with driver.consumer("jobs") as other:
            assert other.receive(0) is None, "a leased-ahead message was visible before its lease ended"
            again = receive_within(other, 5)
            assert again.message_id == sent[1].message_id
            assert again.delivery_count == 2
            other.ack(again)


def test_a_requeued_message_comes_back_before_the_messages_leased_ahead(path: Path) -> None:
    with _driver(path) as driver:
        sent = _publish(driver, 3)
        with driver.consumer("jobs", prefetch=3) as consumer:
            first = receive_within(consumer, 5)
            consumer.reject(first, requeue=True)
            got = [receive_within(consumer, 5) for _ in range(3)]
            assert [d.message_id for d in got] == [m.message_id for m in sent]
            assert [d.delivery_count for d in got] == [2, 1, 1]
            for delivery in got:
                consumer.ack(delivery)


def test_a_buffered_lease_half_gone_is_renewed_before_it_is_handed_out(path: Path) -> None:
    with _driver(path, visibility=1.0) as driver:
        sent = _publish(driver, 2)
        with driver.consumer("jobs", prefetch=2) as consumer:
            first = receive_within(consumer, 5)
            time.sleep(0.6)
            second = receive_within(consumer, 5)
            assert second.message_id == sent[1].message_id
            assert second.lease_expires is not None
            assert second.lease_expires > time.monotonic() + 0.8, "handed out with little lease left"
            with contextlib.closing(sqlite3.connect(path)) as connection:
                (until,) = connection.execute(
                    "SELECT available_at FROM kq_messages WHERE message_id = ?", (sent[1].message_id,)
                ).fetchone()
            assert until > time.time() + 0.8, "the row's lease was not renewed"
            consumer.ack(first)
            consumer.ack(second)


def test_a_buffered_message_another_consumer_took_after_its_lease_lapsed_is_not_handed_out(
    path: Path,
) -> None:
    with _driver(path, visibility=0.3) as driver:
        sent = _publish(driver, 2)
        with driver.consumer("jobs", prefetch=2) as a, driver.consumer("jobs", prefetch=2) as b:
            receive_within(a, 5)  # leases both; the second waits in a's buffer
            time.sleep(0.4)
            taken = [receive_within(b, 5) for _ in range(2)]
            assert [d.message_id for d in taken] == [m.message_id for m in sent]
            assert a.receive(0) is None, "a handed out a message b holds"
            for delivery in taken:
                b.extend(delivery, 30)
                b.ack(delivery)


def test_a_stopping_consumer_leases_nothing_ahead(path: Path) -> None:
    with _driver(path) as driver:
        sent = _publish(driver, 2)
        with driver.consumer("jobs") as consumer:
            first = receive_within(consumer, 5)
            consumer.wake()  # what the consume loop's stop does
            consumer.ack(first)
            assert _rows(path) == {sent[1].message_id: (None, 0)}


def test_writers_take_turns_on_the_lock_file(path: Path) -> None:
    path.touch()
    first, second = WriteLock(path, 5.0), WriteLock(path, 5.0)
    entered = threading.Event()

    def other() -> None:
        with second.held():
            entered.set()

    try:
        with first.held():
            thread = threading.Thread(target=other, daemon=True)
            thread.start()
            assert not entered.wait(0.2), "a second writer got the lock while the first held it"
        assert entered.wait(5), "the second writer was not woken when the lock was free"
        thread.join(5)
    finally:
        first.close()
        second.close()
    if os.name == "posix":
        # As readable as the database: whoever may read it may lock the file, nobody else.
        assert stat.S_IMODE(os.stat(first.path).st_mode) == stat.S_IMODE(os.stat(path).st_mode)


def test_a_writer_gives_up_after_the_busy_timeout_as_sqlite_would(path: Path) -> None:
    path.touch()
    first, second = WriteLock(path, 5.0), WriteLock(path, 0.2)
    try:
        with first.held():
            started = time.monotonic()
            with pytest.raises(sqlite3.OperationalError, match="database is locked"), second.held():
                pass
            assert 0.15 < time.monotonic() - started < 2
    finally:
        first.close()
        second.close()


def test_a_consumer_checkpoints_outside_its_transactions(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sqlite's own checkpoint would run inside a commit, under the lock file; the consumer's runs after."""
    monkeypatch.setattr(store, "CHECKPOINT_EVERY", 3)
    with _driver(path) as driver:
        _publish(driver, 4)
        with driver.consumer("jobs") as consumer:
            assert isinstance(consumer, SqliteConsumer)
            (automatic,) = consumer._connection.execute("PRAGMA wal_autocheckpoint").fetchone()
            assert automatic == 0
            with _statements(consumer) as seen:
                for _ in range(2):
                    consumer.ack(receive_within(consumer, 5))
            checkpoints = [n for n, s in enumerate(seen) if s.startswith("PRAGMA wal_checkpoint")]
            # One checkpoint, and right after it the second one under the lock file (for the frames
            # other writers would have committed during the first; see test_sqlite_checkpoints).
            assert len(checkpoints) == 2, seen
            assert checkpoints[1] == checkpoints[0] + 1, seen
            before = [s for s in seen[: checkpoints[0]] if s in ("BEGIN IMMEDIATE", "COMMIT")]
            assert before[-1] == "COMMIT", "the checkpoint ran inside a transaction"


def test_a_producer_checkpoints_outside_its_transactions_and_keeps_sqlites_as_a_backstop(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With FULL, every CHECKPOINT_EVERY_SYNCED commits (a WAL that stops growing early); sqlite's own
    checkpoint stays on for producers too short-lived to count that far."""
    monkeypatch.setattr(store, "CHECKPOINT_EVERY_SYNCED", 3)
    spec = DriverSpec(name="db", type="sqlite", options={"path": str(path), "synchronous": "FULL"})
    driver = SqliteDriver(spec, [QueueSpec(name="jobs", driver="db")])
    try:
        producer = driver.producer("jobs")
        connection = producer._connection  # type: ignore[attr-defined]
        (automatic,) = connection.execute("PRAGMA wal_autocheckpoint").fetchone()
        assert automatic == 1000
        seen: list[str] = []
        connection.set_trace_callback(seen.append)
        for n in range(7):
            producer.send(Message(f'"{n}"'.encode()))
        connection.set_trace_callback(None)
        checkpoints = [n for n, s in enumerate(seen) if s.startswith("PRAGMA wal_checkpoint")]
        # Two checkpoints, each followed by its second one under the lock file.
        assert len(checkpoints) == 4, seen
        assert checkpoints[1] == checkpoints[0] + 1, seen
        assert checkpoints[3] == checkpoints[2] + 1, seen
        for at in checkpoints:
            brackets = [s for s in seen[:at] if s in ("BEGIN IMMEDIATE", "COMMIT")]
            assert not brackets or brackets[-1] == "COMMIT", "the checkpoint ran inside a transaction"
        with driver.consumer("jobs") as consumer:
            assert isinstance(consumer, SqliteConsumer)
            assert consumer._checkpoints._synced
            (automatic,) = consumer._connection.execute("PRAGMA wal_autocheckpoint").fetchone()
            assert automatic == 0
    finally:
        driver.close()


def test_an_ack_tops_the_prefetch_up_once_half_of_it_is_free(path: Path) -> None:
    """Rows leased together share their leaf pages: with prefetch 4, the first ack only deletes, the
    second leases two at once; the order and the counts stay those of the queue."""
    with _driver(path) as driver:
        sent = _publish(driver, 8)
        with driver.consumer("jobs", prefetch=4) as consumer:
            got = [receive_within(consumer, 5) for _ in range(4)]

            def leased() -> list[str]:
                rows = _rows(path)
                return [m.message_id for m in sent if m.message_id in rows and rows[m.message_id][0]]

            consumer.ack(got[0])
            assert leased() == [m.message_id for m in sent[1:4]], "three unsettled of four: no lease yet"
            consumer.ack(got[1])
            assert leased() == [m.message_id for m in sent[2:6]]
            for delivery in got[2:]:
                consumer.ack(delivery)
            rest = [receive_within(consumer, 5) for _ in range(4)]
            assert [d.message_id for d in rest] == [m.message_id for m in sent[4:]]
            assert [d.delivery_count for d in rest] == [1, 1, 1, 1]
            for delivery in rest:
                consumer.ack(delivery)
            assert consumer.receive(0.05) is None
        assert _rows(path) == {}
