"""The ``stomp`` fixture: a STOMP broker per flavour (ActiveMQ Classic, RabbitMQ's STOMP plugin).

Every test that takes ``stomp`` runs once per broker (ids ``activemq`` and ``rabbitmq``;
``KQ_TEST_STOMP_BROKERS=activemq`` picks fewer) and carries the ``stomp`` marker itself.

* **ActiveMQ**: ``KQ_TEST_STOMP_ACTIVEMQ=host:port`` names a running broker, used as is (it should have
  the scheduler on, as ``docker/activemq.xml`` has). Otherwise the harness starts one once per session
  from Debian's package (``brokers/activemq.py``), STOMP on ``KQ_TEST_ACTIVEMQ_STOMP_PORT`` (61614) and
  OpenWire on ``KQ_TEST_ACTIVEMQ_OPENWIRE_PORT`` (61616), and stops it at the end of the session. When
  the package is missing and the tests run as root on a machine with apt, ``install-brokers.sh``
  installs it first (``KQ_TEST_NO_APT=1`` prevents that), as for RabbitMQ.
* **RabbitMQ**: ``KQ_TEST_STOMP_RABBITMQ=host:port`` names a running STOMP plugin, used as is (with
  ``KQ_TEST_STOMP_RABBITMQ_MANAGEMENT_URL`` if the queue manager's tests are to run). Otherwise the
  STOMP plugin of the session's RabbitMQ node is used: the ``rabbitmq`` fixture's node, not a second one
  (its STOMP port, 61613, moves with ``KQ_TEST_RABBITMQ_STOMP_PORT``).
* Credentials of a named broker: ``KQ_TEST_STOMP_<BROKER>_LOGIN``, ``_PASSCODE`` and, for RabbitMQ,
  ``_VHOST`` (defaults: none for ActiveMQ, which checks nothing; guest/guest and ``/`` for RabbitMQ).
* A broker that cannot be had skips its tests with the reason, or fails them when ``CI`` is set.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from integration.brokers import LOOPBACK, BrokerError, PortInUseError
from integration.brokers.activemq import ActiveMQ, ensure_activemq_installed
from integration.brokers.rabbitmq import RabbitMQ
from integration.policy import port_from_env, unavailable

if TYPE_CHECKING:
    from integration.conftest import RabbitMQEndpoint

__all__ = ["StompEndpoint", "StompBrokers", "stomp", "stomp_brokers", "stomp_targets", "FLAVOURS"]

logger = logging.getLogger(__name__)

BROKERS_ENV = "KQ_TEST_STOMP_BROKERS"
#: The flavours of kq-driver-stomp, in the order the tests run against them.
FLAVOURS = ("activemq", "rabbitmq")
#: ActiveMQ's ports when the harness starts it: STOMP off 61613, which RabbitMQ's plugin has.
ACTIVEMQ_PORTS = {"stomp": 61614, "openwire": 61616}
RABBITMQ_GUEST = ("guest", "guest")

#: A TOML value: what ``driver_table`` writes.
TomlValue = str | bool | int | float | list[str]


@dataclass(frozen=True)
class StompEndpoint:
    """What a test gets from the ``stomp`` fixture: a STOMP broker and how kq-driver-stomp reaches it."""

    #: The test id: ``activemq`` or ``rabbitmq`` (also for a broker named in the environment).
    name: str
    #: kq-driver-stomp's ``flavour`` option for this broker.
    flavour: str
    host: str
    port: int
    login: str | None = None
    passcode: str | None = None
    #: The STOMP ``host`` header (RabbitMQ's virtual host); None: stomp.py's default.
    vhost: str | None = None
    #: RabbitMQ's management API (the queue manager uses it); None for ActiveMQ.
    management_url: str | None = None
    #: The broker the harness started (ActiveMQ) or the session's node (RabbitMQ); None when named
    #: in the environment.
    broker: ActiveMQ | RabbitMQ | None = field(default=None, compare=False, repr=False)

    @property
    def address(self) -> str:
        """``host:port``, as the driver's ``hosts`` option lists it."""
        return f"{self.host}:{self.port}"

    @property
    def scheduler(self) -> bool:
        """True where ``AMQ_SCHEDULED_DELAY`` works: ActiveMQ (the harness's, and docker/activemq.xml)."""
        return self.flavour == "activemq"

    def driver_table(self, name: str = "mq", **options: TomlValue) -> str:
        """A ``[drivers.<name>]`` table of type ``stomp`` for this broker, for the ``kq.toml`` of
        end-to-end tests; ``options`` (strings, booleans, numbers, lists of strings) are added or
        replace the defaults."""
        values: dict[str, TomlValue] = {"type": "stomp", "flavour": self.flavour, "hosts": [self.address]}
        if self.login is not None:
            values["login"] = self.login
        if self.passcode is not None:
            values["passcode"] = self.passcode
        if self.vhost is not None:
            values["vhost"] = self.vhost
        if self.management_url is not None:
            values["management_url"] = self.management_url
        if self.scheduler:
            values["scheduler"] = True
        values.update(options)
        lines = [f"[drivers.{name}]"] + [f"{key} = {_toml(value)}" for key, value in values.items()]
        return "\n".join(lines) + "\n"

    def restart(self) -> None:
        """Restart the broker on the same data; skips the test for a broker the harness did not start."""
        if self.broker is None:
            pytest.skip(
                f"restart() needs a broker started by the harness, but {_address_env(self.name)} is set"
            )
        self.broker.restart()


def _toml(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(item) for item in value) + "]"
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _address_env(name: str) -> str:
    return f"KQ_TEST_STOMP_{name.upper()}"


def stomp_targets() -> list[str]:
    """The ``stomp`` fixture's parameters: the flavours to test, ``KQ_TEST_STOMP_BROKERS`` or all."""
    chosen = os.environ.get(BROKERS_ENV, "")
    names = [n.strip() for n in chosen.split(",") if n.strip()] or list(FLAVOURS)
    unknown = sorted(set(names) - set(FLAVOURS))
    if unknown:
        raise pytest.UsageError(f"{BROKERS_ENV}: unknown broker(s) {unknown}; known: {list(FLAVOURS)}")
    return [name for name in FLAVOURS if name in names]


def _external(name: str) -> tuple[str, int] | None:
    """The ``host:port`` that ``KQ_TEST_STOMP_<NAME>`` names, None if it is not set."""
    value = os.environ.get(_address_env(name), "").strip()
    if not value:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise pytest.UsageError(f"{_address_env(name)} must be host:port, got {value!r}")
    return host, int(port)


def _credential(name: str, what: str, default: str | None) -> str | None:
    return os.environ.get(f"{_address_env(name)}_{what}") or default


class StompBrokers:
    """Starts ActiveMQ the first time a test asks for it and stops it at the end; finds RabbitMQ's."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._activemq: ActiveMQ | None = None
        #: Why ActiveMQ could not be had: its tests are not made to retry a failed start.
        self._failed: str | None = None

    def endpoint(self, name: str, request: pytest.FixtureRequest) -> StompEndpoint:
        """The broker ``name`` (``activemq`` or ``rabbitmq``), started if needed; skips (or fails in CI)."""
        if name == "activemq":
            return self._activemq_endpoint()
        if name == "rabbitmq":
            return self._rabbitmq_endpoint(request)
        raise ValueError(f"unknown STOMP broker {name!r}; known: {list(FLAVOURS)}")

    def stop_all(self) -> None:
        """Stop the ActiveMQ this session started (RabbitMQ is the ``rabbitmq`` fixture's)."""
        broker, self._activemq = self._activemq, None
        if broker is not None:
            broker.stop()

    def _activemq_endpoint(self) -> StompEndpoint:
        external = _external("activemq")
        login = _credential("activemq", "LOGIN", None)
        passcode = _credential("activemq", "PASSCODE", None)
        if external is not None:
            host, port = external
            return StompEndpoint("activemq", "activemq", host, port, login, passcode)
        if self._failed is not None:
            unavailable(self._failed)
        try:
            if self._activemq is None:
                self._activemq = self._start_activemq()
            else:
                self._activemq.start()  # a no-op while it runs; brings it back if a test stopped it
        except BrokerError as exc:
            self._failed = self._reason(exc)
            unavailable(self._failed)
        broker = self._activemq
        return StompEndpoint(
            "activemq", "activemq", LOOPBACK, broker.stomp_port, login, passcode, broker=broker
        )

    def _start_activemq(self) -> ActiveMQ:
        reason = ensure_activemq_installed()
        if reason is not None and _apt_install_possible():
            _install_with_apt(self._workdir / "install-brokers.log")
            reason = ensure_activemq_installed()
        if reason is not None:
            self._failed = f"ActiveMQ: {reason}"
            unavailable(self._failed)
        broker = ActiveMQ(
            workdir=self._workdir / "activemq",
            stomp_port=port_from_env("KQ_TEST_ACTIVEMQ_STOMP_PORT", ACTIVEMQ_PORTS["stomp"]),
            openwire_port=port_from_env("KQ_TEST_ACTIVEMQ_OPENWIRE_PORT", ACTIVEMQ_PORTS["openwire"]),
        )
        broker.start()
        return broker

    @staticmethod
    def _reason(exc: BrokerError) -> str:
        if isinstance(exc, PortInUseError):
            return (
                f"ActiveMQ could not be started: {exc}, or point {_address_env('activemq')} at a running "
                f"broker (or leave it out with {BROKERS_ENV}=rabbitmq)"
            )
        return f"ActiveMQ could not be started: {exc}"

    @staticmethod
    def _rabbitmq_endpoint(request: pytest.FixtureRequest) -> StompEndpoint:
        login = _credential("rabbitmq", "LOGIN", RABBITMQ_GUEST[0])
        passcode = _credential("rabbitmq", "PASSCODE", RABBITMQ_GUEST[1])
        vhost = _credential("rabbitmq", "VHOST", "/")
        external = _external("rabbitmq")
        if external is not None:
            host, port = external
            management_url = os.environ.get(f"{_address_env('rabbitmq')}_MANAGEMENT_URL") or None
            return StompEndpoint("rabbitmq", "rabbitmq", host, port, login, passcode, vhost, management_url)
        # The session's node, started by the `rabbitmq` fixture (which skips, or fails in CI, without one).
        node: RabbitMQEndpoint = request.getfixturevalue("rabbitmq")
        if node.stomp_url is None:
            unavailable(
                "RabbitMQ's STOMP plugin is not reachable: KQ_TEST_RABBITMQ_URL names a broker but "
                f"KQ_TEST_RABBITMQ_STOMP_URL is not set (or set {_address_env('rabbitmq')}=host:port)"
            )
        address = urlsplit(node.stomp_url)
        if address.hostname is None or address.port is None:
            raise pytest.UsageError(
                f"KQ_TEST_RABBITMQ_STOMP_URL must be stomp://host:port, got {node.stomp_url!r}"
            )
        return StompEndpoint(
            "rabbitmq",
            "rabbitmq",
            address.hostname,
            address.port,
            login,
            passcode,
            vhost,
            node.management_url,
            broker=node.broker,
        )


def _apt_install_possible() -> bool:
    from integration.conftest import _apt_install_possible as possible  # conftest imports this module

    return possible()


def _install_with_apt(log: Path) -> None:
    from integration.conftest import _install_with_apt as install  # conftest imports this module

    install(log)


@pytest.fixture(scope="session")
def stomp_brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StompBrokers]:
    """The STOMP brokers of this session (ActiveMQ started lazily and stopped at the end)."""
    brokers = StompBrokers(tmp_path_factory.mktemp("stomp"))
    try:
        yield brokers
    finally:
        brokers.stop_all()


@pytest.fixture(scope="session", params=stomp_targets())
def stomp(request: pytest.FixtureRequest, stomp_brokers: StompBrokers) -> StompEndpoint:
    """A STOMP broker: ActiveMQ, then RabbitMQ's STOMP plugin (see the module docstring)."""
    name: str = request.param
    return stomp_brokers.endpoint(name, request)
