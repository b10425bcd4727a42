"""Publish-to-handler latency, one message at a time, per driver: kq against pika, stomp.py and boto3.

A consumer runs in a thread with a connection of its own (prefetch 1, acknowledging after its handler);
the main thread publishes one persistent 1 KiB message carrying the time it was published, waits until
the handler saw it, and publishes the next. A sample is the time from calling publish to the handler
reading the message (both clocks are this process's ``perf_counter``). The first message of a run is a
warm-up and is not counted.

Each round gives a set of samples; its median is the ``-p50`` scenario's value and its 99th percentile
the ``-p99`` scenario's. The two scenarios share rounds: the p50 scenario measures and keeps the samples,
the p99 scenario takes them in the same order (and measures afresh only when run alone, with ``--only``).
"""

from __future__ import annotations

import collections
import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.run import Context
from benchmarks.scenarios.publish import (
    PlainStomp,
    cleanup,
    declare,
    kq_driver,
    new_queue,
    pika_connection,
    properties,
    stomp_host,
    warm_up,
)
from benchmarks.scenarios.sqs import attributes, boto3_client, kq_sqs, sqs_queue
from kq.core import CallableHandler, ConsumeLoop, Limits, Message
from kq.core.driver import Driver

#: Seconds to wait for one message before the run is declared broken.
TIMEOUT = 30.0


def _body(pad: int = 1000) -> bytes:
    """A 1 KiB JSON body stamped with the time it is published."""
    return json.dumps({"sent": time.perf_counter(), "pad": "x" * pad}, separators=(",", ":")).encode()


_PAD = 1024 - len(_body(0))


class _Samples:
    """Latencies of one run, fed by a consumer thread, one message at a time."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.values: list[float] = []
        self.handled = threading.Event()
        self.warm = False
        self.error: BaseException | None = None

    def record(self, sent: float) -> None:
        now = time.perf_counter()
        if self.warm:
            self.values.append(now - sent)
        self.handled.set()

    def drive(self, publish: Callable[[bytes], None]) -> list[float]:
        """Publish a warm-up message, then ``count`` messages one at a time; the latencies in seconds."""
        for _ in range(self.count + 1):
            self.handled.clear()
            publish(_body(_PAD))
            if not self.handled.wait(TIMEOUT):
                raise RuntimeError(f"no message handled within {TIMEOUT:g} s ({self.error or 'no error'})")
            self.warm = True
        return self.values


def _thread(target: Callable[[], Any], samples: _Samples) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported by drive() through the timeout message
            samples.error = exc
            raise

    thread = threading.Thread(target=run, name="bench-consumer", daemon=True)
    thread.start()
    return thread


# -- kq ----------------------------------------------------------------------------------------------


def _kq_latency(make: Callable[[], tuple[Driver, Driver]], queue: str, count: int) -> list[float]:
    """``make`` gives the consumer's driver and the producer's (the same one for the memory driver)."""
    consumer_driver, producer_driver = make()
    samples = _Samples(count)
    try:
        handler = CallableHandler(lambda body, delivery: samples.record(body["sent"]), "latency")
        loop = ConsumeLoop(
            consumer_driver,
            queue,
            handler,
            limits=Limits(messages=count + 1),
            prefetch=1,
            handle_signals=False,
        )
        thread = _thread(loop.run, samples)
        producer = producer_driver.producer(queue)
        values = samples.drive(lambda body: producer.send(Message(body, routing_key="bench")))
        thread.join(TIMEOUT)
        return values
    finally:
        producer_driver.close()
        if consumer_driver is not producer_driver:
            consumer_driver.close()


def _kq_memory(count: int) -> list[float]:
    driver = kq_driver("memory")
    return _kq_latency(lambda: (driver, driver), new_queue("latency-memory"), count)


def _kq_sqlite(folder: Path, count: int) -> list[float]:
    path = folder / f"latency-{uuid.uuid4().hex[:8]}.sqlite3"
    try:
        return _kq_latency(
            lambda: (kq_driver("sqlite", path=str(path)), kq_driver("sqlite", path=str(path))),
            "latency",
            count,
        )
    finally:
        for leftover in folder.glob(f"{path.name}*"):
            leftover.unlink()


def _kq_rabbitmq(url: str, count: int) -> list[float]:
    queue = new_queue("latency-kq")
    with cleanup(url, queue):
        return _kq_latency(
            lambda: (kq_driver("rabbitmq", url=url), kq_driver("rabbitmq", url=url)), queue, count
        )


def _kq_stomp(host: str, url: str, count: int) -> list[float]:
    queue = new_queue("latency-stomp-kq")

    def make() -> tuple[Driver, Driver]:
        return (
            kq_driver("stomp", flavour="rabbitmq", hosts=[host]),
            kq_driver("stomp", flavour="rabbitmq", hosts=[host]),
        )

    with cleanup(url, queue):
        return _kq_latency(make, queue, count)


def _kq_sqs(endpoint: str, count: int) -> list[float]:
    with sqs_queue(endpoint, "latency-sqs-kq") as (queue, _url):
        return _kq_latency(lambda: (kq_sqs(endpoint), kq_sqs(endpoint)), queue, count)


# -- peers -------------------------------------------------------------------------------------------


def _pika(url: str, count: int) -> list[float]:
    queue = new_queue("latency-pika")
    samples = _Samples(count)
    with cleanup(url, queue):
        setup = pika_connection(url)
        declare(setup.channel(), queue)
        setup.close()
        reader = pika_connection(url)
        channel = reader.channel()
        channel.basic_qos(prefetch_count=1)
        seen = 0

        def on_message(ch: Any, method: Any, _properties: Any, body: bytes) -> None:
            nonlocal seen
            samples.record(json.loads(body)["sent"])
            ch.basic_ack(method.delivery_tag)
            seen += 1
            if seen > count:
                ch.stop_consuming()

        channel.basic_consume(queue, on_message)
        thread = _thread(channel.start_consuming, samples)
        writer = pika_connection(url)
        try:
            publisher = writer.channel()
            publisher.confirm_delivery()
            values = samples.drive(lambda body: publisher.basic_publish(queue, "bench", body, properties()))
            thread.join(TIMEOUT)
        finally:
            writer.close()
            reader.close()
        return values


def _stomp_py(host: str, url: str, count: int) -> list[float]:
    queue = new_queue("latency-stomp-plain")
    samples = _Samples(count)
    destination = f"/queue/{queue}"
    with cleanup(url, queue):
        reader = PlainStomp(host)
        writer = PlainStomp(host)
        try:

            def on_frame(frame: Any) -> None:
                samples.record(json.loads(frame.body)["sent"])
                reader.ack(frame)

            reader.on_frame = on_frame
            reader.subscribe(destination, 1)
            return samples.drive(lambda body: writer.publish(destination, [body]))
        finally:
            writer.close()
            reader.close()


def _boto3(endpoint: str, count: int) -> list[float]:
    samples = _Samples(count)
    with sqs_queue(endpoint, "latency-sqs-plain") as (_queue, url):
        reader = boto3_client(endpoint)
        writer = boto3_client(endpoint)

        def consume() -> None:
            seen = 0
            while seen <= count:
                response = reader.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=20, MessageAttributeNames=["All"]
                )
                for message in response.get("Messages", []):
                    samples.record(json.loads(message["Body"])["sent"])
                    reader.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                    seen += 1

        def publish(body: bytes) -> None:
            writer.send_message(QueueUrl=url, MessageBody=body.decode(), MessageAttributes=attributes())

        thread = _thread(consume, samples)
        values = samples.drive(publish)
        thread.join(TIMEOUT)
        return values


# -- scenarios ---------------------------------------------------------------------------------------


class _Side:
    """One side of a driver's latency: its p50 run keeps the samples for the p99 scenario's run."""

    def __init__(self, measure: Callable[[], list[float]]) -> None:
        self.measure = measure
        self.kept: collections.deque[list[float]] = collections.deque()

    def p50(self) -> float:
        values = self.measure()
        self.kept.append(values)
        return statistics.median(values) * 1000

    def p99(self) -> float:
        values = self.kept.popleft() if self.kept else self.measure()
        return statistics.quantiles(values, n=100, method="inclusive")[98] * 1000


def scenarios(context: Context) -> list[harness.Scenario]:
    url = context.amqp_url
    warm_up(
        "memory",
        "sqlite",
        "rabbitmq",
        *(["stomp"] if context.stomp_url else []),
        *(["sqs"] if context.sqs_endpoint else []),
        modules=("stomp",),
    )
    count = context.count(300, 30)
    folder = context.workdir / "h1-latency"
    folder.mkdir(parents=True, exist_ok=True)
    drivers: list[tuple[str, str, dict[str, _Side], str, int]] = [
        ("memory", "memory driver (in-process)", {"kq": _Side(lambda: _kq_memory(count))}, "", count),
        (
            "sqlite",
            "sqlite driver, producer and consumer on their own connections",
            {"kq": _Side(lambda: _kq_sqlite(folder, count))},
            "",
            count,
        ),
        (
            "rabbitmq",
            "RabbitMQ",
            {"pika": _Side(lambda: _pika(url, count)), "kq": _Side(lambda: _kq_rabbitmq(url, count))},
            "pika",
            count,
        ),
    ]
    if context.stomp_url:
        host = stomp_host(context)
        drivers.append(
            (
                "stomp",
                "STOMP on RabbitMQ",
                {
                    "stomp.py": _Side(lambda: _stomp_py(host, url, count)),
                    "kq": _Side(lambda: _kq_stomp(host, url, count)),
                },
                "stomp.py",
                count,
            )
        )
    if context.sqs_endpoint:
        endpoint = context.sqs_endpoint
        sqs_count = context.count(100, 10)  # an emulator's round trips are milliseconds, not tenths
        drivers.append(
            (
                "sqs",
                f"SQS ({context.sqs_emulator})",
                {
                    "boto3": _Side(lambda: _boto3(endpoint, sqs_count)),
                    "kq": _Side(lambda: _kq_sqs(endpoint, sqs_count)),
                },
                "boto3",
                sqs_count,
            )
        )
    found = []
    for key, title, sides, peer, samples in drivers:
        for percentile in ("p50", "p99"):
            found.append(
                harness.Scenario(
                    key=f"latency-{key}-{percentile}",
                    title=f"Latency {percentile}, {title}",
                    unit="ms",
                    sides=tuple(
                        harness.Side(name, getattr(side, percentile)) for name, side in sides.items()
                    ),
                    note=(
                        f"publish to handler, one message at a time, {samples} messages per round (after one "
                        "warm-up), prefetch 1, confirmed publishes"
                        + (f"; the {peer} side does the same with plain {peer}" if peer else "")
                        + ("; p99 from the p50 rounds' samples" if percentile == "p99" else "")
                        + "."
                    ),
                )
            )
    return found
