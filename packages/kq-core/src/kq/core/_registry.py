"""Plugin discovery through entry points: drivers, handlers and listeners (public: :mod:`kq.core.plugins`).

Three groups, read from the installed distributions' metadata (:mod:`kq.core._entry_points`, or
``importlib.metadata`` where that is needed):

- ``kq.drivers``: driver types (``sqlite = "kq.drivers.sqlite:SqliteDriver"``);
- ``kq.handlers``: handler types (execution types), named in ``[queues.<name>] consumer``
  (``console_command = "kq.core.handlers:ConsoleCommandHandler"``);
- ``kq.listeners``: functions ``register(dispatcher)`` that add event listeners in every kq process.

Each group is scanned once; listing names imports nothing. A plugin module is imported only when it is
asked for, so ``kq --help`` does not pay for pika or boto3. kq-core registers its own drivers and
handlers the same way third parties do; a plugin that fails to import raises an error naming it and its
distribution, and never breaks the others.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kq.core._entry_points import EntryPoint, forget, scan
from kq.core._errors import PluginLoadError, UnknownPluginError

if TYPE_CHECKING:
    import importlib.metadata

    from kq.core._driver import Driver

logger = logging.getLogger(__name__.replace("._", "."))

#: The entry-point group drivers register in.
DRIVER_GROUP = "kq.drivers"
#: The entry-point group of message consumer types.
HANDLER_GROUP = "kq.handlers"
#: The entry-point group of listener plugins (``register(dispatcher)`` functions).
LISTENER_GROUP = "kq.listeners"


@dataclass(frozen=True)
class PluginEntry:
    """A registered plugin, not yet imported."""

    name: str
    value: str
    distribution: str | None
    group: str = DRIVER_GROUP

    def load(self) -> Any:
        """Import the plugin.

        Raises:
            PluginLoadError: the module or a library it needs cannot be imported, or importing it
                failed; the message names the plugin and its distribution.
        """
        module_name = self.value.partition(":")[0]
        dist = self.distribution or "the distribution that registered it"
        what = _KIND[self.group]
        try:
            return _entry_points(self.group)[self.name].load()
        except ImportError as exc:
            missing = getattr(exc, "name", None)
            if missing and not missing.startswith(module_name):
                raise PluginLoadError(
                    f"{what} '{self.name}' needs the Python package '{missing}', which is not installed; "
                    f"reinstall {dist} (pip install {dist})"
                ) from exc
            raise PluginLoadError(
                f"{what} '{self.name}' cannot be imported from {self.value} ({exc}); reinstall {dist}"
            ) from exc
        except Exception as exc:
            raise PluginLoadError(
                f"{what} '{self.name}' from {dist} failed to load ({type(exc).__name__}: {exc})"
            ) from exc


class DriverEntry(PluginEntry):
    """A registered driver type, not yet imported."""

    def load(self) -> type[Driver]:
        """Import the driver class (raises PluginLoadError, see :meth:`PluginEntry.load`)."""
        from kq.core._driver import Driver

        loaded = super().load()
        if not (isinstance(loaded, type) and issubclass(loaded, Driver)):
            dist = self.distribution or "the distribution that registered it"
            raise PluginLoadError(
                f"entry point '{self.name}' = '{self.value}' of {dist} is not a kq.core.Driver subclass"
            )
        return loaded


_KIND = {DRIVER_GROUP: "driver", HANDLER_GROUP: "handler", LISTENER_GROUP: "listener plugin"}


@functools.cache
def _entry_points(group: str) -> dict[str, importlib.metadata.EntryPoint | EntryPoint]:
    # Read from the metadata folders where that is faithful (see _entry_points.py): importing
    # importlib.metadata would cost every worker's start a fifth of its time.
    scanned = scan(group)
    if scanned is None:
        import importlib.metadata

    found: dict[str, importlib.metadata.EntryPoint | EntryPoint] = {}
    for entry_point in scanned if scanned is not None else importlib.metadata.entry_points(group=group):
        if entry_point.name in found and found[entry_point.name].value != entry_point.value:
            logger.warning(
                "two distributions register %s '%s' (%s and %s); using the first",
                _KIND[group],
                entry_point.name,
                found[entry_point.name].value,
                entry_point.value,
            )
            continue
        found[entry_point.name] = entry_point
    return found


def plugin_entries(group: str) -> list[PluginEntry]:
    """The plugins registered in ``group``, sorted by name, without importing any of them."""
    cls = DriverEntry if group == DRIVER_GROUP else PluginEntry
    entries = []
    for name, entry_point in sorted(_entry_points(group).items()):
        dist = entry_point.dist.name if entry_point.dist is not None else None
        entries.append(cls(name=name, value=entry_point.value, distribution=dist, group=group))
    return entries


def driver_entries() -> list[DriverEntry]:
    """The registered driver types, sorted by name, without importing any of them."""
    return [e for e in plugin_entries(DRIVER_GROUP) if isinstance(e, DriverEntry)]


def driver_names() -> list[str]:
    """Names of the registered driver types."""
    return sorted(_entry_points(DRIVER_GROUP))


def handler_names() -> list[str]:
    """Names of the registered message consumer types."""
    return sorted(_entry_points(HANDLER_GROUP))


def load_driver_class(name: str) -> type[Driver]:
    """Import and return the driver class registered as ``name``.

    Raises:
        UnknownPluginError: no such driver type is installed (the message lists the installed ones).
        PluginLoadError: it is registered but cannot be imported.
    """
    for entry in driver_entries():
        if entry.name == name:
            return entry.load()
    raise UnknownPluginError(name, driver_names(), what="driver type")


def load_plugin(group: str, name: str) -> Any:
    """Import and return the plugin registered as ``name`` in ``group``.

    Raises:
        UnknownPluginError: nothing has that name (the message lists the registered ones).
        PluginLoadError: it is registered but cannot be imported.
    """
    for entry in plugin_entries(group):
        if entry.name == name:
            return entry.load()
    raise UnknownPluginError(name, _entry_points(group), what=_KIND[group])


def clear_cache() -> None:
    """Forget the scanned entry points (after installing a distribution at run time, or in tests)."""
    _entry_points.cache_clear()
    forget()
