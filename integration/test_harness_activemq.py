"""The ActiveMQ harness itself: the broker it starts speaks STOMP 1.2 to plain stomp.py, has the scheduler
and the statistics plugin, drops expired messages instead of dead-lettering them, reports a broken
configuration with its log, and stops cleanly.

The broker is the session's (``stomp_fixture.py``); the last tests stop and start it again. One test
also checks the ``stomp`` fixture itself on each STOMP broker of the run (RabbitMQ's STOMP plugin too).
"""

from __future__ import annotations

import json
import queue
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import stomp  # type: ignore[import-untyped, unused-ignore]

from integration.brokers import BrokerStartError, PortInUseError, port_in_use
from integration.brokers.activemq import ActiveMQ, stomp_answers
from integration.stomp_fixture import StompBrokers, StompEndpoint, stomp_targets

pytestmark = pytest.mark.stomp

#: How long a test waits for a frame it expects.
WAIT = 10.0


@pytest.fixture
def activemq(stomp_brokers: StompBrokers, request: pytest.FixtureRequest) -> StompEndpoint:
    """The session's ActiveMQ (started on first use), or the one ``KQ_TEST_STOMP_ACTIVEMQ`` names."""
    if "activemq" not in stomp_targets():
        pytest.skip("ActiveMQ is not among the STOMP brokers of this run (KQ_TEST_STOMP_BROKERS)")
    return stomp_brokers.endpoint("activemq", request)


@pytest.fixture
def own_broker(activemq: StompEndpoint) -> ActiveMQ:
    """The ActiveMQ the harness started; skips for one named in the environment."""
    if not isinstance(activemq.broker, ActiveMQ):
        pytest.skip("needs the ActiveMQ started by the harness, but KQ_TEST_STOMP_ACTIVEMQ is set")
    return activemq.broker


@dataclass
class Frames(stomp.ConnectionListener):  # type: ignore[misc]
    """Collects what the broker sends: messages in a queue, receipts and errors in lists."""

    messages: queue.Queue[tuple[dict[str, str], str]] = field(default_factory=queue.Queue)
    receipts: queue.Queue[str] = field(default_factory=queue.Queue)
    errors: list[str] = field(default_factory=list)

    def on_message(self, frame: Any) -> None:
        self.messages.put((dict(frame.headers), frame.body))

    def on_receipt(self, frame: Any) -> None:
        self.receipts.put(frame.headers["receipt-id"])

    def on_error(self, frame: Any) -> None:
        self.errors.append(f"{frame.headers.get('message')}: {frame.body}")

    def next_message(self, timeout: float = WAIT) -> tuple[dict[str, str], str]:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout} s (errors: {self.errors})") from None

    def no_message(self, within: float) -> None:
        try:
            headers, body = self.messages.get(timeout=within)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message {body!r} with {headers}")


@dataclass
class Client:
    """A plain stomp.py 1.2 connection and what it received."""

    connection: Any
    frames: Frames

    def send(self, destination: str, body: str = "", **headers: str) -> None:
        """SEND with a receipt, and wait for it: the broker has the message when this returns."""
        receipt = uuid.uuid4().hex
        self.connection.send(destination, body, headers={"persistent": "true", **headers, "receipt": receipt})
        try:
            got = self.frames.receipts.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(
                f"no receipt for a SEND to {destination} (errors: {self.frames.errors})"
            ) from None
        assert got == receipt

    def subscribe(self, destination: str, ack: str = "auto", **headers: str) -> str:
        subscription = uuid.uuid4().hex
        self.connection.subscribe(destination, subscription, ack=ack, headers=headers)
        return subscription


@contextmanager
def client(endpoint: StompEndpoint) -> Iterator[Client]:
    connection = stomp.Connection12(
        [(endpoint.host, endpoint.port)], reconnect_attempts_max=1, vhost=endpoint.vhost
    )
    frames = Frames()
    connection.set_listener("frames", frames)
    connection.connect(endpoint.login, endpoint.passcode, wait=True)
    try:
        yield Client(connection, frames)
    finally:
        connection.disconnect()


def fresh_queue() -> str:
    return f"kq-harness-{uuid.uuid4().hex[:12]}"


def destination_stats(endpoint: StompEndpoint, queue_name: str) -> dict[str, Any]:
    """The statistics plugin's answer for ``queue_name``, as a flat dict (``size``, ``enqueueCount``...)."""
    with client(endpoint) as c:
        reply_to = f"/temp-queue/stats-{uuid.uuid4().hex[:8]}"
        c.subscribe(reply_to, transformation="jms-map-json")
        c.send(
            f"/queue/ActiveMQ.Statistics.Destination.{queue_name}",
            "",
            persistent="false",
            **{"reply-to": reply_to},
        )
        _, body = c.frames.next_message()
    return stats_map(body)


def stats_map(body: str) -> dict[str, Any]:
    """Flatten xstream's map JSON: ``{"map": {"entry": [{"string": "size", "long": 3}, ...]}}``."""
    result: dict[str, Any] = {}
    for entry in json.loads(body)["map"]["entry"]:
        key = entry["string"]
        if isinstance(key, list):  # a string value: {"string": ["destinationName", "queue://x"]}
            result[key[0]] = key[1]
        else:
            result[key] = next(value for name, value in entry.items() if name != "string")
    return result


def browse(c: Client, destination: str, selector: str) -> list[dict[str, str]]:
    """The headers of the messages in ``destination`` that match ``selector``, without consuming them."""
    c.subscribe(destination, browser="true", selector=selector)
    found: list[dict[str, str]] = []
    while True:
        headers, _ = c.frames.next_message()
        if headers.get("browser") == "end":
            return found
        found.append(headers)


def test_plain_stomp_client_sends_and_receives(activemq: StompEndpoint) -> None:
    destination = f"/queue/{fresh_queue()}"
    with client(activemq) as c:
        c.send(destination, "hello", **{"content-type": "text/plain", "kq_probe": "one"})
        c.subscribe(destination, ack="client-individual")
        headers, body = c.frames.next_message()
        assert body == "hello"
        assert headers["kq_probe"] == "one"
        assert headers["persistent"] == "true"
        assert "redelivered" not in headers  # ActiveMQ only adds it on a redelivery
        c.connection.ack(headers["ack"])
        c.frames.no_message(within=0.5)
    assert not c.frames.errors


def test_statistics_plugin_reports_the_queue_depth(activemq: StompEndpoint) -> None:
    name = fresh_queue()
    with client(activemq) as c:
        for i in range(3):
            c.send(f"/queue/{name}", f"m{i}")
    stats = destination_stats(activemq, name)
    assert stats["size"] == 3, stats
    assert stats["enqueueCount"] == 3, stats
    assert stats["consumerCount"] == 0, stats
    assert stats["destinationName"] == f"queue://{name}", stats


def test_scheduler_delays_a_message(activemq: StompEndpoint) -> None:
    destination = f"/queue/{fresh_queue()}"
    with client(activemq) as c:
        c.subscribe(destination)
        sent = time.monotonic()
        c.send(destination, "later", AMQ_SCHEDULED_DELAY="1500")
        c.send(destination, "now")
        headers, body = c.frames.next_message()
        assert body == "now", "the delayed message came first: is schedulerSupport on?"
        assert time.monotonic() - sent < 1.0
        headers, body = c.frames.next_message()
        assert body == "later"
        assert time.monotonic() - sent >= 1.4, "AMQ_SCHEDULED_DELAY was ignored"
        assert "scheduledJobId" in headers


def test_expired_messages_are_dropped_not_dead_lettered(activemq: StompEndpoint) -> None:
    """``processExpired="false"``: an expired persistent message does not reach ActiveMQ.DLQ, while a
    NACKed one still does (which shows that the browse below would find it)."""
    name = fresh_queue()
    probe = uuid.uuid4().hex
    with client(activemq) as c:
        expires = int(time.time() * 1000) + 300
        c.send(f"/queue/{name}", "expiring", expires=str(expires), kq_probe=probe, kq_case="expired")
        c.send(f"/queue/{name}", "nacked", kq_probe=probe, kq_case="nacked")
        time.sleep(1.0)
        c.subscribe(f"/queue/{name}", ack="client-individual")
        headers, body = c.frames.next_message()
        assert body == "nacked", "the expired message was delivered"
        c.connection.nack(headers["ack"])
        c.frames.no_message(within=0.5)
    stats = destination_stats(activemq, name)
    assert stats["size"] == 0, stats
    assert stats["expiredCount"] == 1, stats
    deadline = time.monotonic() + WAIT
    while True:
        with client(activemq) as c:
            cases = [h["kq_case"] for h in browse(c, "/queue/ActiveMQ.DLQ", f"kq_probe = '{probe}'")]
        if "nacked" in cases or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert cases == ["nacked"], f"ActiveMQ.DLQ holds {cases} of this test's messages"
    with client(activemq) as c:  # leave the shared DLQ as it was
        c.subscribe("/queue/ActiveMQ.DLQ", selector=f"kq_probe = '{probe}'")
        c.frames.next_message()


def test_a_taken_port_is_an_error_naming_it(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        broker = ActiveMQ(workdir=tmp_path, stomp_port=port, openwire_port=port + 1 if port < 65535 else 1)
        with pytest.raises(PortInUseError, match=rf"port {port} \(stomp\).*KQ_TEST_ACTIVEMQ_STOMP_PORT"):
            broker.start()
    assert not broker.running


def test_ports_are_checked_when_built(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must differ"):
        ActiveMQ(workdir=tmp_path, stomp_port=61614, openwire_port=61614)
    with pytest.raises(ValueError, match="openwire_port must be between 1 and 65535"):
        ActiveMQ(workdir=tmp_path, openwire_port=70000)


def test_stomp_fixture_gives_a_working_broker_and_its_driver_table(stomp: StompEndpoint) -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    destination = f"/queue/{fresh_queue()}"
    with client(stomp) as c:
        c.send(destination, "over stomp", kq_probe="fixture")
        c.subscribe(destination, ack="client-individual")
        headers, body = c.frames.next_message()
        assert (body, headers["kq_probe"]) == ("over stomp", "fixture")
        c.connection.ack(headers["ack"])
    table = tomllib.loads(stomp.driver_table(prefetch=1, scheduler=False))["drivers"]["mq"]
    assert table["type"] == "stomp"
    assert table["flavour"] == stomp.flavour == stomp.name
    assert table["hosts"] == [f"{stomp.host}:{stomp.port}"]
    assert table["prefetch"] == 1
    assert table["scheduler"] is False  # an option given replaces the default
    if stomp.flavour == "rabbitmq":
        assert (table["login"], table["passcode"], table["vhost"]) == ("guest", "guest", "/")
        assert table["management_url"] == stomp.management_url
        assert stomp.management_url is None or stomp.management_url.startswith("http://")
    else:
        assert "management_url" not in table
        assert tomllib.loads(stomp.driver_table())["drivers"]["mq"]["scheduler"] is True


# The tests below stop and start the session's broker: they come last.


def test_stop_and_start_keep_persistent_messages(activemq: StompEndpoint, own_broker: ActiveMQ) -> None:
    destination = f"/queue/{fresh_queue()}"
    with client(activemq) as c:
        c.send(destination, "kept")
        c.send(destination, "lost", persistent="false")
    pid = own_broker.pid
    own_broker.start()  # a no-op while it runs
    assert own_broker.pid == pid
    started = time.monotonic()
    own_broker.stop()
    stopped_in = time.monotonic() - started
    assert not own_broker.running
    assert not Path(f"/proc/{pid}").exists(), f"ActiveMQ (PID {pid}) still runs after stop()"
    assert not port_in_use(own_broker.stomp_port)
    assert not port_in_use(own_broker.openwire_port)
    own_broker.stop()  # a second stop is a no-op
    assert stopped_in < own_broker.stop_grace, "the JVM had to be killed"
    own_broker.start()
    assert own_broker.pid not in (None, pid)  # a new JVM
    assert stomp_answers(own_broker.stomp_port)
    with client(activemq) as c:
        c.subscribe(destination)
        _, body = c.frames.next_message()
        assert body == "kept"
        c.frames.no_message(within=0.5)  # the non-persistent one did not survive: the broker really stopped


class _BadPort(ActiveMQ):
    """A broker whose STOMP connector names a port that does not exist."""

    def config(self) -> str:
        return super().config().replace(f"127.0.0.1:{self.stomp_port}?", "127.0.0.1:99999?")


def test_a_config_error_is_reported_with_the_log(own_broker: ActiveMQ, tmp_path: Path) -> None:
    # Same ports as the session's broker (the machine runs one ActiveMQ at a time): stop it meanwhile.
    own_broker.stop()
    try:
        broken = _BadPort(
            workdir=tmp_path,
            stomp_port=own_broker.stomp_port,
            openwire_port=own_broker.openwire_port,
            timeout=60.0,
        )
        started = time.monotonic()
        with pytest.raises(BrokerStartError) as raised:
            broken.start()
        assert time.monotonic() - started < 30.0, "the wait loop did not notice that the JVM exited"
        message = str(raised.value)
        assert "ActiveMQ exited with code" in message
        assert f"--- first errors in {broken.log_file} ---" in message
        assert "Port value out of range: 99999" in message
        assert not broken.running
        assert not port_in_use(own_broker.openwire_port), "the failed broker left its OpenWire port taken"
        broken.stop()
    finally:
        own_broker.start()
