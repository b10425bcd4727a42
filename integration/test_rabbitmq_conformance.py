"""The driver conformance suite against a real RabbitMQ."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pytest

from kq.core import Consumer, Driver, DriverSpec
from kq.core.testing import (
    BasicConformance,
    ConsumeLoopConformance,
    DelayConformance,
    FailureHandlingConformance,
    OrderingConformance,
    QueueManagerConformance,
    RoutingConformance,
    SigningConformance,
    TTLConformance,
)
from kq.drivers.rabbitmq import RabbitMQConsumer

if TYPE_CHECKING:
    from integration.conftest import RabbitMQEndpoint

pytestmark = pytest.mark.rabbitmq


class TestRabbitMQDriver(
    BasicConformance,
    OrderingConformance,
    RoutingConformance,
    TTLConformance,
    DelayConformance,
    QueueManagerConformance,
    ConsumeLoopConformance,
    FailureHandlingConformance,
    SigningConformance,
):
    idle_timeout = 1.0
    receive_timeout = 10.0
    redelivery_timeout = 15.0

    @pytest.fixture(autouse=True)
    def _broker(self, rabbitmq: RabbitMQEndpoint) -> None:
        self.endpoint = rabbitmq

    def driver_spec(self) -> DriverSpec:
        options: dict[str, object] = {"url": self.endpoint.amqp_url}
        if self.endpoint.management_url:
            options["management_url"] = self.endpoint.management_url
        return DriverSpec(name="test", type="rabbitmq", options=options)

    def crash_consumer(self, consumer: Consumer) -> None:
        # Cut the TCP connection under pika, as a killed process would: no channel.close, no basic.cancel.
        assert isinstance(consumer, RabbitMQConsumer)
        connection = consumer._connection
        assert connection is not None
        connection._impl._transport._sock.shutdown(socket.SHUT_RDWR)
        consumer.close()

    def cleanup(self, driver: Driver, queues: Sequence[str]) -> None:
        # A consumer with its own routing key reads `<queue>[<key>]`: delete those too.
        names = list(queues)
        with contextlib.suppress(Exception):
            names += [
                q
                for q in driver.queue_manager().list_available()
                if q.split("[")[0] in queues or any(f".{name}." in q for name in queues)  # delay queues too
            ]
        super().cleanup(driver, names)
