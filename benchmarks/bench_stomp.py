"""kq's STOMP driver against plain stomp.py doing the same work, on the same broker, in one run.

Two measurements, each as a ratio kq / plain (1.0: as fast; the issue asks for at least 0.9):

- publish: batches of ``--batch`` persistent messages, each SEND with a receipt, all receipts awaited
  once per batch (kq: ``Producer.send_batch``);
- consume: ``client-individual`` subscription with ``--prefetch``, each message acknowledged on its own
  (kq: ``Consumer.receive`` + ``Consumer.ack``).

Rounds alternate (plain, kq, plain, kq, ...) and the best round of each counts, so that a noisy
neighbour on a shared machine hurts both sides alike::

    python benchmarks/bench_stomp.py --flavour activemq --host 127.0.0.1:61613
    python benchmarks/bench_stomp.py --flavour rabbitmq --host 127.0.0.1:61613 --messages 5000
"""

from __future__ import annotations

import argparse
import collections
import threading
import time
import uuid
from typing import Any

import stomp  # type: ignore[import-untyped,unused-ignore]

from kq.core.driver import DriverSpec, Message
from kq.drivers.stomp import StompDriver

BODY = b'{"command": "app:echo", "arguments": ["benchmark"], "options": {}}'


class _Plain(stomp.ConnectionListener):  # type: ignore[misc]
    """A plain stomp.py client: receipts and messages, nothing else."""

    def __init__(self, flavour: str, host: str) -> None:
        name, port = host.rsplit(":", 1)
        self.connection = stomp.Connection12(
            [(name, int(port))],
            heartbeats=(10_000, 10_000),
            vhost="/" if flavour == "rabbitmq" else None,
            auto_decode=False,
        )
        self.cond = threading.Condition()
        self.receipts: set[str] = set()
        self.frames: collections.deque[Any] = collections.deque()
        self.connection.set_listener("bench", self)
        self.connection.connect(wait=True)

    def on_receipt(self, frame: Any) -> None:
        with self.cond:
            self.receipts.add(frame.headers["receipt-id"])
            self.cond.notify_all()

    def on_message(self, frame: Any) -> None:
        with self.cond:
            self.frames.append(frame)
            self.cond.notify_all()

    def publish(self, destination: str, count: int, batch: int) -> None:
        for start in range(0, count, batch):
            ids = []
            for _ in range(start, min(count, start + batch)):
                receipt = f"r-{uuid.uuid4().hex}"
                ids.append(receipt)
                self.connection.send(
                    destination,
                    BODY,
                    headers={
                        "content-type": "application/json",
                        "persistent": "true",
                        "receipt": receipt,
                        "kq-message-id": uuid.uuid4().hex,
                    },
                )
            with self.cond:
                while not self.receipts.issuperset(ids):
                    if not self.cond.wait(30):
                        raise RuntimeError("plain stomp.py: receipts missing after 30 s")
                self.receipts.difference_update(ids)

    def consume(self, destination: str, count: int, prefetch: int, flavour: str) -> None:
        headers = (
            {"activemq.prefetchSize": str(prefetch)}
            if flavour == "activemq"
            else {"prefetch-count": str(prefetch)}
        )
        self.connection.subscribe(destination, id="bench", ack="client-individual", headers=headers)
        for _ in range(count):
            with self.cond:
                while not self.frames:
                    if not self.cond.wait(30):
                        raise RuntimeError("plain stomp.py: no message for 30 s")
                frame = self.frames.popleft()
            self.connection.ack(frame.headers["ack"])
        self.connection.unsubscribe("bench")

    def close(self) -> None:
        self.connection.disconnect()


def _kq_driver(flavour: str, host: str) -> StompDriver:
    return StompDriver(DriverSpec(name="bench", type="stomp", options={"flavour": flavour, "hosts": [host]}))


def _kq_publish(driver: StompDriver, queue: str, count: int, batch: int) -> None:
    producer = driver.producer(queue)
    for start in range(0, count, batch):
        producer.send_batch([Message(BODY) for _ in range(start, min(count, start + batch))])


def _kq_consume(driver: StompDriver, queue: str, count: int, prefetch: int) -> None:
    with driver.consumer(queue, prefetch=prefetch) as consumer:
        for _ in range(count):
            delivery = consumer.receive(30)
            if delivery is None:
                raise RuntimeError("kq: no message for 30 s")
            consumer.ack(delivery)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavour", choices=["activemq", "rabbitmq"], required=True)
    parser.add_argument("--host", required=True, help="host:port of the STOMP listener")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    best: dict[tuple[str, str], float] = {}
    plain = _Plain(args.flavour, args.host)
    driver = _kq_driver(args.flavour, args.host)
    try:
        for round_ in range(args.rounds):
            for side in ("plain", "kq"):
                queue = f"bench-{side}-{round_}-{uuid.uuid4().hex[:8]}"
                started = time.perf_counter()
                if side == "plain":
                    plain.publish(f"/queue/{queue}", args.messages, args.batch)
                else:
                    _kq_publish(driver, queue, args.messages, args.batch)
                published = time.perf_counter()
                if side == "plain":  # a connection of its own, as each kq consumer has
                    reader = _Plain(args.flavour, args.host)
                    try:
                        reader.consume(f"/queue/{queue}", args.messages, args.prefetch, args.flavour)
                    finally:
                        reader.close()
                else:
                    _kq_consume(driver, queue, args.messages, args.prefetch)
                consumed = time.perf_counter()
                for what, seconds in (("publish", published - started), ("consume", consumed - published)):
                    rate = args.messages / seconds
                    best[(side, what)] = max(best.get((side, what), 0.0), rate)
                    print(f"round {round_} {side:5} {what:7} {rate:9.0f} msg/s")
    finally:
        plain.close()
        driver.close()
    print(f"{args.flavour}: {args.messages} messages, batches of {args.batch}, prefetch {args.prefetch}")
    for what in ("publish", "consume"):
        kq, raw = best[("kq", what)], best[("plain", what)]
        print(f"  {what:7}: kq {kq:8.0f} msg/s, plain stomp.py {raw:8.0f} msg/s, ratio {kq / raw:.2f}")


if __name__ == "__main__":
    main()
