"""The XML-RPC call message: its shape, its validation, and what a fault leaves as the result.

Body (the PHP library's shape)::

    {"server": "http://127.0.0.1:8000/RPC2", "method": "reports.build", "arguments": [2026, "weekly"]}

Everything a consumer could only find out by failing is refused here, before anything is queued or
sent: a server that is not an ``http``/``https`` URL with a host (or that carries credentials or a
fragment), a method that is not a dotted name, arguments that XML-RPC cannot carry. The PHP library
left ``arguments`` undefined when a message had none; here it means no arguments.
"""

from __future__ import annotations

import re
import urllib.parse
import xmlrpc.client
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kq.core import MessageFormatError, url_routing_key

#: The standard method that runs several calls in one request; its inner calls are allow-listed too.
MULTICALL = "system.multicall"
#: Longest server URL and method name accepted.
MAX_SERVER_LENGTH = 2048
MAX_METHOD_LENGTH = 255

# Dotted names of letters, digits and "_"; no empty part and no part starting with "_" (Python's
# SimpleXMLRPCServer refuses those too: they would reach private attributes).
_METHOD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*(?:\.[A-Za-z0-9][A-Za-z0-9_]*)*")
# What XML 1.0 cannot carry, even escaped: most C0 controls, lone surrogates, U+FFFE and U+FFFF.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# XML-RPC has no representation for NaN or infinities; xmlrpc.client would write Python's repr.
_NOT_FINITE = re.compile(r"<double>(?:nan|-?inf)</double>")


@dataclass(frozen=True)
class XmlRpcCall:
    """A validated XML-RPC call message."""

    server: str
    method: str
    arguments: tuple[Any, ...] = ()

    def to_body(self) -> dict[str, Any]:
        """The JSON-ready message body."""
        return {"server": self.server, "method": self.method, "arguments": list(self.arguments)}

    @property
    def routing_key(self) -> str:
        """The default routing key: server, ``.``, method, with ``:`` and ``/`` turned into ``.``."""
        return url_routing_key(f"{self.server}.{self.method}")

    @property
    def methods(self) -> tuple[str, ...]:
        """Every method the call runs on the server: the method, then ``system.multicall``'s inner ones."""
        if self.method != MULTICALL:
            return (self.method,)
        return (self.method, *(inner["methodName"] for inner in self.arguments[0]))


@dataclass(frozen=True)
class XmlRpcFault:
    """The result carried by the ExecutionFailedError of a call the server answered with a fault."""

    server: str
    method: str
    fault_code: int | str
    fault_string: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "server": self.server,
            "method": self.method,
            "fault_code": self.fault_code,
            "fault_string": self.fault_string,
        }


def make_xmlrpc_call(server: str, method: str, arguments: Iterable[Any] = ()) -> XmlRpcCall:
    """Build a validated :class:`XmlRpcCall` (raises MessageFormatError naming what is wrong)."""
    check_server(server)
    check_method(method)
    if isinstance(arguments, (str, bytes, Mapping)) or not isinstance(arguments, Iterable):
        raise MessageFormatError(f"'arguments' must be a list, not {type(arguments).__name__}")
    values = tuple(arguments)
    if method == MULTICALL:
        _check_multicall(values)
    check_marshallable(method, values)
    return XmlRpcCall(server=server, method=method, arguments=values)


def parse_xmlrpc_call(body: Any) -> XmlRpcCall:
    """Validate a decoded XML-RPC call body."""
    if not isinstance(body, dict):
        raise MessageFormatError(f"an XML-RPC call message must be a JSON object, not {type(body).__name__}")
    unknown = set(body) - {"server", "method", "arguments"}
    if unknown:
        raise MessageFormatError(f"unknown keys in XML-RPC call message: {', '.join(sorted(unknown))}")
    # make_xmlrpc_call checks the types of what the message holds.
    server: Any = body.get("server")
    method: Any = body.get("method")
    arguments: Any = body.get("arguments")
    return make_xmlrpc_call(server, method, [] if arguments is None else arguments)


def check_server(server: Any) -> None:
    """Refuse anything but an ``http``/``https`` URL with a host, no credentials and no fragment.

    Credentials are refused because a message body is logged and dead-lettered, and because
    ``http://allowed.example@elsewhere/`` would let an URL that starts like an allowed one reach
    another host.
    """
    if not isinstance(server, str) or not server:
        raise MessageFormatError("'server' must be a non-empty string")
    shown = repr(server[:120])
    if len(server) > MAX_SERVER_LENGTH:
        raise MessageFormatError(f"server {shown}... is longer than {MAX_SERVER_LENGTH} characters")
    if any(c.isspace() or not c.isprintable() for c in server):
        raise MessageFormatError(f"server {shown} contains spaces or control characters")
    parts = urllib.parse.urlsplit(server)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise MessageFormatError(f"server {shown} has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MessageFormatError(f"server {shown} must be an http:// or https:// URL with a host")
    if "@" in parts.netloc:
        raise MessageFormatError(f"server {shown} must not carry credentials")
    if "#" in server:
        raise MessageFormatError(f"server {shown} must not have a fragment")


def check_method(method: Any) -> None:
    """Refuse anything but a dotted name such as ``system.listMethods`` (no part starting with ``_``)."""
    if not isinstance(method, str) or len(method) > MAX_METHOD_LENGTH or not _METHOD.fullmatch(method):
        raise MessageFormatError(
            f"method {str(method)[:80]!r} must be a dotted name of letters, digits and '_' "
            "(such as system.listMethods), no part starting with '_'"
        )


def check_marshallable(method: str, arguments: tuple[Any, ...]) -> None:
    """Refuse arguments that ``xmlrpc.client.dumps`` cannot encode, or encodes into invalid XML-RPC."""
    try:
        xml = xmlrpc.client.dumps(arguments, methodname=method, allow_none=True)
    except (TypeError, OverflowError, ValueError, RecursionError) as exc:
        raise MessageFormatError(f"the arguments of {method} cannot be sent by XML-RPC: {exc}") from None
    if _NOT_FINITE.search(xml):
        raise MessageFormatError(
            f"the arguments of {method} hold NaN or infinity, which XML-RPC cannot carry"
        )
    found = _NOT_XML.search(xml)
    if found:
        raise MessageFormatError(
            f"the arguments of {method} hold the character {found.group()!r}, which XML cannot carry"
        )


def _check_multicall(arguments: tuple[Any, ...]) -> None:
    shape = "system.multicall takes one array of {methodName, params} structs"
    if len(arguments) != 1 or not isinstance(arguments[0], (list, tuple)):
        raise MessageFormatError(shape)
    for inner in arguments[0]:
        if (
            not isinstance(inner, Mapping)
            or set(inner) != {"methodName", "params"}
            or not isinstance(inner["params"], (list, tuple))
        ):
            raise MessageFormatError(shape)
        check_method(inner["methodName"])
        if inner["methodName"] == MULTICALL:
            raise MessageFormatError("system.multicall cannot call system.multicall")
