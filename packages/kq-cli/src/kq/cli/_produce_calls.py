"""``kq queueservice`` and ``kq queuehttp``: queue Python service calls and HTTP requests."""

from __future__ import annotations

import json
from typing import Any

import click

from kq.cli._common import parse_pairs
from kq.cli.plugin import (
    FiniteFloat,
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
@click.argument("service")
@click.argument("method")
@click.argument("arguments", nargs=-1)
@json_option(
    "-j",
    "--json-arguments",
    kind=list,
    help="Positional arguments as a JSON array, instead of ARGUMENTS (which are strings).",
)
@click.option(
    "-k",
    "--kwarg",
    "kwargs",
    multiple=True,
    metavar="NAME=VALUE",
    help="A keyword argument (a string), repeatable.",
)
@json_option("--json-kwargs", kind=dict, help="Keyword arguments as a JSON object (merged over -k).")
@driver_option
@click.option("-r", "--routing-key", help="Routing key (default: SERVICE with ':' as '.', then '.METHOD').")
@expiry_options
@format_option
@pass_state
def queueservice(
    state: State,
    queue: str,
    service: str,
    method: str,
    arguments: tuple[str, ...],
    json_arguments: list[Any] | None,
    kwargs: tuple[str, ...],
    json_kwargs: dict[str, Any] | None,
    driver: str | None,
    routing_key: str | None,
    ttl: float | None,
    delay: float,
    output_format: str,
) -> None:
    """Queue a call of METHOD of SERVICE (a module, or module:attribute) with ARGUMENTS on QUEUE.

    A worker whose queue has consumer = "service" calls it if [allow.services] allows it:
    kq queueservice jobs myapp.reports build 2026 -k fmt=pdf
    """
    positional: list[Any] = list(arguments)
    if json_arguments is not None:
        if arguments:
            raise click.UsageError("give ARGUMENTS or --json-arguments, not both")
        positional = json_arguments
    keywords: dict[str, Any] = {
        k: v or "" for k, v in parse_pairs(kwargs, "-k/--kwarg", allow_flags=False).items()
    }
    keywords.update(json_kwargs or {})
    message = state.app.service_producer(queue, driver).publish(
        service, method, positional, keywords, routing_key=routing_key, ttl=ttl, delay=delay
    )
    what = f"Call of {service}.{method} queued"
    report_queued(output_format, what, queue, message, ttl=ttl, delay=delay, body=json.loads(message.body))


@click.command()
@click.argument("queue")
@click.argument("url")
@click.option("-X", "--method", default="GET", show_default=True, help="HTTP method.")
@click.option(
    "-H", "--header", "headers", multiple=True, metavar="NAME=VALUE", help="A request header, repeatable."
)
@click.option(
    "-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="A query parameter, repeatable."
)
@click.option("-d", "--data", help="Request body as text.")
@click.option("--json", "json_body", metavar="JSON", help="Request body as JSON (sent as application/json).")
@click.option(
    "--timeout",
    type=FiniteFloat(exclusive_minimum=True, duration=True),
    help="Seconds the worker waits for the response (default 30).",
)
@click.option("--no-redirects", is_flag=True, help="Do not follow redirects.")
@click.option("--insecure", is_flag=True, help="Do not verify the server's TLS certificate.")
@driver_option
@click.option("-r", "--routing-key", help="Routing key (default: URL with ':' and '/' as '.').")
@expiry_options
@format_option
@pass_state
def queuehttp(
    state: State,
    queue: str,
    url: str,
    method: str,
    headers: tuple[str, ...],
    params: tuple[str, ...],
    data: str | None,
    json_body: str | None,
    timeout: float | None,
    no_redirects: bool,
    insecure: bool,
    driver: str | None,
    routing_key: str | None,
    ttl: float | None,
    delay: float,
    output_format: str,
) -> None:
    """Queue an HTTP request to URL on QUEUE.

    A worker whose queue has consumer = "http" sends it if [allow] urls allows the host; a status
    outside 2xx is a failure:
    kq queuehttp hooks https://app.internal/jobs/report -X POST --json '{"week": 47}'
    """
    options: dict[str, Any] = {"method": method.upper()}
    if headers:
        options["headers"] = {
            k: v or "" for k, v in parse_pairs(headers, "-H/--header", allow_flags=False).items()
        }
    if params:
        options["params"] = {
            k: v or "" for k, v in parse_pairs(params, "-p/--param", allow_flags=False).items()
        }
    if data is not None and json_body is not None:
        raise click.UsageError("give --data or --json, not both")
    if data is not None:
        options["data"] = data
    if json_body is not None:
        # Parsed here, not by json_option: "--json null" sends a JSON null body.
        try:
            options["json"] = json.loads(json_body)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--json") from None
    if timeout is not None:
        options["timeout"] = timeout
    if no_redirects:
        options["allow_redirects"] = False
    if insecure:
        options["verify"] = False
    message = state.app.http_producer(queue, driver).publish(
        url, options, routing_key=routing_key, ttl=ttl, delay=delay
    )
    what = f"HTTP {options['method']} {url} queued"
    report_queued(output_format, what, queue, message, ttl=ttl, delay=delay, body=json.loads(message.body))
