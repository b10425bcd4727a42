"""The kq conformance suite on the example driver: every class its capabilities call for."""

from __future__ import annotations

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
from kq.drivers.example import ExampleConsumer
from kq.drivers.example._store import QueueFolder


class TestExampleDriver(
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
    # Fewer messages than the defaults: a file system, not a broker over a network, and the suite's
    # time counts in the workspace's test run.
    competing_messages = 150
    redrive_messages = 60

    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path: Path) -> None:
        self.path = tmp_path / "queues"

    def driver_spec(self) -> DriverSpec:
        return DriverSpec(
            name="test",
            type="example",
            options={"path": str(self.path), "visibility_timeout": 1.0, "poll_interval": 0.02},
        )

    def crash_consumer(self, consumer: Consumer) -> None:
        assert isinstance(consumer, ExampleConsumer)
        consumer.abandon()

    def inject_malformed(self, driver: Driver, queue: str) -> int:
        """Files another tool could leave in ready/: kq must dead-letter them and go on."""
        folder = QueueFolder(self.path, queue)
        folder.create()
        contents = [
            b"not json at all",
            b"[1, 2]",
            b'{"message_id": 7, "body": "e30=", "content_type": "application/json", "headers": {}}',
            b'{"message_id": "m", "body": "not base64!", "content_type": "application/json",'
            b' "headers": {}, "routing_key": ""}',
            b'{"message_id": "m", "body": "e30=", "content_type": "application/json",'
            b' "headers": {"x": 1}, "routing_key": ""}',
            b"[" * 100_000,
        ]
        for number, content in enumerate(contents):
            name = f"{number + 1:020d}-{0:020d}-{0:020d}-{0:06d}-malformed{number}"
            (folder.ready / name).write_bytes(content)
        return len(contents)
