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


def check_number(
    value: object,
    what: str = "",
    *,
    minimum: float = 0.0,
    maximum: float = MAX_SECONDS,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
    text: bool = False,
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

    Raises:
        ValueError: ``<what> must be a finite number between <minimum> and <maximum>, not <value>``.
    """
    number = _as_number(value, text)
    if (
        number is None
        or (isinstance(number, float) and not math.isfinite(number))
        or number < minimum
        or number > maximum
        or (exclusive_minimum and number == minimum)
        or (exclusive_maximum and number == maximum)
    ):
        bounds = _bounds(minimum, maximum, exclusive_minimum, exclusive_maximum)
        raise ValueError(_message(what, f"a finite number {bounds}", value))
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
