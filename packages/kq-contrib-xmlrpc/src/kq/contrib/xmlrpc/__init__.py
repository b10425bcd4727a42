r"""kq-contrib-xmlrpc: XML-RPC calls as kq messages.

Install ``kq-contrib-xmlrpc`` next to ``kq-core``: it adds the ``xmlrpc`` execution type (a handler
and a producer, in one module) and the ``kq queuexmlrpc`` command. A worker makes the calls its
queue's messages ask for, to the servers and methods the configuration allows (nothing is allowed by
default)::

    [queues.rpc]
    consumer = "xmlrpc"

    [allow.xmlrpc]
    "http://127.0.0.1:8000/RPC2" = ["reports.build", 're:system\..*']
    're:https://rpc[0-9]\.example\.com/RPC2' = ["ping"]

Keys are server URLs, exact or ``re:`` patterns matched against the whole URL; values are method names,
exact or ``re:`` (TOML's single-quoted strings need no escaping). An exact URL must be written as the
messages write it (``http://h/RPC2`` is not ``http://h/RPC2/``). Allowing ``system.multicall`` allows
only the calls inside it that are allowed too.

Queueing, from the shell (ARGS are strings; ``-j`` takes a JSON array for other types)::

    kq queuexmlrpc rpc http://127.0.0.1:8000/RPC2 reports.build -j '[2026, "weekly"]'
    kq consume rpc

or from Python::

    from kq.core import App
    from kq.contrib.xmlrpc import XmlRpcProducer

    with App.from_config() as app:
        app.producer_of(XmlRpcProducer, "rpc").publish("http://127.0.0.1:8000/RPC2", "reports.build", [2026])

The message body has the PHP library's shape, so either side can be PHP::

    {"server": "http://127.0.0.1:8000/RPC2", "method": "reports.build", "arguments": [2026, "weekly"]}

Producers and handlers both refuse a server that is not an ``http``/``https`` URL with a host (or that
carries credentials or a fragment), a method that is not a dotted name (``system.listMethods``; no part
starting with ``_``), arguments that are not a list (a missing list means none) or that XML-RPC cannot
carry (integers beyond 32 bits, NaN, control characters), and unknown keys. The default routing key is
the server, ``.`` and the method with ``:`` and ``/`` turned into ``.``.

The handler checks ``[allow.xmlrpc]`` before any network call; a refusal says whether the server or
the method was refused, and the message goes to the dead-letter queue. The call goes through the
standard library's ``xmlrpc.client`` with ``allow_none`` (``<nil/>``) and built-in types (base64 is
``bytes``, dateTime.iso8601 is ``datetime``; parsing a response evaluates nothing). Each socket
operation times out after 30 seconds (``DEFAULT_TIMEOUT``), a request is sent exactly once, redirects
are not followed, and a response larger than 16 MiB, compressed, or with a ``<!DOCTYPE`` is refused.
The return value is the result (``message_consumed`` listeners see it). A fault, an HTTP status other
than 200, a connection error, a timeout or a malformed answer is a failed execution
(``ExecutionFailedError``; a fault's carries an :class:`XmlRpcFault` as its ``result``), dead-lettered
or retried by the queue's policy. Credentials in server URLs are not supported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kq.contrib.xmlrpc.version import __version__

if TYPE_CHECKING:
    from kq.contrib.xmlrpc._errors import ResponseRefusedError, XmlRpcError
    from kq.contrib.xmlrpc._xmlrpc import (
        DEFAULT_TIMEOUT,
        MAX_RESPONSE,
        MULTICALL,
        XmlRpcCall,
        XmlRpcFault,
        XmlRpcHandler,
        XmlRpcProducer,
        make_xmlrpc_call,
        parse_xmlrpc_call,
    )

# Imported on first use: `kq --help` loads this package for the queuexmlrpc command and must not pay
# for kq-core.
_EXPORTS = {
    "MULTICALL": "_xmlrpc",
    "XmlRpcCall": "_xmlrpc",
    "XmlRpcError": "_errors",
    "ResponseRefusedError": "_errors",
    "XmlRpcFault": "_xmlrpc",
    "make_xmlrpc_call": "_xmlrpc",
    "parse_xmlrpc_call": "_xmlrpc",
    "DEFAULT_TIMEOUT": "_xmlrpc",
    "MAX_RESPONSE": "_xmlrpc",
    "XmlRpcHandler": "_xmlrpc",
    "XmlRpcProducer": "_xmlrpc",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    # messages
    "MULTICALL",
    "XmlRpcCall",
    "XmlRpcError",
    "ResponseRefusedError",
    "XmlRpcFault",
    "make_xmlrpc_call",
    "parse_xmlrpc_call",
    # producing
    "XmlRpcProducer",
    # consuming
    "DEFAULT_TIMEOUT",
    "MAX_RESPONSE",
    "XmlRpcHandler",
    # version
    "__version__",
]
