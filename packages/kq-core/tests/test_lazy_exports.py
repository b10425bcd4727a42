"""``kq.core.plugins.lazy_exports``: a plugin package's names, imported from their modules on first use."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kq.core.testing import check_lazy_exports, modules_loaded_after

INIT = """
from kq.core.plugins import lazy_exports
from {name}._driver import Driver

_LAZY = {{"Producer": "_producer", "Helper": "sub._helper"}}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
__all__ = ["Driver", "Producer", "Helper"]
"""


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[str]:
    """A plugin-like package, importable under a name no other test uses."""
    name = "lazy_plugin_" + re.sub(r"\W+", "_", request.node.name.removeprefix("test_"))
    root = tmp_path / name
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text(INIT.format(name=name))
    (root / "_driver.py").write_text("class Driver: pass\n")
    (root / "_producer.py").write_text("class Producer: pass\n")
    (root / "sub" / "__init__.py").write_text("")
    (root / "sub" / "_helper.py").write_text("def Helper() -> int: return 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]


def test_a_name_is_imported_only_when_first_used(package: str) -> None:
    module = importlib.import_module(package)
    assert f"{package}._producer" not in sys.modules
    assert module.Producer.__module__ == f"{package}._producer"
    assert f"{package}._producer" in sys.modules
    assert vars(module)["Producer"] is module.Producer  # cached: the hook is not called again


def test_names_are_relative_to_the_package_itself_by_default(package: str) -> None:
    module = importlib.import_module(package)
    assert module.Helper() == 7
    assert module.Helper.__module__ == f"{package}.sub._helper"


def test_dir_lists_the_names_not_imported_yet(package: str) -> None:
    module = importlib.import_module(package)
    assert {"Driver", "Producer", "Helper"} <= set(dir(module))
    assert "Producer" not in vars(module)


def test_an_unknown_name_raises_attribute_error_naming_the_module(package: str) -> None:
    module = importlib.import_module(package)
    with pytest.raises(AttributeError, match=rf"module '{package}' has no attribute 'nosuch'"):
        getattr(module, "nosuch")  # noqa: B009 - a literal name on purpose


def test_package_names_where_the_modules_are(package: str) -> None:
    from kq.core.plugins import lazy_exports

    getattr_, _ = lazy_exports(package, {"Helper": "_helper"}, package=f"{package}.sub")
    importlib.import_module(package)
    assert getattr_("Helper")() == 7


def test_check_lazy_exports_passes_a_sound_package(
    package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    check_lazy_exports(package)
    assert f"{package}._producer" not in modules_loaded_after(f"import {package}")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('"Producer": "_producer"', '"Producer": "_driver"'), "has no attribute 'Producer'"),
        (('__all__ = ["Driver", ', '__all__ = ["Driver", "Unlisted", '), "Unlisted"),
    ],
    ids=["a name its module lacks", "a name missing from the map"],
)
def test_check_lazy_exports_fails_a_broken_package(
    package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: tuple[str, str], expected: str
) -> None:
    init = tmp_path / package / "__init__.py"
    init.write_text(init.read_text().replace(*change))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(AssertionError, match=expected):
        check_lazy_exports(package)


def test_modules_loaded_after_reports_the_code_that_failed() -> None:
    with pytest.raises(AssertionError, match="ZeroDivisionError"):
        modules_loaded_after("1 / 0")
