"""``kq consume``: run a worker on one queue."""

from __future__ import annotations

import signal
from types import FrameType
from typing import TYPE_CHECKING

import click

from kq.cli._common import EXIT_INTERRUPTED, FiniteFloat, State, pass_state

if TYPE_CHECKING:
    from kq.core import ConsumeLoop


class _ForcedStop(BaseException):
    """Raised from a signal handler on the second stop signal: abandon the current message."""


@click.command()
@click.argument("queue")
@click.option(
    "-m",
    "--messages",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Stop after this many messages (0: no limit).",
)
@click.option(
    "-t",
    "--timeout",
    type=FiniteFloat(),
    default=0.0,
    show_default=True,
    help="Stop after this many seconds in total, checked between messages (0: no limit).",
)
@click.option(
    "-l",
    "--memory-limit",
    type=FiniteFloat(),
    default=0.0,
    show_default=True,
    help="Stop once the resident memory (RSS) of this worker and its children exceeds this many MB, "
    "checked between messages (0: no limit).",
)
@click.option(
    "--failure-limit",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Stop after this many failed messages (0: no limit).",
)
@click.option(
    "--check",
    "checks",
    multiple=True,
    metavar="MODULE:CALLABLE",
    help="A custom stop check, repeatable: a function (or a class with a check() method) returning a "
    "reason to stop, or None; called between messages.",
)
@click.option(
    "--grace",
    type=FiniteFloat(),
    default=0.0,
    show_default=True,
    help="After SIGTERM/SIGINT, seconds the current message may still take before it is abandoned "
    "(and redelivered); 0: wait for it.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=1, max=65535),
    help="Serve Prometheus metrics on this port (needs kq-core[prometheus]).",
)
@click.option(
    "--metrics-address",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics server listens on.",
)
@click.option(
    "-r",
    "--routing-key",
    help="Narrow this worker to messages whose routing key matches this AMQP topic pattern ('*' one "
    "word, '#' any words); default: the queue's configured routing_keys. What it does depends on the "
    "driver: sqlite and memory filter the shared queue, RabbitMQ reads a queue of its own, drivers that "
    "cannot filter refuse it (kq managedriver list shows which).",
)
@click.option(
    "-i", "--driver", help="Driver instance (default: the queue's configured driver, else default_driver)."
)
@click.option(
    "--label",
    help="A name for this worker, unique per process, so that it can be found among processes (it is on "
    "its command line); commands see it as $KQ_LABEL.",
)
@click.option(
    "-w",
    "--without-signals",
    is_flag=True,
    help="Do not handle SIGTERM/SIGINT (by default the first one finishes the current message and "
    "stops, the second abandons it so that it is redelivered).",
)
@click.option(
    "--poll-interval",
    type=FiniteFloat(0.01),
    default=1.0,
    show_default=True,
    help="Longest single wait for a message; a stop request is noticed within it.",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Messages the broker may hand this worker ahead of time.",
)
@pass_state
def consume(
    state: State,
    queue: str,
    messages: int,
    timeout: float,
    routing_key: str | None,
    driver: str | None,
    label: str | None,
    without_signals: bool,
    poll_interval: float,
    prefetch: int,
    memory_limit: float,
    failure_limit: int,
    checks: tuple[str, ...],
    grace: float,
    metrics_port: int | None,
    metrics_address: str,
) -> None:
    """Consume messages from QUEUE and execute them with the queue's consumer.

    Each message is acknowledged only after it was handled. One that fails, cannot be decoded or asks
    for something not allowed goes to the queue's dead-letter queue (QUEUE.failed) with the reason.

    A limit (-m, -t, -l, --failure-limit, --check) or a first SIGTERM/SIGINT ends the worker after the
    current message, with exit status 0; a second signal, or --grace running out, abandons the message
    in progress (it is redelivered) and exits with 130.
    """
    from kq.core import Limits, load_check

    limits = Limits(
        messages=messages,
        time=timeout,
        memory=memory_limit,
        failures=failure_limit,
        checks=tuple(load_check(name) for name in checks),
    )
    loop = state.app.consume_loop(
        queue,
        driver=driver,
        routing_key=routing_key,
        limits=limits,
        label=label,
        poll_interval=poll_interval,
        prefetch=prefetch,
    )
    if metrics_port:
        from kq.core.metrics import PrometheusMetrics, serve

        PrometheusMetrics().register(state.app.dispatcher)
        serve(metrics_port, metrics_address)
    previous = None if without_signals else _install_signal_handlers(loop, grace)
    try:
        reason = loop.run()
    except _ForcedStop as stop:
        click.echo(f"Stopped because: {stop}; the message in progress was abandoned and will be redelivered")
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    finally:
        if previous is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    click.echo(f"Stopped because: {reason}")


def _install_signal_handlers(loop: ConsumeLoop, grace: float) -> dict[int, signal._HANDLER]:
    received: list[str] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if received:
            raise _ForcedStop(f"received {name} while stopping")
        received.append(name)
        loop.stop(f"received {name}")
        if grace:
            signal.setitimer(signal.ITIMER_REAL, grace)

    def expire(signum: int, frame: FrameType | None) -> None:
        raise _ForcedStop(f"received {received[0]} and the grace period of {grace:g}s ran out")

    previous: dict[int, signal._HANDLER] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, handle)
    previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, expire)
    return previous
