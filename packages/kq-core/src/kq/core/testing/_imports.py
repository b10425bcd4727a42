"""Helpers checking what a package imports, in a fresh interpreter: for packages built with
:func:`kq.core.plugins.lazy_exports`."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"


def modules_loaded_after(code: str) -> set[str]:
    """The names of the modules a fresh interpreter (this one's executable) has loaded after running
    ``code``: check what a worker's start imports by what it loads, never by timing it.

    Raises:
        AssertionError: ``code`` failed; the message has its standard error.
    """
    done = subprocess.run(
        [sys.executable, "-c", code + _PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{code!r} failed in a fresh interpreter:\n{done.stderr}"
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return set(loaded)


def check_lazy_exports(module_name: str) -> None:
    """Check, in a fresh interpreter, that every name in ``module_name``'s ``__all__`` resolves, that
    ``dir()`` lists them before they are imported, and that an unknown name raises
    :class:`AttributeError` naming the module.

    Raises:
        AssertionError: what did not hold, with the interpreter's standard error.
    """
    modules_loaded_after(
        f"import {module_name} as m\n"
        "assert set(m.__all__) <= set(dir(m)), sorted(set(m.__all__) - set(dir(m)))\n"
        "for name in m.__all__: getattr(m, name)\n"
        "try:\n"
        "    m.no_such_name_in_kq\n"
        "except AttributeError as error:\n"
        "    assert m.__name__ in str(error), error\n"
        "else:\n"
        "    raise AssertionError('an unknown name resolved')"
    )
