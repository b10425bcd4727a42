"""Driver discovery through the ``kq.drivers`` entry-point group.

Entry points are scanned once; listing names imports nothing. A driver module is imported only when a
driver of that type is asked for, so ``kq --help`` does not pay for pika or boto3. kq-core registers its
own ``memory`` and ``sqlite`` drivers the same way third parties do.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from dataclasses import dataclass

from kq.core._driver import Driver
from kq.core._errors import DriverNotInstalledError, UnknownDriverError

logger = logging.getLogger(__name__)

#: The entry-point group drivers register in.
DRIVER_GROUP = "kq.drivers"


@dataclass(frozen=True)
class DriverEntry:
    """A registered driver type, not yet imported."""

    name: str
    value: str
    distribution: str | None

    def load(self) -> type[Driver]:
        """Import the driver class.

        Raises:
            DriverNotInstalledError: the module or its client library cannot be imported, or the entry
                point does not name a :class:`Driver` subclass.
        """
        module_name = self.value.partition(":")[0]
        dist = self.distribution or "the distribution that registered it"
        try:
            loaded = _entry_point(self.name).load()
        except ImportError as exc:
            missing = getattr(exc, "name", None)
            if missing and not missing.startswith(module_name):
                raise DriverNotInstalledError(
                    f"driver '{self.name}' needs the Python package '{missing}', which is not installed; "
                    f"reinstall {dist} (pip install {dist})"
                ) from exc
            raise DriverNotInstalledError(
                f"driver '{self.name}' cannot be imported from {self.value} ({exc}); reinstall {dist}"
            ) from exc
        except Exception as exc:
            raise DriverNotInstalledError(
                f"driver '{self.name}' from {dist} failed to load ({type(exc).__name__}: {exc})"
            ) from exc
        if not (isinstance(loaded, type) and issubclass(loaded, Driver)):
            raise DriverNotInstalledError(
                f"entry point '{self.name}' = '{self.value}' of {dist} is not a kq.core.Driver subclass"
            )
        return loaded


@functools.lru_cache(maxsize=1)
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for entry_point in importlib.metadata.entry_points(group=DRIVER_GROUP):
        if entry_point.name in found and found[entry_point.name].value != entry_point.value:
            logger.warning(
                "two distributions register driver '%s' (%s and %s); using the first",
                entry_point.name,
                found[entry_point.name].value,
                entry_point.value,
            )
            continue
        found[entry_point.name] = entry_point
    return found


def _entry_point(name: str) -> importlib.metadata.EntryPoint:
    return _entry_points()[name]


def driver_entries() -> list[DriverEntry]:
    """The registered driver types, sorted by name, without importing any of them."""
    entries = []
    for name, entry_point in sorted(_entry_points().items()):
        dist = entry_point.dist.name if entry_point.dist is not None else None
        entries.append(DriverEntry(name=name, value=entry_point.value, distribution=dist))
    return entries


def driver_names() -> list[str]:
    """Names of the registered driver types."""
    return sorted(_entry_points())


def load_driver_class(name: str) -> type[Driver]:
    """Import and return the driver class registered as ``name``.

    Raises:
        UnknownDriverError: no such driver type is installed (the message lists the installed ones).
        DriverNotInstalledError: it is registered but cannot be imported.
    """
    for entry in driver_entries():
        if entry.name == name:
            return entry.load()
    raise UnknownDriverError(name, driver_names(), what="driver type")


def clear_cache() -> None:
    """Forget the scanned entry points (after installing a distribution at run time, or in tests)."""
    _entry_points.cache_clear()
