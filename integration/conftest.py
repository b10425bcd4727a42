"""pytest glue for the integration tests: broker markers, session-scoped broker fixtures, the summary.

Select tests per broker with markers: ``pytest integration -m rabbitmq`` (also ``sqs``, ``stomp``).
Tests carry their marker themselves; the fixtures do not add it. The run ends with a summary per
broker (``summary.py``): tests run, skipped, and why.

RabbitMQ (fixture ``rabbitmq``):

* ``KQ_TEST_RABBITMQ_URL`` set: that broker is used as is and nothing is started (optionally with
  ``KQ_TEST_RABBITMQ_MANAGEMENT_URL`` and ``KQ_TEST_RABBITMQ_STOMP_URL``; tests needing one that is
  not given skip). ``restart()`` then skips the test: we cannot restart someone else's broker.
* Otherwise a private node is started once per session in a temporary folder (see
  ``brokers/rabbitmq.py``) and stopped at the end. Its ports can be moved with
  ``KQ_TEST_RABBITMQ_{AMQP,MANAGEMENT,STOMP,DIST,EPMD}_PORT``. When the Debian package is missing and
  the tests run as root on a machine with apt, ``install-brokers.sh`` installs it first
  (``KQ_TEST_NO_APT=1`` prevents that).

SQS (fixture ``sqs``, one run per emulator): see ``sqs_fixture.py``.

STOMP (fixture ``stomp``, one run per broker: ActiveMQ Classic, and RabbitMQ's STOMP plugin on the node
above): see ``stomp_fixture.py``.

No broker to be had: the tests skip with the reason, or fail when ``CI`` is set, so that CI cannot go
green without having run them (``policy.py``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# The folder has no __init__.py and pytest runs with --import-mode=importlib, which puts nothing on
# sys.path: make `integration.brokers` importable however pytest is launched (not only `python -m`).
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from integration import summary  # noqa: E402  (needs the sys.path entry above)
from integration.brokers import BrokerError, PortInUseError  # noqa: E402
from integration.brokers.rabbitmq import RabbitMQ, ensure_rabbitmq_installed, start_rabbitmq  # noqa: E402
from integration.policy import port_from_env, unavailable  # noqa: E402
from integration.sqs_fixture import sqs, sqs_emulators  # noqa: E402, F401  (the fixtures, for every test)
from integration.stomp_fixture import stomp, stomp_brokers  # noqa: E402, F401  (the fixtures, for every test)
from kq.core.testing import workspace  # noqa: E402, F401  (registers the fixture for end-to-end tests)

logger = logging.getLogger(__name__)

_INSTALL_SCRIPT = Path(__file__).resolve().parent / "install-brokers.sh"

MARKERS = {
    "rabbitmq": "needs a RabbitMQ broker (fixture `rabbitmq`; KQ_TEST_RABBITMQ_URL or a local node)",
    "sqs": "needs an SQS endpoint (LocalStack or moto; KQ_TEST_SQS_ENDPOINT)",
    "stomp": "needs a STOMP broker (ActiveMQ or RabbitMQ's STOMP plugin; KQ_TEST_STOMP_ACTIVEMQ/RABBITMQ)",
}


def pytest_configure(config: pytest.Config) -> None:
    # Registered here, not in pyproject.toml: the markers belong to this folder (--strict-markers is on).
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    if not config.pluginmanager.has_plugin("kq-broker-summary"):
        config.pluginmanager.register(summary.BrokerSummary(), "kq-broker-summary")


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
    if reason is not None and _apt_install_possible():
        _install_with_apt(workdir / "install-brokers.log")
        reason = ensure_rabbitmq_installed()
    if reason is not None:
        unavailable(f"RabbitMQ: {reason}")
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
        unavailable(
            f"RabbitMQ could not be started: {exc} (from pytest: KQ_TEST_RABBITMQ_{exc.role.upper()}_PORT), "
            "or point KQ_TEST_RABBITMQ_URL at a running broker"
        )
    except BrokerError as exc:
        unavailable(f"RabbitMQ could not be started: {exc}")


def _port_from_env(role: str, default: int) -> int:
    return port_from_env(f"KQ_TEST_RABBITMQ_{role}_PORT", default)


def _apt_install_possible() -> bool:
    """Root on a machine with apt, and not told otherwise: the harness may install Debian packages."""
    if os.environ.get("KQ_TEST_NO_APT", "").lower() not in ("", "0", "false", "no"):
        return False
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def _install_with_apt(log: Path) -> None:
    """Run install-brokers.sh (apt-get install rabbitmq-server activemq ...); the caller checks the result."""
    logger.info("a broker's package is missing; installing with %s (output in %s)", _INSTALL_SCRIPT, log)
    with log.open("wb") as out:
        try:
            subprocess.run(
                ["bash", str(_INSTALL_SCRIPT)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=600,
                check=False,
            )
        except subprocess.TimeoutExpired:
            logger.warning("%s did not finish within 600 s (output in %s)", _INSTALL_SCRIPT, log)
