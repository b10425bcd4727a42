"""Property-based tests: random messages thrown at consumers (issue 6, DESIGN.md §5-§7).

Each hypothesis example publishes a batch of random messages to a memory queue and runs one
:class:`ConsumeLoop` over it. Bodies are arbitrary bytes, text, JSON of any shape and, mostly,
near-valid console-command, service and HTTP bodies (hostile names, shell metacharacters, NUL, huge
values, nested structures, wrong types); content types, headers (``kq-`` ones included, forged
signatures among them) and routing keys are random too. For every batch:

1. ``loop.run()`` never raises;
2. every message ends acknowledged: consumed + failed + vetoed == received == published, the queue is
   empty, and every failed message is in the dead-letter queue, unchanged, with a documented reason;
3. nothing outside the allow-list runs (a recording ``[console] callable``; a service module with an
   allowed and a forbidden function; a module that records being imported);
4. with signatures required, no unsigned, forged, tampered, stale or replayed message runs, and the
   properly signed ones do;
5. the HTTP consumer never sends a request outside its allow-list, redirects included.

The tests with an ``@example`` hold the minimal input of a defect hypothesis found in the library (now
fixed): a non-ASCII forged signature, a message without a content type, a NUL in a message id, a malformed
IPv6 host.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kq.core import (
    JSON,
    AllowList,
    AllowMap,
    ConsumeLoop,
    Delivery,
    EventDispatcher,
    Handler,
    HttpHandler,
    InProcessConsoleCommandHandler,
    Limits,
    Message,
    MessageConsumptionFailed,
    MessageReceived,
    ServiceHandler,
    Signer,
    Verifier,
    decode_body,
    encode_json,
    new_key,
    parse_command,
    parse_service_call,
)
from kq.core._config import ConsoleSettings
from kq.core._failures import attempt_of
from kq.core._message import is_reserved_header_name
from kq.core._signing import KEY_ID, NONCE, SIGNATURE, SIGNED_AT
from kq.core.driver import DriverSpec
from kq.drivers.memory import MemoryDriver

T = TypeVar("T")

QUEUE = "jobs"
DEAD_LETTER_QUEUE = f"{QUEUE}.failed"
REASON = "kq-dead-letter-reason"
#: Headers the consume loop writes itself when it dead-letters or retries a message.
LOOP_HEADERS = frozenset(
    {
        "kq-attempt",
        REASON,
        "kq-dead-letter-error",
        "kq-original-queue",
        "kq-dead-lettered-at",
        "kq-delivery-count",
    }
)
#: The documented dead-letter reasons (docs/consuming.md, docs/signing.md).
LOOP_REASONS = frozenset({"failed", "undecodable", "invalid", "not-allowed"})
SIGNATURE_REASONS = frozenset(
    {"unsigned", "unknown-key", "bad-signature", "not-yet-valid", "expired", "replayed"}
)
#: A message_received listener vetoes messages carrying this header ...
VETO = "x-veto"
#: ... and every listener raises on messages carrying this one (the others and the loop go on).
LISTENER_CRASH = "x-listener-crash"
#: Arguments that make the recording entry point and the allowed service fail.
FAILING_ARGUMENTS = frozenset({"boom", "crash", "exit"})
#: Longest a loop may run on one batch; a batch normally takes milliseconds.
LOOP_TIME = 20.0
ACCEPTED_JSON = frozenset({JSON})

#: Where the recorders live: modules written to a temporary folder on sys.path.
RECORD, CLI, SERVICES, FORBIDDEN = "kqprop_record", "kqprop_cli", "kqprop_services", "kqprop_forbidden"
MODULES = {
    RECORD: '''
"""What the other modules saw: filled by them, read and cleared by the tests."""
argvs = []
calls = []
imports = []
''',
    CLI: f'''
"""The [console] callable: records every argv it is called with."""
import {RECORD}

def main(argv):
    {RECORD}.argvs.append(list(argv))
    if "crash" in argv:
        raise RuntimeError("crashing on purpose")
    if "exit" in argv:
        raise SystemExit("exiting on purpose")
    return 3 if "boom" in argv else 0
''',
    SERVICES: f'''
"""A service module: only `allowed` is in the allow-list."""
import {RECORD}

def allowed(*args, **kwargs):
    {RECORD}.calls.append(("allowed", args, kwargs))
    if "boom" in args:
        raise RuntimeError("failing on purpose")
    return len(args)

def forbidden(*args, **kwargs):
    {RECORD}.calls.append(("forbidden", args, kwargs))

def _private(*args, **kwargs):
    {RECORD}.calls.append(("_private", args, kwargs))

class _Object:
    def allowed(self, *args, **kwargs):
        {RECORD}.calls.append(("obj.allowed", args, kwargs))

obj = _Object()
not_callable = 42
''',
    FORBIDDEN: f'''
"""A module no message may import: importing it runs code, which records that it happened."""
import {RECORD}

{RECORD}.imports.append(__name__)

def allowed(*args, **kwargs):
    {RECORD}.calls.append(("forbidden module", args, kwargs))
''',
}


# --------------------------------------------------------------------------------------------------
# Strategies. Every nested draw costs hypothesis ~30 µs, and the main test draws 10,000 messages:
# hostile values are fixed lists drawn with one choice, and several decisions share one integer of
# flag bits (shrinking to 0 gives the smallest body).


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """``one_of`` with integer weights (a branch listed n times is drawn n times as often)."""
    return st.one_of(*[strategy for weight, strategy in choices for _ in range(weight)])


def bit(flags: int, n: int) -> bool:
    return bool(flags >> n & 1)


PORTABLE_FIRST = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"
PORTABLE = PORTABLE_FIRST + ".-"
HOSTILE = [
    "",
    "-",
    "--",
    "-x",
    "--x=1",
    "--help",
    "-h",
    ";rm -rf /",
    "$(reboot)",
    "`id`",
    "a|b",
    "a && b",
    "> /etc/passwd",
    "../../etc/passwd",
    "*",
    "~",
    "'\"",
    "\\",
    "%s%n",
    "\x00",
    "a\x00b",
    "\n",
    "\r\n",
    "\t",
    "\u00e9",
    "\u202e",
    "\u0663",
    "\U0001f600",
    "\ud800",  # a lone surrogate: JSON can carry one ("\\ud800")
    "echoback",
    "echoback;id",
    "boom",
    "crash",
    "exit",
    "a" * 300,
    "x" * 65_536,  # the longest value accepted ...
    "x" * 65_537,  # ... and one character more
]
WRONG_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**64,
    1.5,
    -0.0,
    1e308,
    [],
    ["a"],
    [["echoback"]],
    [None],
    {},
    {"a": 1},
    {"command": "echoback"},
]
WRONG_TYPES = st.sampled_from(WRONG_VALUES)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=False, allow_infinity=False)
)
WORDS = weighted((2, st.sampled_from(HOSTILE)), (1, st.text(max_size=8)))
SCALARS = weighted((4, st.sampled_from(HOSTILE)), (2, st.text(max_size=8)), (1, NUMBERS), (1, WRONG_TYPES))
JSON_LEAVES = st.one_of(st.sampled_from([None, True, False, 0, "", "echoback"]), NUMBERS, st.text(max_size=8))
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)

# Console commands.
COMMAND_NAMES = weighted(
    (14, st.just("echoback")),
    (
        6,
        st.sampled_from(
            [
                "Echoback",
                "echoback ",
                " echoback",
                "echoback;id",
                "echoback\x00",
                "echoback\n",
                "echo",
                "echobackx",
                "re:echoback",
                "re:.*",
                "-echoback",
                "--echoback",
                "../echoback",
                "/bin/echoback",
                "echoback:sub",
                "echoback.x",
                "",
                "sh",
                "rm",
                "kq",
                "app:cmd",
                "x" * 201,
                *WRONG_VALUES,
            ]
        ),
    ),
    (1, st.text(max_size=10)),
)
OPTION_NAMES = weighted(
    (
        6,
        st.sampled_from(
            [
                "f",
                "v",
                "-f",
                "--flag",
                "name",
                "--name",
                "a.b",
                "x_y",
                "0",
                "a" * 64,
                "",
                "-",
                "--",
                "---x",
                "-x;rm",
                "x y",
                "--a=b",
                "\u00e9",
                "x\x00",
                "a" * 65,
                "$(id)",
                "-0-",
                "_x",
            ]
        ),
    ),
    (1, st.text(max_size=6)),
)
OPTION_VALUES = weighted(
    (6, st.sampled_from([None, True, False, *HOSTILE, *WRONG_VALUES])),
    (2, st.text(max_size=8)),
    (1, st.lists(WORDS, max_size=3)),
    (1, NUMBERS),
)
TOO_MANY_ARGUMENTS = ["a"] * 1001
TOO_MANY_OPTIONS = {f"o{i}": ["v"] * 10 for i in range(101)}


@st.composite
def command_bodies(draw: st.DrawFn) -> Any:
    """Near-valid console-command bodies."""
    flags = draw(st.integers(0, 2**10 - 1))
    if flags & 0b11111 == 0:
        return draw(JSON_VALUES)
    body: dict[str, Any] = {}
    if bit(flags, 5) or bit(flags, 6) or bit(flags, 7):
        body["command"] = draw(COMMAND_NAMES)
    if bit(flags, 8):
        body["arguments"] = (
            draw(st.lists(SCALARS, max_size=4))
            if bit(flags, 0) or bit(flags, 1) or bit(flags, 2)
            else draw(st.sampled_from([TOO_MANY_ARGUMENTS, "echoback", "", *WRONG_VALUES]))
        )
    if bit(flags, 9):
        body["options"] = (
            draw(st.dictionaries(OPTION_NAMES, OPTION_VALUES, max_size=3))
            if bit(flags, 1) or bit(flags, 3) or bit(flags, 4)
            else draw(st.sampled_from([TOO_MANY_OPTIONS, "-x", *WRONG_VALUES]))
        )
    if flags & 0b11111 == 0b11111:
        body[draw(st.sampled_from(["Command", "argv", "shell", "env", "cwd", ""]))] = draw(JSON_VALUES)
    return body


# Services.
SERVICE_NAMES = weighted(
    (10, st.just(SERVICES)),
    (
        6,
        st.sampled_from(
            [
                FORBIDDEN,
                f"{FORBIDDEN}:allowed",
                f"{SERVICES}:obj",
                f"{SERVICES}:_private",
                f"{SERVICES}.sub",
                f"{SERVICES}:",
                f" {SERVICES}",
                f"{SERVICES}\x00",
                SERVICES.upper(),
                "os",
                "subprocess",
                "builtins",
                "sys:modules",
                "importlib",
                "_" + SERVICES,
                "re:.*",
                "",
                *WRONG_VALUES,
            ]
        ),
    ),
    (1, st.text(max_size=10)),
)
METHOD_NAMES = weighted(
    (10, st.just("allowed")),
    (
        6,
        st.sampled_from(
            [
                "forbidden",
                "_private",
                "__init__",
                "__class__",
                "not_callable",
                "obj",
                "allowed ",
                "Allowed",
                "allowed\x00",
                "allowed.forbidden",
                "system",
                "import_module",
                "",
                "a" * 129,
                *WRONG_VALUES,
            ]
        ),
    ),
    (1, st.text(max_size=10)),
)
KWARG_NAMES = weighted(
    (4, st.sampled_from(["a", "to", "_x", "class", "args", "kwargs", "", "1", "a-b"])),
    (1, st.text(max_size=6)),
)


@st.composite
def service_bodies(draw: st.DrawFn) -> Any:
    """Near-valid service-call bodies."""
    flags = draw(st.integers(0, 2**10 - 1))
    if flags & 0b11111 == 0:
        return draw(JSON_VALUES)
    body: dict[str, Any] = {}
    if bit(flags, 5) or bit(flags, 6) or bit(flags, 0):
        body["service"] = draw(SERVICE_NAMES)
    if bit(flags, 7) or bit(flags, 6) or bit(flags, 1):
        body["method"] = draw(METHOD_NAMES)
    if bit(flags, 8):
        body["arguments"] = (
            draw(st.lists(weighted((3, SCALARS), (1, JSON_VALUES)), max_size=3))
            if bit(flags, 2) or bit(flags, 3)
            else draw(WRONG_TYPES)
        )
    if bit(flags, 9) and bit(flags, 4):
        body["kwargs"] = (
            draw(st.dictionaries(KWARG_NAMES, SCALARS, max_size=3)) if bit(flags, 0) else draw(WRONG_TYPES)
        )
    if flags & 0b11111 == 0b11111:
        body[draw(st.sampled_from(["Service", "module", "callable", ""]))] = draw(JSON_VALUES)
    return body


# HTTP requests. URLs are built from parts that URL parsers are known to disagree on.
URL_SCHEMES = [
    "http://",
    "http://",
    "https://",
    "HTTP://",
    "ftp://",
    "file://",
    "gopher://",
    "//",
    "http:/",
    "http:\\\\",
    "",
    "javascript:",
    " http://",
    "http:///",
    "http://user:pw@",
]
URL_PATHS = ["", "/", "/ok", "/../..", "/%2e%2e/", "/#frag", "/?q=1", "/a b", "/\x00", "/redirect/302?to=/ok"]
REDIRECT_CODES = [301, 302, 303, 307, 308, 300, 304, 305]


def url_hosts(port: int) -> list[str]:
    """Hosts, with the test server's port where it matters."""
    local = f"127.0.0.1:{port}"
    return [
        "allowed.invalid",
        "ALLOWED.invalid",
        "allowed.invalid.",
        "allowed.invalid:80",
        "allowed.invalid:99999",
        "allowed.invalid:",
        "127.0.0.1",
        local,
        "localhost",
        f"localhost:{port}",
        "[::1]",
        f"[::1]:{port}",
        "[::1",
        "127.1",
        "2130706433",
        "0x7f000001",
        "allowed.invalid@127.0.0.1",
        f"allowed.invalid@{local}",
        f"{local}@allowed.invalid",
        f"allowed.invalid\\@{local}",
        f"{local}#@allowed.invalid",
        f"{local}?@allowed.invalid",
        f"allowed.invalid%40{local}",
        f"allowed.invalid%2F@{local}",
        "evil.invalid",
        "allowed.invalid.evil.invalid",
        "evil.invalid#allowed.invalid",
        "allowed\u3002invalid",
        "\uff41llowed.invalid",
    ]


def urls(port: int) -> st.SearchStrategy[str]:
    """Random absolute URLs, most of them near the allowed host or the test server."""
    paths = weighted((4, st.sampled_from(URL_PATHS)), (1, st.text(max_size=8).map("/".__add__)))
    return st.builds(
        lambda scheme, host, path: scheme + host + path,
        st.sampled_from(URL_SCHEMES),
        st.sampled_from(url_hosts(port)),
        paths,
    )


def redirect_url(port: int, code: int, target: str) -> str:
    """A URL on the test server that answers ``code`` with ``Location: target``."""
    return f"http://127.0.0.1:{port}/redirect/{code}?to={quote(target, safe='')}"


def redirect_targets(port: int) -> st.SearchStrategy[str]:
    """Locations: absolute URLs, relative references, and further redirects."""
    relative = st.sampled_from(
        [
            "",
            "/ok",
            "ok",
            "?x=1",
            "#",
            "..",
            f"//127.0.0.1:{port}/ok",
            "//allowed.invalid/x",
            "//localhost/",
            "\\\\127.0.0.1/ok",
            "/\\127.0.0.1/ok",
            f"http:{port}/ok",
            f"/redirect/302?to={quote('/ok', safe='')}",
        ]
    )
    simple = st.one_of(urls(port), relative)
    nested = st.builds(
        lambda code, target: redirect_url(port, code, target), st.sampled_from(REDIRECT_CODES), simple
    )
    return st.one_of(simple, nested)


def request_urls(port: int) -> st.SearchStrategy[Any]:
    """First URLs of HTTP messages: random, or the test server's (allowed) redirect endpoint."""
    redirects = st.builds(
        lambda code, target: redirect_url(port, code, target),
        st.sampled_from(REDIRECT_CODES),
        redirect_targets(port),
    )
    return weighted((2, urls(port)), (2, redirects), (1, st.text(max_size=12)), (1, WRONG_TYPES))


HTTP_OPTIONS: dict[str, st.SearchStrategy[Any]] = {
    "method": st.sampled_from(["GET", "post", "HEAD", "PUT", "TRACE", "CONNECT", "", "GET\r\n", "G T", None]),
    "headers": st.dictionaries(
        st.sampled_from(["X-A", "Host", "Authorization", "", "a b"]), WORDS, max_size=2
    ),
    "params": st.dictionaries(st.text(max_size=4), WORDS, max_size=2),
    "json": JSON_VALUES,
    "data": st.one_of(WORDS, st.dictionaries(st.text(max_size=4), WORDS, max_size=2)),
    "timeout": st.sampled_from([2, 2.5, 0, -1, "1", True, 1e308]),
    "allow_redirects": st.sampled_from([True, False, "no", None]),
    "verify": st.sampled_from([True, False, "/etc/ssl"]),
    "proxies": st.just({"http": "http://127.0.0.1:1"}),
    "": st.none(),
}


@st.composite
def http_bodies(draw: st.DrawFn, url_strategy: st.SearchStrategy[Any]) -> Any:
    """Near-valid HTTP-request bodies."""
    flags = draw(st.integers(0, 2**8 - 1))
    if flags & 0b1111 == 0:
        return draw(JSON_VALUES)
    body: dict[str, Any] = {}
    if bit(flags, 4) or bit(flags, 5) or bit(flags, 6):
        body["url"] = draw(url_strategy)
    if bit(flags, 7):
        body["options"] = (
            draw(st.fixed_dictionaries({}, optional=HTTP_OPTIONS))
            if bit(flags, 0) or bit(flags, 1)
            else draw(WRONG_TYPES)
        )
    if flags & 0b1111 == 0b1111:
        body[draw(st.sampled_from(["URL", "method", ""]))] = draw(JSON_VALUES)
    return body


# Content types, bodies, headers, routing keys, messages.
JSON_TYPES = [
    (JSON, "utf-8"),
    ("application/json; charset=utf-8", "utf-8"),
    ('Application/JSON;charset="UTF-8"', "utf-8"),
    ("application/json ; charset=utf-8-sig", "utf-8-sig"),
    ("application/json; charset=utf-16", "utf-16"),
    ("application/json; charset=latin-1", "latin-1"),
]
OTHER_TYPES = [
    "application/json; charset=utf-16",  # with a UTF-8 body
    "application/json; charset=",
    "application/json; charset=nope",
    "application/json; charset=rot13",
    "application/json; charset=base64",
    "application/json; charset=idna",
    "application/json; charset=punycode",
    "application/json; charset=unicode_escape",
    "application/json; charset=utf-7",
    "application/json;;;=;charset",
    "application/json\x00",
    "application/vnd.kq+json",
    "application/jsonx",
    "application/*",
    "*/*",
    "text/plain",
    "text/plain; charset=ascii",
    "text/json",
    "application/octet-stream",
    "application/x-httpd-php-source",
    "application/vnd.php.serialized",
    "multipart/form-data; boundary=x",
    " ",
    ";",
    "/",
    "\u00e9",
    "x" * 1000,
]
CONTENT_TYPES = weighted((3, st.sampled_from(OTHER_TYPES)), (1, st.text(min_size=1, max_size=12)))
SPECIAL_BODIES = [
    b"",
    b"null",
    b"{}",
    b"[]",
    b'""',
    b"\xef\xbb\xbf{}",
    b"\xff\xfe{\x00}\x00",
    b'{"command": "echoback", "command": "rm"}',
    b'{"command": "echoback", "arguments": ["\\u0000"]}',
    b'{"command": "echoback", "arguments": ["\\ud800"]}',
    b'{"command": "echo\\u0062ack"}',
    b'{"command": "echoback", "arguments": [NaN]}',
    b'{"command": "echoback", "arguments": [Infinity]}',
    b'{"command": "echoback", "arguments": [1e400]}',
    b'{"service": "kqprop_services", "method": "allowed", "arguments": [1e400]}',
    b'{"service": "kqprop_forbidden", "method": "allowed"}',
    b'{"url": "http://allowed.invalid/", "options": {"timeout": 1e400}}',
    b"1" * 5000,
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b"\x00" * 16,
]


@st.composite
def bodies(
    draw: st.DrawFn, primary: st.SearchStrategy[Any], others: st.SearchStrategy[Any]
) -> tuple[bytes, str]:
    """A body and its content type; mostly ``primary`` (near-valid for the consumer under test)."""
    kind = draw(st.integers(0, 2**8 - 1))
    if kind < 200:
        value = draw(primary) if kind < 160 else draw(others) if kind < 180 else draw(JSON_VALUES)
        text = json.dumps(value, ensure_ascii=bit(kind, 0))
        content_type, encoding = JSON_TYPES[0] if kind & 0b1110 else draw(st.sampled_from(JSON_TYPES))
        try:
            raw = text.encode(encoding)
        except UnicodeEncodeError:  # a lone surrogate, or a character latin-1 lacks
            raw = text.encode("utf-8", errors="surrogatepass")
        if kind % 16 == 5:
            raw = raw[: draw(st.integers(0, len(raw)))]
        elif kind % 16 == 7:
            raw += draw(st.sampled_from([b"x", b"\x00", b"}", b"\n{}", b"\xff"]))
        elif kind % 16 == 9:
            content_type = draw(CONTENT_TYPES)
        return raw, content_type
    if kind < 215:
        raw = draw(st.text(max_size=20)).encode()
    elif kind < 230:
        raw = draw(st.binary(max_size=20))
    else:
        raw = draw(st.sampled_from(SPECIAL_BODIES))
    return raw, JSON if bit(kind, 0) else draw(CONTENT_TYPES)


SPECIAL_HEADERS = [
    "kq-attempt",
    "kq-attempt",
    "kq-signature",
    "kq-key-id",
    "kq-signed-at",
    "kq-nonce",
    "kq-dead-letter-reason",
    "kq-dead-letter-error",
    "kq-original-queue",
    "kq-dead-lettered-at",
    "kq-delivery-count",
    "kq-routing-key",
    "kq-",
    "KQ-ATTEMPT",
    "content-type",
    "content_type",
    "message_id",
    "x-user",
    "_",
    "0",
    "x" * 128,
    VETO,
    LISTENER_CRASH,
]
HEADER_NAMES = weighted(
    (4, st.sampled_from(SPECIAL_HEADERS)),
    (1, st.builds(str.__add__, st.sampled_from(PORTABLE_FIRST), st.text(PORTABLE, max_size=12))),
    (1, st.text(PORTABLE, max_size=8).map("kq-".__add__)),
).filter(lambda name: not is_reserved_header_name(name))  # refused at publish, by Message itself
HEX64 = st.text("0123456789abcdef", min_size=64, max_size=64)
HEADER_VALUES = weighted(
    (
        4,
        st.sampled_from(
            [
                "",
                "0",
                "-1",
                "1",
                "2",
                "3",
                "99999999999999999999",
                "1e3",
                "nan",
                "inf",
                "-inf",
                " 3 ",
                "\u0663",
                "1_000",
                "\x00",
                "\n",
                "None",
                "true",
                "[]",
                "failed",
                "not-allowed",
                "jobs",
                "jobs.failed",
                "9" * 5000,
                "9" * 70_000,
                "0123456789abcdef" * 4,
            ]
        ),
    ),
    (2, st.text(max_size=12)),
    (1, NUMBERS.map(repr)),
)
HEADERS = weighted(
    (3, st.just({})), (2, st.dictionaries(HEADER_NAMES, HEADER_VALUES, min_size=1, max_size=3))
)


def forged_signatures(*, ascii_only: bool) -> st.SearchStrategy[dict[str, str]]:
    """The four signing headers, forged: no key, so never a valid signature."""
    signatures = weighted((3, HEX64), (1, st.just("")), (2, st.text(max_size=70)))
    if ascii_only:
        signatures = signatures.map(lambda s: s.encode("ascii", "backslashreplace").decode())
    return st.fixed_dictionaries(
        {},
        optional={
            KEY_ID: weighted(
                (4, st.sampled_from(["k1", "k1", "k2", "", "K1", "k1 "])), (1, st.text(max_size=5))
            ),
            SIGNED_AT: weighted(
                (4, st.sampled_from(["0", "1e10", "1700000000.000", "nan", "inf", "-inf", ""])),
                (1, st.text(max_size=8)),
            ),
            NONCE: weighted((2, HEX64), (1, st.text(max_size=8))),
            SIGNATURE: signatures,
        },
    )


ROUTING_KEYS = weighted(
    (
        5,
        st.sampled_from(
            [
                "",
                "",
                "",
                "echoback",
                "a.b.c",
                "#",
                "*",
                "a.*",
                "..",
                "kqprop_services.allowed",
                "\u00e9",
                "k" * 300,
            ]
        ),
    ),
    (1, st.text(max_size=12)),
)
MESSAGE_IDS = st.sampled_from(["m"] * 10 + ["", " ", "\n", "\u00e9", "i" * 300, "a/b"])


@st.composite
def messages(
    draw: st.DrawFn,
    primary: st.SearchStrategy[Any],
    others: st.SearchStrategy[Any],
    forged: st.SearchStrategy[dict[str, str]] | None = None,
) -> Message:
    """One random message. Its id is made unique in the batch by :func:`numbered`."""
    body, content_type = draw(bodies(primary, others))
    headers = dict(draw(HEADERS))
    if forged is not None and draw(st.integers(0, 2)) == 0:
        headers.update(draw(forged))
    return Message(
        body,
        content_type=content_type,
        headers=headers,
        routing_key=draw(ROUTING_KEYS),
        message_id=draw(MESSAGE_IDS),
    )


def numbered(batch: Sequence[Message]) -> list[Message]:
    """The batch with unique message ids (``<drawn id>#<index>``)."""
    return [replace(m, message_id=f"{m.message_id}#{i}") for i, m in enumerate(batch)]


def batches(
    primary: st.SearchStrategy[Any],
    others: st.SearchStrategy[Any],
    size: int,
    forged: st.SearchStrategy[dict[str, str]] | None = None,
) -> st.SearchStrategy[list[Message]]:
    """Batches of exactly ``size`` messages."""
    return st.lists(messages(primary, others, forged), min_size=size, max_size=size).map(numbered)


# --------------------------------------------------------------------------------------------------
# Running a batch and checking that every message was settled


@pytest.fixture(autouse=True)
def _fresh_memory() -> Iterator[None]:
    MemoryDriver.reset()
    yield
    MemoryDriver.reset()


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The recorder module; the CLI, service and forbidden modules are importable next to it."""
    folder: Path = tmp_path_factory.mktemp("kqprop_modules")
    for name, source in MODULES.items():
        (folder / f"{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    try:
        import importlib

        yield importlib.import_module(RECORD)
    finally:
        sys.path.remove(str(folder))
        for name in MODULES:
            sys.modules.pop(name, None)


def clear(record: ModuleType) -> None:
    record.argvs.clear()
    record.calls.clear()
    record.imports.clear()


def listeners(*, retry_once: bool = False) -> EventDispatcher:
    """A veto listener, listeners that raise on some messages, and optionally a retry policy of two
    attempts."""
    dispatcher = EventDispatcher()

    def crash(event: Any) -> None:
        if LISTENER_CRASH in event.delivery.headers:
            raise RuntimeError("a listener failing on purpose")

    def veto(event: MessageReceived) -> None:
        if VETO in event.delivery.headers:
            event.veto("the x-veto header")

    def retry(event: MessageConsumptionFailed) -> None:
        if event.reason == "failed" and event.attempt < 2:
            event.retry()

    for name in ("message_received", "message_consumed", "message_consumption_failed"):
        dispatcher.add_listener(name, crash, priority=10)
    dispatcher.add_listener("message_received", veto)
    if retry_once:
        dispatcher.add_listener("message_consumption_failed", retry)
    return dispatcher


@dataclass
class Run:
    """A consume loop that ran over a batch, and what it left behind."""

    loop: ConsumeLoop
    published: list[Message]
    dead: list[Delivery]
    info: Mapping[str, Any]

    @property
    def reasons(self) -> Counter[str]:
        return Counter(d.headers.get(REASON, "<none>") for d in self.dead)


def drain(driver: MemoryDriver, queue: str) -> list[Delivery]:
    """Receive and acknowledge everything waiting in ``queue``."""
    found: list[Delivery] = []
    with driver.consumer(queue) as consumer:
        while (delivery := consumer.receive(0)) is not None:
            consumer.ack(delivery)
            found.append(delivery)
    return found


def run_batch(
    handler: Handler,
    batch: list[Message],
    *,
    dispatcher: EventDispatcher | None = None,
    verifier: Verifier | None = None,
    until_drained: bool = False,
) -> Run:
    """Publish ``batch``, run one consume loop over it (property 1: it must not raise), collect the
    dead letters."""
    MemoryDriver.reset()
    driver = MemoryDriver(DriverSpec(name="prop", type="memory"))
    driver.producer(QUEUE).send_batch(batch)
    manager = driver.queue_manager()

    def drained() -> str | None:
        info = manager.info(QUEUE)
        return "drained" if info["messages"] == 0 and info["in_flight"] == 0 else None

    limits = (
        Limits(time=LOOP_TIME, checks=(drained,))
        if until_drained
        else Limits(messages=len(batch), time=LOOP_TIME)
    )
    loop = ConsumeLoop(
        driver,
        QUEUE,
        handler,
        dispatcher=dispatcher,
        limits=limits,
        poll_interval=0.05,
        verifier=verifier,
        signed_for=[QUEUE] if verifier is not None else (),
    )
    loop.run()
    info = manager.info(QUEUE)
    return Run(loop=loop, published=batch, dead=drain(driver, DEAD_LETTER_QUEUE), info=info)


def check_settled(run: Run, reasons: frozenset[str] = LOOP_REASONS) -> None:
    """Property 2: every message was acknowledged, as consumed, vetoed or dead-lettered unchanged."""
    stats = run.loop.stats
    assert stats.received == len(run.published) + stats.retried, stats
    assert stats.consumed + stats.failed + stats.vetoed == stats.received, stats
    assert (stats.requeued, stats.reconnects) == (0, 0), stats
    assert stats.dead_lettered == stats.failed - stats.retried == len(run.dead), stats
    assert (run.info["messages"], run.info["delayed"], run.info["in_flight"]) == (0, 0, 0), run.info
    by_id: dict[str, list[Message]] = {}
    for message in run.published:
        by_id.setdefault(message.message_id, []).append(message)
    for dead in run.dead:
        assert dead.headers.get(REASON) in reasons, dead.headers.get(REASON)
        assert dead.headers["kq-original-queue"] == QUEUE
        assert dead.headers["kq-dead-letter-error"]
        kept = dead.headers.items() - {(k, v) for k, v in dead.headers.items() if k in LOOP_HEADERS}
        assert any(
            # A message without a content type is read as JSON, and dead-lettered labelled so.
            (m.body, m.content_type or JSON, m.routing_key)
            == (dead.body, dead.content_type, dead.routing_key)
            and {(k, v) for k, v in m.headers.items() if k not in LOOP_HEADERS} == kept
            for m in by_id.get(dead.message_id, [])
        ), f"dead letter {dead!r} does not match what was published"


def decoded(message: Message) -> Any:
    """The body as a JSON-only consumer decodes it (raises when it does not decode)."""
    return decode_body(message.body, message.content_type, ACCEPTED_JSON)


def decodes(message: Message) -> bool:
    try:
        decoded(message)
    except Exception:
        return False
    return True


def expected_argv(message: Message) -> list[str] | None:
    """The argv an allowed, valid, not vetoed ``echoback`` message must run with."""
    if VETO in message.headers:
        return None
    try:
        call = parse_command(decoded(message))
    except Exception:
        return None
    return call.argv() if call.command == "echoback" else None


def expected_call(message: Message) -> str | None:
    """The call (as JSON) an allowed, valid, not vetoed service message must make."""
    if VETO in message.headers:
        return None
    try:
        call = parse_service_call(decoded(message))
    except Exception:
        return None
    if (call.service, call.method) != (SERVICES, "allowed"):
        return None
    return call_key(call.arguments, call.kwargs)


def call_key(arguments: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    return json.dumps([list(arguments), dict(kwargs)], sort_keys=True)


def inprocess_consumer() -> InProcessConsoleCommandHandler:
    return InProcessConsoleCommandHandler(ConsoleSettings(callable=f"{CLI}:main"), AllowList(["echoback"]))


def prop_settings(max_examples: int) -> settings:
    """No deadline (a loop run takes a variable time); batches are big on purpose."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


OTHERS_FOR_CONSOLE = st.one_of(service_bodies(), http_bodies(urls(8080)))
OTHERS_FOR_SERVICE = st.one_of(command_bodies(), http_bodies(urls(8080)))


# --------------------------------------------------------------------------------------------------
# Console commands (in-process mode) and services: properties 1, 2, 3


#: The main test: examples x batch size messages.
CONSOLE_EXAMPLES, CONSOLE_BATCH = 200, 50


def test_inprocess_console_consumer_runs_only_allowed_commands(record: ModuleType) -> None:
    consumer = inprocess_consumer()
    environment = dict(os.environ)
    thrown = executed = 0

    @prop_settings(CONSOLE_EXAMPLES)
    @given(batch=batches(command_bodies(), OTHERS_FOR_CONSOLE, CONSOLE_BATCH))
    def check(batch: list[Message]) -> None:
        nonlocal thrown, executed
        clear(record)
        run = run_batch(consumer, batch, dispatcher=listeners())
        thrown += len(batch)
        executed += len(record.argvs)
        # 3. only the allowed command ever ran ...
        assert all(argv[0] == "echoback" for argv in record.argvs), record.argvs
        assert not any("\x00" in item for argv in record.argvs for item in argv)
        # ... and every valid, allowed, not vetoed message ran exactly once, with its argv.
        assert record.argvs == [argv for argv in map(expected_argv, batch) if argv is not None]
        # 2. accounting.
        check_settled(run)
        stats = run.loop.stats
        failing = [argv for argv in record.argvs if FAILING_ARGUMENTS & set(argv)]
        assert stats.consumed == len(record.argvs) - len(failing)
        assert run.reasons["failed"] == len(failing)
        assert stats.vetoed == sum(1 for m in batch if VETO in m.headers and decodes(m))
        assert dict(os.environ) == environment

    check()
    assert thrown >= CONSOLE_EXAMPLES * CONSOLE_BATCH >= 10_000
    assert executed > 0, "no message was valid: the strategies are off"


def test_service_consumer_calls_only_the_allowed_function(record: ModuleType) -> None:
    consumer = ServiceHandler(AllowMap({SERVICES: ["allowed"]}))
    thrown = 0

    @prop_settings(100)
    @given(batch=batches(service_bodies(), OTHERS_FOR_SERVICE, 40))
    def check(batch: list[Message]) -> None:
        nonlocal thrown
        clear(record)
        # Failed executions are retried once: garbage kq-attempt headers meet the retry policy.
        run = run_batch(consumer, batch, dispatcher=listeners(retry_once=True), until_drained=True)
        thrown += len(batch)
        # 3. only the allowed function of the allowed module ran; the other module was never imported.
        assert {name for name, _, _ in record.calls} <= {"allowed"}, record.calls
        assert record.imports == []
        assert FORBIDDEN not in sys.modules
        # Every valid allowed call ran, failed ones once more.
        expected = [key for key in map(expected_call, batch) if key is not None]
        made = Counter(call_key(arguments, kwargs) for _, arguments, kwargs in record.calls)
        assert Counter(expected) - made == Counter(), "a valid allowed call did not run"
        again = made - Counter(expected)
        assert all("boom" in json.loads(key)[0] for key in again), "a call ran twice without failing"
        assert again.total() == run.loop.stats.retried
        # 2. accounting; a failed execution is dead-lettered only after its last attempt.
        check_settled(run)
        assert all(attempt_of(d) >= 2 for d in run.dead if d.headers[REASON] == "failed")

    check()
    assert thrown >= 4_000


# --------------------------------------------------------------------------------------------------
# Signatures required: property 4


KEY = new_key().encode()
OTHER_KEY = new_key().encode()
SIGNER = Signer("k1", KEY)
MAX_AGE = 300.0


def verifier() -> Verifier:
    return Verifier({"k1": KEY}, max_age=MAX_AGE)


@dataclass(frozen=True)
class SignedSpec:
    """A properly signed, valid echoback message, with the tampered copies and replays sent with it."""

    fails: bool
    headers: Mapping[str, str]
    routing_key: str
    tampers: tuple[str, ...]
    copies: int


TAMPERS: dict[str, Callable[[Message, int], Message]] = {
    "body": lambda m, i: replace(
        m, body=encode_json({"command": "echoback", "arguments": [f"tampered-{i}"]})
    ),
    "routing-key": lambda m, i: replace(m, routing_key=m.routing_key + ".x"),
    "content-type": lambda m, i: replace(m, content_type="application/json; charset=utf-8"),
    "message-id": lambda m, i: replace(m, message_id=m.message_id + "x"),
    "header-added": lambda m, i: replace(m, headers={**m.headers, "x-added": "1"}),
    "header-changed": lambda m, i: replace(m, headers={**m.headers, "x-user": "root"}),
    "header-removed": lambda m, i: replace(m, headers={k: v for k, v in m.headers.items() if k != "x-user"}),
    "signed-at": lambda m, i: replace(
        m, headers={**m.headers, SIGNED_AT: f"{float(m.headers[SIGNED_AT]) + 1:.3f}"}
    ),
    "nonce": lambda m, i: replace(m, headers={**m.headers, NONCE: "0" * 32}),
    "key-id": lambda m, i: replace(m, headers={**m.headers, KEY_ID: "k2"}),
    "unsigned": lambda m, i: replace(m, headers={k: v for k, v in m.headers.items() if k != SIGNATURE}),
    "signature": lambda m, i: replace(
        m,
        headers={
            **m.headers,
            SIGNATURE: ("0" if m.headers[SIGNATURE][0] != "0" else "1") + m.headers[SIGNATURE][1:],
        },
    ),
    "other-secret": lambda m, i: Signer("k1", OTHER_KEY).sign(unsigned(m), QUEUE),
    "other-queue": lambda m, i: SIGNER.sign(unsigned(m), "other"),
    "expired": lambda m, i: SIGNER.sign(unsigned(m), QUEUE, valid_from=time.time() - 2 * MAX_AGE),
    "not-yet-valid": lambda m, i: SIGNER.sign(unsigned(m), QUEUE, valid_from=time.time() + 3600),
}


def unsigned(message: Message) -> Message:
    return replace(
        message,
        headers={k: v for k, v in message.headers.items() if k not in (KEY_ID, SIGNED_AT, NONCE, SIGNATURE)},
    )


SIGNED_SPECS = st.builds(
    SignedSpec,
    fails=st.integers(0, 4).map(lambda n: n == 0),
    headers=st.dictionaries(
        HEADER_NAMES.filter(lambda n: n not in (VETO, LISTENER_CRASH)), HEADER_VALUES, max_size=2
    ),
    routing_key=ROUTING_KEYS,
    tampers=st.lists(st.sampled_from(sorted(TAMPERS)), max_size=4, unique=True).map(tuple),
    copies=st.integers(0, 2),
)


def signed_batch(specs: Sequence[SignedSpec]) -> list[Message]:
    """The signed messages, their tampered variants and their replays (a replay may also carry another
    kq-attempt: that header is changed in transit, so it is not signed)."""
    batch: list[Message] = []
    for i, spec in enumerate(specs):
        arguments = [f"signed-{i}", *(["boom"] if spec.fails else [])]
        message = Message(
            encode_json({"command": "echoback", "arguments": arguments}),
            headers={**spec.headers, "x-user": "ops"},
            routing_key=spec.routing_key,
            message_id=f"signed-{i}",
        )
        good = SIGNER.sign(message, QUEUE)
        batch.append(good)
        batch.extend(TAMPERS[name](good, i) for name in spec.tampers)
        batch.extend(
            good if copy % 2 == 0 else replace(good, headers={**good.headers, "kq-attempt": "7"})
            for copy in range(spec.copies)
        )
    return batch


def check_signed_run(record: ModuleType, run: Run, specs: Sequence[SignedSpec]) -> None:
    """Property 4: only the signed messages ran, each once; everything else was refused, before being
    decoded, with a signature reason."""
    check_settled(run, SIGNATURE_REASONS | {"failed"})
    ran = Counter(item for argv in record.argvs for item in argv if item.startswith(("signed-", "tampered-")))
    assert ran == Counter(f"signed-{i}" for i in range(len(specs))), record.argvs
    assert all(argv[0] == "echoback" and len(argv) <= 3 for argv in record.argvs), record.argvs
    stats = run.loop.stats
    failing = sum(spec.fails for spec in specs)
    assert (stats.consumed, stats.vetoed) == (len(specs) - failing, 0)
    assert run.reasons["failed"] == failing
    assert sum(run.reasons[r] for r in SIGNATURE_REASONS) == len(run.published) - len(specs)


def test_signatures_required_nothing_unsigned_or_forged_runs(record: ModuleType) -> None:
    consumer = inprocess_consumer()
    thrown = 0

    @prop_settings(100)
    @given(
        noise=st.lists(
            messages(command_bodies(), OTHERS_FOR_CONSOLE, forged_signatures(ascii_only=True)),
            min_size=25,
            max_size=25,
        ),
        specs=st.lists(SIGNED_SPECS, min_size=1, max_size=4),
        data=st.data(),
    )
    def check(noise: list[Message], specs: list[SignedSpec], data: st.DataObject) -> None:
        nonlocal thrown
        clear(record)
        everything = numbered(noise) + signed_batch(specs)
        batch = data.draw(st.permutations(everything), label="order")
        run = run_batch(consumer, batch, dispatcher=listeners(), verifier=verifier())
        thrown += len(batch)
        check_signed_run(record, run, specs)

    check()
    assert thrown >= 2_500


def test_forged_signatures_of_any_text_never_crash_the_consumer(record: ModuleType) -> None:
    consumer = inprocess_consumer()

    @prop_settings(100)
    @given(batch=batches(command_bodies(), OTHERS_FOR_CONSOLE, 20, forged_signatures(ascii_only=False)))
    @example(batch=[Message(b"{}", headers={KEY_ID: "k1", SIGNED_AT: "0", SIGNATURE: "\x80"})])
    def check(batch: list[Message]) -> None:
        clear(record)
        run = run_batch(consumer, batch, dispatcher=listeners(), verifier=verifier())
        check_signed_run(record, run, [])

    check()


# --------------------------------------------------------------------------------------------------
# Inputs a broker or a foreign producer can deliver but kq's own Message refuses


def without_content_type(message: Message) -> Message:
    """The message as the RabbitMQ driver delivers one published without a content type
    (``properties.content_type or ""``); kq's own Message refuses an empty one, so set it behind its back."""
    object.__setattr__(message, "content_type", "")
    return message


def test_messages_without_content_type_end_consumed_or_dead_lettered(record: ModuleType) -> None:
    consumer = inprocess_consumer()

    @prop_settings(50)
    @given(
        batch=batches(command_bodies(), OTHERS_FOR_CONSOLE, 10).map(
            lambda b: [without_content_type(m) for m in b]
        )
    )
    @example(batch=[without_content_type(Message(b""))])
    def check(batch: list[Message]) -> None:
        clear(record)
        run = run_batch(consumer, batch, dispatcher=listeners())
        assert all(argv[0] == "echoback" for argv in record.argvs)
        check_settled(run)

    check()


def test_inprocess_consumer_restores_the_environment_whatever_the_message_id(record: ModuleType) -> None:
    consumer = inprocess_consumer()
    environment = dict(os.environ)

    @prop_settings(50)
    @given(
        batch=st.lists(
            st.builds(
                lambda m, i: replace(m, message_id=i),
                messages(command_bodies(), OTHERS_FOR_CONSOLE),
                st.text(max_size=6),
            ),
            min_size=10,
            max_size=10,
        )
    )
    @example(batch=[Message(encode_json({"command": "echoback"}), message_id="\x00")])
    def check(batch: list[Message]) -> None:
        clear(record)
        run_batch(consumer, batch, dispatcher=listeners())
        assert dict(os.environ) == environment
        assert record.argvs == [argv for argv in map(expected_argv, batch) if argv is not None]

    check()


# --------------------------------------------------------------------------------------------------
# HTTP: property 3 for URLs and redirects


REDIRECT_PATH = re.compile(r"/redirect/30[12378]\?to=[A-Za-z0-9%._~-]*")


class RecordingServer(ThreadingHTTPServer):
    """Records every request; ``/redirect/<code>?to=<url>`` answers ``code`` with ``Location: url``,
    anything else 200."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.port = int(self.server_address[1])
        self.paths: list[str] = []
        self.lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: some Locations cannot be sent (not latin-1), and the client gives up."""


class RecordingHandler(BaseHTTPRequestHandler):
    server: RecordingServer

    def log_message(self, *args: Any) -> None:
        """Quiet."""

    def _handle(self) -> None:
        with self.server.lock:
            self.server.paths.append(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(min(length, 1 << 20))
        parts = urlsplit(self.path)
        match = re.fullmatch(r"/redirect/(\d+)", parts.path)
        if match:
            self.send_response(int(match.group(1)))
            self.send_header("Location", dict(parse_qsl(parts.query)).get("to", ""))
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_TRACE = _handle  # noqa: N815


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    recording = RecordingServer()
    thread = threading.Thread(target=recording.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield recording
    finally:
        recording.shutdown()
        recording.server_close()
        thread.join(timeout=5)


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """Every (host, port) the process resolves; ``*.invalid`` fails at once (RFC 6761), no proxy is used."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")
    seen: list[tuple[str, object]] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append((str(host), port))
        if str(host).lower().rstrip(".").endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return seen


def test_http_consumer_never_requests_outside_its_allow_list(
    record: ModuleType, server: RecordingServer, lookups: list[tuple[str, object]]
) -> None:
    port = server.port
    # The allowed host resolves nowhere; the only other allowed URLs are the server's redirect endpoint.
    allowed = AllowList(
        ["allowed.invalid", "re:" + re.escape(f"http://127.0.0.1:{port}") + REDIRECT_PATH.pattern]
    )
    others = st.one_of(command_bodies(), service_bodies())
    thrown = 0

    @prop_settings(60)
    @given(batch=batches(http_bodies(request_urls(port)), others, 10))
    def check(batch: list[Message]) -> None:
        nonlocal thrown
        with server.lock:
            server.paths.clear()
        lookups.clear()
        run = run_batch(HttpHandler(allowed), batch, dispatcher=listeners())
        thrown += len(batch)
        with server.lock:
            paths = list(server.paths)
        assert all(REDIRECT_PATH.fullmatch(path) for path in paths), paths
        assert all(
            host.lower() == "allowed.invalid" or (host, at) == ("127.0.0.1", port) for host, at in lookups
        ), lookups
        check_settled(run)

    check()
    assert thrown >= 600


def test_http_messages_that_can_never_succeed_are_not_retryable_failures(
    lookups: list[tuple[str, object]],
) -> None:
    allowed = AllowList(["allowed.invalid"])

    @prop_settings(60)
    @given(batch=batches(http_bodies(urls(8080)), http_bodies(urls(8080)), 10))
    @example(batch=[Message(encode_json({"url": "http://[::1/"}))])
    def check(batch: list[Message]) -> None:
        run = run_batch(HttpHandler(allowed), batch)
        check_settled(run)
        # "failed" is for a request that was sent, or could not be: allowed.invalid resolves nowhere.
        for dead in run.dead:
            if dead.headers[REASON] == "failed":
                assert dead.headers["kq-dead-letter-error"].startswith("ExecutionFailedError:"), dead.headers

    check()
