"""``kq failed show|retry|remove``: look at a queue's dead letters, queue them again, or delete them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

import click

from kq.cli._common import (
    EXIT_FAILURE,
    FiniteFloat,
    State,
    confirm,
    emit,
    format_option,
    pass_state,
    yes_option,
)

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
        type=FiniteFloat(duration=True),
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
      kq failed show jobs ID...             those messages in full, with every header
      kq failed retry jobs ID...            queue these again on their original queue (signed again)
      kq failed retry jobs --all            ... every one
      kq failed remove jobs ID... | --all   delete them
    """


@failed.command("show", short_help="Show the failed messages of QUEUE, or some in full.")
@click.argument("queue")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Show at most N messages.")
@_common_options
@pass_state
def show_command(
    state: State,
    queue: str,
    ids: tuple[str, ...],
    limit: int | None,
    driver: str | None,
    idle: float,
    output_format: str,
) -> None:
    """Show the dead-lettered messages of QUEUE, oldest first, one line each; they stay where they are.

    With IDs, show those messages in full: why and when they failed, every header (kq's own
    included) and the start of the body. An ID not found is named on stderr (exit status 1).
    """
    from kq.core import show_dead_letters

    if ids and limit is not None:
        raise click.UsageError("give message IDs or --limit, not both")
    messages = show_dead_letters(
        state.app, queue, limit=limit, driver=driver, idle=idle, ids=list(ids) if ids else None
    )
    dead_letter_queue = state.app.queue(queue, driver)[1].dead_letter_queue
    if not ids:
        emit(messages, output_format, lambda items: _show_lines(items, dead_letter_queue))
        return
    emit(messages, output_format, _detail_lines)
    found = {item["message_id"] for item in messages}
    missing = [message_id for message_id in dict.fromkeys(ids) if message_id not in found]
    for message_id in missing:
        click.echo(f"kq: not found in {dead_letter_queue}: {message_id}", err=True)
    if missing:
        raise click.exceptions.Exit(EXIT_FAILURE)


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
@yes_option
@_common_options
@pass_state
def remove_command(
    state: State,
    queue: str,
    ids: tuple[str, ...],
    all_: bool,
    yes: bool,
    driver: str | None,
    idle: float,
    output_format: str,
) -> None:
    """Delete dead-lettered messages of QUEUE for good (--all asks first on a terminal, unless -y)."""
    from kq.core import remove_dead_letters

    selection = _selection(ids, all_)
    if selection is None:
        dead_letter_queue = state.app.queue(queue, driver)[1].dead_letter_queue
        confirm(f"Delete every message of {dead_letter_queue} for good?", yes)
    result = remove_dead_letters(state.app, queue, selection, driver=driver, idle=idle)
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


def _detail_lines(items: list[dict[str, Any]]) -> Iterable[str]:
    """Each message in full: its fields one per line, then every header, then the body's start."""
    now = datetime.now(timezone.utc)
    for number, item in enumerate(items):
        if number:
            yield ""
        yield f"message {item['message_id']}"
        yield f"  dead-lettered   {_when(item['dead_lettered_at'], now)}"
        for label, key in (
            ("reason", "reason"),
            ("error", "error"),
            ("original queue", "original_queue"),
            ("routing key", "routing_key"),
            ("content type", "content_type"),
            ("attempts", "attempts"),
            ("deliveries", "delivery_count"),
            ("signed with", "key_id"),
            ("size", "size"),
        ):
            value = item.get(key)
            yield f"  {label:<15} {'-' if value is None or value == '' else _printable(str(value))}"
        yield "  headers"
        for name, value in item["all_headers"].items():
            yield f"    {_printable(name)}: {_printable(value)}"
        yield "  body"
        for line in str(item["body"]).splitlines() or [""]:
            yield f"    {_printable(line)}"


def _printable(text: str) -> str:
    """``text`` with control characters (terminal escapes, line breaks) shown as escapes: a dead letter
    may come from anywhere, and its headers must not drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


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
