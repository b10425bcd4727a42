"""Console-command messages: validation and rendering to an argument vector (no shell, ever)."""

from __future__ import annotations

from typing import Any

import pytest

from kq.core import CommandCall, MessageFormatError, make_command, parse_command
from kq.core.handlers._console import MAX_ITEMS, MAX_VALUE_LENGTH


@pytest.mark.parametrize(
    ("arguments", "options", "argv"),
    [
        ([], {}, ["cmd"]),
        (["a1", "a2"], {}, ["cmd", "a1", "a2"]),
        ([], {"f": "file.txt"}, ["cmd", "-ffile.txt"]),
        ([], {"name": "value"}, ["cmd", "--name=value"]),
        ([], {"--long": "v"}, ["cmd", "--long=v"]),
        ([], {"-f": "v"}, ["cmd", "-fv"]),
        ([], {"-long": "v"}, ["cmd", "-longv"]),
        ([], {"dry-run": None}, ["cmd", "--dry-run"]),
        ([], {"v": True}, ["cmd", "-v"]),
        ([], {"--force": True, "quiet": False}, ["cmd", "--force"]),
        ([], {"x": False}, ["cmd"]),
        ([], {"tag": ["a", "b"]}, ["cmd", "--tag=a", "--tag=b"]),
        ([], {"t": ["a", "b"]}, ["cmd", "-ta", "-tb"]),
        ([], {"tag": []}, ["cmd"]),
        (
            [],
            {"n": 3, "ratio": 1.5, "big": 10**20},
            ["cmd", "-n3", "--ratio=1.5", "--big=100000000000000000000"],
        ),
        ([], {"name": "-rf"}, ["cmd", "--name=-rf"]),
        ([], {"f": "--other"}, ["cmd", "-f--other"]),
        ([], {"a.b_c": "x"}, ["cmd", "--a.b_c=x"]),
        ([1, 2.5, -3], {}, ["cmd", "--", "1", "2.5", "-3"]),
        (["-x"], {}, ["cmd", "--", "-x"]),
        (["a", "--flag"], {"o": "v"}, ["cmd", "-ov", "--", "a", "--flag"]),
        (["--"], {}, ["cmd", "--", "--"]),
        (["a-b", "x"], {}, ["cmd", "a-b", "x"]),
        (["", " "], {}, ["cmd", "", " "]),
    ],
)
def test_argv(arguments: list[Any], options: dict[str, Any], argv: list[str]) -> None:
    assert make_command("cmd", arguments, options).argv() == argv


@pytest.mark.parametrize(
    "value",
    ["; rm -rf /", "$(id)", "`id`", "a | b", "a && b", "> /etc/passwd", "'\"", "*", "~", "a\nb", "${HOME}"],
)
def test_shell_metacharacters_are_verbatim(value: str) -> None:
    call = make_command("app:cmd", [value, "x"], {"name": value, "f": value})
    assert call.argv() == ["app:cmd", f"--name={value}", f"-f{value}", value, "x"]


def test_option_order_is_kept() -> None:
    call = make_command("c", [], {"z": "1", "a": "2", "m": None})
    assert call.argv() == ["c", "-z1", "-a2", "-m"]


def test_parse_command_php_shape() -> None:
    body = {
        "command": "app:cmd",
        "arguments": ["a1"],
        "options": {"f": "file.txt", "--long": "v", "flag": None},
    }
    call = parse_command(body)
    assert call == CommandCall("app:cmd", ("a1",), {"f": "file.txt", "--long": "v", "flag": None})
    assert call.argv() == ["app:cmd", "-ffile.txt", "--long=v", "--flag", "a1"]
    assert call.to_body() == body


@pytest.mark.parametrize(
    "body",
    [
        {"command": "c"},
        {"command": "c", "arguments": None, "options": None},
        {"command": "c", "arguments": [], "options": []},  # PHP encodes an empty options array as []
    ],
)
def test_parse_command_empty_parts(body: dict[str, Any]) -> None:
    assert parse_command(body) == CommandCall("c", (), {})


def test_numbers_become_strings() -> None:
    call = make_command("c", [7, 0.25], {"n": 7, "list": [1, 2.0]})
    assert call.arguments == ("7", "0.25")
    assert dict(call.options) == {"n": "7", "list": ["1", "2.0"]}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (["echoback"], "must be a JSON object, not list"),
        ("echoback", "must be a JSON object, not str"),
        (None, "must be a JSON object, not null"),
        ({}, "'command' must be a non-empty string"),
        ({"command": ""}, "'command' must be a non-empty string"),
        ({"command": None}, "'command' must be a non-empty string"),
        ({"command": 3}, "'command' must be a non-empty string"),
        ({"command": "c", "args": []}, "unknown keys in console-command message: args"),
        ({"command": "c", "z": 1, "b": 2}, "unknown keys in console-command message: b, z"),
        ({"command": "c", "arguments": "a b"}, "'arguments' must be a list, not str"),
        ({"command": "c", "arguments": 5}, "'arguments' must be a list, not int"),
        ({"command": "c", "options": ["a"]}, "'options' must be an object, not list"),
        ({"command": "c", "options": "x"}, "'options' must be an object, not str"),
    ],
)
def test_parse_command_rejects(body: Any, match: str) -> None:
    with pytest.raises(MessageFormatError, match=match):
        parse_command(body)


@pytest.mark.parametrize(
    "command",
    ["", "-rf", "--help", "a b", "a;b", "$(id)", "app/cmd", "../x", "a\x00", "é", "x" * 201, ".hidden"],
)
def test_invalid_command_names(command: str) -> None:
    with pytest.raises(MessageFormatError, match="is not valid"):
        make_command(command)


@pytest.mark.parametrize("command", ["echoback", "app:cmd", "cache:clear-all", "_x", "a.b", "9", "x" * 200])
def test_valid_command_names(command: str) -> None:
    assert make_command(command).argv() == [command]


@pytest.mark.parametrize(
    "name",
    ["-x;rm", "a b", "---x", "$(id)", "", "-", "--", "x=y", "-_x", "é", "a/b", "x" * 65, "a\nb", "`id`"],
)
def test_invalid_option_names(name: str) -> None:
    with pytest.raises(MessageFormatError, match=r"option name .* is not valid"):
        make_command("c", [], {name: "v"})


def test_non_string_option_name() -> None:
    options: dict[Any, Any] = {1: "v"}
    with pytest.raises(MessageFormatError, match="option name '1' is not valid"):
        make_command("c", [], options)


@pytest.mark.parametrize(
    ("arguments", "options", "match"),
    [
        ([{"a": 1}], {}, "argument 1 must be a string or a number, not dict"),
        (["ok", ["x"]], {}, "argument 2 must be a string or a number, not list"),
        ([True], {}, "argument 1 must be a string or a number, not bool"),
        ([None], {}, "argument 1 must be a string or a number, not null"),
        ([], {"o": {"a": 1}}, "option 'o' must be a string or a number, not dict"),
        ([], {"o": ["a", None]}, "option 'o' must be a string or a number, not null"),
        ([], {"o": [True]}, "option 'o' must be a string or a number, not bool"),
        (["a\x00b"], {}, "argument 1 contains a NUL character"),
        ([], {"o": "a\x00"}, "option 'o' contains a NUL character"),
        ([], {"o": ["ok", "\x00"]}, "option 'o' contains a NUL character"),
        (["x" * (MAX_VALUE_LENGTH + 1)], {}, f"argument 1 is longer than {MAX_VALUE_LENGTH} characters"),
        ([], {"o": "x" * (MAX_VALUE_LENGTH + 1)}, "option 'o' is longer than"),
        (
            ["a"] * (MAX_ITEMS + 1),
            {},
            rf"too many arguments and options \({MAX_ITEMS + 1}, at most {MAX_ITEMS}\)",
        ),
        (["a"] * MAX_ITEMS, {"o": None}, "too many arguments and options"),
        ([], {"o": ["v"] * (MAX_ITEMS + 1)}, "too many arguments and options"),
    ],
)
def test_invalid_values(arguments: list[Any], options: dict[str, Any], match: str) -> None:
    with pytest.raises(MessageFormatError, match=match):
        make_command("c", arguments, options)


def test_limits_are_inclusive() -> None:
    call = make_command("c", ["x" * MAX_VALUE_LENGTH] + ["a"] * (MAX_ITEMS - 2), {"o": None})
    assert len(call.argv()) == MAX_ITEMS + 1
    assert call.arguments[0] == "x" * MAX_VALUE_LENGTH


def test_validation_applies_to_parse_command() -> None:
    with pytest.raises(MessageFormatError, match="option name '-x;rm' is not valid"):
        parse_command({"command": "c", "options": {"-x;rm": "v"}})
    with pytest.raises(MessageFormatError, match="argument 1 must be a string or a number, not bool"):
        parse_command({"command": "c", "arguments": [False]})


def test_arguments_object_is_rejected() -> None:
    with pytest.raises(MessageFormatError, match="'arguments' must be a list"):
        parse_command({"command": "c", "arguments": {"--force": 1}})


def test_empty_short_option_value_keeps_its_meaning() -> None:
    # ["c", "-f", "x"] would make "x" the value of -f for argparse/click; the value must stay attached
    # (e.g. ["-f", ""]) or the message be rejected.
    try:
        argv = make_command("c", ["x"], {"f": ""}).argv()
    except MessageFormatError:
        return
    assert argv != ["c", "-f", "x"]
    assert "" in argv
