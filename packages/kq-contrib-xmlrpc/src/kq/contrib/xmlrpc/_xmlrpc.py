"""The XML-RPC execution type: the call message, its validation, the handler and the producer.

Body (the PHP library's shape)::

    {"server": "http://127.0.0.1:8000/RPC2", "method": "reports.build", "arguments": [2026, "weekly"]}

Everything a handler could only find out by failing is refused here, before anything is queued or
sent: a server that is not an ``http``/``https`` URL with a host (or that carries credentials or a
fragment), a method that is not a dotted name, arguments that XML-RPC cannot carry. The PHP library
left ``arguments`` undefined when a message had none; here it means no arguments.

:class:`XmlRpcHandler` checks ``[allow.xmlrpc]``, then makes the call (through
:mod:`kq.contrib.xmlrpc._transport`); :class:`XmlRpcProducer` queues calls.
"""

from __future__ import annotations

import http.client
import logging
import re
import urllib.parse
import xmlrpc.client
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kq.contrib.xmlrpc._errors import ResponseRefusedError
from kq.contrib.xmlrpc._transport import transport_for
from kq.core import (
    AllowMap,
    Delivery,
    ExecutionFailedError,
    Message,
    MessageFormatError,
    NotAllowedError,
    url_routing_key,
)
from kq.core.handlers import Handler, HandlerContext, MessageProducer, check_list, parse_object

logger = logging.getLogger(__name__.replace("._", "."))

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
    values = check_list(arguments)
    if method == MULTICALL:
        _check_multicall(values)
    check_marshallable(method, values)
    return XmlRpcCall(server=server, method=method, arguments=values)


def parse_xmlrpc_call(body: Any) -> XmlRpcCall:
    """Validate a decoded XML-RPC call body."""
    body = parse_object(body, "XML-RPC call", ("server", "method", "arguments"))
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


#: Seconds each socket operation of a call (connect, TLS handshake, each read) may take.
DEFAULT_TIMEOUT = 30.0
#: Most bytes of response body read; a larger answer is a failed execution.
MAX_RESPONSE = 16 * 1024 * 1024
#: Most characters of a fault string kept in the error message (the result keeps all of it).
MAX_FAULT_TEXT = 500


class XmlRpcHandler(Handler):
    """Calls the allowed XML-RPC methods that messages name.

    Nothing goes on the network before ``[allow.xmlrpc]`` allows the server and the method (and, for
    ``system.multicall``, every method it calls). The call's return value is the result, with XML-RPC
    types as built-in Python ones (``bytes`` for base64, ``datetime`` for dateTime.iso8601). A fault, an
    HTTP status other than 200 (redirects are not followed), a connection error, a timeout and a
    malformed or oversized answer are failed executions (:class:`~kq.core.ExecutionFailedError`); a
    fault's error carries an :class:`XmlRpcFault` as its ``result``.

    Args:
        allowed: ``[allow.xmlrpc]``: server URL (or ``re:``) -> methods.
        timeout: Seconds each socket operation may take.
        max_response: Most bytes of response body read.
    """

    kind = "xmlrpc"
    allow_section = "xmlrpc"

    def __init__(
        self, allowed: AllowMap, *, timeout: float = DEFAULT_TIMEOUT, max_response: int = MAX_RESPONSE
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        self.allowed = allowed
        self.timeout = timeout
        self.max_response = max_response

    @classmethod
    def from_context(cls, context: HandlerContext) -> XmlRpcHandler:
        """Use ``[allow.xmlrpc]``; ``re:`` keys match server URLs (at most ``MAX_SERVER_LENGTH`` long)."""
        return cls(context.config.allow.allow_map("xmlrpc", max_target=MAX_SERVER_LENGTH))

    def describe(self, body: Any) -> str:
        """``XML-RPC method on server``."""
        if (
            isinstance(body, dict)
            and isinstance(body.get("server"), str)
            and isinstance(body.get("method"), str)
        ):
            return f"XML-RPC {body['method'][:100]} on {body['server'][:200]}"
        return "XML-RPC call"

    def consume(self, body: Any, delivery: Delivery) -> Any:
        """Check the allow-list, then call; returns what the server returned."""
        call = parse_xmlrpc_call(body)
        self.check_allowed(call)
        return self.call(call)

    def check_allowed(self, call: XmlRpcCall) -> None:
        """Raise NotAllowedError saying whether the server or which method is not allowed."""
        for method in call.methods:
            if self.allowed.allows(call.server, method):
                continue
            if not self.allowed.knows(call.server):
                raise NotAllowedError(
                    f"XML-RPC server {call.server!r} is not in the allow-list ([allow.xmlrpc])"
                )
            inside = f" (called through {call.method})" if method != call.method else ""
            raise NotAllowedError(
                f"method {method!r}{inside} of XML-RPC server {call.server!r} is not in the allow-list "
                "([allow.xmlrpc])"
            )

    def call(self, call: XmlRpcCall) -> Any:
        """Make the call without consulting the allow-list; failures raise ExecutionFailedError."""
        where = f"XML-RPC {call.method} on {call.server}"
        transport = transport_for(call.server, timeout=self.timeout, max_response=self.max_response)
        try:
            with xmlrpc.client.ServerProxy(
                call.server, transport=transport, allow_none=True, use_builtin_types=True
            ) as proxy:
                return getattr(proxy, call.method)(*call.arguments)
        except xmlrpc.client.Fault as fault:
            code = fault.faultCode
            result = XmlRpcFault(
                server=call.server,
                method=call.method,
                fault_code=code if isinstance(code, int) and not isinstance(code, bool) else str(code),
                fault_string=str(fault.faultString),
            )
            raise ExecutionFailedError(
                f"{where}: fault {result.fault_code}: {result.fault_string[:MAX_FAULT_TEXT]}", result
            ) from None
        except xmlrpc.client.ProtocolError as exc:
            redirect = " (redirects are not followed)" if 300 <= exc.errcode < 400 else ""
            raise ExecutionFailedError(
                f"{where}: the server answered HTTP {exc.errcode} {exc.errmsg}{redirect}"
            ) from None
        except TimeoutError:
            raise ExecutionFailedError(f"{where}: no answer within {self.timeout:g}s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ExecutionFailedError(f"{where}: connection failed ({type(exc).__name__}: {exc})") from None
        except ResponseRefusedError as exc:
            raise ExecutionFailedError(f"{where}: {exc}") from None
        except Exception as exc:  # expat errors, ResponseError, values the unmarshaller cannot read
            raise ExecutionFailedError(f"{where}: invalid response ({type(exc).__name__}: {exc})") from None


class XmlRpcProducer(MessageProducer):
    """Queues XML-RPC calls; get one with ``app.producer_of(XmlRpcProducer, queue)``.

    ``publish_batch`` takes mappings with ``server``, ``method`` and ``arguments``.

    The default routing key is the server, ``.`` and the method, with ``:`` and ``/`` turned into ``.``
    (``http://h:8000/RPC2`` + ``add`` -> ``http...h.8000.RPC2.add``), as in the PHP library.
    """

    def build(
        self,
        server: str,
        method: str,
        arguments: Iterable[Any] = (),
        *,
        routing_key: str | None = None,
        ttl: float | None = None,
        delay: float = 0.0,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Build (without sending) the message calling ``method(*arguments)`` on ``server``.

        Raises:
            MessageFormatError: the server, the method or an argument would be refused by handlers.
        """
        call = make_xmlrpc_call(server, method, arguments)
        key = call.routing_key if routing_key is None else routing_key
        return self.json_message(call.to_body(), key, ttl=ttl, delay=delay, headers=headers)
