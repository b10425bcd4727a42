"""The RabbitMQ driver without a broker: configuration, topology naming, delivery mapping."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import socket
import time
from pathlib import Path
from typing import Any

import pika
import pika.spec
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kq.cli import EXIT_UNAVAILABLE, cli
from kq.core import BrokerUnavailableError, ConfigError, Delivery, Message, PublishError, Signer, Verifier
from kq.core.driver import DriverSpec, QueueSpec, is_portable_header_name
from kq.core.plugins import load_driver_class
from kq.drivers.rabbitmq import RabbitMQDriver, _consumer
from kq.drivers.rabbitmq._consumer import RabbitMQConsumer
from kq.drivers.rabbitmq._producer import RabbitMQProducer
from kq.drivers.rabbitmq._topology import Topology

#: The fake connection's poll sleeps for real (the producer tests replace ``time.sleep``, the backoff).
_real_sleep = time.sleep


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
        ({"heartbeat": "often"}, "drivers.rabbit.heartbeat", "expected a duration"),
        ({"confirm_timeout": 0}, "drivers.rabbit.confirm_timeout", r"between 0 \(excluded\)"),
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
    assert first.headers == {"n": "3", "b": "raw", "t": "true", "s": "x"}
    assert first.defect is None
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


# What other AMQP clients put in a message, as pika hands it over: every shape goes through pika's own
# wire encoding and decoding, so the tests see what a consumer sees (pika decodes bytes that are not
# UTF-8 as bytes, floats as integers, timestamps as aware datetimes).


def _wire(
    headers: dict[Any, Any] | None = None,
    *,
    routing_key: str | bytes = "a.b",
    content_type: str | bytes | None = "application/json",
    message_id: str | bytes | None = "m1",
    redelivered: bool = False,
) -> Delivery:
    method = pika.spec.Basic.Deliver(
        consumer_tag="ctag", delivery_tag=7, redelivered=redelivered, exchange="x", routing_key=routing_key
    )
    properties = pika.BasicProperties(content_type=content_type, message_id=message_id, headers=headers)
    decoded_method = pika.spec.Basic.Deliver()
    decoded_method.decode(b"".join(method.encode()))
    decoded_properties = pika.spec.BasicProperties()
    decoded_properties.decode(b"".join(properties.encode()))
    return RabbitMQConsumer._delivery(_bare_consumer(), decoded_method, decoded_properties, b'"body"')


_NOON = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain ✓", "plain ✓"),
        ("", ""),
        (42, "42"),
        (-(2**63), str(-(2**63))),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        (decimal.Decimal("3.14"), "3.14"),
        (decimal.Decimal("-0.001"), "-0.001"),
        (decimal.Decimal("7"), "7"),
        (_NOON, "2024-05-01T12:00:00+00:00"),
        (b"bytes that are UTF-8 \xe2\x9c\x93", "bytes that are UTF-8 ✓"),
        (b"", ""),
        ({"a": 1, "b": [True, None, "x"]}, '{"a": 1, "b": [true, null, "x"]}'),
        ([], "[]"),
        ({}, "{}"),
        ([decimal.Decimal("1.5"), _NOON, b"raw"], '["1.5", "2024-05-01T12:00:00+00:00", "raw"]'),
        ({"deep": {"er": {"est": ["ü"]}}}, '{"deep": {"er": {"est": ["ü"]}}}'),
    ],
)
def test_typed_header_values_become_text_deterministically(value: Any, text: str) -> None:
    delivery = _wire({"h": value})
    assert delivery.headers == {"h": text}
    assert delivery.defect is None


def test_float_and_unknown_values_read_without_the_wire() -> None:
    """pika cannot encode floats (and decodes AMQP floats as integers); other clients' libraries may hand
    over floats, or types kq does not know: never an exception."""
    method, properties = _deliver(headers={"f": 2.5, "nan": float("nan"), "weird": object()})
    delivery = RabbitMQConsumer._delivery(_bare_consumer(), method, properties, b"{}")
    assert delivery.headers["f"] == "2.5"
    assert delivery.headers["nan"] == "NaN"
    assert delivery.headers["weird"].startswith("<object object")
    assert delivery.defect == "header 'weird': a value of type object"


def test_header_names_with_spaces_and_unicode_are_kept() -> None:
    """kq's producers cannot send them, but they are readable: the loop keeps them (a dead letter moves
    them into kq-dead-letter-foreign-headers), and a signature check refuses them."""
    delivery = _wire({"X Php Trace": "abc", "naïve ✓": 1, "": "empty name"})
    assert delivery.headers == {"X Php Trace": "abc", "naïve ✓": "1", "": "empty name"}
    assert delivery.defect is None


@pytest.mark.parametrize(
    ("headers", "defect"),
    [
        ({"h": b"\xff\xfe binary"}, "header 'h': 9 bytes that are not UTF-8 text"),
        ({"h": {"k": [b"\x80"]}}, "header 'h': 1 bytes that are not UTF-8 text"),
        ({b"\xffname": "v"}, "header name b'\\xffname' is not UTF-8 text"),
        ({"h": {b"\xff": 1}}, "header 'h': header name b'\\xff' is not UTF-8 text"),
        ({"kq-routing-key": b"\xff"}, "its kq-routing-key header holds b'\\xff', not a routing key"),
        (
            {"kq-routing-key": {"a": 1}},
            "its kq-routing-key header holds a table of 1 entries, not a routing key",
        ),
        ({"kq-routing-key": 5}, "its kq-routing-key header holds 5, not a routing key"),
        ({"kq-routing-key": "k" * 256}, "its kq-routing-key header holds 'kkkk"),
        ({"kq-redelivery": "three"}, "its kq-redelivery header holds 'three', not a delivery count"),
        ({"kq-redelivery": "²"}, "its kq-redelivery header holds '²', not a delivery count"),
        ({"kq-redelivery": "9" * 5000}, "its kq-redelivery header holds '99999"),
        ({"kq-redelivery": "-1"}, "its kq-redelivery header holds '-1', not a delivery count"),
        ({"kq-redelivery": 3}, "its kq-redelivery header holds 3, not a delivery count"),
        ({"kq-redelivery": b"3"}, "its kq-redelivery header holds b'3', not a delivery count"),
        ({"kq-redelivery": [1]}, "its kq-redelivery header holds an array of 1 items, not a delivery count"),
    ],
)
def test_what_has_no_faithful_text_is_a_defect(headers: dict[Any, Any], defect: str) -> None:
    delivery = _wire(headers)
    assert delivery.defect is not None
    assert delivery.defect.startswith(defect)
    # Salvaged: everything is text, the driver's bookkeeping is taken off, the routing key is the broker's.
    assert all(isinstance(n, str) and isinstance(v, str) for n, v in delivery.headers.items())
    assert "kq-routing-key" not in delivery.headers
    assert "kq-redelivery" not in delivery.headers
    assert delivery.routing_key == "a.b"
    assert delivery.delivery_count == 1


def test_unreadable_values_are_salvaged_with_escapes() -> None:
    delivery = _wire({b"n\xff": b"v\xfe", "t": {"k": b"\x80"}})
    assert delivery.headers == {"n\\xff": "v\\xfe", "t": '{"k": "\\\\x80"}'}


def test_too_deeply_nested_tables_are_a_defect() -> None:
    nested: dict[str, Any] = {"leaf": 1}
    for _ in range(40):
        nested = {"n": nested}
    delivery = _wire({"deep": nested})
    assert delivery.defect == "header 'deep': tables or arrays nested deeper than 32 levels"
    assert delivery.headers["deep"].count('{"n": ') == 32


@pytest.mark.parametrize(
    ("kwargs", "defect", "field", "salvaged"),
    [
        ({"routing_key": b"\xff.bin"}, "its routing key b'\\xff.bin' is not UTF-8 text", "routing_key", ""),
        (
            {"content_type": b"text/\xff"},
            "its content type b'text/\\xff' is not UTF-8 text",
            "content_type",
            "application/octet-stream",
        ),
        ({"message_id": b"\xfe\xff"}, "its message id b'\\xfe\\xff' is not UTF-8 text", "message_id", None),
    ],
)
def test_binary_properties_are_a_defect(
    kwargs: dict[str, Any], defect: str, field: str, salvaged: Any
) -> None:
    delivery = _wire(**kwargs)
    assert delivery.defect == defect
    value = getattr(delivery, field)
    if salvaged is None:
        assert value.startswith("sha256-")  # like a message without an id
    else:
        assert value == salvaged


@pytest.mark.parametrize(
    ("kwargs", "content_type", "message_id"),
    [
        ({"content_type": None}, "", "m1"),
        (
            {"content_type": 'application/json; charset="utf-8"; x=(y); ;'},
            'application/json; charset="utf-8"; x=(y); ;',
            "m1",
        ),
        ({"message_id": None}, "application/json", None),
        ({"message_id": ""}, "application/json", None),
    ],
)
def test_missing_or_odd_properties_are_readable(
    kwargs: dict[str, Any], content_type: str, message_id: str | None
) -> None:
    delivery = _wire(**kwargs)
    assert delivery.defect is None
    assert delivery.content_type == content_type
    if message_id is None:
        assert delivery.message_id.startswith("sha256-")
    else:
        assert delivery.message_id == message_id


@pytest.mark.parametrize("value", ["3", b"3", decimal.Decimal("2.5"), True, -1, {"n": 3}, [3], None])
def test_an_x_delivery_count_of_the_wrong_type_is_ignored(value: Any) -> None:
    """Only RabbitMQ writes x-delivery-count, as a non-negative integer: anything else (a foreign
    producer's) does not decide the count, and is taken off like the broker's."""
    assert _wire({"x-delivery-count": value}, redelivered=True).delivery_count == 2
    delivery = _wire({"x-delivery-count": value, "x-user": "ops"})
    assert (delivery.delivery_count, delivery.headers, delivery.defect) == (1, {"x-user": "ops"}, None)


def test_the_drivers_bookkeeping_is_read_when_it_is_its_own() -> None:
    delivery = _wire({"kq-routing-key": "orders.new", "kq-redelivery": "4", "x-user": "ops"})
    assert (delivery.routing_key, delivery.delivery_count) == ("orders.new", 5)
    assert (delivery.headers, delivery.defect) == ({"x-user": "ops"}, None)


def test_a_huge_header_table_is_read() -> None:
    headers = {f"h{i:04d}": "v" * 20 for i in range(3000)}
    delivery = _wire(headers)
    assert delivery.headers == headers
    assert delivery.defect is None


def test_a_bug_in_reading_a_delivery_still_hands_it_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """_delivery runs in pika's callback: an exception there would escape receive()."""

    def broken(*args: Any) -> Delivery:
        raise RuntimeError("boom")

    monkeypatch.setattr(_consumer, "read_delivery", broken)
    method, properties = _deliver(redelivered=True)
    delivery = RabbitMQConsumer._delivery(_bare_consumer(), method, properties, b"kept")
    assert delivery.defect == "the RabbitMQ driver could not read it (RuntimeError: boom)"
    assert (delivery.body, delivery.handle, delivery.delivery_count) == (b"kept", 7, 2)


def test_kqs_own_messages_keep_their_signatures() -> None:
    """kq sends string headers only: taken as they are, a signature still verifies."""
    key = b"k" * 32
    message = Message(
        "héllo ✓".encode(),
        content_type="text/plain; charset=utf-8",
        routing_key="signed.trip",
        headers={"x-user": "ops ✓", "x-empty": "", "x-number": "42", "x-true": "true"},
    )
    signed = Signer("k1", key).sign(message, "demo")
    method = pika.spec.Basic.Deliver(delivery_tag=1, routing_key=signed.routing_key)
    properties = pika.spec.BasicProperties()
    properties.decode(
        b"".join(
            pika.BasicProperties(
                content_type=signed.content_type, headers=dict(signed.headers), message_id=signed.message_id
            ).encode()
        )
    )
    delivery = RabbitMQConsumer._delivery(_bare_consumer(), method, properties, signed.body)
    assert delivery.headers == dict(signed.headers)
    assert delivery.defect is None
    Verifier({"k1": key}, max_age=600).verify(delivery, ["demo"])


_SHORT = st.text(max_size=20).filter(lambda t: len(t.encode()) <= 255) | st.binary(max_size=20)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-(10**5), max_value=10**5)
    | st.datetimes(min_value=datetime.datetime(1971, 1, 1), max_value=datetime.datetime(9999, 1, 1))
    | st.text(max_size=30)
    | st.binary(max_size=30)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_SHORT, children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers=st.dictionaries(_SHORT, _VALUES, max_size=6), routing_key=_SHORT, content_type=_SHORT | st.none()
)
def test_whatever_pika_hands_over_reads_and_can_be_dead_lettered(
    headers: dict[Any, Any], routing_key: str | bytes, content_type: str | bytes | None
) -> None:
    """Any header table pika can carry: reading never raises, every header is text, and the message
    can be published again as a dead letter (what the consume loop does with a malformed one)."""
    delivery = _wire(headers, routing_key=routing_key, content_type=content_type)
    assert all(isinstance(n, str) and isinstance(v, str) for n, v in delivery.headers.items())
    # The consume loop's dead letter: portable names as headers, the others as one JSON header.
    portable = {n: v for n, v in delivery.headers.items() if is_portable_header_name(n)}
    copy = delivery.to_message(headers=portable)
    properties = pika.BasicProperties(
        content_type=copy.content_type, headers=dict(copy.headers), message_id=copy.message_id
    )
    b"".join(properties.encode())  # raises if pika could not publish it
    assert len(copy.routing_key.encode()) <= 255


# --- capabilities per queue (queue type, exchange type) --------------------------------------------------


@pytest.mark.parametrize(
    ("options", "count"),
    [
        ({}, "flag"),  # the broker's default type: classic
        ({"queue_type": "classic"}, "flag"),
        ({"queue_type": "quorum"}, "exact"),  # x-delivery-count
        ({"queue_arguments": {"x-queue-type": "quorum"}}, "exact"),
        ({"queue_type": "classic", "queue_arguments": {"x-queue-type": "quorum"}}, "flag"),  # as declared
        ({"queue_type": "stream"}, "flag"),
    ],
)
def test_the_delivery_count_depends_on_the_queue_type(options: dict[str, Any], count: str) -> None:
    driver = _driver([_queue("demo", **options)])
    capabilities = driver.capabilities_for("demo")
    assert capabilities.delivery_count == count
    assert (capabilities.routing_keys, capabilities.consumer_routing) == ("native", "own-queue")
    assert capabilities.message_ttl is (options.get("queue_type") != "stream")  # streams keep no TTL
    declared = Topology.of(driver.queue("demo")).queue_arguments.get("x-queue-type")
    assert declared == (options.get("queue_type") or options.get("queue_arguments", {}).get("x-queue-type"))


def test_the_type_defaults_are_a_classic_queue_on_a_topic_exchange() -> None:
    from kq.drivers.rabbitmq._driver import MAX_DELAY

    driver = _driver([_queue("demo")])
    assert driver.capabilities_for() is RabbitMQDriver.capabilities
    assert driver.capabilities_for("demo") == RabbitMQDriver.capabilities
    assert RabbitMQDriver.capabilities.delivery_count == "flag"
    assert RabbitMQDriver.capabilities.consumer_routing == "own-queue"
    assert RabbitMQDriver.capabilities.max_publish_delay == MAX_DELAY
    assert RabbitMQDriver.capabilities.max_requeue_delay == MAX_DELAY
    assert driver.capabilities_for("adhoc").delivery_count == "flag"  # unconfigured: created on demand


@pytest.mark.parametrize(
    ("exchange_type", "routing", "consumer"),
    [
        ("topic", "native", "own-queue"),
        ("direct", "native", "own-queue"),
        ("fanout", "none", "none"),
        ("headers", "none", "none"),
    ],
)
def test_routing_depends_on_the_exchange_type(exchange_type: str, routing: str, consumer: str) -> None:
    capabilities = _driver([_queue("demo", exchange_type=exchange_type)]).capabilities_for("demo")
    assert (capabilities.routing_keys, capabilities.consumer_routing) == (routing, consumer)


def test_a_narrower_consumer_key_is_refused_where_routing_keys_route_nothing() -> None:
    from kq.core import UnsupportedOperationError

    driver = _driver([_queue("demo", exchange_type="fanout")])
    with pytest.raises(
        UnsupportedOperationError, match=r"cannot narrow queue 'demo' to routing key 'hello\.\*'"
    ):
        driver.consumer("demo", routing_key="hello.*")  # refused before connecting


def test_stream_queues_are_not_consumed() -> None:
    from kq.core import UnsupportedOperationError

    driver = _driver(
        [_queue("log", queue_type="stream")], url=f"amqp://guest:guest@127.0.0.1:{_closed_port()}/"
    )
    with pytest.raises(UnsupportedOperationError, match="kq does not consume RabbitMQ stream queues"):
        driver.consumer("log")  # refused before connecting: no BrokerUnavailableError


def test_capabilities_are_cached_per_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    from kq.drivers.rabbitmq import _driver as driver_module

    driver = _driver([_queue("a", queue_type="quorum"), _queue("b")])
    computed: list[str] = []
    real = driver_module.queue_capabilities

    def counting(queue: QueueSpec, defaults: Any = None) -> Any:
        computed.append(queue.name)
        return real(queue, defaults)

    monkeypatch.setattr(driver_module, "queue_capabilities", counting)
    first = [driver.capabilities_for(name) for name in ("a", "b", "a", "b", "a")]
    assert computed == ["a", "b"]
    assert first[0] is first[2] is first[4]
    assert (first[0].delivery_count, first[1].delivery_count) == ("exact", "flag")


def test_the_longest_delay_fits_rabbitmqs_ttl_limit() -> None:
    """RabbitMQ refuses an ``x-message-ttl`` or ``x-expires`` above ten years (315,360,000,000 ms,
    measured on 3.10.8); a delay queue's x-expires is its delay plus a margin."""
    from kq.drivers.rabbitmq._delays import EXPIRY_MARGIN_MS, _queue_arguments, step_ms
    from kq.drivers.rabbitmq._driver import MAX_DELAY

    limit = 315_360_000_000
    arguments = _queue_arguments(step_ms(MAX_DELAY), "demo", None)
    assert arguments["x-message-ttl"] <= limit  # type: ignore[operator]
    assert arguments["x-expires"] <= limit  # type: ignore[operator]
    assert step_ms(MAX_DELAY + 1) + EXPIRY_MARGIN_MS > limit  # one second more would be refused
    assert MAX_DELAY == 315_359_700


def test_publishing_past_the_limits_is_refused_before_connecting() -> None:
    from kq.core import UnsupportedOperationError

    driver = _driver(
        [_queue("demo"), _queue("log", queue_type="stream")],
        url=f"amqp://guest:guest@127.0.0.1:{_closed_port()}/",
        publish_timeout=0.1,
    )
    with pytest.raises(UnsupportedOperationError, match="delays a published message by at most"):
        driver.producer("demo").send(Message(b"{}", delay=315_360_000))  # ten years: over the limit
    assert driver.capabilities_for("demo").delay_problem(315_359_700, requeue=True) is None
    with pytest.raises(UnsupportedOperationError, match="cannot expire messages"):
        driver.producer("log").send(Message(b"{}", ttl=60))


def test_managequeue_shows_the_queues_capabilities_and_the_poison_warning() -> None:
    """What ``kq managequeue info`` and ``list-configured`` add to a RabbitMQ queue (their JSON)."""
    from kq.cli._manage import capabilities_text, queue_capabilities

    driver = _driver(
        [_queue("classic"), _queue("quorum", queue_type="quorum"), _queue("fan", exchange_type="fanout")]
    )
    classic = queue_capabilities(driver, driver.queue("classic"))
    assert classic["capabilities"]["delivery_count"] == "flag"
    (warning,) = classic["warnings"]
    assert warning.startswith("max_deliveries = 10 cannot work: the broker only flags a redelivery")
    quorum = queue_capabilities(driver, driver.queue("quorum"))
    assert (quorum["capabilities"]["delivery_count"], quorum["warnings"]) == ("exact", [])
    once = dataclasses.replace(driver.queue("classic"), max_deliveries=1)
    assert queue_capabilities(driver, once)["warnings"] == []  # the flag is enough for 1
    assert capabilities_text(classic["capabilities"]) == (
        "routing keys native (-r reads its own queue), delivery count flag, delays (max 10y), TTL, batch send"
    )
    fan = queue_capabilities(driver, driver.queue("fan"))["capabilities"]
    assert capabilities_text(fan).startswith("routing keys none (no -r), delivery count flag")


# --- the producer against a scripted broker: which messages of a batch went (issue 11) --------------------
#
# A fake connection records what is published (message ids, in order, per connection) and answers from
# a script run on each process_data_events: acks, nacks, returns, or a lost connection, through the
# producer's own callbacks, as pika would call them.


class _Impl:
    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        self.on_confirm: Any = None
        self.on_return: Any = None

    def add_on_return_callback(self, callback: Any) -> None:
        self.on_return = callback

    def confirm_delivery(self, ack_nack_callback: Any, callback: Any) -> None:
        self.on_confirm = ack_nack_callback
        callback(None)

    def basic_publish(self, **kwargs: Any) -> None:
        if self.connection.drop_after_publishing is not None and (
            len(self.connection.published) >= self.connection.drop_after_publishing
        ):
            self.connection.is_open = False
            raise pika.exceptions.StreamLostError("lost while publishing")
        self.connection.published.append(kwargs["properties"].message_id)


class _Channel:
    is_open = True

    def __init__(self, impl: _Impl) -> None:
        self._impl = impl

    def _flush_output(self, done: Any) -> None:
        assert done()


class _Connection:
    def __init__(self, script: Any) -> None:
        self.script = script
        self.published: list[str] = []
        self.impl = _Impl(self)
        self.is_open = True
        self.drop_after_publishing: int | None = None
        self.timers: dict[int, tuple[float, Any]] = {}
        self.next_timer = 0

    def channel(self) -> _Channel:
        return _Channel(self.impl)

    def process_data_events(self, time_limit: float | None = None) -> None:
        self.script(self)

    def _flush_output(self, *waiters: Any) -> None:
        """pika's wait for any of ``waiters``: the script answers; if that is not enough, the poll sleeps
        until the next timer is due and the waiters are asked again. As in pika, a timer that falls due
        here does not run its callback (pika queues it for ``process_data_events``): it only ends a poll."""
        self.script(self)
        while not any(waiter() for waiter in waiters):
            assert self.timers, "a wait that nothing would end"
            timer = min(self.timers, key=lambda t: self.timers[t][0])
            due, _callback = self.timers.pop(timer)
            _real_sleep(max(0.0, due - time.monotonic()))

    def call_later(self, delay: float, callback: Any) -> int:
        self.next_timer += 1
        self.timers[self.next_timer] = (time.monotonic() + delay, callback)
        return self.next_timer

    def remove_timeout(self, timer: int) -> None:
        self.timers.pop(timer, None)

    def close(self) -> None:
        self.is_open = False

    # What the broker does, for the scripts.
    def ack(self, tag: int, *, multiple: bool = False) -> None:
        self.impl.on_confirm(_Frame(pika.spec.Basic.Ack(delivery_tag=tag, multiple=multiple)))

    def nack(self, tag: int) -> None:
        self.impl.on_confirm(_Frame(pika.spec.Basic.Nack(delivery_tag=tag)))

    def give_back(self, message_id: str) -> None:
        method = pika.spec.Basic.Return(reply_code=312, reply_text="NO_ROUTE", exchange="demo")
        self.impl.on_return(None, method, pika.BasicProperties(message_id=message_id), b"")

    def drop(self) -> None:
        self.is_open = False
        raise pika.exceptions.StreamLostError("Transport indicated EOF")


class _Frame:
    def __init__(self, method: Any) -> None:
        self.method = method


def _producer(
    monkeypatch: pytest.MonkeyPatch, *scripts: Any, mandatory: bool = False, **options: Any
) -> tuple[RabbitMQProducer, list[_Connection]]:
    """A producer of queue demo whose connections answer with ``scripts`` (one per connection)."""
    connections: list[_Connection] = []

    def connect() -> _Connection:
        connection = _Connection(scripts[len(connections)])
        connections.append(connection)
        return connection

    driver = _driver([_queue("demo", mandatory=mandatory)], **options)
    monkeypatch.setattr(driver, "connect", connect)
    monkeypatch.setattr(Topology, "declare", lambda *args: None)
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    producer = driver.producer("demo")
    assert isinstance(producer, RabbitMQProducer)
    return producer, connections


def _messages(count: int) -> list[Message]:
    return [Message(f"{n}".encode(), message_id=f"m{n}") for n in range(count)]


def test_a_batch_confirmed_in_full_is_published_once(monkeypatch: pytest.MonkeyPatch) -> None:
    producer, connections = _producer(monkeypatch, lambda c: c.ack(4, multiple=True))
    producer.send_batch(_messages(4))
    assert [c.published for c in connections] == [["m0", "m1", "m2", "m3"]]
    # The next batch on the same channel: tags go on.
    connections[0].script = lambda c: (c.ack(5), c.ack(6))
    producer.send_batch(_messages(2))
    assert connections[0].published[4:] == ["m0", "m1"]


def test_nacked_messages_are_named_and_the_others_published(monkeypatch: pytest.MonkeyPatch) -> None:
    def answer(connection: _Connection) -> None:
        connection.ack(1)
        connection.nack(2)
        connection.ack(4, multiple=True)

    producer, _ = _producer(monkeypatch, answer)
    with pytest.raises(
        PublishError, match=r"refused \(nack\) message\(s\) m1 .*; 3 of 4 published"
    ) as caught:
        producer.send_batch(_messages(4))
    assert (caught.value.published, caught.value.failed) == (["m0", "m2", "m3"], ["m1"])


def test_unroutable_messages_are_named_and_the_others_published(monkeypatch: pytest.MonkeyPatch) -> None:
    def answer(connection: _Connection) -> None:
        connection.give_back("m2")  # a return comes before the message's ack
        connection.ack(3, multiple=True)

    producer, _ = _producer(monkeypatch, answer, mandatory=True)
    with pytest.raises(PublishError, match="m2 matched no binding of exchange demo") as caught:
        producer.send_batch(_messages(3))
    assert (caught.value.published, caught.value.failed) == (["m0", "m1"], ["m2"])


def test_missing_confirms_are_not_published(monkeypatch: pytest.MonkeyPatch) -> None:
    producer, _ = _producer(monkeypatch, lambda c: c.ack(2, multiple=True), confirm_timeout=0.05)
    with pytest.raises(PublishError, match="did not confirm 1 of 3 message") as caught:
        producer.send_batch(_messages(3))
    assert (caught.value.published, caught.value.failed) == (["m0", "m1"], ["m2"])


def test_a_late_confirm_of_an_earlier_batch_is_not_taken_for_this_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer, connections = _producer(monkeypatch, lambda c: c.ack(1), confirm_timeout=0.05)
    with pytest.raises(PublishError):
        producer.send_batch(_messages(2))  # m1 (tag 2) never confirmed
    # Tag 2's nack arrives during the next batch (tags 3 and 4): it is not one of its messages.
    connections[0].script = lambda c: (c.nack(2), c.ack(4, multiple=True))
    producer.send_batch(_messages(2))


def test_after_a_lost_connection_only_what_was_not_confirmed_is_sent_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review (contract-review nice-to-have 2): the whole batch was published again after a
    lost connection, so the messages the broker had confirmed arrived twice."""

    def first(connection: _Connection) -> None:
        connection.ack(2, multiple=True)
        connection.drop()

    producer, connections = _producer(monkeypatch, first, lambda c: c.ack(2, multiple=True))
    producer.send_batch(_messages(4))
    assert [c.published for c in connections] == [["m0", "m1", "m2", "m3"], ["m2", "m3"]]


def test_a_connection_lost_while_publishing_sends_the_rest_again(monkeypatch: pytest.MonkeyPatch) -> None:
    def second(connection: _Connection) -> None:
        connection.ack(4, multiple=True)

    producer, connections = _producer(monkeypatch, lambda c: None, second)
    original = _Connection.channel

    def channel(self: _Connection) -> _Channel:
        if len(connections) == 1:
            self.drop_after_publishing = 2
        return original(self)

    monkeypatch.setattr(_Connection, "channel", channel)
    producer.send_batch(_messages(4))
    assert [c.published for c in connections] == [["m0", "m1"], ["m0", "m1", "m2", "m3"]]


def test_a_batch_confirmed_before_the_connection_dropped_is_not_sent_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def answer(connection: _Connection) -> None:
        connection.ack(3, multiple=True)
        connection.drop()

    producer, connections = _producer(monkeypatch, answer)
    producer.send_batch(_messages(3))
    assert [c.published for c in connections] == [["m0", "m1", "m2"]]


def test_giving_up_names_what_was_confirmed(monkeypatch: pytest.MonkeyPatch) -> None:
    def confirm_one_then_drop(connection: _Connection) -> None:
        connection.ack(1)
        connection.drop()

    producer, connections = _producer(
        monkeypatch, confirm_one_then_drop, confirm_one_then_drop, publish_timeout=0.6
    )
    with pytest.raises(PublishError, match=r"could not publish 1 of 3 .*; 2 of 3 published") as caught:
        producer.send_batch(_messages(3))
    assert [c.published for c in connections] == [["m0", "m1", "m2"], ["m1", "m2"]]
    assert (caught.value.published, caught.value.failed) == (["m0", "m1"], ["m2"])
    assert isinstance(caught.value.__cause__, pika.exceptions.StreamLostError)


def test_without_confirms_the_whole_batch_is_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    def first(connection: _Connection) -> None:
        connection.drop()

    producer, connections = _producer(monkeypatch, first, lambda c: None, confirm_delivery=False)
    producer.send_batch(_messages(2))
    assert [c.published for c in connections] == [["m0", "m1"], ["m0", "m1"]]


def test_the_drivers_publish_error_is_kqs() -> None:
    from kq.drivers import rabbitmq

    assert rabbitmq.PublishError is PublishError


def test_the_drivers_errors_are_kq_errors_from_its_errors_module() -> None:
    from kq.core import KqError
    from kq.drivers import rabbitmq
    from kq.drivers.rabbitmq import _errors

    assert set(_errors.__all__) <= set(rabbitmq.__all__)
    assert rabbitmq.ManagementError is _errors.ManagementError
    assert issubclass(rabbitmq.ManagementError, KqError)


def test_an_unreachable_management_api_raises_management_error() -> None:
    from kq.drivers.rabbitmq import ManagementError
    from kq.drivers.rabbitmq._management import Management

    # Port 1 on the loopback: refused at once, nothing listens there.
    management = Management("http://127.0.0.1:1", "guest", "guest", "/", timeout=2.0)
    with pytest.raises(ManagementError, match=r"management API at http://127\.0\.0\.1:1 is unreachable"):
        management.queues()


@pytest.mark.parametrize(
    ("prefetch", "batch"), [(1, 1), (2, 1), (3, 1), (4, 2), (16, 8), (32, 16), (100, 16), (0, 16)]
)
def test_acks_wait_for_at_most_half_the_prefetch_window(prefetch: int, batch: int) -> None:
    assert _consumer.ack_batch(prefetch) == batch
