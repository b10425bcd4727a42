"""integration/docker-compose.yml gives the brokers the harness expects: ports, plugins and options.

Read as a file, so no Docker is needed; what it checks is what the tests rely on when they are pointed at
these containers with the variables of the file's header.
"""

from __future__ import annotations

import inspect
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from integration.brokers.rabbitmq import start_rabbitmq
from integration.policy import unavailable

HERE = Path(__file__).resolve().parent
COMPOSE = HERE / "docker-compose.yml"
_AMQ = "{http://activemq.apache.org/schema/core}"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    try:
        import yaml  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        unavailable("PyYAML is not installed (nox -s integration installs it)")
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services = compose.get("services", {})
    assert name in services, f"{COMPOSE} has no service {name!r} (has {sorted(services)})"
    service: dict[str, Any] = services[name]
    return service


def _published(service: dict[str, Any]) -> dict[int, int]:
    """Host port -> container port, checking that each is published on 127.0.0.1 only."""
    ports = {}
    for entry in service.get("ports", []):
        match = re.fullmatch(r"127\.0\.0\.1:(\d+):(\d+)", str(entry))
        assert match, f"port {entry!r} is not published on 127.0.0.1 only"
        ports[int(match[1])] = int(match[2])
    return ports


def _harness_default(parameter: str) -> int:
    default = inspect.signature(start_rabbitmq).parameters[parameter].default
    assert isinstance(default, int)
    return default


def test_rabbitmq_has_the_harness_ports_management_and_stomp(compose: dict[str, Any]) -> None:
    rabbitmq = _service(compose, "rabbitmq")
    ports = _published(rabbitmq)
    for parameter in ("amqp_port", "management_port", "stomp_port"):
        port = _harness_default(parameter)
        assert ports.get(port) == port, f"RabbitMQ's {parameter} {port} is not published as {port}"
    assert str(rabbitmq["image"]).split(":")[1].endswith("management"), "the management API needs -management"
    command = " ".join(rabbitmq["command"].split())
    assert "rabbitmq-plugins enable --offline" in command
    assert {"rabbitmq_management", "rabbitmq_stomp"} <= set(command.replace("&&", " ").split())
    assert "healthcheck" in rabbitmq


def test_localstack_serves_sqs_on_path_style_urls_without_a_token(compose: dict[str, Any]) -> None:
    localstack = _service(compose, "localstack")
    assert _published(localstack) == {4566: 4566}
    environment = {str(k): str(v) for k, v in localstack["environment"].items()}
    assert "sqs" in environment["SERVICES"].split(",")
    assert environment["SQS_ENDPOINT_STRATEGY"] == "path"
    assert environment["EAGER_SERVICE_LOADING"] == "1"
    assert environment["LOCALSTACK_HOST"] == "127.0.0.1:4566"
    # Every other tag asks for LOCALSTACK_AUTH_TOKEN since March 2026 and would not start.
    assert localstack["image"] == "localstack/localstack:community-archive"
    assert "KQ_TEST_SQS_ENDPOINT=http://127.0.0.1:4566" in COMPOSE.read_text()


def test_activemq_has_stomp_on_61614_and_the_scheduler(compose: dict[str, Any]) -> None:
    activemq = _service(compose, "activemq")
    assert _published(activemq) == {61614: 61613, 61616: 61616}
    mounts = [str(volume).split(":") for volume in activemq["volumes"]]
    targets = {target: HERE / source for source, target, *_ in mounts}
    config = next((path for target, path in targets.items() if target.endswith("/conf/activemq.xml")), None)
    assert config is not None, "activemq.xml is not mounted over the image's conf/activemq.xml"
    assert config.is_file(), f"{config} is missing"
    broker = ET.parse(config).getroot().find(f"{_AMQ}broker")  # noqa: S314  (our own file)
    assert broker is not None, f"{config} has no <broker>"
    assert broker.get("schedulerSupport") == "true", "AMQ_SCHEDULED_DELAY is ignored without the scheduler"
    connectors = {c.get("name"): c.get("uri", "") for c in broker.iter(f"{_AMQ}transportConnector")}
    assert connectors.get("stomp", "").startswith("stomp://0.0.0.0:61613"), connectors
    assert connectors.get("openwire", "").startswith("tcp://0.0.0.0:61616"), connectors
    stats = broker.find(f"{_AMQ}plugins/{_AMQ}statisticsBrokerPlugin")
    assert stats is not None, "kq managequeue info needs the statistics plugin"
    strategies = list(broker.iter(f"{_AMQ}sharedDeadLetterStrategy"))
    assert strategies, "no dead-letter strategy"
    assert all(s.get("processExpired") == "false" for s in strategies), (
        "expired messages would pile up in ActiveMQ.DLQ"
    )


def test_no_two_services_publish_the_same_port(compose: dict[str, Any]) -> None:
    seen: dict[int, str] = {}
    for name in compose["services"]:
        for port in _published(_service(compose, name)):
            assert port not in seen, f"port {port} is published by both {seen[port]} and {name}"
            seen[port] = name
