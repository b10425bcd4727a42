"""The public surfaces (kq.core, kq.core.driver, kq.core.plugins, kq.core.testing, ...): every name resolves
and is documented, the lazy maps agree with their type-checking imports, and importing them stays cheap.

Import cost is checked by what a fresh interpreter loads, never by timing (``benchmarks/bench_import.py``
measures the time).
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from kq.core.testing import modules_loaded_after

PUBLIC = (
    "kq.core",
    "kq.core.driver",
    "kq.core.plugins",
    "kq.core.handlers",
    "kq.core.listeners",
    "kq.core.watchdog",
    "kq.core.testing",
)
LAZY = ("kq.core", "kq.core.driver", "kq.core.plugins", "kq.core.handlers")

# What `import kq.core` must not load: the heavy third-party modules, the entry-point scanner and the
# parts of kq an application may never use.
HEAVY = ("psutil", "requests", "importlib.metadata")
HEAVY_KQ = ("kq.core.watchdog", "kq.core._redrive", "kq.core.handlers", "kq.core._http")


def heavy_among(modules: set[str]) -> list[str]:
    """The heavy modules (see HEAVY, HEAVY_KQ) among ``modules``."""
    return sorted(m for m in modules if m in HEAVY or any(m == k or m.startswith(f"{k}.") for k in HEAVY_KQ))


def test_import_kq_core_loads_only_its_lazy_machinery() -> None:
    loaded = modules_loaded_after("import kq.core")
    assert heavy_among(loaded) == []
    assert sorted(m for m in loaded if m.startswith("kq.")) == ["kq.core", "kq.core._lazy", "kq.core.version"]


def test_driver_surface_loads_neither_psutil_nor_requests() -> None:
    code = "import kq.core.driver as d\nfor name in d.__all__: getattr(d, name)"
    loaded = modules_loaded_after(code)
    assert [m for m in ("psutil", "requests") if m in loaded] == []
    assert [m for m in loaded if m.startswith(("kq.core.watchdog", "kq.core.handlers", "kq.cli"))] == []


def test_plugins_surface_scans_nothing_on_import() -> None:
    loaded = modules_loaded_after("import kq.core.plugins")
    assert heavy_among(loaded) == []


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_resolves(name: str) -> None:
    module = importlib.import_module(name)
    assert len(module.__all__) == len(set(module.__all__)), "a name is listed twice in __all__"
    for public in module.__all__:
        getattr(module, public)
    assert set(module.__all__) <= set(dir(module))


@pytest.mark.parametrize("name", LAZY)
def test_lazy_names_are_the_public_names(name: str) -> None:
    """Nothing is importable through the lazy map that ``__all__`` does not promise."""
    code = f"import json, {name} as m\nprint(json.dumps(sorted(set(dir(m)) - set(vars(m)))))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert set(json.loads(result.stdout)) == set(importlib.import_module(name).__all__) - {"__version__"}
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        getattr(importlib.import_module(name), "nosuch")  # noqa: B009 - a literal name on purpose


@pytest.mark.parametrize("name", LAZY)
def test_type_checking_imports_match_the_lazy_map(name: str) -> None:
    """mypy reads the TYPE_CHECKING imports, the interpreter the lazy map: a moved name must move in both."""
    module = importlib.import_module(name)
    tree = ast.parse(Path(module.__file__ or "").read_text())
    typed: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom)
                assert statement.module
                for alias in statement.names:
                    typed[alias.asname or alias.name] = statement.module.removeprefix("kq.core.")
    lazy = {n: getattr(module, n).__module__ for n in module.__all__ if _defined_in_a_module(module, n)}
    assert set(typed) == set(module.__all__) - {"__version__"}
    for public, where in typed.items():
        # Constants carry no __module__; they are checked by the set above and by resolving them.
        if public in lazy:
            assert lazy[public] == f"kq.core.{where}", public


@pytest.mark.parametrize("name", LAZY)
def test_every_public_name_is_documented(name: str) -> None:
    module = importlib.import_module(name)
    undocumented = [n for n in module.__all__ if n != "__version__" and n not in (module.__doc__ or "")]
    assert undocumented == []


def test_application_surface_leaves_driver_and_cli_helpers_out() -> None:
    import kq.core

    for helper in ("Driver", "Consumer", "QueueManager", "Capabilities", "Option", "DriverSpec", "QueueSpec"):
        assert helper not in kq.core.__all__
    for helper in ("import_object", "load_check", "build_handler", "attempt_of", "run_command", "Watchdog"):
        assert helper not in kq.core.__all__
        with pytest.raises(AttributeError):
            getattr(kq.core, helper)


def _defined_in_a_module(module: ModuleType, name: str) -> bool:
    value = getattr(module, name)
    return isinstance(getattr(value, "__module__", None), str) and (
        isinstance(value, type) or callable(value)
    )
