"""A worker's start-up and its idle memory: ``kq consume`` against Dramatiq and Celery.

Each round prefills one persistent message on a queue of its own and starts the worker as in
``peers.py`` (the same apps, the same stamp: the handler writes the time it ran):

- ``startup-first-message`` (ms): from just before the worker is spawned to the moment its handler ran
  for that message: interpreter start, imports, configuration, connection, declarations, first
  delivery. Every side is started as ``python -m <its CLI>`` by the same interpreter.
- ``idle-memory`` (MiB): once the message was handled and the worker has idled for a second, the
  proportional set size (PSS, ``psutil`` ``memory_full_info().pss``) of the worker and all its
  descendants: kq and Celery solo are one process, Dramatiq ``-p 1`` is a parent and one worker
  process. PSS counts shared pages once across them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from benchmarks.harness import Scenario, Side, Target
from benchmarks.run import Context
from benchmarks.scenarios.peers import (
    Stamps,
    Worker,
    delete_queues,
    framework_queues,
    new_name,
    running,
    start_worker,
    warm_up,
    write_apps,
)

#: Seconds a worker idles after its first message before its memory is read.
IDLE = 1.0


def _round(context: Context, framework: str, measure: Callable[[Worker, Stamps], float]) -> float:
    warm_up(context, framework)
    apps = write_apps(context)
    queue = new_name(f"bench_start_{framework}")
    stamps = Stamps(context)
    try:
        with running(start_worker(context, framework, queue, stamps, apps, 1)) as worker:
            return measure(worker, stamps)
    finally:
        delete_queues(context, *framework_queues(framework, queue))


def _first_message(worker: Worker, stamps: Stamps) -> float:
    return (stamps.wait("first", worker) - worker.started) * 1000


def _idle_memory(worker: Worker, stamps: Stamps) -> float:
    import psutil

    stamps.wait("first", worker)
    time.sleep(IDLE)
    worker.check_alive()
    root = psutil.Process(worker.process.pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        total += process.memory_full_info().pss
    return total / 2**20


def scenarios(context: Context) -> list[Scenario]:
    def sides(measure: Callable[[Worker, Stamps], float]) -> tuple[Side, ...]:
        return (
            Side("Dramatiq 1x8", lambda: _round(context, "dramatiq", measure)),
            Side("kq", lambda: _round(context, "kq", measure)),
            Side("Celery solo", lambda: _round(context, "celery", measure)),
        )

    return [
        Scenario(
            key="startup-first-message",
            title="worker spawn to first message handled",
            unit="ms",
            sides=sides(_first_message),
            targets=(Target("Dramatiq 1x8", "<=", 1),),
            note=(
                "one prefilled message on RabbitMQ; `python -m kq.cli consume` (default settings, a "
                "`module:function` handler), `python -m dramatiq app -p 1 -t 8`, `python -m celery -A app "
                "worker --pool solo` (Celery's defaults: mingle, gossip and heartbeat on), all by the bench "
                "environment's interpreter; from before the spawn to the handler's stamp."
            ),
        ),
        Scenario(
            key="idle-memory",
            title="idle worker memory (PSS, with child processes)",
            unit="MiB",
            sides=sides(_idle_memory),
            targets=(Target("Dramatiq 1x8", "<=", 0.8),),
            note=(
                f"after its first message and {IDLE:g} s idle, the PSS of the worker and its descendants "
                "(Dramatiq: the parent and its one worker process with 8 threads; kq and Celery solo: one "
                "process)."
            ),
        ),
    ]
