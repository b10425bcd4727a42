"""Execution types: what workers do with messages, and the template for writing one.

An execution type is one module holding three things, and one ``kq.handlers`` entry point:

- its **call**: a frozen dataclass with ``to_body()``, a ``make_<call>(...)`` that validates Python
  values and a ``parse_<call>(body)`` that validates a decoded message (start with
  :func:`parse_object`), both raising :class:`~kq.core.MessageFormatError`;
- its **handler**: a :class:`Handler` subclass with a ``kind``, ``consume(body, delivery)`` (parse,
  check the allow-list, execute; raise :class:`~kq.core.NotAllowedError` or
  :class:`~kq.core.ExecutionFailedError`) and a ``from_context(context)`` reading the configuration;
- its **producer**: a :class:`MessageProducer` subclass whose ``build(...)`` makes one message with
  :meth:`MessageProducer.json_message`; ``publish`` and ``publish_batch`` come with the base class,
  and applications get one with ``app.producer_of(TheProducer, queue)``.

The entry point names the handler (``[project.entry-points."kq.handlers"] mytype = "pkg:MyHandler"``),
and ``consumer = "mytype"`` in a ``[queues.*]`` section selects it. kq-core registers its own types
(``console_command``, ``inprocess_console_command``, ``forked_console_command``, ``service``, ``http``,
``noop``) the same way;
``docs/execution-types.md`` walks through a complete one.

Everything here is imported on first use, so that loading one type (an entry point) does not load the
others: ``requests`` is imported only by a worker that builds an :class:`HttpHandler`.

The names, by group:

The template
    :class:`Handler`, :class:`HandlerContext`, :class:`MessageProducer`; :func:`build_handler` builds
    the handler a queue's ``consumer`` names. Envelope helpers: :func:`parse_object`,
    :func:`check_list`, :func:`json_kind`; body codecs: :func:`decode_body`, :func:`encode_json`,
    :func:`media_type`.

Generic types
    :class:`NoopHandler` (``noop``), :class:`CallableHandler` (a ``module:function`` consumer) and
    :class:`GenericMessageProducer` (bodies as they are).

Console commands
    :class:`CommandCall` (:func:`make_command`, :func:`parse_command`), :class:`ConsoleCommandHandler`
    (a child process per message, run by :func:`run_command`, giving a :class:`CommandResult`),
    :class:`InProcessConsoleCommandHandler` (inside the worker), :class:`ForkedConsoleCommandHandler`
    (a child forked per message from a parent that imported the entry point once) and
    :class:`ConsoleCommandProducer`.

Services
    :class:`ServiceCall` (:func:`make_service_call`, :func:`parse_service_call`),
    :class:`ServiceHandler` and :class:`ServiceProducer`.

HTTP requests
    :class:`HttpRequest` (:func:`make_http_request`, :func:`parse_http_request`), :class:`HttpHandler`
    (giving an :class:`HttpResult`) and :class:`HttpProducer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kq.core._lazy import lazy_exports

if TYPE_CHECKING:
    from kq.core.handlers._base import CallableHandler, Handler, HandlerContext, NoopHandler, build_handler
    from kq.core.handlers._codecs import (
        check_list,
        decode_body,
        encode_json,
        json_kind,
        media_type,
        parse_object,
    )
    from kq.core.handlers._console import (
        CommandCall,
        ConsoleCommandHandler,
        ConsoleCommandProducer,
        make_command,
        parse_command,
    )
    from kq.core.handlers._forked import ForkedConsoleCommandHandler
    from kq.core.handlers._http import (
        HttpHandler,
        HttpProducer,
        HttpRequest,
        HttpResult,
        make_http_request,
        parse_http_request,
    )
    from kq.core.handlers._inprocess import InProcessConsoleCommandHandler
    from kq.core.handlers._process import CommandResult, run_command
    from kq.core.handlers._producer import GenericMessageProducer, MessageProducer
    from kq.core.handlers._service import (
        ServiceCall,
        ServiceHandler,
        ServiceProducer,
        make_service_call,
        parse_service_call,
    )

# Where each name lives, relative to kq.core.
_EXPORTS = {
    **dict.fromkeys(
        ("CallableHandler", "Handler", "HandlerContext", "NoopHandler", "build_handler"), "handlers._base"
    ),
    **dict.fromkeys(
        ("check_list", "decode_body", "encode_json", "json_kind", "media_type", "parse_object"),
        "handlers._codecs",
    ),
    **dict.fromkeys(("GenericMessageProducer", "MessageProducer"), "handlers._producer"),
    **dict.fromkeys(
        ("CommandCall", "ConsoleCommandHandler", "ConsoleCommandProducer", "make_command", "parse_command"),
        "handlers._console",
    ),
    **dict.fromkeys(("CommandResult", "run_command"), "handlers._process"),
    "InProcessConsoleCommandHandler": "handlers._inprocess",
    "ForkedConsoleCommandHandler": "handlers._forked",
    **dict.fromkeys(
        ("ServiceCall", "ServiceHandler", "ServiceProducer", "make_service_call", "parse_service_call"),
        "handlers._service",
    ),
    **dict.fromkeys(
        (
            "HttpHandler",
            "HttpProducer",
            "HttpRequest",
            "HttpResult",
            "make_http_request",
            "parse_http_request",
        ),
        "handlers._http",
    ),
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, package="kq.core")

__all__ = [
    # the template
    "Handler",
    "HandlerContext",
    "MessageProducer",
    "build_handler",
    "check_list",
    "decode_body",
    "encode_json",
    "json_kind",
    "media_type",
    "parse_object",
    # generic types
    "CallableHandler",
    "GenericMessageProducer",
    "NoopHandler",
    # console commands (and their in-process and forked modes)
    "CommandCall",
    "CommandResult",
    "ConsoleCommandHandler",
    "ConsoleCommandProducer",
    "ForkedConsoleCommandHandler",
    "InProcessConsoleCommandHandler",
    "make_command",
    "parse_command",
    "run_command",
    # services
    "ServiceCall",
    "ServiceHandler",
    "ServiceProducer",
    "make_service_call",
    "parse_service_call",
    # HTTP requests
    "HttpHandler",
    "HttpProducer",
    "HttpRequest",
    "HttpResult",
    "make_http_request",
    "parse_http_request",
]
