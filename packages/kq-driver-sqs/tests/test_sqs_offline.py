"""The SQS driver without an endpoint: names, wire format, size limits, batching, options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kq.core import ConfigError, Message
from kq.core.driver import DriverSpec, QueueSpec, UnsupportedOperationError, is_portable_header_name
from kq.core.plugins import load_driver_class
from kq.drivers.sqs import SqsDriver
from kq.drivers.sqs import _driver as sqs_driver_module
from kq.drivers.sqs._names import MAX_NAME, logical_name, sqs_queue_name
from kq.drivers.sqs._producer import MAX_BYTES, chunk
from kq.drivers.sqs._wire import CONTENT_TYPE, KQ, MAX_ATTRIBUTES, ROUTING_KEY, is_sendable, pack, unpack

_VALID = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def _driver(queues: list[QueueSpec] | None = None, **options: Any) -> SqsDriver:
    options.setdefault("region", "us-east-1")
    return SqsDriver(DriverSpec(name="sqs", type="sqs", options=options, source="kq.toml"), queues or [])


def _queue(name: str = "demo", **options: Any) -> QueueSpec:
    return QueueSpec(name=name, driver="sqs", options=options, source="kq.toml")


def _round_trip(message: Message, now: float = 1000.0) -> Any:
    packed = pack(message, now=now)
    return packed, unpack(packed.body, packed.attributes, "sqs-id")


# -- registration and capabilities ---------------------------------------------------------------


def test_registered_as_sqs() -> None:
    assert load_driver_class("sqs") is SqsDriver
    caps = SqsDriver.capabilities
    assert (caps.routing_keys, caps.consumer_routing, caps.delivery_count) == ("emulated", "none", "receives")
    assert (caps.max_publish_delay, caps.max_requeue_delay) == (900.0, 43200.0)
    assert caps.lease_extension
    assert caps.message_ttl
    assert caps.batch_send
    assert caps.batch_receive


def test_fifo_queues_cannot_delay_a_publish_but_can_delay_a_requeue() -> None:
    driver = _driver([_queue("orders", fifo=True), _queue("plain")])
    assert driver.capabilities_for("orders").max_publish_delay == 0
    assert driver.capabilities_for("orders").delay_problem(5, requeue=False)
    assert driver.capabilities_for("orders").delay_problem(5, requeue=True) is None
    assert driver.capabilities_for("plain").max_publish_delay == 900
    assert driver.capabilities_for("jobs.fifo").max_publish_delay == 0  # a .fifo name is FIFO


def test_a_narrower_consumer_key_is_refused() -> None:
    driver = _driver([QueueSpec(name="demo", driver="sqs", routing_keys=("#",))])
    with pytest.raises(UnsupportedOperationError, match="routing key"):
        driver.consumer("demo", routing_key="hello.*")


class _CountedSession(boto3.session.Session):  # type: ignore[misc,unused-ignore]
    made = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        type(self).made += 1
        super().__init__(*args, **kwargs)


def test_every_client_of_every_driver_comes_from_one_session(monkeypatch: pytest.MonkeyPatch) -> None:
    # A client of a new session loads SQS's service model again: 50-80 ms, three times per worker.
    monkeypatch.setattr(sqs_driver_module, "_SESSIONS", {})
    monkeypatch.setattr(boto3.session, "Session", _CountedSession)
    _CountedSession.made = 0
    first = _driver(
        region="eu-west-1", endpoint_url="http://127.0.0.1:1", access_key_id="A1", secret_access_key="S1"
    )
    second = _driver(region="us-east-2", access_key_id="A2", secret_access_key="S2")
    try:
        clients = {(d, p): d.client(p) for d in (first, second) for p in ("default", "poll", "lease")}
        assert _CountedSession.made == 1
        for (driver, _purpose), client in clients.items():  # each keeps its driver's settings
            assert client.meta.region_name == driver.options["region"]
            assert client._get_credentials().access_key == driver.options["access_key_id"]
        assert clients[first, "poll"].meta.endpoint_url == "http://127.0.0.1:1"
        assert clients[second, "poll"].meta.endpoint_url == "https://sqs.us-east-2.amazonaws.com"
    finally:
        first.close()
        second.close()


def test_no_region_anywhere_is_a_config_error_naming_the_option(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sqs_driver_module, "_SESSIONS", {})
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    driver = SqsDriver(DriverSpec(name="sqs", type="sqs", options={}, source="kq.toml"), [])
    with pytest.raises(ConfigError, match="no AWS region") as caught:
        driver.client()
    assert caught.value.key == "drivers.sqs.region"


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"visibility_timeout": 0}, "drivers.sqs.visibility_timeout"),
        ({"visibility_timeout": 43201}, "drivers.sqs.visibility_timeout"),
        ({"wait_time": 21}, "drivers.sqs.wait_time"),
        ({"wait_time": -1}, "drivers.sqs.wait_time"),
        ({"regoin": "x"}, "drivers.sqs.regoin"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _driver(**options)
    assert caught.value.key == key


def test_two_logical_queues_on_one_sqs_queue_are_refused() -> None:
    driver = _driver([_queue("demo-failed")])
    with pytest.raises(ConfigError, match="both be the SQS queue 'demo-failed'"):
        driver.sqs_name("demo.failed")


# -- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("logical", "options", "expected"),
    [
        ("demo", {}, "demo"),
        ("demo.failed", {}, "demo-failed"),
        ("kqtest_abc-1", {}, "kqtest_abc-1"),
        ("orders", {"fifo": True}, "orders.fifo"),
        ("orders.fifo", {}, "orders.fifo"),
        ("orders.fifo.failed", {}, "orders-fifo-failed"),
        ("a:b/c", {}, "a_3a_b_2f_c"),
        ("demo", {"prefix": "prod-"}, "prod-demo"),
        ("demo", {"prefix": "prod."}, "prod-demo"),
    ],
)
def test_sqs_names(logical: str, options: dict[str, Any], expected: str) -> None:
    assert sqs_queue_name(logical, **options) == expected


@given(st.text(min_size=1, max_size=200), st.booleans())
def test_every_logical_name_maps_to_a_valid_sqs_name(logical: str, fifo: bool) -> None:
    name = sqs_queue_name(logical, fifo=fifo)
    assert 1 <= len(name) <= MAX_NAME
    stem = name[: -len(".fifo")] if name.endswith(".fifo") else name
    assert set(stem) <= _VALID
    assert name.endswith(".fifo") == (fifo or (logical.endswith(".fifo") and logical != ".fifo"))


def test_long_names_are_cut_with_a_hash_and_stay_distinct() -> None:
    a = sqs_queue_name("x" * 100 + ".a", fifo=True)
    b = sqs_queue_name("x" * 100 + ".b", fifo=True)
    assert len(a) == len(b) == MAX_NAME
    assert a != b


def test_an_sqs_name_is_its_own_logical_name() -> None:
    assert logical_name("prod-demo-failed", prefix="prod-") == "demo-failed"
    assert sqs_queue_name("demo-failed", prefix="prod-") == "prod-demo-failed"
    assert logical_name("other", prefix="prod-") is None
    assert logical_name("jobs.fifo") == "jobs.fifo"


# -- wire format ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"command": "x"}',
        "ünïcode ✓".encode(),
        b"",
        b"\x00\xff\x00",
        bytes(range(256)),
        b"\xff\xfe",
        b"\x1b[31m",
    ],
    ids=["json", "unicode", "empty", "nul", "binary", "not-utf8", "escape"],
)
def test_bodies_round_trip(body: bytes) -> None:
    packed, got = _round_trip(Message(body, content_type="application/octet-stream"))
    assert got.body == body
    assert got.defect is None
    assert is_sendable(packed.body)


def test_json_text_travels_as_it_is() -> None:
    packed, _ = _round_trip(Message(b'{"command": "app:cmd", "arguments": []}'))
    assert packed.body == '{"command": "app:cmd", "arguments": []}'
    assert "enc" not in json.loads(packed.attributes[KQ]["StringValue"])


@given(
    st.binary(max_size=300),
    st.dictionaries(
        st.from_regex(r"x-[a-z0-9_.-]{1,20}", fullmatch=True).filter(is_portable_header_name),
        st.text(max_size=30),
        max_size=30,
    ),
    st.text(alphabet="abc.", max_size=20).filter(lambda k: "*" not in k),
)
def test_any_message_round_trips_in_at_most_three_attributes(
    body: bytes, headers: dict[str, str], key: str
) -> None:
    sent = Message(body, content_type="text/plain", headers=headers, routing_key=key, ttl=60)
    packed, got = _round_trip(sent, now=1000.0)
    assert len(packed.attributes) <= 3 < MAX_ATTRIBUTES
    for value in packed.attributes.values():
        assert is_sendable(value["StringValue"])
    assert (got.body, got.headers, got.routing_key, got.message_id) == (body, headers, key, sent.message_id)
    assert got.expires == 1060.0
    assert got.defect is None


def test_header_budget_many_headers_with_empty_and_control_values() -> None:
    headers = {**{f"x-h{i:02d}": f"value {i}" for i in range(40)}, "x-empty": "", "x-ansi": "\x1b[31mred"}
    packed, got = _round_trip(Message(b"{}", headers=headers))
    assert set(packed.attributes) == {CONTENT_TYPE, KQ}
    assert got.headers == headers


def test_php_names_for_content_type_and_routing_key() -> None:
    packed, _ = _round_trip(Message(b"{}", content_type="application/json", routing_key="app.cmd"))
    assert packed.attributes[CONTENT_TYPE] == {"DataType": "String", "StringValue": "application/json"}
    assert packed.attributes[ROUTING_KEY] == {"DataType": "String", "StringValue": "app.cmd"}
    packed, _ = _round_trip(Message(b"{}"))
    assert ROUTING_KEY not in packed.attributes  # SQS refuses empty values


def test_a_php_message_is_read_as_it_is() -> None:
    body = '{"command":"app:echo","arguments":["hi"],"options":{}}'
    attributes = {
        "contentType": {"DataType": "String", "StringValue": "application/json"},
        "routingKey": {"DataType": "String", "StringValue": "app.echo"},
    }
    got = unpack(body, attributes, "sqs-1")
    assert (got.body, got.content_type, got.routing_key, got.message_id) == (
        body.encode(),
        "application/json",
        "app.echo",
        "sqs-1",
    )
    assert got.headers == {}
    assert got.defect is None


def test_a_message_without_content_type_is_json() -> None:
    assert unpack("{}", {}, "id").content_type == "application/json"


@pytest.mark.parametrize(
    ("attributes", "defect"),
    [
        ({KQ: {"DataType": "String", "StringValue": "{not json"}}, "not JSON"),
        ({KQ: {"DataType": "String", "StringValue": "[1]"}}, "not a JSON object"),
        ({KQ: {"DataType": "String", "StringValue": '{"h": {"a": 1}}'}}, "headers"),
        ({KQ: {"DataType": "String", "StringValue": '{"enc": "base64"}'}}, "base64"),
        ({KQ: {"DataType": "String", "StringValue": '{"enc": "rot13"}'}}, "encoding"),
        ({KQ: {"DataType": "String", "StringValue": '{"exp": "soon"}'}}, "expiry"),
        ({"x-bin": {"DataType": "Binary", "BinaryValue": b"\x00"}}, "not a String"),
    ],
)
def test_unreadable_attributes_are_defects_not_errors(attributes: dict[str, Any], defect: str) -> None:
    got = unpack("not base64 ~~", attributes, "id")
    assert got.defect is not None
    assert defect in got.defect


def test_foreign_string_attributes_become_headers() -> None:
    got = unpack("{}", {"x-trace": {"DataType": "String", "StringValue": "abc"}}, "id")
    assert got.headers == {"x-trace": "abc"}


def test_odd_content_types_and_keys_go_inside_the_kq_attribute() -> None:
    packed, got = _round_trip(Message(b"{}", content_type="text/\x01odd", routing_key="a.\x02"))
    assert CONTENT_TYPE not in packed.attributes
    assert ROUTING_KEY not in packed.attributes
    assert (got.content_type, got.routing_key) == ("text/\x01odd", "a.\x02")


# -- size limits and batches ----------------------------------------------------------------------


def test_size_counts_body_and_attributes() -> None:
    packed = pack(Message(b"x" * 100, content_type="text/plain"), now=0)
    expected = 100 + sum(
        len(k) + len("String") + len(v["StringValue"].encode()) for k, v in packed.attributes.items()
    )
    assert packed.size == expected


def test_chunks_of_at_most_ten_entries() -> None:
    assert [len(c) for c in chunk([10] * 25)] == [10, 10, 5]


def test_chunks_by_bytes() -> None:
    sizes = [400_000, 400_000, 400_000, 100, MAX_BYTES]
    assert chunk(sizes) == [[0, 1], [2, 3], [4]]
    assert chunk([]) == []


@given(st.lists(st.integers(min_value=1, max_value=MAX_BYTES), max_size=60))
def test_chunks_keep_order_and_limits(sizes: list[int]) -> None:
    batches = chunk(sizes)
    assert [i for batch in batches for i in batch] == list(range(len(sizes)))
    for batch in batches:
        assert 1 <= len(batch) <= 10
        assert len(batch) == 1 or sum(sizes[i] for i in batch) <= MAX_BYTES
