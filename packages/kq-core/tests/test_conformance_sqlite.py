"""The conformance suite on the sqlite driver."""

from __future__ import annotations

from pathlib import Path

import pytest

from kq.core import Consumer, DriverSpec
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
