"""The console-command message: its JSON shape, its validation, and how it becomes an argument vector.

Body (the PHP library's shape, so either side can talk to the other)::

    {"command": "app:cmd", "arguments": ["a1"], "options": {"f": "file.txt", "--long": "v", "flag": null}}

Validation happens once, here, for producers and consumers alike. An option name is letters, digits,
``_``, ``-`` and ``.`` after an optional one or two dashes (anchored; ``-x;rm`` is rejected). An
option without dashes becomes ``-x`` when it is one character long and ``--name`` otherwise. Values
are rendered attached to their option (``-xvalue``, ``--name=value``) so that a value starting with a
dash is never read as another option; ``null``/``true`` make a bare flag, ``false`` omits the option, and
a list repeats it. Options come before the arguments, and a ``--`` separates them when an argument
starts with a dash, so arguments always reach the command verbatim. No shell is involved at any point.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kq.core._errors import MessageFormatError

_COMMAND_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,199}\Z")
_OPTION_NAME = re.compile(r"(?:--?)?[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
#: Longest argument or option value accepted, in characters.
MAX_VALUE_LENGTH = 64 * 1024
#: Most arguments plus option values in one command.
MAX_ITEMS = 1000

OptionValue = str | bool | None | list[str]


@dataclass(frozen=True)
class CommandCall:
    """A validated console-command message."""

    command: str
    arguments: tuple[str, ...] = ()
    options: Mapping[str, OptionValue] = field(default_factory=dict)

    def to_body(self) -> dict[str, Any]:
        """The JSON-ready message body."""
        return {"command": self.command, "arguments": list(self.arguments), "options": dict(self.options)}

    def argv(self) -> list[str]:
        """The command name, its options and its arguments, as an argument vector."""
        argv = [self.command]
        for name, value in self.options.items():
            argv.extend(_render_option(name, value))
        if any(a.startswith("-") for a in self.arguments):
            argv.append("--")
        argv.extend(self.arguments)
        return argv


def parse_command(body: Any) -> CommandCall:
    """Validate a decoded console-command body.

    Raises:
        MessageFormatError: the body does not have the documented shape; the message says which part.
    """
    if not isinstance(body, dict):
        raise MessageFormatError(f"a console-command message must be a JSON object, not {_kind(body)}")
    unknown = set(body) - {"command", "arguments", "options"}
    if unknown:
        raise MessageFormatError(f"unknown keys in console-command message: {', '.join(sorted(unknown))}")
    command = body.get("command")
    if not isinstance(command, str) or not command:
        raise MessageFormatError("'command' must be a non-empty string")
    arguments = body.get("arguments")
    options = body.get("options")
    # The PHP library's json_encode turns an empty options array into [], so [] means "no options".
    return make_command(
        command, [] if arguments is None else arguments, {} if options in (None, []) else options
    )


def make_command(
    command: str, arguments: Iterable[Any] = (), options: Mapping[str, Any] | None = None
) -> CommandCall:
    """Build a validated :class:`CommandCall` from Python values."""
    if not isinstance(command, str) or not _COMMAND_NAME.match(command):
        raise MessageFormatError(
            f"command name {_short(command)!r} is not valid: use letters, digits, '_', '.', ':' and '-'"
        )
    if isinstance(arguments, (str, bytes, Mapping)) or not isinstance(arguments, Iterable):
        raise MessageFormatError(f"'arguments' must be a list, not {_kind(arguments)}")
    checked_args = tuple(_scalar(a, f"argument {i + 1}") for i, a in enumerate(arguments))
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise MessageFormatError(f"'options' must be an object, not {_kind(options)}")
    checked_options: dict[str, OptionValue] = {}
    for name, value in options.items():
        if not isinstance(name, str) or not _OPTION_NAME.match(name):
            raise MessageFormatError(
                f"option name {_short(name)!r} is not valid: use letters, digits, '_', '.' and '-' "
                "after at most two dashes"
            )
        checked_options[name] = _option_value(name, value)
    count = len(checked_args) + sum(len(v) if isinstance(v, list) else 1 for v in checked_options.values())
    if count > MAX_ITEMS:
        raise MessageFormatError(f"too many arguments and options ({count}, at most {MAX_ITEMS})")
    return CommandCall(command=command, arguments=checked_args, options=checked_options)


def _option_value(name: str, value: Any) -> OptionValue:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, list):
        return [_scalar(v, f"option {name!r}") for v in value]
    return _scalar(value, f"option {name!r}")


def _scalar(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise MessageFormatError(f"{what} must be a string or a number, not {_kind(value)}")
    text = value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
    if "\x00" in text:
        raise MessageFormatError(f"{what} contains a NUL character")
    if len(text) > MAX_VALUE_LENGTH:
        raise MessageFormatError(f"{what} is longer than {MAX_VALUE_LENGTH} characters")
    return text


def _render_option(name: str, value: OptionValue) -> list[str]:
    flag = name if name.startswith("-") else f"-{name}" if len(name) == 1 else f"--{name}"
    if value is False:
        return []
    if value is None or value is True:
        return [flag]
    values = value if isinstance(value, list) else [value]
    if flag.startswith("--"):
        return [f"{flag}={v}" for v in values]
    # A short option's value is attached (-fvalue) so that it cannot be read as another option; an empty
    # value cannot be attached, so it is passed as the next item, which the parser takes as the value.
    rendered: list[str] = []
    for v in values:
        rendered.extend([flag, v] if v == "" else [f"{flag}{v}"])
    return rendered


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
