"""kq against moto and LocalStack with real processes: the tutorial, managequeue, and interoperability with
plain boto3 (and so with the PHP library's SQS bundle), in both directions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from kq.core.testing import Workspace, unique_queue_name

if TYPE_CHECKING:
    from integration.sqs_fixture import SqsEndpoint

pytestmark = pytest.mark.sqs


def _config(sqs: SqsEndpoint, queue: str, extra: str = "") -> str:
    return f"""
default_driver = "aws"

{sqs.driver_table(wait_time=1)}
[queues.{queue}]
{extra}
[allow]
commands = ["echoback"]
"""


@pytest.fixture
def queue() -> str:
    # SQS names allow no dots: the driver maps them, and unique names keep runs apart on one emulator.
    return unique_queue_name("e2e")


@pytest.fixture
def space(workspace: Workspace, sqs: SqsEndpoint, queue: str) -> Iterator[Workspace]:
    workspace.write_config(_config(sqs, queue), recorder=False)
    yield workspace
    for name in (queue, f"{queue}.failed"):
        workspace.kq("managequeue", "delete", name, check=False)


def _boto3(sqs: SqsEndpoint) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=sqs.endpoint_url,
        region_name=sqs.region,
        aws_access_key_id=sqs.access_key_id,
        aws_secret_access_key=sqs.secret_access_key,
    )


def _url_of(space: Workspace, queue: str) -> str:
    """The queue's URL, as kq knows it (created if needed by `managequeue setup`)."""
    space.kq("managequeue", "setup", queue)
    info = space.kq_json("managequeue", "info", queue)
    url = info.get("url") or info.get("queue_url")
    assert isinstance(url, str), info
    assert url, info
    return url


def _php_message(client: Any, url: str, body: dict[str, Any], routing_key: str) -> None:
    """What the PHP library's SQS bundle sends: the JSON body and its two message attributes."""
    client.send_message(
        QueueUrl=url,
        MessageBody=json.dumps(body),
        MessageAttributes={
            "contentType": {"DataType": "String", "StringValue": "application/json"},
            "routingKey": {"DataType": "String", "StringValue": routing_key},
        },
    )


def test_tutorial_flow(space: Workspace, queue: str) -> None:
    """kq consume in the background, kq queuecommand echoback, the output file appears."""
    worker = space.start_consumer(queue, "testconsumer")
    space.kq("queuecommand", queue, "echoback", "hello world again", "-o", "f=testoutput2.txt")
    output = space.root / "testoutput2.txt"
    space.wait_for(output.exists, 60, "testoutput2.txt")
    assert output.read_text().rstrip().endswith("says: hello world again")
    assert space.stop(worker) == 0
    assert "Stopped because: received SIGTERM" in space.output("testconsumer")


def test_managequeue_actions_in_json(space: Workspace, queue: str) -> None:
    """setup, info, list-available, purge and delete through the CLI, with --format json."""
    space.kq("managequeue", "setup", queue)
    space.kq("queuecommand", queue, "echoback", "one")
    info = space.kq_json("managequeue", "info", queue)
    assert info["exists"] is True
    assert info["messages"] + info.get("delayed", 0) + info.get("in_flight", 0) >= 1
    assert queue in space.kq_json("managequeue", "list-available")
    space.kq("managequeue", "purge", queue)
    space.kq("managequeue", "delete", queue)
    assert space.kq_json("managequeue", "info", queue)["exists"] is False


def test_a_php_shaped_message_from_plain_boto3_runs_where_unsigned_messages_are_accepted(
    workspace: Workspace, sqs: SqsEndpoint, queue: str
) -> None:
    """The PHP bundle's console-command JSON with its contentType and routingKey attributes, sent with
    plain boto3, is executed by kq consume on a queue that accepts unsigned messages."""
    workspace.write_config(_config(sqs, queue, "require_signature = false"), recorder=False)
    try:
        client = _boto3(sqs)
        _php_message(
            client,
            _url_of(workspace, queue),
            {"command": "echoback", "arguments": ["from PHP"], "options": {"f": "php.txt"}},
            "echoback",
        )
        result = workspace.kq("consume", queue, "-m", "1", "-t", "60", "--poll-interval", "1")
        assert "Stopped because: message limit of 1 reached" in result.stdout, result.stdout + result.stderr
        assert (workspace.root / "php.txt").read_text().rstrip().endswith("says: from PHP")
    finally:
        for name in (queue, f"{queue}.failed"):
            workspace.kq("managequeue", "delete", name, check=False)


def test_a_php_shaped_message_is_refused_where_signatures_are_required(
    space: Workspace, sqs: SqsEndpoint, queue: str
) -> None:
    """The same message on a console-command queue with the default signing rule: not run, dead-lettered
    as unsigned."""
    client = _boto3(sqs)
    _php_message(
        client,
        _url_of(space, queue),
        {"command": "echoback", "arguments": ["forged"], "options": {"f": "forged.txt"}},
        "echoback",
    )
    space.kq("consume", queue, "-m", "1", "-t", "60", "--poll-interval", "1")
    assert not (space.root / "forged.txt").exists()
    dead = space.kq_json("failed", "show", queue)
    assert [entry["reason"] for entry in dead] == ["unsigned"], dead


def test_a_message_queued_by_kq_reads_as_expected_with_plain_boto3(
    space: Workspace, sqs: SqsEndpoint, queue: str
) -> None:
    """kq queuecommand, then plain boto3: the PHP library's JSON body, its contentType and routingKey
    attributes, and kq's own attribute; no more than SQS's 10 attributes."""
    space.kq("queuecommand", queue, "echoback", "to boto3", "-o", "f=out.txt")
    client = _boto3(sqs)
    answer = client.receive_message(
        QueueUrl=_url_of(space, queue),
        MaxNumberOfMessages=1,
        WaitTimeSeconds=5,
        MessageAttributeNames=["All"],
    )
    [message] = answer["Messages"]
    assert json.loads(message["Body"]) == {
        "command": "echoback",
        "arguments": ["to boto3"],
        "options": {"f": "out.txt"},
    }
    attributes = message["MessageAttributes"]
    assert attributes["contentType"]["StringValue"] == "application/json"
    assert attributes["routingKey"]["StringValue"] == "echoback"
    assert "kq" in attributes
    assert len(attributes) <= 10
