"""What a broker hands over, and what happens to its files, never stops a worker or loses a message.

Each test failed before its fix (issue 10: a malformed sqlite row, a deleted database, masked sqlite
errors, a forged delivery count, failing checks and listeners printing tracebacks).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kq.core import App, ConsumeLoop, Delivery, Handler, Limits, Message, encode_json, parse_config
from kq.core._message import DEAD_LETTER_ERROR, DEAD_LETTER_REASON
from kq.core.driver import DriverSpec, QueueSpec
from kq.core.testing import drain, receive_within
from kq.drivers.memory import MemoryConsumer, MemoryDriver
from kq.drivers.sqlite import SqliteDriver


class _Recording(Handler):
    accepted_content_types = None

    def __init__(self) -> None:
        self.bodies: list[Any] = []

    def consume(self, body: Any, delivery: Delivery) -> Any:
        self.bodies.append(body)
        return body


def _sqlite(path: Path, *queues: str, visibility: float = 30.0) -> SqliteDriver:
    spec = DriverSpec(
        name="db",
        type="sqlite",
        options={"path": str(path), "poll_interval": 0.05, "visibility_timeout": visibility},
    )
    return SqliteDriver(spec, [QueueSpec(name=q, driver="db") for q in queues])


def _insert(path: Path, queue: str, headers: object, *, body: object = b'"x"', count: int = 0) -> None:
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.execute(
            "INSERT INTO kq_messages (queue, message_id, body, content_type, headers, routing_key,"
            " available_at, delivery_count, enqueued_at)"
            " VALUES (?, 'raw', ?, 'application/json', ?, '', 0, ?, 0)",
            (queue, body, headers, count),
        )


# --- a malformed row -------------------------------------------------------------------------------


def test_a_row_whose_headers_are_not_an_object_is_dead_lettered_and_the_worker_goes_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "q.sqlite3"
    with _sqlite(path, "jobs") as driver:
        driver.producer("jobs").send(Message(b'"first"'))
        _insert(path, "jobs", "[1, 2, 3]")
        driver.producer("jobs").send(Message(b'"behind it"'))
        handler = _Recording()
        loop = ConsumeLoop(driver, "jobs", handler, limits=Limits(messages=3, time=10), poll_interval=0.1)
        loop.run()
        assert handler.bodies == ["first", "behind it"]
        with driver.consumer("jobs.failed") as consumer:
            dead = receive_within(consumer, 5)
            consumer.ack(dead)
        assert dead.headers[DEAD_LETTER_REASON] == "malformed"
        assert "not an object" in dead.headers[DEAD_LETTER_ERROR]
        assert dead.body == b'"x"'


def test_a_receive_that_raises_is_logged_and_the_consumer_rebuilt(caplog: pytest.LogCaptureFixture) -> None:
    """A driver bug in receive() is not a reason to stop the worker: the consumer is rebuilt."""
    MemoryDriver.reset()
    calls = {"n": 0}
    original = MemoryConsumer._receive

    def flaky(self: MemoryConsumer, timeout: float) -> Delivery | None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyError("what the broker sent")
        return original(self, timeout)

    driver = MemoryDriver(DriverSpec(name="mem", type="memory"), [QueueSpec(name="jobs", driver="mem")])
    driver.producer("jobs").send(Message(b'"ok"'))
    handler = _Recording()
    with pytest.MonkeyPatch.context() as patch, caplog.at_level(logging.ERROR, "kq.core.loop"):
        patch.setattr(MemoryConsumer, "_receive", flaky)
        loop = ConsumeLoop(driver, "jobs", handler, limits=Limits(messages=1, time=10), poll_interval=0.1)
        loop.run()
    assert handler.bodies == ["ok"]
    assert loop.stats.reconnects == 1
    assert "failed while receiving (KeyError" in caplog.text
    MemoryDriver.reset()


# --- the database deleted or replaced under a running worker ------------------------------------------


@pytest.mark.parametrize("how", ["folder removed", "file replaced"])
def test_a_worker_follows_its_database_when_it_is_deleted(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / ".kq"
    path = folder / "kq.sqlite3"
    handler = _Recording()
    with _sqlite(path, "jobs") as worker_driver:
        worker_driver.producer("jobs").send(Message(b'"warm-up"'))
        loop = ConsumeLoop(
            worker_driver, "jobs", handler, limits=Limits(messages=2, time=15), poll_interval=0.2
        )
        worker = threading.Thread(target=loop.run)
        with caplog.at_level(logging.WARNING):
            worker.start()
            # The worker has read the old file (a fixed sleep was not enough on a loaded machine: a worker
            # that opens the file only after it was replaced has nothing to follow).
            deadline = time.monotonic() + 15
            while handler.bodies != ["warm-up"] and time.monotonic() < deadline:
                time.sleep(0.02)
            if how == "folder removed":
                shutil.rmtree(folder)
            else:
                replacement = tmp_path / "new.sqlite3"
                with _sqlite(replacement, "jobs") as other:
                    other.producer("jobs")  # creates the file and its schema
                replacement.replace(path)
            # Published only once the worker has noticed: before that, its connection to the old file
            # still shares the old -wal file at the same path with a producer opening the new one, and
            # could read the message through it without ever looking at the file.
            deadline = time.monotonic() + 15
            while "was deleted" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.02)
            with _sqlite(path, "jobs") as producer_driver:  # what `kq queuecommand` does next
                producer_driver.producer("jobs").send(Message(b'"to the new file"'))
            worker.join(timeout=15)
    assert handler.bodies == ["warm-up", "to the new file"], (
        f"the worker stalled on the old file ({loop.stop_reason})"
    )
    assert "was deleted" in caplog.text


def test_a_producer_follows_its_database_when_it_is_deleted(tmp_path: Path) -> None:
    path = tmp_path / ".kq" / "kq.sqlite3"
    with _sqlite(path, "jobs") as driver:
        producer = driver.producer("jobs")
        producer.send(Message(b'"before"'))
        shutil.rmtree(path.parent)
        producer.send(Message(b'"after"'))
    with _sqlite(path, "jobs") as reader, reader.consumer("jobs") as consumer:
        got = drain(consumer, idle=0.3)
    assert [d.body for d in got] == [b'"after"'], "the message went to the deleted file"


# --- sqlite errors are reported as they are --------------------------------------------------------------


def test_a_full_database_is_reported_as_full_not_as_a_failed_rollback(tmp_path: Path) -> None:
    with _sqlite(tmp_path / "q.sqlite3", "jobs") as driver:
        producer = driver.producer("jobs")
        producer.send(Message(b'"small"'))
        pages = producer._connection.execute("PRAGMA page_count").fetchone()[0]  # type: ignore[attr-defined]
        producer._connection.execute(f"PRAGMA max_page_count = {pages}")  # type: ignore[attr-defined]
        with pytest.raises(sqlite3.OperationalError, match="full"):
            producer.send_batch([Message(b'"' + b"x" * 20_000 + b'"') for _ in range(20)])


# --- authenticity before the delivery count ----------------------------------------------------------


def test_an_unsigned_row_with_an_inflated_count_is_refused_as_unsigned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = App(
        parse_config(
            {
                "default_driver": "db",
                "drivers": {"db": {"type": "sqlite", "path": "q.sqlite3", "poll_interval": 0.05}},
                "queues": {"jobs": {"consumer": "noop", "require_signature": True, "max_deliveries": 3}},
                "signing": {"keys": {"k": "a" * 64}},
            },
            source=str(tmp_path / "kq.toml"),
        )
    )
    with app:
        driver, _ = app.queue("jobs")
        driver.producer("jobs").send(Message(encode_json("warm-up")))  # creates the schema
        with driver.consumer("jobs") as consumer:
            consumer.ack(receive_within(consumer, 5))
        _insert(tmp_path / "q.sqlite3", "jobs", "{}", count=50)
        failures: list[Any] = []
        app.dispatcher.add_listener("message_consumption_failed", failures.append)
        app.consume_loop(
            "jobs", handler=_Recording(), limits=Limits(messages=1, time=10), poll_interval=0.1
        ).run()
    assert [f.reason for f in failures] == ["unsigned"]


# --- failing checks and listeners: one line each ---------------------------------------------------------


@pytest.fixture
def memory_queue() -> Iterator[MemoryDriver]:
    MemoryDriver.reset()
    driver = MemoryDriver(DriverSpec(name="mem", type="memory"), [QueueSpec(name="jobs", driver="mem")])
    yield driver
    driver.close()
    MemoryDriver.reset()


def _broken_check() -> str | None:
    raise RuntimeError("the check is broken")


def test_a_failing_check_is_one_line_once_not_a_traceback_every_poll(
    memory_queue: MemoryDriver, caplog: pytest.LogCaptureFixture
) -> None:
    loop = ConsumeLoop(
        memory_queue,
        "jobs",
        _Recording(),
        limits=Limits(time=0.5, checks=(_broken_check,)),
        poll_interval=0.02,
    )
    with caplog.at_level(logging.INFO, "kq.core.loop"):
        loop.run()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "RuntimeError: the check is broken" in errors[0].getMessage()
    assert not errors[0].exc_info, "a traceback at INFO level"


def test_a_failing_listener_is_one_line_without_traceback(
    memory_queue: MemoryDriver, caplog: pytest.LogCaptureFixture
) -> None:
    from kq.core import EventDispatcher

    def broken(event: object) -> None:
        raise ValueError("listener bug")

    dispatcher = EventDispatcher()
    dispatcher.add_listener("message_consumed", broken)
    memory_queue.producer("jobs").send(Message(b'"x"'))
    loop = ConsumeLoop(
        memory_queue,
        "jobs",
        _Recording(),
        dispatcher=dispatcher,
        limits=Limits(messages=1, time=5),
        poll_interval=0.05,
    )
    with caplog.at_level(logging.INFO):
        loop.run()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "ValueError: listener bug" in errors[0].getMessage()
    assert not errors[0].exc_info
    caplog.clear()
    memory_queue.producer("jobs").send(Message(b'"y"'))
    with caplog.at_level(logging.DEBUG):
        ConsumeLoop(
            memory_queue,
            "jobs",
            _Recording(),
            dispatcher=dispatcher,
            limits=Limits(messages=1, time=5),
            poll_interval=0.05,
        ).run()
    assert any(r.exc_info for r in caplog.records if r.levelno >= logging.ERROR), "no traceback at DEBUG"


def test_a_worker_opening_a_new_database_waits_for_another_writer(tmp_path: Path) -> None:
    """sqlite fails a journal-mode change at once, without its busy handler, while another connection
    writes; workers starting together on a new file saw "database is locked" instead of waiting."""
    path = tmp_path / "kq.sqlite3"
    holder = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE other (x)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO other VALUES (1)")
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        driver = SqliteDriver(DriverSpec(name="db", type="sqlite", options={"path": str(path)}))
        with driver, driver.consumer("jobs") as consumer:
            assert consumer.receive(0) is None
    finally:
        release.join()
        holder.close()
