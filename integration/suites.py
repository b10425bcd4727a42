"""Loading a driver package's conformance test module into the integration tests.

Each driver keeps its conformance classes next to its code (``packages/<dist>/tests/test_conformance.py``,
where they skip without a broker named in the environment); the ``integration/test_*_conformance.py``
modules load that file by path and collect its classes, so that they run here against the brokers
the harness starts.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["load_test_module", "suite_classes"]


def load_test_module(path: Path, name: str) -> ModuleType:
    """Import the test module at ``path`` as ``name`` (test folders are not packages)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None, path
    assert spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: dataclasses look their module up in sys.modules.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def suite_classes(module: ModuleType) -> dict[str, type]:
    """The ``Test*`` classes of ``module``, by name."""
    found = vars(module).items()
    return {name: value for name, value in found if name.startswith("Test") and isinstance(value, type)}
