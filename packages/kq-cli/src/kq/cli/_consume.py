"""``kq consume``: run a worker on one queue."""

from __future__ import annotations

import signal
from types import FrameType
from typing import TYPE_CHECKING

import click

from kq.cli._common import EXIT_INTERRUPTED, State, pass_state

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
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Stop after this many seconds in total, checked between messages (0: no limit).",
)
@click.option(
    "-r",
    "--routing-key",
    help="Only take messages whose routing key matches this AMQP topic "
    "pattern ('*' one word, '#' any words); default: the queue's "
    "configured routing_keys.",
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
    type=click.FloatRange(min=0.01),
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
) -> None:
    """Consume messages from QUEUE and execute them with the queue's consumer.

    Each message is acknowledged only after it was handled. One that fails, cannot be decoded or asks
    for something not allowed goes to the queue's dead-letter queue (QUEUE.failed) with the reason.
    """
    from kq.core import Limits

    loop = state.app.consume_loop(
        queue,
        driver=driver,
        routing_key=routing_key,
        limits=Limits(messages=messages, time=timeout),
        label=label,
        poll_interval=poll_interval,
        prefetch=prefetch,
    )
    previous = None if without_signals else _install_signal_handlers(loop)
    try:
        reason = loop.run()
    except _ForcedStop as stop:
        click.echo(f"Stopped because: {stop}; the message in progress was abandoned and will be redelivered")
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    finally:
        if previous is not None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    click.echo(f"Stopped because: {reason}")


def _install_signal_handlers(loop: ConsumeLoop) -> dict[int, signal._HANDLER]:
    received: list[str] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if received:
            raise _ForcedStop(f"received {name} while stopping")
        received.append(name)
        loop.stop(f"received {name}")

    previous: dict[int, signal._HANDLER] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, handle)
    return previous
