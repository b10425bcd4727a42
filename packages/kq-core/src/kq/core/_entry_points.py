"""Entry points read straight from the installed distributions' metadata folders.

Importing ``importlib.metadata`` costs a worker's start 40 to 60 ms (it brings ``email``, ``zipfile``,
``csv`` and more), a fifth of the time from spawn to first message, and kq reads entry points in every
process (drivers, handlers, listener plugins). What kq needs from it is small: for each folder on
``sys.path``, in order, the ``entry_points.txt`` of each ``*.dist-info`` (or ``*.egg-info``) folder,
the first distribution of a name winning, as ``importlib.metadata.entry_points()`` does.

:func:`scan` does that, and returns ``None`` (use ``importlib.metadata``) whenever the environment has
what it does not read: a ``sys.path`` entry that is not a folder (a zip archive, a wheel), or a finder on
``sys.meta_path`` that provides distributions of its own.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

_NORMALIZE = re.compile(r"[-_.]+")
#: Finders whose distributions are the folders on sys.path, which :func:`scan` reads itself.
_PATH_FINDERS = ("PathFinder", "MetadataPathFinder")


@dataclass(frozen=True)
class Distribution:
    """The distribution an entry point comes from (``name`` as its metadata spells it)."""

    name: str


@dataclass(frozen=True)
class EntryPoint:
    """An entry point, as much of ``importlib.metadata.EntryPoint`` as kq uses."""

    name: str
    value: str
    group: str
    dist: Distribution | None

    def load(self) -> Any:
        """Import ``module`` and return ``module:attribute.path`` (extras in brackets are ignored)."""
        module, _, attribute = self.value.partition(":")
        found: Any = importlib.import_module(module.strip())
        attribute = attribute.partition("[")[0].strip()
        for part in filter(None, attribute.split(".")):
            found = getattr(found, part)
        return found


def scan(group: str) -> list[EntryPoint] | None:
    """The entry points of ``group``, in ``sys.path`` order; ``None`` when this environment needs
    ``importlib.metadata`` to be read faithfully."""
    for finder in sys.meta_path:
        finder_name = getattr(finder, "__name__", type(finder).__name__)
        if hasattr(finder, "find_distributions") and finder_name not in _PATH_FINDERS:
            return None
    seen: set[str] = set()
    found: list[EntryPoint] = []
    for entry in sys.path:
        folder = entry or "."
        distributions = _FOLDERS.get(folder)
        if distributions is None:
            if not os.path.isdir(folder):
                if os.path.exists(folder):
                    return None  # a zip archive or a wheel on the path
                continue
            distributions = _FOLDERS[folder] = _list(folder)
        for distribution in distributions:
            # Distributions are told apart by their folder's name, as importlib.metadata does: the first
            # of a name wins, whatever groups it has.
            if distribution.key in seen:
                continue
            seen.add(distribution.key)
            pairs = distribution.groups.get(group)
            if pairs:
                dist = Distribution(distribution.name())
                found.extend(EntryPoint(name, value, group, dist) for name, value in pairs)
    return found


def forget() -> None:
    """Forget the folders read (after installing a distribution at run time, or in tests)."""
    _FOLDERS.clear()


class _Listed:
    """A distribution's metadata folder as :func:`scan` read it: its entry points by group, and its
    name, read from its metadata the first time an entry point of it is returned."""

    __slots__ = ("_name", "groups", "key", "path")

    def __init__(self, path: str, key: str, groups: dict[str, list[tuple[str, str]]]) -> None:
        self.path = path
        self.key = key
        self.groups = groups
        self._name: str | None = None

    def name(self) -> str:
        if self._name is None:
            self._name = _distribution_name(self.path, os.path.basename(self.path))
        return self._name


#: What :func:`scan` read in each folder of ``sys.path``, by folder: one listing and one read of each
#: ``entry_points.txt`` serve every group a process scans (drivers, listeners, handlers). Like the
#: registry's cache of each group, it lasts as long as the process, until :func:`forget`.
_FOLDERS: dict[str, list[_Listed]] = {}


def _list(folder: str) -> list[_Listed]:
    """The distributions whose metadata folders are in ``folder``, in name order."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    listed = []
    for name in names:
        if name.endswith((".dist-info", ".egg-info")):
            key = _NORMALIZE.sub("_", name.rpartition(".")[0].partition("-")[0]).lower()
            path = os.path.join(folder, name)
            listed.append(_Listed(path, key, _read(path)))
    return listed


def _distribution_name(metadata: str, folder_name: str) -> str:
    """The ``Name:`` of the distribution's metadata, else the folder name's first part."""
    for file_name in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(metadata, file_name), encoding="utf-8", errors="replace") as file:
                for line in file:
                    if not line.strip():
                        break  # end of the headers
                    if line.lower().startswith("name:"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            continue
    return folder_name.rpartition(".")[0].partition("-")[0]


def _read(metadata: str) -> dict[str, list[tuple[str, str]]]:
    """The entry points of a metadata folder, by group (none when it has no ``entry_points.txt``)."""
    try:
        with open(os.path.join(metadata, "entry_points.txt"), encoding="utf-8") as file:
            text = file.read()
    except OSError:
        return {}
    groups: dict[str, list[tuple[str, str]]] = {}
    pairs: list[tuple[str, str]] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            pairs = groups.setdefault(stripped[1:-1].strip(), [])
            continue
        name, sep, value = stripped.partition("=")
        if sep and pairs is not None:
            pairs.append((name.strip(), value.strip()))
    return groups
