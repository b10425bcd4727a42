"""The STOMP driver without a broker: options, capabilities, destinations, wire format, selectors."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
import stomp  # type: ignore[import-untyped,unused-ignore]

from kq.core import ConfigError, Message
from kq.core.driver import (
    BrokerUnavailableError,
    DriverSpec,
    MessageFormatError,
    QueueSpec,
    UnsupportedOperationError,
    topic_matches,
)
from kq.core.plugins import load_driver_class
from kq.drivers.stomp import StompDriver
from kq.drivers.stomp._connection import Session, Settings, escape, parse_hosts
from kq.drivers.stomp._wire import (
    ACTIVEMQ_MAX_HEADER_LINE,
    MESSAGE_ID,
    REQUEUES,
    ROUTING_KEY,
    decode,
    delivery_count,
    encode,
    is_broker_header,
    requeue_headers,
    selector_for,
    ttl_header,
)


def _driver(queues: list[QueueSpec] | None = None, **options: Any) -> StompDriver:
    return StompDriver(DriverSpec(name="mq", type="stomp", options=options, source="kq.toml"), queues or [])


def _queue(name: str = "demo", **options: Any) -> QueueSpec:
    return QueueSpec(name=name, driver="mq", options=options, source="kq.toml")


# -- registration, options and capabilities --------------------------------------------------------


def test_registered_as_stomp() -> None:
    assert load_driver_class("stomp") is StompDriver
    assert StompDriver.client_loggers == ("stomp",)


def test_client_loggers_hold_back_stomp_py() -> None:
    """stomp.py logs as "stomp.py", a child of the "stomp" logger the CLI holds back."""
    held = logging.getLogger(StompDriver.client_loggers[0])
    before = held.level
    held.setLevel(logging.CRITICAL + 1)
    try:
        assert logging.getLogger("stomp.py").getEffectiveLevel() > logging.CRITICAL
    finally:
        held.setLevel(before)


def test_activemq_capabilities_follow_the_scheduler() -> None:
    plain = _driver(flavour="activemq").capabilities_for("demo")
    assert (plain.routing_keys, plain.consumer_routing, plain.delivery_count) == (
        "emulated",
        "filter",
        "flag",
    )
    assert not plain.delayed_delivery
    assert plain.delay_problem(2, requeue=True) == "cannot delay messages"
    assert (plain.message_ttl, plain.batch_send, plain.lease_extension) == (True, True, False)
    assert "delete" not in plain.queue_actions
    assert set(plain.queue_actions) == {"list-configured", "list-available", "info", "purge"}
    scheduled = _driver(flavour="activemq", scheduler=True).capabilities_for("demo")
    assert scheduled.delayed_delivery
    assert (scheduled.max_publish_delay, scheduled.max_requeue_delay) == (None, None)
    assert scheduled.delay_problem(3600, requeue=False) is None


def test_rabbitmq_capabilities() -> None:
    caps = _driver(flavour="rabbitmq").capabilities_for("demo")
    assert (caps.routing_keys, caps.consumer_routing, caps.delivery_count) == ("emulated", "none", "flag")
    assert not caps.delayed_delivery
    assert caps.message_ttl
    assert "delete" in caps.queue_actions


def test_rabbitmq_defaults_vhost_and_management() -> None:
    driver = _driver(flavour="RabbitMQ", hosts=["mq.example:61613"], login="kq", passcode="s3cret")
    assert driver.flavour == "rabbitmq"
    assert driver.options["vhost"] == "/"
    assert driver.options["management_url"] == "http://mq.example:15672"
    assert (driver.options["management_user"], driver.options["management_password"]) == ("kq", "s3cret")
    guest = _driver(flavour="rabbitmq")
    assert (guest.options["management_user"], guest.options["management_password"]) == ("guest", "guest")
    assert _driver(flavour="activemq").options["vhost"] is None  # stomp.py's default host header


def test_passcode_is_not_in_the_description() -> None:
    driver = _driver(hosts=["a:1", "b:2"], passcode="s3cret")
    assert driver.describe() == "stomp://a:1,b:2"
    assert "s3cret" not in repr(driver.settings)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"flavour": "artemis"}, "drivers.mq.flavour"),
        ({"hosts": ["localhost"]}, "drivers.mq.hosts"),
        ({"hosts": ["h:0"]}, "drivers.mq.hosts"),
        ({"hosts": ["h:99999"]}, "drivers.mq.hosts"),
        ({"hosts": []}, "drivers.mq.hosts"),
        ({"heartbeat": -1}, "drivers.mq.heartbeat"),
        ({"heartbeat_grace": 0.5}, "drivers.mq.heartbeat_grace"),
        ({"receipt_timeout": 0}, "drivers.mq.receipt_timeout"),
        ({"connect_timeout": "soon"}, "drivers.mq.connect_timeout"),
        ({"flavour": "rabbitmq", "scheduler": True}, "drivers.mq.scheduler"),
        ({"hostz": ["a:1"]}, "drivers.mq.hostz"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _driver(**options)
    assert caught.value.key == key


def test_hosts_keep_their_order_and_accept_text() -> None:
    assert parse_hosts("b:2, a:1", key="k", source=None) == (("b", 2), ("a", 1))
    assert parse_hosts(["[::1]:61613"], key="k", source=None) == (("::1", 61613),)
    assert _driver(hosts="x:1,y:2").settings.hosts == (("x", 1), ("y", 2))


def test_unreachable_broker_is_broker_unavailable() -> None:
    driver = _driver(hosts=["127.0.0.1:9"], connect_timeout=1.0)  # discard port: nothing listens
    with pytest.raises(BrokerUnavailableError, match=r"127\.0\.0\.1:9"):
        driver.producer("demo").send(Message(b"x"))
    assert isinstance(BrokerUnavailableError("x"), StompDriver.connection_errors)


# -- frames kq writes itself ------------------------------------------------------------------------

_TRICKY_IDS = [
    "T_1@@session-Xz4@@17",  # RabbitMQ
    "ID:host-41237-1700000000000-3:1:1:1:5",  # ActiveMQ: colons
    "back\\slash\nline\rreturn:colon",
    "",
]


@pytest.mark.parametrize("value", _TRICKY_IDS)
def test_escape_is_stomp_py_s_escaping(value: str) -> None:
    expected = {"v": value}
    stomp.Connection12([("127.0.0.1", 9)])._escape_headers(expected)
    assert escape(value) == expected["v"]


@pytest.mark.parametrize("command", ["ACK", "NACK"])
@pytest.mark.parametrize("ack_id", _TRICKY_IDS[:3])
def test_settle_writes_the_frame_stomp_py_would(command: str, ack_id: str) -> None:
    """ACK and NACK bypass stomp.py's frame building: the bytes on the wire must be the same."""
    session = Session(Settings(hosts=(("127.0.0.1", 9),)), "test")
    written: list[bytes] = []
    session.connection.transport.send = written.append
    getattr(session.connection, command.lower())(ack_id)
    session.settle(command, ack_id)
    assert len(written) == 2
    assert written[1] == written[0]


def test_settle_on_a_lost_connection_is_broker_unavailable() -> None:
    session = Session(Settings(hosts=(("127.0.0.1", 9),)), "test")
    with pytest.raises(BrokerUnavailableError, match="lost the connection"):
        session.settle("ACK", "T_1")  # no socket: the write fails and the session is lost
    assert session.lost is not None
    with pytest.raises(BrokerUnavailableError):
        session.settle("ACK", "T_2")


# -- destinations and consumer keys ------------------------------------------------------------------


def test_destinations() -> None:
    driver = _driver([_queue("legacy", destination="/amq/queue/old")])
    assert driver.destination("demo") == "/queue/demo"
    assert driver.destination("demo.failed") == "/queue/demo.failed"
    assert driver.destination("legacy") == "/amq/queue/old"


def test_rabbitmq_refuses_a_narrower_consumer_key() -> None:
    driver = _driver([QueueSpec(name="demo", driver="mq", routing_keys=("#",))], flavour="rabbitmq")
    with pytest.raises(UnsupportedOperationError, match="routing key"):
        driver.consumer("demo", routing_key="hello.*")


# -- wire format ----------------------------------------------------------------------------------------


def test_encode_puts_kq_fields_in_their_headers() -> None:
    message = Message(
        b"\x00\xff",
        content_type="application/octet-stream",
        headers={"x-a": "1", "x-empty": ""},
        routing_key="a.b",
        message_id="m1",
    )
    headers = encode(message, flavour="activemq", now=1000.0)
    assert headers == {
        "x-a": "1",
        "x-empty": "",
        "content-type": "application/octet-stream",
        "content-length": "2",
        "persistent": "true",
        MESSAGE_ID: "m1",
        ROUTING_KEY: "a.b",
    }
    assert ROUTING_KEY not in encode(Message(b"x"), flavour="rabbitmq", now=0)
    assert encode(Message(b""), flavour="rabbitmq", now=0)["content-length"] == "0"


def test_a_header_line_activemq_would_refuse_is_refused_before_sending() -> None:
    """ActiveMQ closes the connection on a header line of 10 KiB or more (escaped): the driver refuses
    the message with MessageFormatError naming the header, so a dead letter with huge headers takes the
    failure policy's plain-copy path instead of failing as if the broker were down."""
    name = "x-big"
    fits = "v" * (ACTIVEMQ_MAX_HEADER_LINE - len(name) - 2)
    assert encode(Message(b"x", headers={name: fits}), flavour="activemq", now=0)[name] == fits
    # (a colon and a newline take two bytes each once escaped)
    for value in ("v" * ACTIVEMQ_MAX_HEADER_LINE, fits[:-1] + ":\n"):
        with pytest.raises(MessageFormatError, match=r"header 'x-big' takes .* ActiveMQ refuses"):
            encode(Message(b"x", headers={name: value}, message_id="m1"), flavour="activemq", now=0)
    long = "v" * (ACTIVEMQ_MAX_HEADER_LINE * 2)
    assert encode(Message(b"x", headers={name: long}), flavour="rabbitmq", now=0)[name] == long


def test_ttl_header_per_flavour() -> None:
    assert ttl_header(1.5, flavour="activemq", now=1000.0) == {"expires": "1001500"}
    assert ttl_header(1.5, flavour="rabbitmq", now=1000.0) == {"expiration": "1500"}
    assert ttl_header(0.0001, flavour="rabbitmq", now=0) == {"expiration": "1"}
    assert encode(Message(b"x", ttl=2), flavour="rabbitmq", now=5.0)["expiration"] == "2000"
    assert encode(Message(b"x", ttl=2), flavour="activemq", now=5.0)["expires"] == "7000"


def test_delay_is_a_scheduler_header_on_activemq_only() -> None:
    delayed = Message(b"x", delay=0.2)
    assert encode(delayed, flavour="activemq", now=0, scheduler=True)["AMQ_SCHEDULED_DELAY"] == "200"
    assert "AMQ_SCHEDULED_DELAY" not in encode(delayed, flavour="activemq", now=0, scheduler=False)
    assert "AMQ_SCHEDULED_DELAY" not in encode(delayed, flavour="rabbitmq", now=0, scheduler=True)


#: What ActiveMQ 5.17 and RabbitMQ 3.10 add to a MESSAGE frame (contract-review.md §0), and more.
BROKER_ADDED = {
    "message-id": "ID:broker-1",
    "destination": "/queue/demo",
    "subscription": "sub-1",
    "ack": "ack-7",
    "redelivered": "false",
    "content-length": "5",
    "persistent": "true",
    "expires": "0",
    "expiration": "2000",
    "priority": "4",
    "timestamp": "1700000000000",
    "receipt": "kq-abc-0",
    "scheduledJobId": "ID:job",
    "AMQ_SCHEDULED_DELAY": "200",
    "original-destination": "/topic/x",
    "JMSXUserID": "admin",
    "JMSXGroupID": "g",
    "x-delivery-count": "0",
    "x-death": "...",
    "type": "t",
    "correlation-id": "c",
    "reply-to": "/queue/r",
}


def test_decode_strips_every_broker_header() -> None:
    sent = Message(
        b"hello",
        content_type="text/plain",
        routing_key="a.b",
        message_id="m1",
        headers={"x-a": "1", "x-empty": "", "kq-attempt": "2", "trace.id": "t", "kq-signature": "sig"},
    )
    frame = {**encode(sent, flavour="activemq", now=0), **BROKER_ADDED}
    got = decode(frame, b"hello")
    assert got.headers == dict(sent.headers)
    assert (got.body, got.content_type, got.routing_key, got.message_id) == (
        b"hello",
        "text/plain",
        "a.b",
        "m1",
    )
    assert got.ack_id == "ack-7"
    assert got.delivery_count == 1
    assert not got.defects


def test_decode_keeps_foreign_headers_and_reads_foreign_messages() -> None:
    got = decode({"message-id": "ID:1", "ack": "1", "x odd": "v", "x-plain": "p"}, "text body")
    assert got.message_id == "ID:1"  # no kq id: the broker's
    assert got.body == b"text body"
    assert got.content_type == ""
    assert got.headers == {"x odd": "v", "x-plain": "p"}
    assert decode({}, None).defects == ["no message id"]


@pytest.mark.parametrize(
    ("headers", "count"),
    [
        ({}, 1),
        ({"redelivered": "false"}, 1),
        ({"redelivered": "true"}, 2),
        ({REQUEUES: "1"}, 2),
        ({REQUEUES: "5"}, 2),  # a flag, however often it was requeued
        ({"redelivered": "true", "x-delivery-count": "4"}, 5),  # RabbitMQ quorum queues count
        ({"x-delivery-count": "²"}, 1),
    ],
)
def test_delivery_count_is_a_flag(headers: dict[str, str], count: int) -> None:
    assert delivery_count(headers) == count


def test_requeue_copies_carry_their_count_and_lose_it_on_receive() -> None:
    headers = requeue_headers(encode(Message(b"x", message_id="m"), flavour="activemq", now=0), 3)
    got = decode(headers, b"x")
    assert got.requeues == 3
    assert got.delivery_count == 2
    assert REQUEUES not in got.headers


def test_portable_user_headers_are_never_taken_for_the_brokers() -> None:
    for name in ("x-a", "trace.id", "kq-attempt", "kq-signature", "x-delivery", "Priority-level"):
        assert not is_broker_header(name), name
    for name in ("priority", "Expires", "JMSType", "amq_scheduled_period", "scheduledJobId", ROUTING_KEY):
        assert is_broker_header(name), name


# -- selectors ---------------------------------------------------------------------------------------------

KEYS = ["hello.world", "bonjour.monde", "hello", "a.b.world", "hello.big.world", "hello_world", "", "x.y.z"]


def _like(value: str, pattern: str) -> bool:
    """SQL LIKE with '!' escapes, as ActiveMQ evaluates it."""
    regex = ""
    chars = iter(pattern)
    for char in chars:
        if char == "!":
            regex += re.escape(next(chars))
        elif char == "%":
            regex += ".*"
        elif char == "_":
            regex += "."
        else:
            regex += re.escape(char)
    return re.fullmatch(regex, value, re.DOTALL) is not None


def _evaluate(selector: str, key: str) -> bool:
    """Evaluate the selectors this driver writes (=, LIKE, NOT LIKE, AND, OR, parentheses) for ``key``."""
    literal = r"'((?:[^']|'')*)'"
    expression = re.sub(
        rf"kq_routing_key NOT LIKE {literal} ESCAPE '!'",
        lambda m: str(not _like(key, m.group(1).replace("''", "'"))),
        selector,
    )
    expression = re.sub(
        rf"kq_routing_key LIKE {literal} ESCAPE '!'",
        lambda m: str(_like(key, m.group(1).replace("''", "'"))),
        expression,
    )
    expression = re.sub(
        rf"kq_routing_key = {literal}", lambda m: str(key == m.group(1).replace("''", "'")), expression
    )
    assert set(re.sub(r"True|False|AND|OR|[() ]", "", expression)) == set(), expression
    return bool(eval(expression.replace("AND", "and").replace("OR", "or")))  # noqa: S307 - our own text


@pytest.mark.parametrize(
    "pattern",
    ["hello.world", "hello.*", "*.world", "*.*", "x.*.z", "hello.#", "#.world", "hello_world", "a'b"],
)
def test_selectors_match_exactly_what_the_pattern_matches(pattern: str) -> None:
    selector = selector_for([pattern])
    assert selector is not None
    for key in [*KEYS, "a'b"]:
        assert _evaluate(selector, key) == topic_matches(pattern, key), (pattern, key, selector)


def test_several_patterns_are_alternatives() -> None:
    selector = selector_for(["hello", "*.world"])
    assert selector is not None
    assert [k for k in KEYS if _evaluate(selector, k)] == ["hello.world", "hello"]


def test_hash_selects_everything() -> None:
    assert selector_for(["#"]) is None
    assert selector_for(["a", "#.#"]) is None
    assert selector_for([]) is None


@pytest.mark.parametrize("pattern", ["*.#", "a.#.b", "#.a.#", "a*.b", "*.b.#"])
def test_patterns_a_selector_cannot_express_are_refused(pattern: str) -> None:
    with pytest.raises(UnsupportedOperationError, match=re.escape(pattern)):
        selector_for(["exact", pattern])


def test_an_activemq_consumer_refuses_an_inexpressible_key_before_connecting() -> None:
    driver = _driver(hosts=["127.0.0.1:9"], connect_timeout=1.0)
    with pytest.raises(UnsupportedOperationError):
        driver.consumer("demo", routing_key="a.#.b")
