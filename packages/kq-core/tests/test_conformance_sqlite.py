"""The conformance suite on the sqlite driver."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from kq.core.driver import Consumer, Driver, DriverSpec
from kq.core.testing import (
    BasicConformance,
    ConsumeLoopConformance,
    DelayConformance,
    FailureHandlingConformance,
    LeaseConformance,
    OrderingConformance,
    QueueManagerConformance,
    RoutingConformance,
    SigningConformance,
    TTLConformance,
)
from kq.drivers.sqlite._consumer import SqliteConsumer


class TestSqliteDriver(
    BasicConformance,
    OrderingConformance,
    RoutingConformance,
    TTLConformance,
    DelayConformance,
    LeaseConformance,
    QueueManagerConformance,
    ConsumeLoopConformance,
    FailureHandlingConformance,
    SigningConformance,
):
    idle_timeout = 0.3
    receive_timeout = 5.0
    redelivery_timeout = 5.0
    delay = 1.0
    ttl = 0.5
    retry_delay = 0.5

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.path = tmp_path / "queues.sqlite3"

    def driver_spec(self) -> DriverSpec:
        return DriverSpec(
            name="test",
            type="sqlite",
            options={"path": str(self.path), "visibility_timeout": 1.0, "poll_interval": 0.05},
        )

    def crash_consumer(self, consumer: Consumer) -> None:
        assert isinstance(consumer, SqliteConsumer)
        consumer.abandon()

    def inject_malformed(self, driver: Driver, queue: str) -> int:
        """Rows another tool, a bad migration or corruption could leave: every column kq reads."""
        rows = malformed_rows(queue)
        with contextlib.closing(sqlite3.connect(self.path)) as connection, connection:
            connection.executemany(
                "INSERT INTO kq_messages (queue, message_id, body, content_type, headers, routing_key,"
                " available_at, delivery_count, enqueued_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, 0)",
                rows,
            )
        return len(rows)


def malformed_rows(queue: str) -> list[tuple[object, ...]]:
    """(queue, message_id, body, content_type, headers, routing_key, delivery_count) rows kq must survive."""
    ok = ("m", b"{}", "application/json", "{}", "", 0)
    changes: list[dict[int, object]] = [
        {3: "[1, 2]"},  # headers: JSON, but not an object
        {3: "not json at all"},
        {3: '{"x-count": 1, "fine": "yes"}'},  # a value that is not a string
        {3: "[" * 100_000},  # deeper than json can parse
        {3: b"\x00\x01"},  # a blob, not text
        {1: 42},  # body: an integer
        {1: "a text body"},  # body: text instead of a blob (readable: fails as undecodable)
        {0: 12345, 2: 7, 4: 3.5},  # message id, content type and routing key of the wrong types
        {0: ""},  # an empty message id
        {5: "many"},  # delivery count: not a number
    ]
    rows = []
    for number, change in enumerate(changes):
        row = [f"{ok[0]}{number}", *ok[1:]]
        for index, value in change.items():
            row[index] = value
        rows.append((queue, *row))
    return rows
