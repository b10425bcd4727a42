"""Waking the SQS consumer: ``wake()`` returns a receive blocked in a long poll at once; what the poll
still brings goes to the next receive, or is made visible again at once when the consumer closed."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from kq.core.driver import Delivery, DriverSpec, QueueSpec
from kq.drivers.sqs import SqsDriver
from kq.drivers.sqs._wire import KQ


class _SlowReceiver:
    """A boto3 SQS client whose long poll answers only when the test says so."""

    def __init__(self) -> None:
        self.answer = threading.Event()
        self.messages: list[dict[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.settled = threading.Event()

    def receive_message(self, **arguments: Any) -> dict[str, Any]:
        self.calls.append(("receive_message", arguments))
        self.answer.wait(30)
        self.answer.clear()
        taken, self.messages = self.messages, []
        return {"Messages": taken}

    def __getattr__(self, name: str) -> Any:
        def call(**arguments: Any) -> dict[str, Any]:
            self.calls.append((name, arguments))
            self.settled.set()
            return {"Successful": [], "Failed": []}

        return call


def _raw(n: int) -> dict[str, Any]:
    return {
        "MessageId": f"sqs-{n}",
        "ReceiptHandle": f"r{n}",
        "Body": '"hello"',
        "Attributes": {"ApproximateReceiveCount": "1"},
        "MessageAttributes": {KQ: {"DataType": "String", "StringValue": json.dumps({"id": f"m{n}"})}},
    }


def _consumer(client: _SlowReceiver, **options: Any) -> Any:
    spec = DriverSpec(
        name="sqs", type="sqs", options={"region": "us-east-1", "visibility_timeout": 30, **options}
    )
    driver = SqsDriver(spec, [QueueSpec(name="demo", driver="sqs")])
    driver._urls["demo"] = "http://sqs/demo"
    driver._clients["poll"] = driver._clients["lease"] = client
    return driver.consumer("demo")


def _receive_in_thread(consumer: Any, timeout: float) -> tuple[threading.Thread, list[Delivery | None]]:
    got: list[Delivery | None] = []
    thread = threading.Thread(target=lambda: got.append(consumer.receive(timeout)), daemon=True)
    thread.start()
    return thread, got


def test_the_consumer_is_wakeable_and_waits_its_long_poll() -> None:
    consumer = _consumer(_SlowReceiver())
    assert consumer.wakeable
    assert consumer.idle_wait == 20.0
    assert _consumer(_SlowReceiver(), wait_time=0).idle_wait is None


def test_wake_returns_a_receive_blocked_in_a_long_poll_at_once() -> None:
    client = _SlowReceiver()
    consumer = _consumer(client)
    thread, got = _receive_in_thread(consumer, 20.0)
    time.sleep(0.3)
    woken = time.monotonic()
    consumer.wake()
    thread.join(5)
    assert got == [None]
    assert time.monotonic() - woken < 1.0
    assert client.calls[0][1]["WaitTimeSeconds"] == 20
    # The poll still in flight answers: its message goes to the next receive, without a new poll.
    client.messages = [_raw(1)]
    client.answer.set()
    delivery = consumer.receive(5.0)
    assert delivery is not None
    assert delivery.message_id == "m1"
    assert [name for name, _ in client.calls].count("receive_message") == 1
    consumer.ack(delivery)


def test_a_poll_answering_after_close_releases_what_it_brought() -> None:
    client = _SlowReceiver()
    consumer = _consumer(client)
    thread, _ = _receive_in_thread(consumer, 20.0)
    time.sleep(0.3)
    consumer.wake()
    thread.join(5)
    consumer.close()
    client.messages = [_raw(1), _raw(2)]
    client.answer.set()
    assert client.settled.wait(5), "the messages of the late poll were not released"
    name, arguments = client.calls[-1]
    assert name == "change_message_visibility_batch"
    assert sorted(e["ReceiptHandle"] for e in arguments["Entries"]) == ["r1", "r2"]
    assert all(e["VisibilityTimeout"] == 0 for e in arguments["Entries"])
    assert not consumer._buffer


def test_the_error_of_a_poll_is_raised_by_the_receive_waiting_for_it() -> None:
    client = _SlowReceiver()
    consumer = _consumer(client)

    def failing(**arguments: Any) -> dict[str, Any]:
        raise ConnectionResetError("connection reset by peer")

    client.receive_message = failing  # type: ignore[method-assign]
    with pytest.raises(ConnectionResetError, match="reset"):
        consumer.receive(1.0)
