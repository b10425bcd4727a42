"""Service calls: message shape, the allow-list checked before any import, results and failures."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kq.core import (
    AllowMap,
    ConsumeLoop,
    Delivery,
    ExecutionFailedError,
    Limits,
    Message,
    MessageFormatError,
    NotAllowedError,
    ServiceHandler,
    ServiceProducer,
    make_service_call,
    parse_service_call,
)
from kq.core.driver import DriverSpec
from kq.core.listeners import Accumulator
from kq.drivers.memory import MemoryDriver

SERVICE_MODULE = """
import os, pathlib
pathlib.Path(os.environ["KQTEST_SVC_MARKER"]).write_text("imported")
calls = []

def greet(name, punctuation="!"):
    calls.append(name)
    return {"greeting": f"Hello {name}{punctuation}"}

def boom():
    raise RuntimeError("service exploded")

class _Mailer:
    def send(self, to, subject=""):
        return f"sent {subject!r} to {to}"

mailer = _Mailer()
not_callable = 42
"""


@pytest.fixture
def svc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A module ``kqtest_svc`` on sys.path that writes the returned marker file when it is imported."""
    marker = tmp_path / "imported.marker"
    (tmp_path / "kqtest_svc.py").write_text(SERVICE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("KQTEST_SVC_MARKER", str(marker))
    sys.modules.pop("kqtest_svc", None)
    MemoryDriver.reset()
    yield marker
    sys.modules.pop("kqtest_svc", None)
    MemoryDriver.reset()


def _delivery(body: Any) -> Delivery:
    return Delivery(
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers={},
        routing_key="",
        message_id="m1",
        queue="jobs",
    )


def _consume(allowed: dict[str, list[str]], body: Any) -> Any:
    consumer = ServiceHandler(AllowMap(allowed))
    return consumer.consume(body, _delivery(body))


@pytest.mark.parametrize(
    ("service", "method", "message"),
    [
        ("_private", "run", "must be 'module' or 'module:attribute'"),
        ("pkg._hidden", "run", "must be 'module' or 'module:attribute'"),
        ("pkg:_obj", "run", "must be 'module' or 'module:attribute'"),
        ("pkg:obj.__class__", "run", "must be 'module' or 'module:attribute'"),
        ("pkg..mod", "run", "must be 'module' or 'module:attribute'"),
        ("pkg:", "run", "must be 'module' or 'module:attribute'"),
        ("1pkg", "run", "must be 'module' or 'module:attribute'"),
        ("os; rm -rf /", "run", "must be 'module' or 'module:attribute'"),
        ("pkg", "__init__", "must be a name not starting with _"),
        ("pkg", "_helper", "must be a name not starting with _"),
        ("pkg", "a-b", "must be a name not starting with _"),
        ("pkg", "", "must be a name not starting with _"),
        ("pkg", "x" * 129, "must be a name not starting with _"),
    ],
)
def test_bad_names_are_refused(service: str, method: str, message: str) -> None:
    with pytest.raises(MessageFormatError, match=message):
        make_service_call(service, method)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "must be a JSON object, not list"),
        ("pkg.run", "must be a JSON object, not str"),
        ({"service": "pkg", "method": "run", "extra": 1}, "unknown keys in service-call message: extra"),
        ({"method": "run"}, "service 'None' must be"),
        ({"service": "pkg"}, "method 'None' must be"),
        ({"service": "pkg", "method": "run", "arguments": "abc"}, "'arguments' must be a list, not str"),
        ({"service": "pkg", "method": "run", "arguments": {"a": 1}}, "'arguments' must be a list, not dict"),
        ({"service": "pkg", "method": "run", "arguments": 5}, "'arguments' must be a list, not int"),
        ({"service": "pkg", "method": "run", "kwargs": [1]}, "'kwargs' must be an object"),
        ({"service": "pkg", "method": "run", "kwargs": {"not ok": 1}}, "keys are Python identifiers"),
    ],
)
def test_malformed_bodies_say_what_is_wrong(body: Any, message: str) -> None:
    with pytest.raises(MessageFormatError, match=re.escape(message)):
        parse_service_call(body)


def test_body_and_default_routing_key() -> None:
    call = make_service_call("myapp.services:mailer", "send", ["ops"], {"subject": "hi"})
    assert call.to_body() == {
        "service": "myapp.services:mailer",
        "method": "send",
        "arguments": ["ops"],
        "kwargs": {"subject": "hi"},
    }
    assert call.routing_key == "myapp.services.mailer.send"
    assert "kwargs" not in make_service_call("m", "f").to_body()  # the PHP shape when there are none
    assert parse_service_call({"service": "m", "method": "f", "arguments": None}).arguments == ()


def test_producer_builds_json_with_the_default_or_given_routing_key() -> None:
    driver = MemoryDriver(DriverSpec(name="m", type="memory"))
    message = ServiceProducer(driver, "jobs").publish("pkg.tasks", "build", [2026], {"fmt": "pdf"})
    assert json.loads(message.body) == {
        "service": "pkg.tasks",
        "method": "build",
        "arguments": [2026],
        "kwargs": {"fmt": "pdf"},
    }
    assert (message.content_type, message.routing_key) == ("application/json", "pkg.tasks.build")
    other = ServiceProducer(driver, "jobs").build("pkg", "run", routing_key="custom.key")
    assert other.routing_key == "custom.key"
    assert driver.queue_manager().info("jobs")["messages"] == 1
    with pytest.raises(MessageFormatError):
        ServiceProducer(driver, "jobs").publish("_evil", "run")


@pytest.mark.parametrize(
    ("allowed", "message"),
    [
        ({}, "service 'kqtest_svc' is not in the allow-list"),
        ({"other.module": ["greet"]}, "service 'kqtest_svc' is not in the allow-list"),
        ({"kqtest_svc": ["boom"]}, "method 'greet' of 'kqtest_svc' is not in the allow-list"),
        ({"re:kqtest_.*": ["re:gr"]}, "method 'greet' of 'kqtest_svc'"),  # anchored: 'gr' != 'greet'
        ({"re:kqtest": ["greet"]}, "service 'kqtest_svc' is not in the allow-list"),
    ],
)
def test_refused_before_anything_is_imported(svc: Path, allowed: dict[str, list[str]], message: str) -> None:
    with pytest.raises(NotAllowedError, match=message):
        _consume(allowed, {"service": "kqtest_svc", "method": "greet", "arguments": ["x"]})
    assert not svc.exists(), "the module was imported although the call was refused"
    assert "kqtest_svc" not in sys.modules


def test_underscore_names_are_refused_even_by_an_allow_everything_list(svc: Path) -> None:
    for body in (
        {"service": "kqtest_svc", "method": "__init__"},
        {"service": "kqtest_svc:_Mailer", "method": "send"},
        {"service": "kqtest_svc:mailer.__class__", "method": "mro"},
    ):
        with pytest.raises(MessageFormatError, match="_"):
            _consume({"re:.*": ["re:.*"]}, body)
    assert not svc.exists()


def test_allowed_call_gets_arguments_and_kwargs_and_returns_the_result(svc: Path) -> None:
    body = {"service": "kqtest_svc", "method": "greet", "arguments": ["Ada"], "kwargs": {"punctuation": "?"}}
    assert _consume({"kqtest_svc": ["greet"]}, body) == {"greeting": "Hello Ada?"}
    assert svc.read_text() == "imported"
    assert sys.modules["kqtest_svc"].calls == ["Ada"]


def test_object_attribute_path_and_re_patterns(svc: Path) -> None:
    body = {"service": "kqtest_svc:mailer", "method": "send", "arguments": ["o"], "kwargs": {"subject": "s"}}
    assert _consume({"re:kqtest_svc(:.*)?": ["re:s(end|ync)"]}, body) == "sent 's' to o"


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ({"service": "kqtest_svc", "method": "missing"}, MessageFormatError, "has no attribute 'missing'"),
        ({"service": "kqtest_svc", "method": "not_callable"}, MessageFormatError, "is not callable"),
        ({"service": "kqtest_nope", "method": "f"}, ExecutionFailedError, "cannot import 'kqtest_nope'"),
        ({"service": "kqtest_svc", "method": "boom"}, RuntimeError, "service exploded"),
        ({"service": "kqtest_svc", "method": "greet", "arguments": [1, 2, 3]}, TypeError, "argument"),
    ],
)
def test_resolution_and_call_errors(svc: Path, body: dict[str, Any], error: type, message: str) -> None:
    allowed = {"kqtest_svc": ["missing", "not_callable", "boom", "greet"], "kqtest_nope": ["f"]}
    with pytest.raises(error, match=message):
        _consume(allowed, body)


def test_consume_loop_reports_results_and_classifies_failures(svc: Path) -> None:
    driver = MemoryDriver(DriverSpec(name="m", type="memory"))
    bodies: list[Any] = [
        {"service": "kqtest_svc", "method": "greet", "arguments": ["Bob"]},
        {"service": "kqtest_svc", "method": "boom"},
        {"service": "forbidden", "method": "run"},
        {"service": "kqtest_svc", "method": "_hidden"},
    ]
    driver.producer("jobs").send_batch([Message(json.dumps(b).encode()) for b in bodies])
    loop = ConsumeLoop(
        driver,
        "jobs",
        ServiceHandler(AllowMap({"kqtest_svc": ["greet", "boom"]})),
        limits=Limits(messages=4),
        poll_interval=0.05,
    )
    accumulator = Accumulator()
    for event in Accumulator.events:
        loop.dispatcher.add_listener(event, accumulator)
    loop.run()
    assert accumulator.results == [{"greeting": "Hello Bob!"}]
    assert [(f.reason, f.outcome) for f in accumulator.failures] == [
        ("failed", "dead-lettered"),
        ("not-allowed", "dead-lettered"),
        ("invalid", "dead-lettered"),
    ]
    with driver.consumer("jobs.failed") as consumer:
        reasons = []
        while (delivery := consumer.receive(0)) is not None:
            headers = delivery.headers
            reasons.append((headers["kq-dead-letter-reason"], headers["kq-dead-letter-error"]))
            consumer.ack(delivery)
    assert reasons[0] == ("failed", "RuntimeError: service exploded")
    assert reasons[1][0] == "not-allowed"
    assert "'forbidden'" in reasons[1][1]
    assert reasons[2][0] == "invalid"
    assert ServiceHandler(AllowMap()).describe(bodies[0]) == "service kqtest_svc.greet"
