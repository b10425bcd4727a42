"""The first publish of a new RabbitMQ producer costs round trips, not a timeout.

Every ``kq queuecommand`` is a new producer, and so is a worker's first dead letter or retry: its first
publish connects, declares the topology, puts the channel in confirm mode and waits for the confirm.
On a local broker that is a few milliseconds. A wait that the broker's reply does not end (as the wait
for Confirm.Select-Ok once was, sleeping its full 1.0 s every time) shows up here as a second or more.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

import pika
import pytest

from kq.core import Message
from kq.core.driver import DriverSpec
from kq.core.plugins import load_driver_class
from kq.core.testing import unique_queue_name

if TYPE_CHECKING:
    from integration.conftest import RabbitMQEndpoint

pytestmark = pytest.mark.rabbitmq

#: Fresh producers measured; the median decides, so that one slow moment of a busy machine does not.
ROUNDS = 3
#: A local broker answers in milliseconds; the old stall alone was 1.0 s.
LIMIT = 0.5


def _first_publish(rabbitmq: RabbitMQEndpoint, queue: str) -> float:
    """Seconds for a new driver's producer to connect, declare, select confirms and publish one
    confirmed message."""
    spec = DriverSpec(name="latency", type="rabbitmq", options={"url": rabbitmq.amqp_url})
    driver = load_driver_class("rabbitmq")(spec)
    try:
        started = time.perf_counter()
        driver.producer(queue).send(Message(b'"first"', routing_key="first.publish"))
        return time.perf_counter() - started
    finally:
        driver.close()


def _depth(rabbitmq: RabbitMQEndpoint, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq.amqp_url))
    try:
        count: int = connection.channel().queue_declare(queue, passive=True).method.message_count
        return count
    finally:
        connection.close()


def _delete(rabbitmq: RabbitMQEndpoint, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq.amqp_url))
    try:
        channel = connection.channel()
        channel.queue_delete(queue)
        channel.exchange_delete(queue)
    finally:
        connection.close()


def test_a_new_producers_first_publish_does_not_stall(rabbitmq: RabbitMQEndpoint) -> None:
    """Connect + declare + confirm-select + publish + confirm, by a fresh driver each time: well under
    a second (the median of a few), and every message is on the queue when publish returns."""
    queue = unique_queue_name("latency")
    try:
        times = [_first_publish(rabbitmq, queue) for _ in range(ROUNDS)]
        assert _depth(rabbitmq, queue) == ROUNDS, "a confirmed message is missing from the queue"
    finally:
        _delete(rabbitmq, queue)
    median = statistics.median(times)
    assert median < LIMIT, (
        f"a new producer's first publish took {median:.3f}s (median of {', '.join(f'{t:.3f}' for t in times)}"
        f"), more than {LIMIT}s: something waits for a timeout instead of the broker's reply"
    )
