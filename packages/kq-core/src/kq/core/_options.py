"""Declared, validated options: the one way every table of ``kq.toml`` is checked.

A driver class lists the options it accepts (``driver_options`` for ``[drivers.<name>]``,
``queue_options`` for the broker-specific keys of ``[queues.<name>]``); the core checks names and types
once, when the driver is built, so a typo in ``kq.toml`` is an error that names the key and the file
instead of a silently ignored setting. kq's own sections (``[console]``, ``[signing]``,
``[workers.<name>]``, ``[[listeners]]``, the core keys of queues and drivers, the top level) are
described with the same :class:`Option` and checked by the same :func:`resolve_options` when the file
is loaded; an unknown key names the closest known one ("did you mean").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kq.core._errors import ConfigError
from kq.core._numbers import DURATION_HINT, MAX_SECONDS, check_number, check_whole_number, parse_duration


@dataclass(frozen=True)
class Option:
    """One accepted option: its default, its type and a one-line help shown by ``kq managedriver``.

    A number (int or float) must be finite and within ``minimum`` to ``maximum``
    (:func:`~kq.core._numbers.check_number`): TOML and ``float()`` accept ``nan`` and ``inf``.

    Attributes:
        positive: A number that must be greater than zero (``minimum`` excluded, and 0 by default).
        minimum: The smallest number accepted (default: 0 when ``positive``, else ``-maximum``; a driver
            checks the meaning of its own negative values).
        maximum: The largest number accepted; the default, ten years in seconds, suits durations.
        validate: Checks and converts the value instead of the type check (kq's own sections, whose
            keys take lists, tables or names): returns the value or raises :class:`ValueError` with
            the message (it becomes a :class:`ConfigError` naming the key).
        duration: The number is seconds: a string may carry units (``"30s"``, ``"5m"``, ``"2h"``,
            ``"1h30m"``; :func:`~kq.core._numbers.parse_duration`). An integer option takes a whole
            number of seconds.
    """

    default: Any
    type: type | tuple[type, ...]
    help: str
    required: bool = False
    positive: bool = False
    minimum: float | None = None
    maximum: float = MAX_SECONDS
    validate: Callable[[Any], Any] | None = None
    duration: bool = False

    def check(self, key: str, value: Any, source: str | None) -> Any:
        """Return ``value`` converted to the option's type, or raise :class:`ConfigError`."""
        if self.validate is not None:
            try:
                return self.validate(value)
            except ValueError as exc:
                raise ConfigError(str(exc), key=key, source=source) from None
        accepted = self.type if isinstance(self.type, tuple) else (self.type,)
        if value is None and self.default is None and not self.required:
            return None
        if isinstance(value, str) and str not in accepted:
            value = _from_text(value, accepted, key, source, duration=self.duration)
        if isinstance(value, bool) and bool not in accepted:
            raise ConfigError(f"expected {_names(accepted)}, got a boolean", key=key, source=source)
        if not isinstance(value, bool) and isinstance(value, (int, float)):
            value = _check_number(self, key, value, accepted, source)
        if not isinstance(value, accepted):
            raise ConfigError(
                f"expected {_names(accepted)}, got {type(value).__name__} {value!r}", key=key, source=source
            )
        return value


def _check_number(
    option: Option, key: str, value: float, accepted: tuple[type, ...], source: str | None
) -> float:
    """``value`` finite and in the option's range; an int where a float is expected becomes a float
    (TOML ``30``)."""
    minimum = option.minimum if option.minimum is not None else 0 if option.positive else -option.maximum
    try:
        if isinstance(value, int) and float not in accepted:
            lowest = int(minimum) + 1 if option.positive else int(minimum)
            return check_whole_number(value, minimum=lowest, maximum=int(option.maximum))
        number = check_number(
            value, minimum=minimum, maximum=option.maximum, exclusive_minimum=option.positive
        )
    except ValueError as exc:
        raise ConfigError(str(exc), key=key, source=source) from None
    return number if float in accepted else value


def _from_text(
    text: str, accepted: tuple[type, ...], key: str, source: str | None, *, duration: bool = False
) -> Any:
    """Convert a string (a duration such as ``"5m"``, or from ``${VAR}``) to the number or boolean the
    option accepts."""
    if duration:
        seconds = parse_duration(text)
        if seconds is None:
            raise ConfigError(
                f"expected a duration ({DURATION_HINT}), got the text {text!r}", key=key, source=source
            )
        if float not in accepted and seconds.is_integer():
            return int(seconds)
        return seconds
    word = text.strip().lower()
    if bool in accepted and word in ("true", "false", "yes", "no", "1", "0"):
        return word in ("true", "yes", "1")
    if int in accepted or float in accepted:
        try:
            return int(word)
        except ValueError:
            pass
    if float in accepted:
        try:
            return float(word)
        except ValueError:
            pass
    raise ConfigError(f"expected {_names(accepted)}, got the text {text!r}", key=key, source=source)


def _names(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


#: How alike an unknown name must be to a known one to be offered as "did you mean" (difflib ratio).
SIMILAR = 0.8


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name ``name`` is most likely a typo of, or ``None``."""
    # Names that share too few letters cannot be alike enough: every driver option is checked against
    # the few keys kq reads in a driver's table, and difflib's import is then not needed.
    letters = Counter(name)
    candidates = [
        each for each in known if 2 * (letters & Counter(each)).total() >= SIMILAR * (len(name) + len(each))
    ]
    if not candidates:
        return None
    import difflib

    found = difflib.get_close_matches(name, candidates, n=1, cutoff=SIMILAR)
    return found[0] if found else None


def unknown_key_error(
    name: str, known: Iterable[str], *, prefix: str, source: str | None, noun: str = "key"
) -> ConfigError:
    """The error for key ``name`` of table ``prefix``: the accepted keys, and the closest one."""
    known = list(known)
    suggestion = closest(name, known)
    hint = f"; did you mean '{suggestion}'?" if suggestion else ""
    return ConfigError(
        f"unknown {noun} '{name}' (accepted: {', '.join(sorted(known)) or 'none'}){hint}",
        key=f"{prefix}.{name}" if prefix else name,
        source=source,
    )


def resolve_options(
    schema: Mapping[str, Option],
    values: Mapping[str, Any],
    *,
    prefix: str,
    source: str | None,
    noun: str = "option",
) -> dict[str, Any]:
    """Check ``values`` against ``schema`` and fill in defaults.

    Args:
        schema: The accepted options.
        values: What the configuration gave.
        prefix: Dotted path of the table, for error messages (``drivers.local``; ``""``: the top level).
        source: The configuration file, for error messages.
        noun: What an unknown name is called in the message (``option`` of a driver, ``key`` of a
            section).

    Raises:
        ConfigError: an unknown key (with the closest known one), a value of the wrong type or a
            missing required option.
    """
    unknown = sorted(set(values) - set(schema))
    if unknown:
        raise unknown_key_error(unknown[0], schema, prefix=prefix, source=source, noun=noun)
    resolved: dict[str, Any] = {}
    for name, option in schema.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in values:
            resolved[name] = option.check(key, values[name], source)
        elif option.required:
            raise ConfigError("this option is required", key=key, source=source)
        else:
            resolved[name] = option.default
    return resolved
