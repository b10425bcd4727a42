"""The driver conformance suite against each SQS emulator this harness starts (or KQ_TEST_SQS_ENDPOINT).

The test classes live with the driver, in ``packages/kq-driver-sqs/tests/test_conformance.py``
(where they skip without ``KQ_TEST_SQS_ENDPOINT``). This module imports every ``Test*`` class of that
file so that pytest collects them here too, where the ``sqs`` fixture of ``conftest.py`` provides the
endpoint: each test runs once against moto and once against LocalStack.

Without the driver package installed this module skips. With it installed but the suite file or its
``TestSqsDriver`` class missing, one test fails and says which.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from integration.suites import load_test_module, suite_classes

pytestmark = pytest.mark.sqs

_SUITE = Path(__file__).resolve().parent.parent / "packages/kq-driver-sqs/tests/test_conformance.py"
#: The class the suite must have; others (``TestSqsFifoDriver``...) are collected when present.
_REQUIRED = "TestSqsDriver"


def _missing() -> str | None:
    """What is missing for the suite to run here, None when nothing is."""
    if not _SUITE.is_file():
        return f"{_SUITE} is missing: the SQS driver's conformance suite has not been written"
    return None


if importlib.util.find_spec("kq.drivers.sqs") is None:
    pytest.skip(
        "kq-driver-sqs is not installed (nox -s integration installs every package under packages/)",
        allow_module_level=True,
    )

_problem = _missing()
if _problem is None:
    _suite = load_test_module(_SUITE, "kq_driver_sqs_conformance")
    _classes = suite_classes(_suite)
    if _REQUIRED not in _classes:
        _problem = f"{_SUITE} has no class {_REQUIRED} (found: {sorted(_classes) or 'none'})"
    globals().update(_classes)

if _problem is not None:
    _reason = _problem

    def test_the_sqs_conformance_suite_is_there() -> None:
        """Stands in for the suite until it exists: fails, naming what is missing."""
        pytest.fail(_reason, pytrace=False)
