"""One check for every number kq reads: configuration, command-line options, message fields.

TOML (``nan``, ``inf``), Python's ``float()`` and click's ``FLOAT`` all accept values that are not
numbers or not finite, and every comparison with NaN is false: ``nan <= 0`` lets NaN past a "must be
positive" test, and an infinite or huge duration overflows time arithmetic (``time.time() + x``,
``threading.Event.wait(x)``). So every number goes through :func:`check_number` (or
:func:`check_whole_number`), which refuses what is not finite or outside its range with one message
format: ``must be a finite number between 0 and 315576000, not nan``. Callers turn the ``ValueError``
into the error of their surface (a :class:`~kq.core.ConfigError` naming the key, a
:class:`~kq.core.MessageFormatError`, a click usage error naming the option, a signature reason).
"""

from __future__ import annotations

import math
import re
from typing import Final

#: Longest duration, in seconds, kq accepts anywhere (ten years of 365.25 days): timeouts, delays,
#: TTLs, ``max_age``, limits. Far below what time arithmetic overflows at.
MAX_SECONDS: Final = 315_576_000.0
#: Latest time kq accepts as a Unix timestamp (9999-12-31T23:59:59Z).
MAX_TIMESTAMP: Final = 253_402_300_799.0
#: Largest count kq accepts (messages, attempts, deliveries): a signed 64-bit integer.
MAX_COUNT: Final = 2**63 - 1
#: Characters of a refused text value quoted in the error (a header can be long).
_SHOWN_CHARS = 40


#: Units a duration may be written with, in seconds.
DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: How the units are shown in error messages.
DURATION_HINT: Final = "seconds, or with a unit: 500ms, 30s, 5m, 2h, 1d, 1h30m"
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float | None:
    """The seconds ``text`` says, or ``None`` when it is not a duration.

    A plain number is seconds (``"90"``, ``"1.5"``); a number with a unit is converted (``"500ms"``,
    ``"30s"``, ``"5m"``, ``"2h"``, ``"1d"``), and parts add up (``"1h30m"``). Case and spaces around
    are ignored. The value is not range-checked: :func:`check_number` with ``duration=True`` does both.
    """
    word = text.strip().lower()
    plain = _as_number(word, True)
    if plain is not None:
        return float(plain)
    if not _DURATION.fullmatch(word):
        return None
    return sum(float(number) * DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(word))


def check_number(
    value: object,
    what: str = "",
    *,
    minimum: float = 0.0,
    maximum: float = MAX_SECONDS,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
    text: bool = False,
    duration: bool = False,
) -> float:
    """Return ``value`` as a float if it is a finite number in range; raise ``ValueError`` otherwise.

    Args:
        value: An int or float (never a bool); with ``text``, also a string such as ``"2.5"``.
        what: What the value is, to start the error message (empty when the caller names it itself,
            as a ConfigError names its key).
        minimum: The smallest value accepted.
        maximum: The largest value accepted.
        exclusive_minimum: ``minimum`` itself is refused (``0`` for "greater than zero").
        exclusive_maximum: ``maximum`` itself is refused.
        text: Accept a string and read the number from it.
        duration: The value is seconds: a string may also carry units (:func:`parse_duration`).

    Raises:
        ValueError: ``<what> must be a finite number between <minimum> and <maximum>, not <value>``.
    """
    number = parse_duration(value) if duration and isinstance(value, str) else _as_number(value, text)
    if (
        number is None
        or (isinstance(number, float) and not math.isfinite(number))
        or number < minimum
        or number > maximum
        or (exclusive_minimum and number == minimum)
        or (exclusive_maximum and number == maximum)
    ):
        bounds = _bounds(minimum, maximum, exclusive_minimum, exclusive_maximum)
        # A text that is no duration is told how to write one; a number is told its range.
        written = duration and isinstance(value, str)
        kind = f"a duration {bounds} ({DURATION_HINT})" if written else f"a finite number {bounds}"
        raise ValueError(_message(what, kind, value))
    return float(number)


def check_whole_number(
    value: object, what: str = "", *, minimum: int = 0, maximum: int = MAX_COUNT, text: bool = False
) -> int:
    """Return ``value`` if it is an integer (never a bool) from ``minimum`` to ``maximum``.

    Args:
        value: An int; with ``text``, also a string such as ``"10"``.
        what: What the value is, to start the error message (see :func:`check_number`).
        minimum: The smallest value accepted.
        maximum: The largest value accepted.
        text: Accept a string and read the number from it.

    Raises:
        ValueError: ``<what> must be a whole number between <minimum> and <maximum>, not <value>``.
    """
    number = _as_number(value, text)
    if not isinstance(number, int) or not minimum <= number <= maximum:
        raise ValueError(_message(what, f"a whole number {_bounds(minimum, maximum, False, False)}", value))
    return number


def _as_number(value: object, text: bool) -> int | float | None:
    """``value`` as an int or float, or ``None`` when it is none (booleans are not numbers here)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if text and isinstance(value, str):
        word = value.strip()
        try:
            return int(word)
        except ValueError:
            pass
        try:
            return float(word)
        except ValueError:
            return None
    return None


def _bounds(minimum: float, maximum: float, exclusive_minimum: bool, exclusive_maximum: bool) -> str:
    low = f"{_show(minimum)}{' (excluded)' if exclusive_minimum else ''}"
    high = f"{_show(maximum)}{' (excluded)' if exclusive_maximum else ''}"
    return f"between {low} and {high}"


def _message(what: str, kind: str, value: object) -> str:
    return f"{what + ' ' if what else ''}must be {kind}, not {_shown(value)}"


def _show(bound: float) -> str:
    """A bound as people write it: ``0``, ``0.01``, ``315576000``."""
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


def _shown(value: object) -> str:
    """The refused value, quoted when it is text, cut when it is long."""
    if isinstance(value, str):
        cut = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "..."
        return repr(cut)
    if isinstance(value, (bool, int, float)):
        shown = repr(value)
        return shown if len(shown) <= _SHOWN_CHARS else f"{shown[:_SHOWN_CHARS]}..."
    return f"a {type(value).__name__}"
