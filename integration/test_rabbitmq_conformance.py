"""The driver conformance suite against the RabbitMQ broker this harness starts (or KQ_TEST_RABBITMQ_URL).

The test classes live with the driver, in ``packages/kq-driver-rabbitmq/tests/test_conformance.py``
(where they skip without ``KQ_TEST_RABBITMQ_URL``). This module imports them so that pytest collects
them here too, where the ``rabbitmq`` fixture of ``conftest.py`` provides the broker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from integration.suites import load_test_module

pytestmark = pytest.mark.rabbitmq

_SUITE = Path(__file__).resolve().parent.parent / "packages/kq-driver-rabbitmq/tests/test_conformance.py"


_suite = load_test_module(_SUITE, "kq_driver_rabbitmq_conformance")

TestRabbitMQDriver = _suite.TestRabbitMQDriver
TestRabbitMQQuorumQueues = _suite.TestRabbitMQQuorumQueues
