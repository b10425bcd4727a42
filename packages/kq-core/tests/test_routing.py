"""AMQP topic routing: ``*`` is one word, ``#`` is zero or more words, patterns match the whole key."""

from __future__ import annotations

import pytest

from kq.core import MessageFormatError, command_routing_key, url_routing_key
from kq.core._routing import check_routing_key
from kq.core.driver import matches_any, topic_matches

# The PHP library's routing-key tests: every pattern against both keys.
PHP_KEYS = ("hello.world", "bonjour.monde")
PHP_CASES = [
    ("hello.world", (True, False)),
    ("bonjour.monde", (False, True)),
    ("hello.*", (True, False)),
    ("*.world", (True, False)),
    ("hello.#", (True, False)),
    ("#.world", (True, False)),
    ("#", (True, True)),
]


@pytest.mark.parametrize(("pattern", "expected"), PHP_CASES)
def test_php_library_cases(pattern: str, expected: tuple[bool, bool]) -> None:
    assert tuple(topic_matches(pattern, key) for key in PHP_KEYS) == expected


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        # anchoring: the PHP SQS emulation matched substrings
        ("*.world", "a.b.world", False),
        ("*.world", "world", False),
        ("hello.*", "hello", False),
        ("hello.*", "hello.big.world", False),
        ("hello.world", "hello.world.x", False),
        ("hello.world", "x.hello.world", False),
        ("hello.world", "hello.worldx", False),
        ("hello.world", "hello.world\n", False),
        ("hello", "hello.world", False),
        ("world", "hello.world", False),
        # "#" matches zero words
        ("hello.#", "hello", True),
        ("hello.#", "hello.a.b.c", True),
        ("hello.#", "helloworld", False),
        ("hello.#", "hellox.a", False),
        ("#.world", "world", True),
        ("#.world", "a.b.c.world", True),
        ("#.world", "xworld", False),
        ("#.world", "world.x", False),
        # "#" in the middle
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.b", True),
        ("a.#.b", "a.x.y.z.b", True),
        ("a.#.b", "a.b.c", False),
        ("a.#.b", "ab", False),
        ("a.#.b", "x.a.b", False),
        ("#.a.#", "a", True),
        ("#.a.#", "x.a.y", True),
        ("#.a.#", "x.ab.y", False),
        # repeated "#" means the same as one
        ("#.#", "", True),
        ("#.#", "a", True),
        ("#.#", "a.b.c", True),
        ("a.#.#.b", "a.b", True),
        ("a.#.#.b", "a.x.y.b", True),
        ("#", "", True),
        # "*" is exactly one word
        ("*", "a", True),
        ("*", "a.b", False),
        ("*.*", "a.b", True),
        ("*.*", "a", False),
        ("*.#", "a", True),
        ("*.#", "a.b.c", True),
        ("#.*", "a.b", True),
        ("*.#.*", "a", False),
        ("*.#.*", "a.b", True),
        ("*.#.*", "a.b.c.d", True),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.c", False),
        ("a.*.c", "a.b.b.c", False),
        # empty words are words
        ("*", "", True),
        ("a.*", "a.", True),
        ("*.b", ".b", True),
        ("a..b", "a..b", True),
        ("a.*.b", "a..b", True),
        ("a.b", "a..b", False),
        ("https.*.*.a.b.c", "https...a.b.c", True),
        ("https.#", "https...a.b.c", True),
        ("#.c", "https...a.b.c", True),
        ("https.*.a.b.c", "https...a.b.c", False),
        ("", "", True),
        ("", "a", False),
        # regular-expression metacharacters are literal
        ("a+b", "a+b", True),
        ("a+b", "aab", False),
        ("a(b)", "a(b)", True),
        ("a(b)", "ab", False),
        ("a|b", "a", False),
        ("a|b", "a|b", True),
        ("[ab]", "a", False),
        ("[ab]", "[ab]", True),
        ("a$", "a$", True),
        ("^a", "^a", True),
        ("a\\d", "a\\d", True),
        ("a\\d", "a1", False),
        ("*.a+b", "x.a+b", True),
        # "#" or "*" inside a word are not wildcards
        ("a#", "ab", False),
        ("a#", "a#", True),
        ("a*", "ab", False),
        ("a*", "a*", True),
        # "*" does not stop at line breaks
        ("hello.*", "hello.wor\nld", True),
        ("#", "a\nb.c", True),
    ],
)
def test_topic_matches(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


@pytest.mark.parametrize(
    ("patterns", "key", "expected"),
    [
        ([], "anything", True),
        ((), "", True),
        (["a.*", "b.*"], "b.x", True),
        (["a.*", "b.*"], "c.x", False),
        (["hello.world"], "hello.world", True),
        (["hello.world"], "hello.worlds", False),
        (iter(["x", "#.y"]), "a.y", True),
        (iter(["x"]), "y", False),
    ],
)
def test_matches_any(patterns: list[str], key: str, expected: bool) -> None:
    assert matches_any(patterns, key) is expected


@pytest.mark.parametrize("key", ["", "a", "hello.world", "https...a.b.c", "x" * 255, "é" * 127])
def test_check_routing_key_accepts(key: str) -> None:
    assert check_routing_key(key) == key


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("a.*", "wildcards"),
        ("#", "wildcards"),
        ("a.#.b", "wildcards"),
        ("x*y", "wildcards"),
        ("x" * 256, "longer than 255 bytes"),
        ("é" * 128, "longer than 255 bytes"),  # 256 bytes in UTF-8
    ],
)
def test_check_routing_key_rejects(key: str, match: str) -> None:
    with pytest.raises(MessageFormatError, match=match):
        check_routing_key(key)


@pytest.mark.parametrize(
    ("command", "key"),
    [
        ("app:cmd", "app.cmd"),
        ("echoback", "echoback"),
        ("cache:clear:all", "cache.clear.all"),
        ("app.cmd", "app.cmd"),
    ],
)
def test_command_routing_key(command: str, key: str) -> None:
    assert command_routing_key(command) == key


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://a.b/c", "https...a.b.c"),
        ("http://localhost:8080/rpc", "http...localhost.8080.rpc"),
        ("a/b:c", "a.b.c"),
        ("plain", "plain"),
    ],
)
def test_url_routing_key(url: str, key: str) -> None:
    assert url_routing_key(url) == key


def test_url_key_is_matched_word_by_word() -> None:
    key = url_routing_key("https://a.b/c")
    assert topic_matches("https.*.*.a.b.c", key)
    assert not topic_matches("https.*.a.b.c", key)
