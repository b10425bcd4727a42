"""EventDispatcher: priority order, queue binding, failing listeners and vetoes."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from kq.core import (
    Delivery,
    Event,
    EventDispatcher,
    Message,
    MessageConsumed,
    MessageConsumptionFailed,
    MessageReceived,
    MessageSent,
    ProcessStarted,
    ProcessStopped,
)


def _delivery(queue: str = "a") -> Delivery:
    return Delivery(b"{}", "application/json", {}, "app.cmd", "id-1", queue)


def _received(queue: str = "a") -> MessageReceived:
    return MessageReceived(delivery=_delivery(queue), body={}, handler=None)


def _recorder(calls: list[str], label: str) -> Any:
    def listener(event: Event) -> None:
        calls.append(label)

    return listener


@pytest.mark.parametrize(
    ("registrations", "expected"),
    [
        ([("low", 0), ("high", 10)], ["high", "low"]),
        ([("a", 0), ("b", 0), ("c", 0)], ["a", "b", "c"]),
        ([("a", 1), ("b", 5), ("c", 1), ("d", 5), ("e", -3)], ["b", "d", "a", "c", "e"]),
        ([("neg", -1), ("zero", 0)], ["zero", "neg"]),
    ],
)
def test_priority_order(registrations: list[tuple[str, int]], expected: list[str]) -> None:
    calls: list[str] = []
    dispatcher = EventDispatcher()
    for label, priority in registrations:
        dispatcher.add_listener("process_started", _recorder(calls, label), priority=priority)
    event = ProcessStarted(pid=1, command=["kq"])
    assert dispatcher.dispatch(event) is event
    assert calls == expected


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (_received("a"), ["any", "a"]),
        (_received("b"), ["any", "b"]),
        (MessageSent(queue_name="a", messages=[Message(b"x")]), ["any", "a"]),
        (MessageConsumed(delivery=_delivery("b"), body={}, handler=None, result=0), ["any", "b"]),
        (
            MessageConsumptionFailed(delivery=_delivery("a"), body=None, handler=None, error=ValueError()),
            ["any", "a"],
        ),
        (ProcessStarted(pid=1, command=["kq"]), ["any"]),
        (ProcessStopped(pid=1), ["any"]),
    ],
)
def test_queue_binding(event: Event, expected: list[str]) -> None:
    calls: list[str] = []
    dispatcher = EventDispatcher()
    for name in (
        "message_received",
        "message_sent",
        "message_consumed",
        "message_consumption_failed",
        "process_started",
        "process_stopped",
    ):
        dispatcher.add_listener(name, _recorder(calls, "any"), priority=1)
        dispatcher.add_listener(name, _recorder(calls, "a"), queue="a")
        dispatcher.add_listener(name, _recorder(calls, "b"), queue="b")
    dispatcher.dispatch(event)
    assert calls == expected


def test_only_listeners_of_the_event_run() -> None:
    calls: list[str] = []
    dispatcher = EventDispatcher()
    dispatcher.add_listener("process_stopped", _recorder(calls, "stopped"))
    dispatcher.dispatch(ProcessStarted(pid=1, command=[]))
    assert calls == []
    assert dispatcher.has_listeners("process_stopped")
    assert not dispatcher.has_listeners("process_started")


def test_failing_listener_is_logged_and_others_run(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener exploded")

    dispatcher = EventDispatcher()
    dispatcher.add_listener("message_received", _recorder(calls, "first"), priority=2)
    dispatcher.add_listener("message_received", broken, priority=1)
    dispatcher.add_listener("message_received", _recorder(calls, "last"))
    with caplog.at_level(logging.ERROR, logger="kq.core.events"):
        event = dispatcher.dispatch(_received("q1"))
    assert calls == ["first", "last"]
    assert event.vetoed_by is None
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert "broken" in record.getMessage()
    assert "message_received" in record.getMessage()
    assert "q1" in record.getMessage()
    # One line saying what failed; the traceback only at DEBUG (issue 10).
    assert "RuntimeError: listener exploded" in record.getMessage()
    assert not record.exc_info
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="kq.core.events"):
        dispatcher.dispatch(_received("q1"))
    [record] = caplog.records
    assert record.exc_info
    assert str(record.exc_info[1]) == "listener exploded"


@pytest.mark.parametrize(
    ("reason", "expected"), [("spam", "spam"), ("", "vetoed by a message_received listener")]
)
def test_veto_stops_the_chain(reason: str, expected: str) -> None:
    calls: list[str] = []

    def veto(event: MessageReceived) -> None:
        calls.append("veto")
        event.veto(reason)

    dispatcher = EventDispatcher()
    dispatcher.add_listener("message_received", _recorder(calls, "before"), priority=5)
    dispatcher.add_listener("message_received", veto, priority=3)
    dispatcher.add_listener("message_received", _recorder(calls, "after"))
    event = dispatcher.dispatch(_received())
    assert calls == ["before", "veto"]
    assert event.vetoed_by == expected


def test_veto_then_raise_still_stops_the_chain(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def veto_and_fail(event: MessageReceived) -> None:
        event.veto("no")
        raise RuntimeError("after veto")

    dispatcher = EventDispatcher()
    dispatcher.add_listener("message_received", veto_and_fail, priority=1)
    dispatcher.add_listener("message_received", _recorder(calls, "after"))
    with caplog.at_level(logging.ERROR, logger="kq.core.events"):
        assert dispatcher.dispatch(_received()).vetoed_by == "no"
    assert calls == []
    assert len(caplog.records) == 1


def test_remove_listener() -> None:
    calls: list[str] = []
    keep, drop = _recorder(calls, "keep"), _recorder(calls, "drop")
    dispatcher = EventDispatcher()
    dispatcher.add_listener("process_started", drop, priority=9)
    dispatcher.add_listener("process_started", keep)
    dispatcher.add_listener("process_started", drop, queue="x")
    dispatcher.remove_listener("process_started", drop)
    dispatcher.remove_listener("process_stopped", drop)  # nothing registered: no error
    dispatcher.dispatch(ProcessStarted(pid=1, command=[]))
    assert calls == ["keep"]
    dispatcher.remove_listener("process_started", keep)
    assert not dispatcher.has_listeners("process_started")


def test_remove_bound_method_listener() -> None:
    class Counter:
        def __init__(self) -> None:
            self.count = 0

        def on_started(self, event: Event) -> None:
            self.count += 1

    counter = Counter()
    dispatcher = EventDispatcher()
    dispatcher.add_listener("process_started", counter.on_started)
    dispatcher.remove_listener("process_started", counter.on_started)
    dispatcher.dispatch(ProcessStarted(pid=1, command=[]))
    assert counter.count == 0


@pytest.mark.parametrize("name", ["", "message-received", "MessageReceived", "message_acked"])
def test_unknown_event_name(name: str) -> None:
    with pytest.raises(ValueError, match=rf"unknown event '{name}'; known: message_sent, message_received"):
        EventDispatcher().add_listener(name, print)


def test_event_names_and_queues() -> None:
    assert [
        cls.name
        for cls in (
            MessageSent,
            MessageReceived,
            MessageConsumed,
            MessageConsumptionFailed,
            ProcessStarted,
            ProcessStopped,
        )
    ] == [
        "message_sent",
        "message_received",
        "message_consumed",
        "message_consumption_failed",
        "process_started",
        "process_stopped",
    ]
    assert _received("z").queue == "z"
    assert ProcessStopped(pid=3).queue is None


def test_observers_still_see_a_vetoed_message() -> None:
    dispatcher = EventDispatcher()
    seen: list[str] = []
    dispatcher.add_listener("message_received", lambda e: e.veto("no"), priority=10)
    dispatcher.add_listener("message_received", lambda e: seen.append("plain"))
    dispatcher.add_listener("message_received", lambda e: seen.append("observer"), observer=True)
    delivery = Delivery(body=b"", content_type="", headers={}, routing_key="", message_id="m", queue="q")
    event = dispatcher.dispatch(MessageReceived(delivery=delivery, body=None, handler=None))
    assert event.vetoed_by == "no"
    assert seen == ["observer"]
