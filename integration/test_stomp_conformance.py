"""The driver conformance suite against the STOMP brokers of the ``stomp`` fixture: ActiveMQ Classic and
RabbitMQ's STOMP plugin.

The test classes live with the driver, in ``packages/kq-driver-stomp/tests/test_conformance.py``, one
per flavour (``TestActiveMQDriver``, ``TestRabbitMQStompDriver``); there they take their broker from
the fixtures ``stomp_activemq`` and ``stomp_rabbitmq``, which skip without ``KQ_TEST_STOMP_ACTIVEMQ``
or ``KQ_TEST_STOMP_RABBITMQ``. This module collects every ``Test*`` class of that file and replaces
those two fixtures with ones built from the ``stomp`` fixture (the brokers the harness starts, or the
ones named in the environment). Each class runs against its own flavour only: it is collected here as
a subclass whose ``stomp`` parameter is that flavour (test ids ``[activemq]`` and ``[rabbitmq]``, as
the summary per broker counts them); a flavour that ``KQ_TEST_STOMP_BROKERS`` leaves out skips, saying so.

Without the driver package installed this module skips. With it installed but the suite file or one of
its classes missing, one test fails and says which.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from integration.stomp_fixture import BROKERS_ENV, stomp_targets
from integration.suites import load_test_module, suite_classes

if TYPE_CHECKING:
    from integration.stomp_fixture import StompEndpoint

pytestmark = pytest.mark.stomp

_SUITE = Path(__file__).resolve().parent.parent / "packages/kq-driver-stomp/tests/test_conformance.py"
#: The suite's class for each flavour (the ``stomp`` fixture's parameter it runs with).
_FLAVOUR_OF = {"TestActiveMQDriver": "activemq", "TestRabbitMQStompDriver": "rabbitmq"}


def _on(flavour: str) -> pytest.MarkDecorator:
    """Run a class with the ``stomp`` fixture's ``flavour`` only (a skip naming why when it is left out)."""
    if flavour in stomp_targets():
        return pytest.mark.parametrize("stomp", [flavour], indirect=True)
    left_out = pytest.param(flavour, marks=pytest.mark.skip(reason=f"{BROKERS_ENV} leaves {flavour} out"))
    return pytest.mark.parametrize("stomp", [left_out], indirect=True)


if importlib.util.find_spec("kq.drivers.stomp") is None:
    pytest.skip(
        "kq-driver-stomp is not installed (nox -s integration installs every package under packages/)",
        allow_module_level=True,
    )

_problem: str | None = None
if not _SUITE.is_file():
    _problem = f"{_SUITE} is missing: the STOMP driver's conformance suite has not been written"
else:
    _suite = load_test_module(_SUITE, "kq_driver_stomp_conformance")
    _classes = suite_classes(_suite)
    _absent = sorted(set(_FLAVOUR_OF) - set(_classes))
    _unknown = sorted(set(_classes) - set(_FLAVOUR_OF))
    if _absent or _unknown:
        _problem = (
            f"{_SUITE}: expected the classes {sorted(_FLAVOUR_OF)}; missing {_absent or 'none'}, "
            f"without a flavour here {_unknown or 'none'} (add them to _FLAVOUR_OF)"
        )
    # Subclasses, so that the parametrization marks the classes collected here, not the suite's own.
    for _name, _cls in _classes.items():
        if _name in _FLAVOUR_OF:
            globals()[_name] = _on(_FLAVOUR_OF[_name])(type(_name, (_cls,), {"__doc__": _cls.__doc__}))

    def _broker(stomp: StompEndpoint, flavour: str) -> Any:
        """The suite's ``StompBroker`` for the ``stomp`` fixture's endpoint."""
        assert stomp.flavour == flavour, f"the {flavour} class got the {stomp.name} broker"
        options: dict[str, Any] = {}
        for key in ("login", "passcode", "vhost", "management_url"):
            value = getattr(stomp, key)
            if value is not None:
                options[key] = value
        if stomp.scheduler:
            options["scheduler"] = True
        return _suite.StompBroker(stomp.flavour, stomp.address, options)

    @pytest.fixture
    def stomp_activemq(stomp: StompEndpoint) -> Any:
        """Replaces the suite's fixture of that name: the harness's ActiveMQ."""
        return _broker(stomp, "activemq")

    @pytest.fixture
    def stomp_rabbitmq(stomp: StompEndpoint) -> Any:
        """Replaces the suite's fixture of that name: the STOMP plugin of the harness's RabbitMQ."""
        return _broker(stomp, "rabbitmq")


if _problem is not None:
    _reason = _problem

    def test_the_stomp_conformance_suite_is_there() -> None:
        """Stands in for the suite until it is complete: fails, naming what is missing."""
        pytest.fail(_reason, pytrace=False)
