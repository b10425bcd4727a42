"""``kq failed show|retry|remove``: look at a queue's dead letters, queue them again, or delete them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

import click

from kq.cli._common import EXIT_FAILURE, FiniteFloat, State, emit, format_option, pass_state

if TYPE_CHECKING:
    from kq.core import RedriveResult

F = TypeVar("F", bound=Callable[..., Any])

#: Characters of the error shown per message in text output.
ERROR_CHARS = 80


def _common_options(function: F) -> F:
    """``-i/--driver``, ``--idle`` and ``--format``, shared by the three commands."""
    function = format_option(function)
    function = click.option(
        "--idle",
        type=FiniteFloat(),
        default=1.0,
        show_default=True,
        metavar="SECONDS",
        help="How long the dead-letter queue must stay empty before kq has seen it all.",
    )(function)
    return click.option(
        "-i", "--driver", help="Driver instance, for a queue that is not configured (default: its driver)."
    )(function)


def _selection(ids: tuple[str, ...], all_: bool) -> list[str] | None:
    """The ids to act on, ``None`` for all; a usage error when neither or both were given."""
    if ids and all_:
        raise click.UsageError("give message IDs or --all, not both")
    if not ids and not all_:
        raise click.UsageError("give the IDs of the messages, or --all for every one")
    return None if all_ else list(ids)


@click.group()
def failed() -> None:
    """Look at, retry and remove the messages of a queue that failed (its dead-letter queue).

    QUEUE is the queue the messages failed on: 'kq failed show jobs' reads jobs.failed, or the
    dead_letter_queue configured for jobs.

    \b
      kq failed show jobs [--limit N]       the failed messages: id, when, why, routing key
      kq failed retry jobs ID...            queue these again on their original queue (signed again)
      kq failed retry jobs --all            ... every one
      kq failed remove jobs ID... | --all   delete them
    """


@failed.command("show", short_help="Show the failed messages of QUEUE.")
@click.argument("queue")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Show at most N messages.")
@_common_options
@pass_state
def show_command(
    state: State, queue: str, limit: int | None, driver: str | None, idle: float, output_format: str
) -> None:
    """Show the dead-lettered messages of QUEUE, oldest first; they stay where they are."""
    from kq.core import show_dead_letters

    messages = show_dead_letters(state.app, queue, limit=limit, driver=driver, idle=idle)
    dead_letter_queue = state.app.queue(queue, driver)[1].dead_letter_queue
    emit(messages, output_format, lambda items: _show_lines(items, dead_letter_queue))


@failed.command("retry", short_help="Queue failed messages of QUEUE again, signed afresh.")
@click.argument("queue")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "all_", is_flag=True, help="Retry every message of the dead-letter queue.")
@click.option(
    "--resign-unverified",
    is_flag=True,
    help="Also sign messages whose original signature does not check, for queues that require "
    "signatures. Only for messages you trust: signing vouches for their content.",
)
@_common_options
@pass_state
def retry_command(
    state: State,
    queue: str,
    ids: tuple[str, ...],
    all_: bool,
    resign_unverified: bool,
    driver: str | None,
    idle: float,
    output_format: str,
) -> None:
    """Queue dead-lettered messages of QUEUE again on the queue they failed on.

    They keep their id, body, routing key and headers, lose the dead-letter notes and the attempt
    count, and are signed again. Those that cannot be queued again stay in the dead-letter queue.
    """
    from kq.core import retry_dead_letters

    selection = _selection(ids, all_)
    result = retry_dead_letters(
        state.app, queue, selection, driver=driver, idle=idle, resign_unverified=resign_unverified
    )
    _report(result, output_format)


@failed.command("remove", short_help="Delete failed messages of QUEUE.")
@click.argument("queue")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "all_", is_flag=True, help="Remove every message of the dead-letter queue.")
@_common_options
@pass_state
def remove_command(
    state: State,
    queue: str,
    ids: tuple[str, ...],
    all_: bool,
    driver: str | None,
    idle: float,
    output_format: str,
) -> None:
    """Delete dead-lettered messages of QUEUE for good."""
    from kq.core import remove_dead_letters

    result = remove_dead_letters(state.app, queue, _selection(ids, all_), driver=driver, idle=idle)
    _report(result, output_format)


def _report(result: RedriveResult, output_format: str) -> None:
    """Print the outcome; problems go to stderr and make the exit status 1."""
    emit(result.as_dict(), output_format, lambda _: _summary(result))
    for message_id in result.missing:
        click.echo(f"kq: not found in {result.dead_letter_queue}: {message_id}", err=True)
    for message_id, why in result.failed.items():
        click.echo(f"kq: {message_id} left in {result.dead_letter_queue}: {why}", err=True)
    if not result.ok:
        raise click.exceptions.Exit(EXIT_FAILURE)


def _summary(result: RedriveResult) -> Iterable[str]:
    if result.action == "remove":
        yield f"{_count(len(result.done))} removed from {result.dead_letter_queue}"
        return
    if not result.done:
        yield f"No message queued again from {result.dead_letter_queue}"
        return
    per_target: dict[str, int] = {}
    for message_id in result.done:
        target = result.targets[message_id]
        per_target[target] = per_target.get(target, 0) + 1
    if len(per_target) == 1:
        yield f"{_count(len(result.done))} queued again on {next(iter(per_target))}"
    else:
        where = ", ".join(f"{n} on {target}" for target, n in per_target.items())
        yield f"{_count(len(result.done))} queued again: {where}"


def _count(n: int) -> str:
    return f"{n} message" if n == 1 else f"{n} messages"


def _show_lines(items: list[dict[str, Any]], dead_letter_queue: str) -> Iterable[str]:
    now = datetime.now(timezone.utc)
    for item in items:
        error = (item["error"] or "-").replace("\n", " ")
        if len(error) > ERROR_CHARS:
            error = error[: ERROR_CHARS - 3] + "..."
        yield "  ".join(
            [
                item["message_id"],
                _when(item["dead_lettered_at"], now),
                item["reason"] or "-",
                error,
                f"key {item['routing_key'] or '-'}",
            ]
        )
    if not items:
        yield f"No message in {dead_letter_queue}"
    else:
        yield f"{_count(len(items))} in {dead_letter_queue}"


def _when(stamp: str | None, now: datetime) -> str:
    """``2026-11-27 21:17:54 (5m ago)`` from an ISO 8601 time; the raw value when it is not one."""
    if not stamp:
        return "-"
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    moment = moment.astimezone(timezone.utc)
    return f"{moment:%Y-%m-%d %H:%M:%S} ({_age((now - moment).total_seconds())})"


def _age(seconds: float) -> str:
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"
