"""Reading ``[console]``, ``[signing]``, ``[[listeners]]`` and ``[workers.<name>]``.

Each section is described by a schema of :class:`~kq.core._options.Option` and checked by
:func:`~kq.core._options.resolve_options`, the code that checks driver options (an unknown key names the
closest known one); the parser then builds the settings of :mod:`kq.core._settings`, checking what
spans keys (``sign_with`` naming a key, ``[console] env`` not passing a signing key on).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kq.core._consume_options import check_worker_options
from kq.core._errors import ConfigError
from kq.core._events import EVENTS
from kq.core._numbers import MAX_SECONDS, check_number
from kq.core._options import Option, resolve_options
from kq.core._settings import DEFAULT_CALLABLE, ConsoleSettings, ListenerSpec, SigningSettings, WorkerSpec

#: Event names listeners can subscribe to.
EVENT_NAMES = tuple(EVENTS)
_CALLABLE_NAME = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*\Z")
_WORKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


def _check(ok: bool, message: str) -> None:
    """Validators return the value (converted) or raise ValueError with the message."""
    if not ok:
        raise ValueError(message)


def _seconds(value: Any) -> float:
    return check_number(value, minimum=0.0, maximum=MAX_SECONDS, exclusive_minimum=True, duration=True)


def _strings_table(value: Any) -> dict[str, str]:
    _check(
        isinstance(value, dict) and all(isinstance(v, str) for v in value.values()),
        "env must be a table of strings",
    )
    return dict(value)


def _boolean(name: str) -> Any:
    def check(value: Any) -> bool:
        _check(isinstance(value, bool), f"{name} must be true or false")
        return bool(value)

    return check


def _string(name: str, what: str) -> Any:
    def check(value: Any) -> str:
        _check(isinstance(value, str), f"{name} must be {what}")
        return str(value)

    return check


def _callable(what: str) -> Any:
    def check(value: Any) -> str:
        _check(isinstance(value, str) and bool(_CALLABLE_NAME.match(value)), what)
        return str(value)

    return check


def _prefix(value: Any) -> tuple[str, ...]:
    prefix = [value] if isinstance(value, str) else value
    _check(
        isinstance(prefix, list) and bool(prefix) and all(isinstance(p, str) and p for p in prefix),
        'prefix must be a non-empty list of strings, e.g. ["python", "manage.py"]',
    )
    return tuple(prefix)


def _table(value: Any) -> dict[str, Any]:
    _check(isinstance(value, dict), f"expected a table, got {type(value).__name__}")
    return dict(value)


def _events(value: Any) -> tuple[str, ...]:
    events = [value] if isinstance(value, str) else value
    _check(
        isinstance(events, list) and all(e in EVENT_NAMES for e in events),
        f"event must be one of {', '.join(EVENT_NAMES)} (or a list of them), not {value!r}",
    )
    return tuple(events)


def _integer(name: str) -> Any:
    def check(value: Any) -> int:
        _check(not isinstance(value, bool) and isinstance(value, int), f"{name} must be an integer")
        return int(value)

    return check


def _count(value: Any) -> int:
    _check(
        not isinstance(value, bool) and isinstance(value, int) and 1 <= value <= 256,
        "count must be an integer from 1 to 256",
    )
    return int(value)


def _string_list(what: str) -> Any:
    def check(value: Any) -> tuple[str, ...]:
        _check(isinstance(value, list) and all(isinstance(r, str) for r in value), what)
        return tuple(value)

    return check


CONSOLE_SCHEMA: Mapping[str, Option] = {
    "prefix": Option(None, list, "The program a command name is appended to.", validate=_prefix),
    "timeout": Option(3600.0, float, "Seconds a command may run.", validate=_seconds),
    "env": Option({}, dict, "Extra environment variables.", validate=_strings_table),
    "inherit_env": Option(True, bool, "Inherit the worker's environment.", validate=_boolean("inherit_env")),
    "cwd": Option(None, str, "Working directory of commands.", validate=_string("cwd", "a string")),
    "callable": Option(
        DEFAULT_CALLABLE,
        str,
        "The in-process entry point.",
        validate=_callable("callable must be 'module:attribute'"),
    ),
}
SIGNING_SCHEMA: Mapping[str, Option] = {
    "keys": Option({}, dict, "Key id -> key, or file:PATH.", validate=_table),
    "sign_with": Option(None, str, "The key id producers sign with."),
    "max_age": Option(86400.0, float, "Seconds a signature stays valid.", validate=_seconds),
    "require": Option(
        None,
        list,
        "Handlers whose queues need signatures.",
        validate=_string_list("require must be a list of consumer names"),
    ),
}
LISTENER_SCHEMA: Mapping[str, Option] = {
    "event": Option((), list, "Event names.", validate=_events),
    "handler": Option(
        None, str, "module:callable.", required=True, validate=_callable("handler must be 'module:callable'")
    ),
    "queue": Option(None, str, "Only events of this queue.", validate=_string("queue", "a string")),
    "priority": Option(0, int, "Higher runs first.", validate=_integer("priority")),
    "options": Option({}, dict, "Keyword arguments of a class.", validate=_table),
}
WORKER_SCHEMA: Mapping[str, Option] = {
    "queue": Option(
        None,
        str,
        "The queue consumed (default: the worker's name).",
        validate=_string("queue", "a queue name"),
    ),
    "count": Option(1, int, "How many processes.", validate=_count),
    "options": Option({}, dict, "kq consume options.", validate=_table),
    "env": Option({}, dict, "Extra environment variables.", validate=_strings_table),
    "log": Option(None, str, "Where the output goes.", validate=_string("log", "a file path")),
}


def parse_console(table: Mapping[str, Any], source: str | None, root: str | None) -> ConsoleSettings:
    """``[console]`` (``cwd`` made relative to ``root``, the directory of the file)."""
    values = resolve_options(CONSOLE_SCHEMA, table, prefix="console", source=source, noun="key")
    cwd = values["cwd"]
    if cwd is not None and root is not None:
        cwd = str(Path(root) / Path(cwd).expanduser())  # absolute paths stay as they are
    return ConsoleSettings(**{**values, "cwd": cwd})


def parse_signing(
    table: Mapping[str, Any], source: str | None, env_names: frozenset[str] = frozenset()
) -> SigningSettings:
    """``[signing]``; ``env_names`` are the variables it read before expansion."""
    values = resolve_options(SIGNING_SCHEMA, table, prefix="signing", source=source, noun="key")
    keys = values["keys"]
    for key_id, value in keys.items():
        if not isinstance(value, str) or not value:
            raise ConfigError("a key is a string (or file:PATH)", key=f"signing.keys.{key_id}", source=source)
    sign_with = values["sign_with"]
    if sign_with is None and len(keys) == 1:
        sign_with = next(iter(keys))
    if keys and sign_with not in keys:
        raise ConfigError(
            f"must name one of the keys ({', '.join(keys)})", key="signing.sign_with", source=source
        )
    return SigningSettings(
        keys=keys,
        sign_with=sign_with,
        max_age=values["max_age"],
        require=values["require"],
        env_names=env_names,
    )


def parse_listeners(entries: Any, source: str | None) -> tuple[ListenerSpec, ...]:
    """``[[listeners]]``."""
    if not isinstance(entries, list):
        raise ConfigError(
            "listeners must be an array of tables ([[listeners]])", key="listeners", source=source
        )
    listeners = []
    for index, raw in enumerate(entries):
        key = f"listeners[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"expected a table, got {type(raw).__name__}", key=key, source=source)
        values = resolve_options(LISTENER_SCHEMA, raw, prefix=key, source=source, noun="key")
        events = values.pop("event")
        listeners.append(ListenerSpec(events=tuple(events), **values))
    return tuple(listeners)


def parse_worker(name: str, table: Mapping[str, Any], source: str | None) -> WorkerSpec:
    """``[workers.<name>]``, its ``options`` checked against the declared ``kq consume`` options."""
    key = f"workers.{name}"
    values = resolve_options(WORKER_SCHEMA, table, prefix=key, source=source, noun="key")
    if not _WORKER_NAME.match(name):
        raise ConfigError(
            "a worker name is letters, digits, '_', '.' and '-' (it becomes the process label)",
            key=key,
            source=source,
        )
    queue = values["queue"] if "queue" in table else name
    if not queue:
        raise ConfigError("queue must be a queue name", key=f"{key}.queue", source=source)
    options = check_worker_options(values["options"], prefix=f"{key}.options", source=source)
    return WorkerSpec(
        name=name, queue=queue, count=values["count"], options=options, env=values["env"], log=values["log"]
    )


def withhold_signing(
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
