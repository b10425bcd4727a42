"""Measure what issue #2 promises, as ratios taken in one run (this machine's timings are noisy).

1. CLI latency: `kq --help` and `kq managedriver list`, median of N runs, next to a bare `python -c pass`.
2. Consume-loop overhead on the sqlite and memory drivers: messages per second through
   ConsumeLoop + NoopHandler, against a raw receive/ack loop on the same driver. The ratio is what the
   loop (decode, events, lease keeper, logging) costs per message.
3. Publishing: one message per call against batches of 100.

Run: python benchmarks/bench_core.py [--messages N] [--runs N]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kq.core import ConsumeLoop, Limits, Message, NoopHandler
from kq.core.driver import Driver, DriverSpec
from kq.core.plugins import load_driver_class


def _median_seconds(argv: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def cli_latency(runs: int) -> None:
    python = _median_seconds([sys.executable, "-c", "pass"], runs)
    helps = _median_seconds([sys.executable, "-m", "kq.cli", "--help"], runs)
    listing = _median_seconds([sys.executable, "-m", "kq.cli", "managedriver", "list"], runs)
    print(f"python -c pass          {python * 1000:7.1f} ms")
    print(f"kq --help               {helps * 1000:7.1f} ms  ({helps / python:.1f}x bare python)")
    print(f"kq managedriver list    {listing * 1000:7.1f} ms  ({listing / python:.1f}x bare python)")


def _driver(kind: str, folder: Path) -> Driver:
    options = {"path": str(folder / f"{kind}.sqlite3")} if kind == "sqlite" else {"namespace": "bench"}
    return load_driver_class(kind)(DriverSpec(name="bench", type=kind, options=options))


def _fill(driver: Driver, queue: str, count: int) -> None:
    producer = driver.producer(queue)
    batch = [Message(b'{"n": 1}') for _ in range(100)]
    for _ in range(count // 100):
        producer.send_batch(batch)


def raw_rate(driver: Driver, queue: str, count: int) -> float:
    _fill(driver, queue, count)
    consumer = driver.consumer(queue)
    started = time.perf_counter()
    for _ in range(count):
        delivery = consumer.receive(1.0)
        assert delivery is not None
        consumer.ack(delivery)
    elapsed = time.perf_counter() - started
    consumer.close()
    return count / elapsed


def loop_rate(driver: Driver, queue: str, count: int) -> float:
    _fill(driver, queue, count)
    loop = ConsumeLoop(driver, queue, NoopHandler(), limits=Limits(messages=count))
    started = time.perf_counter()
    loop.run()
    elapsed = time.perf_counter() - started
    assert loop.stats.consumed == count
    return count / elapsed


def publish_rates(driver: Driver, queue: str, count: int) -> tuple[float, float]:
    producer = driver.producer(queue)
    started = time.perf_counter()
    for _ in range(count):
        producer.send(Message(b"{}"))
    single = count / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(count // 100):
        producer.send_batch([Message(b"{}") for _ in range(100)])
    batched = count / (time.perf_counter() - started)
    driver.queue_manager().purge(queue)
    return single, batched


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    cli_latency(args.runs)
    with tempfile.TemporaryDirectory() as folder:
        for kind in ("sqlite", "memory"):
            driver = _driver(kind, Path(folder))
            raw = raw_rate(driver, "raw", args.messages)
            looped = loop_rate(driver, "loop", args.messages)
            single, batched = publish_rates(driver, "pub", args.messages)
            print(
                f"{kind:<7} consume: raw receive/ack {raw:8.0f} msg/s, ConsumeLoop {looped:8.0f} msg/s "
                f"(loop/raw = {looped / raw:.2f})"
            )
            print(
                f"{kind:<7} publish: one per call {single:8.0f} msg/s, batches of 100 {batched:8.0f} msg/s "
                f"(batch/single = {batched / single:.1f}x)"
            )
            driver.close()


if __name__ == "__main__":
    main()
