"""Decoding bodies by content type, and compact JSON encoding."""

from __future__ import annotations

from typing import Any

import pytest

from kq.core import MessageFormatError, decode_body, encode_json, media_type


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", ("application/json", {})),
        ("Application/JSON; Charset=UTF-8", ("application/json", {"charset": "UTF-8"})),
        (
            'text/plain; charset="latin-1"; format=flowed',
            ("text/plain", {"charset": "latin-1", "format": "flowed"}),
        ),
        ("  text/html ;  ", ("text/html", {})),
        ("text/plain; novalue", ("text/plain", {})),
        ("", ("", {})),
    ],
)
def test_media_type(content_type: str, expected: tuple[str, dict[str, str]]) -> None:
    assert media_type(content_type) == expected


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (
            b'{"command":"echoback","arguments":["x"]}',
            "application/json",
            {"command": "echoback", "arguments": ["x"]},
        ),
        (b"[1, 2.5, null, true]", "", [1, 2.5, None, True]),
        (b'"caf\xc3\xa9"', "application/json; charset=utf-8", "café"),
        ('"café"'.encode("latin-1"), "application/json; charset=latin-1", "café"),
        ('{"a": "é"}'.encode("utf-16"), "application/json; charset=utf-16", {"a": "é"}),
        (b'{"a":1}', "application/vnd.kq+json", {"a": 1}),
        (b'{"a":1}', "APPLICATION/JSON", {"a": 1}),
        (b"caf\xc3\xa9", "text/plain", "café"),
        (b"caf\xe9", "text/plain; charset=iso-8859-1", "café"),
        (b"<p>x</p>", "text/html", "<p>x</p>"),
        (b'{"a":1}', "text/plain", '{"a":1}'),
        (b'{"a":1}', "text/vnd.x+json", '{"a":1}'),  # only application/*+json is JSON
        (b"\x00\xff\xfe", "application/octet-stream", b"\x00\xff\xfe"),
        (b"", "application/octet-stream", b""),
        (b"", "text/plain", ""),
    ],
)
def test_decode_body(body: bytes, content_type: str, expected: Any) -> None:
    value = decode_body(body, content_type)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("body", "content_type", "match"),
    [
        (b"{", "application/json", "body is not valid JSON"),
        (b"", "", "body is not valid JSON"),
        (b"{'a': 1}", "", "body is not valid JSON"),
        (b"\xff\xfe\xfd", "application/json", "JSON body is not valid text"),
        (b"{}", "application/json; charset=no-such-charset", "JSON body is not valid text"),
        (b"caf\xe9", "text/plain", "text body cannot be decoded as utf-8"),
        (b"x", "text/plain; charset=no-such-charset", "cannot be decoded as no-such-charset"),
        (
            b"a:1:{}",
            "application/vnd.php.serialized",
            "cannot decode content type 'application/vnd.php.serialized'",
        ),
        (b"<?php", "application/x-httpd-php-source", "cannot decode content type"),
        (b"x", "image/png", "cannot decode content type 'image/png'"),
    ],
)
def test_decode_body_errors(body: bytes, content_type: str, match: str) -> None:
    with pytest.raises(MessageFormatError, match=match):
        decode_body(body, content_type)


@pytest.mark.parametrize(
    ("content_type", "accepted", "expected"),
    [
        ("application/json", {"application/json"}, {"a": 1}),
        ("", {"application/json"}, {"a": 1}),
        ("Application/Json; charset=utf-8", ["application/json"], {"a": 1}),
        ("text/plain", {"text/plain", "application/json"}, '{"a":1}'),
    ],
)
def test_accepted_types(content_type: str, accepted: set[str], expected: Any) -> None:
    assert decode_body(b'{"a":1}', content_type, accepted) == expected


@pytest.mark.parametrize(
    ("content_type", "accepted", "match"),
    [
        (
            "text/plain",
            {"application/json"},
            r"content type 'text/plain' is not accepted here \(accepted: application/json\)",
        ),
        (
            "application/octet-stream",
            {"text/plain", "application/json"},
            "accepted: application/json, text/plain",
        ),
        ("application/json", set(), "is not accepted here"),
        ("application/vnd.kq+json", {"application/json"}, "is not accepted here"),
    ],
)
def test_not_accepted(content_type: str, accepted: set[str], match: str) -> None:
    with pytest.raises(MessageFormatError, match=match):
        decode_body(b'{"a":1}', content_type, accepted)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            {"command": "echoback", "arguments": ["x"], "options": {}},
            b'{"command":"echoback","arguments":["x"],"options":{}}',
        ),
        ({"s": "café ☃"}, '{"s":"café ☃"}'.encode()),
        ([1, 2.5, None, True, False], b"[1,2.5,null,true,false]"),
        ("", b'""'),
    ],
)
def test_encode_json(value: Any, expected: bytes) -> None:
    assert encode_json(value) == expected
    assert decode_body(expected, "application/json") == value


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (float("nan"), "cannot encode the message as JSON"),
        ({"x": [float("inf")]}, "cannot encode the message as JSON"),
        (-float("inf"), "cannot encode"),
        ({"x": b"bytes"}, "cannot encode the message as JSON.*bytes"),
        ({"x": object()}, "cannot encode"),
        ({(1, 2): "tuple key"}, "cannot encode"),
    ],
)
def test_encode_json_rejects(value: Any, match: str) -> None:
    with pytest.raises(MessageFormatError, match=match):
        encode_json(value)


@pytest.mark.parametrize("body", [b"NaN", b'{"a": Infinity}', b"[-Infinity]"])
def test_decode_rejects_non_json_numbers(body: bytes) -> None:
    with pytest.raises(MessageFormatError, match="not valid JSON"):
        decode_body(body, "application/json")
