"""The XML-RPC consumer: checks ``[allow.xmlrpc]``, then makes the call a message asks for."""

from __future__ import annotations

import http.client
import logging
import xmlrpc.client
from typing import Any

from kq.contrib.xmlrpc._call import MAX_SERVER_LENGTH, XmlRpcCall, XmlRpcFault, parse_xmlrpc_call
from kq.contrib.xmlrpc._errors import ResponseRefusedError
from kq.contrib.xmlrpc._transport import transport_for
from kq.core import (
    AllowMap,
    Delivery,
    ExecutionFailedError,
    Handler,
    HandlerContext,
    NotAllowedError,
)

logger = logging.getLogger(__name__)

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
        return cls(AllowMap(context.config.allow.xmlrpc, max_target=MAX_SERVER_LENGTH))

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
