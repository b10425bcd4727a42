"""Allow-lists: what a handler may execute, and the ``[allow]`` sections they are configured in.

An entry is an exact string or ``re:<regular expression>``, matched against the whole value (the
expression is anchored at both ends). An empty list allows nothing. :class:`AllowList` holds names
(commands, URLs); :class:`AllowMap` holds targets with their methods (services, XML-RPC servers).

Python's :mod:`re` has no timeout, and a backtracking expression can take exponential time in the
length of the value it is matched against (``(a+)+b`` needs about a second for 24 characters, twice as
long for each character more). The value comes from a message, so two guards apply:

- :func:`compile_pattern` refuses the classic exponential shape, a repeated group whose only required
  part is itself a variable repeat (``(a+)+``, ``(\\w*)*``, ``(\\d+,?)+``, ``(x|a+)*``);
- ``re:`` entries are matched only against values of at most :data:`MAX_NAME_SUBJECT` characters
  (commands, services, methods) or :data:`MAX_URL_SUBJECT` (URLs); a longer value is not allowed by
  them. This bounds the work of expressions whose time grows polynomially with the value (``.*a.*b``).

Neither catches every slow expression (overlapping alternatives such as ``(a|a)+`` are not detected):
keep ``re:`` entries simple, a literal prefix and one ``.*`` or a character class.

``[allow]`` is open: each handler reads the section it declares (``Handler.allow_section``), as a
list of names (:meth:`AllowSettings.allow_list`) or a table of targets and methods
(:meth:`AllowSettings.allow_map`). Every section is checked for its shape and its ``re:`` entries when
the file is loaded; which handler reads it is known only when one is built (loading the file scans no
entry points), so a section no handler reads is caught then, if it is a near miss of one that is read.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from kq.core._errors import ConfigError, KqError

#: Longest command, service or method name ``re:`` entries are matched against. With this bound an
#: expression whose matching time grows with the cube of the length (``.*a.*a.*b``) takes about 10 ms.
MAX_NAME_SUBJECT = 255
#: Longest URL (HTTP request, XML-RPC server) ``re:`` entries are matched against: the usual URL limit.
#: An expression whose time grows with the square of the length (``.*a.*b``) takes about 5 ms on it.
MAX_URL_SUBJECT = 2048

_REPEATS = frozenset({"MAX_REPEAT", "MIN_REPEAT"})  # POSSESSIVE_REPEAT (3.11+) never backtracks


class UnsafePatternError(re.error):
    """A ``re:`` entry has a shape known to backtrack exponentially, such as ``(a+)+``."""


def compile_pattern(expression: str) -> re.Pattern[str]:
    """Compile the expression of a ``re:`` entry, refusing the nested repeats that backtrack exponentially.

    Raises:
        re.error: the expression is invalid.
        UnsafePatternError: a repeated group's only required part is itself a variable repeat
            (``(a+)+``, ``(\\w*)*``, ``(a{1,3})+``, ``(\\d+,?)+``, ``(x|a+)*``): matched against a long run
            of such characters that then fails, it tries every way of splitting the run. Possessive
            repeats and atomic groups (Python 3.11+: ``(a++)+``, ``(?>a+)+``) do not backtrack and pass.
    """
    compiled = re.compile(expression)
    parser = _parser()
    if _has_nested_repeat(parser.parse(expression)):
        raise UnsafePatternError(
            "a repeated group whose only required part is itself repeated, as in (a+)+ or (\\w*)*, "
            "can take exponential time on a value from a message; repeat once ((a+)+b -> a+b), put a "
            "required separator in the group ((\\w+\\.)+) or, on Python 3.11+, make the inner repeat "
            "possessive (a++)",
            expression,
        )
    return compiled


def _parser() -> Any:
    """The parser of :mod:`re` (``re._parser``; ``sre_parse`` before Python 3.11)."""
    try:
        return importlib.import_module("re._parser")
    except ImportError:  # Python 3.10; sre_parse warns of its deprecation from 3.11 on
        return importlib.import_module("sre_parse")


def _has_nested_repeat(pattern: Any) -> bool:
    """Whether some repeat of ``pattern`` (a parsed SubPattern), at any depth, is exponential."""
    for op, av in pattern.data:
        name = str(op)
        if name in _REPEATS and av[1] > 1 and _splits(av[2]):
            return True
        if name in _REPEATS or name == "POSSESSIVE_REPEAT":
            children = [av[2]]
        elif name == "SUBPATTERN":
            children = [av[-1]]
        elif name == "BRANCH":
            children = list(av[1])
        elif name == "ATOMIC_GROUP":
            children = [av]
        elif name in ("ASSERT", "ASSERT_NOT"):
            children = [av[1]]
        elif name == "GROUPREF_EXISTS":
            children = [child for child in av[1:] if child is not None]
        else:
            continue
        if any(_has_nested_repeat(child) for child in children):
            return True
    return False


def _splits(body: Any) -> bool:
    """Whether ``body``, repeated, can cut one run of characters into iterations in many ways.

    So it can when its only required item (or, if every item is optional, any item) varies in length:
    a repeat like ``a+``, ``\\w*`` or ``a{1,3}``, or a group or alternative that is such a body itself.
    A second required item (a separator) makes the cut points definite, and is not looked into.
    """
    parser = _parser()
    required = [item for item in body.data if parser.SubPattern(body.state, [item]).getwidth()[0] > 0]
    if len(required) > 1:
        return False
    for op, av in required or body.data:
        name = str(op)
        if name in _REPEATS and av[0] != av[1] and av[1] > 1 and av[2].getwidth()[1] > 0:
            return True
        if name == "SUBPATTERN" and _splits(av[-1]):
            return True
        if name == "BRANCH" and any(_splits(alternative) for alternative in av[1]):
            return True
    return False


class AllowList:
    """A set of exact names and anchored regular expressions; empty means deny everything.

    Args:
        entries: Exact names and ``re:`` expressions (see :func:`compile_pattern`).
        max_subject: The longest value ``re:`` entries are matched against; a longer one is allowed
            only by an exact entry. :data:`MAX_NAME_SUBJECT` for names, :data:`MAX_URL_SUBJECT` for URLs.

    Raises:
        re.error: an expression is invalid, or :class:`UnsafePatternError`: it backtracks exponentially.
    """

    def __init__(self, entries: Iterable[str] = (), *, max_subject: int = MAX_NAME_SUBJECT) -> None:
        self.entries = tuple(entries)
        self.max_subject = max_subject
        self._exact = frozenset(e for e in self.entries if not e.startswith("re:"))
        self._patterns = tuple(compile_pattern(e[3:]) for e in self.entries if e.startswith("re:"))

    def allows(self, value: str, *, pattern_subject: str | None = None) -> bool:
        """Whether ``value`` is allowed.

        Args:
            value: Compared with the exact entries (and with the patterns, unless ``pattern_subject``).
            pattern_subject: What ``re:`` entries are matched against instead (for URLs: exact entries
                name hosts, patterns match the whole URL). Longer than ``max_subject``, it is not
                matched at all (see :meth:`length_note`).
        """
        if value in self._exact:
            return True
        subject = value if pattern_subject is None else pattern_subject
        if len(subject) > self.max_subject:
            return False
        return any(p.fullmatch(subject) for p in self._patterns)

    def length_note(self, subject: str, what: str = "it") -> str:
        """``""``, or why the ``re:`` entries were not tried on ``subject`` (``what``), for a refusal."""
        if not self._patterns or len(subject) <= self.max_subject:
            return ""
        return (
            f"; {what} is {len(subject)} characters long, and re: entries are matched only against "
            f"values of at most {self.max_subject}"
        )

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __repr__(self) -> str:
        return f"AllowList({list(self.entries)!r})"


class AllowMap:
    """Allowed targets, each with its allowed methods: ``{"myapp.tasks": ["send_mail", "re:report_.*"]}``.

    Keys and methods are exact strings or anchored ``re:`` patterns. A target allows nothing until some
    entry names it, and then only the methods that entry lists.

    Args:
        entries: Targets mapped to their methods.
        max_target: The longest target ``re:`` keys are matched against (:data:`MAX_URL_SUBJECT` for
            XML-RPC server URLs).
        max_method: The longest method name ``re:`` methods are matched against.
    """

    def __init__(
        self,
        entries: Mapping[str, Iterable[str]] | None = None,
        *,
        max_target: int = MAX_NAME_SUBJECT,
        max_method: int = MAX_NAME_SUBJECT,
    ) -> None:
        self.entries = {key: tuple(methods) for key, methods in (entries or {}).items()}
        self._rules = [
            (AllowList([key], max_subject=max_target), AllowList(methods, max_subject=max_method))
            for key, methods in self.entries.items()
        ]

    def allows(self, target: str, method: str) -> bool:
        """Whether ``method`` of ``target`` is allowed."""
        return any(key.allows(target) and methods.allows(method) for key, methods in self._rules)

    def knows(self, target: str) -> bool:
        """Whether some entry names ``target`` (for an error message that says which part was refused)."""
        return any(key.allows(target) for key, _ in self._rules)

    def length_note(self, target: str, method: str) -> str:
        """``""``, or why some ``re:`` entries were not tried on ``target`` or ``method``."""
        for key, methods in self._rules:
            note = key.length_note(target, "the target")
            if not note and key.allows(target):
                note = methods.length_note(method, "the method name")
            if note:
                return note
        return ""

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __repr__(self) -> str:
        return f"AllowMap({self.entries!r})"


#: What the entries of a section are: a list of names, or targets mapped to their methods.
AllowEntries: TypeAlias = "tuple[str, ...] | Mapping[str, tuple[str, ...]]"
#: The sections of kq-core's own handlers: the shape each must have and what its entries name, for a
#: precise message at load (a plugin's section takes its shape from the file and is checked when read).
_CORE_SECTIONS: dict[str, tuple[type, str]] = {
    "commands": (list, "command names"),
    "urls": (list, "host names"),
    "services": (dict, "method names"),
}
#: How alike a section name must be to a declared one to be taken for a typo of it (difflib ratio).
_TYPO_CUTOFF = 0.75


@dataclass(frozen=True)
class AllowSettings:
    """``[allow]``: what handlers may execute, one section per kind of target; empty allows nothing.

    kq-core's handlers read ``commands`` (console commands), ``urls`` (HTTP hosts, or ``re:`` on the
    whole URL) and ``services`` (``module`` or ``module:attr`` -> methods); a plugin's handler reads the
    section it declares (kq-contrib-xmlrpc: ``xmlrpc``).

    Attributes:
        sections: Section name -> a tuple of entries (an allow-list) or a mapping of target -> methods.
        source: The configuration file, for error messages.
    """

    sections: Mapping[str, AllowEntries] = field(default_factory=dict)
    source: str | None = field(default=None, compare=False)

    def allow_list(self, name: str, *, max_subject: int = MAX_NAME_SUBJECT) -> AllowList:
        """Section ``name`` as an :class:`AllowList` (empty when absent).

        Raises:
            ConfigError: the section is a table of targets, or it is absent and a section nobody reads
                looks like a typo of it.
        """
        entries = self._entries(name)
        if entries is None:
            return AllowList(max_subject=max_subject)
        if isinstance(entries, Mapping):
            raise ConfigError(
                "must be a list of names or 're:' patterns (it is a table of targets and methods)",
                key=f"allow.{name}",
                source=self.source,
            )
        return AllowList(entries, max_subject=max_subject)

    def allow_map(
        self, name: str, *, max_target: int = MAX_NAME_SUBJECT, max_method: int = MAX_NAME_SUBJECT
    ) -> AllowMap:
        """Section ``name`` as an :class:`AllowMap` (empty when absent).

        Raises:
            ConfigError: the section is a list, or it is absent and a section nobody reads looks like
                a typo of it.
        """
        entries = self._entries(name)
        if entries is None:
            return AllowMap(max_target=max_target, max_method=max_method)
        if not isinstance(entries, Mapping):
            raise ConfigError(
                "expected a table of targets, each with a list of methods (it is a list)",
                key=f"allow.{name}",
                source=self.source,
            )
        return AllowMap(entries, max_target=max_target, max_method=max_method)

    def _entries(self, name: str) -> AllowEntries | None:
        if name in self.sections:
            return self.sections[name]
        # A typo such as "comands" would otherwise deny everything without a word.
        import difflib  # only a look-up of a section the configuration lacks pays for it

        for close in difflib.get_close_matches(name, list(self.sections), n=3, cutoff=_TYPO_CUTOFF):
            if close not in declared_sections():
                raise ConfigError(
                    f"unknown key: no installed handler reads [allow] {close}; did you mean '{name}'?",
                    key=f"allow.{close}",
                    source=self.source,
                )
        return None


def declared_sections() -> frozenset[str]:
    """The ``[allow]`` sections the installed handlers declare (this imports every handler type; a
    handler that fails to import is skipped, its own use reports why)."""
    from kq.core import _registry  # the registry imports the driver base: only when needed

    declared: set[str] = set()
    for entry in _registry.plugin_entries(_registry.HANDLER_GROUP):
        try:
            loaded = entry.load()
        except KqError:
            continue
        section = getattr(loaded, "allow_section", None)
        if isinstance(section, str):
            declared.add(section)
    return frozenset(declared)


def parse_allow(table: Mapping[str, Any], source: str | None) -> AllowSettings:
    """``[allow]`` checked for shape and ``re:`` safety: a section is a list of entries or a table of
    target -> list of methods (kq-core's own sections must have their own shape)."""
    sections: dict[str, AllowEntries] = {}
    for name, value in table.items():
        key = f"allow.{name}"
        shape, what = _CORE_SECTIONS.get(name, (None, "names"))
        if shape is dict or (shape is None and isinstance(value, dict)):
            if not isinstance(value, dict):
                raise ConfigError(f"expected a table, got {type(value).__name__}", key=key, source=source)
            sections[name] = {
                _pattern(target, f"{key}.{target}", source): _patterns(
                    methods, f"{key}.{target}", what, source
                )
                for target, methods in value.items()
            }
        elif shape is None and not isinstance(value, list):
            raise ConfigError(
                "must be a list of names or 're:' patterns, or a table of targets and their methods",
                key=key,
                source=source,
            )
        else:
            sections[name] = _patterns(value, key, what, source)
    return AllowSettings(sections=sections, source=source)


def _patterns(entries: Any, key: str, what: str, source: str | None) -> tuple[str, ...]:
    if not isinstance(entries, list) or not all(isinstance(e, str) and e for e in entries):
        raise ConfigError(f"must be a list of {what} or 're:' patterns", key=key, source=source)
    return tuple(_pattern(entry, key, source) for entry in entries)


def _pattern(entry: str, key: str, source: str | None) -> str:
    """Check one entry: an exact name, or ``re:`` and a valid, not exponential, expression."""
    if entry.startswith("re:"):
        try:
            compile_pattern(entry[3:])
        except UnsafePatternError as exc:
            raise ConfigError(
                f"regular expression {entry!r} refused: {exc}", key=key, source=source
            ) from None
        except re.error as exc:
            raise ConfigError(
                f"invalid regular expression {entry!r}: {exc}", key=key, source=source
            ) from None
    return entry
