"""Allow-lists: what a message consumer may execute.

An entry is an exact string or ``re:<regular expression>``, matched against the whole value (the
expression is anchored at both ends). An empty list allows nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


class AllowList:
    """A set of exact names and anchored regular expressions; empty means deny everything."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.entries = tuple(entries)
        self._exact = frozenset(e for e in self.entries if not e.startswith("re:"))
        self._patterns = tuple(re.compile(e[3:]) for e in self.entries if e.startswith("re:"))

    def allows(self, value: str) -> bool:
        """Whether ``value`` is allowed."""
        if value in self._exact:
            return True
        return any(p.fullmatch(value) for p in self._patterns)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __repr__(self) -> str:
        return f"AllowList({list(self.entries)!r})"
