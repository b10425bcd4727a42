"""Signing conformance: what a producer signed still verifies where it is consumed."""

from __future__ import annotations

import dataclasses

import pytest

from kq.core._driver import Driver
from kq.core._errors import SignatureError
from kq.core._limits import Limits
from kq.core._loop import ConsumeLoop
from kq.core._message import Message
from kq.core._retry import RetryPolicy
from kq.core._signing import Signer, Verifier, new_key
from kq.core.testing._conformance_base import DriverTestBase
from kq.core.testing._handlers import FailingTwice
from kq.core.testing._helpers import receive_within


class SigningConformance(DriverTestBase):
    """Signed messages survive the trip: the driver keeps body, headers, routing key and content type
    exactly, so that a signature made by the producer is still valid at the consumer."""

    def test_a_signed_message_still_verifies_after_the_trip(self, driver: Driver, queue: str) -> None:
        key = new_key().encode()
        message = Message(
            "héllo ✓ signed".encode(),
            content_type="text/plain; charset=utf-8",
            routing_key="signed.trip",
            headers={"x-user": "ops ✓", "x-empty": ""},
        )
        signed = Signer("k1", key).sign(message, queue)
        self.publish(driver, queue, signed)
        with driver.consumer(queue) as consumer:
            got = receive_within(consumer, self.receive_timeout)
            consumer.ack(got)
        Verifier({"k1": key}, max_age=600).verify(got, [queue])  # raises SignatureError if altered

    def test_a_retried_copy_verifies_where_it_comes_back(self, queue: str) -> None:
        """A worker's retried copy (through the driver's retry, and its delay where it has one) is signed
        again and accepted by the same worker: nothing the driver or the broker adds on the way, such as
        RabbitMQ's x-death headers, may break it."""
        key = new_key().encode()
        with self.driver_with(queue, retry=RetryPolicy(max_attempts=3, delay=0.2, jitter=0)) as driver:
            self.publish(driver, queue, Signer("k1", key).sign(Message(b'"signed"'), queue))
            loop = ConsumeLoop(
                driver,
                queue,
                FailingTwice(),
                limits=Limits(messages=3, time=self.receive_timeout * 3),
                poll_interval=0.2,
                verifier=Verifier({"k1": key}, max_age=600),
                signer=Signer("k1", key),
            )
            loop.run()
            stats = loop.stats
            assert (stats.consumed, stats.failed, stats.retried, stats.dead_lettered) == (1, 2, 2, 0)

    def test_a_tampered_message_does_not_verify(self, driver: Driver, queue: str) -> None:
        key = new_key().encode()
        signed = Signer("k1", key).sign(Message(b"original", content_type="text/plain"), queue)
        self.publish(driver, queue, dataclasses.replace(signed, body=b"tampered"))
        with driver.consumer(queue) as consumer:
            got = receive_within(consumer, self.receive_timeout)
            consumer.ack(got)
        with pytest.raises(SignatureError, match="does not match"):
            Verifier({"k1": key}, max_age=600).verify(got, [queue])
