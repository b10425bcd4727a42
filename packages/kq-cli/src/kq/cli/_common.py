"""What every kq command shares: exit codes, the lazily built App, output formats, error reporting.

kq-core is imported only inside commands, so ``kq --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from kq.core import App

#: Success.
EXIT_OK = 0
#: The command ran and failed: broker error, unknown queue or driver, rejected input.
EXIT_FAILURE = 1
#: The command line is wrong (click's own usage errors use it too).
EXIT_USAGE = 2
#: A driver's client library or module is missing, or the broker is unreachable (sysexits EX_UNAVAILABLE).
EXIT_UNAVAILABLE = 69
#: The configuration file is invalid (sysexits EX_CONFIG).
EXIT_CONFIG = 78
#: Interrupted by a second SIGINT/SIGTERM while work was in progress (128 + SIGINT).
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


@dataclass
class LogSettings:
    """The logging options of one place on the command line (before or after the command name).

    Attributes:
        level: ``--log-level`` (``None``: not given; the command's default applies).
        verbose: How many ``-v``.
        quiet: How many ``-q``.
        log_format: ``--log-format`` (``text`` or ``json``; ``None``: not given).
        log_file: ``--log-file`` (``None``: stderr).
    """

    level: str | None = None
    verbose: int = 0
    quiet: int = 0
    log_format: str | None = None
    log_file: str | None = None

    def update(self, option: str, value: Any) -> None:
        """Record option ``option`` (``log_level``, ``verbose``, ...): counts add up, values replace."""
        if option in ("verbose", "quiet"):
            setattr(self, option, getattr(self, option) + int(value))
        else:
            setattr(self, "level" if option == "log_level" else option, value)

    def then(self, later: LogSettings) -> LogSettings:
        """These settings with those given ``later`` on the command line winning (counts add up)."""
        return LogSettings(
            later.level or self.level,
            self.verbose + later.verbose,
            self.quiet + later.quiet,
            later.log_format or self.log_format,
            later.log_file or self.log_file,
        )


class State:
    """Per-invocation state carried in click's context: global options and the App, built on demand.

    Args:
        config_path: ``--config``; a value given after the command name replaces it.
        log: The logging options given before the command name (and their environment variables).

    Attributes:
        after: The logging options given after the command name.
        logging_applied: The logging set-up in force (see :func:`kq.cli._global_options.start_logging`).
    """

    def __init__(self, config_path: str | None, log: LogSettings | None = None) -> None:
        self.config_path = config_path
        self.before = log or LogSettings()
        self.after = LogSettings()
        self.logging_applied: tuple[Any, ...] | None = None
        self._app: App | None = None

    def log_settings(self) -> LogSettings:
        """The logging options in force: those after the command name win over those before."""
        return self.before.then(self.after)

    @property
    def app(self) -> App:
        """The App for ``--config`` (or the usual lookup), loaded on first use."""
        if self._app is None:
            from kq.core import App

            self._app = App.from_config(self.config_path)
        return self._app

    def close(self) -> None:
        """Close the App's drivers."""
        if self._app is not None:
            self._app.close()


pass_state = click.make_pass_decorator(State)


if TYPE_CHECKING:
    _FloatParamType = click.ParamType[float, Any]
else:  # click < 8.2 has no generic ParamType
    _FloatParamType = click.ParamType


class FiniteFloat(_FloatParamType):
    """A float option that must be a finite number in range (click's FLOAT reads "nan", "inf" and
    "1e309", and ``nan`` passes every range check). Checked by kq-core's one number check, imported
    only when a value is given, so ``kq --help`` stays fast.

    Args:
        minimum: The smallest value accepted.
        maximum: The largest value accepted (``None``: kq-core's ``MAX_SECONDS``, ten years).
        exclusive_minimum: ``minimum`` itself is refused (``0`` for "greater than zero").
        duration: The value is seconds, and may be written with units (``500ms``, ``30s``, ``5m``,
            ``2h``, ``1d``, ``1h30m``).
    """

    name = "float"

    def __init__(
        self,
        minimum: float = 0.0,
        maximum: float | None = None,
        *,
        exclusive_minimum: bool = False,
        duration: bool = False,
    ) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.exclusive_minimum = exclusive_minimum
        self.duration = duration
        if duration:
            self.name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        """``value`` (text, or a default) as a checked float; a usage error naming the option otherwise."""
        from kq.core.driver import MAX_SECONDS, check_number

        try:
            return check_number(
                value,
                minimum=self.minimum,
                maximum=MAX_SECONDS if self.maximum is None else self.maximum,
                exclusive_minimum=self.exclusive_minimum,
                text=True,
                duration=self.duration,
            )
        except ValueError as exc:
            self.fail(str(exc), param, ctx)

    def __repr__(self) -> str:
        return f"FiniteFloat({self.minimum!r}, {self.maximum!r}, duration={self.duration!r})"


#: The client library of kq-core's HTTP handler (requests' urllib3); drivers declare their own
#: (``Driver.client_loggers``), quieted once the driver is loaded (:class:`ClientLoggers`).
CORE_CLIENT_LOGGERS = ("urllib3",)


class ClientLoggers(logging.Filter):
    """Holds the client libraries' loggers at ``level``: kq-core's, and those the loaded drivers declare.

    A driver's ``client_loggers`` are read when its class has been imported (``kq --help`` imports
    none): on the first record after that, this filter sets their level, and drops that record if it
    is below it; later records of theirs stop at their logger.
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level
        self.quieted: set[str] = set()
        self._drivers_seen = -1
        self.quiet(CORE_CLIENT_LOGGERS)

    def quiet(self, names: Iterable[str]) -> None:
        """Set the level of the loggers ``names`` (once each)."""
        for name in names:
            if name not in self.quieted:
                logging.getLogger(name).setLevel(self.level)
                self.quieted.add(name)

    def quiet_loaded_drivers(self) -> None:
        """Quiet the client loggers of every driver class imported so far."""
        if "kq.core" not in sys.modules:  # no driver can be loaded without kq-core
            return
        from kq.core.driver import Driver

        classes: list[type] = []
        pending: list[type] = [Driver]
        while pending:
            subclasses: list[type] = pending.pop().__subclasses__()
            for subclass in subclasses:
                classes.append(subclass)
                pending.append(subclass)
        if len(classes) != self._drivers_seen:
            self._drivers_seen = len(classes)
            for driver_class in classes:
                self.quiet(getattr(driver_class, "client_loggers", ()))

    def filter(self, record: logging.LogRecord) -> bool:
        """Let ``record`` through unless its logger was just quieted below its level.

        kq's own records pass at once: kq's loggers are never quieted, and looking for newly loaded
        drivers on each of them doubled the cost of a log line.
        """
        name = record.name
        if name == "kq" or name.startswith("kq."):
            return True
        self.quiet_loaded_drivers()
        return record.levelno >= logging.getLogger(record.name).getEffectiveLevel()


#: The handler :func:`configure_logging` installed last: replaced, not added to, when called again (once
#: for the options before the command name, once more when some follow it).
_installed: list[logging.Handler] = []


def configure_logging(
    level: str, verbose: int, quiet: int, *, log_format: str = "text", log_file: str | None = None
) -> ClientLoggers:
    """Send library logs to stderr, or to ``log_file``, at the chosen level (``-v`` lowers it, ``-q``
    raises it), as text lines or one JSON object per line (``log_format="json"``).

    As :func:`logging.basicConfig` does, nothing is installed when the application (or a test runner)
    already configured the root logger; kq's own earlier handler is replaced.

    ``log_file`` is opened for appending with a :class:`~logging.handlers.WatchedFileHandler`: when
    logrotate moves or deletes it, the next line opens a new file of that name (no signal needed).

    Returns:
        The filter that quiets the client libraries (on the handler this installs).
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise click.BadParameter(f"unknown log level {level!r}", param_hint="--log-level")
    wanted = numeric - 10 * verbose + 10 * quiet
    numeric = max(logging.DEBUG, min(logging.CRITICAL, wanted))
    # The broker clients log their own view of what kq reports in its words (pika logs a refused
    # connection as three ERROR lines and a traceback): they are heard from at DEBUG only, and all
    # of them one level further (-vv).
    if wanted < logging.DEBUG:
        libraries = logging.DEBUG
    elif wanted == logging.DEBUG:
        libraries = logging.WARNING
    else:
        libraries = logging.CRITICAL + 1
    client_loggers = ClientLoggers(libraries)
    client_loggers.quiet_loaded_drivers()
    root = logging.getLogger()
    while _installed:
        previous = _installed.pop()
        root.removeHandler(previous)
        previous.close()
    if root.handlers:  # only the handler kq installs, not over an application's
        return client_loggers
    handler = _handler(log_file)
    if log_format == "json":
        from kq.cli._log_json import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(client_loggers)
    root.addHandler(handler)
    root.setLevel(numeric)
    _installed.append(handler)
    return client_loggers


def _handler(log_file: str | None) -> logging.Handler:
    if log_file is None:
        return logging.StreamHandler(sys.stderr)
    from logging.handlers import WatchedFileHandler

    try:
        return WatchedFileHandler(log_file, mode="a", encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"cannot open {log_file}: {exc.strerror}", param_hint="--log-file") from None


DRIVER_HELP = "Driver instance to use (default: the queue's configured driver, else default_driver)."


def driver_option(function: F) -> F:
    """Add ``-i/--driver`` as the commands that queue messages have it."""
    return click.option("-i", "--driver", help=DRIVER_HELP)(function)


def expiry_options(function: F) -> F:
    """Add ``--ttl`` and ``--delay`` (durations) as the commands that queue messages have them (no short
    form: ``-t`` is ``kq consume``'s time limit, and a letter means one thing in every command)."""
    with_delay = click.option(
        "--delay",
        type=FiniteFloat(duration=True),
        default=0.0,
        help="Seconds before the message becomes visible to workers.",
    )(function)
    return click.option(
        "--ttl",
        type=FiniteFloat(exclusive_minimum=True, duration=True),
        help="Seconds after which the message expires if no worker took it.",
    )(with_delay)


def report_queued(
    output_format: str, what: str, queue: str, message: Any, *, ttl: float | None, delay: float, body: Any
) -> None:
    """Say that ``message`` was queued: ``<what> on queue Q as message ID``, or the JSON document."""
    if output_format == "json":
        emit(
            {
                "queue": queue,
                "message_id": message.message_id,
                "routing_key": message.routing_key,
                "ttl": ttl,
                "delay": delay,
                "body": body,
            },
            output_format,
        )
        return
    validity = f", valid for {ttl:g} seconds" if ttl else ""
    click.echo(f"{what} on queue {queue} as message {message.message_id}{validity}")


def format_option(function: F) -> F:
    """Add ``--format text|json``."""
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="Output format: human-readable text, or JSON for scripts.",
    )(function)


def yes_option(function: F) -> F:
    """``-y/--yes``: a destructive action without the question a terminal is asked (:func:`confirm`)."""
    return click.option(
        "-y", "--yes", is_flag=True, help="Do not ask for confirmation (only a terminal is asked)."
    )(function)


def confirm(question: str, yes: bool) -> None:
    """Ask ``question`` when stdin is a terminal and ``yes`` is not set; exit 1 ("Aborted!") on no.

    Scripts, cron jobs and pipes (stdin not a terminal) are not asked: the command line is their
    confirmation.
    """
    if yes or not sys.stdin.isatty():
        return
    click.confirm(question, abort=True)


def emit(value: Any, output_format: str, text: Callable[[Any], Iterable[str]] | None = None) -> None:
    """Print ``value`` as JSON, or as text lines produced by ``text`` (default: a generic rendering)."""
    if output_format == "json":
        click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))
        return
    for line in (text or render_text)(value):
        click.echo(line)


def render_text(value: Any, indent: str = "") -> Iterable[str]:
    """A plain rendering of dicts (``key: value``), lists (one item per line) and scalars."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                yield f"{indent}{key}:"
                yield from render_text(item, indent + "  ")
            else:
                yield f"{indent}{key}: {_scalar(item)}"
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                yield f"{indent}-"
                yield from render_text(item, indent + "  ")
            else:
                yield f"{indent}{_scalar(item)}"
    else:
        yield f"{indent}{_scalar(value)}"


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, dict)):
        return "none"
    return str(value)


def parse_pairs(values: Iterable[str], option: str, *, allow_flags: bool) -> dict[str, str | None]:
    """Parse repeated ``name=value`` options (split on the first ``=``).

    Args:
        values: The raw option values.
        option: The option's name, for error messages.
        allow_flags: Whether a bare ``name`` (no ``=``) is accepted, meaning a flag.
    """
    pairs: dict[str, str | None] = {}
    for raw in values:
        name, sep, value = raw.partition("=")
        if not name.strip():
            raise click.BadParameter(f"{raw!r} has no name; expected name=value", param_hint=option)
        if not sep and not allow_flags:
            raise click.BadParameter(f"{raw!r} has no '='; expected name=value", param_hint=option)
        pairs[name] = value if sep else None
    return pairs


def exit_code_for(error: BaseException) -> int | None:
    """The exit code for a kq error, or ``None`` when ``error`` is not one of kq's."""
    from kq.core import BrokerUnavailableError, ConfigError, KqError, PluginLoadError

    if isinstance(error, ConfigError):
        return EXIT_CONFIG
    if isinstance(error, (PluginLoadError, BrokerUnavailableError)):
        return EXIT_UNAVAILABLE
    if isinstance(error, KqError):
        # A publish that gave up because the broker stayed out of reach is "unavailable" too.
        return (
            EXIT_UNAVAILABLE if _caused_by(error, (BrokerUnavailableError, ConnectionError)) else EXIT_FAILURE
        )
    return None


def _caused_by(error: BaseException, kind: tuple[type[BaseException], ...]) -> bool:
    """Whether one of ``kind`` is among the causes of ``error`` (``raise ... from``), a few levels deep."""
    cause = error.__cause__
    for _ in range(10):
        if cause is None:
            return False
        if isinstance(cause, kind):
            return True
        cause = cause.__cause__
    return False
