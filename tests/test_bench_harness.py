"""The peer benchmark's harness (benchmarks/harness.py): alternating rounds, ratios, targets, the table.

The scenarios themselves need brokers and peers (``nox -s bench``, ``-- --quick`` to check that they
run); mypy checks their code in ``nox -s typecheck``. Run by ``nox -s lint`` with the workspace tests.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import Scenario, Side, Target, markdown, measure


def _recording(calls: list[str], name: str, values: list[float]) -> Side:
    def run() -> float:
        calls.append(name)
        return values.pop(0)

    return Side(name, run)


def test_rounds_alternate_each_peer_with_kq() -> None:
    calls: list[str] = []
    scenario = Scenario(
        key="s",
        title="t",
        unit="msg/s",
        sides=(
            _recording(calls, "pika", [100.0, 110.0]),
            _recording(calls, "kq", [90.0, 95.0, 99.0, 80.0]),
            _recording(calls, "kombu", [50.0, 60.0]),
        ),
    )
    result = measure(scenario, rounds=2)
    assert calls == ["pika", "kq", "kombu", "kq", "pika", "kq", "kombu", "kq"]
    assert result.sides["kq"].median == pytest.approx(92.5)
    # each kq round against the peer round just before it: pika 100 -> 90, 110 -> 99; kombu 50 -> 95, 60 -> 80
    assert result.pairs == {"pika": [(100.0, 90.0), (110.0, 99.0)], "kombu": [(50.0, 95.0), (60.0, 80.0)]}
    assert result.ratio("pika") == pytest.approx(0.9)
    assert result.ratio("kombu") == pytest.approx((95 / 50 + 80 / 60) / 2)


def test_paired_ratios_cancel_a_slow_phase_that_the_medians_do_not() -> None:
    # The machine slows down by half for the last two rounds; kq is 10 % faster than the peer in each.
    peer = [100.0, 100.0, 100.0, 50.0, 50.0]
    scenario = Scenario(
        key="s",
        title="t",
        unit="msg/s",
        sides=(_recording([], "peer", list(peer)), _recording([], "kq", [v * 1.1 for v in peer])),
    )
    result = measure(scenario, rounds=5)
    assert result.ratio("peer") == pytest.approx(1.1)


def test_a_peer_round_that_failed_pairs_with_nothing() -> None:
    values = [100.0]

    def flaky() -> float:
        if not values:
            raise RuntimeError("gone")
        return values.pop()

    scenario = Scenario(
        key="s", title="t", unit="msg/s", sides=(Side("peer", flaky), _recording([], "kq", [120.0, 80.0]))
    )
    result = measure(scenario, rounds=2)
    assert result.pairs == {"peer": [(100.0, 120.0)]}
    assert result.ratio("peer") == pytest.approx(1.2)


def test_a_failing_side_is_reported_and_not_run_again() -> None:
    calls: list[str] = []

    def broken() -> float:
        calls.append("celery")
        raise RuntimeError("worker did not start")

    scenario = Scenario(
        key="s",
        title="workers",
        unit="msg/s",
        sides=(Side("celery", broken), _recording(calls, "kq", [1.0, 2.0])),
        targets=(Target("celery", ">=", 3),),
    )
    result = measure(scenario, rounds=2)
    assert calls == ["celery", "kq", "kq"]
    assert result.sides["celery"].error == "RuntimeError: worker did not start"
    assert math.isnan(result.ratio("celery"))
    table = markdown([result])
    assert "failed: RuntimeError: worker did not start" in table


@pytest.mark.parametrize(
    ("op", "value", "ratio", "met"),
    [(">=", 0.9, 0.95, True), (">=", 0.9, 0.85, False), ("<=", 2, 1.5, True), ("<=", 2, 2.5, False)],
)
def test_targets(op: str, value: float, ratio: float, met: bool) -> None:
    assert Target("peer", op, value).met(ratio) is met


def test_a_target_needs_a_direction() -> None:
    with pytest.raises(ValueError, match="'>=' or '<='"):
        Target("peer", ">", 1)


def test_the_table_marks_missed_targets() -> None:
    scenario = Scenario(
        key="s",
        title="consume",
        unit="msg/s",
        sides=(Side("pika", lambda: 100.0), Side("kq", lambda: 80.0)),
        targets=(Target("pika", ">=", 0.9),),
        note="same work on both sides",
    )
    table = markdown([measure(scenario, rounds=1)], header=["# title", ""])
    assert table.startswith("# title\n\n| scenario | side |")
    assert "| consume (msg/s) | pika | 100 | 100 to 100 | 0.80 | ≥ 0.9 | **no** |" in table
    assert "- **consume**: same work on both sides" in table


def test_a_scenario_needs_its_kq_side() -> None:
    scenario = Scenario(key="s", title="t", unit="ms", sides=(Side("pika", lambda: 1.0),))
    with pytest.raises(ValueError, match="no side named 'kq'"):
        measure(scenario, rounds=1)
