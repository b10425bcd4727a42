"""Loading objects named ``module:attribute`` in the configuration and on the command line."""

from __future__ import annotations

import importlib
from typing import Any

from kq.core._errors import ConfigError


def import_object(name: str, *, what: str, key: str | None = None, source: str | None = None) -> Any:
    """Import ``module:attr[.attr]`` and return the object.

    Raises:
        ConfigError: the module cannot be imported or has no such attribute; the message says ``what``
            was being loaded, and names ``key`` and ``source``.
    """
    module_name, _, attribute = name.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split(".") if attribute else ():
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load {what} {name!r}: {exc}", key=key, source=source) from None
    return target
