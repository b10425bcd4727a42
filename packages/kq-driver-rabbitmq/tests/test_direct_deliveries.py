"""Deliveries read straight from the socket (``_deliveries``): decoded as pika decodes them, whole
deliveries only, and everything else left to pika."""

from __future__ import annotations

import datetime
import decimal
import struct
from typing import Any

import pika
import pika.channel
import pika.frame
import pika.spec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kq.drivers.rabbitmq._deliveries import deliveries

TAG = "ctag1.abc"
CHANNEL = 1


def marshal(
    delivery_tag: int,
    properties: pika.BasicProperties,
    body: bytes,
    *,
    channel: int = CHANNEL,
    tag: Any = TAG,
    redelivered: bool = False,
    exchange: Any = "jobs",
    routing_key: Any = "a.b",
    body_max: int = 131064,
) -> bytes:
    """One delivery's frames, marshalled by pika."""
    method = pika.spec.Basic.Deliver(tag, delivery_tag, redelivered, exchange, routing_key)
    frames = [
        pika.frame.Method(channel, method).marshal(),
        pika.frame.Header(channel, len(body), properties).marshal(),
    ]
    for start in range(0, len(body), body_max):
        frames.append(pika.frame.Body(channel, body[start : start + body_max]).marshal())
    return b"".join(frames)


def pikas(data: bytes) -> list[tuple[Any, Any, bytes]]:
    """What pika's own decoding and content assembly make of ``data``: (method, properties, body)."""
    found = []
    assembler = pika.channel.ContentFrameAssembler()
    while data:
        consumed, frame = pika.frame.decode_frame(data)
        if frame is None:
            break
        data = data[consumed:]
        result = assembler.process(frame)
        if result:
            method_frame, header_frame, body = result
            found.append((method_frame.method, header_frame.properties, body))
    return found


def same(ours: list[tuple[Any, Any, bytes]], theirs: list[tuple[Any, Any, bytes]]) -> None:
    assert len(ours) == len(theirs)
    for mine, pika_s in zip(ours, theirs, strict=True):
        for part, their_part in zip(mine[:2], pika_s[:2], strict=True):
            assert type(part) is type(their_part)
            assert vars(part) == vars(their_part)
        assert mine[2] == pika_s[2]
        assert type(mine[2]) is bytes


text = st.text(max_size=20)
short = st.one_of(text, st.binary(max_size=20))  # bytes that are not UTF-8 stay bytes
scalar = st.one_of(
    st.text(max_size=30),
    st.binary(max_size=10),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.decimals(min_value=-1000, max_value=1000, places=3, allow_nan=False, allow_infinity=False),
    st.datetimes(min_value=datetime.datetime(1971, 1, 1), max_value=datetime.datetime(2100, 1, 1)).map(
        lambda moment: moment.replace(microsecond=0)
    ),
    st.none(),
)
value = st.recursive(
    scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=8
)
properties = st.builds(
    pika.BasicProperties,
    content_type=st.none() | short,
    content_encoding=st.none() | short,
    headers=st.none() | st.dictionaries(short, value, max_size=6),
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    priority=st.none() | st.integers(0, 255),
    correlation_id=st.none() | short,
    reply_to=st.none() | short,
    expiration=st.none() | st.integers(0, 10**6).map(str),
    message_id=st.none() | short,
    timestamp=st.none() | st.integers(0, 2**63),
    type=st.none() | short,
    user_id=st.none() | short,
    app_id=st.none() | short,
    cluster_id=st.none() | short,
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(properties, st.binary(max_size=300), st.booleans(), short, short, st.integers(1, 200)),
        min_size=1,
        max_size=4,
    )
)
def test_deliveries_decode_as_pika_decodes_them(
    items: list[tuple[pika.BasicProperties, bytes, bool, Any, Any, int]],
) -> None:
    data = b"".join(
        marshal(tag, props, body, redelivered=again, exchange=exchange, routing_key=key, body_max=body_max)
        for tag, (props, body, again, exchange, key, body_max) in enumerate(items, start=1)
    )
    found, consumed, frames = deliveries(data, CHANNEL, TAG)
    same(found, pikas(data))
    assert consumed == len(data)
    assert frames == sum(2 + -(-len(body) // body_max) for _, body, _, _, _, body_max in items)


def test_header_values_that_are_not_utf8_stay_bytes_as_pika_has_them() -> None:
    # pika marshals bytes as a byte array ('x'); other clients send long strings ('S') of any bytes
    table = b"\x01kS" + struct.pack(">I", 2) + b"\xff\xfe" + b"\x02\xc3\x28S" + struct.pack(">I", 1) + b"v"
    flags = pika.spec.BasicProperties.FLAG_HEADERS
    payload = struct.pack(">HHQH", 60, 0, 2, flags) + struct.pack(">I", len(table)) + table
    header = struct.pack(">BHI", 2, CHANNEL, len(payload)) + payload + b"\xce"
    method = pika.frame.Method(CHANNEL, pika.spec.Basic.Deliver(TAG, 7, False, "x", "k")).marshal()
    body = pika.frame.Body(CHANNEL, b"hi").marshal()
    data = method + header + body
    found, consumed, _ = deliveries(data, CHANNEL, TAG)
    same(found, pikas(data))
    assert found[0][1].headers == {"k": b"\xff\xfe", b"\xc3\x28": "v"}
    assert consumed == len(data)


def test_an_empty_body_has_no_body_frame() -> None:
    data = marshal(1, pika.BasicProperties(), b"")
    found, consumed, frames = deliveries(data, CHANNEL, TAG)
    same(found, pikas(data))
    assert (found[0][2], consumed, frames) == (b"", len(data), 2)


def test_only_whole_deliveries_are_taken() -> None:
    first = marshal(1, pika.BasicProperties(headers={"kq-signature": "abc"}), b"x" * 100)
    second = marshal(2, pika.BasicProperties(message_id="m2"), b"y" * 300, body_max=128)
    data = first + second
    for cut in range(len(data) + 1):
        found, consumed, frames = deliveries(data[:cut], CHANNEL, TAG)
        whole = 2 if cut == len(data) else 1 if cut >= len(first) else 0
        assert len(found) == whole, cut
        assert consumed == (0, len(first), len(data))[whole]
        assert frames == (0, 3, 8)[whole]


HEARTBEAT = pika.frame.Heartbeat().marshal()
CANCEL = pika.frame.Method(CHANNEL, pika.spec.Basic.Cancel(consumer_tag=TAG)).marshal()


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(HEARTBEAT, id="heartbeat"),
        pytest.param(CANCEL, id="basic.cancel"),
        pytest.param(marshal(9, pika.BasicProperties(), b"z", channel=2), id="another channel"),
        pytest.param(marshal(9, pika.BasicProperties(), b"z", tag="ctag2"), id="another consumer"),
        pytest.param(b"\x01\x00\x01\x00\x00\x00\x0c" + b"\x00" * 12 + b"\x00", id="no frame end"),
        pytest.param(b"AMQP\x00\x00\x09\x01", id="not a frame"),
    ],
)
def test_it_stops_before_anything_else_and_leaves_it_to_pika(other: bytes) -> None:
    one = marshal(1, pika.BasicProperties(), b"a")
    found, consumed, frames = deliveries(one + other + one, CHANNEL, TAG)
    assert (len(found), consumed, frames) == (1, len(one), 3)
    assert deliveries(other + one, CHANNEL, TAG) == ([], 0, 0)


def test_a_malformed_table_is_left_to_pika() -> None:
    # a header table whose value has an unknown field type: pika's decode_value raises, kq takes nothing
    table = b"\x01k" + b"?" + b"\x00"
    flags = pika.spec.BasicProperties.FLAG_HEADERS
    payload = struct.pack(">HHQH", 60, 0, 0, flags) + struct.pack(">I", len(table)) + table
    header = struct.pack(">BHI", 2, CHANNEL, len(payload)) + payload + b"\xce"
    method = pika.frame.Method(CHANNEL, pika.spec.Basic.Deliver(TAG, 7, False, "x", "k")).marshal()
    assert deliveries(method + header, CHANNEL, TAG) == ([], 0, 0)


def test_decimal_and_timestamp_headers_match_pika() -> None:
    moment = datetime.datetime(2024, 5, 1, 12, 0, 0)
    headers = {"d": decimal.Decimal("3.14"), "t": moment, "n": None, "a": [1, "x"]}
    data = marshal(1, pika.BasicProperties(headers=headers, timestamp=1_700_000_000), b"{}")
    found, _, _ = deliveries(data, CHANNEL, TAG)
    same(found, pikas(data))
