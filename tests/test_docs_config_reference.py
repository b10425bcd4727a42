"""docs/reference/configuration.md lists every key the configuration loader accepts, and no other.

The keys the loader accepts are read from the schemas it checks (kq-core's sections, the ``kq consume``
options a worker may set, the ``[allow]`` sections of the workspace's handlers) and from the options
each of the workspace's drivers declares; the page's keys are the first cells of its tables. A driver's
keys are those of the table under its heading (``{#driver-<type>}``). Run by ``nox -s docs``, where the
workspace is installed; skipped where kq-core is not (``nox -s lint`` collects tests/ without it).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import json
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
_missing = []
for _pyproject in sorted(ROOT.glob("packages/*/pyproject.toml")):
    try:
        importlib.metadata.distribution(_pyproject.parent.name)
    except importlib.metadata.PackageNotFoundError:
        _missing.append(_pyproject.parent.name)
if _missing:
    pytest.skip(
        f"needs the workspace installed (nox -s docs); missing: {', '.join(_missing)}",
        allow_module_level=True,
    )

from kq.core import ConfigError, parse_config  # noqa: E402
from kq.core._allow import _CORE_SECTIONS  # noqa: E402
from kq.core._config import DEFAULT_DRIVER_NAME  # noqa: E402
from kq.core._config_sections import CONSOLE_SCHEMA, LISTENER_SCHEMA, SIGNING_SCHEMA, WORKER_SCHEMA  # noqa: E402
from kq.core._config_tables import _RETRY_FIELDS, DRIVER_KEYS, QUEUE_SCHEMA, TOP_LEVEL_SCHEMA  # noqa: E402
from kq.core._consume_options import WORKER_OPTIONS  # noqa: E402
from kq.core._retry import RetryPolicy  # noqa: E402
from kq.core.watchdog._watchdog import DEFAULT_LOG  # noqa: E402

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

PAGE = ROOT / "docs" / "reference" / "configuration.md"
_HEADING = re.compile(r"^#{2,6} .*?(?:\{#driver-(?P<driver>[\w.-]+)\})?\s*$")
_ROW_KEY = re.compile(r"^\|\s*`(?P<key>[^`]+)`\s*\|")
CORE = ""
#: A valid value of each type of ``kq consume`` option.
_SAMPLES: dict[type, Any] = {int: 3, float: 1.5, str: "local", bool: True}


def documented_keys() -> dict[str, set[str]]:
    """The keys in the first column of the page's tables: kq-core's under ``""``, each driver's under
    its type (the tables below a ``{#driver-<type>}`` heading, up to the next heading)."""
    keys: dict[str, set[str]] = {CORE: set()}
    section = CORE
    fenced = False
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced:
            continue
        heading = _HEADING.match(line)
        if heading:
            section = heading.group("driver") or CORE
            keys.setdefault(section, set())
            continue
        row = _ROW_KEY.match(line)
        if row and row.group("key") != "Key":
            keys[section].add(row.group("key"))
    return keys


def _entry_points(group: str) -> Iterator[tuple[str, str]]:
    """The workspace's own entry points of ``group`` (name, ``module:attribute``), from packages/*."""
    for pyproject in sorted(ROOT.glob("packages/*/pyproject.toml")):
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        yield from data.get("project", {}).get("entry-points", {}).get(group, {}).items()


def _load(value: str) -> Any:
    module, _, attribute = value.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _prefixed(prefix: str, names: Any) -> set[str]:
    return {f"{prefix}{name}" for name in names}


def core_keys() -> set[str]:
    """Every key kq-core's loader reads itself (the driver options are the drivers')."""
    allow_sections = set(_CORE_SECTIONS)
    for _, value in _entry_points("kq.handlers"):
        section = getattr(_load(value), "allow_section", None)
        if section:
            allow_sections.add(section)
    return (
        set(TOP_LEVEL_SCHEMA)
        | _prefixed("drivers.<name>.", DRIVER_KEYS)
        | _prefixed("queues.<name>.", QUEUE_SCHEMA)
        | _prefixed("queues.<name>.retry.", _RETRY_FIELDS)
        | _prefixed("console.", CONSOLE_SCHEMA)
        | _prefixed("allow.", allow_sections)
        | _prefixed("signing.", SIGNING_SCHEMA)
        | _prefixed("listeners[].", LISTENER_SCHEMA)
        | _prefixed("workers.<name>.", WORKER_SCHEMA)
        | _prefixed("workers.<name>.options.", WORKER_OPTIONS)
    )


def driver_keys() -> dict[str, set[str]]:
    """Each workspace driver's ``[drivers.<name>]`` options and driver-specific ``[queues.<name>]`` keys."""
    found = {}
    for name, value in _entry_points("kq.drivers"):
        driver: Any = _load(value)
        found[name] = _prefixed("drivers.<name>.", driver.driver_options) | _prefixed(
            "queues.<name>.", driver.queue_options
        )
    return found


def documented_defaults() -> dict[str, dict[str, str]]:
    """The Default cell of each row, by section (as :func:`documented_keys`) and key."""
    cells: dict[str, dict[str, str]] = {CORE: {}}
    section, column = CORE, None
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        heading = _HEADING.match(line)
        if heading:
            section = heading.group("driver") or CORE
            cells.setdefault(section, {})
            continue
        if not line.startswith("|"):
            continue
        row = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if row[0] == "Key":
            column = row.index("Default") if "Default" in row else None
        elif row[0].startswith("`") and column is not None:
            cells[section][row[0].strip("`")] = row[column]
    return cells


def _cell(value: Any, required: bool = False) -> str:
    """A default as the page writes it: TOML in a code span, or (none) / (required)."""
    if value is None:
        return "(required)" if required else "(none)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, (list, tuple)):
        return f"`[{', '.join(json.dumps(item) for item in value)}]`"
    if isinstance(value, dict):
        assert not value, "only empty tables are defaults today: teach _cell to write others"
        return "`{}`"
    return f"`{value!r}`"


def expected_defaults() -> dict[str, dict[str, str]]:
    """What each key's Default cell must say: the schemas' defaults, or where kq applies another one
    (a missing ``default_driver`` is the ``default`` instance; a worker's log has a path pattern)."""
    core: dict[str, str] = {"drivers.<name>.type": "(required)"}
    for prefix, schema in (
        ("", TOP_LEVEL_SCHEMA),
        ("queues.<name>.", QUEUE_SCHEMA),
        ("console.", CONSOLE_SCHEMA),
        ("signing.", SIGNING_SCHEMA),
        ("listeners[].", LISTENER_SCHEMA),
        ("workers.<name>.", WORKER_SCHEMA),
    ):
        core.update(
            {prefix + name: _cell(option.default, option.required) for name, option in schema.items()}
        )
    core.update({f"queues.<name>.retry.{f.name}": _cell(f.default) for f in dataclasses.fields(RetryPolicy)})
    core.update(
        {f"workers.<name>.options.{name}": _cell(option.default) for name, option in WORKER_OPTIONS.items()}
    )
    core["default_driver"] = _cell(DEFAULT_DRIVER_NAME)
    core["workers.<name>.log"] = _cell(DEFAULT_LOG)
    found = {CORE: core}
    for name, value in _entry_points("kq.drivers"):
        driver: Any = _load(value)
        found[name] = {
            f"drivers.<name>.{key}": _cell(o.default, o.required) for key, o in driver.driver_options.items()
        }
        found[name].update(
            {f"queues.<name>.{key}": _cell(o.default, o.required) for key, o in driver.queue_options.items()}
        )
    return found


def _difference(accepted: set[str], documented: set[str]) -> str:
    return (
        f"accepted by the loader but not on {PAGE.name}: {sorted(accepted - documented)}; "
        f"on the page but unknown to the loader: {sorted(documented - accepted)}"
    )


def test_the_page_lists_every_key_of_kq_core_and_no_other() -> None:
    documented = documented_keys()[CORE]
    accepted = core_keys()
    assert documented == accepted, _difference(accepted, documented)


def test_the_page_lists_every_option_of_each_workspace_driver_and_no_other() -> None:
    documented = documented_keys()
    drivers = driver_keys()
    assert {"sqlite", "memory", "rabbitmq", "sqs", "stomp"} <= set(drivers)
    assert set(documented) - {CORE} == set(drivers), "one {#driver-<type>} section per workspace driver"
    for name, accepted in drivers.items():
        assert documented[name] == accepted, f"driver {name}: " + _difference(accepted, documented[name])


def test_the_documented_defaults_are_the_loaders() -> None:
    documented = documented_defaults()
    for section, expected in expected_defaults().items():
        for key, cell in expected.items():
            if key.startswith("allow."):
                continue  # open sections: no schema default
            assert documented[section].get(key) == cell, f"{section or 'kq-core'} {key}: default {cell}"


@pytest.mark.parametrize(
    "data",
    [
        {"unknown": 1},
        {"queues": {"q": {"retry": {"unknown": 1}}}},
        {"console": {"unknown": 1}},
        {"signing": {"unknown": 1}},
        {"listeners": [{"handler": "m:f", "unknown": 1}]},
        {"workers": {"w": {"unknown": 1}}},
        {"workers": {"w": {"options": {"unknown": 1}}}},
        {"workers": {"w": {"options": {"label": "x"}}}},
        {"drivers": {"d": {"tpye": "sqlite"}}},
    ],
    ids=str,
)
def test_the_loader_refuses_keys_outside_the_schemas_read_above(data: Mapping[str, Any]) -> None:
    """The schemas are closed: what they do not name is an error, so they are all the loader accepts
    (the near miss ``tpye`` is refused by the loader; other driver keys by the driver, as checked)."""
    with pytest.raises(ConfigError):
        parse_config(data)


def test_the_documented_kq_core_keys_load() -> None:
    """One configuration setting many of the documented keys at once loads (the names are real)."""
    parse_config(
        {
            "default_driver": "local",
            "drivers": {"local": {"type": "sqlite", "path": "q.sqlite3"}},
            "queues": {
                "q": {
                    "driver": "local",
                    "consumer": "console_command",
                    "routing_keys": ["a.*"],
                    "dead_letter_queue": "q.dead",
                    "require_signature": True,
                    "max_deliveries": 5,
                    "retry": {"max_attempts": 3, "delay": 1, "multiplier": 2, "max_delay": 10, "jitter": 0.1},
                }
            },
            "console": {"prefix": ["python"], "timeout": 5, "env": {}, "inherit_env": True, "cwd": "."},
            "allow": {"commands": ["echoback"], "services": {"m:o": ["f"]}, "urls": [], "xmlrpc": {}},
            "signing": {"keys": {"k1": "secret"}, "sign_with": "k1", "max_age": 60, "require": ["service"]},
            "listeners": [
                {"event": "message_sent", "handler": "m:f", "queue": "q", "priority": 1, "options": {}}
            ],
            "workers": {
                "w": {
                    "queue": "q",
                    "count": 2,
                    "env": {},
                    "log": "w.log",
                    "options": {name: _SAMPLES[option.type] for name, option in WORKER_OPTIONS.items()},
                }
            },
        }
    )
