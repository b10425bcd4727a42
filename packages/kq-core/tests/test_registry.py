"""Driver discovery: lazy, with clear errors for unknown, half-installed and broken drivers."""

from __future__ import annotations

import importlib.metadata
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from kq.core import PluginLoadError, UnknownPluginError
from kq.core import _registry as registry
from kq.core._entry_points import EntryPoint
from kq.core.plugins import driver_entries, driver_names, load_driver_class
from kq.drivers.sqlite import SqliteDriver


@pytest.fixture
def plugins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, importlib.metadata.EntryPoint | EntryPoint]]:
    """The real entry points plus fake ones the test adds, backed by modules written to tmp_path."""
    (tmp_path / "kqtest_needs_client.py").write_text("import kqtest_client_library_that_is_missing\n")
    (tmp_path / "kqtest_not_a_driver.py").write_text("class Thing:\n    pass\n")
    (tmp_path / "kqtest_crashes.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    real = registry._entry_points
    found = dict(real(registry.DRIVER_GROUP))
    for name, value in {
        "needs-client": "kqtest_needs_client:Driver",
        "not-a-driver": "kqtest_not_a_driver:Thing",
        "crashes": "kqtest_crashes:Driver",
        "gone": "kqtest_module_that_does_not_exist:Driver",
    }.items():
        found[name] = importlib.metadata.EntryPoint(name=name, value=value, group=registry.DRIVER_GROUP)
    registry.clear_cache()
    monkeypatch.setattr(
        registry, "_entry_points", lambda group: found if group == registry.DRIVER_GROUP else real(group)
    )
    yield found
    for module in ("kqtest_needs_client", "kqtest_not_a_driver", "kqtest_crashes"):
        sys.modules.pop(module, None)


def test_builtin_drivers_are_registered_like_plugins() -> None:
    assert {"memory", "sqlite"} <= set(driver_names())
    entries = {e.name: e for e in driver_entries()}
    assert entries["sqlite"].value == "kq.drivers.sqlite:SqliteDriver"
    assert entries["sqlite"].distribution == "kq-core"
    assert load_driver_class("sqlite") is SqliteDriver


def test_unknown_driver_lists_what_is_installed() -> None:
    with pytest.raises(
        UnknownPluginError, match=r"unknown driver type 'rabbit'; available: .*memory.*sqlite"
    ):
        load_driver_class("rabbit")


@pytest.mark.usefixtures("plugins")
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("needs-client", "needs the Python package 'kqtest_client_library_that_is_missing'"),
        ("not-a-driver", "is not a kq.core.Driver subclass"),
        ("crashes", "failed to load (RuntimeError: boom at import)"),
        ("gone", "cannot be imported from kqtest_module_that_does_not_exist:Driver"),
    ],
)
def test_broken_plugins_give_clear_errors(name: str, message: str) -> None:
    with pytest.raises(PluginLoadError) as caught:
        load_driver_class(name)
    assert message in str(caught.value)


@pytest.mark.usefixtures("plugins")
def test_listing_names_imports_nothing() -> None:
    names = driver_names()
    assert {"needs-client", "crashes", "gone"} <= set(names)
    assert "kqtest_crashes" not in sys.modules


@pytest.mark.usefixtures("plugins")
def test_broken_plugin_does_not_break_managedriver_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = pytest.importorskip("kq.cli").cli  # the listing is the CLI's; kq-core's tests may run without it
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["managedriver", "list", "--format", "json"])
    assert result.exit_code == 0, result.output
    types = {item["type"]: item for item in json.loads(result.stdout)["types"]}
    assert "capabilities" in types["sqlite"]
    assert "boom at import" in types["crashes"]["error"]
    assert "kqtest_client_library_that_is_missing" in types["needs-client"]["error"]
