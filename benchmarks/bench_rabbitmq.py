"""kq against plain pika on the same RabbitMQ, as ratios measured in one run.

Publishing, persistent messages with publisher confirms:
  pika    BlockingChannel.confirm_delivery + basic_publish (waits for each confirm)
  kq      Producer.publish (one message per call, confirmed)
  kq      Producer.publish_batch of 100 (confirms awaited once per batch)
First publish of a new producer (what every `kq queuecommand` and a worker's first dead letter pay),
timed from connecting to the confirmed message:
  pika    connect, declare, confirm_delivery, basic_publish (confirmed), close
  kq      a new driver: Producer.publish of one message (connect, declare, confirm mode, confirm), close
Consuming with manual acks, prefetch 1 and prefetch 50, timed from connecting to closing on both sides:
  pika    basic_consume + basic_ack in the callback (start_consuming)
  kq      ConsumeLoop + NoopHandler (declare, decode, events, ack after the handler)

Needs a broker: python benchmarks/bench_rabbitmq.py --url amqp://guest:guest@127.0.0.1:5672/%2F
(or let it start a private node with --start, using integration/brokers/rabbitmq.py).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pika

from kq.core import ConsumeLoop, Limits, Message, NoopHandler
from kq.core.driver import DriverSpec
from kq.core.plugins import load_driver_class

BODY = b'{"command": "echoback", "arguments": ["benchmark"], "options": {}}'


def _queue(channel: Any, name: str) -> None:
    channel.exchange_declare(name, exchange_type="topic", durable=True)
    channel.queue_declare(name, durable=True)
    channel.queue_bind(name, name, routing_key="#")


def pika_publish(url: str, queue: str, count: int) -> float:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    _queue(channel, queue)
    channel.confirm_delivery()
    properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
    started = time.perf_counter()
    for _ in range(count):
        channel.basic_publish(queue, "bench", BODY, properties)
    elapsed = time.perf_counter() - started
    connection.close()
    return count / elapsed


def pika_first_publish(url: str, queue: str) -> float:
    """Seconds from connecting to a confirmed first message, closing included."""
    started = time.perf_counter()
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    _queue(channel, queue)
    channel.confirm_delivery()
    channel.basic_publish(
        queue, "bench", BODY, pika.BasicProperties(content_type="application/json", delivery_mode=2)
    )
    connection.close()
    return time.perf_counter() - started


def kq_first_publish(url: str, queue: str) -> float:
    """Seconds for a new driver's producer to publish its first (confirmed) message, closing included."""
    started = time.perf_counter()
    driver = kq_driver(url)
    driver.producer(queue).send(Message(BODY, routing_key="bench"))
    driver.close()
    return time.perf_counter() - started


def pika_consume(url: str, queue: str, count: int, prefetch: int) -> float:
    # Timed from connecting to closing, as kq's loop connects, declares and closes inside run().
    started = time.perf_counter()
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    seen = 0

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        nonlocal seen
        ch.basic_ack(method.delivery_tag)
        seen += 1
        if seen >= count:
            ch.stop_consuming()

    channel.basic_consume(queue, on_message)
    channel.start_consuming()
    connection.close()
    return count / (time.perf_counter() - started)


def kq_driver(url: str) -> Any:
    return load_driver_class("rabbitmq")(DriverSpec(name="bench", type="rabbitmq", options={"url": url}))


def kq_publish(url: str, queue: str, count: int, batch: int) -> float:
    driver = kq_driver(url)
    producer = driver.producer(queue)
    producer.send(Message(BODY, routing_key="bench"))  # connect and declare outside the timing
    started = time.perf_counter()
    if batch == 1:
        for _ in range(count - 1):
            producer.send(Message(BODY, routing_key="bench"))
    else:
        for _ in range((count - 1) // batch):
            producer.send_batch([Message(BODY, routing_key="bench") for _ in range(batch)])
    elapsed = time.perf_counter() - started
    driver.close()
    return (count - 1) / elapsed


def kq_consume(url: str, queue: str, count: int, prefetch: int) -> float:
    driver = kq_driver(url)
    loop = ConsumeLoop(driver, queue, NoopHandler(), limits=Limits(messages=count), prefetch=prefetch)
    started = time.perf_counter()
    loop.run()
    elapsed = time.perf_counter() - started
    driver.close()
    return loop.stats.consumed / elapsed


def purge(url: str, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_purge(queue)
    connection.close()


def run(url: str, count: int, rounds: int) -> None:
    """Alternate pika and kq over ``rounds`` rounds and report medians: one slow moment of this noisy
    machine must not decide a ratio."""
    queue = f"bench_{uuid.uuid4().hex[:8]}"
    samples: dict[str, list[float]] = {}
    firsts: dict[str, list[float]] = {}

    def record(name: str, rate: float) -> None:
        samples.setdefault(name, []).append(rate)

    try:
        for _ in range(rounds):
            firsts.setdefault("pika first publish", []).append(pika_first_publish(url, queue))
            firsts.setdefault("kq first publish", []).append(kq_first_publish(url, queue))
            record("pika publish (confirm each)", pika_publish(url, queue, count))
            record("kq publish (confirm each)", kq_publish(url, queue, count, 1))
            record("kq publish_batch(100)", kq_publish(url, queue, count, 100))
            purge(url, queue)
            for prefetch in (1, 50):
                pika_publish(url, queue, count)
                record(f"pika consume prefetch {prefetch}", pika_consume(url, queue, count, prefetch))
                pika_publish(url, queue, count)
                record(f"kq consume prefetch {prefetch}", kq_consume(url, queue, count, prefetch))
        rates = {name: statistics.median(values) for name, values in samples.items()}
        latencies = {name: statistics.median(values) for name, values in firsts.items()}
        print(f"{count} messages, median of {rounds} alternating rounds")
        for name, seconds in latencies.items():
            print(f"{name:<32} {seconds * 1000:9.1f} ms")
        for name, rate in rates.items():
            print(f"{name:<32} {rate:9.0f} msg/s")
        first = latencies["kq first publish"] / latencies["pika first publish"]
        print(f"first publish: kq/pika time = {first:.2f}")
        one = rates["kq publish (confirm each)"] / rates["pika publish (confirm each)"]
        batch = rates["kq publish_batch(100)"] / rates["pika publish (confirm each)"]
        print(f"publish one:   kq/pika = {one:.2f}")
        print(f"publish batch: kq/pika = {batch:.1f}")
        for prefetch in (1, 50):
            ratio = rates[f"kq consume prefetch {prefetch}"] / rates[f"pika consume prefetch {prefetch}"]
            print(f"consume prefetch {prefetch:<2}: kq/pika = {ratio:.2f}")
    finally:
        connection = pika.BlockingConnection(pika.URLParameters(url))
        connection.channel().queue_delete(queue)
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--start", action="store_true", help="start a private RabbitMQ node for the run")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not args.start:
        run(args.url, args.messages, args.rounds)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from integration.brokers import start_rabbitmq

    with tempfile.TemporaryDirectory() as folder:
        broker = start_rabbitmq(Path(folder))
        try:
            run(broker.amqp_url, args.messages, args.rounds)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
