"""Declared driver and queue options: unknown keys, types, required options and defaults."""

from __future__ import annotations

from typing import Any

import pytest

from kq.core import ConfigError
from kq.core._options import resolve_options
from kq.core.driver import Option

SRC = "/srv/kq.toml"
SCHEMA = {
    "path": Option(".kq/kq.sqlite3", str, "database file"),
    "timeout": Option(30.0, float, "seconds"),
    "retries": Option(3, int, "attempts"),
    "durable": Option(True, bool, "survive restarts"),
    "region": Option(None, str, "AWS region"),
    "port": Option(None, (int, str), "port or service name"),
}


def _resolve(values: dict[str, Any], schema: dict[str, Option] | None = None) -> dict[str, Any]:
    return resolve_options(SCHEMA if schema is None else schema, values, prefix="drivers.local", source=SRC)


def test_defaults_are_filled() -> None:
    assert _resolve({}) == {
        "path": ".kq/kq.sqlite3",
        "timeout": 30.0,
        "retries": 3,
        "durable": True,
        "region": None,
        "port": None,
    }


@pytest.mark.parametrize(
    ("values", "key", "expected"),
    [
        ({"timeout": 5}, "timeout", 5.0),
        ({"timeout": 0.25}, "timeout", 0.25),
        ({"retries": 0}, "retries", 0),
        ({"durable": False}, "durable", False),
        ({"path": "/tmp/q.db"}, "path", "/tmp/q.db"),
        ({"region": None}, "region", None),
        ({"region": "eu-west-1"}, "region", "eu-west-1"),
        ({"port": 5672}, "port", 5672),
        ({"port": "amqp"}, "port", "amqp"),
    ],
)
def test_values(values: dict[str, Any], key: str, expected: Any) -> None:
    resolved = _resolve(values)
    assert resolved[key] == expected
    assert type(resolved[key]) is type(expected)


@pytest.mark.parametrize(
    ("values", "key", "match"),
    [
        ({"timeout": True}, "drivers.local.timeout", "expected float, got a boolean"),
        ({"retries": False}, "drivers.local.retries", "expected int, got a boolean"),
        ({"port": True}, "drivers.local.port", "expected int or str, got a boolean"),
        ({"retries": 2.5}, "drivers.local.retries", "expected int, got float 2.5"),
        ({"timeout": "thirty"}, "drivers.local.timeout", "expected float, got the text 'thirty'"),
        ({"path": 1}, "drivers.local.path", "expected str, got int 1"),
        ({"durable": "maybe"}, "drivers.local.durable", "expected bool, got the text 'maybe'"),
        ({"durable": 1}, "drivers.local.durable", "expected bool, got int 1"),
        ({"path": None}, "drivers.local.path", "expected str, got NoneType None"),
        ({"port": [1]}, "drivers.local.port", r"expected int or str, got list \[1\]"),
    ],
)
def test_wrong_types(values: dict[str, Any], key: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        _resolve(values)
    assert (info.value.key, info.value.source) == (key, SRC)
    assert f"key '{key}' in {SRC}" in str(info.value)


@pytest.mark.parametrize(
    ("schema", "values", "message"),
    [
        (
            SCHEMA,
            {"pth": "x"},
            "unknown option 'pth' (accepted: durable, path, port, region, retries, timeout)",
        ),
        (SCHEMA, {"zz": 1, "aa": 2, "path": "x"}, "unknown option 'aa' (accepted: durable, path,"),
        ({}, {"x": 1}, "unknown option 'x' (accepted: none)"),
    ],
)
def test_unknown_option(schema: dict[str, Option], values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _resolve(values, schema)
    name = message.split("'")[1]
    assert info.value.key == f"drivers.local.{name}"
    assert info.value.source == SRC
    assert message in str(info.value)
    assert f"key 'drivers.local.{name}' in {SRC}" in str(info.value)


def test_required_option() -> None:
    schema = {"url": Option(None, str, "broker URL", required=True), "vhost": Option("/", str, "vhost")}
    with pytest.raises(
        ConfigError, match=r"this option is required \(key 'drivers.local.url' in /srv/kq.toml\)"
    ):
        _resolve({}, schema)
    with pytest.raises(ConfigError, match=r"key 'drivers\.local\.url'"):
        _resolve({"url": None}, schema)
    assert _resolve({"url": "amqp://h"}, schema) == {"url": "amqp://h", "vhost": "/"}


def test_source_may_be_unknown() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_options(SCHEMA, {"bad": 1}, prefix="queues.q", source=None)
    assert str(info.value).endswith("(key 'queues.q.bad')")
    assert info.value.source is None


def test_option_check_directly() -> None:
    option = Option(1.0, float, "x")
    assert option.check("k", 2, None) == 2.0
    assert isinstance(option.check("k", 2, None), float)
    with pytest.raises(ConfigError, match=r"key 'k' in f\.toml"):
        option.check("k", "two", "f.toml")


@pytest.mark.parametrize(
    ("option", "text", "expected"),
    [
        (Option(1.0, float, "x"), "2.5", 2.5),
        (Option(1.0, float, "x"), " 30 ", 30.0),
        (Option(1, int, "x"), "7", 7),
        (Option(True, bool, "x"), "false", False),
        (Option(True, bool, "x"), "YES", True),
        (Option(True, bool, "x"), "0", False),
    ],
)
def test_text_from_environment_variables_is_converted(option: Option, text: str, expected: object) -> None:
    # ${VAR} expansion always yields text: numeric and boolean settings must still be settable from it.
    value = option.check("k", text, "f.toml")
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("value", [0, -5, 0.0, "-1"])
def test_positive_options_reject_zero_and_negatives(value: object) -> None:
    with pytest.raises(ConfigError, match=r"must be a finite number between 0 \(excluded\)"):
        Option(30.0, float, "x", positive=True).check("drivers.d.visibility_timeout", value, "f.toml")
