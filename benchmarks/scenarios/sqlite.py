"""kq's sqlite driver against Huey's ``SqliteHuey``: publish then consume, one process, fully synced.

Both sides write one sqlite file in WAL mode with ``PRAGMA synchronous = FULL`` (kq: the driver option
``synchronous = "FULL"``; Huey: ``SqliteHuey(fsync=True)``, which sets ``synchronous = 2``, i.e. FULL),
so every commit is on the disk before it returns. Each side publishes ``count`` 1 KiB messages one per
call (one commit each), then handles them with a no-op:

- **kq**: ``Producer.publish`` per message, then ``App.consume_loop`` with the ``noop`` consumer (a lease
  when a message is taken, the ack after the handler: at-least-once);
- **Huey**: calling the task (``enqueue``) per message, then ``huey.dequeue()`` + ``huey.execute(task)``
  per message, the calls Huey's own consumer makes (the row is deleted when it is taken: at-most-once).

The value is ``count / (publish time + consume time)``; the split is logged at INFO. Neither side logs a
line per message during the measurement (Huey's and kq's loggers are held at WARNING).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.harness import Scenario, Side, Target, rate
from benchmarks.run import Context
from benchmarks.scenarios.peers import PAYLOAD

logger = logging.getLogger(__name__)

_BODY = ('{"payload": "' + PAYLOAD + '"}').encode()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No per-message log lines on either side, whatever the runner's level (Huey logs each task at
    INFO, as its consumer would; kq's loop logs at INFO too): the table compares queues, not handlers."""
    loggers = [logging.getLogger(name) for name in ("huey", "kq")]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for each, level in zip(loggers, levels, strict=True):
            each.setLevel(level)


def _folder(context: Context, side: str) -> Path:
    folder = context.workdir / "sqlite" / f"{side}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    return folder


def _kq(context: Context, count: int) -> float:
    from kq.core import App, Limits, parse_config

    folder = _folder(context, "kq")
    config = parse_config(
        {
            "default_driver": "local",
            "drivers": {"local": {"type": "sqlite", "path": "queues.sqlite3", "synchronous": "FULL"}},
            "queues": {"bench": {"consumer": "noop"}},
            "signing": {"keys": {"bench": "x" * 43}},
        },
        source="benchmark",
        root=str(folder),
    )
    with App(config) as app:
        producer = app.producer("bench")
        producer.publish(_BODY)  # open the database and create the queue outside the timing
        loop = app.consume_loop("bench", limits=Limits(messages=1), handle_signals=False)
        loop.run()
        started = time.perf_counter()
        for _ in range(count):
            producer.publish(_BODY)
        published = time.perf_counter()
        loop = app.consume_loop("bench", limits=Limits(messages=count), handle_signals=False)
        loop.run()
        consumed = time.perf_counter()
        if loop.stats.consumed != count:
            raise RuntimeError(f"kq consumed {loop.stats.consumed} of {count} messages")
    return _result("kq", count, published - started, consumed - published)


def _huey(context: Context, count: int) -> float:
    folder = _folder(context, "huey")
    huey: Any = importlib.import_module("huey").SqliteHuey(
        "bench", filename=str(folder / "huey.sqlite3"), fsync=True
    )
    handled = 0

    def count_call(payload: str) -> None:
        nonlocal handled
        handled += 1

    noop: Any = huey.task(name="noop")(count_call)
    noop(PAYLOAD)  # open the database outside the timing
    huey.execute(huey.dequeue())
    started = time.perf_counter()
    for _ in range(count):
        noop(PAYLOAD)
    published = time.perf_counter()
    for _ in range(count):
        task = huey.dequeue()
        if task is None:
            raise RuntimeError("Huey's queue ran dry before every task was handled")
        huey.execute(task)
    consumed = time.perf_counter()
    huey.storage.close()
    if handled != count + 1:
        raise RuntimeError(f"Huey ran {handled - 1} of {count} tasks")
    return _result("Huey", count, published - started, consumed - published)


def _result(side: str, count: int, publish: float, consume: float) -> float:
    logger.info(
        "sqlite-vs-huey: %s publish %.0f msg/s, consume %.0f msg/s",
        side,
        rate(count, publish),
        rate(count, consume),
    )
    return rate(count, publish + consume)


def _quietly(side: Callable[[Context, int], float], context: Context, count: int) -> float:
    with _quiet():
        return side(context, count)


def scenarios(context: Context) -> list[Scenario]:
    count = context.count(500, 50)
    return [
        Scenario(
            key="sqlite-vs-huey",
            title=f"sqlite, publish + consume, synchronous FULL, {count} messages",
            unit="msg/s",
            sides=(
                Side("Huey SqliteHuey", lambda: _quietly(_huey, context, count)),
                Side("kq", lambda: _quietly(_kq, context, count)),
            ),
            targets=(Target("Huey SqliteHuey", ">=", 1),),
            note=(
                "one process, one message per publish call, then a no-op handler per message; both WAL "
                'with synchronous FULL (kq `synchronous = "FULL"`, Huey `fsync=True`); kq leases and '
                "acks after the handler (at-least-once) and signs, Huey deletes the row when it takes it "
                "(at-most-once)."
            ),
        )
    ]
