"""Deliveries read straight from the socket (``_deliveries.py``) on a real RabbitMQ: what they become is
what pika's own reading makes of the same messages, messages the direct path leaves to pika (too large
to look at whole) arrive too, and an idle consumer waiting in the direct path keeps its connection on a
short heartbeat.

The broker is the integration harness's (``rabbitmq`` fixture).
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pika
import pytest

from kq.core import Delivery, Message
from kq.core.driver import DriverSpec, QueueSpec
from kq.core.testing import unique_queue_name
from kq.drivers.rabbitmq import RabbitMQDriver
from kq.drivers.rabbitmq._consumer import RabbitMQConsumer, read_delivery

if TYPE_CHECKING:
    from integration.conftest import RabbitMQEndpoint

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def queues(rabbitmq: RabbitMQEndpoint) -> Iterator[tuple[str, str]]:
    """Two queues bound to one fanout exchange: every message lands in both."""
    consumed, reference = unique_queue_name("direct"), unique_queue_name("direct-ref")
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq.amqp_url))
    channel = connection.channel()
    channel.exchange_declare(consumed, exchange_type="fanout", durable=True)
    for name in (consumed, reference):
        channel.queue_declare(name, durable=True)
        channel.queue_bind(name, consumed)
    try:
        yield consumed, reference
    finally:
        for name in (consumed, reference):
            channel.queue_delete(name)
        channel.exchange_delete(consumed)
        connection.close()


def _driver(url: str, queue: str, **options: Any) -> RabbitMQDriver:
    return RabbitMQDriver(
        DriverSpec(name="rabbit", type="rabbitmq", options={"url": url, **options}),
        [QueueSpec(name=queue, driver="rabbit", options={"exchange_type": "fanout"})],
    )


MOMENT = datetime.datetime(2024, 5, 1, 12, 0, 0)
#: What other AMQP clients send: typed headers, properties kq never writes, bodies of a few sizes.
SMALL = [
    (pika.BasicProperties(), b""),
    (pika.BasicProperties(content_type="text/plain", message_id="m-1"), b"hello"),
    (
        pika.BasicProperties(
            headers={"n": 7, "big": 2**40, "ok": True, "d": decimal.Decimal("3.14"), "t": MOMENT, "v": None},
            correlation_id="c",
            reply_to="r",
            expiration="60000",
            priority=3,
            type="job",
            app_id="php",
            timestamp=1_700_000_000,
            delivery_mode=2,
        ),
        b'{"a": 1}',
    ),
    (pika.BasicProperties(headers={"nested": {"a": [1, "x", {"b": None}]}, "raw": b"\xff\xfe"}), b"x" * 1000),
]
#: More than the 64 KiB looked at, in many body frames: pika reads them.
LARGE = [
    (pika.BasicProperties(headers={"kq-signature": "abc"}), b"y" * 200_000),
    (pika.BasicProperties(message_id="m-2"), b"z" * 300_000),
]
#: Small ones in several prefetch windows, large ones, small ones again.
FOREIGN = SMALL * 5 + LARGE * 2 + SMALL * 5


def _comparable(delivery: Delivery) -> tuple[Any, ...]:
    return (
        delivery.body,
        delivery.content_type,
        delivery.headers,
        delivery.routing_key,
        delivery.message_id,
        delivery.delivery_count,
        delivery.defect,
    )


def test_deliveries_read_directly_are_what_pika_reads(
    rabbitmq: RabbitMQEndpoint, queues: tuple[str, str]
) -> None:
    consumed, reference = queues
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq.amqp_url))
    channel = connection.channel()
    for properties, body in FOREIGN:
        channel.basic_publish(consumed, "a.b", body, properties)
    expected = []
    while (got := channel.basic_get(reference, auto_ack=True))[0] is not None:
        method, properties, body = got
        expected.append(_comparable(read_delivery(consumed, method, properties, body)))
    connection.close()
    assert len(expected) == len(FOREIGN)

    driver = _driver(rabbitmq.amqp_url, consumed)
    try:
        with driver.consumer(consumed, prefetch=16) as consumer:
            assert isinstance(consumer, RabbitMQConsumer)
            assert consumer._reader.direct
            taken: list[int] = []
            append = consumer._reader._on_delivery

            def counted(*parts: Any) -> None:
                taken.append(len(parts[2]))  # the body's size
                append(*parts)

            consumer._reader._on_delivery = counted
            received: list[tuple[Any, ...]] = []
            while len(received) < len(expected) and (delivery := consumer.receive(5.0)) is not None:
                received.append(_comparable(delivery))
                consumer.ack(delivery)
    finally:
        driver.close()
    assert received == expected
    # Read directly: small ones that come while pika holds nothing (those that come with the consumer's
    # start, or in one read with a large one, are pika's); never a large one.
    assert taken
    assert max(taken) < 64 * 1024


def test_an_idle_consumer_keeps_its_connection_on_a_short_heartbeat(
    rabbitmq: RabbitMQEndpoint, queues: tuple[str, str]
) -> None:
    """Waiting for messages in the direct path still runs pika's timers: its heartbeats go out, and
    the broker (which closes a connection silent for two intervals) keeps it."""
    consumed, _ = queues
    driver = _driver(rabbitmq.amqp_url, consumed, heartbeat=1)
    try:
        with driver.consumer(consumed, prefetch=4) as consumer:
            assert isinstance(consumer, RabbitMQConsumer)
            assert consumer._reader.direct
            assert consumer.receive(4.0) is None
            driver.producer(consumed).send(Message(b"after"))
            delivery = consumer.receive(5.0)
            assert delivery is not None
            assert delivery.body == b"after"
            consumer.ack(delivery)
    finally:
        driver.close()
