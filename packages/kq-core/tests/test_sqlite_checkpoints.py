"""The sqlite driver's own checkpoints with several writers on one file (issue 15).

A ``PASSIVE`` checkpoint copies the frames there were when it started; sqlite writes the WAL from its
start again only once every frame is copied. With other writers committing during each checkpoint, the
WAL would never start again and would grow for as long as they stay busy: a checkpoint is followed by
a second one under the write lock file, which no kq writer commits beside.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from kq.core.driver import DriverSpec, Message, QueueSpec
from kq.core.testing import receive_within
from kq.drivers.sqlite import SqliteDriver
from kq.drivers.sqlite import _store as store
from kq.drivers.sqlite._consumer import SqliteConsumer
from kq.drivers.sqlite._producer import SqliteProducer
from kq.drivers.sqlite._store import Checkpoints, WriteLock


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "q.sqlite3"


@contextlib.contextmanager
def _driver(path: Path) -> Iterator[SqliteDriver]:
    spec = DriverSpec(name="db", type="sqlite", options={"path": str(path), "poll_interval": 0.02})
    driver = SqliteDriver(spec, [QueueSpec(name="jobs", driver="db")])
    try:
        yield driver
    finally:
        driver.close()


def _wal_frames(path: Path) -> int:
    """The frames in the WAL (from its start, or since sqlite last wrote it from its start again)."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        _, frames, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(frames)


class _Overtaken:
    """Wraps ``checkpoints._checkpoint``: notes whether ``lock`` was held during each checkpoint and the
    frames it reported; the first one leaves frames behind, as when another writer commits while it
    runs (here a reader keeps it from copying the frames another writer committed since the reader's
    snapshot; the reader is gone once it returns)."""

    def __init__(
        self, checkpoints: Checkpoints, lock: WriteLock, other_writer: SqliteProducer, path: Path
    ) -> None:
        self.calls: list[tuple[bool, int]] = []
        self._real = checkpoints._checkpoint
        self._lock = lock
        self._other = other_writer
        self._path = path

    def __call__(self) -> tuple[int, int]:
        if self.calls:
            busy, frames = self._real()
        else:
            with contextlib.closing(sqlite3.connect(self._path, isolation_level=None)) as reader:
                reader.execute("BEGIN")
                reader.execute("SELECT count(*) FROM kq_messages").fetchone()
                self._other.send_batch([Message(b'"meanwhile"') for _ in range(5)])
                busy, frames = self._real()
                reader.execute("COMMIT")
        self.calls.append((self._lock._holding is not None, frames))
        return busy, frames


def test_a_consumers_checkpoint_overtaken_by_another_writer_is_finished_under_the_lock(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first checkpoint runs outside the lock; the frames another writer committed meanwhile are
    copied by a second one under it, and the WAL is written from its start again."""
    monkeypatch.setattr(store, "CHECKPOINT_EVERY", 3)
    with _driver(path) as driver:
        driver.producer("jobs").send_batch([Message(f'"{n}"'.encode()) for n in range(20)])
        other = driver.producer("jobs")
        assert isinstance(other, SqliteProducer)
        with driver.consumer("jobs") as consumer:
            assert isinstance(consumer, SqliteConsumer)
            overtaken = _Overtaken(consumer._checkpoints, consumer._write_lock, other, path)
            monkeypatch.setattr(consumer._checkpoints, "_checkpoint", overtaken)
            for _ in range(2):  # the first receive's lease, two acks: the third commit checkpoints
                consumer.ack(receive_within(consumer, 5))
            assert [held for held, _ in overtaken.calls] == [False, True]
            before = overtaken.calls[0][1]
            assert before > 5
            # The next commit finds every frame copied and writes the WAL from its start.
            consumer.ack(receive_within(consumer, 5))
            assert _wal_frames(path) < before
            # Nothing was lost on the way: 20 + 5 messages, 3 acknowledged, one leased.
            with contextlib.closing(sqlite3.connect(path)) as connection:
                (left,) = connection.execute("SELECT count(*) FROM kq_messages").fetchone()
            assert left == 22


def test_without_the_lock_a_checkpoint_overtaken_by_another_writer_leaves_the_wal_growing(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the second checkpoint is for: without it (``committed()`` with no lock), the frames
    committed during the checkpoint stay in the WAL, which goes on from where it was."""
    monkeypatch.setattr(store, "CHECKPOINT_EVERY", 3)
    with _driver(path) as driver:
        driver.producer("jobs").send_batch([Message(f'"{n}"'.encode()) for n in range(20)])
        other = driver.producer("jobs")
        assert isinstance(other, SqliteProducer)
        with driver.consumer("jobs") as consumer:
            assert isinstance(consumer, SqliteConsumer)
            checkpoints = consumer._checkpoints
            overtaken = _Overtaken(checkpoints, consumer._write_lock, other, path)
            monkeypatch.setattr(checkpoints, "_checkpoint", overtaken)
            consumer.ack(receive_within(consumer, 5))  # two commits
            checkpoints._commits = store.CHECKPOINT_EVERY - 1
            checkpoints.committed()
            assert [held for held, _ in overtaken.calls] == [False]
            before = overtaken.calls[0][1]
            consumer.ack(receive_within(consumer, 5))
            assert _wal_frames(path) > before


def test_a_producers_checkpoint_overtaken_by_another_writer_is_finished_under_its_lock(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "CHECKPOINT_EVERY", 3)
    with _driver(path) as driver:
        producer = driver.producer("jobs")
        other = driver.producer("jobs")
        assert isinstance(producer, SqliteProducer)
        assert isinstance(other, SqliteProducer)
        overtaken = _Overtaken(producer._checkpoints, producer._write_lock, other, path)
        monkeypatch.setattr(producer._checkpoints, "_checkpoint", overtaken)
        for n in range(3):
            producer.send(Message(f'"{n}"'.encode()))
        assert [held for held, _ in overtaken.calls] == [False, True]
        before = overtaken.calls[0][1]
        producer.send(Message(b'"after"'))
        assert _wal_frames(path) < before


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ((0, 9), True),
        ((0, 5), True),
        ((0, 4), False),
        ((1, 9), False),
        ((0, 0), False),
        ((0, -1), False),
    ],
    ids=[
        "frames-left",
        "as-many-frames-as-commits",
        "wal-started-again-lately",
        "another-checkpointing",
        "empty",
        "not-wal",
    ],
)
def test_the_second_checkpoint_runs_only_after_a_first_one_on_a_wal_of_a_whole_interval(
    path: Path, monkeypatch: pytest.MonkeyPatch, first: tuple[int, int], second: bool
) -> None:
    """Not when another connection's checkpoint kept the first from running (it does the work), nor on a
    WAL with fewer frames than the commits counted since the last checkpoint (another connection's
    checkpoint had it written from its start again a moment ago: the next one finishes it), nor on an
    empty one; and the lock is held only for the second."""
    monkeypatch.setattr(store, "CHECKPOINT_EVERY", 5)
    with _driver(path) as driver:
        producer = driver.producer("jobs")
        assert isinstance(producer, SqliteProducer)
        checkpoints, lock = producer._checkpoints, producer._write_lock
        calls: list[bool] = []

        def checkpoint() -> tuple[int, int]:
            calls.append(lock._holding is not None)
            return first if len(calls) == 1 else (0, 0)

        monkeypatch.setattr(checkpoints, "_checkpoint", checkpoint)
        for _ in range(4):
            checkpoints.committed(lock)
        assert calls == []
        checkpoints.committed(lock)
        assert calls == ([False, True] if second else [False])
        assert lock._holding is None


def test_a_checkpoint_that_cannot_take_the_lock_gives_up_quietly(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer holding the lock file past busy_timeout: the checkpoint is skipped (the next one
    copies the frames), the commit it follows is not failed."""
    monkeypatch.setattr(store, "CHECKPOINT_EVERY", 1)
    with _driver(path) as driver:
        producer = driver.producer("jobs")
        assert isinstance(producer, SqliteProducer)
        producer.send(Message(b'"first"'))
        holder = WriteLock(path, 5.0)
        impatient = WriteLock(path, 0.05)
        try:
            with holder.held():
                producer._checkpoints.committed(impatient)
            assert impatient._holding is None
        finally:
            holder.close()
            impatient.close()
