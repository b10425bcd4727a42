"""The console defaults run kq's own command line, from kq-cli: without it, a clear error at start."""

from __future__ import annotations

import sys

import pytest

from kq.core import (
    AllowList,
    ConfigError,
    ConsoleCommandHandler,
    InProcessConsoleCommandHandler,
)
from kq.core._config import ConsoleSettings

ALLOWED = AllowList(["echoback"])


@pytest.fixture
def without_kq_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the kq-cli distribution were not installed."""
    monkeypatch.setattr("kq.core._settings._kq_cli_installed", lambda: False)


def test_the_defaults_run_kq_cli_when_installed() -> None:
    assert ConsoleSettings().argv_prefix() == (sys.executable, "-m", "kq.cli")
    assert ConsoleSettings().callable == "kq.cli:cli"
    ConsoleSettings().check_callable()


@pytest.mark.usefixtures("without_kq_cli")
def test_the_default_prefix_without_kq_cli_names_the_distribution() -> None:
    with pytest.raises(ConfigError, match=r"pip install kq-cli, or set \[console\] prefix") as info:
        ConsoleCommandHandler(ConsoleSettings(), ALLOWED)
    assert info.value.key == "console.prefix"


@pytest.mark.usefixtures("without_kq_cli")
def test_the_default_callable_without_kq_cli_names_the_distribution() -> None:
    with pytest.raises(ConfigError, match=r"pip install kq-cli, or set \[console\] callable") as info:
        InProcessConsoleCommandHandler(ConsoleSettings(), ALLOWED)
    assert info.value.key == "console.callable"


@pytest.mark.usefixtures("without_kq_cli")
def test_configured_programs_need_no_kq_cli() -> None:
    handler = ConsoleCommandHandler(ConsoleSettings(prefix=("python", "manage.py")), ALLOWED)
    assert handler.prefix == ("python", "manage.py")
    in_process = InProcessConsoleCommandHandler(ConsoleSettings(callable="json:dumps"), ALLOWED)
    assert in_process.entry_name == "json:dumps"
