"""The peer benchmark's shared parts: scenarios, alternating rounds, medians, ratios, the Markdown table.

A :class:`Scenario` measures one thing (a publish rate, a start-up time, a worker's memory) for kq and
for each peer doing the same work. :func:`measure` runs the sides in alternating rounds (peer A, kq,
peer B, kq, peer A, ...), so a noisy neighbour on a shared machine hurts every side alike, and keeps
every round's value. The result is a median and a range per side, and for each peer a ratio checked
against the scenario's target: the median, over the rounds, of kq's value divided by the value of the
peer's round just before it. Pairing each kq round with the peer round next to it in time cancels the
slow swings of a shared machine (a neighbour's disk writes that slow every fsync for a few seconds),
which a ratio of the two medians mixes in: there, kq's median pools its rounds next to every peer.

Ratios are always ``kq / peer`` of the measured values, so their meaning follows the unit: for a rate
(``msg/s``) above 1 means kq is faster; for a time (``ms``) or a memory size (``MiB``) below 1 means kq is
faster or smaller. A :class:`Target` says which way it must go (``">="`` or ``"<="``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Side:
    """One implementation of a scenario's work.

    Attributes:
        name: Who does the work: ``"kq"``, ``"kq CLI"``, ``"pika"``, ``"Celery solo"``, ...
        run: Does the work once and returns the measured value in the scenario's unit (a rate, a time
            in milliseconds, a size in MiB). It prepares what it needs (queues, messages) without
            counting that time, and cleans up after itself.
    """

    name: str
    run: Callable[[], float]


@dataclasses.dataclass(frozen=True)
class Target:
    """What the issue asks of kq against one peer: ``kq / peer`` ``op`` ``value``."""

    peer: str
    op: str  # ">=" or "<="
    value: float

    def __post_init__(self) -> None:
        if self.op not in (">=", "<="):
            raise ValueError(f"a target's op is '>=' or '<=', not {self.op!r}")

    def met(self, ratio: float) -> bool:
        return ratio >= self.value if self.op == ">=" else ratio <= self.value

    def __str__(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {self.value:g}"


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One measurement, kq against its peers.

    Attributes:
        key: A short identifier (``rabbitmq-publish-batch-100``), used by ``--only``.
        title: What is measured, in words, for the table.
        unit: ``"msg/s"``, ``"ms"`` or ``"MiB"`` (or another unit a reader understands).
        sides: kq's side(s) and the peers'; the first side named in a target's ``peer`` is compared with
            the side named ``kq_side``.
        kq_side: The name of kq's side the ratios are taken of.
        targets: The ratios the issue asks for, one per peer compared.
        note: A line under the table (what the peers do exactly, the guarantees both sides keep).
    """

    key: str
    title: str
    unit: str
    sides: tuple[Side, ...]
    kq_side: str = "kq"
    targets: tuple[Target, ...] = ()
    note: str = ""


@dataclasses.dataclass
class SideResult:
    name: str
    values: list[float] = dataclasses.field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")


@dataclasses.dataclass
class ScenarioResult:
    scenario: Scenario
    sides: dict[str, SideResult]
    seconds: float
    #: Per peer, the (peer, kq) values of each peer round and the kq round that followed it.
    pairs: dict[str, list[tuple[float, float]]] = dataclasses.field(default_factory=dict)

    def ratio(self, peer: str) -> float:
        """``kq / peer``: the median of the paired rounds' ratios; of the medians where no round was
        paired; NaN when a side has no value."""
        ratios = [kq / other for other, kq in self.pairs.get(peer, []) if other]
        if ratios:
            return statistics.median(ratios)
        kq = self.sides[self.scenario.kq_side].median
        other = self.sides[peer].median
        return kq / other if other and not math.isnan(other) and not math.isnan(kq) else math.nan


def measure(scenario: Scenario, rounds: int) -> ScenarioResult:
    """Run every side of ``scenario`` ``rounds`` times, alternating: each peer round is followed by a kq
    round. A side that raises is recorded with its error and left out of the later rounds."""
    results = {side.name: SideResult(side.name) for side in scenario.sides}
    kq = [side for side in scenario.sides if side.name == scenario.kq_side]
    if len(kq) != 1:
        raise ValueError(f"scenario {scenario.key}: no side named {scenario.kq_side!r}")
    peers = [side for side in scenario.sides if side.name != scenario.kq_side]
    order: list[Side] = []
    for _ in range(rounds):
        for peer in peers or kq:
            order.append(peer)
            if peers:
                order.append(kq[0])
    started = time.monotonic()
    pairs: dict[str, list[tuple[float, float]]] = {peer.name: [] for peer in peers}
    previous: tuple[str, float] | None = None  # the peer round just run, if it gave a value
    for side in order:
        result = results[side.name]
        if result.error is not None:
            previous = None
            continue
        try:
            value = side.run()
        except Exception as exc:  # a peer that cannot run here is reported, not fatal
            logger.warning("%s: %s failed: %s", scenario.key, side.name, exc, exc_info=True)
            result.error = f"{type(exc).__name__}: {exc}"
            previous = None
            continue
        result.values.append(value)
        logger.info("%s: %s %.4g %s", scenario.key, side.name, value, scenario.unit)
        if side is kq[0]:
            if previous is not None:
                pairs[previous[0]].append((previous[1], value))
            previous = None
        else:
            previous = (side.name, value)
    return ScenarioResult(scenario, results, time.monotonic() - started, pairs)


def _number(value: float) -> str:
    if math.isnan(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def markdown(results: Iterable[ScenarioResult], header: Sequence[str] = ()) -> str:
    """The results as Markdown: one table row per side, with median, range, ratio and target."""
    lines = [*header]
    lines += [
        "| scenario | side | median | range | kq / side | target | met |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    notes: list[str] = []
    for result in results:
        scenario = result.scenario
        targets = {target.peer: target for target in scenario.targets}
        for position, side in enumerate(scenario.sides):
            side_result = result.sides[side.name]
            first = position == 0
            label = f"{scenario.title} ({scenario.unit})" if first else ""
            if side_result.error is not None:
                lines.append(f"| {label} | {side.name} | failed: {side_result.error[:80]} | | | | |")
                continue
            values = side_result.values
            spread = f"{_number(min(values))} to {_number(max(values))}" if values else "-"
            ratio = target = met = ""
            if side.name != scenario.kq_side:
                ratio = _number(result.ratio(side.name))
                if side.name in targets:
                    target = str(targets[side.name])
                    value = result.ratio(side.name)
                    met = "yes" if not math.isnan(value) and targets[side.name].met(value) else "**no**"
            lines.append(
                f"| {label} | {side.name} | {_number(side_result.median)} | {spread} | {ratio} | "
                f"{target} | {met} |"
            )
        if scenario.note:
            notes.append(f"- **{scenario.title}**: {scenario.note}")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def write(results: Sequence[ScenarioResult], path: Path, header: Sequence[str] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(results, header))


def rate(count: int, seconds: float) -> float:
    """Messages per second."""
    return count / seconds if seconds > 0 else float("inf")


def timed(work: Callable[[], object]) -> float:
    """Seconds ``work()`` took."""
    started = time.perf_counter()
    work()
    return time.perf_counter() - started
