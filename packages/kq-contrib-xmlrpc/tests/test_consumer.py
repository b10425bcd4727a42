"""The XML-RPC consumer against servers on 127.0.0.1: the allow-list first, then the call and its failures."""

from __future__ import annotations

import datetime
import http.client
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from kq.contrib.xmlrpc import MULTICALL, XmlRpcFault, XmlRpcHandler
from kq.contrib.xmlrpc._transport import LimitedSafeTransport, transport_for
from kq.core import (
    AllowMap,
    App,
    Delivery,
    ExecutionFailedError,
    MessageFormatError,
    NotAllowedError,
    parse_config,
)

if TYPE_CHECKING:
    from conftest import Canned, RecordingServer

DELIVERY = Delivery(
    body=b"", content_type="application/json", headers={}, routing_key="", message_id="x", queue="q"
)


def consumer_for(server: str, *methods: str, **settings: Any) -> XmlRpcHandler:
    return XmlRpcHandler(AllowMap({server: list(methods or ["re:.*"])}), **settings)


def consume(consumer: XmlRpcHandler, server: str, method: str, arguments: list[Any] | None = None) -> Any:
    body: dict[str, Any] = {"server": server, "method": method}
    if arguments is not None:
        body["arguments"] = arguments
    return consumer.consume(body, DELIVERY)


# -- results -----------------------------------------------------------------------------------------


def test_the_return_value_is_the_result(rpc_server: RecordingServer) -> None:
    consumer = consumer_for(rpc_server.url, "add")
    assert consume(consumer, rpc_server.url, "add", [2, 3]) == 5
    assert rpc_server.calls == [("add", (2, 3))]
    assert rpc_server.requests == ["/"]


@pytest.mark.parametrize(
    ("method", "arguments", "result"),
    [
        ("echo", ["a", 1, 2.5, True, None, [1, {"k": "v"}]], ["a", 1, 2.5, True, None, [1, {"k": "v"}]]),
        ("binary", [], b"\x00\xffbytes"),
        ("when", [], datetime.datetime(2026, 1, 2, 3, 4, 5)),
        ("nothing", [], None),
        ("report.build", [], {"ok": True, "items": [1, 2.5, "three"]}),
    ],
)
def test_xmlrpc_types_become_builtin_python_types(
    rpc_server: RecordingServer, method: str, arguments: list[Any], result: Any
) -> None:
    assert consume(consumer_for(rpc_server.url), rpc_server.url, method, arguments) == result


def test_no_arguments_key_calls_without_arguments(rpc_server: RecordingServer) -> None:
    assert consume(consumer_for(rpc_server.url, "nothing"), rpc_server.url, "nothing") is None
    assert rpc_server.calls == [("nothing", ())]


def test_introspection(rpc_server: RecordingServer) -> None:
    consumer = consumer_for(rpc_server.url, "re:system\\..*")
    assert "add" in consume(consumer, rpc_server.url, "system.listMethods")


# -- the allow-list, checked before any network call --------------------------------------------------


def test_unknown_server_is_refused_without_a_call(rpc_server: RecordingServer) -> None:
    consumer = consumer_for("http://127.0.0.1:1/", "add")
    with pytest.raises(NotAllowedError, match=r"XML-RPC server 'http://127.0.0.1:\d+/' is not in the allow"):
        consume(consumer, rpc_server.url, "add", [2, 3])
    assert rpc_server.requests == []


def test_refused_method_names_the_method(rpc_server: RecordingServer) -> None:
    consumer = consumer_for(rpc_server.url, "add", "re:report\\..*")
    with pytest.raises(NotAllowedError, match=r"method 'fail' of XML-RPC server .* \(\[allow.xmlrpc\]\)"):
        consume(consumer, rpc_server.url, "fail", ["x"])
    with pytest.raises(NotAllowedError, match=r"method 'system\.listMethods'"):
        consume(consumer, rpc_server.url, "system.listMethods")
    assert rpc_server.requests == []
    assert consume(consumer, rpc_server.url, "report.build") == {"ok": True, "items": [1, 2.5, "three"]}


def test_empty_allow_list_refuses_everything(rpc_server: RecordingServer) -> None:
    with pytest.raises(NotAllowedError, match="XML-RPC server"):
        consume(XmlRpcHandler(AllowMap()), rpc_server.url, "add", [1, 2])
    assert rpc_server.requests == []


def test_server_patterns_match_the_whole_url(rpc_server: RecordingServer) -> None:
    port = rpc_server.server_address[1]
    consumer = XmlRpcHandler(AllowMap({f"re:http://127\\.0\\.0\\.1:{port}/": ["add"]}))
    assert consume(consumer, rpc_server.url, "add", [1, 1]) == 2
    with pytest.raises(NotAllowedError, match="XML-RPC server"):
        consume(consumer, rpc_server.url + "RPC2", "add", [1, 1])
    assert rpc_server.requests == ["/"]


def test_exact_server_entries_are_not_prefixes(rpc_server: RecordingServer) -> None:
    consumer = consumer_for(rpc_server.url.rstrip("/"), "add")
    with pytest.raises(NotAllowedError, match="XML-RPC server"):
        consume(consumer, rpc_server.url, "add", [1, 1])
    assert rpc_server.requests == []


def test_multicall_needs_every_inner_method_allowed(rpc_server: RecordingServer) -> None:
    consumer = consumer_for(rpc_server.url, MULTICALL, "add")
    calls = [{"methodName": "add", "params": [1, 2]}, {"methodName": "fail", "params": ["x"]}]
    with pytest.raises(NotAllowedError, match=r"method 'fail' \(called through system.multicall\)"):
        consume(consumer, rpc_server.url, MULTICALL, [calls])
    assert rpc_server.requests == []
    assert consume(consumer, rpc_server.url, MULTICALL, [calls[:1]]) == [[3]]
    assert [name for name, _ in rpc_server.calls] == [MULTICALL, "add"]


def test_multicall_itself_must_be_allowed(rpc_server: RecordingServer) -> None:
    consumer = consumer_for(rpc_server.url, "add")
    with pytest.raises(NotAllowedError, match=r"method 'system\.multicall'"):
        consume(consumer, rpc_server.url, MULTICALL, [[{"methodName": "add", "params": [1, 2]}]])
    assert rpc_server.requests == []


@pytest.mark.parametrize(
    "body",
    [
        {"server": "SERVER", "method": "add", "arguments": [2**40]},
        {"server": "SERVER", "method": "_add"},
        {"server": "SERVER", "method": "add", "extra": 1},
        {"server": "SERVER", "method": "add", "arguments": "2 3"},
    ],
)
def test_malformed_messages_fail_before_any_call(rpc_server: RecordingServer, body: dict[str, Any]) -> None:
    body = {**body, "server": rpc_server.url}
    with pytest.raises(MessageFormatError):
        consumer_for(rpc_server.url).consume(body, DELIVERY)
    assert rpc_server.requests == []


def test_from_context_reads_allow_xmlrpc(tmp_path: Any) -> None:
    config = parse_config(
        {
            "queues": {"rpc": {"consumer": "xmlrpc"}},
            "allow": {"xmlrpc": {"http://h/RPC2": ["add", "re:report\\..*"]}},
        },
        source="test",
        root=str(tmp_path),
    )
    with App(config) as app:
        consumer = app.handler("rpc")
    assert isinstance(consumer, XmlRpcHandler)
    assert consumer.allowed.allows("http://h/RPC2", "report.weekly")
    assert not consumer.allowed.allows("http://h/RPC2", "fail")
    assert consumer.kind == "xmlrpc"


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        XmlRpcHandler(AllowMap(), timeout=0)


# -- failures ------------------------------------------------------------------------------------------


def test_a_fault_is_a_failed_execution_carrying_the_fault(rpc_server: RecordingServer) -> None:
    with pytest.raises(
        ExecutionFailedError, match=r"XML-RPC fail on .*: fault 1: .*ValueError.*boom"
    ) as info:
        consume(consumer_for(rpc_server.url, "fail"), rpc_server.url, "fail", ["boom"])
    fault = info.value.result
    assert isinstance(fault, XmlRpcFault)
    assert (fault.server, fault.method, fault.fault_code) == (rpc_server.url, "fail", 1)
    assert "boom" in fault.fault_string
    assert fault.as_dict()["fault_code"] == 1


def test_an_unknown_method_is_a_fault(rpc_server: RecordingServer) -> None:
    with pytest.raises(ExecutionFailedError, match=r"fault 1: .*not supported") as info:
        consume(consumer_for(rpc_server.url), rpc_server.url, "missing.method")
    assert isinstance(info.value.result, XmlRpcFault)


def test_http_error_status_is_a_failed_execution(rpc_server: RecordingServer) -> None:
    url = rpc_server.url + "not-an-rpc-path"
    with pytest.raises(ExecutionFailedError, match="answered HTTP 404"):
        consume(consumer_for(url), url, "add", [1, 2])


def test_redirects_are_not_followed(
    rpc_server: RecordingServer, canned_server: Callable[..., Canned]
) -> None:
    redirect = canned_server(302, headers={"Location": rpc_server.url})
    with pytest.raises(ExecutionFailedError, match=r"HTTP 302 Found \(redirects are not followed\)"):
        consume(consumer_for(redirect.url), redirect.url, "add", [1, 2])
    assert redirect.hits == 1
    assert rpc_server.requests == []


@pytest.mark.parametrize(
    ("body", "headers", "match"),
    [
        (b"hello, not XML", {}, "invalid response"),
        (b"<?xml version='1.0'?><methodResponse></methodResponse>", {}, "invalid response"),
        (
            b"<methodResponse><params><param><value><int>x</int></value></param></params></methodResponse>",
            {},
            "invalid response",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
            b"<methodResponse><params><param><value><string>&b;</string></value></param></params>"
            b"</methodResponse>",
            {},
            "has a <!DOCTYPE>",
        ),
        (b"\x1f\x8b compressed", {"Content-Encoding": "gzip"}, r"compressed \(gzip\)"),
    ],
)
def test_malformed_or_refused_responses_are_failed_executions(
    canned_server: Callable[..., Canned], body: bytes, headers: dict[str, str], match: str
) -> None:
    server = canned_server(200, body, headers)
    with pytest.raises(ExecutionFailedError, match=match):
        consume(consumer_for(server.url), server.url, "m")


def test_responses_beyond_the_size_limit_are_refused(
    rpc_server: RecordingServer, canned_server: Callable[..., Canned]
) -> None:
    consumer = consumer_for(rpc_server.url, "big", max_response=4096)
    assert consume(consumer, rpc_server.url, "big", [1000]) == "x" * 1000
    with pytest.raises(ExecutionFailedError, match=r"announces \d+ bytes, more than the limit of 4096"):
        consume(consumer, rpc_server.url, "big", [10_000])
    chunked = canned_server(200, b"x" * 10_000, {"Content-Length": "", "Connection": "close"})
    with pytest.raises(ExecutionFailedError, match="larger than the limit of 4096"):
        consume(consumer_for(chunked.url, max_response=4096), chunked.url, "m")


def test_connection_refused_is_a_failed_execution() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    with pytest.raises(ExecutionFailedError, match=r"connection failed \(ConnectionRefusedError"):
        consume(consumer_for(url), url, "add", [1, 2])


def test_a_silent_server_times_out(silent_port: int) -> None:
    url = f"http://127.0.0.1:{silent_port}/"
    started = time.monotonic()
    with pytest.raises(ExecutionFailedError, match=r"no answer within 0.3s"):
        consume(consumer_for(url, timeout=0.3), url, "add", [1, 2])
    assert time.monotonic() - started < 5


def test_a_call_is_sent_once_even_when_the_server_hangs_up() -> None:
    """The standard transport sends a request again when the connection drops, which could run a
    call twice; ours sends it once."""
    accepted = 0
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        nonlocal accepted
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted += 1
            with connection:
                connection.settimeout(5)
                data = b""
                while b"</methodCall>" not in data and (chunk := connection.recv(65536)):
                    data += chunk

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    try:
        with pytest.raises(ExecutionFailedError, match="connection failed"):
            consume(consumer_for(url), url, "add", [1, 2])
        time.sleep(0.3)  # a second attempt, if any, would have connected by now
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
    assert accepted == 1


def test_https_servers_get_a_tls_transport_with_the_timeout(rpc_server: RecordingServer) -> None:
    transport = transport_for("HTTPS://h/", timeout=7.0, max_response=10)
    assert isinstance(transport, LimitedSafeTransport)
    connection = transport.make_connection("h")
    assert isinstance(connection, http.client.HTTPSConnection)
    assert connection.timeout == 7.0
    plain = transport_for("http://h/", timeout=7.0, max_response=10)
    assert not isinstance(plain, LimitedSafeTransport)
    assert plain.make_connection("h").timeout == 7.0
    # TLS to a plain-HTTP server fails in the handshake: a connection failure, not a crash.
    url = rpc_server.url.replace("http:", "https:")
    with pytest.raises(ExecutionFailedError, match=r"connection failed \(SSL"):
        consume(consumer_for(url), url, "add", [1, 2])
