"""The SQS driver's producer and consumer on a fake boto3 client: batches, FIFO ids, retries of failed
entries, the receive buffer's leases, expiry, routing defects, settling and release."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from kq.core import Message
from kq.core.driver import DriverSpec, MessageFormatError, PublishError, QueueSpec
from kq.drivers.sqs import SqsDriver
from kq.drivers.sqs._producer import MAX_BYTES
from kq.drivers.sqs._wire import KQ, ROUTING_KEY


def _driver(queues: list[QueueSpec] | None = None, **options: Any) -> SqsDriver:
    options.setdefault("region", "us-east-1")
    return SqsDriver(DriverSpec(name="sqs", type="sqs", options=options, source="kq.toml"), queues or [])


def _queue(name: str = "demo", **options: Any) -> QueueSpec:
    return QueueSpec(name=name, driver="sqs", options=options, source="kq.toml")


class _FakeClient:
    """Just enough of boto3's SQS client for the producer."""

    def __init__(self, failures: list[list[dict[str, Any]]] | None = None) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self.failures = failures or []

    def get_queue_url(self, QueueName: str) -> dict[str, str]:  # noqa: N803 - boto3's names
        return {"QueueUrl": f"http://sqs/{QueueName}"}

    def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
        return {"Attributes": {"MaximumMessageSize": str(MAX_BYTES)}}

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        self.calls.append(Entries)
        failed = self.failures.pop(0) if self.failures else []
        return {"Successful": [], "Failed": [f for f in failed if any(e["Id"] == f["Id"] for e in Entries)]}


def _with_client(driver: SqsDriver, client: _FakeClient) -> SqsDriver:
    driver._clients["default"] = client
    return driver


def test_publish_filters_by_routing_key_and_chunks_by_ten() -> None:
    client = _FakeClient()
    driver = _with_client(_driver([QueueSpec(name="demo", driver="sqs", routing_keys=("hello.*",))]), client)
    messages = [Message(b"{}", routing_key="hello.world") for _ in range(23)] + [
        Message(b"{}", routing_key="no")
    ]
    driver.producer("demo").send_batch(messages)
    assert [len(c) for c in client.calls] == [10, 10, 3]


def test_a_too_large_message_is_refused_before_anything_is_sent() -> None:
    client = _FakeClient()
    driver = _with_client(_driver([_queue()]), client)
    with pytest.raises(MessageFormatError, match="limit"):
        driver.producer("demo").send_batch([Message(b"{}"), Message(b"x" * MAX_BYTES)])
    assert client.calls == []


def test_fifo_entries_get_a_group_and_a_fresh_dedup_id_per_publish() -> None:
    client = _FakeClient()
    driver = _with_client(_driver([_queue("orders", fifo=True, group_id="g")]), client)
    message = Message(b"{}", headers={"kq-group": "customer-7"})
    driver.producer("orders").send_batch([message, Message(b"{}")])
    driver.producer("orders").send(message)  # the same message again: a retry copy
    first, second = client.calls
    assert [e["MessageGroupId"] for e in first] == ["customer-7", "g"]
    ids = {e["MessageDeduplicationId"] for e in first + second}
    assert len(ids) == 3
    assert message.message_id not in ids
    assert all("DelaySeconds" not in e for e in first)


def test_transient_failures_are_sent_again_and_permanent_ones_reported() -> None:
    transient = [{"Id": "1", "SenderFault": False, "Code": "InternalError", "Message": "try again"}]
    permanent = [{"Id": "2", "SenderFault": True, "Code": "InvalidMessageContents", "Message": "bad"}]
    client = _FakeClient([transient + permanent, []])
    driver = _with_client(_driver([_queue()]), client)
    messages = [Message(b"{}") for _ in range(3)]
    with pytest.raises(PublishError, match="InvalidMessageContents") as caught:
        driver.producer("demo").send_batch(messages)
    assert [e["Id"] for e in client.calls[1]] == ["1"]
    assert caught.value.published == [messages[0].message_id, messages[1].message_id]
    assert caught.value.failed == [messages[2].message_id]


def test_delays_become_whole_delay_seconds() -> None:
    client = _FakeClient()
    driver = _with_client(_driver([_queue()]), client)
    driver.producer("demo").send_batch([Message(b"{}", delay=2.2), Message(b"{}")])
    assert [e.get("DelaySeconds") for e in client.calls[0]] == [3, None]


# -- consumer buffer ------------------------------------------------------------------------------


class _FakeReceiver:
    """Just enough of boto3's SQS client for the consumer: hands out queued raw messages."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def receive_message(self, **arguments: Any) -> dict[str, Any]:
        self.calls.append(("receive_message", arguments))
        count = arguments["MaxNumberOfMessages"]
        taken, self.messages = self.messages[:count], self.messages[count:]
        return {"Messages": taken}

    def __getattr__(self, name: str) -> Any:
        def call(**arguments: Any) -> dict[str, Any]:
            self.calls.append((name, arguments))
            return {"Successful": [], "Failed": []}

        return call


def _raw(body: str, n: int, **meta: Any) -> dict[str, Any]:
    kq = json.dumps({"id": f"m{n}", **meta})
    return {
        "MessageId": f"sqs-{n}",
        "ReceiptHandle": f"r{n}",
        "Body": body,
        "Attributes": {"ApproximateReceiveCount": "1"},
        "MessageAttributes": {KQ: {"DataType": "String", "StringValue": kq}},
    }


def _consumer(client: _FakeReceiver, routing_keys: tuple[str, ...] = (), prefetch: int = 10) -> Any:
    driver = _driver([QueueSpec(name="demo", driver="sqs", routing_keys=routing_keys)], visibility_timeout=10)
    driver._urls["demo"] = "http://sqs/demo"
    driver._clients["poll"] = driver._clients["lease"] = client
    return driver.consumer("demo", prefetch=prefetch)


def test_a_buffered_delivery_whose_lease_lapsed_is_never_handed_out() -> None:
    client = _FakeReceiver([_raw('"a"', 1), _raw('"b"', 2), _raw('"c"', 3)])
    consumer = _consumer(client)
    first = consumer.receive(0)
    assert first.message_id == "m1"
    assert client.calls[0][1]["WaitTimeSeconds"] == 0
    assert client.calls[0][1]["VisibilityTimeout"] == 10
    consumer._buffer[0].lease_expires = 0.0  # m2's visibility lapsed while buffered
    second = consumer.receive(0)
    assert second.message_id == "m3"
    consumer.ack(first)
    consumer.ack(second)
    assert [name for name, _ in client.calls].count("receive_message") == 1


def test_a_half_spent_buffered_lease_is_renewed_before_hand_out() -> None:
    client = _FakeReceiver([_raw('"a"', 1), _raw('"b"', 2)])
    consumer = _consumer(client)
    consumer.receive(0)
    consumer._buffer[0].lease_expires = time.monotonic() + 3  # less than half of 10 s left
    second = consumer.receive(0)
    assert second.lease_expires > time.monotonic() + 9
    assert (
        "change_message_visibility",
        {"QueueUrl": "http://sqs/demo", "ReceiptHandle": "r2", "VisibilityTimeout": 10},
    ) in client.calls


def test_expired_messages_are_deleted_and_a_non_matching_key_is_a_defect() -> None:
    raw = _raw('"late"', 1, exp=1.0)
    keyed = _raw('"other"', 2)
    keyed["MessageAttributes"][ROUTING_KEY] = {"DataType": "String", "StringValue": "bonjour.monde"}
    client = _FakeReceiver([raw, keyed])
    consumer = _consumer(client, routing_keys=("hello.#",))
    got = consumer.receive(0)
    assert got.message_id == "m2"
    assert "matches none of the queue's routing_keys" in got.defect
    assert ("delete_message", {"QueueUrl": "http://sqs/demo", "ReceiptHandle": "r1"}) in client.calls


def test_settling_after_the_lease_lapsed_changes_nothing() -> None:
    client = _FakeReceiver([_raw('"a"', 1)])
    consumer = _consumer(client)
    got = consumer.receive(0)
    got.lease_expires = 0.0
    consumer.ack(got)  # logged by the base class, not raised
    assert [name for name, _ in client.calls] == ["receive_message"]


def test_close_releases_buffered_and_unsettled_deliveries() -> None:
    client = _FakeReceiver([_raw('"a"', 1), _raw('"b"', 2), _raw('"c"', 3)])
    consumer = _consumer(client)
    consumer.ack(consumer.receive(0))
    consumer.receive(0)
    consumer.close()
    name, arguments = client.calls[-1]
    assert name == "change_message_visibility_batch"
    assert sorted(e["ReceiptHandle"] for e in arguments["Entries"]) == ["r2", "r3"]
    assert all(e["VisibilityTimeout"] == 0 for e in arguments["Entries"])


def test_list_available_names_known_queues_by_their_logical_name() -> None:
    driver = _driver([_queue("demo")], queue_prefix="p-")
    assert driver.logical_name("p-demo-failed") == "demo.failed"
    assert driver.logical_name("p-other") == "other"
    assert driver.logical_name("elsewhere") is None


# -- acknowledgements held for a batch -----------------------------------------------------------------


def _wait_for(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the timer never sent the held deletes"
        time.sleep(0.001)


def _names(client: _FakeReceiver) -> list[str]:
    return [name for name, _ in client.calls]


def test_acks_while_more_messages_are_buffered_leave_in_one_batch() -> None:
    client = _FakeReceiver([_raw('"a"', 1), _raw('"b"', 2), _raw('"c"', 3)])
    consumer = _consumer(client)
    for _ in range(3):
        consumer.ack(consumer.receive(0))
    assert _names(client) == ["receive_message", "delete_message_batch"]
    assert [e["ReceiptHandle"] for e in client.calls[1][1]["Entries"]] == ["r1", "r2", "r3"]


def test_an_ack_with_nothing_buffered_is_one_delete_at_once() -> None:
    client = _FakeReceiver([_raw('"a"', 1)])
    consumer = _consumer(client)
    consumer.ack(consumer.receive(0))
    assert client.calls[-1] == ("delete_message", {"QueueUrl": "http://sqs/demo", "ReceiptHandle": "r1"})


def test_a_held_delete_does_not_wait_for_a_long_handler() -> None:
    client = _FakeReceiver([_raw('"a"', 1), _raw('"b"', 2)])
    consumer = _consumer(client)
    consumer.ack(consumer.receive(0))
    consumer.receive(0)  # its handler runs long: the timer sends the first delete meanwhile
    _wait_for(lambda: "delete_message_batch" in _names(client))
    assert [e["ReceiptHandle"] for e in client.calls[-1][1]["Entries"]] == ["r1"]


def test_close_sends_held_deletes_before_releasing_the_rest() -> None:
    client = _FakeReceiver([_raw('"a"', 1), _raw('"b"', 2), _raw('"c"', 3)])
    consumer = _consumer(client)
    consumer._delete_delay = 60  # only close may send it
    consumer.ack(consumer.receive(0))
    consumer.close()
    assert _names(client) == ["receive_message", "delete_message_batch", "change_message_visibility_batch"]
    assert [e["ReceiptHandle"] for e in client.calls[1][1]["Entries"]] == ["r1"]
    assert sorted(e["ReceiptHandle"] for e in client.calls[2][1]["Entries"]) == ["r2", "r3"]


def test_a_held_delete_that_fails_is_logged_with_the_message_id(caplog: pytest.LogCaptureFixture) -> None:
    class _Refusing(_FakeReceiver):
        def delete_message_batch(self, **arguments: Any) -> dict[str, Any]:
            self.calls.append(("delete_message_batch", arguments))
            raise ConnectionResetError("connection reset by peer")

    client = _Refusing([_raw('"a"', 1), _raw('"b"', 2)])
    consumer = _consumer(client)
    consumer.ack(consumer.receive(0))
    _wait_for(lambda: "delete_message_batch" in _names(client))
    _wait_for(lambda: "SQS delivers it again" in caplog.text)
    assert "queue demo message m1: deleting it after its handler failed (connection reset" in caplog.text


def test_a_stop_landing_while_the_keeper_clears_its_wake_up_still_ends_it() -> None:
    # close() sets the stop flag, then the wake-up event; when both landed just before the keeper
    # cleared that event, the keeper waited for ever and close() for request_timeout (10 s).
    client = _FakeReceiver([_raw('"a"', 1), _raw('"b"', 2), _raw('"c"', 3)])
    consumer = _consumer(client)
    consumer._delete_delay = 0.0

    class _StopLandsHere(threading.Event):
        def clear(self) -> None:
            consumer._keeper_stop.set()  # what close() does, right before this clear
            self.set()
            super().clear()

    consumer._deletes_held = _StopLandsHere()
    consumer.ack(consumer.receive(0))  # held back (two more are buffered): the keeper starts
    consumer._keeper.join(2.0)
    assert not consumer._keeper.is_alive()
    consumer.close()
