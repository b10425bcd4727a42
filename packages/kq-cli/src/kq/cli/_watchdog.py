"""``kq watchdog start|stop|check|run``, and ``kq workerswatchdog`` (the PHP library's name)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click

from kq.cli._common import EXIT_FAILURE, FiniteFloat, State, emit, format_option, pass_state

if TYPE_CHECKING:
    from kq.core.watchdog import Watchdog

_GRACE_HELP = (
    "Seconds a worker may take to finish its current message after SIGTERM before it is killed "
    "(SIGKILL, with its process group and children)."
)


def _watchdog(state: State, **timings: Any) -> Watchdog:
    from kq.core.watchdog import Watchdog

    app = state.app
    return Watchdog(app.config, app.dispatcher, **timings)


@click.group()
def watchdog() -> None:
    """Keep the consumer processes of [workers.<name>] running.

    From cron, every minute: `kq watchdog start` starts the worker processes that are not running.
    Under systemd or in a container: `kq watchdog run` supervises them in the foreground, restarting
    those that exit. Workers are `kq consume` processes labelled <name>-1, <name>-2, ... and are found
    again by that label and by the configuration file they were started with. Logs: .kq/logs/<label>.log.
    """


@watchdog.command()
@click.option(
    "--wait",
    type=FiniteFloat(duration=True),
    default=1.0,
    show_default=True,
    help="Seconds a new worker must survive to count as started; one that exits sooner is reported.",
)
@format_option
@pass_state
def start(state: State, wait: float, output_format: str) -> None:
    """Start every configured worker process that is not running (idempotent; for cron).

    Exits with 1 when a worker could not be started, for example because it exited at once; its log
    says why. What was started is logged on stderr; --format json prints every instance's outcome.
    """
    outcomes = _watchdog(state, start_wait=wait).start()
    if output_format == "json":
        emit([outcome.as_dict() for outcome in outcomes], output_format)
    if any(outcome.outcome == "failed" for outcome in outcomes):
        raise click.exceptions.Exit(EXIT_FAILURE)


@watchdog.command()
@click.option("--grace", type=FiniteFloat(duration=True), default=10.0, show_default=True, help=_GRACE_HELP)
@format_option
@pass_state
def stop(state: State, grace: float, output_format: str) -> None:
    """Stop every worker process of this configuration: SIGTERM, then SIGKILL after --grace.

    A `kq watchdog run` of the same configuration is asked to stop first, since it would restart them;
    it stops its workers itself and reports them back. What was stopped, and how, is logged on stderr;
    --format json prints each process (worker, label, pid, killed, and supervisor: the pid of the
    `kq watchdog run` that stopped it, or null).
    """
    outcomes = _watchdog(state).stop(grace)
    if output_format == "json":
        emit([outcome.as_dict() for outcome in outcomes], output_format)


#: The states of a configured instance that make ``kq watchdog check`` exit with 1: not running.
DOWN_STATES = ("stopped", "backoff", "fatal")


@watchdog.command()
@format_option
@pass_state
def check(state: State, output_format: str) -> None:
    """Report every worker process: state, pid, uptime, memory (RSS with children), log file.

    States: running, stopped; under `kq watchdog run` also backoff (to be restarted) and fatal
    (exited at once too often, given up). For monitoring probes, the exit status is 0 when every
    configured worker process is running (or none is configured) and 1 when one is stopped, in
    backoff or fatal; those are then also named in one line on stderr.
    """
    rows = _watchdog(state).check()
    emit(rows, output_format, _check_lines)
    down = [row for row in rows if row["state"] in DOWN_STATES]
    if down:
        names = ", ".join(f"{row['label']} ({row['state']})" for row in down)
        configured = sum(1 for row in rows if row["state"] not in ("duplicate", "unconfigured"))
        click.echo(f"kq: {len(down)} of {configured} worker processes not running: {names}", err=True)
        raise click.exceptions.Exit(EXIT_FAILURE)


@watchdog.command()
@click.option("--grace", type=FiniteFloat(duration=True), default=10.0, show_default=True, help=_GRACE_HELP)
@click.option(
    "--start-seconds",
    type=FiniteFloat(duration=True),
    default=3.0,
    show_default=True,
    help="A worker exiting within this many seconds of starting exited 'at once' and is restarted "
    "with backoff; one that lived longer is restarted immediately.",
)
@click.option(
    "--max-retries",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Quick exits in a row after which a worker is FATAL (not restarted until SIGHUP).",
)
@click.option(
    "--max-backoff",
    type=FiniteFloat(duration=True),
    default=60.0,
    show_default=True,
    help="Longest delay between two restarts (the delay doubles from 1 s with each quick exit).",
)
@click.option(
    "--poll-interval",
    type=FiniteFloat(0.05, duration=True),
    default=1.0,
    show_default=True,
    help="Seconds between two looks at the workers.",
)
@pass_state
def run(
    state: State,
    grace: float,
    start_seconds: float,
    max_retries: int,
    max_backoff: float,
    poll_interval: float,
) -> None:
    """Supervise the workers in the foreground (for systemd and containers).

    Adopts running workers, starts missing ones and restarts those that exit. SIGTERM or SIGINT stops
    every worker (SIGTERM, SIGKILL after --grace) and exits with 0; SIGHUP retries FATAL workers.
    """
    watchdog = _watchdog(
        state,
        start_seconds=start_seconds,
        max_retries=max_retries,
        max_backoff=max_backoff,
        poll_interval=poll_interval,
    )
    watchdog.run(grace)


@click.command()
@click.argument("action", type=click.Choice(["start", "stop", "check"]), default="start")
@click.pass_context
def workerswatchdog(ctx: click.Context, action: str) -> None:
    """The PHP library's name for `kq watchdog`: ACTION is start (default), stop or check.

    The exit statuses are those of the command it stands for (check: 1 when a worker is down).
    """
    # ctx.invoke fills in each command's own option defaults.
    ctx.invoke({"start": start, "stop": stop, "check": check}[action])


def _check_lines(rows: list[dict[str, Any]]) -> Iterable[str]:
    if not rows:
        yield "no workers configured ([workers.<name>] in the configuration file)"
        return
    table = [("LABEL", "STATE", "PID", "UPTIME", "RSS", "QUEUE", "LOG")]
    for row in rows:
        table.append(
            (
                row["label"],
                row["state"],
                "-" if row["pid"] is None else str(row["pid"]),
                "-" if row["uptime"] is None else duration(row["uptime"]),
                "-" if row["rss"] is None else f"{row['rss']:.1f} MB",
                row["queue"],
                row["log"] or "-",
            )
        )
    widths = [max(len(line[column]) for line in table) for column in range(len(table[0]) - 1)]
    for line in table:
        # The last column (the log path) is not padded: no trailing blanks.
        padded = [cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True)]
        yield "  ".join([*padded, line[-1]])


def duration(seconds: float) -> str:
    """``45s``, ``12m05s``, ``3h02m``, ``2d04h``: short enough for a table column."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
