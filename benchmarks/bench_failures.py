"""Measure what issue #6 costs, as ratios taken in one run (this machine's timings are noisy).

1. Signing: messages per second through ConsumeLoop + NoopHandler on the memory and sqlite drivers,
   unsigned against signed and verified (HMAC-SHA256, replay cache), publishing included.
2. Dead-lettering: a handler that always fails, so every message is copied to ``<queue>.failed`` with
   its reason before it is acknowledged, against one that succeeds.
3. Re-driving: ``retry_dead_letters`` putting every dead letter of a queue back on it, in messages per second.

Run: python benchmarks/bench_failures.py [--messages N] [--runs N]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kq.core import (
    App,
    ConsumeLoop,
    Delivery,
    Handler,
    Limits,
    Message,
    NoopHandler,
    Signer,
    Verifier,
    new_key,
    parse_config,
    retry_dead_letters,
)
from kq.core.driver import Driver

QUEUE = "bench"


class Failing(Handler):
    """Always fails: every message goes to the dead-letter queue."""

    def consume(self, body: Any, delivery: Delivery) -> Any:
        raise RuntimeError("failing on purpose")


def _app(kind: str, folder: Path) -> App:
    options: dict[str, Any] = {"type": kind}
    options.update({"path": str(folder / "bench.sqlite3")} if kind == "sqlite" else {"namespace": "bench"})
    return App(parse_config({"default_driver": "bench", "drivers": {"bench": options}}, root=str(folder)))


def _publish(driver: Driver, count: int, signer: Signer | None) -> None:
    producer = driver.producer(QUEUE)
    for _ in range(count // 100):
        batch = [Message(b'{"n": 1}') for _ in range(100)]
        producer.send_batch([signer.sign(m, QUEUE) for m in batch] if signer else batch)


def _rate(run: Callable[[], int], count: int) -> float:
    started = time.perf_counter()
    done = run()
    elapsed = time.perf_counter() - started
    assert done == count, (done, count)
    return count / elapsed


def signed_rates(driver: Driver, count: int) -> tuple[float, float]:
    """(unsigned, signed) messages per second, publish + consume."""
    key_id, key = "bench", new_key().encode()

    def unsigned() -> int:
        _publish(driver, count, None)
        loop = ConsumeLoop(driver, QUEUE, NoopHandler(), limits=Limits(messages=count))
        loop.run()
        return loop.stats.consumed

    def signed() -> int:
        _publish(driver, count, Signer(key_id, key))
        verifier = Verifier({key_id: key}, max_age=86400)
        loop = ConsumeLoop(driver, QUEUE, NoopHandler(), limits=Limits(messages=count), verifier=verifier)
        loop.run()
        return loop.stats.consumed

    return _rate(unsigned, count), _rate(signed, count)


def dead_letter_rates(driver: Driver, count: int) -> tuple[float, float]:
    """(succeeding, failing) messages per second through the loop, publishing excluded."""

    def through(handler: Handler) -> Callable[[], int]:
        _publish(driver, count, None)

        def run() -> int:
            loop = ConsumeLoop(driver, QUEUE, handler, limits=Limits(messages=count))
            loop.run()
            return loop.stats.consumed + loop.stats.failed

        return run

    ok = _rate(through(NoopHandler()), count)
    failing = _rate(through(Failing()), count)
    return ok, failing


def redrive_rate(app: App, count: int) -> float:
    """Dead letters re-driven per second (the dead-letter queue holds ``count`` of them)."""

    def run() -> int:
        # The dead letters were published unsigned; the queue (a console-command one by default) requires
        # signatures, so say they are trusted: every copy is signed again.
        result = retry_dead_letters(app, QUEUE, idle=0.05, resign_unverified=True)
        assert not result.failed, list(result.failed.values())[:1]
        return len(result.done)

    rate = _rate(run, count)
    app.driver().queue_manager().purge(QUEUE)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # dead-lettering logs an ERROR line per message
    count = args.messages // 100 * 100

    for kind in ("memory", "sqlite"):
        samples: dict[str, list[float]] = {}
        with tempfile.TemporaryDirectory() as folder, _app(kind, Path(folder)) as app:
            driver = app.driver()
            for _ in range(args.runs):
                unsigned, signed = signed_rates(driver, count)
                ok, failing = dead_letter_rates(driver, count)
                redriven = redrive_rate(app, count)
                for name, value in (
                    ("unsigned", unsigned),
                    ("signed", signed),
                    ("ok", ok),
                    ("failing", failing),
                    ("redrive", redriven),
                ):
                    samples.setdefault(name, []).append(value)
        median = {name: statistics.median(values) for name, values in samples.items()}
        print(
            f"{kind:<7} publish+consume: unsigned {median['unsigned']:8.0f} msg/s, signed and verified "
            f"{median['signed']:8.0f} msg/s (signed/unsigned = {median['signed'] / median['unsigned']:.2f})"
        )
        print(
            f"{kind:<7} consume: succeeding {median['ok']:8.0f} msg/s, "
            f"dead-lettered {median['failing']:8.0f} msg/s "
            f"(dead-lettered/succeeding = {median['failing'] / median['ok']:.2f})"
        )
        print(f"{kind:<7} kq failed retry: {median['redrive']:8.0f} msg/s re-driven")


if __name__ == "__main__":
    main()
