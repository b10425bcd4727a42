"""Reading the top level of ``kq.toml``, ``[drivers.<name>]`` and ``[queues.<name>]``.

Described by schemas of :class:`~kq.core._options.Option`, as driver options are. The keys kq reads are
checked here; the rest of a driver or queue table belongs to the driver, which checks it (with its
own "did you mean") when it is built, so a key left to the driver that is a near miss of one kq reads
(``consumerr``) is taken for a typo of it at load.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from kq.core._errors import ConfigError
from kq.core._numbers import MAX_SECONDS, check_number, check_whole_number
from kq.core._options import Option, closest, resolve_options, unknown_key_error
from kq.core._retry import RetryPolicy, check_retry_field
from kq.core._spec import DriverSpec, QueueSpec

_CALLABLE_NAME = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*\Z")
#: A handler name as an entry point gives it (checked against the installed ones when first used).
_PLUGIN_NAME = re.compile(r"[A-Za-z_][\w.-]*\Z")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _table(value: Any) -> Any:
    _check(isinstance(value, dict), f"expected a table, got {type(value).__name__}")
    return value


def _listeners(value: Any) -> Any:
    _check(isinstance(value, list), "listeners must be an array of tables ([[listeners]])")
    return value


def _consumer(value: Any) -> str:
    _check(
        isinstance(value, str) and bool(_PLUGIN_NAME.match(value) or _CALLABLE_NAME.match(value)),
        "consumer must be the name of a handler (a kq.handlers entry point, such as console_command) "
        f"or 'module:attribute', not {value!r}",
    )
    return str(value)


def _routing_keys(value: Any) -> tuple[str, ...]:
    keys = [value] if isinstance(value, str) else value
    _check(
        isinstance(keys, list) and all(isinstance(k, str) for k in keys),
        "routing_keys must be a list of strings",
    )
    return tuple(keys)


def _dead_letter_queue(value: Any) -> str:
    _check(isinstance(value, str) and bool(value), "dead_letter_queue must be a queue name")
    return str(value)


def _require_signature(value: Any) -> bool:
    _check(isinstance(value, bool), "require_signature must be true or false")
    return bool(value)


def _max_deliveries(value: Any) -> int:
    try:
        return check_whole_number(value)
    except ValueError as exc:
        raise ValueError(f"{exc} (0: no limit)") from None


def _handler_timeout(value: Any) -> float:
    return check_number(value, minimum=0.0, maximum=MAX_SECONDS, exclusive_minimum=True, duration=True)


#: The top level of the file.
TOP_LEVEL_SCHEMA: Mapping[str, Option] = {
    "default_driver": Option(None, str, "The driver instance used when none is named."),
    "drivers": Option({}, dict, "Driver instances by name.", validate=_table),
    "queues": Option({}, dict, "Logical queues by name.", validate=_table),
    "console": Option({}, dict, "How console commands run.", validate=_table),
    "allow": Option({}, dict, "What handlers may execute.", validate=_table),
    "listeners": Option([], list, "Event listeners.", validate=_listeners),
    "workers": Option({}, dict, "Processes a watchdog keeps running.", validate=_table),
    "signing": Option({}, dict, "Message signatures.", validate=_table),
}
#: The keys of ``[queues.<name>]`` kq itself reads; the others are the driver's ``queue_options``.
QUEUE_SCHEMA: Mapping[str, Option] = {
    "driver": Option(None, str, "The driver instance holding the queue."),
    "consumer": Option("console_command", str, "The handler of its messages.", validate=_consumer),
    "routing_keys": Option((), list, "Routing keys bound to the queue.", validate=_routing_keys),
    "dead_letter_queue": Option(None, str, "Where failed messages go.", validate=_dead_letter_queue),
    "require_signature": Option(None, bool, "Accept only signed messages.", validate=_require_signature),
    "retry": Option({}, dict, "The retry policy.", validate=_table),
    "max_deliveries": Option(10, int, "Deliveries before a message is poison.", validate=_max_deliveries),
    "handler_timeout": Option(
        None, float, "Seconds one handler call may run in the worker.", validate=_handler_timeout
    ),
}
#: The keys of ``[drivers.<name>]`` kq itself reads; the others are the driver's ``driver_options``.
DRIVER_KEYS = ("type",)
_RETRY_FIELDS = ("max_attempts", "delay", "multiplier", "max_delay", "jitter")


def parse_driver(name: str, raw: Any, source: str | None, root: str | None) -> DriverSpec:
    """``[drivers.<name>]``: its ``type``; the other keys are the driver's options (checked later)."""
    key = f"drivers.{name}"
    table = as_table(raw, key, source)
    driver_type = table.get("type")
    if not isinstance(driver_type, str) or not driver_type:
        raise ConfigError(
            "every driver needs a 'type' (for example \"sqlite\")", key=f"{key}.type", source=source
        )
    options = {k: v for k, v in table.items() if k not in DRIVER_KEYS}
    _near_misses(options, DRIVER_KEYS, key, source)
    return DriverSpec(name=name, type=driver_type, options=options, source=source, root=root)


def _near_misses(options: Mapping[str, Any], known: Any, prefix: str, source: str | None) -> None:
    """A key left to the driver that is a near miss of one kq reads is taken for a typo of it (the
    driver's own options are checked, with their own "did you mean", when the driver is built)."""
    for name in options:
        suggestion = closest(name, known)
        if suggestion is not None:
            raise ConfigError(
                f"unknown key '{name}'; did you mean '{suggestion}'? (kq reads {', '.join(sorted(known))}; "
                "the other keys are the driver's options)",
                key=f"{prefix}.{name}",
                source=source,
            )


def parse_queue(
    name: str,
    table: Mapping[str, Any],
    drivers: Mapping[str, DriverSpec],
    default_driver: str,
    source: str | None,
) -> QueueSpec:
    """``[queues.<name>]``: the keys kq reads; the others are the driver's queue options."""
    key = f"queues.{name}"
    core = {k: v for k, v in table.items() if k in QUEUE_SCHEMA}
    options = {k: v for k, v in table.items() if k not in QUEUE_SCHEMA}
    _near_misses(options, QUEUE_SCHEMA, key, source)
    driver = table.get("driver", default_driver)
    if not isinstance(driver, str) or driver not in drivers:
        raise ConfigError(
            f"'{driver}' is not a configured driver (configured: {', '.join(sorted(drivers))})",
            key=f"{key}.driver",
            source=source,
        )
    values = resolve_options(QUEUE_SCHEMA, core, prefix=key, source=source, noun="key")
    return QueueSpec(
        retry=_parse_retry(values["retry"], f"{key}.retry", source),
        max_deliveries=values["max_deliveries"],
        name=name,
        driver=driver,
        consumer=values["consumer"],
        routing_keys=tuple(values["routing_keys"]),
        options=options,
        dead_letter_queue=values["dead_letter_queue"] or "",
        require_signature=values["require_signature"],
        handler_timeout=values["handler_timeout"],
        source=source,
    )


def _parse_retry(table: Mapping[str, Any], key: str, source: str | None) -> RetryPolicy:
    for name in table:
        if name not in _RETRY_FIELDS:
            raise unknown_key_error(name, _RETRY_FIELDS, prefix=key, source=source)
    values: dict[str, Any] = {}
    for name in _RETRY_FIELDS:
        if name in table:
            try:
                values[name] = check_retry_field(name, table[name])
            except ValueError as exc:
                raise ConfigError(str(exc), key=f"{key}.{name}", source=source) from None
    try:
        return RetryPolicy(**values)
    except ValueError as exc:
        raise ConfigError(str(exc), key=key, source=source) from None


def as_table(value: Any, key: str, source: str | None) -> Mapping[str, Any]:
    """``value`` if it is a table, else a ConfigError naming ``key``."""
    if not isinstance(value, dict):
        raise ConfigError(f"expected a table, got {type(value).__name__}", key=key, source=source)
    return value
