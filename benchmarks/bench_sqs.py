"""SQS driver: batched publish and consume against one call per message, measured in one run.

Needs an SQS endpoint (LocalStack or moto, started by the integration harness or by hand):

    python benchmarks/bench_sqs.py http://127.0.0.1:4566 [--messages 500]

Publishing: ``send`` per message against ``send_batch`` (``SendMessageBatch``, 10 per call). Consuming:
prefetch 1 with one ``DeleteMessage`` per message against prefetch 10 with ``ack_many``
(``DeleteMessageBatch``), and prefetch 10 with one ``ack`` per message (what the consume loop does: the
consumer holds the acks of buffered messages back and sends them together).
Ratios only: the emulator's own cost per call dominates, and moto is much slower per call than LocalStack.
"""

from __future__ import annotations

import argparse
import time

from kq.core import Message
from kq.core.driver import Consumer, Delivery, DriverSpec, QueueSpec
from kq.core.testing import unique_queue_name
from kq.drivers.sqs import SqsDriver

BODY = b'{"command": "echoback", "arguments": ["x"], "options": {}}'


def _messages(count: int) -> list[Message]:
    return [Message(BODY) for _ in range(count)]


def _consume(driver: SqsDriver, queue: str, count: int, *, prefetch: int, batched: bool) -> tuple[int, float]:
    """Receive and acknowledge up to ``count`` messages; returns how many and the seconds it took."""
    consumer: Consumer = driver.consumer(queue, prefetch=prefetch)
    received = 0
    pending: list[Delivery] = []
    start = time.perf_counter()
    while received < count:
        delivery = consumer.receive(1)
        if delivery is None:
            break
        received += 1
        if not batched:
            consumer.ack(delivery)
            continue
        pending.append(delivery)
        if len(pending) == 10:
            consumer.ack_many(pending)
            pending = []
    if pending:
        consumer.ack_many(pending)
    elapsed = time.perf_counter() - start
    consumer.close()
    return received, elapsed


def main() -> None:
    """Run the three measurements and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint", help="SQS endpoint URL, e.g. http://127.0.0.1:4566")
    parser.add_argument("--messages", type=int, default=500)
    args = parser.parse_args()
    count: int = args.messages
    options = {
        "endpoint_url": args.endpoint,
        "region": "us-east-1",
        "access_key_id": "test",
        "secret_access_key": "test",
    }
    one, batch = unique_queue_name("bench"), unique_queue_name("bench")
    driver = SqsDriver(
        DriverSpec(name="bench", type="sqs", options=options),
        [QueueSpec(name=one, driver="bench"), QueueSpec(name=batch, driver="bench")],
    )
    try:
        for queue in (one, batch):  # create the queues and warm the connections outside the timing
            driver.producer(queue).send(Message(b"{}"))
            _consume(driver, queue, 1, prefetch=1, batched=False)

        start = time.perf_counter()
        producer = driver.producer(one)
        for message in _messages(count):
            producer.send(message)
        single_publish = time.perf_counter() - start
        start = time.perf_counter()
        driver.producer(batch).send_batch(_messages(count))
        batch_publish = time.perf_counter() - start

        single_count, single_consume = _consume(driver, one, count, prefetch=1, batched=False)
        batch_count, batch_consume = _consume(driver, batch, count, prefetch=10, batched=True)
        driver.producer(one).send_batch(_messages(count))
        loop_count, loop_consume = _consume(driver, one, count, prefetch=10, batched=False)

        print(
            f"publish {count}: one call per message {count / single_publish:.0f} msg/s, "
            f"batches of 10 {count / batch_publish:.0f} msg/s: x{single_publish / batch_publish:.1f}"
        )
        print(
            f"consume: prefetch 1 + ack {single_count / single_consume:.0f} msg/s, prefetch 10 + ack_many "
            f"{batch_count / batch_consume:.0f} msg/s: x{single_consume / batch_consume:.1f}"
        )
        rate = loop_count / loop_consume
        print(f"consume: prefetch 10 + one ack call per message (the consume loop) {rate:.0f} msg/s")
        total_single = single_publish + single_consume
        print(f"publish + consume: x{total_single / (batch_publish + batch_consume):.1f}")
    finally:
        manager = driver.queue_manager()
        for queue in (one, batch):
            manager.delete(queue)
        driver.close()


if __name__ == "__main__":
    main()
