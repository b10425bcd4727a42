"""The ``kq`` command group: global options, logging, and error reporting without tracebacks."""

from __future__ import annotations

import functools
import importlib
import logging
from typing import TYPE_CHECKING, Any

import click

from kq.cli._common import EXIT_FAILURE, LogSettings, State, exit_code_for
from kq.cli._global_options import add_to, group_options, start_logging

if TYPE_CHECKING:
    import importlib.metadata

logger = logging.getLogger("kq.cli")


#: Entry-point group of extra ``kq`` subcommands (click commands) from other distributions.
COMMAND_GROUP = "kq.commands"

#: kq's own subcommands: name -> (module, attribute). Each is imported, and given the global options,
#: when first asked for: a worker's ``kq consume`` builds one command, not thirteen.
BUILTIN_COMMANDS: dict[str, tuple[str, str]] = {
    "queuecommand": ("kq.cli._produce", "queuecommand"),
    "queuemessage": ("kq.cli._produce", "queuemessage"),
    "queueservice": ("kq.cli._produce_calls", "queueservice"),
    "queuehttp": ("kq.cli._produce_calls", "queuehttp"),
    "consume": ("kq.cli._consume", "consume"),
    "managedriver": ("kq.cli._manage", "managedriver"),
    "managequeue": ("kq.cli._manage", "managequeue"),
    "failed": ("kq.cli._failed", "failed"),
    "echoback": ("kq.cli._echoback", "echoback"),
    "signing": ("kq.cli._signing", "signing"),
    "status": ("kq.cli._status", "status"),
    "watchdog": ("kq.cli._watchdog", "watchdog"),
    "workerswatchdog": ("kq.cli._watchdog", "workerswatchdog"),
}


class _KqGroup(click.Group):
    """Turns kq's own errors into one line on stderr and a documented exit code, imports kq's own
    subcommands when used (:data:`BUILTIN_COMMANDS`), and adds subcommands registered by other
    distributions in the ``kq.commands`` entry-point group (imported when used)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *BUILTIN_COMMANDS, *_plugin_commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in BUILTIN_COMMANDS:
            command = _builtin_command(cmd_name)
            self.add_command(command, cmd_name)
        if command is not None or cmd_name not in _plugin_commands():
            return command
        entry_point = _plugin_commands()[cmd_name]
        try:
            loaded = entry_point.load()
        except Exception as exc:
            return _unavailable(entry_point, exc)
        if not isinstance(loaded, click.Command):
            return _unavailable(entry_point, TypeError("not a click command"))
        add_to(loaded)  # the global options after its name too
        return loaded

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:
            # The reader went away (kq ... | head): click's main() quiets stdout and exits 1.
            raise
        except Exception as exc:
            code = exit_code_for(exc)
            if code is None:
                # Not one of ours: a bug or an unexpected broker error. Say so in one line; the
                # traceback is in the debug log (-v) for a bug report.
                logger.debug("unexpected error", exc_info=True)
                click.echo(
                    f"kq: error: unexpected {type(exc).__name__}: {exc} (run with -v for details)", err=True
                )
                ctx.exit(EXIT_FAILURE)
            click.echo(f"kq: error: {exc}", err=True)
            ctx.exit(code)
        finally:
            state = ctx.find_object(State)
            if state is not None:
                state.close()


def _builtin_command(name: str) -> click.Command:
    """kq's own subcommand ``name``, imported now, with the global options after its name."""
    module, attribute = BUILTIN_COMMANDS[name]
    command = getattr(importlib.import_module(module), attribute)
    if not isinstance(command, click.Command):  # pragma: no cover - a kq bug, caught by the CLI tests
        raise TypeError(f"{module}.{attribute} is not a click command")
    add_to(command)
    return command


@functools.lru_cache(maxsize=1)
def _plugin_commands() -> dict[str, importlib.metadata.EntryPoint]:
    """The ``kq.commands`` entry points by name, as kq-core's plugin registry reads its own groups.

    Read here rather than through :mod:`kq.core.plugins`: ``kq --help`` lists these commands and must
    not import kq-core (see test_cli_lazy_imports.py). The rules are the registry's: the first
    registration of a name wins, and a second one with another value is logged.
    """
    import importlib.metadata  # here: a built-in command (a worker's consume) never needs it

    found: dict[str, importlib.metadata.EntryPoint] = {}
    for entry_point in importlib.metadata.entry_points(group=COMMAND_GROUP):
        if entry_point.name in found:
            if found[entry_point.name].value != entry_point.value:
                logger.warning(
                    "two distributions register command '%s' (%s and %s); using the first",
                    entry_point.name,
                    found[entry_point.name].value,
                    entry_point.value,
                )
            continue
        found[entry_point.name] = entry_point
    return found


def _unavailable(entry_point: importlib.metadata.EntryPoint, error: Exception) -> click.Command:
    """A stand-in for a subcommand whose distribution is broken: it says so instead of vanishing."""
    name, value = entry_point.name, entry_point.value
    dist = entry_point.dist.name if entry_point.dist is not None else "the distribution that registered it"
    message = (
        f"the command {name!r} ({value}) cannot be loaded: {type(error).__name__}: {error}; reinstall {dist}"
    )

    def fail() -> None:
        raise click.ClickException(message)

    return click.Command(name, callback=fail, help=f"(unavailable) {message}", short_help="(unavailable)")


def _show_version(ctx: click.Context, value: bool) -> None:
    """``kq --version``: the report of :mod:`kq.cli._report` (only this path reads the installed
    distributions' metadata)."""
    if not value or ctx.resilient_parsing:
        return
    from kq.cli._report import collect

    click.echo(collect().render(), nl=False)
    ctx.exit()


@click.group(cls=_KqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@group_options
@click.option(
    "-V",
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, _param, value: _show_version(ctx, value),
    help="Show the versions of kq, its distributions and drivers, Python and the platform (what a bug "
    "report needs), and exit.",
)
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: str | None,
    log_level: str | None,
    log_format: str | None,
    log_file: str | None,
    verbose: int,
    quiet: int,
) -> None:
    """kq: queue console commands and messages, and run the workers that execute them.

    Runs on the embedded sqlite driver by default (no broker needed); drivers for RabbitMQ, Amazon SQS
    and STOMP brokers plug in through the kq.drivers entry points. The global options below may also
    follow the command name (kq consume demo -v). Start with:

    \b
      kq consume demo &
      kq queuecommand demo echoback "hello world" -o f=out.txt
    """
    ctx.obj = State(config_path, LogSettings(log_level, verbose, quiet, log_format, log_file))
    # Again, with the options given after the command name, just before the command runs.
    start_logging(ctx)


def main() -> None:
    """Entry point of the ``kq`` console script."""
    importable_here()
    cli(prog_name="kq")


def importable_here() -> None:
    """Put the current folder first on ``sys.path``, as ``python -m kq.cli`` (and Celery, RQ) have it:
    ``consumer = "tasks:handle"``, services, checks and listeners are found next to where ``kq`` runs.

    The console script's own folder (the virtual environment's ``bin``) is what Python put there
    instead. Called once kq.cli is imported, so a ``kq`` folder here cannot shadow kq's own modules.
    """
    import os
    import sys

    here = os.getcwd()
    if "" not in sys.path and here not in sys.path:
        sys.path.insert(0, here)
