"""A pytest plugin that ends the run with a summary per broker: tests passed, failed, skipped and why.

Tests are grouped by their broker marker (``rabbitmq``, ``sqs``, ``stomp``; ``no broker`` for the rest),
and SQS and STOMP tests also by their fixture's parameter (``sqs[moto]``, ``sqs[localstack]``,
``stomp[activemq]``, ``stomp[rabbitmq]``), so a run that skipped a whole broker says so in one line
with the reason instead of in fifty lines of ``-ra`` output. ``conftest.py`` registers it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest

__all__ = ["BROKER_MARKERS", "BrokerSummary", "broker_label"]

BROKER_MARKERS = ("rabbitmq", "sqs", "stomp")
#: From best to worst: a test's outcome is the worst of its phases'.
_OUTCOMES = ("passed", "xfailed", "failed", "error", "skipped")


@dataclass
class _Tally:
    counts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)


def broker_label(item: pytest.Item) -> str:
    """The group a test is counted in: its broker marker, with the SQS endpoint when it has one."""
    names = {mark.name for mark in item.iter_markers()}
    broker = next((name for name in BROKER_MARKERS if name in names), "no broker")
    callspec = getattr(item, "callspec", None)
    for fixture in ("sqs", "stomp"):
        endpoint = callspec.params.get(fixture) if callspec is not None else None
        if isinstance(endpoint, str):
            return f"{fixture}[{endpoint}]"
    return broker


class BrokerSummary:
    """Collects each test's outcome and writes the summary at the end of the run."""

    def __init__(self) -> None:
        self._labels: dict[str, str] = {}
        #: Outcome per test id: the worst of its setup, call and teardown reports.
        self._outcomes: dict[str, tuple[str, str]] = {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Remember each selected test's broker (deselected ones never report)."""
        for item in items:
            self._labels[item.nodeid] = broker_label(item)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Fold one phase's report into its test's outcome."""
        outcome, reason = _phase_outcome(report)
        if outcome is None:
            return
        previous = self._outcomes.get(report.nodeid)
        if previous is None or _OUTCOMES.index(outcome) > _OUTCOMES.index(previous[0]):
            self._outcomes[report.nodeid] = (outcome, reason)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """Write one line per broker, and the skip reasons under it."""
        tallies: dict[str, _Tally] = {}
        for nodeid, (outcome, reason) in self._outcomes.items():
            tally = tallies.setdefault(self._labels.get(nodeid, "no broker"), _Tally())
            tally.counts[outcome] += 1
            if outcome == "skipped":
                tally.reasons[reason] += 1
        if not tallies:
            return
        terminalreporter.write_sep("=", "summary per broker")
        for label in sorted(tallies, key=_label_order):
            tally = tallies[label]
            counts = ", ".join(f"{tally.counts[o]} {o}" for o in _OUTCOMES if tally.counts[o])
            ran = sum(tally.counts[o] for o in _OUTCOMES if o != "skipped")
            terminalreporter.write_line(f"{label}: {ran} run ({counts})")
            for reason, count in tally.reasons.most_common():
                terminalreporter.write_line(f"    {count} skipped: {reason}")


def _phase_outcome(report: pytest.TestReport) -> tuple[str | None, str]:
    if report.failed:
        return ("failed" if report.when == "call" else "error"), ""
    if report.skipped:
        return ("xfailed", "") if hasattr(report, "wasxfail") else ("skipped", _skip_reason(report))
    if report.when == "call":
        return "passed", ""
    return None, ""


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    text = text.removeprefix("Skipped: ")
    first = text.strip().splitlines()[0] if text.strip() else "(no reason given)"
    return first if len(first) <= 200 else first[:197] + "..."


def _label_order(label: str) -> tuple[int, str]:
    broker = label.split("[", 1)[0]
    rank = BROKER_MARKERS.index(broker) if broker in BROKER_MARKERS else len(BROKER_MARKERS)
    return rank, label
