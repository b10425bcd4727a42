"""Allow-lists: what a message consumer may execute.

An entry is an exact string or ``re:<regular expression>``, matched against the whole value (the
expression is anchored at both ends). An empty list allows nothing. :class:`AllowList` holds names
(commands, URLs); :class:`AllowMap` holds targets with their methods (services, XML-RPC servers).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping


class AllowList:
    """A set of exact names and anchored regular expressions; empty means deny everything."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.entries = tuple(entries)
        self._exact = frozenset(e for e in self.entries if not e.startswith("re:"))
        self._patterns = tuple(re.compile(e[3:]) for e in self.entries if e.startswith("re:"))

    def allows(self, value: str, *, pattern_subject: str | None = None) -> bool:
        """Whether ``value`` is allowed.

        Args:
            value: Compared with the exact entries (and with the patterns, unless ``pattern_subject``).
            pattern_subject: What ``re:`` entries are matched against instead (for URLs: exact entries
                name hosts, patterns match the whole URL).
        """
        if value in self._exact:
            return True
        subject = value if pattern_subject is None else pattern_subject
        return any(p.fullmatch(subject) for p in self._patterns)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __repr__(self) -> str:
        return f"AllowList({list(self.entries)!r})"


class AllowMap:
    """Allowed targets, each with its allowed methods: ``{"myapp.tasks": ["send_mail", "re:report_.*"]}``.

    Keys and methods are exact strings or anchored ``re:`` patterns. A target allows nothing until some
    entry names it, and then only the methods that entry lists.
    """

    def __init__(self, entries: Mapping[str, Iterable[str]] | None = None) -> None:
        self.entries = {key: tuple(methods) for key, methods in (entries or {}).items()}
        self._rules = [(AllowList([key]), AllowList(methods)) for key, methods in self.entries.items()]

    def allows(self, target: str, method: str) -> bool:
        """Whether ``method`` of ``target`` is allowed."""
        return any(key.allows(target) and methods.allows(method) for key, methods in self._rules)

    def knows(self, target: str) -> bool:
        """Whether some entry names ``target`` (for an error message that says which part was refused)."""
        return any(key.allows(target) for key, _ in self._rules)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __repr__(self) -> str:
        return f"AllowMap({self.entries!r})"
