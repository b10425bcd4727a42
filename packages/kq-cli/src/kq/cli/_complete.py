"""Shell completion of what the configuration names: queues, driver instances, ``managequeue`` actions.

click completes commands and options itself (``_KQ_COMPLETE=bash_source kq`` prints the bash script;
docs/cli.md has all three shells). This module adds the values: a ``QUEUE`` argument completes the
configured queue names, ``-i/--driver`` the configured driver instances, and ``managequeue``'s
``ACTION`` the standard actions.

The values come from the configuration file alone, read with kq-core's configuration loader (the
``--config`` given on the command line being completed, else ``$KQ_CONFIG``, ``./kq.toml``,
``[tool.kq]``): no driver is imported, no broker asked, no file created. A configuration that cannot
be read completes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click
from click.shell_completion import CompletionItem

if TYPE_CHECKING:
    from kq.core import Config

#: The actions every driver's queue manager has (drivers may add their own, such as ``setup``).
STANDARD_ACTIONS = {
    "list-configured": "queues in the configuration",
    "list-available": "queues that exist on the broker",
    "info": "message counts of QUEUE",
    "purge": "delete the waiting messages of QUEUE",
    "delete": "delete QUEUE",
    "help": "the actions of the driver",
}

#: Where :func:`kq.cli._global_options` keeps a ``--config`` given after the command name, in the
#: context's ``meta`` (shared by every context of one command line, also while completing).
CONFIG_META = "kq.config_path"

_MARK = "_kq_completion"


def attach(command: click.Command) -> None:
    """Complete the values of ``command``'s parameters named ``queue``/``queues``, ``driver`` and (for
    ``managequeue``) ``action``, including parameters the command declares only when first used."""
    if getattr(command, _MARK, False):
        return
    setattr(command, _MARK, True)
    _attach_all(command.params, command.name)
    declared = command.get_params

    def get_params(ctx: click.Context) -> list[click.Parameter]:
        params = declared(ctx)
        _attach_all(params, command.name)
        return params

    command.get_params = get_params  # type: ignore[method-assign]


def _attach_all(params: list[click.Parameter], command_name: str | None) -> None:
    for param in params:
        completer = _completer(param, command_name)
        if completer is not None and param._custom_shell_complete is None:
            param._custom_shell_complete = completer


def _completer(
    param: click.Parameter, command_name: str | None
) -> Callable[[click.Context, click.Parameter, str], list[CompletionItem]] | None:
    if param.name in ("queue", "queues") and isinstance(param, click.Argument):
        return complete_queue
    if param.name == "driver" and isinstance(param, click.Option):
        return complete_driver
    if param.name == "action" and command_name == "managequeue":
        return complete_action
    return None


def complete_queue(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The configured queues whose name starts with ``incomplete`` (their driver as help)."""
    config = _config(ctx)
    if config is None:
        return []
    return [
        CompletionItem(name, help=f"driver {spec.driver}")
        for name, spec in sorted(config.queues.items())
        if name.startswith(incomplete)
    ]


def complete_driver(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The configured driver instances whose name starts with ``incomplete`` (their type as help)."""
    config = _config(ctx)
    if config is None:
        return []
    return [
        CompletionItem(name, help=spec.type)
        for name, spec in sorted(config.drivers.items())
        if name.startswith(incomplete)
    ]


def complete_action(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The standard ``managequeue`` actions starting with ``incomplete``."""
    return [
        CompletionItem(action, help=what)
        for action, what in STANDARD_ACTIONS.items()
        if action.startswith(incomplete)
    ]


def _config(ctx: click.Context) -> Config | None:
    """The configuration of the command line being completed; ``None`` when it cannot be read."""
    path = ctx.meta.get(CONFIG_META) or ctx.find_root().params.get("config_path")
    try:
        from kq.core import load_config

        return load_config(path)
    except Exception:  # a completion never fails loudly: it offers nothing
        return None
