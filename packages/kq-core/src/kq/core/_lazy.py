"""PEP 562 lazy exports: a public module's names, imported from their own modules on first use."""

from __future__ import annotations

import importlib
import sys

# Not `from typing import TYPE_CHECKING`: importing typing costs more than the rest of `import kq.core`
# (mypy reads any constant named TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any


def lazy_exports(
    module_name: str, exports: Mapping[str, str], *, package: str | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of module ``module_name``, for names imported on first use.

    A package assigns them at its end (``__getattr__, __dir__ = lazy_exports(__name__, {...})``), so
    that importing it does not import the modules behind its public names: a worker that never
    publishes need not import its driver's producer. List the same names under ``if TYPE_CHECKING:``
    imports for type checkers and in ``__all__``.

    Args:
        module_name: The public module (its ``__name__``).
        exports: Each public name and the submodule that defines it, relative to ``package``
            (``"_producer"``, ``"handlers._http"``).
        package: The package those submodules are in; ``module_name`` itself when not given.

    Returns:
        ``__getattr__``, which imports a public name once and caches it in the module's namespace
        (an unknown name raises :class:`AttributeError` naming the module), and ``__dir__``, which lists
        the module's attributes with the names not imported yet.
    """
    base = package or module_name

    def getattr_(name: str) -> Any:
        where = exports.get(name)
        if where is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{base}.{where}"), name)
        setattr(sys.modules[module_name], name, value)
        return value

    def dir_() -> list[str]:
        return sorted({*vars(sys.modules[module_name]), *exports})

    return getattr_, dir_
