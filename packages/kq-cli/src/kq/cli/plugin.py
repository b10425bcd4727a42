"""The API for ``kq`` subcommands that other distributions add (see docs/cli-plugins.md).

A distribution adds a command by registering a click command in the ``kq.commands`` entry-point
group::

    [project.entry-points."kq.commands"]
    queuefax = "kq.contrib.fax._cli:queuefax"

and builds it from these names, so that it takes the options, output and exit codes of kq's own
commands:

- :class:`State` and :func:`pass_state`: the invocation's state (``--config``) and its
  :class:`kq.core.App`, built on first use of ``state.app``;
- option decorators: :func:`driver_option` (``-i/--driver``), :func:`expiry_options` (``-t/--ttl``,
  ``--delay``), :func:`format_option` (``--format text|json``) and :func:`json_option` (a JSON value
  of a given kind); :class:`FiniteFloat`, the type of kq's seconds options;
- output: :func:`report_queued` (what the ``queue*`` commands print) and :func:`emit` (text or JSON);
- exit codes: ``EXIT_*``; kq's errors (:class:`kq.core.KqError`) raised by a command are reported in
  one line with the matching code, as for kq's own commands.

Nothing here imports kq-core: ``kq --help`` imports every command module to show its summary, and stays
fast as long as commands import kq-core inside their function body, as kq's own do.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from kq.cli._common import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    FiniteFloat,
    State,
    driver_option,
    emit,
    expiry_options,
    format_option,
    pass_state,
    report_queued,
)

__all__ = [
    # state
    "State",
    "pass_state",
    # options
    "FiniteFloat",
    "driver_option",
    "expiry_options",
    "format_option",
    "json_option",
    # output
    "emit",
    "report_queued",
    # exit codes
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
]

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    _ParamType = click.ParamType[Any, Any]
else:  # click < 8.2 has no generic ParamType
    _ParamType = click.ParamType

#: JSON's names of Python's decoded types, for error messages.
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


class JsonValue(_ParamType):
    """A command-line value written as JSON, optionally of one kind (``list`` or ``dict``).

    Args:
        kind: ``list`` for a JSON array, ``dict`` for a JSON object, ``None`` for any JSON value.
    """

    name = "json"

    def __init__(self, kind: type[list[Any]] | type[dict[str, Any]] | None = None) -> None:
        self.kind = kind

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """``value`` decoded; a usage error naming the option when it is not JSON of the right kind."""
        if not isinstance(value, str):
            return value  # a default given as a Python value
        hint = "/".join(param.opts) if param is not None and param.opts else None
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", ctx=ctx, param_hint=hint) from None
        if self.kind is not None and not isinstance(parsed, self.kind):
            found = "null" if parsed is None else _JSON_TYPES.get(type(parsed), type(parsed).__name__)
            raise click.BadParameter(
                f"must be a JSON {_JSON_TYPES[self.kind]}, not {found}", ctx=ctx, param_hint=hint
            )
        return parsed

    def __repr__(self) -> str:
        return f"JsonValue({self.kind!r})"


def json_option(
    *param_decls: str, kind: type[list[Any]] | type[dict[str, Any]] | None = None, help: str
) -> Callable[[F], F]:
    """An option whose value is JSON, passed to the command decoded (``None`` when not given).

    Args:
        param_decls: The option's names, as for :func:`click.option` (``"-j", "--json-arguments"``).
        kind: ``list`` (a JSON array), ``dict`` (a JSON object) or ``None`` (any JSON value); anything
            else is a usage error (exit status 2) naming the option.
        help: The option's help text.

    Example::

        @click.command()
        @json_option("-j", "--json-arguments", kind=list, help="The arguments as a JSON array.")
        def call(json_arguments: list[Any] | None) -> None: ...
    """
    return click.option(*param_decls, type=JsonValue(kind), metavar="JSON", help=help)
