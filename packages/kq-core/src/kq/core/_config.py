"""Configuration: one TOML file, found in a fixed order, validated with errors that name key and file.

Lookup order: an explicit path (``--config``), ``$KQ_CONFIG``, ``./kq.toml``, ``[tool.kq]`` in
``./pyproject.toml``, and finally built-in defaults: the sqlite driver in ``./.kq/`` and an allow-list
that permits only ``echoback``. ``${VAR}`` and ``${VAR:-default}`` in string values are expanded from the
environment.
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

from kq.core._errors import ConfigError
from kq.core._events import EVENTS
from kq.core._numbers import MAX_COUNT, MAX_SECONDS, check_number, check_whole_number
from kq.core._registry import handler_names
from kq.core._retry import RetryPolicy, check_retry_field
from kq.core._spec import DriverSpec, QueueSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: Name of the driver instance that exists even when nothing is configured.
DEFAULT_DRIVER_NAME = "default"
#: Where the zero-configuration sqlite database lives, relative to the working directory.
DEFAULT_SQLITE_PATH = ".kq/kq.sqlite3"
#: What the console-command consumer may run when there is no configuration file at all.
DEFAULT_ALLOWED_COMMANDS = ("echoback",)
#: Event names listeners can subscribe to.
EVENT_NAMES = tuple(EVENTS)

_TOO_DEEP = "arrays or tables are nested too deeply"
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_CALLABLE_NAME = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*\Z")
_TOP_LEVEL = ("default_driver", "drivers", "queues", "console", "allow", "listeners", "workers", "signing")
#: Consumers that require signed messages unless configured otherwise: they execute what messages ask.
SIGNED_CONSUMERS = ("console_command", "inprocess_console_command", "service")
#: Options of ``[workers.<name>] options``: the ``kq consume`` options a watchdog passes on, with types.
WORKER_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "messages": int,
    "timeout": (int, float),
    "memory_limit": (int, float),
    "failure_limit": int,
    "routing_key": str,
    "driver": str,
    "prefetch": int,
    "poll_interval": (int, float),
    "grace": (int, float),
}
#: The range of each number among the worker options: (minimum, maximum, whole number).
_WORKER_NUMBERS: dict[str, tuple[float, float, bool]] = {
    "messages": (0, MAX_COUNT, True),
    "timeout": (0, MAX_SECONDS, False),
    "memory_limit": (0, MAX_SECONDS, False),
    "failure_limit": (0, MAX_COUNT, True),
    "prefetch": (1, MAX_COUNT, True),
    "poll_interval": (0.01, MAX_SECONDS, False),
    "grace": (0, MAX_SECONDS, False),
}
_QUEUE_KEYS = (
    "driver",
    "consumer",
    "routing_keys",
    "dead_letter_queue",
    "require_signature",
    "retry",
    "max_deliveries",
)


@dataclass(frozen=True)
class ConsoleSettings:
    """``[console]``: how the console-command consumer runs commands.

    Attributes:
        prefix: The program the command name is appended to. ``None`` means this kq
            (``python -m kq.cli``); ``["python", "manage.py"]`` runs Django commands.
        timeout: Seconds a command may run before it is killed and the message fails.
        env: Extra environment variables for commands.
        inherit_env: Whether commands inherit the worker's environment (``False``: only ``env`` and
            kq's ``KQ_*`` message variables).
        withheld_env: Variables commands never inherit: those ``[signing]`` reads (set by the loader).
        withheld_keys: The configured signing keys (values, or ``file:ABSOLUTE-PATH``): an inherited
            variable holding one of them is not passed on either (set by the loader).
        cwd: Working directory of commands (default: the consumer's); relative to the configuration file.
        callable: The entry point the in-process consumer calls (``module:attr``; a click command or a
            ``main(argv)`` function).
    """

    prefix: tuple[str, ...] | None = None
    timeout: float = 3600.0
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    callable: str = "kq.cli:cli"
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
        """The prefix to run, with the default resolved to this interpreter's kq."""
        if self.prefix is not None:
            return self.prefix
        return (sys.executable, "-m", "kq.cli")


@dataclass(frozen=True)
class AllowSettings:
    """``[allow]``: what message consumers may execute. Empty means nothing.

    Attributes:
        commands: Console commands (names or ``re:`` patterns).
        services: Python callables: ``module`` or ``module:attr`` (or ``re:``) -> allowed methods.
        urls: HTTP targets: a host name (exact) or ``re:`` on the whole URL.
        xmlrpc: XML-RPC server URLs (or ``re:``) -> allowed methods.
    """

    commands: tuple[str, ...] = ()
    services: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    urls: tuple[str, ...] = ()
    xmlrpc: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


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
class SigningSettings:
    """``[signing]``: message signatures (see :mod:`kq.core._signing`).

    Attributes:
        keys: Key id -> key, or ``file:PATH``; empty means the local key in ``.kq/signing.key``.
        sign_with: The key id producers sign with (default: the only key).
        max_age: Seconds a signature stays valid.
        env_names: The environment variables the section reads (``${VAR}``, ``${VAR:-default}``).
        require: Consumer names whose queues accept only signed messages (a queue's
            ``require_signature`` overrides).
    """

    keys: Mapping[str, str] = field(default_factory=dict, repr=False)  # secrets: never in a repr
    sign_with: str | None = None
    max_age: float = 86400.0
    require: tuple[str, ...] = SIGNED_CONSUMERS
    env_names: frozenset[str] = frozenset()


@dataclass(frozen=True)
class WorkerSpec:
    """A ``[workers.<name>]`` table: consumer processes a watchdog keeps running.

    Attributes:
        name: The worker's name; its processes are labelled ``<name>-1``, ``<name>-2``, ...
        queue: The logical queue they consume.
        count: How many processes.
        options: ``kq consume`` options (``messages``, ``memory_limit``, ``routing_key``, ...).
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
        arguments: list[str] = []
        for name, value in self.options.items():
            arguments += [f"--{name.replace('_', '-')}", str(value)]
        return arguments


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
    allow: AllowSettings = field(default_factory=lambda: AllowSettings(commands=DEFAULT_ALLOWED_COMMANDS))
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
    _only(data, _TOP_LEVEL, "", source)

    drivers: dict[str, DriverSpec] = {DEFAULT_DRIVER_NAME: default_driver_spec(source, root)}
    for name, raw in _table(data, "drivers", source).items():
        key = f"drivers.{name}"
        table = _as_table(raw, key, source)
        driver_type = table.get("type")
        if not isinstance(driver_type, str) or not driver_type:
            raise ConfigError(
                "every driver needs a 'type' (for example \"sqlite\")", key=f"{key}.type", source=source
            )
        options = {k: v for k, v in table.items() if k != "type"}
        drivers[name] = DriverSpec(name=name, type=driver_type, options=options, source=source, root=root)

    default_driver = data.get("default_driver", DEFAULT_DRIVER_NAME)
    if not isinstance(default_driver, str) or default_driver not in drivers:
        raise ConfigError(
            f"'{default_driver}' is not a configured driver (configured: {', '.join(sorted(drivers))})",
            key="default_driver",
            source=source,
        )

    signing = _parse_signing(_table(data, "signing", source), source, signing_names)
    queues: dict[str, QueueSpec] = {}
    for name, table in _table(data, "queues", source).items():
        queues[name] = _parse_queue(
            name, _as_table(table, f"queues.{name}", source), drivers, default_driver, source
        )

    return Config(
        source=source,
        default_driver=default_driver,
        drivers=drivers,
        queues=queues,
        console=_withhold_signing(
            _parse_console(_table(data, "console", source), source, root),
            signing,
            console_references,
            source,
            root,
        ),
        allow=_parse_allow(_table(data, "allow", source), source),
        listeners=_parse_listeners(data.get("listeners", []), source),
        workers={
            name: _parse_worker(name, _as_table(table, f"workers.{name}", source), source)
            for name, table in _table(data, "workers", source).items()
        },
        signing=signing,
        root=root,
    )


def _parse_queue(
    name: str,
    table: Mapping[str, Any],
    drivers: Mapping[str, DriverSpec],
    default_driver: str,
    source: str | None,
) -> QueueSpec:
    key = f"queues.{name}"
    driver = table.get("driver", default_driver)
    if not isinstance(driver, str) or driver not in drivers:
        raise ConfigError(
            f"'{driver}' is not a configured driver (configured: {', '.join(sorted(drivers))})",
            key=f"{key}.driver",
            source=source,
        )
    consumer = table.get("consumer", "console_command")
    known = handler_names()
    if not isinstance(consumer, str) or not (consumer in known or _CALLABLE_NAME.match(consumer)):
        raise ConfigError(
            f"consumer must be one of {', '.join(known)} (kq.handlers entry points) or 'module:attribute', "
            f"not {consumer!r}",
            key=f"{key}.consumer",
            source=source,
        )
    routing_keys = table.get("routing_keys", [])
    if isinstance(routing_keys, str):
        routing_keys = [routing_keys]
    if not isinstance(routing_keys, list) or not all(isinstance(k, str) for k in routing_keys):
        raise ConfigError("routing_keys must be a list of strings", key=f"{key}.routing_keys", source=source)
    dead_letter = table.get("dead_letter_queue")
    if dead_letter is not None and (not isinstance(dead_letter, str) or not dead_letter):
        raise ConfigError(
            "dead_letter_queue must be a queue name", key=f"{key}.dead_letter_queue", source=source
        )
    require_signature = table.get("require_signature")
    if require_signature is not None and not isinstance(require_signature, bool):
        raise ConfigError(
            "require_signature must be true or false", key=f"{key}.require_signature", source=source
        )
    max_deliveries = _whole(
        table.get("max_deliveries", 10), f"{key}.max_deliveries", source, note="0: no limit"
    )
    options = {k: v for k, v in table.items() if k not in _QUEUE_KEYS}
    return QueueSpec(
        retry=_parse_retry(_as_table(table.get("retry", {}), f"{key}.retry", source), f"{key}.retry", source),
        max_deliveries=max_deliveries,
        name=name,
        driver=driver,
        consumer=consumer,
        routing_keys=tuple(routing_keys),
        options=options,
        dead_letter_queue=dead_letter or "",
        require_signature=require_signature,
        source=source,
    )


def _parse_retry(table: Mapping[str, Any], key: str, source: str | None) -> RetryPolicy:
    fields = ("max_attempts", "delay", "multiplier", "max_delay", "jitter")
    _only(table, fields, key, source)
    values: dict[str, Any] = {}
    for name in fields:
        if name in table:
            try:
                values[name] = check_retry_field(name, table[name])
            except ValueError as exc:
                raise ConfigError(str(exc), key=f"{key}.{name}", source=source) from None
    try:
        return RetryPolicy(**values)
    except ValueError as exc:
        raise ConfigError(str(exc), key=key, source=source) from None


def _parse_console(table: Mapping[str, Any], source: str | None, root: str | None) -> ConsoleSettings:
    _only(table, ("prefix", "timeout", "env", "inherit_env", "cwd", "callable"), "console", source)
    prefix = table.get("prefix")
    if prefix is not None:
        if isinstance(prefix, str):
            prefix = [prefix]
        if not isinstance(prefix, list) or not prefix or not all(isinstance(p, str) and p for p in prefix):
            raise ConfigError(
                'prefix must be a non-empty list of strings, e.g. ["python", "manage.py"]',
                key="console.prefix",
                source=source,
            )
        prefix = tuple(prefix)
    timeout = _number(table.get("timeout", 3600.0), "console.timeout", source, exclusive_minimum=True)
    env = table.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ConfigError("env must be a table of strings", key="console.env", source=source)
    inherit_env = table.get("inherit_env", True)
    if not isinstance(inherit_env, bool):
        raise ConfigError("inherit_env must be true or false", key="console.inherit_env", source=source)
    cwd = table.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise ConfigError("cwd must be a string", key="console.cwd", source=source)
    if cwd is not None and root is not None:
        cwd = str(Path(root) / Path(cwd).expanduser())  # absolute paths stay as they are
    entry = table.get("callable", "kq.cli:cli")
    if not isinstance(entry, str) or not _CALLABLE_NAME.match(entry):
        raise ConfigError("callable must be 'module:attribute'", key="console.callable", source=source)
    return ConsoleSettings(
        prefix=prefix,
        timeout=timeout,
        env=dict(env),
        inherit_env=inherit_env,
        cwd=cwd,
        callable=entry,
    )


def _withhold_signing(
    console: ConsoleSettings,
    signing: SigningSettings,
    references: Mapping[str, set[str]],
    source: str | None,
    root: str | None,
) -> ConsoleSettings:
    """``console`` set up to keep the signing secrets from commands; an ``env`` that passes one on is an
    error (it would hand the key to every command by configuration)."""
    secrets = {value.strip() for value in signing.keys.values() if not value.startswith("file:")} - {""}
    for name, value in console.env.items():
        read = sorted(references.get(name, set()) & signing.env_names)
        if name in signing.env_names:
            why = f"{name} is read by [signing]"
        elif read:
            why = f"its value reads ${{{read[0]}}}, which [signing] reads"
        elif value.strip() in secrets:
            why = "its value is a signing key"
        else:
            continue
        raise ConfigError(
            f"commands must not receive the signing key: {why}; remove it from [console] env",
            key=f"console.env.{name}",
            source=source,
        )
    keys = []
    for value in signing.keys.values():
        if value.startswith("file:"):
            path = Path(value[5:]).expanduser()
            if not path.is_absolute() and root is not None:
                path = Path(root) / path
            keys.append(f"file:{path}")
        else:
            keys.append(value)
    return dataclasses.replace(console, withheld_env=signing.env_names, withheld_keys=tuple(keys))


def _parse_allow(table: Mapping[str, Any], source: str | None) -> AllowSettings:
    _only(table, ("commands", "services", "urls", "xmlrpc"), "allow", source)
    return AllowSettings(
        commands=_patterns(table.get("commands", []), "allow.commands", "command names", source),
        services=_allow_map(
            _as_table(table.get("services", {}), "allow.services", source), "allow.services", source
        ),
        urls=_patterns(table.get("urls", []), "allow.urls", "host names", source),
        xmlrpc=_allow_map(_as_table(table.get("xmlrpc", {}), "allow.xmlrpc", source), "allow.xmlrpc", source),
    )


def _allow_map(table: Mapping[str, Any], key: str, source: str | None) -> dict[str, tuple[str, ...]]:
    """Targets (exact or ``re:``) mapped to their allowed methods, every pattern checked."""
    return {
        _pattern(target, f"{key}.{target}", source): _patterns(
            methods, f"{key}.{target}", "method names", source
        )
        for target, methods in table.items()
    }


def _patterns(entries: Any, key: str, what: str, source: str | None) -> tuple[str, ...]:
    if not isinstance(entries, list) or not all(isinstance(e, str) and e for e in entries):
        raise ConfigError(f"must be a list of {what} or 're:' patterns", key=key, source=source)
    return tuple(_pattern(entry, key, source) for entry in entries)


def _pattern(entry: str, key: str, source: str | None) -> str:
    """Check one allow-list entry: an exact name, or ``re:`` and a valid, not exponential, expression."""
    if entry.startswith("re:"):
        from kq.core._allow import UnsafePatternError, compile_pattern

        try:
            compile_pattern(entry[3:])
        except UnsafePatternError as exc:
            raise ConfigError(
                f"regular expression {entry!r} refused: {exc}", key=key, source=source
            ) from None
        except re.error as exc:
            raise ConfigError(
                f"invalid regular expression {entry!r}: {exc}", key=key, source=source
            ) from None
    return entry


def _parse_signing(
    table: Mapping[str, Any], source: str | None, env_names: frozenset[str] = frozenset()
) -> SigningSettings:
    _only(table, ("keys", "sign_with", "max_age", "require"), "signing", source)
    keys = _as_table(table.get("keys", {}), "signing.keys", source)
    for key_id, value in keys.items():
        if not isinstance(value, str) or not value:
            raise ConfigError("a key is a string (or file:PATH)", key=f"signing.keys.{key_id}", source=source)
    sign_with = table.get("sign_with")
    if sign_with is None and len(keys) == 1:
        sign_with = next(iter(keys))
    if keys and sign_with not in keys:
        raise ConfigError(
            f"must name one of the keys ({', '.join(keys)})", key="signing.sign_with", source=source
        )
    max_age = _number(table.get("max_age", 86400.0), "signing.max_age", source, exclusive_minimum=True)
    require = table.get("require", list(SIGNED_CONSUMERS))
    if not isinstance(require, list) or not all(isinstance(r, str) for r in require):
        raise ConfigError("require must be a list of consumer names", key="signing.require", source=source)
    return SigningSettings(
        keys=dict(keys),
        sign_with=sign_with,
        max_age=max_age,
        require=tuple(require),
        env_names=env_names,
    )


_WORKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


def _parse_worker(name: str, table: Mapping[str, Any], source: str | None) -> WorkerSpec:
    key = f"workers.{name}"
    _only(table, ("queue", "count", "options", "env", "log"), key, source)
    if not _WORKER_NAME.match(name):
        raise ConfigError(
            "a worker name is letters, digits, '_', '.' and '-' (it becomes the process label)",
            key=key,
            source=source,
        )
    queue = table.get("queue", name)
    if not isinstance(queue, str) or not queue:
        raise ConfigError("queue must be a queue name", key=f"{key}.queue", source=source)
    count = table.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 256:
        raise ConfigError("count must be an integer from 1 to 256", key=f"{key}.count", source=source)
    options = dict(_as_table(table.get("options", {}), f"{key}.options", source))
    for option, value in options.items():
        expected = WORKER_OPTIONS.get(option)
        if expected is None:
            raise ConfigError(
                f"unknown kq consume option (known: {', '.join(WORKER_OPTIONS)})",
                key=f"{key}.options.{option}",
                source=source,
            )
        if isinstance(value, bool) or not isinstance(value, expected):
            raise ConfigError(
                f"has the wrong type ({type(value).__name__})", key=f"{key}.options.{option}", source=source
            )
        if option in _WORKER_NUMBERS:
            minimum, maximum, whole = _WORKER_NUMBERS[option]
            if whole:
                _whole(value, f"{key}.options.{option}", source, minimum=int(minimum), maximum=int(maximum))
            else:
                _number(value, f"{key}.options.{option}", source, minimum=minimum, maximum=maximum)
    env = table.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ConfigError("env must be a table of strings", key=f"{key}.env", source=source)
    log = table.get("log")
    if log is not None and not isinstance(log, str):
        raise ConfigError("log must be a file path", key=f"{key}.log", source=source)
    return WorkerSpec(name=name, queue=queue, count=count, options=options, env=dict(env), log=log)


def _parse_listeners(entries: Any, source: str | None) -> tuple[ListenerSpec, ...]:
    if not isinstance(entries, list):
        raise ConfigError(
            "listeners must be an array of tables ([[listeners]])", key="listeners", source=source
        )
    listeners = []
    for index, raw in enumerate(entries):
        key = f"listeners[{index}]"
        entry = _as_table(raw, key, source)
        _only(entry, ("event", "handler", "queue", "priority", "options"), key, source)
        event = entry.get("event", [])
        events = [event] if isinstance(event, str) else event
        if not isinstance(events, list) or not all(e in EVENT_NAMES for e in events):
            raise ConfigError(
                f"event must be one of {', '.join(EVENT_NAMES)} (or a list of them), not {event!r}",
                key=f"{key}.event",
                source=source,
            )
        handler = entry.get("handler")
        if not isinstance(handler, str) or not _CALLABLE_NAME.match(handler):
            raise ConfigError("handler must be 'module:callable'", key=f"{key}.handler", source=source)
        queue = entry.get("queue")
        if queue is not None and not isinstance(queue, str):
            raise ConfigError("queue must be a string", key=f"{key}.queue", source=source)
        priority = entry.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ConfigError("priority must be an integer", key=f"{key}.priority", source=source)
        options = _as_table(entry.get("options", {}), f"{key}.options", source)
        listeners.append(
            ListenerSpec(
                events=tuple(events), handler=handler, queue=queue, priority=priority, options=dict(options)
            )
        )
    return tuple(listeners)


def _number(
    value: Any,
    key: str,
    source: str | None,
    *,
    minimum: float = 0.0,
    maximum: float = MAX_SECONDS,
    exclusive_minimum: bool = False,
) -> float:
    """``value`` checked by :func:`~kq.core._numbers.check_number`, or a ConfigError naming ``key``."""
    try:
        return check_number(value, minimum=minimum, maximum=maximum, exclusive_minimum=exclusive_minimum)
    except ValueError as exc:
        raise ConfigError(str(exc), key=key, source=source) from None


def _whole(
    value: Any, key: str, source: str | None, *, minimum: int = 0, maximum: int = MAX_COUNT, note: str = ""
) -> int:
    """``value`` checked by :func:`~kq.core._numbers.check_whole_number`, or a ConfigError naming ``key``."""
    try:
        return check_whole_number(value, minimum=minimum, maximum=maximum)
    except ValueError as exc:
        raise ConfigError(f"{exc}{f' ({note})' if note else ''}", key=key, source=source) from None


def _table(data: Mapping[str, Any], key: str, source: str | None) -> Mapping[str, Any]:
    return _as_table(data.get(key, {}), key, source)


def _as_table(value: Any, key: str, source: str | None) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"expected a table, got {type(value).__name__}", key=key, source=source)
    return value


def _only(table: Mapping[str, Any], known: tuple[str, ...], prefix: str, source: str | None) -> None:
    for name in table:
        if name not in known:
            key = f"{prefix}.{name}" if prefix else name
            raise ConfigError(f"unknown key (known: {', '.join(known)})", key=key, source=source)


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
