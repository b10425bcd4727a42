"""Message validation and Delivery helpers."""

from __future__ import annotations

import re
from typing import Any

import pytest

from kq.core import JSON, KQ_HEADER_PREFIX, Delivery, Message, MessageFormatError
from kq.core.driver import new_message_id


def test_defaults() -> None:
    message = Message(b"{}")
    assert (message.content_type, dict(message.headers), message.routing_key) == (JSON, {}, "")
    assert (message.ttl, message.delay) == (None, 0.0)
    assert re.fullmatch(r"[0-9a-f]{32}", message.message_id)
    assert Message(b"{}").message_id != message.message_id
    assert JSON == "application/json"
    assert KQ_HEADER_PREFIX == "kq-"


def test_new_message_id() -> None:
    ids = {new_message_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"body": "text"}, "message body must be bytes, not str"),
        ({"body": bytearray(b"x")}, "message body must be bytes, not bytearray"),
        ({"body": None}, "message body must be bytes, not NoneType"),
        ({"body": {"a": 1}}, "message body must be bytes, not dict"),
        ({"ttl": 0}, r"ttl must be a finite number between 0 \(excluded\) and 315576000, not 0"),
        ({"ttl": -1.5}, r"ttl must be a finite number between 0 \(excluded\) and 315576000, not -1\.5"),
        ({"delay": -1}, "delay must be a finite number between 0 and 315576000, not -1"),
        ({"delay": -0.001}, "delay must be a finite number between 0 and"),
        ({"content_type": ""}, "content type must not be empty"),
        ({"headers": {"a b": "x"}}, "header name 'a b' is not portable"),
        ({"headers": {"": "x"}}, "header name '' is not portable"),
        ({"headers": {"x:y": "x"}}, "is not portable"),
        ({"headers": {"-x": "x"}}, "is not portable"),
        ({"headers": {"é": "x"}}, "is not portable"),
        ({"headers": {"x\n": "x"}}, "is not portable"),
        ({"headers": {"x" * 129: "x"}}, "is not portable"),
        ({"headers": {1: "x"}}, "header name 1 is not portable"),
        ({"headers": {"n": 1}}, "header 'n' must be a string, not int"),
        ({"headers": {"n": None}}, "header 'n' must be a string, not NoneType"),
        ({"headers": {"n": b"x"}}, "header 'n' must be a string, not bytes"),
        ({"headers": {"ok": "1", "n": True}}, "header 'n' must be a string, not bool"),
    ],
)
def test_invalid_messages(kwargs: dict[str, Any], match: str) -> None:
    values: dict[str, Any] = {"body": b"{}", **kwargs}
    with pytest.raises(MessageFormatError, match=match):
        Message(**values)


@pytest.mark.parametrize(
    ("kwargs", "attribute", "expected"),
    [
        ({"ttl": 0.5}, "ttl", 0.5),
        ({"delay": 0}, "delay", 0),
        ({"delay": 30.0}, "delay", 30.0),
        ({"body": b""}, "body", b""),
        ({"content_type": "text/plain; charset=utf-8"}, "content_type", "text/plain; charset=utf-8"),
        (
            {"headers": {"kq-attempt": "2", "X_Trace.id": ""}},
            "headers",
            {"kq-attempt": "2", "X_Trace.id": ""},
        ),
        ({"headers": {"_x": "v", "9": "v"}}, "headers", {"_x": "v", "9": "v"}),
        ({"headers": {"x" * 128: "v"}}, "headers", {"x" * 128: "v"}),
        ({"routing_key": "app.cmd", "message_id": "m1"}, "routing_key", "app.cmd"),
    ],
)
def test_valid_messages(kwargs: dict[str, Any], attribute: str, expected: Any) -> None:
    values: dict[str, Any] = {"body": b"{}", **kwargs}
    assert getattr(Message(**values), attribute) == expected


def test_headers_are_copied_to_a_plain_dict() -> None:
    source = {"a": "1"}
    message = Message(b"", headers=source)
    source["b"] = "2"
    assert message.headers == {"a": "1"}
    assert type(message.headers) is dict


def _delivery(**kwargs: Any) -> Delivery:
    values: dict[str, Any] = {
        "body": b'{"a":1}',
        "content_type": "application/json",
        "headers": {"kq-attempt": "1"},
        "routing_key": "app.cmd",
        "message_id": "m-42",
        "queue": "demo",
        **kwargs,
    }
    return Delivery(**values)


@pytest.mark.parametrize(("count", "redelivered"), [(1, False), (2, True), (10, True), (0, False)])
def test_redelivered(count: int, redelivered: bool) -> None:
    assert _delivery(delivery_count=count).redelivered is redelivered


def test_delivery_defaults() -> None:
    delivery = _delivery()
    assert (delivery.delivery_count, delivery.handle, delivery.owner, delivery.settled) == (
        1,
        None,
        None,
        False,
    )
    assert delivery.redelivered is False
    assert repr(delivery) == "<Delivery id=m-42 queue='demo' key='app.cmd' count=1 7 bytes application/json>"


def test_to_message() -> None:
    delivery = _delivery(delivery_count=3)
    message = delivery.to_message()
    assert message == Message(
        body=b'{"a":1}',
        content_type="application/json",
        headers={"kq-attempt": "1"},
        routing_key="app.cmd",
        message_id="m-42",
    )
    message.headers["kq-attempt"] = "changed"  # type: ignore[index]
    assert delivery.headers == {"kq-attempt": "1"}


def test_to_message_with_changes() -> None:
    message = _delivery().to_message(headers={"kq-attempt": "2"}, delay=5.0, routing_key="x.y")
    assert (dict(message.headers), message.delay, message.routing_key, message.message_id) == (
        {"kq-attempt": "2"},
        5.0,
        "x.y",
        "m-42",
    )


def test_to_message_validates() -> None:
    with pytest.raises(MessageFormatError, match="header name 'bad name' is not portable"):
        _delivery(headers={"bad name": "x"}).to_message()
    with pytest.raises(MessageFormatError, match="delay must be a finite number between 0 and"):
        _delivery().to_message(delay=-1)
