"""The global options, accepted before the command name and after it, and the logging they set up.

``--config``, ``--log-level``, ``--log-format``, ``--log-file``, ``-v`` and ``-q`` are options of the
``kq`` group (``kq -v consume jobs``), where ``KQ_LOG_LEVEL``, ``KQ_LOG_FORMAT`` and ``KQ_LOG_FILE``
supply their defaults (``KQ_CONFIG`` is read by the configuration loader). Every subcommand accepts
them as well (``kq consume jobs -v``), with the same meaning: a value given after the command name
wins over one given before it, and ``-v``/``-q`` add up wherever they are. The copies are hidden from
the subcommands' help, which says so in one line.

Logging is set up when a command's function is about to run, once every option is known. The default
level is INFO, except for the commands that only read and report (:func:`reads_only`): they log at
WARNING unless asked otherwise, so that their output stays clean for scripts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from kq.cli._common import State, configure_logging
from kq.cli._complete import CONFIG_META, attach
from kq.cli._startup import ENDS_STARTUP_ITSELF, startup_done

#: The environment variables of the global options (``KQ_CONFIG`` is the configuration loader's).
ENVIRONMENT = {"log_level": "KQ_LOG_LEVEL", "log_format": "KQ_LOG_FORMAT", "log_file": "KQ_LOG_FILE"}

#: Commands that only read and report: they log at WARNING unless a level is given.
_READ_ONLY = frozenset(
    {
        ("status",),
        ("managedriver", "list"),
        ("failed", "show"),
        ("watchdog", "check"),
        # `kq workerswatchdog check` runs `check` in a context of its own under workerswatchdog's
        ("workerswatchdog", "check"),
    }
)
#: Commands whose ACTION argument decides whether they only read.
_READ_ONLY_ACTIONS: dict[tuple[str, ...], frozenset[str]] = {
    ("managequeue",): frozenset({"info", "list-configured", "list-available"}),
    ("workerswatchdog",): frozenset({"check"}),
}

_EPILOG = (
    "Global options (--config, --log-level, --log-format, --log-file, -v, -q) may also follow the "
    "command name; see kq --help."
)

_MARK = "_kq_global_options"

_LEVEL_HELP = (
    "Lowest level of log lines: DEBUG, INFO, WARNING, ERROR. Default: INFO, and WARNING for the "
    "commands that only report (status, managequeue info and list-*, failed show, managedriver list, "
    "watchdog check)."
)
_FORMAT_HELP = "Log lines as text, or as one JSON object per line (time, level, logger, message, ...)."
_FILE_HELP = "Append log lines to this file instead of stderr (reopened when logrotate moves it)."
_VERBOSE_HELP = "One level more verbose than --log-level (repeatable)."
_QUIET_HELP = "One level quieter than --log-level (repeatable)."
_CONFIG_HELP = (
    "Configuration file (default: $KQ_CONFIG, else ./kq.toml, then [tool.kq] in ./pyproject.toml, "
    "then built-in defaults: the sqlite driver in ./.kq/)."
)


def group_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The global options of the ``kq`` group, with their environment variables."""
    decorators = [
        click.option("--config", "config_path", metavar="PATH", help=_CONFIG_HELP),
        click.option(
            "--log-level",
            metavar="LEVEL",
            envvar=ENVIRONMENT["log_level"],
            show_envvar=True,
            help=_LEVEL_HELP,
        ),
        click.option(
            "--log-format",
            type=click.Choice(["text", "json"]),
            envvar=ENVIRONMENT["log_format"],
            show_envvar=True,
            help=_FORMAT_HELP,
        ),
        click.option(
            "--log-file",
            metavar="PATH",
            type=click.Path(dir_okay=False),
            envvar=ENVIRONMENT["log_file"],
            show_envvar=True,
            help=_FILE_HELP,
        ),
        click.option("-v", "--verbose", count=True, help=_VERBOSE_HELP),
        click.option("-q", "--quiet", count=True, help=_QUIET_HELP),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def add_to(command: click.Command) -> None:
    """Let ``command`` (and, for a group, each of its subcommands) take the global options too.

    Also makes the command set up logging and end the start-up (:mod:`kq.cli._startup`) just before
    its function runs, and complete queue and driver names (:mod:`kq.cli._complete`). Doing it twice
    is harmless.
    """
    if getattr(command, _MARK, False):
        return
    setattr(command, _MARK, True)
    attach(command)
    command.params.extend(_subcommand_options())
    command.epilog = f"{command.epilog}\n\n{_EPILOG}" if command.epilog else _EPILOG
    if command.callback is not None:
        command.callback = _logging_first(command.callback)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_to(sub)


def start_logging(ctx: click.Context) -> None:
    """Set up logging for the command of ``ctx`` from every global option seen so far (again only
    when the settings changed since the last time)."""
    state = ctx.find_object(State)
    if state is None:
        return
    settings = state.log_settings()
    level = settings.level or ("WARNING" if reads_only(ctx) else "INFO")
    wanted = (level, settings.verbose, settings.quiet, settings.log_format or "text", settings.log_file)
    if wanted == state.logging_applied:
        return
    configure_logging(level, settings.verbose, settings.quiet, log_format=wanted[3], log_file=wanted[4])
    state.logging_applied = wanted


def reads_only(ctx: click.Context) -> bool:
    """Whether the command of ``ctx`` only reads and reports (``kq status``, ``managequeue info``, ...)."""
    path = command_path(ctx)
    if path in _READ_ONLY:
        return True
    actions = _READ_ONLY_ACTIONS.get(path)
    return actions is not None and ctx.params.get("action") in actions


def command_path(ctx: click.Context) -> tuple[str, ...]:
    """The command names below ``kq`` of ``ctx`` (``("failed", "show")``)."""
    names: list[str] = []
    current: click.Context | None = ctx
    while current is not None and current.parent is not None:
        names.append(current.info_name or "")
        current = current.parent
    return tuple(reversed(names))


def _logging_first(callback: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        start_logging(ctx)
        if not getattr(ctx.command, ENDS_STARTUP_ITSELF, False):
            startup_done()
        return callback(*args, **kwargs)

    return run


def _subcommand_options() -> list[click.Parameter]:
    """Hidden copies of the global options: no defaults, no environment variables (those are the
    group's), and only values given on the command line count."""
    hidden: dict[str, Any] = {"hidden": True, "expose_value": False, "callback": _remember}
    return [
        click.Option(["--config", "kq_config"], metavar="PATH", help=_CONFIG_HELP, **hidden),
        click.Option(["--log-level", "kq_log_level"], metavar="LEVEL", help=_LEVEL_HELP, **hidden),
        click.Option(
            ["--log-format", "kq_log_format"],
            type=click.Choice(["text", "json"]),
            help=_FORMAT_HELP,
            **hidden,
        ),
        click.Option(
            ["--log-file", "kq_log_file"], type=click.Path(dir_okay=False), help=_FILE_HELP, **hidden
        ),
        click.Option(["-v", "--verbose", "kq_verbose"], count=True, help=_VERBOSE_HELP, **hidden),
        click.Option(["-q", "--quiet", "kq_quiet"], count=True, help=_QUIET_HELP, **hidden),
    ]


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Record a global option given after a command name in the invocation's :class:`State`."""
    if param.name is None or ctx.get_parameter_source(param.name) is not ParameterSource.COMMANDLINE:
        return value
    if param.name == "kq_config":
        ctx.meta[CONFIG_META] = value  # also while completing: the queues of that file are offered
    if ctx.resilient_parsing:
        return value
    state = ctx.find_object(State)
    if state is None:
        return value
    name = param.name.removeprefix("kq_")
    if name == "config":
        state.config_path = value
    else:
        state.after.update(name, value)
    return value
