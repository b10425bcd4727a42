"""Small helpers for driver tests: waiting, draining, unique names."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from kq.core._driver_consumer import Consumer
from kq.core._message import Delivery

T = TypeVar("T")


def unique_queue_name(prefix: str = "kqtest") -> str:
    """A queue name no other test uses: letters, digits and ``_`` only, valid on every broker."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def wait_for(
    probe: Callable[[], T], *, timeout: float, interval: float = 0.1, message: str = "condition"
) -> T:
    """Call ``probe`` until it returns a truthy value and return it.

    Raises:
        AssertionError: ``timeout`` seconds passed; the message includes the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} not met within {timeout:g}s (last value: {value!r})")
        time.sleep(interval)


def receive_within(consumer: Consumer, timeout: float) -> Delivery:
    """Receive one delivery, waiting up to ``timeout`` seconds in total (several receive calls if needed).

    Raises:
        AssertionError: nothing arrived in time.
    """
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        delivery = consumer.receive(max(0.0, min(remaining, 5.0)))
        if delivery is not None:
            return delivery
        if remaining <= 0:
            raise AssertionError(f"no message arrived on queue {consumer.queue.name!r} within {timeout:g}s")


def drain(consumer: Consumer, *, idle: float, limit: int = 10_000, ack: bool = True) -> list[Delivery]:
    """Receive until nothing arrives for ``idle`` seconds; ack each delivery unless ``ack`` is false."""
    received: list[Delivery] = []
    while len(received) < limit:
        delivery = consumer.receive(idle)
        if delivery is None:
            break
        received.append(delivery)
        if ack:
            consumer.ack(delivery)
    return received
