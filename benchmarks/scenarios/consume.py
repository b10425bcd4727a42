"""Consuming from RabbitMQ: kq's consume loop and ``kq consume`` against plain pika and stomp.py.

Each round fills a fresh queue with persistent 1 KiB messages (untimed), then one side reads them all
with manual acknowledgements, each message acknowledged after it was handled (a no-op), and the queue
is deleted. The clock runs from connecting to closing on both sides: kq's loop connects, declares and
closes inside its ``run()``, so the pika side declares the same topology in its timing too.
"""

from __future__ import annotations

import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.run import Context
from benchmarks.scenarios.publish import (
    BODY,
    PlainStomp,
    cleanup,
    declare,
    kq_driver,
    new_queue,
    pika_connection,
    prefill,
    stomp_host,
    warm_up,
)
from kq.core import ConsumeLoop, Limits, NoopHandler
from kq.core.driver import Driver

PREFETCH = 100


def _pika_consume(url: str, queue: str, count: int) -> None:
    connection = pika_connection(url)
    channel = connection.channel()
    declare(channel, queue)
    channel.basic_qos(prefetch_count=PREFETCH)
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


def noop_loop(driver: Driver, queue: str, count: int, prefetch: int) -> None:
    """kq's consume loop with a no-op handler on ``queue`` until it consumed ``count`` messages (also
    used by ``sqs.py``)."""
    loop = ConsumeLoop(
        driver,
        queue,
        NoopHandler(),
        limits=Limits(messages=count),
        prefetch=prefetch,
        handle_signals=False,
    )
    loop.run()
    if loop.stats.consumed != count:
        raise RuntimeError(f"kq consumed {loop.stats.consumed} of {count} messages")


def _kq_consume(url: str, queue: str, count: int) -> None:
    driver = kq_driver("rabbitmq", url=url)
    try:
        noop_loop(driver, queue, count, PREFETCH)
    finally:
        driver.close()


def _consume_api(url: str, count: int, kq: bool) -> float:
    queue = new_queue("consume-kq" if kq else "consume-pika")
    with cleanup(url, queue):
        prefill(url, queue, count)
        started = time.perf_counter()
        (_kq_consume if kq else _pika_consume)(url, queue, count)
        return harness.rate(count, time.perf_counter() - started)


# -- kq consume, a process ---------------------------------------------------------------------------

_PIKA_SCRIPT = """\
import sys
import pika

url, queue, count, prefetch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
print("consuming queue", queue, file=sys.stderr, flush=True)
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.exchange_declare(queue, exchange_type="topic", durable=True)
channel.queue_declare(queue, durable=True)
channel.queue_bind(queue, queue, routing_key="#")
channel.basic_qos(prefetch_count=prefetch)
seen = 0


def on_message(ch, method, properties, body):
    global seen
    ch.basic_ack(method.delivery_tag)
    seen += 1
    if seen >= count:
        ch.stop_consuming()


channel.basic_consume(queue, on_message)
channel.start_consuming()
connection.close()
print("stopped consuming queue", queue, file=sys.stderr, flush=True)
"""

#: The lines both processes write when they start consuming (before connecting) and when they stopped
#: (after closing); kq's come from its consume loop at INFO, the default level of ``kq consume``.
START, STOP = "consuming queue", "stopped consuming"


class _ConsumeCommand:
    """``kq consume QUEUE -m N --prefetch 100`` (the queue's consumer ``noop``, every other setting the
    default, logging included) against a pika script consuming the same way, both new processes of the
    bench interpreter. Timed by the parent from the line each writes as it starts consuming (before
    connecting) to the line it writes once it stopped (after closing), as the parent reads them: the
    interpreter's start and imports are not counted, the per-message work and its logging are."""

    def __init__(self, context: Context, count: int) -> None:
        self.context = context
        self.count = count
        self.folder = context.workdir / "h1-consume-cli"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.script = self.folder / "pika_consume.py"
        self.script.write_text(_PIKA_SCRIPT)

    def _config(self, queue: str) -> Path:
        config = self.folder / "kq.toml"
        config.write_text(
            textwrap.dedent(
                f"""\
                default_driver = "rabbit"

                [drivers.rabbit]
                type = "rabbitmq"
                url = "{self.context.amqp_url}"

                [queues."{queue}"]
                consumer = "noop"
                """
            )
        )
        return config

    def _run(self, command: list[str]) -> float:
        process = subprocess.Popen(
            command,
            cwd=self.folder,
            env=self.context.environ(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert process.stderr is not None
        started = stopped = None
        tail: list[bytes] = []
        for line in process.stderr:
            if started is None and START.encode() in line:
                started = time.perf_counter()
            elif STOP.encode() in line:
                stopped = time.perf_counter()
            tail = [*tail[-9:], line]
        code = process.wait()
        if code != 0 or started is None or stopped is None:
            raise RuntimeError(
                f"{command[1:4]} exited with {code} without the lines {START!r} and {STOP!r}: "
                + b"".join(tail).decode(errors="replace")
            )
        return harness.rate(self.count, stopped - started)

    def kq(self) -> float:
        url = self.context.amqp_url
        queue = new_queue("consume-cli-kq")
        with cleanup(url, queue):
            self._config(queue)
            prefill(url, queue, self.count)
            command = ["consume", queue, "-m", str(self.count), "--prefetch", str(PREFETCH)]
            return self._run([self.context.python, "-m", "kq.cli", *command])

    def pika(self) -> float:
        url = self.context.amqp_url
        queue = new_queue("consume-cli-pika")
        with cleanup(url, queue):
            prefill(url, queue, self.count)
            return self._run(
                [self.context.python, str(self.script), url, queue, str(self.count), str(PREFETCH)]
            )


# -- STOMP on RabbitMQ -------------------------------------------------------------------------------


def _stomp_consume(host: str, url: str, count: int, kq: bool) -> float:
    queue = new_queue("stomp-consume-kq" if kq else "stomp-consume-plain")
    with cleanup(url, queue):
        writer = PlainStomp(host)
        try:
            for start in range(0, count, 1000):
                writer.publish(f"/queue/{queue}", [BODY] * min(1000, count - start))
        finally:
            writer.close()
        started = time.perf_counter()
        if kq:
            driver = kq_driver("stomp", flavour="rabbitmq", hosts=[host])
            try:
                with driver.consumer(queue, prefetch=PREFETCH) as consumer:
                    for _ in range(count):
                        delivery = consumer.receive(30)
                        if delivery is None:
                            raise RuntimeError("kq: no message for 30 s")
                        consumer.ack(delivery)
            finally:
                driver.close()
        else:
            reader = PlainStomp(host)
            try:
                reader.subscribe(f"/queue/{queue}", PREFETCH)
                for _ in range(count):
                    reader.ack(reader.take())
                reader.connection.unsubscribe("bench")
            finally:
                reader.close()
        return harness.rate(count, time.perf_counter() - started)


def scenarios(context: Context) -> list[harness.Scenario]:
    url = context.amqp_url
    warm_up("rabbitmq", *(["stomp"] if context.stomp_url else []), modules=("stomp",))
    api = context.count(5000, 300)
    command = _ConsumeCommand(context, context.count(5000, 300))
    found = [
        harness.Scenario(
            key="rabbitmq-consume-api",
            title=f"RabbitMQ: consume in-process, prefetch {PREFETCH}",
            unit="msg/s",
            sides=(
                harness.Side("pika", lambda: _consume_api(url, api, kq=False)),
                harness.Side("kq", lambda: _consume_api(url, api, kq=True)),
            ),
            targets=(harness.Target("pika", ">=", 0.9),),
            note=(
                f"{api} messages, connect to close: kq ConsumeLoop + NoopHandler (decode, events, ack "
                "after the handler); pika BlockingChannel.basic_consume, basic_ack in the callback."
            ),
        ),
        harness.Scenario(
            key="rabbitmq-consume-cli",
            title=f"RabbitMQ: `kq consume` as a process, noop consumer, prefetch {PREFETCH}",
            unit="msg/s",
            sides=(harness.Side("pika script", command.pika), harness.Side("kq", command.kq)),
            targets=(harness.Target("pika script", ">=", 0.9),),
            note=(
                f"{command.count} messages: `python -m kq.cli consume QUEUE -m {command.count} --prefetch "
                f"{PREFETCH}` (consumer noop, default logging) against a pika basic_consume script; from "
                "the line each writes as it starts consuming to the one it writes after closing."
            ),
        ),
    ]
    if context.stomp_url:
        host = stomp_host(context)
        stomp_count = context.count(3000, 200)
        found.append(
            harness.Scenario(
                key="stomp-rabbitmq-consume",
                title=f"STOMP on RabbitMQ: consume, client-individual acks, prefetch {PREFETCH}",
                unit="msg/s",
                sides=(
                    harness.Side("stomp.py", lambda: _stomp_consume(host, url, stomp_count, kq=False)),
                    harness.Side("kq", lambda: _stomp_consume(host, url, stomp_count, kq=True)),
                ),
                targets=(harness.Target("stomp.py", ">=", 0.9),),
                note=(
                    f"{stomp_count} messages, connect to close: kq Consumer.receive + ack; stomp.py "
                    "SUBSCRIBE ack client-individual, each message acknowledged on its own."
                ),
            )
        )
    return found
