"""Allow-lists: exact names and anchored ``re:`` expressions; empty denies everything."""

from __future__ import annotations

import re
import sys
import time

import pytest

from kq.core import AllowList, AllowMap, ConfigError
from kq.core._allow import MAX_NAME_SUBJECT, MAX_URL_SUBJECT, UnsafePatternError
from kq.core._config import parse_config

if sys.version_info >= (3, 11):
    from tomllib import loads as tomllib_loads
else:
    from tomli import loads as tomllib_loads


@pytest.mark.parametrize(
    ("entries", "value", "expected"),
    [
        (["echoback"], "echoback", True),
        (["echoback"], "echo", False),
        (["echoback"], "echobackx", False),
        (["echoback"], "Echoback", False),
        (["app:cmd"], "app:cmd", True),
        (["re:echo"], "echoback", False),
        (["re:echo"], "echo", True),
        (["re:echo"], "xecho", False),
        (["re:ech.*"], "echoback", True),
        (["re:ech.*"], "xecho", False),
        (["re:app:.*"], "app:cache:clear", True),
        (["re:app:.*"], "other:app:x", False),
        (["re:echo|app"], "echoback", False),
        (["re:echo|app"], "app", True),
        (["re:echo"], "echo\n", False),
        (["re:a.c"], "abc", True),
        (["a.c"], "abc", False),  # exact entries are not expressions
        (["re:(?i)echo"], "ECHO", True),
        (["echo", "re:cache:.*"], "echo", True),
        (["echo", "re:cache:.*"], "cache:warm", True),
        (["echo", "re:cache:.*"], "rm", False),
        (["re:"], "", True),
        (["re:"], "x", False),
        (["re:x"], "re:x", False),
    ],
)
def test_allows(entries: list[str], value: str, expected: bool) -> None:
    assert AllowList(entries).allows(value) is expected


@pytest.mark.parametrize("value", ["", "echoback", "anything", "re:.*", ".*"])
def test_empty_list_denies_everything(value: str) -> None:
    allow = AllowList()
    assert not allow.allows(value)
    assert not allow
    assert not AllowList([]).allows(value)


def test_entries_are_kept() -> None:
    allow = AllowList(iter(["echoback", "re:app:.*"]))
    assert allow.entries == ("echoback", "re:app:.*")
    assert allow
    assert repr(allow) == "AllowList(['echoback', 're:app:.*'])"


def test_invalid_expression_raises() -> None:
    with pytest.raises(re.error):
        AllowList(["re:("])


#: The classic shapes that backtrack exponentially: a repeated group whose only required part repeats.
EXPONENTIAL = [
    "(a+)+b",
    "(a*)*b",
    "(.*)*b",
    "(?:a{1,3})+b",
    r"(\w+\s?)+",
    r"(\d+,?)+x",
    "(?:x|a+)+b",
    "((a+))+b",
    "(a+){2,}b",
    "x(?=(a+)+)",
]


@pytest.mark.parametrize("expression", EXPONENTIAL)
def test_exponential_expressions_are_refused(expression: str) -> None:
    with pytest.raises(UnsafePatternError, match=r"exponential time"):
        AllowList(["echoback", "re:" + expression])
    with pytest.raises(UnsafePatternError):
        AllowMap({"re:" + expression: ["m"]})
    with pytest.raises(UnsafePatternError):
        AllowMap({"svc": ["re:" + expression]})


@pytest.mark.parametrize(
    "expression",
    [
        r"([a-z0-9-]+\.)+example\.com",  # a required separator fixes where each repetition ends
        r"app:(\w+:)*\w+",
        "(?:ab?)+",
        "(a?)+b",  # each non-empty repetition takes exactly one character
        "(?:foo|bar)+",
        "(a+)?b",  # repeated at most once
        "send_[a-z_]+",
        ".*",
    ],
)
def test_linear_expressions_with_groups_are_accepted(expression: str) -> None:
    assert AllowList(["re:" + expression])


def test_the_adversarial_name_no_longer_hangs_a_worker() -> None:
    """re:(a+)+b took minutes on a 31-character name; it is now refused when loaded."""
    with pytest.raises(ConfigError, match=r"exponential.*allow\.commands"):
        parse_config(tomllib_loads("[allow]\ncommands = ['re:(a+)+b']\n"))
    with pytest.raises(ConfigError, match=r"exponential.*allow\.services\.svc"):
        parse_config(tomllib_loads("[allow.services]\nsvc = ['re:(a*)*b']\n"))


@pytest.mark.parametrize("length", [MAX_NAME_SUBJECT + 1, 10_000, 1_000_000])
def test_re_entries_are_not_matched_against_long_values(length: int) -> None:
    """(a|a)+b is exponential too but not detected: the length bound keeps a long value from it."""
    allow = AllowList(["re:(a|a)+b", "re:a+"])
    value = "a" * length
    started = time.perf_counter()
    assert not allow.allows(value)
    assert time.perf_counter() - started < 1
    assert allow.length_note(value) == (
        f"; it is {length} characters long, and re: entries are matched only against values of at most "
        f"{MAX_NAME_SUBJECT}"
    )
    at_the_bound = "a" * MAX_NAME_SUBJECT
    assert AllowList(["re:a+"]).allows(at_the_bound)
    assert allow.length_note(at_the_bound) == ""


def test_an_exact_entry_allows_a_value_of_any_length() -> None:
    long = "x" * (MAX_NAME_SUBJECT + 1)
    allow = AllowList([long, "re:y.*"])
    assert allow.allows(long)
    assert not allow.allows("y" * (MAX_NAME_SUBJECT + 1))


def test_urls_get_the_url_bound() -> None:
    url = "https://hooks.example.com/" + "a" * (MAX_URL_SUBJECT - 100)
    allow = AllowList([r"re:https://hooks\.example\.com/.*"], max_subject=MAX_URL_SUBJECT)
    assert allow.allows("hooks.example.com", pattern_subject=url)
    assert not AllowList(allow.entries).allows("hooks.example.com", pattern_subject=url)
    too_long = url + "a" * 200
    assert not allow.allows("hooks.example.com", pattern_subject=too_long)
    assert f"of at most {MAX_URL_SUBJECT}" in allow.length_note(too_long)


def test_allow_map_notes_which_part_was_too_long() -> None:
    allow = AllowMap({"re:svc.*": ["re:m.*"]})
    long = "m" * (MAX_NAME_SUBJECT + 1)
    assert not allow.allows("svc", long)
    assert allow.length_note("svc", long).startswith(
        f"; the method name is {MAX_NAME_SUBJECT + 1} characters"
    )
    assert allow.length_note("s" * 300, "m").startswith("; the target is 300 characters long")
    assert allow.length_note("svc", "m") == ""
