"""The summary per broker at the end of an integration run (summary.py), on a made-up test module."""

from __future__ import annotations

import pytest

from integration.summary import BrokerSummary

EXAMPLE = """
import pytest

@pytest.fixture(scope="session", params=["moto", "localstack"])
def sqs(request):
    if request.param == "localstack":
        pytest.skip("LocalStack needs Python >= 3.12")
    return request.param

@pytest.mark.sqs
def test_queue(sqs):
    pass

@pytest.mark.sqs
def test_other_queue(sqs):
    assert sqs == "localstack"

@pytest.mark.rabbitmq
def test_amqp():
    pytest.skip("rabbitmq-server is not installed")

@pytest.mark.rabbitmq
def test_amqp_again():
    pytest.skip("rabbitmq-server is not installed")

def test_plain():
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_known_bug():
    assert False
"""


def test_counts_and_skip_reasons_per_broker(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    sqs: x\n    rabbitmq: x\n")
    pytester.makepyfile(test_example=EXAMPLE)
    result = pytester.runpytest("-p", "no:cacheprovider", plugins=[BrokerSummary()])
    result.assert_outcomes(passed=2, failed=1, skipped=4, xfailed=1)
    result.stdout.fnmatch_lines(
        [
            "*= summary per broker =*",
            "rabbitmq: 0 run (2 skipped)",
            "    2 skipped: rabbitmq-server is not installed",
            "sqs[localstack]: 0 run (2 skipped)",
            "    2 skipped: LocalStack needs Python >= 3.12",
            "sqs[moto]: 2 run (1 passed, 1 failed)",
            "no broker: 2 run (1 passed, 1 xfailed)",
        ]
    )
