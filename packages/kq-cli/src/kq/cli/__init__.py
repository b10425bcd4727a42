"""kq-cli: the ``kq`` command.

Commands (``kq COMMAND --help`` explains every option; docs/cli.md has them all)::

    kq queuecommand QUEUE COMMAND [ARGS]... [-o name=value]... [-i DRIVER] [-r KEY] [--ttl TTL]
    kq queuemessage QUEUE BODY [-c CONTENT_TYPE] [-n REPEAT] [-b] [-i DRIVER] [-r KEY] [--ttl TTL]
    kq queueservice QUEUE SERVICE METHOD [ARGS]... [-j JSON] [-k name=value]... [--json-kwargs JSON]
    kq queuehttp QUEUE URL [-X METHOD] [-H name=value]... [-p name=value]... [-d TEXT | --json JSON]
    kq consume QUEUE [-m MESSAGES] [-t SECONDS] [-r KEY] [-i DRIVER] [--label LABEL] [-w]
    kq managedriver list [--format json]
    kq managequeue ACTION [QUEUE] [-i DRIVER] [-a name=value]... [--format json]
    kq failed show|retry|remove QUEUE [ID]...      (the dead-letter queue of QUEUE)
    kq signing new-key
    kq status [--all] [--watch SECONDS]            (queue counts and workers at a glance)
    kq watchdog start|stop|check|run               (the [workers.*] processes)
    kq workerswatchdog ACTION                      (the PHP library's name for kq watchdog)
    kq echoback INPUT [-f FILE]

Other distributions add commands through the ``kq.commands`` entry points, built with
:mod:`kq.cli.plugin` (``kq-contrib-xmlrpc`` adds ``kq queuexmlrpc``).

Global options, before or after the command name: ``--config PATH`` (else ``$KQ_CONFIG``,
``./kq.toml``, ``[tool.kq]``, defaults), ``--log-level LEVEL``, ``--log-format text|json``,
``--log-file PATH``, ``-v``/``-q``. Exit codes are the ``EXIT_*`` constants of this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kq.cli.version import __version__

if TYPE_CHECKING:
    from kq.cli._common import (
        EXIT_CONFIG,
        EXIT_FAILURE,
        EXIT_INTERRUPTED,
        EXIT_OK,
        EXIT_UNAVAILABLE,
        EXIT_USAGE,
    )
    from kq.cli._main import cli, main

# Imported on first use (PEP 562): ``python -m kq.cli`` imports this package before ``__main__``, which
# imports the command line with the garbage collector paused (see ``_kq_launcher.run``).
_LAZY = {
    "cli": "_main",
    "main": "_main",
    "EXIT_CONFIG": "_common",
    "EXIT_FAILURE": "_common",
    "EXIT_INTERRUPTED": "_common",
    "EXIT_OK": "_common",
    "EXIT_UNAVAILABLE": "_common",
    "EXIT_USAGE": "_common",
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    # entry points
    "cli",
    "main",
    # exit codes
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    # version
    "__version__",
]
