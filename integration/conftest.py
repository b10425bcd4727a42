"""pytest glue for the integration tests: broker markers and session-scoped broker fixtures.

Select tests per broker with markers: ``pytest integration -m rabbitmq`` (also ``sqs``, ``stomp``).
Tests carry their marker themselves; the fixtures do not add it.

RabbitMQ (fixture ``rabbitmq``):

* ``KQ_TEST_RABBITMQ_URL`` set: that broker is used as is and nothing is started (optionally with
  ``KQ_TEST_RABBITMQ_MANAGEMENT_URL`` and ``KQ_TEST_RABBITMQ_STOMP_URL``; tests needing one that is
  not given skip). ``restart()`` then skips the test: we cannot restart someone else's broker.
* Otherwise a private node is started once per session in a temporary folder (see ``brokers.py``) and
  stopped at the end. Its ports can be moved with ``KQ_TEST_RABBITMQ_{AMQP,MANAGEMENT,STOMP,DIST,EPMD}_PORT``.
* No broker to be had: the tests skip with the reason, or fail when ``CI`` is set, so that CI cannot go
  green without having run them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

# The folder has no __init__.py and pytest runs with --import-mode=importlib, which puts nothing on
# sys.path: make `integration.brokers` importable however pytest is launched (not only `python -m`).
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from integration.brokers import (  # noqa: E402  (needs the sys.path entry above)
    BrokerError,
    PortInUseError,
    RabbitMQ,
    ensure_rabbitmq_installed,
    start_rabbitmq,
)
from kq.core.testing import workspace  # noqa: E402, F401  (registers the fixture for end-to-end tests)

MARKERS = {
    "rabbitmq": "needs a RabbitMQ broker (fixture `rabbitmq`; KQ_TEST_RABBITMQ_URL or a local node)",
    "sqs": "needs an SQS endpoint (LocalStack or moto; KQ_TEST_SQS_ENDPOINT)",
    "stomp": "needs a STOMP broker (KQ_TEST_STOMP_URL)",
}


def pytest_configure(config: pytest.Config) -> None:
    # Registered here, not in pyproject.toml: the markers belong to this folder (--strict-markers is on).
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")


@dataclass
class RabbitMQEndpoint:
    """What a test gets from the ``rabbitmq`` fixture."""

    amqp_url: str
    management_url: str | None
    stomp_url: str | None
    #: The node we started, or None when KQ_TEST_RABBITMQ_URL names an external broker.
    broker: RabbitMQ | None = None

    def restart(self) -> None:
        """Restart the broker on the same data; skips the test for a broker we did not start."""
        if self.broker is None:
            pytest.skip("restart() needs a broker started by the harness, but KQ_TEST_RABBITMQ_URL is set")
        self.broker.restart()


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQEndpoint]:
    url = os.environ.get("KQ_TEST_RABBITMQ_URL")
    if url:
        yield RabbitMQEndpoint(
            amqp_url=url,
            management_url=os.environ.get("KQ_TEST_RABBITMQ_MANAGEMENT_URL") or None,
            stomp_url=os.environ.get("KQ_TEST_RABBITMQ_STOMP_URL") or None,
        )
        return
    broker = _start_local_rabbitmq(tmp_path_factory.mktemp("rabbitmq"))
    try:
        yield RabbitMQEndpoint(
            amqp_url=broker.amqp_url,
            management_url=broker.management_url,
            stomp_url=broker.stomp_url,
            broker=broker,
        )
    finally:
        broker.stop()


def _start_local_rabbitmq(workdir: Path) -> RabbitMQ:
    reason = ensure_rabbitmq_installed()
    if reason is not None:
        _unavailable(f"RabbitMQ: {reason}")
    try:
        return start_rabbitmq(
            workdir,
            amqp_port=_port_from_env("AMQP", 5672),
            management_port=_port_from_env("MANAGEMENT", 15672),
            stomp_port=_port_from_env("STOMP", 61613),
            dist_port=_port_from_env("DIST", 25672),
            epmd_port=_port_from_env("EPMD", 4369),
        )
    except PortInUseError as exc:
        _unavailable(
            f"RabbitMQ could not be started: {exc} (from pytest: KQ_TEST_RABBITMQ_{exc.role.upper()}_PORT), "
            "or point KQ_TEST_RABBITMQ_URL at a running broker"
        )
    except BrokerError as exc:
        _unavailable(f"RabbitMQ could not be started: {exc}")


def _port_from_env(role: str, default: int) -> int:
    name = f"KQ_TEST_RABBITMQ_{role}_PORT"
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise pytest.UsageError(f"{name} must be a port number, got {value!r}") from None


def _unavailable(reason: str) -> NoReturn:
    """Skip locally; fail under CI, where a missing broker is a broken setup, not a choice."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)
