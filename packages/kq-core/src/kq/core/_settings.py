"""The settings of ``[console]``, ``[signing]``, ``[[listeners]]`` and ``[workers.<name>]``, resolved.

They are read by :mod:`kq.core._config_sections`; these are the frozen values the rest of kq uses.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kq.core._consume_options import consume_arguments
from kq.core._errors import ConfigError

#: The distribution the console defaults (``python -m kq.cli``, ``kq.cli:cli``) come from.
CLI_DISTRIBUTION = "kq-cli"
#: What ``[console] callable`` is when not configured: kq's own command line (needs kq-cli).
DEFAULT_CALLABLE = "kq.cli:cli"


def _kq_cli_installed() -> bool:
    return importlib.util.find_spec("kq.cli") is not None


def _missing_cli(what: str, key: str) -> ConfigError:
    return ConfigError(
        f"{what} is kq's command line, which the {CLI_DISTRIBUTION} distribution provides and is not "
        f"installed: pip install {CLI_DISTRIBUTION}, or set [{key.replace('.', '] ')} to your own",
        key=key,
    )


@dataclass(frozen=True)
class ConsoleSettings:
    """``[console]``: how the console-command handlers run commands.

    The defaults run kq's own command line, which the kq-cli distribution provides: without it, a
    console-command worker with no ``prefix`` (or an in-process one with no ``callable``) fails to
    start with an error that says to install kq-cli or configure the key.

    Attributes:
        prefix: The program the command name is appended to. ``None`` means this kq
            (``python -m kq.cli``, needs kq-cli); ``["python", "manage.py"]`` runs Django commands.
        timeout: Seconds a command may run before it is killed and the message fails.
        env: Extra environment variables for commands.
        inherit_env: Whether commands inherit the worker's environment (``False``: only ``env`` and
            kq's ``KQ_*`` message variables).
        withheld_env: Variables commands never inherit: those ``[signing]`` reads (set by the loader).
        withheld_keys: The configured signing keys (values, or ``file:ABSOLUTE-PATH``): an inherited
            variable holding one of them is not passed on either (set by the loader).
        cwd: Working directory of commands (default: the consumer's); relative to the configuration file.
        callable: The entry point the in-process handler calls (``module:attr``; a click command or a
            ``main(argv)`` function); the default, ``kq.cli:cli``, needs kq-cli.
    """

    prefix: tuple[str, ...] | None = None
    timeout: float = 3600.0
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    callable: str = DEFAULT_CALLABLE
    inherit_env: bool = True
    withheld_env: frozenset[str] = frozenset()
    withheld_keys: tuple[str, ...] = field(default=(), repr=False)  # secrets: never in a repr

    def withheld_secrets(self) -> frozenset[str]:
        """The signing keys an inherited variable must not hold (key files that cannot be read are
        skipped: the worker reports them when it needs the key)."""
        found: set[str] = set()
        for entry in self.withheld_keys:
            secret = entry
            if entry.startswith("file:"):
                try:
                    secret = Path(entry[5:]).read_text()
                except (OSError, UnicodeDecodeError):
                    continue
            if secret.strip():
                found.add(secret.strip())
        return frozenset(found)

    def argv_prefix(self) -> tuple[str, ...]:
        """The prefix to run, with the default resolved to this interpreter's kq.

        Raises:
            ConfigError: the default is asked for and kq-cli is not installed.
        """
        if self.prefix is not None:
            return self.prefix
        if not _kq_cli_installed():
            raise _missing_cli("the default prefix (python -m kq.cli)", "console.prefix")
        return (sys.executable, "-m", "kq.cli")

    def check_callable(self) -> None:
        """Raise :class:`ConfigError` if ``callable`` is the default and kq-cli is not installed."""
        if self.callable == DEFAULT_CALLABLE and not _kq_cli_installed():
            raise _missing_cli(f"the default callable ({DEFAULT_CALLABLE})", "console.callable")


@dataclass(frozen=True)
class SigningSettings:
    """``[signing]``: message signatures (see :mod:`kq.core._signing`).

    Attributes:
        keys: Key id -> key, or ``file:PATH``; empty means the local key in ``.kq/signing.key``.
        sign_with: The key id producers sign with (default: the only key).
        max_age: Seconds a signature stays valid.
        env_names: The environment variables the section reads (``${VAR}``, ``${VAR:-default}``).
        require: Handler names whose queues accept only signed messages; ``None`` (not configured):
            the handlers that declare ``requires_signature`` (kq-core's: ``console_command``,
            ``inprocess_console_command``, ``service``). A queue's ``require_signature`` overrides.
    """

    keys: Mapping[str, str] = field(default_factory=dict, repr=False)  # secrets: never in a repr
    sign_with: str | None = None
    max_age: float = 86400.0
    require: tuple[str, ...] | None = None
    env_names: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ListenerSpec:
    """One ``[[listeners]]`` entry.

    Attributes:
        events: Event names; empty means the handler's own ``events`` attribute.
        handler: ``module:callable``; a class is instantiated with ``options`` as keyword arguments.
    """

    events: tuple[str, ...]
    handler: str
    queue: str | None = None
    priority: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerSpec:
    """A ``[workers.<name>]`` table: consumer processes a watchdog keeps running.

    Attributes:
        name: The worker's name; its processes are labelled ``<name>-1``, ``<name>-2``, ...
        queue: The logical queue they consume.
        count: How many processes.
        options: ``kq consume`` options (``messages``, ``memory_limit``, ``routing_key``, ...; see
            :data:`~kq.core._consume_options.WORKER_OPTIONS`).
        env: Extra environment variables of the processes.
        log: Where their output goes (relative to the configuration file; default ``.kq/logs/``).
    """

    name: str
    queue: str
    count: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    log: str | None = None

    def labels(self) -> list[str]:
        """The labels of its processes, one per instance."""
        return [f"{self.name}-{index}" for index in range(1, self.count + 1)]

    def consume_arguments(self) -> list[str]:
        """The ``kq consume`` options these workers run with (without queue and label)."""
        return consume_arguments(self.options)
