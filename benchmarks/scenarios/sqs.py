"""Amazon SQS on a local emulator: kq's SQS driver against plain boto3 making the same calls.

Both sides talk to the same emulator (LocalStack in host mode, or moto where no Python >= 3.12 is
found: the titles name it), send the same 1 KiB command body with the attributes kq's wire format
carries (content type, routing key, the message id), and make their boto3 clients from one session per
process, as ``boto3.client`` does (client creation is not part of the work compared). Each round uses a
fresh queue, created before the clock starts and deleted afterwards.

Most of each call is the emulator parsing, storing and answering it over HTTP, the same for both sides:
a ratio near 1 says that kq adds little to what boto3 costs, not how fast SQS is. The helpers
(:func:`boto3_client`, :func:`kq_sqs`, :func:`sqs_queue`) serve ``latency.py`` too.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3

from benchmarks import harness
from benchmarks.run import Context
from benchmarks.scenarios.consume import noop_loop
from benchmarks.scenarios.publish import BODY, JSON, ROUTING_KEY, kq_driver, kq_message, new_queue, warm_up
from integration.brokers.sqs import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY
from kq.core.driver import Driver

#: Messages a consumer takes per ReceiveMessage call (SQS's most), on both sides.
PREFETCH = 10
#: Entries of one SendMessageBatch call (SQS's most).
BATCH = 10
_TEXT = BODY.decode()


def boto3_client(endpoint: str) -> Any:
    """A plain boto3 SQS client for ``endpoint``, from boto3's default session."""
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


def kq_sqs(endpoint: str) -> Driver:
    """kq's SQS driver for ``endpoint``, as a configuration would give it."""
    return kq_driver(
        "sqs",
        endpoint_url=endpoint,
        region=REGION,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
    )


@contextmanager
def sqs_queue(endpoint: str, prefix: str) -> Iterator[tuple[str, str]]:
    """A new SQS queue (its name is also its kq logical name) and its URL, deleted afterwards."""
    admin = boto3_client(endpoint)
    name = new_queue(prefix)
    url = str(admin.create_queue(QueueName=name)["QueueUrl"])
    try:
        yield name, url
    finally:
        admin.delete_queue(QueueUrl=url)


def attributes() -> dict[str, dict[str, str]]:
    """What a plain boto3 producer sends beside the body to say what kq's attributes say."""
    return {
        "contentType": {"DataType": "String", "StringValue": JSON},
        "routingKey": {"DataType": "String", "StringValue": ROUTING_KEY},
        "id": {"DataType": "String", "StringValue": uuid.uuid4().hex},
    }


def _boto3_send(client: Any, url: str, count: int, batch: bool) -> None:
    if not batch:
        for _ in range(count):
            client.send_message(QueueUrl=url, MessageBody=_TEXT, MessageAttributes=attributes())
        return
    for start in range(0, count, BATCH):
        entries = [
            {"Id": str(n), "MessageBody": _TEXT, "MessageAttributes": attributes()}
            for n in range(min(BATCH, count - start))
        ]
        failed = client.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")
        if failed:
            raise RuntimeError(f"boto3: SQS refused {len(failed)} entries: {failed[0]}")


def _publish(endpoint: str, count: int, *, kq: bool, batch: bool) -> float:
    with sqs_queue(endpoint, "sqs-publish") as (queue, url):
        if kq:
            driver = kq_sqs(endpoint)
            try:
                producer = driver.producer(queue)
                producer.send(kq_message())  # the queue's lookup and the connection, untimed
                started = time.perf_counter()
                if batch:
                    producer.send_batch([kq_message() for _ in range(count)])
                else:
                    for _ in range(count):
                        producer.send(kq_message())
                elapsed = time.perf_counter() - started
            finally:
                driver.close()
        else:
            client = boto3_client(endpoint)
            client.send_message(QueueUrl=url, MessageBody=_TEXT, MessageAttributes=attributes())
            started = time.perf_counter()
            _boto3_send(client, url, count, batch)
            elapsed = time.perf_counter() - started
            client.close()
        return harness.rate(count, elapsed)


def _boto3_consume(endpoint: str, url: str, count: int, batch: bool) -> None:
    """Receive up to 10 at a time and delete each message after it (``batch``: all of them after the
    last, in one DeleteMessageBatch)."""
    client = boto3_client(endpoint)
    seen = 0
    deadline = time.monotonic() + 60
    while seen < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"boto3: {seen} of {count} messages received in 60 s")
        response = client.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(PREFETCH, count - seen),
            WaitTimeSeconds=20,
            VisibilityTimeout=30,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        messages = response.get("Messages", [])
        seen += len(messages)
        if batch and messages:
            entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)]
            failed = client.delete_message_batch(QueueUrl=url, Entries=entries).get("Failed")
            if failed:
                raise RuntimeError(f"boto3: SQS refused {len(failed)} deletes: {failed[0]}")
            continue
        for message in messages:
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    client.close()


def _consume(endpoint: str, count: int, *, kq: bool, batch: bool = False) -> float:
    with sqs_queue(endpoint, "sqs-consume") as (queue, url):
        driver = kq_sqs(endpoint)  # knows the queue's URL once it filled it, as boto3's side does
        try:
            driver.producer(queue).send_batch([kq_message() for _ in range(count)])
            started = time.perf_counter()
            if kq:
                noop_loop(driver, queue, count, PREFETCH)
            else:
                _boto3_consume(endpoint, url, count, batch)
            return harness.rate(count, time.perf_counter() - started)
        finally:
            driver.close()


def _publish_scenario(
    key: str, title: str, endpoint: str, count: int, *, batch: bool, note: str
) -> harness.Scenario:
    return harness.Scenario(
        key=key,
        title=title,
        unit="msg/s",
        sides=(
            harness.Side("boto3", lambda: _publish(endpoint, count, kq=False, batch=batch)),
            harness.Side("kq", lambda: _publish(endpoint, count, kq=True, batch=batch)),
        ),
        targets=(harness.Target("boto3", ">=", 0.9),),
        note=note,
    )


def scenarios(context: Context) -> list[harness.Scenario]:
    endpoint = context.sqs_endpoint
    if not endpoint:
        return []
    warm_up("sqs")
    where = f"SQS ({context.sqs_emulator})"
    batched = context.count(500, 30)
    single = context.count(100, 10)
    consumed = context.count(300, 30)
    return [
        _publish_scenario(
            "sqs-publish-batch",
            f"{where}: publish in batches of {BATCH}",
            endpoint,
            batched,
            batch=True,
            note=(
                f"{batched} messages: kq Producer.send_batch (SendMessageBatch calls of {BATCH}, each "
                "answer checked for failed entries); boto3 send_message_batch of the same entries."
            ),
        ),
        _publish_scenario(
            "sqs-publish-one",
            f"{where}: one publish per call",
            endpoint,
            single,
            batch=False,
            note=f"{single} messages: kq Producer.send each; boto3 send_message each.",
        ),
        harness.Scenario(
            key="sqs-consume",
            title=f"{where}: consume, {PREFETCH} per receive",
            unit="msg/s",
            sides=(
                harness.Side("boto3, a delete each", lambda: _consume(endpoint, consumed, kq=False)),
                harness.Side(
                    "boto3, one batch delete", lambda: _consume(endpoint, consumed, kq=False, batch=True)
                ),
                harness.Side("kq", lambda: _consume(endpoint, consumed, kq=True)),
            ),
            targets=(harness.Target("boto3, one batch delete", ">=", 0.9),),
            note=(
                f"{consumed} prefilled messages, from making the consumer (its clients) to the last delete, "
                "the queue's URL known: kq ConsumeLoop + "
                f"NoopHandler, prefetch {PREFETCH} (long polls, leases, decoding, events, an ack after "
                "each handler, the acks of buffered messages sent together in one DeleteMessageBatch); "
                f"boto3 receive_message of up to {PREFETCH} (long poll, all attributes), then "
                "delete_message after each message, or one delete_message_batch after the last."
            ),
        ),
    ]
