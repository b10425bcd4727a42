"""The XML-RPC call message: validation, defaults and routing keys, without any network."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from kq.contrib.xmlrpc import MULTICALL, XmlRpcCall, XmlRpcHandler, make_xmlrpc_call, parse_xmlrpc_call
from kq.core import AllowMap, MessageFormatError, url_routing_key

SERVER = "http://127.0.0.1:8000/RPC2"


def test_body_has_the_php_shape() -> None:
    call = make_xmlrpc_call(SERVER, "reports.build", [2026, "weekly"])
    assert call.to_body() == {"server": SERVER, "method": "reports.build", "arguments": [2026, "weekly"]}
    assert parse_xmlrpc_call(call.to_body()) == call


def test_missing_or_null_arguments_mean_none() -> None:
    """The PHP consumer left ``arguments`` undefined when a message had none."""
    assert parse_xmlrpc_call({"server": SERVER, "method": "ping"}).arguments == ()
    assert parse_xmlrpc_call({"server": SERVER, "method": "ping", "arguments": None}).arguments == ()


@pytest.mark.parametrize(
    ("server", "method", "key"),
    [
        (SERVER, "system.listMethods", "http...127.0.0.1.8000.RPC2.system.listMethods"),
        ("https://rpc.example.com/", "ping", "https...rpc.example.com..ping"),
        ("http://h/x?a=*", "m", "http...h.x?a=_.m"),
    ],
)
def test_default_routing_key_is_server_dot_method_as_in_php(server: str, method: str, key: str) -> None:
    call = make_xmlrpc_call(server, method)
    assert call.routing_key == key
    assert call.routing_key == url_routing_key(f"{server}.{method}")


def test_routing_key_of_a_long_url_is_cut_to_255_bytes() -> None:
    call = make_xmlrpc_call("http://h/" + "p" * 600, "m")
    assert len(call.routing_key.encode()) == 255


@pytest.mark.parametrize(
    "server",
    [
        "",
        None,
        42,
        "ftp://h/RPC2",
        "file:///etc/passwd",
        "http:///RPC2",
        "127.0.0.1:8000/RPC2",
        "//h/RPC2",
        "http://user:secret@h/RPC2",
        "http://allowed.example@elsewhere/RPC2",
        "http://h/RPC2#fragment",
        "http://h:99999/",
        "http://h:port/",
        "http://h/RPC 2",
        "http://h/RPC2\n",
        "http://h/\x00",
        "http://h/" + "x" * 3000,
    ],
)
def test_bad_servers_are_refused(server: Any) -> None:
    with pytest.raises(MessageFormatError, match="server"):
        make_xmlrpc_call(server, "ping")


@pytest.mark.parametrize("server", ["http://h/", "https://h:8443/RPC2", "HTTP://H/x?y=1", "http://[::1]:80/"])
def test_good_servers_are_accepted(server: str) -> None:
    assert make_xmlrpc_call(server, "ping").server == server


@pytest.mark.parametrize(
    "method",
    ["", None, 5, "_private", "a._b", "a.__class__", "a..b", ".a", "a.", "a-b", "a b", "a/b", "é", "m" * 256],
)
def test_bad_methods_are_refused(method: Any) -> None:
    with pytest.raises(MessageFormatError, match="dotted name"):
        make_xmlrpc_call(SERVER, method)


@pytest.mark.parametrize("method", ["add", "system.listMethods", "a1.b_2.c3", "v2.check", "x_"])
def test_good_methods_are_accepted(method: str) -> None:
    assert make_xmlrpc_call(SERVER, method).method == method


@pytest.mark.parametrize("arguments", ["abc", b"abc", {"a": 1}, 5, None])
def test_arguments_must_be_a_list(arguments: Any) -> None:
    with pytest.raises(MessageFormatError, match="'arguments' must be a list"):
        make_xmlrpc_call(SERVER, "m", arguments)
    if arguments is not None:
        with pytest.raises(MessageFormatError, match="'arguments' must be a list"):
            parse_xmlrpc_call({"server": SERVER, "method": "m", "arguments": arguments})


@pytest.mark.parametrize("body", [None, [], "text", 5])
def test_body_must_be_an_object(body: Any) -> None:
    with pytest.raises(MessageFormatError, match="must be a JSON object"):
        parse_xmlrpc_call(body)


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(MessageFormatError, match="unknown keys in XML-RPC call message: kwargs, options"):
        parse_xmlrpc_call({"server": SERVER, "method": "m", "kwargs": {}, "options": {}})


def test_missing_server_or_method_is_refused() -> None:
    with pytest.raises(MessageFormatError, match="'server'"):
        parse_xmlrpc_call({"method": "m"})
    with pytest.raises(MessageFormatError, match="method"):
        parse_xmlrpc_call({"server": SERVER})


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def _recursive() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


@pytest.mark.parametrize(
    ("argument", "match"),
    [
        (2**31, "int exceeds XML-RPC limits"),
        (-(2**31) - 1, "int exceeds XML-RPC limits"),
        (float("nan"), "NaN or infinity"),
        (float("-inf"), "NaN or infinity"),
        ({"deep": [1, float("inf")]}, "NaN or infinity"),
        ("nul \x00 byte", r"'\\x00'"),
        ("escape \x1b", r"'\\x1b'"),
        ("lone surrogate \ud800", r"'\\ud800'"),
        ({"k": "\uffff"}, r"'\\uffff'"),
        (object(), "cannot marshal"),
        ({1: "a"}, "dictionary key must be string"),
        (_recursive(), "recursive"),
        (_nested(5000), "cannot be sent by XML-RPC"),
    ],
)
def test_arguments_xmlrpc_cannot_carry_are_refused(argument: Any, match: str) -> None:
    with pytest.raises(MessageFormatError, match=match):
        make_xmlrpc_call(SERVER, "m", [argument])


def test_arguments_xmlrpc_can_carry_are_accepted() -> None:
    arguments = [
        2**31 - 1,
        -(2**31),
        1.5,
        True,
        None,
        "tab\tnewline\n <&> é 😀",
        [1, [2, {"a": []}]],
        {"nested": {"list": [False, None]}},
        b"\x00binary",
        datetime.datetime(2026, 1, 2, 3, 4, 5),
    ]
    assert make_xmlrpc_call(SERVER, "m", arguments).arguments == tuple(arguments)


def test_multicall_methods_are_the_inner_calls() -> None:
    call = make_xmlrpc_call(
        SERVER,
        MULTICALL,
        [[{"methodName": "add", "params": [1, 2]}, {"methodName": "system.listMethods", "params": []}]],
    )
    assert call.methods == (MULTICALL, "add", "system.listMethods")
    assert make_xmlrpc_call(SERVER, "add", [1, 2]).methods == ("add",)


@pytest.mark.parametrize(
    "arguments",
    [
        [],
        [[], []],
        ["add"],
        [[{"methodName": "add"}]],
        [[{"methodName": "add", "params": 5}]],
        [[{"methodName": "add", "params": [], "extra": 1}]],
        [["add"]],
    ],
)
def test_malformed_multicalls_are_refused(arguments: list[Any]) -> None:
    with pytest.raises(MessageFormatError, match=r"system.multicall takes one array"):
        make_xmlrpc_call(SERVER, MULTICALL, arguments)


def test_multicall_inner_names_are_validated_and_cannot_nest() -> None:
    with pytest.raises(MessageFormatError, match="dotted name"):
        make_xmlrpc_call(SERVER, MULTICALL, [[{"methodName": "_secret", "params": []}]])
    with pytest.raises(MessageFormatError, match=r"cannot call system\.multicall"):
        make_xmlrpc_call(SERVER, MULTICALL, [[{"methodName": MULTICALL, "params": [[]]}]])


def test_describe() -> None:
    consumer = XmlRpcHandler(AllowMap())
    assert consumer.describe({"server": SERVER, "method": "add"}) == f"XML-RPC add on {SERVER}"
    assert consumer.describe({"server": 5}) == "XML-RPC call"
    assert consumer.describe("junk") == "XML-RPC call"


def test_call_is_frozen() -> None:
    call = XmlRpcCall(SERVER, "m")
    with pytest.raises(AttributeError):
        call.method = "other"  # type: ignore[misc]
