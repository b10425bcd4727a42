"""The RabbitMQ driver without a broker: configuration, topology naming, delivery mapping."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pika
import pika.spec
import pytest
from click.testing import CliRunner

from kq.cli import EXIT_UNAVAILABLE, cli
from kq.core import BrokerUnavailableError, ConfigError, DriverSpec, QueueSpec, load_driver_class
from kq.drivers.rabbitmq import RabbitMQDriver
from kq.drivers.rabbitmq._consumer import RabbitMQConsumer
from kq.drivers.rabbitmq._topology import Topology


def _driver(queues: list[QueueSpec] | None = None, **options: Any) -> RabbitMQDriver:
    return RabbitMQDriver(
        DriverSpec(name="rabbit", type="rabbitmq", options=options, source="kq.toml"), queues or []
    )


def _queue(name: str = "demo", routing_keys: tuple[str, ...] = (), **options: Any) -> QueueSpec:
    return QueueSpec(name=name, driver="rabbit", routing_keys=routing_keys, options=options, source="kq.toml")


def test_registered_as_rabbitmq() -> None:
    assert load_driver_class("rabbitmq") is RabbitMQDriver
    assert RabbitMQDriver.capabilities.routing_keys == "native"
    assert "setup" in RabbitMQDriver.capabilities.queue_actions


def test_url_gives_host_port_vhost_and_credentials() -> None:
    driver = _driver(url="amqp://user:secret@broker.example:5673/jobs", heartbeat=15)
    parameters = driver.parameters
    assert (parameters.host, parameters.port, parameters.virtual_host) == ("broker.example", 5673, "jobs")
    assert parameters.credentials.username == "user"
    assert parameters.heartbeat == 15
    assert parameters.connection_attempts == 1
    assert driver.describe() == "broker.example:5673/jobs"
    assert "secret" not in driver.describe()


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({"url": "http://host/"}, "drivers.rabbit.url", "must start with amqp:// or amqps://"),
        ({"heartbeat": -1}, "drivers.rabbit.heartbeat", "must not be negative"),
        ({"heartbeat": "often"}, "drivers.rabbit.heartbeat", "expected int"),
        ({"confirm_timeout": 0}, "drivers.rabbit.confirm_timeout", "greater than zero"),
        ({"tls_ca_file": "/nonexistent/ca.pem"}, "drivers.rabbit.tls_ca_file", "cannot set up TLS"),
        ({"vhost": "x"}, "drivers.rabbit.vhost", "unknown option"),
    ],
)
def test_bad_driver_options_name_the_key(options: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        _driver(**options)
    assert caught.value.key == key
    assert caught.value.source == "kq.toml"


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({"exchange": ""}, "queues.demo.exchange", "default exchange cannot route"),
        ({"exchange_type": "fan"}, "queues.demo.exchange_type", "must be one of topic"),
        ({"queue_type": "lazy"}, "queues.demo.queue_type", "must be one of classic"),
        ({"queue_arguments": "x"}, "queues.demo.queue_arguments", "expected dict"),
        ({"prefetch": 3}, "queues.demo.prefetch", "unknown option"),
    ],
)
def test_bad_queue_options_name_the_key(options: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        _driver([_queue(**options)])
    assert caught.value.key == key


def test_amqps_url_sets_up_tls() -> None:
    driver = _driver(url="amqps://u:p@broker.example:5671/%2F", tls_verify=False)
    assert driver.parameters.ssl_options is not None


def test_default_topology_is_an_exchange_and_queue_named_after_the_logical_queue() -> None:
    driver = _driver([_queue("demo")])
    topology = Topology.of(driver.queue("demo"))
    assert (topology.exchange, topology.exchange_type, topology.queue) == ("demo", "topic", "demo")
    assert topology.bindings == ("#",)
    assert (topology.exchange_durable, topology.queue_durable, topology.passive) == (True, True, False)


def test_configured_topology() -> None:
    spec = _queue(
        "hello",
        routing_keys=("hello.*", "bonjour.#"),
        exchange="jobs",
        queue_name="jobs.hello",
        queue_type="quorum",
        queue_arguments={"x-max-length": 10},
    )
    topology = Topology.of(_driver([spec]).queue("hello"))
    assert (topology.exchange, topology.queue) == ("jobs", "jobs.hello")
    assert topology.bindings == ("hello.*", "bonjour.#")
    assert topology.queue_arguments == {"x-max-length": 10, "x-queue-type": "quorum"}


def test_consumer_routing_key_override_reads_a_queue_of_its_own() -> None:
    spec = _driver([_queue("demo")]).queue("demo")
    assert Topology.of(spec, ("#",)).queue == "demo"  # same as configured: the queue itself
    override = Topology.of(spec, ("hello.*",))
    assert (override.queue, override.exchange, override.bindings) == ("demo[hello.*]", "demo", ("hello.*",))


def test_unconfigured_queues_are_created_on_demand() -> None:
    spec = _driver().queue("adhoc")
    assert not spec.configured
    assert Topology.of(spec).queue == "adhoc"


def _deliver(
    redelivered: bool = False, headers: dict[str, Any] | None = None, message_id: str | None = "m1"
) -> tuple[pika.spec.Basic.Deliver, pika.BasicProperties]:
    method = pika.spec.Basic.Deliver(delivery_tag=7, redelivered=redelivered, routing_key="a.b")
    properties = pika.BasicProperties(content_type="application/json", headers=headers, message_id=message_id)
    return method, properties


@pytest.mark.parametrize(
    ("redelivered", "headers", "count"),
    [
        (False, None, 1),
        (True, None, 2),
        (True, {"x-delivery-count": 4}, 5),  # quorum queues count earlier deliveries
        (False, {"x-delivery-count": 0}, 1),
    ],
)
def test_delivery_count(redelivered: bool, headers: dict[str, Any] | None, count: int) -> None:
    method, properties = _deliver(redelivered, headers)
    delivery = RabbitMQConsumer._delivery(_bare_consumer(), method, properties, b"{}")
    assert delivery.delivery_count == count
    assert (delivery.handle, delivery.routing_key, delivery.queue) == (7, "a.b", "demo")


def test_foreign_headers_become_text_and_missing_ids_are_stable() -> None:
    method, properties = _deliver(headers={"n": 3, "b": b"raw", "t": True, "s": "x"}, message_id=None)
    consumer = _bare_consumer()
    first = RabbitMQConsumer._delivery(consumer, method, properties, b'{"command": "x"}')
    again = RabbitMQConsumer._delivery(consumer, method, properties, b'{"command": "x"}')
    assert first.headers == {"n": "3", "b": "raw", "t": "True", "s": "x"}
    assert first.message_id == again.message_id
    assert first.message_id.startswith("sha256-")


def _bare_consumer() -> RabbitMQConsumer:
    # _delivery only needs the logical queue: skip __init__, which connects.
    consumer = RabbitMQConsumer.__new__(RabbitMQConsumer)
    consumer.queue = _queue("demo")
    return consumer


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_broker_is_named_without_credentials() -> None:
    driver = _driver(url=f"amqp://kq:hunter2-secret@127.0.0.1:{_closed_port()}/%2F")
    with pytest.raises(BrokerUnavailableError) as caught:
        driver.connect()
    message = str(caught.value)
    assert message.startswith("cannot connect to RabbitMQ at 127.0.0.1:")
    assert message.endswith("/%2F (driver rabbit): connection refused")
    assert "hunter2" not in message
    # A ConnectionError, so consume loops and producers treat it as a connection to retry.
    assert isinstance(caught.value, RabbitMQDriver.connection_errors)


def test_cli_reports_an_unreachable_broker_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kq.toml").write_text(
        f'[drivers.rabbit]\ntype = "rabbitmq"\nurl = "amqp://kq:hunter2-secret@127.0.0.1:{_closed_port()}/%2F"\n'
    )
    result = CliRunner().invoke(cli, ["managequeue", "info", "jobs", "-i", "rabbit"])
    assert result.exit_code == EXIT_UNAVAILABLE
    assert result.output.startswith("kq: error: cannot connect to RabbitMQ at 127.0.0.1:")
    assert "connection refused" in result.output
    assert "hunter2" not in result.output


def test_queues_sharing_an_exchange_accept_each_others_signatures() -> None:
    """Found in review: sources() was the queue alone, so a message signed for `first` that the broker
    routed into `second` was refused there as bad-signature."""
    driver = _driver(
        [_queue("first", exchange="shared"), _queue("second", exchange="shared"), _queue("alone")]
    )
    assert driver.sources("second") == {"first", "second"}
    assert driver.sources("first") == {"first", "second"}
    assert driver.sources("alone") == {"alone"}
    assert driver.sources("unconfigured") == {"unconfigured"}


def test_broker_bookkeeping_headers_are_not_the_producers() -> None:
    """Found by the integration test of signed retries: the x-death headers RabbitMQ adds when a delay
    queue dead-letters a copy back broke its signature."""
    consumer = object.__new__(RabbitMQConsumer)
    consumer.queue = _queue()
    method = pika.spec.Basic.Deliver(delivery_tag=1, routing_key="k", redelivered=False)
    properties = pika.BasicProperties(
        headers={"x-death": [{"count": 1}], "x-first-death-queue": "kq.delay", "x-user": "ops"},
        message_id="m1",
        content_type="application/json",
    )
    delivery = consumer._delivery(method, properties, b"{}")
    assert delivery.headers == {"x-user": "ops"}
