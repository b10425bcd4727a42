"""``kq queuecommand`` and ``kq queuemessage``: put messages on a queue."""

from __future__ import annotations

import sys

import click

from kq.cli._common import (
    State,
    driver_option,
    emit,
    expiry_options,
    format_option,
    parse_pairs,
    pass_state,
    report_queued,
)


@click.command()
@click.argument("queue")
@click.argument("command")
@click.argument("arguments", nargs=-1)
@click.option(
    "-o",
    "--option",
    "options",
    multiple=True,
    metavar="NAME=VALUE",
    help="An option for the command, repeatable. 'f=out.txt' becomes -fout.txt, 'name=v' becomes "
    "--name=v, a bare 'flag' becomes --flag; names may carry their own dashes.",
)
@driver_option
@click.option("-r", "--routing-key", help="Routing key (default: the command name with ':' turned into '.').")
@expiry_options
@click.option(
    "--novalidate",
    is_flag=True,
    help="Queue even if this machine's [allow] commands would reject the command.",
)
@format_option
@pass_state
def queuecommand(
    state: State,
    queue: str,
    command: str,
    arguments: tuple[str, ...],
    options: tuple[str, ...],
    driver: str | None,
    routing_key: str | None,
    ttl: float | None,
    delay: float,
    novalidate: bool,
    output_format: str,
) -> None:
    """Queue COMMAND with ARGUMENTS on QUEUE, for a worker (kq consume QUEUE) to execute.

    Put '--' before arguments that start with a dash:
    kq queuecommand demo mycommand -- --not-an-option-of-queuecommand
    """
    from kq.core import make_command

    app = state.app
    call = make_command(command, arguments, parse_pairs(options, "-o/--option", allow_flags=True))
    if not novalidate:
        _, spec = app.queue(queue, driver)
        allowed = app.config.allow.allow_list("commands")
        if spec.consumer in ("console_command", "inprocess_console_command") and not allowed.allows(
            call.command
        ):
            raise click.UsageError(
                f"command {call.command!r} is not in [allow] commands of "
                f"{app.config.source or 'the built-in defaults'} ({list(allowed.entries)!r}), so a worker "
                "using this configuration would reject it; pass --novalidate to queue it anyway"
            )
    message = app.command_producer(queue, driver).publish(call, routing_key=routing_key, ttl=ttl, delay=delay)
    report_queued(
        output_format,
        "Command queued for execution",
        queue,
        message,
        ttl=ttl,
        delay=delay,
        body=call.to_body(),
    )


@click.command()
@click.argument("queue")
@click.argument("body")
@click.option(
    "-c",
    "--content-type",
    default="application/json",
    show_default=True,
    help="Content type of BODY; workers decode by it.",
)
@click.option(
    "-n",
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Send the message this many times.",
)
@click.option("-b", "--batch", is_flag=True, help="Send the repeated messages as one batch (one round trip).")
@click.option(
    "-H", "--header", "headers", multiple=True, metavar="NAME=VALUE", help="A message header, repeatable."
)
@driver_option
@click.option("-r", "--routing-key", default="", help="Routing key (default: none).")
@expiry_options
@click.option("--novalidate", is_flag=True, help="Send a JSON content type even if BODY is not valid JSON.")
@format_option
@pass_state
def queuemessage(
    state: State,
    queue: str,
    body: str,
    content_type: str,
    repeat: int,
    batch: bool,
    headers: tuple[str, ...],
    driver: str | None,
    routing_key: str,
    ttl: float | None,
    delay: float,
    novalidate: bool,
    output_format: str,
) -> None:
    """Queue BODY as it is on QUEUE ('-' reads BODY from standard input)."""
    from kq.core import MessageFormatError, decode_body, media_type

    raw = sys.stdin.buffer.read() if body == "-" else body.encode()
    if not novalidate and media_type(content_type)[0] == "application/json":
        try:
            decode_body(raw, content_type)
        except MessageFormatError as exc:
            raise click.UsageError(f"{exc}; pass -c text/plain for text, or --novalidate") from None
    header_values = parse_pairs(headers, "-H/--header", allow_flags=False)
    producer = state.app.producer(queue, driver)
    settings = {
        "content_type": content_type,
        "routing_key": routing_key,
        "ttl": ttl,
        "delay": delay,
        "headers": {k: v or "" for k, v in header_values.items()},
    }
    sent: list[str] = []
    if batch:
        sent = [m.message_id for m in producer.publish_batch([raw] * repeat, **settings)]
    elif repeat > 1 and sys.stderr.isatty() and output_format == "text":
        with click.progressbar(range(repeat), label=f"Queueing on {queue}", file=sys.stderr) as bar:
            sent = [producer.publish(raw, **settings).message_id for _ in bar]
    else:
        sent = [producer.publish(raw, **settings).message_id for _ in range(repeat)]
    if output_format == "json":
        emit({"queue": queue, "message_ids": sent, "count": len(sent)}, output_format)
        return
    validity = f", valid for {ttl:g} seconds" if ttl else ""
    click.echo(f"{len(sent)} message(s) queued on queue {queue}{validity}")
