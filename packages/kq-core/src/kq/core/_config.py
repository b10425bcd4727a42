"""Configuration: one TOML file, found in a fixed order, validated with errors that name key and file.

Lookup order: an explicit path (``--config``), ``$KQ_CONFIG``, ``./kq.toml``, ``[tool.kq]`` in
``./pyproject.toml``, and finally built-in defaults: the sqlite driver in ``./.kq/`` and an allow-list
that permits only ``echoback``. ``${VAR}`` and ``${VAR:-default}`` in string values are expanded from the
environment.

Every table is checked against a schema when the file is loaded (:mod:`kq.core._options`): an unknown
key is an error naming the key, the file and the closest known key. Loading scans no entry points: a
driver ``type`` or a queue's ``consumer`` that is not installed is reported when it is first used, and
by :meth:`Config.check_plugins` (``kq managedriver list``, ``kq managequeue list-configured``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kq.core._allow import AllowSettings, parse_allow
from kq.core._config_sections import (
    parse_console,
    parse_listeners,
    parse_signing,
    parse_worker,
    withhold_signing,
)
from kq.core._config_tables import TOP_LEVEL_SCHEMA, as_table, parse_driver, parse_queue
from kq.core._errors import ConfigError, KqError
from kq.core._options import closest, resolve_options
from kq.core._settings import ConsoleSettings, ListenerSpec, SigningSettings, WorkerSpec
from kq.core._spec import DriverSpec, QueueSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "Config",
    "ConsoleSettings",
    "ListenerSpec",
    "SigningSettings",
    "WorkerSpec",
    "find_config_file",
    "load_config",
    "parse_config",
]

#: Name of the driver instance that exists even when nothing is configured.
DEFAULT_DRIVER_NAME = "default"
#: Where the zero-configuration sqlite database lives, relative to the working directory.
DEFAULT_SQLITE_PATH = ".kq/kq.sqlite3"
#: What the console-command handler may run when there is no configuration file at all.
DEFAULT_ALLOWED_COMMANDS = ("echoback",)

_TOO_DEEP = "arrays or tables are nested too deeply"
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Config:
    """The whole configuration, resolved.

    Attributes:
        source: The file it came from (``None``: built-in defaults).
        default_driver: Driver instance used when none is named.
        drivers: Driver instances by name.
        queues: Configured logical queues by name.
    """

    source: str | None = None
    default_driver: str = DEFAULT_DRIVER_NAME
    drivers: Mapping[str, DriverSpec] = field(
        default_factory=lambda: {DEFAULT_DRIVER_NAME: default_driver_spec()}
    )
    queues: Mapping[str, QueueSpec] = field(default_factory=dict)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    allow: AllowSettings = field(
        default_factory=lambda: AllowSettings(sections={"commands": DEFAULT_ALLOWED_COMMANDS})
    )
    listeners: tuple[ListenerSpec, ...] = ()
    workers: Mapping[str, WorkerSpec] = field(default_factory=dict)
    signing: SigningSettings = field(default_factory=SigningSettings)
    #: Directory of the configuration file (``None``: the working directory, for the defaults).
    root: str | None = None
    #: The configuration file itself (``None``: built-in defaults).
    path: str | None = None

    def queues_of(self, driver: str) -> list[QueueSpec]:
        """The configured queues held by driver instance ``driver``."""
        return [q for q in self.queues.values() if q.driver == driver]

    def signature_required(self, queue: QueueSpec) -> bool:
        """Whether ``queue`` accepts only signed messages.

        Its ``require_signature`` decides; else ``[signing] require`` when configured; else the handler
        type's ``requires_signature``. A handler named ``module:attribute`` is not imported for this
        (it requires signatures only as those two settings say); a handler name that is not installed
        or cannot be imported requires them (refusing is the safe side).
        """
        if queue.require_signature is not None:
            return queue.require_signature
        if self.signing.require is not None:
            return queue.consumer in self.signing.require
        if ":" in queue.consumer:
            return False
        from kq.core import _registry  # scans the entry points: at use, never while loading

        try:
            handler = _registry.load_plugin(_registry.HANDLER_GROUP, queue.consumer)
        except KqError:
            return True
        return getattr(handler, "requires_signature", False) is True

    def check_plugins(self) -> None:
        """Check that the configured driver types and handler names are installed.

        Loading the file scans no entry points; this does (it imports no plugin).

        Raises:
            ConfigError: naming the key, the file, the installed names and the closest one.
        """
        from kq.core import _registry

        drivers = _registry.driver_names()
        for spec in self.drivers.values():
            if spec.type not in drivers:
                raise ConfigError(
                    f"unknown driver type '{spec.type}'; available: {', '.join(drivers)}"
                    + _did_you_mean(spec.type, drivers),
                    key=f"drivers.{spec.name}.type",
                    source=spec.source,
                )
        handlers = _registry.handler_names()
        for queue in self.queues.values():
            if ":" not in queue.consumer and queue.consumer not in handlers:
                raise ConfigError(
                    f"consumer must be one of {', '.join(handlers)} (kq.handlers entry points) or "
                    f"'module:attribute', not {queue.consumer!r}" + _did_you_mean(queue.consumer, handlers),
                    key=f"queues.{queue.name}.consumer",
                    source=queue.source,
                )


def _did_you_mean(name: str, known: list[str]) -> str:
    suggestion = closest(name, known)
    return f"; did you mean '{suggestion}'?" if suggestion else ""


def default_driver_spec(source: str | None = None, root: str | None = None) -> DriverSpec:
    """The zero-configuration driver: sqlite under ``.kq/`` (of the working directory when no file)."""
    return DriverSpec(
        name=DEFAULT_DRIVER_NAME,
        type="sqlite",
        options={"path": DEFAULT_SQLITE_PATH},
        source=source,
        root=root,
    )


def find_config_file(explicit: str | os.PathLike[str] | None = None, cwd: Path | None = None) -> Path | None:
    """Return the configuration file to use, following the documented order, or ``None``."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"configuration file {path} does not exist", source="--config")
        return path
    env = os.environ.get("KQ_CONFIG")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"configuration file {path} does not exist", source="$KQ_CONFIG")
        return path
    base = cwd or Path.cwd()
    if (base / "kq.toml").is_file():
        return base / "kq.toml"
    pyproject = base / "pyproject.toml"
    if pyproject.is_file() and "tool" in (data := _read_toml(pyproject)) and "kq" in data["tool"]:
        return pyproject
    return None


def load_config(explicit: str | os.PathLike[str] | None = None, *, cwd: Path | None = None) -> Config:
    """Find and load the configuration (see the module docstring for the lookup order)."""
    found = find_config_file(explicit, cwd)
    if found is None:
        return Config()
    path = found.absolute()
    data = _read_toml(path)
    if path.name == "pyproject.toml":
        data = data.get("tool", {}).get("kq", {})
        if not isinstance(data, dict):
            raise ConfigError("[tool.kq] must be a table", key="tool.kq", source=str(path))
        config = parse_config(data, source=f"{path} [tool.kq]", root=str(path.parent))
    else:
        config = parse_config(data, source=str(path), root=str(path.parent))
    return dataclasses.replace(config, path=str(path))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data: dict[str, Any] = tomllib.load(handle)
            return data
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(path)) from None
    except RecursionError:
        # The TOML parser recurses once per level of nested arrays or inline tables.
        raise ConfigError(_TOO_DEEP, source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration: {exc.strerror}", source=str(path)) from None


def parse_config(data: Mapping[str, Any], *, source: str | None = None, root: str | None = None) -> Config:
    """Validate a parsed TOML document and return the :class:`Config`.

    Args:
        data: The parsed document (or the ``[tool.kq]`` table).
        source: Where it came from, for error messages.
        root: Directory that relative paths (such as a sqlite database) are relative to.
    """
    console = data.get("console")
    console_env = console.get("env") if isinstance(console, dict) else None
    try:
        # What [signing] and [console] env read from the environment, before it is expanded away:
        # commands must never receive a variable that holds (or leads to) a signing key.
        signing_names = frozenset(_references(data.get("signing")))
        console_references = (
            {name: _references(value) for name, value in console_env.items()}
            if isinstance(console_env, dict)
            else {}
        )
        data = _expand(data, "", source)
    except RecursionError:  # a parsed document can be nested as deeply as the parser recursed
        raise ConfigError(_TOO_DEEP, source=source) from None
    top = resolve_options(TOP_LEVEL_SCHEMA, data, prefix="", source=source, noun="key")

    drivers: dict[str, DriverSpec] = {DEFAULT_DRIVER_NAME: default_driver_spec(source, root)}
    for name, raw in top["drivers"].items():
        drivers[name] = parse_driver(name, raw, source, root)

    default_driver = data.get("default_driver", DEFAULT_DRIVER_NAME)
    if not isinstance(default_driver, str) or default_driver not in drivers:
        raise ConfigError(
            f"'{default_driver}' is not a configured driver (configured: {', '.join(sorted(drivers))})",
            key="default_driver",
            source=source,
        )

    signing = parse_signing(top["signing"], source, signing_names)
    queues: dict[str, QueueSpec] = {}
    for name, table in top["queues"].items():
        queues[name] = parse_queue(
            name, as_table(table, f"queues.{name}", source), drivers, default_driver, source
        )

    return Config(
        source=source,
        default_driver=default_driver,
        drivers=drivers,
        queues=queues,
        console=withhold_signing(
            parse_console(top["console"], source, root), signing, console_references, source, root
        ),
        allow=parse_allow(top["allow"], source),
        listeners=parse_listeners(top["listeners"], source),
        workers={
            name: parse_worker(name, as_table(table, f"workers.{name}", source), source)
            for name, table in top["workers"].items()
        },
        signing=signing,
        root=root,
    )


def _references(value: Any) -> set[str]:
    """The environment variables ``${VAR}`` and ``${VAR:-default}`` in the strings of ``value``."""
    if isinstance(value, str):
        return {match.group(1) for match in _ENV_REFERENCE.finditer(value)}
    if isinstance(value, dict):
        return set().union(*map(_references, value.values()))
    if isinstance(value, list):
        return set().union(*map(_references, value))
    return set()


def _expand(value: Any, key: str, source: str | None) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string of ``value``."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = os.environ.get(name)
            if found is not None and (found or default is None):
                return found
            if default is not None:
                return default
            raise ConfigError(
                f"environment variable {name} is not set (use ${{{name}:-default}})",
                key=key or None,
                source=source,
            )

        return _ENV_REFERENCE.sub(replace, value)
    if isinstance(value, dict):
        return {k: _expand(v, f"{key}.{k}" if key else k, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    return value
