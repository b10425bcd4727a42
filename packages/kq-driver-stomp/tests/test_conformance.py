"""The driver conformance suite against real STOMP brokers: ActiveMQ Classic and RabbitMQ's plugin.

The brokers are the ones ``KQ_TEST_STOMP_ACTIVEMQ`` and ``KQ_TEST_STOMP_RABBITMQ`` name (``host:port``
of the STOMP listener; ``KQ_TEST_STOMP_RABBITMQ_MANAGEMENT_URL`` is RabbitMQ's management API, default
``http://<host>:15672``); without one, its class skips. ActiveMQ must run with
``schedulerSupport="true"`` (the tests declare ``scheduler = true``, so DelayConformance runs).
``integration/`` imports these classes with fixtures of its own (the harness starts the brokers), which
replace the ``stomp_activemq`` and ``stomp_rabbitmq`` fixtures below.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import pytest

from kq.core import CallableHandler, ConsumeLoop, Limits
from kq.core.driver import (
    BrokerUnavailableError,
    Consumer,
    Delivery,
    Driver,
    DriverSpec,
    Message,
    PublishError,
)
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
    receive_within,
    wait_for,
)
from kq.drivers.stomp import StompConsumer, StompDriver, _wire
from kq.drivers.stomp._connection import Session

ACTIVEMQ = os.environ.get("KQ_TEST_STOMP_ACTIVEMQ", "")
RABBITMQ = os.environ.get("KQ_TEST_STOMP_RABBITMQ", "")
RABBITMQ_MANAGEMENT = os.environ.get("KQ_TEST_STOMP_RABBITMQ_MANAGEMENT_URL", "")


@dataclasses.dataclass(frozen=True)
class StompBroker:
    """Where a STOMP broker under test answers (integration/'s harness gives one of its own)."""

    flavour: str
    host_port: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@pytest.fixture(scope="session")
def stomp_activemq() -> StompBroker:
    """The ActiveMQ of ``KQ_TEST_STOMP_ACTIVEMQ`` (integration/conftest.py has one that starts it)."""
    if not ACTIVEMQ:
        pytest.skip("no ActiveMQ: set KQ_TEST_STOMP_ACTIVEMQ=host:port (STOMP, schedulerSupport on)")
    return StompBroker("activemq", ACTIVEMQ, {"scheduler": True})


@pytest.fixture(scope="session")
def stomp_rabbitmq() -> StompBroker:
    """The RabbitMQ of ``KQ_TEST_STOMP_RABBITMQ`` (integration/conftest.py has one that starts it)."""
    if not RABBITMQ:
        pytest.skip("no RabbitMQ STOMP: set KQ_TEST_STOMP_RABBITMQ=host:port (and ..._MANAGEMENT=http://...)")
    options: dict[str, Any] = {}
    if RABBITMQ_MANAGEMENT:
        options["management_url"] = RABBITMQ_MANAGEMENT
    return StompBroker("rabbitmq", RABBITMQ, options)


class _Stomp(DriverTestBase):
    """How the suite reaches a STOMP broker and crashes a consumer."""

    idle_timeout = 1.0
    receive_timeout = 15.0
    redelivery_timeout = 20.0
    stats_timeout = 15.0
    ttl = 2.0
    delay = 2.0
    broker: StompBroker

    def driver_spec(self) -> DriverSpec:
        return DriverSpec(
            name="test",
            type="stomp",
            options={
                "flavour": self.broker.flavour,
                "hosts": [self.broker.host_port],
                "heartbeat": 4000,
                **self.broker.options,
            },
        )

    def cleanup(self, driver: Driver, queues: Sequence[str]) -> None:
        """Delete the test queues where the broker can (ActiveMQ cannot over STOMP: they stay, empty or
        not, under their unique names)."""
        try:
            super().cleanup(driver, queues)
        except ModuleNotFoundError as exc:  # the queue manager is another module of this package
            if exc.name != "kq.drivers.stomp._queue_manager":
                raise

    def crash_consumer(self, consumer: Consumer) -> None:
        # A killed process sends no DISCONNECT: the broker sees the socket close and redelivers.
        assert isinstance(consumer, StompConsumer)
        consumer.abandon()


class StompBehaviour(DriverTestBase):
    """What this driver promises beyond the suite: receipts once per batch, partial publishes named,
    lost connections turned into BrokerUnavailableError, requeues that never NACK on ActiveMQ, and
    interoperability with plain STOMP clients."""

    broker: StompBroker

    def test_a_batch_waits_once_for_all_its_receipts(
        self, driver: Driver, queue: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        waits: list[int] = []
        original = Session.wait_receipts

        def counting(session: Session, ids: Any, timeout: float) -> Any:
            ids = list(ids)
            waits.append(len(ids))
            return original(session, ids, timeout)

        monkeypatch.setattr(Session, "wait_receipts", counting)
        sent = [Message(f"{i}".encode(), content_type="text/plain") for i in range(200)]
        self.publish(driver, queue, *sent)
        assert waits == [200], "one wait for the 200 receipts of one batch"
        monkeypatch.undo()
        with driver.consumer(queue, prefetch=50) as consumer:
            got = drain(consumer, idle=self.idle_timeout)
        assert sorted(d.message_id for d in got) == sorted(m.message_id for m in sent)

    def test_a_frame_the_broker_refuses_names_what_was_published(
        self, driver: Driver, queue: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """ActiveMQ refuses a header longer than 10 KiB with an ERROR frame and closes the connection: the
        messages before it are confirmed and delivered, the refused one is named as failed and never
        delivered; the next publish reconnects. (ActiveMQ may still take a frame written after the refused
        one without its receipt reaching kq before the connection closes: "failed" means "not confirmed".)
        The driver refuses such a header itself before sending (see the offline tests): its check is
        switched off here so that the broker's refusal can be observed.
        """
        if self.broker.flavour != "activemq":
            pytest.skip("RabbitMQ's plugin takes long headers; ActiveMQ's limit makes the refusal")
        monkeypatch.setattr(_wire, "ACTIVEMQ_MAX_HEADER_LINE", 10**9)
        sent = [Message(b"1"), Message(b"2"), Message(b"3", headers={"x-big": "x" * 20_000}), Message(b"4")]
        with pytest.raises(PublishError, match="maximum header length") as caught:
            self.publish(driver, queue, *sent)
        published, failed = caught.value.published, caught.value.failed
        assert published[:2] == [sent[0].message_id, sent[1].message_id]
        assert sent[2].message_id in failed
        assert sorted(published + failed) == sorted(m.message_id for m in sent)
        after = Message(b"after")
        self.publish(driver, queue, after)
        with driver.consumer(queue) as consumer:
            got = drain(consumer, idle=self.idle_timeout)
        delivered = [d.message_id for d in got]
        assert delivered[: len(published)] == published
        assert delivered[-1] == after.message_id
        assert set(delivered) <= {*published, *failed, after.message_id} - {sent[2].message_id}

    def test_a_lost_connection_raises_broker_unavailable_and_closes_cleanly(
        self, driver: Driver, queue: str
    ) -> None:
        self.publish(driver, queue, Message(b"held"))
        consumer = driver.consumer(queue)
        assert isinstance(consumer, StompConsumer)
        held = receive_within(consumer, self.receive_timeout)
        _cut(consumer)
        with pytest.raises(BrokerUnavailableError):
            consumer.receive(self.receive_timeout)
        with pytest.raises(BrokerUnavailableError):
            consumer.ack(held)
        started = time.monotonic()
        consumer.close()
        assert time.monotonic() - started < 1.0, "closing a lost consumer must not wait for the broker"
        with driver.consumer(queue) as again:
            back = receive_within(again, self.redelivery_timeout)
            assert back.message_id == held.message_id
            assert back.delivery_count == 2
            again.ack(back)

    def test_the_consume_loop_recovers_from_a_lost_connection(
        self, driver: Driver, queue: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The connection of the loop's consumer is cut while it handles a message: the loop builds a new
        consumer, the broker redelivers that message, and every message is handled."""
        consumers: list[StompConsumer] = []
        create = StompDriver._create_consumer

        def recording(self: StompDriver, *args: Any) -> Any:
            consumer = create(self, *args)
            assert isinstance(consumer, StompConsumer)
            consumers.append(consumer)
            return consumer

        monkeypatch.setattr(StompDriver, "_create_consumer", recording)
        sent = [Message(f'"{i}"'.encode()) for i in range(5)]
        self.publish(driver, queue, *sent)
        handled: list[str] = []

        def handle(body: Any, delivery: Delivery) -> None:
            if len(handled) == 2 and len(consumers) == 1:
                _cut(consumers[0])  # this message's ack fails; the broker redelivers it
            handled.append(delivery.message_id)

        def all_handled() -> str | None:
            return "all handled" if set(handled) >= {m.message_id for m in sent} else None

        loop = ConsumeLoop(
            driver,
            queue,
            CallableHandler(handle, "cut"),
            limits=Limits(time=self.receive_timeout * 2, checks=(all_handled,)),
            poll_interval=0.2,
            max_backoff=0.5,
        )
        reason = loop.run()
        assert len(consumers) >= 2, f"the loop did not rebuild its consumer ({reason})"
        assert set(handled) == {m.message_id for m in sent}, reason
        with driver.consumer(queue) as consumer:
            assert consumer.receive(self.idle_timeout) is None

    def test_activemq_requeues_and_retries_never_nack(
        self, driver: Driver, queue: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An ActiveMQ NACK dead-letters: requeue and retry are a copy and an ACK in one transaction."""
        if self.broker.flavour != "activemq":
            pytest.skip("RabbitMQ requeues with NACK")
        frames: list[str] = []
        call = Session.call

        def spying(session: Session, method: str, *args: Any, **kwargs: Any) -> Any:
            frames.append(method)
            return call(session, method, *args, **kwargs)

        monkeypatch.setattr(Session, "call", spying)
        self.publish(driver, queue, Message(b"again", headers={"x-a": "1"}))
        with driver.consumer(queue) as consumer:
            first = receive_within(consumer, self.receive_timeout)
            consumer.reject(first, requeue=True)
            second = receive_within(consumer, self.receive_timeout)
            assert (second.message_id, second.delivery_count, second.headers) == (
                first.message_id,
                2,
                {"x-a": "1"},
            )
            consumer.retry(second, {**second.headers, "kq-attempt": "2"})
            third = receive_within(consumer, self.receive_timeout)
            assert third.headers == {"x-a": "1", "kq-attempt": "2"}
            consumer.ack(third)
            assert consumer.receive(self.idle_timeout) is None
        assert "nack" not in frames
        assert frames.count("commit") == 2

    def test_hosts_fail_over_in_order(self, queue: str) -> None:
        """A host that does not answer is skipped for the next one of the list."""
        spec = self.driver_spec()
        options = {**spec.options, "hosts": ["127.0.0.1:9", self.broker.host_port], "connect_timeout": 2.0}
        driver = StompDriver(dataclasses.replace(spec, options=options), [self.make_queue(queue)])
        try:
            self.publish(driver, queue, Message(b"failover"))
            with driver.consumer(queue) as consumer:
                got = receive_within(consumer, self.receive_timeout)
                consumer.ack(got)
            assert got.body == b"failover"
        finally:
            self.cleanup(driver, [queue])
            driver.close()

    def test_a_plain_stomp_message_in_the_php_shape_is_consumed(self, driver: Driver, queue: str) -> None:
        """A PHP producer's console-command message (plain STOMP, JSON body, no kq headers) is handled."""
        assert isinstance(driver, StompDriver)
        body = b'{"command": "app:echo", "arguments": ["hi"], "options": {}}'
        session = driver.session("php producer")
        try:
            session.send(
                driver.destination(queue), body, {"content-type": "application/json", "receipt": "php-1"}
            )
            assert session.wait_receipts(["php-1"], 10.0)[0] == {"php-1"}
        finally:
            session.close()
        bodies: list[Any] = []
        handler = CallableHandler(lambda body, delivery: bodies.append(body), "php")
        loop = ConsumeLoop(driver, queue, handler, limits=Limits(messages=1, time=self.receive_timeout))
        loop.run()
        assert loop.stats.consumed == 1
        assert bodies == [{"command": "app:echo", "arguments": ["hi"], "options": {}}]

    def test_a_kq_message_read_with_plain_stomp(self, driver: Driver, queue: str) -> None:
        """A plain STOMP client sees the body, content type and headers kq sent, and kq's id and key."""
        assert isinstance(driver, StompDriver)
        sent = Message(b'{"a": 1}', routing_key="app.echo", headers={"x-trace": "t1"})
        self.publish(driver, queue, sent)
        frames: list[Any] = []
        session = driver.session("plain consumer", frames.append)
        try:
            session.call("subscribe", destination=driver.destination(queue), id="plain", ack="auto")
            wait_for(lambda: bool(frames), timeout=self.receive_timeout)
        finally:
            session.close()
        frame = frames[0]
        assert frame.body == b'{"a": 1}'
        assert frame.headers["content-type"] == "application/json"
        assert frame.headers["x-trace"] == "t1"
        assert frame.headers["kq-message-id"] == sent.message_id
        assert frame.headers["kq_routing_key"] == "app.echo"


def _cut(consumer: StompConsumer) -> None:
    """Cut a consumer's connection under it, as a broker restart or a network failure would."""
    transport = consumer._session.connection.transport
    transport.socket.shutdown(socket.SHUT_RDWR)
    wait_for(lambda: consumer._session.lost is not None, timeout=5.0)


class TestActiveMQDriver(
    _Stomp,
    StompBehaviour,
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
    """The whole suite on ActiveMQ Classic, scheduler on."""

    @pytest.fixture(autouse=True)
    def _broker(self, stomp_activemq: StompBroker) -> None:
        self.broker = stomp_activemq

    def inject_malformed(self, driver: Driver, queue: str) -> int:
        """Send with a plain connection what kq's producers never send (see FOREIGN)."""
        return _inject(driver, queue)


class TestRabbitMQStompDriver(
    _Stomp,
    StompBehaviour,
    BasicConformance,
    OrderingConformance,
    RoutingConformance,
    TTLConformance,
    QueueManagerConformance,
    ConsumeLoopConformance,
    FailureHandlingConformance,
    SigningConformance,
):
    """The suite on RabbitMQ's STOMP plugin (no delays: DelayConformance does not apply)."""

    @pytest.fixture(autouse=True)
    def _broker(self, stomp_rabbitmq: StompBroker) -> None:
        self.broker = stomp_rabbitmq

    def inject_malformed(self, driver: Driver, queue: str) -> int:
        """Send with a plain connection what kq's producers never send (see FOREIGN)."""
        return _inject(driver, queue)


#: Frames other STOMP clients may send: no kq message id nor content type (a PHP producer's console
#: command, readable: consumed), a body that is not UTF-8 under a JSON content type, and headers kq
#: never writes (names outside the portable syntax).
FOREIGN: list[tuple[bytes, dict[str, str]]] = [
    (b'{"command": "app:echo", "arguments": ["hi"], "options": {}}', {}),
    (b"\xff\xfe\x00", {"content-type": "application/json"}),
    (b'"odd header names"', {"content-type": "application/json", "x odd name": "1", "x/slash": "2"}),
]


def _inject(driver: Driver, queue: str) -> int:
    assert isinstance(driver, StompDriver)
    session = driver.session("inject malformed")
    try:
        destination = driver.destination(queue)
        for number, (body, headers) in enumerate(FOREIGN):
            session.send(destination, body, {**headers, "receipt": f"inject-{number}"})
        confirmed, error = session.wait_receipts([f"inject-{n}" for n in range(len(FOREIGN))], 10.0)
        assert error is None, error
        assert len(confirmed) == len(FOREIGN), confirmed
    finally:
        session.close()
    return len(FOREIGN)
