"""What the integration tests do when a broker cannot be had, and how they read ports from the environment."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["in_ci", "unavailable", "port_from_env"]


def in_ci() -> bool:
    """True when ``CI`` is set to anything but an empty string, 0, false or no."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    """Skip locally; fail under CI, where a missing broker is a broken setup, not a choice."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def port_from_env(name: str, default: int) -> int:
    """The port in the environment variable ``name``, else ``default``; a usage error if not a number."""
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise pytest.UsageError(f"{name} must be a port number, got {value!r}") from None
