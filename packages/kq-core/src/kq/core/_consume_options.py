"""The options of ``kq consume``, declared once.

Four things are built from :data:`CONSUME_OPTIONS`: the click options of ``kq consume`` (an adapter in
kq-cli), the check of ``[workers.<name>] options`` (:func:`check_worker_options`), the command line a
watchdog starts its workers with (:func:`consume_arguments`) and the arguments of the consume loop that
``kq consume`` runs (:func:`loop_arguments`). Adding an option is one entry here, with the ``target`` it
sets, plus that argument of :class:`~kq.core.ConsumeLoop` or field of :class:`~kq.core.Limits`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kq.core._errors import ConfigError
from kq.core._numbers import MAX_COUNT, MAX_SECONDS, check_number, check_whole_number
from kq.core._options import unknown_key_error


@dataclass(frozen=True)
class ConsumeOption:
    """One option of ``kq consume``.

    Attributes:
        name: Its Python name (the parameter of the ``kq consume`` function, the key in
            ``[workers.<name>] options``).
        type: ``int``, ``float`` (an integer is accepted too), ``str`` or ``bool`` (a flag).
        help: The help text of ``kq consume --help``.
        default: The value when not given (``None``: not set).
        short: The one-letter form (``"-m"``), if any.
        flag: The long form (default: ``--`` and the name with dashes).
        minimum: The smallest number accepted.
        maximum: The largest number accepted on the command line, if it has one of its own (a
            worker's options are always bounded: :data:`~kq.core._numbers.MAX_COUNT` for counts,
            :data:`~kq.core._numbers.MAX_SECONDS` otherwise).
        multiple: Repeatable; the value is a tuple.
        metavar: What the value is called in the help.
        worker: Whether ``[workers.<name>] options`` may set it (options that name the worker itself,
            such as ``label``, are set by the watchdog or make no sense for several processes).
        target: What the value sets: ``"loop.<argument>"`` (of ``App.consume_loop``),
            ``"limits.<field>"`` (of :class:`~kq.core.Limits`), or ``""`` for an option ``kq consume``
            handles itself (the metrics server).
        negate: The flag sets its target to ``False`` (``--without-signals``: ``handle_signals``).
        duration: A number of seconds, which may also be written with units (``30s``, ``5m``, ``2h``).
    """

    name: str
    type: type
    help: str
    default: Any = None
    short: str | None = None
    flag: str | None = None
    minimum: float = 0
    maximum: float | None = None
    multiple: bool = False
    metavar: str | None = None
    worker: bool = True
    target: str = ""
    negate: bool = False
    duration: bool = False

    @property
    def long(self) -> str:
        """The long form on the command line (``--memory-limit``)."""
        return self.flag or f"--{self.name.replace('_', '-')}"

    def check(self, value: Any, key: str, source: str | None) -> Any:
        """``value`` from ``[workers.<name>] options``, checked (a :class:`ConfigError` names ``key``)."""
        accepted: tuple[type, ...] = (int, float) if self.type is float else (self.type,)
        if self.duration and isinstance(value, str):
            # "5m": checked as seconds, and kept as written for the worker's command line.
            try:
                check_number(value, minimum=self.minimum, maximum=self.maximum or MAX_SECONDS, duration=True)
            except ValueError as exc:
                raise ConfigError(str(exc), key=key, source=source) from None
            return value
        if (isinstance(value, bool) and self.type is not bool) or not isinstance(value, accepted):
            raise ConfigError(f"has the wrong type ({type(value).__name__})", key=key, source=source)
        try:  # checked, and kept as written (a worker's command line shows 256, not 256.0)
            if self.type is int:
                maximum = MAX_COUNT if self.maximum is None else int(self.maximum)
                check_whole_number(value, minimum=int(self.minimum), maximum=maximum)
            elif self.type is float:
                maximum_seconds = MAX_SECONDS if self.maximum is None else self.maximum
                check_number(value, minimum=self.minimum, maximum=maximum_seconds)
        except ValueError as exc:
            raise ConfigError(str(exc), key=key, source=source) from None
        return value


def _options(*options: ConsumeOption) -> dict[str, ConsumeOption]:
    return {option.name: option for option in options}


#: The options of ``kq consume``, in the order ``kq consume --help`` lists them.
CONSUME_OPTIONS: Mapping[str, ConsumeOption] = _options(
    ConsumeOption(
        "messages",
        int,
        "Stop after this many messages (0: no limit).",
        0,
        short="-m",
        target="limits.messages",
    ),
    ConsumeOption(
        "timeout",
        float,
        "Stop after this many seconds in total, checked between messages (0: no limit).",
        0.0,
        short="-t",
        target="limits.time",
        duration=True,
    ),
    ConsumeOption(
        "memory_limit",
        float,
        "Stop once the resident memory (RSS) of this worker and its children exceeds this many MB, "
        "checked between messages (0: no limit).",
        0.0,
        short="-l",
        target="limits.memory",
    ),
    ConsumeOption(
        "failure_limit",
        int,
        "Stop after this many failed messages (0: no limit).",
        0,
        target="limits.failures",
    ),
    ConsumeOption(
        "checks",
        str,
        "A custom stop check, repeatable: a function (or a class with a check() method) returning a "
        "reason to stop, or None; called between messages.",
        flag="--check",
        multiple=True,
        metavar="MODULE:CALLABLE",
        worker=False,
        target="limits.checks",
    ),
    ConsumeOption(
        "burst",
        bool,
        "Drain the queues, then stop: exit once a receive of --poll-interval seconds on every queue "
        "returned nothing (messages delayed, or leased to other workers, are not waited for).",
        worker=False,  # the watchdog would start a drained worker again and again
        target="loop.burst",
    ),
    ConsumeOption(
        "handler_timeout",
        float,
        "Seconds one handler call may run inside the worker before it is interrupted and the message "
        "fails with reason 'timeout', for every queue of this worker (0: each queue's handler_timeout, "
        "else the handler's own limit: [console] timeout for in-process commands, none for services).",
        0.0,
        target="loop.handler_timeout",
        duration=True,
    ),
    ConsumeOption(
        "grace",
        float,
        "After SIGTERM/SIGINT, seconds the current message may still take before it is abandoned "
        "(and redelivered); 0: wait for it.",
        0.0,
        target="loop.grace",
        duration=True,
    ),
    ConsumeOption(
        "metrics_port",
        int,
        "Serve Prometheus metrics on this port (needs kq-core[prometheus]).",
        minimum=1,
        maximum=65535,
        worker=False,  # one port cannot serve several processes
    ),
    ConsumeOption(
        "metrics_address", str, "Address the metrics server listens on.", "127.0.0.1", worker=False
    ),
    ConsumeOption(
        "routing_key",
        str,
        "Narrow this worker to messages whose routing key matches this AMQP topic pattern ('*' one "
        "word, '#' any words); default: the queue's configured routing_keys. What it does depends on "
        "the driver: sqlite and memory filter the shared queue, RabbitMQ reads a queue of its own, "
        "drivers that cannot filter refuse it (kq managedriver list shows which).",
        short="-r",
        target="loop.routing_key",
    ),
    ConsumeOption(
        "driver",
        str,
        "Driver instance (default: the queue's configured driver, else default_driver).",
        short="-i",
        target="loop.driver",
    ),
    ConsumeOption(
        "label",
        str,
        "A name for this worker, unique per process, so that it can be found among processes (it is "
        "on its command line); commands see it as $KQ_LABEL.",
        worker=False,  # the watchdog labels its processes
        target="loop.label",
    ),
    ConsumeOption(
        "without_signals",
        bool,
        "Do not handle SIGTERM/SIGINT (by default the first one finishes the current message and "
        "stops, the second abandons it so that it is redelivered).",
        short="-w",
        worker=False,
        target="loop.handle_signals",
        negate=True,
    ),
    ConsumeOption(
        "poll_interval",
        float,
        "Longest single wait for a message; a stop request is noticed within it.",
        1.0,
        minimum=0.01,
        target="loop.poll_interval",
        duration=True,
    ),
    ConsumeOption(
        "prefetch",
        int,
        "Messages the broker may hand this worker ahead of time (default: the consumer's own: 1 for "
        "console commands and HTTP calls, 16 for in-process callables, services and noop).",
        None,
        minimum=1,
        target="loop.prefetch",
    ),
    ConsumeOption(
        "summary_interval",
        float,
        "Seconds between the INFO lines counting the messages handled (each message is logged at "
        "DEBUG, -v; each failure at WARNING or ERROR); 0: one INFO line per message instead.",
        10.0,
        target="loop.summary_interval",
        duration=True,
    ),
)
#: The options ``[workers.<name>] options`` may set.
WORKER_OPTIONS: Mapping[str, ConsumeOption] = {
    name: option for name, option in CONSUME_OPTIONS.items() if option.worker
}


def check_worker_options(options: Mapping[str, Any], *, prefix: str, source: str | None) -> dict[str, Any]:
    """``[workers.<name>] options`` checked against :data:`WORKER_OPTIONS`.

    Args:
        options: The table.
        prefix: Its dotted path, for error messages (``workers.mail.options``).
        source: The configuration file, for error messages.

    Raises:
        ConfigError: an unknown option (with the closest known one) or a value of the wrong type or
            out of range.
    """
    checked: dict[str, Any] = {}
    for name, value in options.items():
        option = WORKER_OPTIONS.get(name)
        if option is None:
            raise unknown_key_error(
                name, WORKER_OPTIONS, prefix=prefix, source=source, noun="kq consume option"
            )
        checked[name] = option.check(value, f"{prefix}.{name}", source)
    return checked


def loop_arguments(values: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``App.consume_loop`` that option ``values`` give (names of
    :data:`CONSUME_OPTIONS`; options without a target and ``None`` values are left out).

    ``limits.*`` targets are gathered into one :class:`~kq.core.Limits` (``checks`` are loaded from their
    ``module:callable`` names, raising :class:`ConfigError` for one that cannot be).
    """
    from kq.core._limits import Limits, load_check

    loop: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for name, given in values.items():
        option = CONSUME_OPTIONS[name]
        if not option.target or given is None:
            continue
        kind, _, argument = option.target.partition(".")
        value = not given if option.negate else given
        if argument == "checks":
            value = tuple(load_check(check) for check in given)
        (limits if kind == "limits" else loop)[argument] = value
    if limits:
        loop["limits"] = Limits(**limits)
    return loop


def consume_arguments(options: Mapping[str, Any]) -> list[str]:
    """The ``kq consume`` command-line options that give ``options`` (names of :data:`CONSUME_OPTIONS`).

    A flag is given when true; a repeatable option once per value; ``None`` leaves an option out.
    """
    arguments: list[str] = []
    for name, value in options.items():
        option = CONSUME_OPTIONS[name]
        if value is None or (option.type is bool and not value):
            continue
        if option.type is bool:
            arguments.append(option.long)
        elif option.multiple:
            for item in value:
                arguments += [option.long, str(item)]
        else:
            arguments += [option.long, str(value)]
    return arguments
