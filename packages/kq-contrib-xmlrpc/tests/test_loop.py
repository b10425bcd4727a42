"""Producer -> sqlite queue -> consume loop -> XML-RPC server, in one process; results reach listeners."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from kq.contrib.xmlrpc import XmlRpcFault, XmlRpcHandler, XmlRpcProducer
from kq.core import App, Delivery, ExecutionFailedError, Limits, NotAllowedError, parse_config
from kq.core.listeners import Accumulator
from kq.core.testing import receive_within

if TYPE_CHECKING:
    from conftest import RecordingServer


@pytest.fixture
def app(tmp_path: Path, rpc_server: RecordingServer) -> Iterator[App]:
    """A sqlite queue ``rpc`` whose workers may call add and fail on the test server."""
    config = parse_config(
        {
            "default_driver": "local",
            "drivers": {"local": {"type": "sqlite", "path": "queues.sqlite3", "poll_interval": 0.05}},
            "queues": {"rpc": {"consumer": "xmlrpc"}},
            "allow": {"xmlrpc": {rpc_server.url: ["add", "fail"]}},
        },
        source="test config",
        root=str(tmp_path),
    )
    with App(config) as instance:
        yield instance


def _run(app: App, messages: int = 1) -> Accumulator:
    accumulator = Accumulator()
    for event in accumulator.events:
        app.dispatcher.add_listener(event, accumulator)
    loop = app.consume_loop("rpc", limits=Limits(messages=messages), poll_interval=0.1)
    assert isinstance(loop.handler, XmlRpcHandler)
    loop.run()
    return accumulator


def _dead_letter(app: App) -> Delivery:
    with app.driver().consumer("rpc.failed") as consumer:
        delivery = receive_within(consumer, 5)
        consumer.ack(delivery)
        return delivery


def test_the_result_reaches_message_consumed_listeners(app: App, rpc_server: RecordingServer) -> None:
    message = app.producer_of(XmlRpcProducer, "rpc").publish(rpc_server.url, "add", [2, 3])
    assert message.routing_key == f"http...127.0.0.1.{rpc_server.server_address[1]}..add"

    accumulator = _run(app)

    assert accumulator.results == [5]
    assert accumulator.failures == []
    assert rpc_server.calls == [("add", (2, 3))]
    assert app.driver().queue_manager().info("rpc")["messages"] == 0


def test_a_batch_is_consumed_in_order(app: App, rpc_server: RecordingServer) -> None:
    app.producer_of(XmlRpcProducer, "rpc").publish_batch(
        [
            {"server": rpc_server.url, "method": "add", "arguments": [1, 2]},
            {"server": rpc_server.url, "method": "add", "arguments": ["a", "b"]},
        ]
    )
    assert _run(app, messages=2).results == [3, "ab"]


def test_a_fault_ends_in_the_dead_letter_queue_with_the_reason(app: App, rpc_server: RecordingServer) -> None:
    sent = app.producer_of(XmlRpcProducer, "rpc").publish(rpc_server.url, "fail", ["disk full"])

    accumulator = _run(app)

    assert accumulator.results == []
    [failure] = accumulator.failures
    assert failure.reason == "failed"
    assert failure.outcome == "dead-lettered"
    assert isinstance(failure.error, ExecutionFailedError)
    assert isinstance(failure.error.result, XmlRpcFault)
    assert "disk full" in failure.error.result.fault_string
    dead = _dead_letter(app)
    assert dead.message_id == sent.message_id
    assert dead.body == sent.body
    assert dead.headers["kq-dead-letter-reason"] == "failed"
    assert dead.headers["kq-original-queue"] == "rpc"
    assert dead.headers["kq-dead-letter-error"].startswith("ExecutionFailedError: XML-RPC fail on ")
    assert "fault 1:" in dead.headers["kq-dead-letter-error"]


def test_a_refused_call_is_dead_lettered_without_reaching_the_server(
    app: App, rpc_server: RecordingServer
) -> None:
    app.producer_of(XmlRpcProducer, "rpc").publish(rpc_server.url, "system.listMethods")

    accumulator = _run(app)

    [failure] = accumulator.failures
    assert isinstance(failure.error, NotAllowedError)
    assert failure.reason == "not-allowed"
    assert rpc_server.requests == []
    dead = _dead_letter(app)
    assert dead.headers["kq-dead-letter-reason"] == "not-allowed"
    assert "method 'system.listMethods'" in dead.headers["kq-dead-letter-error"]


def test_a_malformed_message_is_dead_lettered_as_invalid(app: App, rpc_server: RecordingServer) -> None:
    app.producer("rpc").publish(b'{"server": "gopher://h/", "method": "add"}')

    [failure] = _run(app).failures

    assert failure.reason == "invalid"
    assert rpc_server.requests == []
    assert _dead_letter(app).headers["kq-dead-letter-reason"] == "invalid"
