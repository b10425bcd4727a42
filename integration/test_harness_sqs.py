"""The SQS harness itself: each emulator it starts serves SQS with plain boto3, and stops cleanly."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from integration.brokers import BrokerError, PortInUseError, port_accepts, port_in_use
from integration.brokers.sqs import ACCESS_KEY_ID, EMULATORS, REGION, SECRET_ACCESS_KEY
from integration.policy import port_from_env, unavailable
from integration.sqs_fixture import sqs_targets

if TYPE_CHECKING:
    from integration.sqs_fixture import SqsEndpoint

pytestmark = pytest.mark.sqs

#: Ports for the emulators these tests start and stop on their own (the session's are 4576 and 4577).
SPARE_PORTS = {"moto": 4594, "localstack": 4595}


def boto3_client(
    endpoint_url: str, region: str = REGION, keys: tuple[str, str] = (ACCESS_KEY_ID, SECRET_ACCESS_KEY)
) -> Any:
    """A plain boto3 SQS client for ``endpoint_url`` (skips, or fails in CI, without boto3)."""
    try:
        import boto3  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        unavailable("boto3 is not installed (nox -s integration installs it)")
    return boto3.client(
        "sqs",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=keys[0],
        aws_secret_access_key=keys[1],
    )


@pytest.fixture
def client(sqs: SqsEndpoint) -> Any:
    return boto3_client(sqs.endpoint_url, sqs.region, (sqs.access_key_id, sqs.secret_access_key))


@pytest.fixture
def queue_url(client: Any) -> Iterator[str]:
    """A fresh queue, deleted afterwards (the emulator lives for the whole session)."""
    url: str = client.create_queue(QueueName=f"kq-harness-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    yield url
    client.delete_queue(QueueUrl=url)


def test_create_send_receive_delete(sqs: SqsEndpoint, client: Any, queue_url: str) -> None:
    assert sqs.region == "us-east-1"
    assert sqs.endpoint_url.startswith("http://")
    client.send_message(
        QueueUrl=queue_url,
        MessageBody='{"command": "echo"}',
        MessageAttributes={"contentType": {"DataType": "String", "StringValue": "application/json"}},
    )
    received = client.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=5, MessageAttributeNames=["All"]
    )["Messages"]
    assert [m["Body"] for m in received] == ['{"command": "echo"}']
    assert received[0]["MessageAttributes"]["contentType"]["StringValue"] == "application/json"
    client.delete_message(QueueUrl=queue_url, ReceiptHandle=received[0]["ReceiptHandle"])
    attributes = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_long_poll_waits_on_an_empty_queue(client: Any, queue_url: str) -> None:
    started = time.monotonic()
    reply = client.receive_message(QueueUrl=queue_url, WaitTimeSeconds=2)
    assert reply.get("Messages", []) == []
    assert time.monotonic() - started >= 1.8, "the receive did not wait: no long polling"


def test_long_poll_wakes_up_when_a_message_arrives(client: Any, queue_url: str) -> None:
    sender = threading.Timer(0.5, lambda: client.send_message(QueueUrl=queue_url, MessageBody="late"))
    started = time.monotonic()
    sender.start()
    try:
        reply = client.receive_message(QueueUrl=queue_url, WaitTimeSeconds=10)
    finally:
        sender.join()
    assert [m["Body"] for m in reply.get("Messages", [])] == ["late"]
    assert time.monotonic() - started < 5.0, "the long poll did not return when the message came"


def test_reset_forgets_every_queue(sqs: SqsEndpoint, client: Any) -> None:
    name = f"kq-reset-{uuid.uuid4().hex[:12]}"
    client.create_queue(QueueName=name)
    sqs.reset()
    listed = client.list_queues(QueueNamePrefix=name).get("QueueUrls", [])
    assert listed == []


@pytest.mark.parametrize("name", list(EMULATORS))
def test_stop_leaves_the_port_free(name: str, tmp_path: Path) -> None:
    if "external" in sqs_targets() or name not in sqs_targets():
        pytest.skip(f"{name} is not among the emulators of this run (KQ_TEST_SQS_ENDPOINT/EMULATORS)")
    port = port_from_env(f"KQ_TEST_SQS_SPARE_{name.upper()}_PORT", SPARE_PORTS[name])
    emulator = EMULATORS[name](workdir=tmp_path, port=port)
    try:
        emulator.start()
    except BrokerError as exc:
        unavailable(f"{name} could not be started: {exc}")
    try:
        pid = emulator.pid
        assert pid is not None
        assert port_accepts(port)
        assert "QueueUrl" in boto3_client(emulator.endpoint_url).create_queue(QueueName="kq-stop")
    finally:
        emulator.stop()
    assert not emulator.running
    assert not Path(f"/proc/{pid}").exists(), f"{name} (PID {pid}) still runs after stop()"
    assert not port_in_use(port), f"port {port} is still taken after {name} stopped"
    emulator.stop()  # a second stop is a no-op


@pytest.mark.parametrize("name", list(EMULATORS))
def test_a_taken_port_is_an_error_naming_it(name: str, tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        emulator = EMULATORS[name](workdir=tmp_path, port=port)
        with pytest.raises(PortInUseError, match=rf"port {port} .*KQ_TEST_SQS_{name.upper()}_PORT"):
            emulator.start()
    assert not emulator.running
