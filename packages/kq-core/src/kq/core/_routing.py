"""AMQP topic routing, implemented once for every driver whose broker has no native topic exchange.

Keys and patterns are words separated by ``.``; in a pattern ``*`` matches exactly one word and ``#``
matches zero or more words; a pattern matches the **whole** key (the PHP library's SQS emulation matched
substrings, so ``*.world`` matched ``a.b.world``; here it does not). Empty words are words: the URL
``https://a.b/c`` becomes the key ``https...a.b.c``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from kq.core._errors import MessageFormatError


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    words: list[str] = []
    for word in pattern.split("."):
        if word == "#" and words and words[-1] == "#":
            continue  # "#.#" means the same as "#"
        words.append(word)
    if words == ["#"]:
        return re.compile(r".*\Z", re.DOTALL)
    # Each "#" carries its own dots so that it can match zero words: a leading "#" is "zero or more
    # words, each followed by a dot", any other "#" is "zero or more words, each preceded by a dot".
    parts: list[str] = []
    for index, word in enumerate(words):
        if word == "#":
            parts.append(r"(?:[^.]*\.)*" if index == 0 else r"(?:\.[^.]*)*")
            continue
        if index > 0 and not (index == 1 and words[0] == "#"):
            parts.append(r"\.")
        parts.append(r"[^.]*" if word == "*" else re.escape(word))
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


def topic_matches(pattern: str, key: str) -> bool:
    """Return whether routing ``key`` matches the AMQP topic ``pattern``.

    >>> topic_matches("hello.*", "hello.world")
    True
    >>> topic_matches("*.world", "a.b.world")
    False
    >>> topic_matches("hello.#", "hello")
    True
    """
    return _compile(pattern).match(key) is not None


def matches_any(patterns: Iterable[str], key: str) -> bool:
    """Return whether ``key`` matches one of ``patterns``; no patterns means every key matches."""
    found = False
    for pattern in patterns:
        found = True
        if topic_matches(pattern, key):
            return True
    return not found


def check_routing_key(key: str) -> str:
    """Validate a routing key (no wildcards, at most 255 bytes as in AMQP) and return it."""
    if "*" in key or "#" in key:
        raise MessageFormatError(f"routing key {key!r} must not contain the wildcards '*' or '#'")
    if len(key.encode()) > 255:
        raise MessageFormatError(f"routing key {key[:40]!r}... is longer than 255 bytes")
    return key


def command_routing_key(command: str) -> str:
    """Default key of a console command message: ``app:cmd`` -> ``app.cmd``."""
    return command.replace(":", ".")


def url_routing_key(url: str) -> str:
    """Default key of an HTTP or XML-RPC message: ``:`` and ``/`` become ``.``.

    Wildcard characters (a URL fragment's ``#``, a ``*`` in a path) become ``_`` and the key is cut to
    AMQP's 255 bytes, so that every URL has a valid key.
    """
    key = url.replace(":", ".").replace("/", ".").replace("#", "_").replace("*", "_")
    return key.encode()[:255].decode(errors="ignore")
