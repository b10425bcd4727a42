"""The driver conformance suite against the RabbitMQ broker this harness starts (or KQ_TEST_RABBITMQ_URL).

The test classes live with the driver, in ``packages/kq-driver-rabbitmq/tests/test_conformance.py``
(where they skip without ``KQ_TEST_RABBITMQ_URL``). This module imports them so that pytest collects
them here too, where the ``rabbitmq`` fixture of ``conftest.py`` provides the broker.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.rabbitmq

_SUITE = Path(__file__).resolve().parent.parent / "packages/kq-driver-rabbitmq/tests/test_conformance.py"


def _load(path: Path, name: str) -> ModuleType:
    """Import a test module by path (test folders are not packages)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None, path
    assert spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: dataclasses look their module up in sys.modules.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_suite = _load(_SUITE, "kq_driver_rabbitmq_conformance")

TestRabbitMQDriver = _suite.TestRabbitMQDriver
TestRabbitMQQuorumQueues = _suite.TestRabbitMQQuorumQueues
