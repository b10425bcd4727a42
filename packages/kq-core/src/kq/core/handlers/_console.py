"""The console-command execution type: the message, its validation, the handler and the producer.

Body (the PHP library's shape, so either side can talk to the other)::

    {"command": "app:cmd", "arguments": ["a1"], "options": {"f": "file.txt", "--long": "v", "flag": null}}

Validation happens once, here, for producers and handlers alike. An option name is letters, digits,
``_``, ``-`` and ``.`` after an optional one or two dashes (anchored; ``-x;rm`` is rejected). An
option without dashes becomes ``-x`` when it is one character long and ``--name`` otherwise. Values
are rendered attached to their option (``-xvalue``, ``--name=value``) so that a value starting with a
dash is never read as another option; ``null``/``true`` make a bare flag, ``false`` omits the option, and
a list repeats it. Options come before the arguments, and a ``--`` separates them when an argument
starts with a dash, so arguments always reach the command verbatim. No shell is involved at any point.

:class:`ConsoleCommandHandler` runs the allowed command as a child process (:func:`run_command`); a
non-zero exit code is a failed execution. The default routing key is the command name with ``:``
replaced by ``.`` (``app:cmd`` -> ``app.cmd``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kq.core._allow import AllowList
from kq.core._config import ConsoleSettings
from kq.core._errors import ExecutionFailedError, MessageFormatError, NotAllowedError
from kq.core._message import Delivery, Message
from kq.core._routing import command_routing_key
from kq.core.handlers._base import Handler, HandlerContext
from kq.core.handlers._codecs import check_list, json_kind, parse_object
from kq.core.handlers._process import CommandResult, run_command
from kq.core.handlers._producer import MessageProducer

logger = logging.getLogger(__name__.replace("._", "."))

_H = TypeVar("_H", bound="ConsoleCommandHandler")

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
    body = parse_object(body, "console-command", ("command", "arguments", "options"))
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
    checked_args = tuple(_scalar(a, f"argument {i + 1}") for i, a in enumerate(check_list(arguments)))
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise MessageFormatError(f"'options' must be an object, not {json_kind(options)}")
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
        raise MessageFormatError(f"{what} must be a string or a number, not {json_kind(value)}")
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


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


class ConsoleCommandHandler(Handler):
    """Runs console-command messages (``{"command", "arguments", "options"}``) as child processes.

    Args:
        settings: ``[console]``: program prefix, timeout, environment, working directory. Commands
            inherit the worker's environment (unless ``inherit_env`` is false) without the variables
            in ``settings.withheld_env`` and those holding a key of ``settings.withheld_keys``.
        allowed: Commands that may run; anything else is rejected without running.
        label: The worker's ``--label``, passed to children as ``KQ_LABEL``.
    """

    kind = "console_command"
    allow_section = "commands"
    requires_signature = True

    def __init__(self, settings: ConsoleSettings, allowed: AllowList, *, label: str | None = None) -> None:
        self.settings = settings
        self.allowed = allowed
        self.label = label or ""
        self.prefix = self._command_prefix()
        self._env = {**self._inherited_environment(), **settings.env}

    def _command_prefix(self) -> tuple[str, ...]:
        """What a command's argv is appended to (raises ConfigError if the default needs kq-cli)."""
        return self.settings.argv_prefix()

    def _inherited_environment(self) -> dict[str, str]:
        """What commands inherit of the worker's environment: nothing with ``inherit_env = false``, else
        all of it but the variables ``[signing]`` reads and any variable holding a signing key."""
        settings = self.settings
        if not settings.inherit_env:
            logger.debug("console commands inherit no environment ([console] inherit_env = false)")
            return {}
        secrets = settings.withheld_secrets()
        inherited: dict[str, str] = {}
        withheld: list[str] = []
        for name, value in os.environ.items():
            if name in settings.withheld_env or (secrets and value.strip() in secrets):
                withheld.append(name)
            else:
                inherited[name] = value
        if withheld:
            # Names only: the values are secrets.
            logger.debug("console commands do not inherit %s (signing secrets)", ", ".join(sorted(withheld)))
        return inherited

    @classmethod
    def from_context(cls: type[_H], context: HandlerContext) -> _H:
        """Use ``[console]`` and ``[allow] commands`` (for the in-process subclass too)."""
        return cls(context.config.console, context.config.allow.allow_list("commands"), label=context.label)

    def describe(self, body: Any) -> str:
        """``command 'name'``."""
        command = body.get("command") if isinstance(body, dict) else None
        return f"command {command!r}" if isinstance(command, str) else "command"

    def consume(self, body: Any, delivery: Delivery) -> CommandResult:
        """Validate, check the allow-list, run; raise ExecutionFailedError on a non-zero exit or timeout."""
        call = parse_command(body)
        if not self.allowed.allows(call.command):
            raise NotAllowedError(
                f"command {call.command!r} is not in the allow-list ([allow] commands = "
                f"{list(self.allowed.entries)!r})"
            )
        result = self._execute(call, delivery)
        if not result.ok:
            tail = result.stderr.strip().splitlines()[-1:] or result.stdout.strip().splitlines()[-1:]
            detail = f": {tail[0][:300]}" if tail else ""
            raise ExecutionFailedError(
                f"command {call.command!r} exited with status {result.exit_code}{detail}", result
            )
        return result

    def _message_variables(self, delivery: Delivery) -> dict[str, str]:
        """What a command learns about its message, in its environment."""
        return {
            "KQ_QUEUE": delivery.queue,
            "KQ_MESSAGE_ID": environment_value(delivery.message_id),
            "KQ_DELIVERY_COUNT": str(delivery.delivery_count),
            # The worker's own environment may carry a KQ_LABEL of its parent: commands see this worker's.
            "KQ_LABEL": self.label,
        }

    def _execute(self, call: CommandCall, delivery: Delivery) -> CommandResult:
        """Run the allowed ``call`` as a child process (a timeout raises ExecutionFailedError)."""
        argv = (*self.prefix, *call.argv())
        env = {**self._env, **self._message_variables(delivery)}
        logger.debug("queue %s message %s: running %s", delivery.queue, delivery.message_id, list(argv))
        try:
            result = run_command(argv, timeout=self.settings.timeout, env=env, cwd=self.settings.cwd)
        except ExecutionFailedError as exc:
            raise type(exc)(f"command {call.command!r}: {exc}", exc.result) from None
        log_result(call, delivery, result)
        return result


def log_result(call: CommandCall, delivery: Delivery, result: CommandResult) -> None:
    """The DEBUG line saying how a command ended, with the tails of its output."""
    logger.debug(
        "queue %s message %s: %s exited with status %d in %.3fs; stdout: %r; stderr: %r",
        delivery.queue,
        delivery.message_id,
        call.command,
        result.exit_code,
        result.duration,
        result.stdout[-2000:],
        result.stderr[-2000:],
    )


def environment_value(text: str) -> str:
    """``text`` made safe for an environment variable: a message id comes from the producer, and a NUL
    or a lone surrogate in it would make the operating system refuse the whole environment."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


class ConsoleCommandProducer(MessageProducer):
    """Queues console commands for a console-command handler (``kq queuecommand``).

    The default routing key is the command name with ``:`` replaced by ``.`` (``app:cmd`` -> ``app.cmd``).
    """

    def build(
        self,
        command: str | CommandCall,
        arguments: Iterable[Any] = (),
        options: Mapping[str, Any] | None = None,
        *,
        routing_key: str | None = None,
        ttl: float | None = None,
        delay: float = 0.0,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Build (without sending) the message asking for ``command arguments... --options``.

        Raises:
            MessageFormatError: the command, an argument or an option would be rejected by handlers.
        """
        call = command if isinstance(command, CommandCall) else make_command(command, arguments, options)
        key = command_routing_key(call.command) if routing_key is None else routing_key
        return self.json_message(call.to_body(), key, ttl=ttl, delay=delay, headers=headers)
