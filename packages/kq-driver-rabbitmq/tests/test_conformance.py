"""The driver conformance suite against a real RabbitMQ, and what other AMQP clients can put in a queue.

The broker is the one ``KQ_TEST_RABBITMQ_URL`` names (``KQ_TEST_RABBITMQ_MANAGEMENT_URL`` too, for the
tests that list queues); without it every test here skips. ``nox -s integration -- rabbitmq`` starts a
broker of its own and runs these same classes against it: ``integration/test_rabbitmq_conformance.py``
imports them, and its ``rabbitmq`` fixture (the harness) replaces the one below.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import decimal
import json
import os
import socket
from collections.abc import Sequence
from typing import Any, Protocol

import pika
import pytest

from kq.core import DEAD_LETTER_REASON, JSON, ConsumeLoop, Delivery, Handler, Limits
from kq.core.driver import Consumer, Driver, DriverSpec, QueueSpec
from kq.core.testing import (
    BasicConformance,
    ConsumeLoopConformance,
    DelayConformance,
    DriverTestBase,
    FailureHandlingConformance,
    OrderingConformance,
    QueueManagerConformance,
    RoutingConformance,
    SigningConformance,
    TTLConformance,
    drain,
)
from kq.drivers.rabbitmq import RabbitMQConsumer
from kq.drivers.rabbitmq._topology import Topology

URL = os.environ.get("KQ_TEST_RABBITMQ_URL", "")

# Only this module's own tests: a module importing the classes (integration/) is not marked by it.
pytestmark = pytest.mark.skipif(
    not URL,
    reason="no RabbitMQ broker: set KQ_TEST_RABBITMQ_URL, or run nox -s integration -- rabbitmq, "
    "which starts one and runs this suite",
)


class Endpoint(Protocol):
    """Where the broker under test listens (integration/'s harness gives one with more)."""

    @property
    def amqp_url(self) -> str: ...

    @property
    def management_url(self) -> str | None: ...


@dataclasses.dataclass(frozen=True)
class ExternalBroker:
    """A running broker named by the environment."""

    amqp_url: str
    management_url: str | None


@pytest.fixture(scope="session")
def rabbitmq() -> Endpoint:
    """The broker of ``KQ_TEST_RABBITMQ_URL`` (integration/conftest.py has its own, which can start one)."""
    return ExternalBroker(URL, os.environ.get("KQ_TEST_RABBITMQ_MANAGEMENT_URL") or None)


class _RabbitMQ(DriverTestBase):
    """How the suite reaches the test broker, crashes a consumer and cleans up."""

    idle_timeout = 1.0
    receive_timeout = 10.0
    redelivery_timeout = 15.0

    @pytest.fixture(autouse=True)
    def _broker(self, rabbitmq: Endpoint) -> None:
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


class TestRabbitMQDriver(
    _RabbitMQ,
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
    """The whole suite on classic queues (the default): delivery counts are a redelivered flag."""

    def inject_malformed(self, driver: Driver, queue: str) -> int:
        """Publish with plain pika, straight into the queue the driver consumes, what kq's producers
        never send (see FOREIGN)."""
        return len(publish_foreign(self.endpoint.amqp_url, driver.queue(queue)))

    def test_each_foreign_shape_is_consumed_or_dead_lettered_as_documented(
        self, driver: Driver, queue: str
    ) -> None:
        """What happens to each of FOREIGN: readable ones are consumed, with their typed headers as text;
        what has no faithful text is dead-lettered as malformed, with what was wrong; the worker goes on."""
        sent = publish_foreign(self.endpoint.amqp_url, driver.queue(queue))
        handler = _ByBody()
        loop = ConsumeLoop(
            driver,
            queue,
            handler,
            limits=Limits(messages=len(sent), time=self.receive_timeout * 3),
            poll_interval=0.5,
        )
        reason = loop.run()  # must return, not raise
        assert loop.stats.received == len(sent), reason
        with driver.consumer(driver.queue(queue).dead_letter_queue) as consumer:
            dead = drain(consumer, idle=self.idle_timeout * 2)
        outcomes = {**dict.fromkeys(handler.seen, "consumed")}
        outcomes.update({d.body: d.headers.get(DEAD_LETTER_REASON, "?") for d in dead})
        assert {f.name: outcomes.get(f.body, "lost") for f in sent} == {f.name: f.outcome for f in sent}
        for shape in sent:
            if shape.headers_seen is not None:
                assert handler.seen[shape.body].headers == shape.headers_seen, shape.name
        errors = {d.body: d.headers.get("kq-dead-letter-error", "") for d in dead}
        for shape in sent:
            if shape.defect:
                assert shape.defect in errors[shape.body], (shape.name, errors[shape.body])


class TestRabbitMQQuorumQueues(_RabbitMQ):
    """Quorum queues count deliveries exactly (``x-delivery-count``, capabilities_for says "exact"): the
    tests that depend on exact counts, again on a quorum queue."""

    def queue_options(self) -> dict[str, Any]:
        return {"queue_type": "quorum"}

    test_two_crashes_give_a_third_delivery_counted_three = (
        BasicConformance.test_two_crashes_give_a_third_delivery_counted_three
    )
    test_released_deliveries_do_not_make_a_message_poison = (
        ConsumeLoopConformance.test_released_deliveries_do_not_make_a_message_poison
    )
    test_a_message_redelivered_past_the_limit_is_dead_lettered_as_poison = (
        FailureHandlingConformance.test_a_message_redelivered_past_the_limit_is_dead_lettered_as_poison
    )
    test_crashed_consumer_loses_nothing = BasicConformance.test_crashed_consumer_loses_nothing


@dataclasses.dataclass(frozen=True)
class Foreign:
    """A message another AMQP client may send, and what kq does with it."""

    name: str
    #: consumed, or the dead-letter reason: malformed (the driver cannot read it faithfully) or
    #: undecodable (the body does not decode).
    outcome: str
    headers: dict[Any, Any] | None = None
    content_type: str | bytes | None = JSON
    message_id: str | bytes | None = "default"
    #: Routing key through the queue's exchange; None: straight into the queue (default exchange).
    routing_key: str | bytes | None = None
    body: bytes = b""
    #: The headers the handler sees, when checked.
    headers_seen: dict[str, str] | None = None
    #: Part of the dead letter's kq-dead-letter-error, when checked.
    defect: str = ""


_NOON = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"n": value}
    return value


#: Every shape published by publish_foreign. Bodies are unique JSON strings (except the empty one), so
#: that the tests can tell the messages apart even without message ids.
FOREIGN: list[Foreign] = [
    Foreign(
        "nested table",
        "consumed",
        {"x-nested": {"a": {"b": [1, "two", None]}}},
        headers_seen={"x-nested": '{"a": {"b": [1, "two", null]}}'},
    ),
    Foreign(
        "array",
        "consumed",
        {"x-list": [1, True, "three", [4]]},
        headers_seen={"x-list": '[1, true, "three", [4]]'},
    ),
    Foreign("UTF-8 bytes", "consumed", {"x-bytes": b"caf\xc3\xa9"}, headers_seen={"x-bytes": "café"}),
    Foreign("void", "consumed", {"x-void": None}, headers_seen={"x-void": "null"}),
    Foreign(
        "integers",
        "consumed",
        {"x-int": 42, "x-big": 2**62, "x-negative": -7},
        headers_seen={"x-int": "42", "x-big": str(2**62), "x-negative": "-7"},
    ),
    Foreign(
        "decimal", "consumed", {"x-decimal": decimal.Decimal("3.14")}, headers_seen={"x-decimal": "3.14"}
    ),
    Foreign("timestamp", "consumed", {"x-time": _NOON}, headers_seen={"x-time": "2024-05-01T12:00:00+00:00"}),
    Foreign(
        "booleans",
        "consumed",
        {"x-yes": True, "x-no": False},
        headers_seen={"x-yes": "true", "x-no": "false"},
    ),
    Foreign(
        "names with spaces and unicode",
        "consumed",
        {"X Php Trace": "abc", "naïve ✓": "1", "": "empty name"},
        headers_seen={"X Php Trace": "abc", "naïve ✓": "1", "": "empty name"},
    ),
    Foreign("no message id", "consumed", message_id=None),
    Foreign("empty message id", "consumed", message_id=""),
    Foreign("no content type", "consumed", content_type=None),
    Foreign(
        "content type with odd parameters",
        "consumed",
        content_type='application/json; charset="utf-8"; x=(y); ;',
    ),
    Foreign("empty body", "undecodable"),
    Foreign(
        "huge header table",
        "consumed",
        {f"x-h{i:04d}": "v" * 20 for i in range(2000)},
        headers_seen={f"x-h{i:04d}": "v" * 20 for i in range(2000)},
    ),
    Foreign(
        "x-delivery-count as text",
        "consumed",
        {"x-delivery-count": "3", "x-user": "ops"},
        headers_seen={"x-user": "ops"},
    ),
    Foreign("x-delivery-count negative", "consumed", {"x-delivery-count": -5}, headers_seen={}),
    Foreign("x-delivery-count as a table", "consumed", {"x-delivery-count": {"n": 1}}, headers_seen={}),
    Foreign("binary value", "malformed", {"x-binary": b"\xff\xfe\x00"}, defect="bytes that are not UTF-8"),
    Foreign("binary header name", "malformed", {b"x-\xff": "v"}, defect="is not UTF-8 text"),
    Foreign("tables nested 40 deep", "malformed", {"x-deep": _nested(40)}, defect="nested deeper than 32"),
    Foreign("kq-redelivery not digits", "malformed", {"kq-redelivery": "three"}, defect="kq-redelivery"),
    Foreign("kq-redelivery superscript", "malformed", {"kq-redelivery": "²"}, defect="kq-redelivery"),
    Foreign("kq-redelivery bytes", "malformed", {"kq-redelivery": b"3"}, defect="kq-redelivery"),
    Foreign("kq-redelivery table", "malformed", {"kq-redelivery": {"n": 3}}, defect="kq-redelivery"),
    Foreign("kq-routing-key bytes", "malformed", {"kq-routing-key": b"\xff"}, defect="kq-routing-key"),
    Foreign("kq-routing-key table", "malformed", {"kq-routing-key": {"k": "v"}}, defect="kq-routing-key"),
    Foreign("kq-routing-key integer", "malformed", {"kq-routing-key": 7}, defect="kq-routing-key"),
    Foreign("binary routing key", "malformed", routing_key=b"\xff.bin", defect="routing key"),
    Foreign("binary content type", "malformed", content_type=b"application/\xff", defect="content type"),
    Foreign("binary message id", "malformed", message_id=b"\xfe\xff", defect="message id"),
]


def publish_foreign(amqp_url: str, spec: QueueSpec) -> list[Foreign]:
    """Publish every shape of FOREIGN with plain pika into the AMQP queue of ``spec`` (or, for a
    routing key of its own, through its exchange), declared first; return them with their bodies.
    Publishing is mandatory and confirmed: a message the broker did not queue is an error here."""
    topology = Topology.of(spec)
    sent: list[Foreign] = []
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        topology.declare(channel, spec, "the test broker")
        channel.confirm_delivery()
        for number, shape in enumerate(FOREIGN):
            body = (
                b"" if shape.name == "empty body" else json.dumps(f"foreign {number}: {shape.name}").encode()
            )
            message_id = f"foreign-{number}" if shape.message_id == "default" else shape.message_id
            properties = pika.BasicProperties(
                content_type=shape.content_type, message_id=message_id, headers=shape.headers, delivery_mode=2
            )
            if shape.routing_key is None:
                channel.basic_publish("", topology.queue, body, properties, mandatory=True)
            else:
                # pika sends a bytes routing key as it is (its annotation says str).
                key: Any = shape.routing_key
                channel.basic_publish(topology.exchange, key, body, properties, mandatory=True)
            sent.append(dataclasses.replace(shape, body=body))
    finally:
        connection.close()
    return sent


class _ByBody(Handler):
    """Accepts JSON only and keeps what it consumed, by body."""

    accepted_content_types = frozenset({JSON})
    kind = "by-body"

    def __init__(self) -> None:
        self.seen: dict[bytes, Delivery] = {}

    def consume(self, body: Any, delivery: Delivery) -> Any:
        self.seen[delivery.body] = delivery
        return body
