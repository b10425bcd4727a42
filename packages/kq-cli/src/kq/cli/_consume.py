"""``kq consume``: run a worker on one queue, or on several in priority order."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from kq.cli._common import EXIT_INTERRUPTED, FiniteFloat, State, pass_state
from kq.cli._startup import ENDS_STARTUP_ITSELF, startup_done

if TYPE_CHECKING:
    from kq.core import ConsumeLoop, ConsumeOption, PriorityLoop


class _DeclaredOptionsCommand(click.Command):
    """A command whose options are kq-core's declaration of ``kq consume`` (``kq.core.CONSUME_OPTIONS``),
    added when the command is first used: ``kq --help`` imports nothing of kq-core."""

    _declared = False

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        """The arguments, then the declared options."""
        if not self._declared:
            from kq.core import CONSUME_OPTIONS

            self.params.extend(_click_option(option) for option in CONSUME_OPTIONS.values())
            self._declared = True
        return super().get_params(ctx)


# The worker's loop, driver and handlers are built in the command's function: its start-up ends when
# the loop is about to wait for messages.
setattr(_DeclaredOptionsCommand, ENDS_STARTUP_ITSELF, True)


def _click_option(option: ConsumeOption) -> click.Option:
    """The click option of one declared ``kq consume`` option."""
    names = [name for name in (option.short, option.long) if name]
    settings: dict[str, Any] = {"help": option.help}
    if option.type is bool:
        settings["is_flag"] = True
    elif option.type is int:
        maximum = None if option.maximum is None else int(option.maximum)
        settings["type"] = click.IntRange(min=int(option.minimum), max=maximum)
    elif option.type is float:
        settings["type"] = FiniteFloat(option.minimum, option.maximum, duration=option.duration)
    if option.multiple:
        settings["multiple"] = True
    if option.metavar:
        settings["metavar"] = option.metavar
    if option.default is not None and option.type is not bool:
        settings.update(default=option.default, show_default=True)
    return click.Option([*names, option.name], **settings)


@click.command(cls=_DeclaredOptionsCommand)
@click.argument("queues", metavar="QUEUE...", nargs=-1, required=True)
@pass_state
def consume(
    state: State, /, queues: tuple[str, ...], metrics_port: int | None, metrics_address: str, **options: Any
) -> None:
    """Consume messages from QUEUE and execute them with the queue's consumer.

    Several queues are consumed in the order given, the first one first: after each message the worker
    looks at the first queue again, and takes a message of a later queue only when the ones before it
    have none ready. Each queue keeps its own driver, consumer and dead-letter queue; the limits count
    across them. An idle worker waits up to --poll-interval on the first queue, then looks at the others.

    Each message is acknowledged only after it was handled. One that fails, cannot be decoded or asks
    for something not allowed goes to the queue's dead-letter queue (QUEUE.failed) with the reason.

    A limit (-m, -t, -l, --failure-limit, --check), --burst once the queues are drained, or a first
    SIGTERM/SIGINT ends the worker after the current message, with exit status 0; a second signal, or
    --grace running out, abandons the message in progress (it is redelivered) and exits with 130.

    \b
    Examples:
      kq consume demo
      kq consume high low            # high first, low when high is empty
      kq consume demo --burst        # drain demo, then exit (cron jobs, tests)
    """
    from kq.core import loop_arguments

    if len(set(queues)) != len(queues):
        raise click.UsageError(f"a queue is given twice: {' '.join(queues)}")
    if len(queues) > 1 and options.get("routing_key") is not None:
        raise click.UsageError("--routing-key narrows one queue: give a single QUEUE with it")
    # Every declared option but the metrics server is an argument of the loop (kq.core.CONSUME_OPTIONS).
    arguments = loop_arguments(options)
    loop: ConsumeLoop | PriorityLoop
    if len(queues) == 1:
        loop = state.app.consume_loop(queues[0], **arguments)
    else:
        loop = state.app.priority_loop(queues, **arguments)
    if metrics_port:
        from kq.core.metrics import PrometheusMetrics, serve

        PrometheusMetrics().register(state.app.dispatcher)
        serve(metrics_port, metrics_address)
    startup_done()
    # The loop handles SIGTERM/SIGINT itself (kq.core._signals), unless -w.
    reason = loop.run()
    if loop.abandoned:
        click.echo(
            f"Stopped because: {reason}; the message in progress was abandoned and will be redelivered"
        )
        raise click.exceptions.Exit(EXIT_INTERRUPTED)
    click.echo(f"Stopped because: {reason}")
