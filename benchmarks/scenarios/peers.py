"""``kq consume`` against the task queues users would pick instead: Celery and Dramatiq workers.

``rabbitmq-worker-noop`` prefills one RabbitMQ queue per round with the same number of persistent
1 KiB messages, starts the worker as its users would, and measures from the first handled message to
the last: every side's task (kq's handler) calls the same stamp function, which writes the time of the
first and of the last call to a file. Start-up and shut-down are left out (``startup.py`` measures
them).

- **kq**: ``python -m kq.cli consume QUEUE`` with the default settings (prefetch, logging), the queue's
  consumer a ``module:function`` handler, acknowledged after the handler returns.
- **Celery solo**: ``python -m celery -A app worker --pool solo``, no result backend, Celery's default
  acknowledgement (early: the message is acked when the worker takes it, before the task runs) and
  prefetch (multiplier 4 for one process).
- **Dramatiq 1x8**: ``python -m dramatiq app -p 1 -t 8`` on a ``RabbitmqBroker``; Dramatiq acks after
  the actor returns, and prefetches twice its threads.

The other modules share this one's helpers: the apps written into the run's folder
(:func:`write_apps`), starting and stopping a worker's process group (:class:`Worker`), the stamp files
(:class:`Stamps`) and the prefill and clean-up of each framework's queue.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import Scenario, Side, Target, rate
from benchmarks.run import Context

logger = logging.getLogger(__name__)

#: The payload every side's message carries (the message is about 1 KiB on every side).
PAYLOAD = "x" * 1000

#: Seconds a worker may take to handle what it was given before the round fails.
DEADLINE = 120.0

_STAMP_MODULE = '''\
"""Stamps the first and the last handled message (BENCH_COUNT) into files in BENCH_STAMPS."""
import itertools
import os
import time

_calls = itertools.count(1)
_last = int(os.environ.get("BENCH_COUNT", "1"))
_folder = os.environ["BENCH_STAMPS"]


def _write(name):
    path = os.path.join(_folder, name)
    with open(path + ".tmp", "w") as file:
        file.write(repr(time.time()))
    os.replace(path + ".tmp", path)


def tick():
    """Called once per handled message, after its work (thread-safe: next() on a count is atomic)."""
    call = next(_calls)
    if call == 1:
        _write("first")
    if call == _last:
        _write("last")
'''

_KQ_MODULE = '''\
"""kq's side: a no-op handler, f(body, delivery)."""
from bench_stamp import tick


def noop(body, delivery):
    tick()
'''

_CELERY_MODULE = '''\
"""Celery's side: one no-op task, the broker and queue from the environment, no result backend."""
import os

from celery import Celery

from bench_stamp import tick

app = Celery("bench_celery_tasks", broker=os.environ["BENCH_AMQP_URL"])
app.conf.task_default_queue = os.environ["BENCH_QUEUE"]
app.conf.broker_connection_retry_on_startup = True


@app.task(ignore_result=True)
def noop(payload):
    tick()
'''

_DRAMATIQ_MODULE = '''\
"""Dramatiq's side: one no-op actor on a RabbitmqBroker, the queue from the environment."""
import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from bench_stamp import tick

dramatiq.set_broker(RabbitmqBroker(url=os.environ["BENCH_AMQP_URL"]))


@dramatiq.actor(queue_name=os.environ["BENCH_QUEUE"], max_retries=0)
def noop(payload):
    tick()
'''

_APPS = {
    "bench_stamp.py": _STAMP_MODULE,
    "bench_kq_tasks.py": _KQ_MODULE,
    "bench_celery_tasks.py": _CELERY_MODULE,
    "bench_dramatiq_tasks.py": _DRAMATIQ_MODULE,
}


def write_apps(context: Context, extra: dict[str, str] | None = None) -> Path:
    """Write the benchmark's apps (and ``extra`` modules) into ``<workdir>/apps``; returns the folder."""
    folder = context.workdir / "apps"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in {**_APPS, **(extra or {})}.items():
        path = folder / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return folder


def app_environ(context: Context, apps: Path, **extra: str) -> dict[str, str]:
    """The environment of a worker: the context's, with ``apps`` first on ``PYTHONPATH``.

    ``PYTHONDONTWRITEBYTECODE`` is left out: with it, a package installed without byte-code (uv does not
    compile by default) is compiled from source at every start, which would time the compiler (pika,
    click, Celery and Dramatiq had no ``.pyc`` here), not the worker. Installed applications have their
    byte-code; the first start writes it.
    """
    paths = [str(apps), context.env.get("PYTHONPATH", ""), os.environ.get("PYTHONPATH", "")]
    environ = context.environ(PYTHONPATH=os.pathsep.join(filter(None, paths)), **extra)
    environ.pop("PYTHONDONTWRITEBYTECODE", None)
    return environ


def new_name(prefix: str) -> str:
    """A queue name of its own for one round."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


_warmed: set[tuple[str, str]] = set()


def warm_up(context: Context, framework: str) -> None:
    """Once per run and framework, an untimed start of its worker on one message, so that the byte-code
    is written and the file cache warm before the first measured start."""
    if (str(context.workdir), framework) in _warmed:
        return
    _warmed.add((str(context.workdir), framework))
    apps = write_apps(context)
    queue = new_name(f"bench_warm_{framework}")
    stamps = Stamps(context)
    try:
        with running(start_worker(context, framework, queue, stamps, apps, 1)) as worker:
            stamps.wait("first", worker)
    finally:
        delete_queues(context, *framework_queues(framework, queue))


def start_worker(
    context: Context, framework: str, queue: str, stamps: Stamps, apps: Path, count: int
) -> Worker:
    """Prefill ``count`` messages on ``queue`` and start ``framework``'s worker on it."""
    if framework.startswith("kq"):
        config = kq_config(context, queue)
        kq_prefill(config, queue, count)
        extra = ("--prefetch", framework.rpartition("-")[2]) if framework.startswith("kq-prefetch-") else ()
        return kq_worker(context, apps, config, queue, stamps, count, *extra)
    if framework == "celery":
        celery_prefill(context, queue, count)
        return celery_worker(context, apps, queue, stamps, count)
    dramatiq_prefill(context, queue, count)
    return dramatiq_worker(context, apps, queue, stamps, count)


class Stamps:
    """A fresh folder for one round's stamp files (``first``, ``last``, or one line per message)."""

    def __init__(self, context: Context) -> None:
        self.folder = context.workdir / "stamps" / uuid.uuid4().hex[:8]
        self.folder.mkdir(parents=True)

    def wait(self, name: str, worker: Worker | None = None, deadline: float = DEADLINE) -> float:
        """The time written in stamp ``name``, once it exists; fails if ``worker`` exits first."""
        path = self.folder / name
        give_up = time.monotonic() + deadline
        while not path.exists():
            if worker is not None:
                worker.check_alive()
            if time.monotonic() > give_up:
                raise TimeoutError(f"no {name!r} stamp after {deadline:.0f} s")
            time.sleep(0.01)  # the stamp holds the time the worker wrote: polling adds nothing to it
        return float(path.read_text())

    def lines(self, name: str) -> list[str]:
        """The lines of stamp file ``name`` (none while it does not exist)."""
        path = self.folder / name
        return path.read_text().splitlines() if path.exists() else []

    def wait_lines(
        self, name: str, count: int, workers: Sequence[Worker], deadline: float = DEADLINE
    ) -> list[str]:
        """The lines of stamp file ``name`` (one per message) once it has ``count`` of them."""
        give_up = time.monotonic() + deadline
        while True:
            stamps = self.lines(name)
            if len(stamps) >= count:
                return stamps
            for worker in workers:
                worker.check_alive()
            if time.monotonic() > give_up:
                raise TimeoutError(f"{len(stamps)} of {count} messages handled after {deadline:.0f} s")
            time.sleep(0.01)


class Worker:
    """A worker process (and the process group it may fork), its output kept in a log file."""

    def __init__(self, name: str, argv: Sequence[str], *, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.started = time.time()
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                self.argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with status {code}: {self.tail()}")

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no output)"
        return " | ".join(text[-lines:]) or "(no output)"

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (a warm shut-down for every side), then SIGKILL to the whole group if it lingers."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s did not stop within %.0f s of SIGTERM; killing its group", self.name, timeout
                )
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def wait(self, timeout: float = DEADLINE) -> int:
        return self.process.wait(timeout)


@contextlib.contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    try:
        yield worker
    finally:
        worker.stop()


# --- kq -------------------------------------------------------------------------------------------------


def kq_config(
    context: Context, queue: str, *, consumer: str = "bench_kq_tasks:noop", extra: str = ""
) -> Path:
    """A ``kq.toml`` in its own folder naming the run's RabbitMQ and ``queue`` with ``consumer``."""
    folder = context.workdir / "kq" / queue
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kq.toml"
    path.write_text(
        'default_driver = "rabbit"\n\n'
        "[drivers.rabbit]\n"
        'type = "rabbitmq"\n'
        f'url = "{context.amqp_url}"\n\n'
        f"[queues.{queue}]\n"
        f'consumer = "{consumer}"\n'
        f"{extra}"
    )
    return path


def kq_prefill(config: Path, queue: str, count: int) -> None:
    """Publish ``count`` persistent 1 KiB messages on ``queue`` through kq (signed, as producers do)."""
    from kq.core import App

    with App.from_config(config) as app:
        producer = app.producer(queue)
        body = ('{"payload": "' + PAYLOAD + '"}').encode()
        for start in range(0, count, 500):
            producer.publish_batch([body] * min(500, count - start))


def kq_worker(
    context: Context, apps: Path, config: Path, queue: str, stamps: Stamps, count: int, *args: str
) -> Worker:
    """``python -m kq.cli consume QUEUE`` with the default settings (and ``args``)."""
    return Worker(
        "kq consume",
        [context.python, "-m", "kq.cli", "consume", queue, *args],
        env=app_environ(
            context, apps, KQ_CONFIG=str(config), BENCH_STAMPS=str(stamps.folder), BENCH_COUNT=str(count)
        ),
        cwd=config.parent,
        log=stamps.folder / "worker.log",
    )


# --- Celery and Dramatiq ----------------------------------------------------------------------------------


def celery_prefill(context: Context, queue: str, count: int) -> None:
    """Send ``count`` tasks to ``queue`` through Celery's own producer (persistent, Celery's defaults)."""
    celery: Any = importlib.import_module("celery")
    app: Any = celery.Celery("bench_celery_tasks", broker=context.amqp_url)
    app.conf.task_default_queue = queue
    app.conf.broker_connection_retry_on_startup = True
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            app.send_task("bench_celery_tasks.noop", args=[PAYLOAD], queue=queue, producer=producer)
    app.close()


def celery_worker(context: Context, apps: Path, queue: str, stamps: Stamps, count: int) -> Worker:
    """``python -m celery -A bench_celery_tasks worker --pool solo`` (Celery's other defaults)."""
    argv = ["-m", "celery", "-A", "bench_celery_tasks", "worker", "--pool", "solo"]
    return _peer_worker("Celery solo", argv, context, apps, queue, stamps, count)


def _peer_worker(
    name: str, argv: list[str], context: Context, apps: Path, queue: str, stamps: Stamps, count: int
) -> Worker:
    """A peer framework's worker on ``queue``: its task modules in ``apps``, the broker, queue and stamp
    folder in the environment its tasks read."""
    return Worker(
        name,
        [context.python, *argv],
        env=app_environ(
            context,
            apps,
            BENCH_AMQP_URL=context.amqp_url,
            BENCH_QUEUE=queue,
            BENCH_STAMPS=str(stamps.folder),
            BENCH_COUNT=str(count),
        ),
        cwd=apps,
        log=stamps.folder / "worker.log",
    )


def dramatiq_prefill(context: Context, queue: str, count: int) -> None:
    """Enqueue ``count`` messages for the ``noop`` actor on ``queue`` through a ``RabbitmqBroker``."""
    dramatiq: Any = importlib.import_module("dramatiq")
    rabbitmq: Any = importlib.import_module("dramatiq.brokers.rabbitmq")
    broker: Any = rabbitmq.RabbitmqBroker(url=context.amqp_url)
    try:
        for _ in range(count):
            broker.enqueue(
                dramatiq.Message(queue_name=queue, actor_name="noop", args=(PAYLOAD,), kwargs={}, options={})
            )
    finally:
        broker.close()


def dramatiq_worker(context: Context, apps: Path, queue: str, stamps: Stamps, count: int) -> Worker:
    """``python -m dramatiq bench_dramatiq_tasks -p 1 -t 8``."""
    argv = ["-m", "dramatiq", "bench_dramatiq_tasks", "-p", "1", "-t", "8"]
    return _peer_worker("Dramatiq 1x8", argv, context, apps, queue, stamps, count)


def delete_queues(context: Context, queues: Sequence[str], exchanges: Sequence[str] = ()) -> None:
    """Delete what a round declared (missing ones are fine)."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(context.amqp_url))
    try:
        channel = connection.channel()
        for name in queues:
            channel.queue_delete(name)
        for name in exchanges:
            channel.exchange_delete(name)
    finally:
        connection.close()


def framework_queues(framework: str, queue: str) -> tuple[list[str], list[str]]:
    """The queues and exchanges a framework declares for ``queue``."""
    if framework.startswith("kq"):
        return [queue, f"{queue}.failed"], [queue, f"{queue}.failed"]
    if framework == "celery":
        return [queue], [queue]
    return [queue, f"{queue}.DQ", f"{queue}.XQ"], []


# --- the scenario ---------------------------------------------------------------------------------------


def _noop_round(context: Context, framework: str, count: int) -> float:
    warm_up(context, framework)
    apps = write_apps(context)
    queue = new_name(f"bench_{framework}")
    stamps = Stamps(context)
    try:
        with running(start_worker(context, framework, queue, stamps, apps, count)) as worker:
            first = stamps.wait("first", worker)
            last = stamps.wait("last", worker)
    finally:
        delete_queues(context, *framework_queues(framework, queue))
    return rate(count - 1, last - first)


def scenarios(context: Context) -> list[Scenario]:
    count = context.count(5000, 200)  # kq handles 2,000 in 0.15 s on a fast host: too short a window
    return [
        Scenario(
            key="rabbitmq-worker-noop",
            title=f"worker, no-op tasks, {count} prefilled messages",
            unit="msg/s",
            sides=(
                Side("Celery solo", lambda: _noop_round(context, "celery", count)),
                Side("kq", lambda: _noop_round(context, "kq", count)),
                Side("Dramatiq 1x8", lambda: _noop_round(context, "dramatiq", count)),
                Side("kq --prefetch 1", lambda: _noop_round(context, "kq-prefetch-1", count)),
            ),
            targets=(Target("Celery solo", ">=", 3), Target("Dramatiq 1x8", ">=", 3)),
            note=(
                "from the first handled message to the last (stamps the task writes), start-up excluded; "
                "`python -m kq.cli consume` with default settings and a `module:function` handler, acked "
                "after it; Celery `--pool solo`, no result backend, default early acks and prefetch; "
                "Dramatiq `-p 1 -t 8` on RabbitmqBroker (acks after the actor). Persistent ~1 KiB "
                "messages, durable queues, every worker in its own process. kq's default prefetch for a "
                "`module:function` consumer is 16 (Dramatiq's); `kq --prefetch 1` is what console "
                "commands take by default (fair to long commands, a round trip per message)."
            ),
        )
    ]
