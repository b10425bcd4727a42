"""``kq queuexmlrpc``: queue an XML-RPC call (added to ``kq`` through the ``kq.commands`` entry points).

kq-core is imported only when the command runs, so that ``kq --help`` stays fast.
"""

from __future__ import annotations

import json
from typing import Any

import click

from kq.cli.plugin import (
    State,
    driver_option,
    expiry_options,
    format_option,
    json_option,
    pass_state,
    report_queued,
)


@click.command()
@click.argument("queue")
@click.argument("server")
@click.argument("method")
@click.argument("arguments", nargs=-1)
@json_option(
    "-j",
    "--json-arguments",
    kind=list,
    help="The arguments as a JSON array, for other types than strings: -j '[2, 3.5, true, {\"a\": 1}]'. "
    "Replaces ARGUMENTS.",
)
@driver_option
@click.option(
    "-r",
    "--routing-key",
    help="Routing key (default: SERVER.METHOD with ':' and '/' turned into '.').",
)
@expiry_options
@format_option
@pass_state
def queuexmlrpc(
    state: State,
    queue: str,
    server: str,
    method: str,
    arguments: tuple[str, ...],
    json_arguments: list[Any] | None,
    driver: str | None,
    routing_key: str | None,
    ttl: float | None,
    delay: float,
    output_format: str,
) -> None:
    """Queue a call of METHOD with ARGUMENTS on the XML-RPC SERVER, on QUEUE.

    A worker of QUEUE (kq consume QUEUE, with consumer = "xmlrpc") makes the call if [allow.xmlrpc]
    allows SERVER and METHOD. ARGUMENTS are sent as strings; use -j for other types:

    \b
      kq queuexmlrpc rpc http://127.0.0.1:8000/RPC2 reports.build -j '[2026, "weekly"]'
      kq queuexmlrpc rpc http://127.0.0.1:8000/RPC2 echo hello world
    """
    from kq.contrib.xmlrpc import XmlRpcProducer

    values: list[Any] = list(arguments)
    if json_arguments is not None:
        if arguments:
            raise click.UsageError("give ARGUMENTS or -j/--json-arguments, not both")
        values = json_arguments
    producer = state.app.producer_of(XmlRpcProducer, queue, driver)
    message = producer.publish(server, method, values, routing_key=routing_key, ttl=ttl, delay=delay)
    what = f"XML-RPC call {method} on {server} queued"
    report_queued(output_format, what, queue, message, ttl=ttl, delay=delay, body=json.loads(message.body))
