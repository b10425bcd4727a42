"""Acks held back to leave together (the RabbitMQ consumer's ``_ack``), against a real broker: a held
ack still reaches the broker while a later handler runs, and closing the consumer writes what it holds.
A connection torn down without a word is how the broker sees a killed worker: it requeues exactly what
was not acknowledged."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from kq.core import Delivery, Message
from kq.core.driver import Consumer, DriverSpec, QueueSpec
from kq.core.testing import unique_queue_name
from kq.drivers.rabbitmq import RabbitMQDriver

if TYPE_CHECKING:
    from integration.conftest import RabbitMQEndpoint

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def driver(rabbitmq: RabbitMQEndpoint) -> Iterator[tuple[RabbitMQDriver, str]]:
    queue = unique_queue_name("acks")
    instance = RabbitMQDriver(
        DriverSpec(name="rabbit", type="rabbitmq", options={"url": rabbitmq.amqp_url}),
        [QueueSpec(name=queue, driver="rabbit")],
    )
    instance.producer(queue).send_batch([Message(f"m{n}".encode()) for n in range(4)])
    try:
        yield instance, queue
    finally:
        instance.queue_manager().delete(queue)
        instance.close()


def _kill(consumer: Consumer) -> None:
    """Tear the consumer's connection down as a killed process would: no ack, no close, no flush."""
    impl: Any = consumer._connection._impl  # type: ignore[attr-defined]
    impl._transport._sock.shutdown(socket.SHUT_RDWR)


def _bodies_left(driver: RabbitMQDriver, queue: str) -> list[bytes]:
    bodies = []
    with driver.consumer(queue, prefetch=16) as consumer:
        while (delivery := consumer.receive(1.0)) is not None:
            bodies.append(delivery.body)
            consumer.ack(delivery)
    return sorted(bodies)


def _second_after_a_held_ack(consumer: Consumer) -> Delivery:
    """Ack the first of the fixture's four messages once the other three are buffered, check that the
    ack is held, and return the second."""
    first = consumer.receive(5.0)
    assert first is not None
    deadline = time.monotonic() + 5
    while len(consumer._buffer) < 3 and time.monotonic() < deadline:  # type: ignore[attr-defined]
        with consumer._lock:  # type: ignore[attr-defined]
            consumer._pump(0.05)  # type: ignore[attr-defined] # take in the rest of the prefetch
    assert len(consumer._buffer) == 3  # type: ignore[attr-defined]
    consumer.ack(first)
    assert consumer._acks.pending == 1  # type: ignore[attr-defined] # held: more are buffered
    second = consumer.receive(1.0)
    assert second is not None
    return second


def test_a_held_ack_reaches_the_broker_while_the_next_handler_runs(
    driver: tuple[RabbitMQDriver, str],
) -> None:
    instance, queue = driver
    consumer = instance.consumer(queue, prefetch=16)
    second = _second_after_a_held_ack(consumer)
    time.sleep(0.5)  # the second message's handler, long enough for the keeper to write the held ack
    _kill(consumer)
    consumer.close()
    assert _bodies_left(instance, queue) == sorted([second.body, b"m2", b"m3"])


def test_closing_writes_the_held_acks(driver: tuple[RabbitMQDriver, str]) -> None:
    instance, queue = driver
    with instance.consumer(queue, prefetch=16) as consumer:
        handled = []
        for _ in range(3):
            delivery = consumer.receive(5.0)
            assert delivery is not None
            consumer.ack(delivery)
            handled.append(delivery.body)
    assert _bodies_left(instance, queue) == sorted({b"m0", b"m1", b"m2", b"m3"} - set(handled))


def test_acks_leave_once_half_the_prefetch_window_was_handled(driver: tuple[RabbitMQDriver, str]) -> None:
    """Held acks never wait for the whole window: the broker refills it while the rest is handled, so a
    fast worker does not stall a round trip per window (``ack_batch``)."""
    instance, queue = driver
    consumer = instance.consumer(queue, prefetch=4)
    second = _second_after_a_held_ack(consumer)
    consumer.ack(second)
    assert consumer._acks.pending == 0  # type: ignore[attr-defined] # half of 4: written at once
    _kill(consumer)  # before the keeper's delay could have written them
    consumer.close()
    assert _bodies_left(instance, queue) == [b"m2", b"m3"]
