"""Plugins: entry-point discovery and objects named ``module:attribute``.

kq finds its drivers, handlers and listeners through three entry-point groups, scanned once on first use
(listing names imports no plugin):

- :data:`DRIVER_GROUP` (``kq.drivers``): driver classes, by the name a ``[drivers.*]`` ``type`` gives;
  :func:`driver_entries` lists them as :class:`DriverEntry` (with the distribution that provides each),
  :func:`driver_names` names them and :func:`load_driver_class` imports one.
- :data:`HANDLER_GROUP` (``kq.handlers``): handler classes, by the name a queue's ``consumer`` gives;
  :func:`handler_names` names them.
- :data:`LISTENER_GROUP` (``kq.listeners``): functions ``register(dispatcher)`` run in every kq process.

:func:`plugin_entries` lists any group as :class:`PluginEntry` items and :func:`load_plugin` imports one
entry, with an error naming the plugin and its distribution when that fails.

:func:`import_object` imports what a setting names as ``module:attribute`` (``[[listeners]]``, a
handler class), and :func:`load_check` a ``kq consume --check`` function.

:func:`lazy_exports` gives a plugin's package the ``__getattr__`` and ``__dir__`` that import its public
names on first use, so that loading its entry point imports only what that entry needs (a driver's
producer, for instance, stays unloaded in a worker that never publishes).

The names are imported on first use (PEP 562), as in :mod:`kq.core`.
"""

from __future__ import annotations

from kq.core._lazy import TYPE_CHECKING
from kq.core._lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from kq.core._imports import import_object
    from kq.core._lazy import lazy_exports
    from kq.core._limits import load_check
    from kq.core._registry import (
        DRIVER_GROUP,
        HANDLER_GROUP,
        LISTENER_GROUP,
        DriverEntry,
        PluginEntry,
        driver_entries,
        driver_names,
        handler_names,
        load_driver_class,
        load_plugin,
        plugin_entries,
    )

__getattr__, __dir__ = _lazy_exports(
    __name__,
    {
        # entry-point groups
        "HANDLER_GROUP": "_registry",
        "DRIVER_GROUP": "_registry",
        "LISTENER_GROUP": "_registry",
        # discovery
        "DriverEntry": "_registry",
        "PluginEntry": "_registry",
        "driver_entries": "_registry",
        "driver_names": "_registry",
        "handler_names": "_registry",
        "plugin_entries": "_registry",
        # loading
        "import_object": "_imports",
        "load_check": "_limits",
        "load_driver_class": "_registry",
        "load_plugin": "_registry",
        # packaging
        "lazy_exports": "_lazy",
    },
    package="kq.core",
)

__all__ = [
    # entry-point groups
    "HANDLER_GROUP",
    "DRIVER_GROUP",
    "LISTENER_GROUP",
    # discovery
    "DriverEntry",
    "PluginEntry",
    "driver_entries",
    "driver_names",
    "handler_names",
    "plugin_entries",
    # loading
    "import_object",
    "load_check",
    "load_driver_class",
    "load_plugin",
    # packaging
    "lazy_exports",
]
