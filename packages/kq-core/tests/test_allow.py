"""Allow-lists: exact names and anchored ``re:`` expressions; empty denies everything."""

from __future__ import annotations

import re

import pytest

from kq.core import AllowList


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
