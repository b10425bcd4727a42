"""Console commands: what a kq worker adds to running a command, and how workers scale.

Every command, whoever runs it, appends the time it finished to one stamp file (one line per message,
``O_APPEND``, so several workers may share it). A rate is taken from the first line to the last, so
the workers' start-up and shut-down are left out on every side.

- ``commands-process``: ``console_command`` (a process per message) on RabbitMQ, one ``kq consume``
  against a bare ``subprocess.run`` loop running the same argument vector
  (``python bench_command.py stamp MESSAGE``).
  A third side, a plain pika worker (prefetch 1, ``subprocess.run``, ``basic_ack``), is what any
  RabbitMQ worker pays on top of the bare loop: the broker's share.
- ``commands-process-2-workers``: the same queue, two workers against one;
  ``commands-process-plain-2-workers``: its ceiling, two plain pika workers against one.
- ``commands-inprocess-sqlite-2-workers``: ``inprocess_console_command`` (``[console] callable =
  "bench_command:main"``) on the sqlite driver, two workers against one.
- ``sqlite-plain-2-processes``: the ceiling of the previous one: a plain ``sqlite3`` loop making kq's
  transaction per message (acknowledge one, lease the next, under the same lock file) on a database kq
  filled, with the same command function and a spin standing in for kq's own work (set in the run so that
  one plain process runs at one kq worker's rate), two processes against one.
- ``commands-forked``: ``forked_console_command`` (the forked mode: a preloaded parent forks a child
  per message) against a bare ``subprocess.run`` loop of ``python -m bench_heavy stamp MESSAGE``, a
  module whose import takes 0.1 s (as a real application's imports do).

kq's messages are signed, as by default: producer and workers read one ``kq.toml`` naming a key file
(``[signing] keys``), and the command consumers require signatures, as they do by default. Workers run
with their default settings (prefetch 1) as ``python -m kq.cli consume``.
"""

from __future__ import annotations

import json
import logging
import secrets
import statistics
import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from benchmarks.harness import Scenario, Side, Target, rate
from benchmarks.run import Context
from benchmarks.scenarios.peers import (
    Stamps,
    Worker,
    app_environ,
    delete_queues,
    framework_queues,
    new_name,
    write_apps,
)
from benchmarks.scenarios.publish import cleanup, new_queue, prefill

logger = logging.getLogger(__name__)

#: The kind of H3's forked mode, looked up in the ``kq.handlers`` entry points.
FORKED = "forked_console_command"

_COMMAND_MODULE = '''\
"""The benchmark's console command: appends the time it ran and the worker's label to BENCH_STAMPS/lines."""
import os
import sys
import time


def main(argv):
    with open(os.path.join(os.environ["BENCH_STAMPS"], "lines"), "a") as file:
        file.write(f"{time.time()!r} {os.environ.get('KQ_LABEL') or '-'}\\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''

_HEAVY_MODULE = '''\
"""A command whose imports take 0.1 s, as an application's do; then the same work as bench_command."""
import sys
import time

time.sleep(0.1)

from bench_command import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''

_PIKA_LOOP_MODULE = '''\
"""A plain pika worker: prefetch 1; per message, run the command in a process of its own, then ack.
It runs until it is stopped.

Usage: python bench_pika_loop.py AMQP_URL QUEUE COMMAND...
"""
import subprocess
import sys

import pika


def main(url, queue, command):
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1)
    for handled, (method, _properties, _body) in enumerate(channel.consume(queue)):
        subprocess.run([*command, "stamp", f"message {handled}"], check=True)
        channel.basic_ack(method.delivery_tag)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
'''

#: Microseconds the plain sqlite loop spins per message when the run has no kq rate to calibrate it
#: with (``--only sqlite-plain``): what a kq worker did besides its transaction on the first machine
#: measured. Otherwise :class:`_PlainSpin` sets it in the same run.
PLAIN_SPIN_US = 250

_SQLITE_LOOP_MODULE = '''\
"""A plain sqlite3 worker on a database kq filled: kq's transaction per message, no kq code.

Each transaction deletes the message just handled and leases the next ready one (as kq's consumer does
with prefetch 1), under an exclusive flock of the same lock file, retried after sched_yield; then the
command function runs, then a spin of SPIN_US microseconds. With no message ready it looks again after
1 ms, as kq's consumer does; it stops when killed, or with --drain when no message is ready.

Usage: python bench_sqlite_loop.py DATABASE QUEUE SPIN_US [--drain]
"""
import fcntl
import os
import sqlite3
import sys
import time

from bench_command import main as command

SELECT = (
    "SELECT id, message_id, body, content_type, headers, routing_key, delivery_count FROM kq_messages"
    " WHERE queue = ? AND available_at <= ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY id LIMIT 1"
)
LEASE = "UPDATE kq_messages SET available_at = ?, lease = ?, delivery_count = ? WHERE id = ?"
DELETE = "DELETE FROM kq_messages WHERE id = ? AND lease = ?"


def main(path, queue, spin, drain):
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    connection.execute("PRAGMA synchronous = NORMAL")  # kq's default
    connection.execute("PRAGMA wal_autocheckpoint = 0")
    lock = os.open(path + "-lock", os.O_RDONLY | os.O_CREAT, 0o600)
    handled, commits = None, 0
    while True:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                os.sched_yield()
        connection.execute("BEGIN IMMEDIATE")
        if handled is not None:
            connection.execute(DELETE, handled)
        now = time.time()
        row = connection.execute(SELECT, (queue, now, now)).fetchone()
        if row is not None:
            lease = os.urandom(16).hex()
            connection.execute(LEASE, (now + 30, lease, row[-1] + 1, row[0]))
            handled = (row[0], lease)
        connection.execute("COMMIT")
        fcntl.flock(lock, fcntl.LOCK_UN)
        commits += 1
        if commits % 250 == 0:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        if row is None:
            if drain:
                break
            handled = None
            time.sleep(0.001)
            continue
        command(["stamp", "message"])
        until = time.perf_counter() + spin
        while time.perf_counter() < until:
            pass
    connection.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]) / 1e6, "--drain" in sys.argv[4:])
'''

_EXTRA = {
    "bench_command.py": _COMMAND_MODULE,
    "bench_heavy.py": _HEAVY_MODULE,
    "bench_pika_loop.py": _PIKA_LOOP_MODULE,
    "bench_sqlite_loop.py": _SQLITE_LOOP_MODULE,
}


def _config(context: Context, queue: str, driver: str, consumer: str, console: str) -> Path:
    """A ``kq.toml`` with a signing key file of its own, the queue on ``driver`` with ``consumer``."""
    folder = context.workdir / "kq" / queue
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / "signing.key"
    key.write_text(secrets.token_urlsafe(32))
    key.chmod(0o600)
    if driver == "rabbit":
        instance = f'type = "rabbitmq"\nurl = "{context.amqp_url}"\n'
    else:
        instance = 'type = "sqlite"\npath = "queues.sqlite3"\n'
    path = folder / "kq.toml"
    path.write_text(
        f'default_driver = "{driver}"\n\n'
        f"[drivers.{driver}]\n{instance}\n"
        f'[queues.{queue}]\nconsumer = "{consumer}"\n\n'
        f"[console]\n{console}\n"
        '[allow]\ncommands = ["stamp"]\n\n'
        '[signing]\nkeys = { bench = "file:signing.key" }\n'
    )
    return path


#: Seconds the workers get to start before the messages are published (not timed).
SETTLE = 1.0


def _prefill(config: Path, queue: str, count: int) -> None:
    """Publish ``count`` signed commands in one batch (one transaction on sqlite)."""
    from kq.core import App

    with App.from_config(config) as app:
        calls = [{"command": "stamp", "arguments": [f"message {i}"]} for i in range(count)]
        app.command_producer(queue).publish_batch(calls)


def _steady_rate(lines: list[str], count: int) -> float:
    """Messages per second while every worker was busy: from the moment the last worker to start ran its
    first command to the moment the first worker to finish ran its last (one worker: first to last)."""
    if len(lines) < count:
        raise RuntimeError(f"only {len(lines)} of {count} commands ran")
    stamps: dict[str, list[float]] = {}
    for line in lines:
        when, label = line.split()
        stamps.setdefault(label, []).append(float(when))
    start = max(min(times) for times in stamps.values())
    end = min(max(times) for times in stamps.values())
    inside = sum(1 for times in stamps.values() for when in times if start < when <= end)
    if inside < 2 or end <= start:
        raise RuntimeError(f"the {len(stamps)} workers were not busy together ({inside} messages in common)")
    logger.debug("%d workers, %d of %d messages in the common window", len(stamps), inside, len(lines))
    return rate(inside, end - start)


def _kq_round(
    context: Context, *, driver: str, consumer: str, console: str, count: int, workers: int
) -> float:
    """Start ``workers`` workers on an empty queue, publish ``count`` commands, and return the rate."""
    apps = write_apps(context, _EXTRA)
    queue = new_name("bench_cmd")
    config = _config(context, queue, driver, consumer, console)
    stamps = Stamps(context)
    env = app_environ(context, apps, KQ_CONFIG=str(config), BENCH_STAMPS=str(stamps.folder))
    started: list[Worker] = []
    try:
        for n in range(1, workers + 1):
            started.append(
                Worker(
                    f"kq consume #{n}",
                    [context.python, "-m", "kq.cli", "consume", queue, "--label", f"{queue}-{n}"],
                    env=env,
                    cwd=config.parent,
                    log=stamps.folder / f"worker-{n}.log",
                )
            )
        time.sleep(SETTLE)
        for worker in started:
            worker.check_alive()
        _prefill(config, queue, count)
        lines = stamps.wait_lines("lines", count, started)
    finally:
        for worker in started:
            worker.stop()
        if driver == "rabbit":
            delete_queues(context, *framework_queues("kq", queue))
    return _steady_rate(lines, count)


def _bare_round(context: Context, argv: list[str], count: int) -> float:
    """A bare ``subprocess.run`` loop of ``argv + [stamp, message i]``, from the first stamp to the last."""
    apps = write_apps(context, _EXTRA)
    stamps = Stamps(context)
    env = app_environ(context, apps, BENCH_STAMPS=str(stamps.folder))
    for i in range(count):
        subprocess.run([*argv, "stamp", f"message {i}"], env=env, cwd=apps, check=True)
    return _steady_rate(stamps.lines("lines"), count)


def _script_workers(
    context: Context, apps: Path, script: str, argv: list[str], count: int, workers: int
) -> float:
    """Start ``workers`` processes of ``apps/script argv...`` (labelled 1, 2, ...), wait for ``count``
    stamps, stop them, and return the steady rate, as for kq's workers."""
    stamps = Stamps(context)
    env = app_environ(context, apps, BENCH_STAMPS=str(stamps.folder))
    started: list[Worker] = []
    try:
        for n in range(1, workers + 1):
            started.append(
                Worker(
                    f"{script} #{n}",
                    [context.python, str(apps / script), *argv],
                    env={**env, "KQ_LABEL": f"plain-{n}"},
                    cwd=apps,
                    log=stamps.folder / f"worker-{n}.log",
                )
            )
        lines = stamps.wait_lines("lines", count, started)
    finally:
        for worker in started:
            worker.stop()
    return _steady_rate(lines, count)


def _pika_loop_round(context: Context, argv: list[str], count: int, workers: int = 1) -> float:
    """``workers`` plain pika workers running ``argv`` per message (prefetch 1, ack after)."""
    apps = write_apps(context, _EXTRA)
    queue = new_queue("pika-loop")
    with cleanup(context.amqp_url, queue):
        prefill(context.amqp_url, queue, count)
        return _script_workers(
            context, apps, "bench_pika_loop.py", [context.amqp_url, queue, *argv], count, workers
        )


def _plain_sqlite_round(context: Context, count: int, processes: int, spin_us: float) -> float:
    """``processes`` plain sqlite3 loops draining ``count`` messages kq put in a database."""
    apps = write_apps(context, _EXTRA)
    queue = new_name("bench_plain")
    console = 'callable = "bench_command:main"\n'
    config = _config(context, queue, "local", "inprocess_console_command", console)
    _prefill(config, queue, count)
    argv = [str(config.parent / "queues.sqlite3"), queue, f"{spin_us:.0f}"]
    return _script_workers(context, apps, "bench_sqlite_loop.py", argv, count, processes)


class _PlainSpin:
    """The plain sqlite loop's spin, set in the run so that one plain process does what one kq worker
    does per message: the kq worker's time per message (the median of the in-process scenario's one
    worker rounds, which run just before) less the loop's own time with no spin (measured once)."""

    def __init__(self, context: Context, count: int) -> None:
        self.context = context
        self.count = count
        self.kq_rates: list[float] = []
        self.spin_us: float | None = None
        self.basis = f"a fixed {PLAIN_SPIN_US} µs (no kq rate in this run)"

    def record(self, rate: float) -> float:
        """Keep a kq one-worker rate (the side's value, returned unchanged)."""
        self.kq_rates.append(rate)
        return rate

    def get(self) -> float:
        if self.spin_us is None:
            if not self.kq_rates:
                self.spin_us = float(PLAIN_SPIN_US)
            else:
                bare = _plain_sqlite_round(self.context, self.count, 1, 0.0)
                kq = statistics.median(self.kq_rates)
                self.spin_us = max(0.0, 1e6 / kq - 1e6 / bare)
                self.basis = (
                    f"{self.spin_us:.0f} µs, set in this run: a kq worker's {1e6 / kq:.0f} µs per message "
                    f"less the loop's own {1e6 / bare:.0f} µs"
                )
            logger.info("plain sqlite loop: a spin of %s", self.basis)
        return self.spin_us


def _forked_installed() -> None:
    """Fail with a clear error while the forked mode is not installed."""
    if not metadata.entry_points(group="kq.handlers", name=FORKED):
        raise RuntimeError(
            f"consumer kind {FORKED!r} is not installed (no 'kq.handlers' entry point of that name): the "
            "forked mode is not built yet, or kq-core was not reinstalled into this environment since"
        )


def _forked_round(context: Context, count: int) -> float:
    _forked_installed()
    return _kq_round(
        context,
        driver="rabbit",
        consumer=FORKED,
        console='callable = "bench_heavy:main"\n',
        count=count,
        workers=1,
    )


def scenarios(context: Context) -> list[Scenario]:
    apps = context.workdir / "apps"
    command = [context.python, str(apps / "bench_command.py")]
    process_console = f"prefix = {json.dumps(command)}\n"
    processes = context.count(80, 10)
    inprocess = context.count(3000, 200)
    forked = context.count(30, 5)

    def process(workers: int) -> Callable[[], float]:
        return lambda: _kq_round(
            context,
            driver="rabbit",
            consumer="console_command",
            console=process_console,
            count=processes,
            workers=workers,
        )

    spin = _PlainSpin(context, inprocess)

    def in_process(workers: int) -> Callable[[], float]:
        def run() -> float:
            rate = _kq_round(
                context,
                driver="local",
                consumer="inprocess_console_command",
                console='callable = "bench_command:main"\n',
                count=inprocess,
                workers=workers,
            )
            return spin.record(rate) if workers == 1 else rate

        return run

    return [
        Scenario(
            key="commands-process",
            title=f"console commands, a process per message, {processes} messages",
            unit="msg/s",
            sides=(
                Side("subprocess.run loop", lambda: _bare_round(context, command, processes)),
                Side("kq", process(1)),
                Side("pika + subprocess.run loop", lambda: _pika_loop_round(context, command, processes)),
            ),
            targets=(Target("subprocess.run loop", ">=", 0.9),),
            note=(
                "one `kq consume` (console_command, RabbitMQ, signed messages, default settings) against a "
                "bare `subprocess.run` loop of the same `python bench_command.py stamp MESSAGE`; "
                "first to last command, worker start-up excluded. The third side is a plain pika worker "
                "(prefetch 1, `subprocess.run`, then `basic_ack`): the bare loop plus what the broker "
                "costs any worker (the ack, then the next delivery's round trip)."
            ),
        ),
        Scenario(
            key="commands-process-2-workers",
            title=f"console commands, a process per message, 2 workers vs 1, {processes} messages",
            unit="msg/s",
            sides=(Side("kq 1 worker", process(1)), Side("kq 2 workers", process(2))),
            kq_side="kq 2 workers",
            targets=(Target("kq 1 worker", ">=", 1.8),),
            note="two `kq consume` processes on one RabbitMQ queue against one (2 cores).",
        ),
        Scenario(
            key="commands-process-plain-2-workers",
            title=f"ceiling: plain pika workers running the same command, 2 vs 1, {processes} messages",
            unit="msg/s",
            sides=(
                Side("plain 1 worker", lambda: _pika_loop_round(context, command, processes)),
                Side("plain 2 workers", lambda: _pika_loop_round(context, command, processes, 2)),
            ),
            kq_side="plain 2 workers",
            note=(
                "no kq code: the plain pika worker of the first scenario (prefetch 1, `subprocess.run`, "
                "`basic_ack`), two processes against one; compare the row above."
            ),
        ),
        Scenario(
            key="commands-inprocess-sqlite-2-workers",
            title=f"in-process console commands on sqlite, 2 workers vs 1, {inprocess} messages",
            unit="msg/s",
            sides=(Side("kq 1 worker", in_process(1)), Side("kq 2 workers", in_process(2))),
            kq_side="kq 2 workers",
            targets=(Target("kq 1 worker", ">=", 1.8),),
            note=(
                "`inprocess_console_command` calling `bench_command:main(argv)` (appends one line to a "
                "file), sqlite driver with its default settings, signed messages; two `kq consume` "
                "processes on one sqlite file against one."
            ),
        ),
        Scenario(
            key="sqlite-plain-2-processes",
            title=(
                f"ceiling: a plain sqlite3 loop making kq's transaction per message, 2 processes vs 1, "
                f"{inprocess} messages"
            ),
            unit="msg/s",
            sides=(
                Side("plain 1 process", lambda: _plain_sqlite_round(context, inprocess, 1, spin.get())),
                Side("plain 2 processes", lambda: _plain_sqlite_round(context, inprocess, 2, spin.get())),
            ),
            kq_side="plain 2 processes",
            note=(
                "no kq code: each process deletes the message it handled and leases the next in one "
                "transaction, under the same lock file, on a database kq filled; then the same "
                "`bench_command:main` and a spin standing in for kq's own work per message, set in the run "
                "so that one plain process runs at one kq worker's rate (the kq worker's time per message, "
                "median of the row above's one-worker rounds, less the loop's own time with no spin). Its "
                "2-vs-1 ratio is what sqlite allows two processes committing once per message on one file; "
                "compare the row above."
            ),
        ),
        Scenario(
            key="commands-forked",
            title=f"Python commands importing for 0.1 s, forked mode, {forked} messages",
            unit="msg/s",
            sides=(
                Side(
                    "subprocess.run loop",
                    lambda: _bare_round(context, [context.python, "-m", "bench_heavy"], forked),
                ),
                Side("kq forked", lambda: _forked_round(context, forked)),
            ),
            kq_side="kq forked",
            targets=(Target("subprocess.run loop", ">=", 5),),
            note=(
                f'`{FORKED}` with `[console] callable = "bench_heavy:main"` (a module sleeping 0.1 s at '
                "import), one worker on RabbitMQ, against a bare `subprocess.run` loop of "
                "`python -m bench_heavy stamp MESSAGE`."
            ),
        ),
    ]
