"""The conformance suite on the memory driver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kq.core.driver import Consumer, DriverSpec
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
from kq.drivers.memory import MemoryConsumer, MemoryDriver


class TestMemoryDriver(
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
    def _fresh_store(self) -> Iterator[None]:
        MemoryDriver.reset()
        yield
        MemoryDriver.reset()

    def driver_spec(self) -> DriverSpec:
        return DriverSpec(name="test", type="memory", options={"visibility_timeout": 1.0})

    def crash_consumer(self, consumer: Consumer) -> None:
        assert isinstance(consumer, MemoryConsumer)
        consumer.abandon()
