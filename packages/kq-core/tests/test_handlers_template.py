"""The execution-type template: the shared envelope helpers, generic publishing, lazy loading."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from kq.core import App, CommandCall, MessageFormatError, parse_config
from kq.core.driver import DriverSpec
from kq.core.handlers import (
    ConsoleCommandProducer,
    GenericMessageProducer,
    HttpProducer,
    MessageProducer,
    ServiceProducer,
    check_list,
    json_kind,
    parse_object,
)
from kq.drivers.memory import MemoryDriver


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (None, "the thing message must be a JSON object, not null"),
        ([1], "the thing message must be a JSON object, not list"),
        ("x", "the thing message must be a JSON object, not str"),
        ({"a": 1, "zz": 2, "b": 3}, "unknown keys in thing message: b, zz"),
    ],
)
def test_parse_object_refuses_what_is_not_an_object_of_known_keys(body: Any, error: str) -> None:
    with pytest.raises(MessageFormatError) as info:
        parse_object(body, "thing", ("a", "c"))
    assert str(info.value) == error


def test_parse_object_returns_the_object_and_requires_nothing() -> None:
    body = {"a": 1}
    assert parse_object(body, "thing", ("a", "c")) is body
    assert parse_object({}, "thing", ("a",)) == {}


def test_check_list_accepts_lists_only() -> None:
    assert check_list([1, "a"]) == (1, "a")
    assert check_list(x for x in (1, 2)) == (1, 2)
    for value in ("ab", b"ab", {"a": 1}, 3, None):
        with pytest.raises(MessageFormatError, match=rf"'arguments' must be a list, not {json_kind(value)}"):
            check_list(value)
    with pytest.raises(MessageFormatError, match="'params' must be a list, not int"):
        check_list(1, "'params'")


@pytest.fixture
def driver() -> Iterator[MemoryDriver]:
    driver = MemoryDriver(DriverSpec(name="m", type="memory"))
    yield driver
    driver.close()


def _bodies(driver: MemoryDriver, count: int) -> list[tuple[dict[str, Any], str]]:
    consumer = driver.consumer("jobs")
    out = []
    for _ in range(count):
        delivery = consumer.receive(1.0)
        assert delivery is not None
        out.append((json.loads(delivery.body), delivery.routing_key))
        consumer.ack(delivery)
    consumer.close()
    return out


def test_publish_batch_takes_mappings_by_name_and_other_items_as_the_first_argument(
    driver: MemoryDriver,
) -> None:
    producer = ConsoleCommandProducer(driver, "jobs")
    sent = producer.publish_batch(
        [
            {"command": "a:b", "arguments": None, "options": None},  # None takes the default
            CommandCall("c", ("x",)),
            {"command": "d", "routing_key": "own.key"},  # an item's settings win
        ],
        ttl=30,
    )
    assert [m.routing_key for m in sent] == ["a.b", "c", "own.key"]
    assert [body for body, _ in _bodies(driver, 3)] == [
        {"command": "a:b", "arguments": [], "options": {}},
        {"command": "c", "arguments": ["x"], "options": {}},
        {"command": "d", "arguments": [], "options": {}},
    ]
    assert {m.ttl for m in sent} == {30}


def test_a_batch_with_one_refused_item_sends_nothing(driver: MemoryDriver) -> None:
    producer = ServiceProducer(driver, "jobs")
    with pytest.raises(MessageFormatError):
        producer.publish_batch([{"service": "pkg", "method": "run"}, {"service": "pkg", "method": "_x"}])
    with pytest.raises(TypeError, match="argument"):
        producer.publish_batch([{"service": "pkg", "method": "run", "argument": [1]}])  # a typo
    assert driver.queue_manager().info("jobs")["messages"] == 0


def test_every_typed_producer_publishes_through_its_build(driver: MemoryDriver) -> None:
    GenericMessageProducer(driver, "jobs").publish('{"raw": true}', routing_key="r")
    ServiceProducer(driver, "jobs").publish("pkg.mod", "run", [1], {"k": "v"})
    HttpProducer(driver, "jobs").publish("http://h.example/x", {"method": "POST"})
    assert _bodies(driver, 3) == [
        ({"raw": True}, "r"),
        ({"service": "pkg.mod", "method": "run", "arguments": [1], "kwargs": {"k": "v"}}, "pkg.mod.run"),
        ({"url": "http://h.example/x", "options": {"method": "POST"}}, "http...h.example.x"),
    ]


def test_a_producer_without_build_says_so(driver: MemoryDriver) -> None:
    with pytest.raises(NotImplementedError, match="MessageProducer does not implement build"):
        MessageProducer(driver, "jobs").publish("x")


def test_the_app_shortcuts_are_producer_of() -> None:
    config = parse_config({"drivers": {"mem": {"type": "memory"}}, "default_driver": "mem"})
    with App(config) as app:
        for shortcut, kind in [
            (app.command_producer, ConsoleCommandProducer),
            (app.service_producer, ServiceProducer),
            (app.http_producer, HttpProducer),
        ]:
            producer = shortcut("jobs")
            assert type(producer) is kind
            assert type(app.producer_of(kind, "jobs")) is kind
            assert (producer.queue, producer.signer) == ("jobs", app.signer)


LOADED = """
import json, sys
import {module}
print(json.dumps(sorted(m for m in sys.modules if m == "requests" or m.startswith("kq.core.handlers"))))
"""


@pytest.mark.parametrize("module", ["kq.core", "kq.core._app", "kq.core.handlers"])
def test_importing_the_app_loads_no_execution_type(module: str) -> None:
    """The types are imported when a queue's handler or a producer needs them: a producer of console
    commands does not pay for the HTTP type, nor for requests."""
    done = subprocess.run(
        [sys.executable, "-c", LOADED.format(module=module)], capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(done.stdout))
    assert not loaded & {"requests", "kq.core.handlers._http", "kq.core.handlers._service"}, loaded
    assert not loaded & {"kq.core.handlers._console", "kq.core.handlers._inprocess"}, loaded


def test_a_handler_entry_point_loads_its_own_type_only() -> None:
    code = (
        "import json, sys\n"
        "from kq.core.plugins import load_plugin\n"
        "load_plugin('kq.handlers', 'service')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('kq.core.handlers.'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    assert "kq.core.handlers._service" in loaded
    assert not loaded & {"kq.core.handlers._http", "kq.core.handlers._console"}, loaded
