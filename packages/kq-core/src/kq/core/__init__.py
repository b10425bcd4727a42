"""kq-core: one small API over message queues, and workers that run what messages ask for.

Publishing::

    from kq.core import App

    with App.from_config() as app:          # kq.toml, [tool.kq] in pyproject.toml, or zero-config defaults
        app.command_producer("demo").publish("echoback", ["hello"], {"f": "out.txt"})

Consuming (what ``kq consume demo`` does)::

    with App.from_config() as app:
        app.consume_loop("demo", limits=Limits(messages=10)).run()

This package is the surface for applications. Its names are imported on first use (PEP 562), so that
``import kq.core`` stays cheap: a producer does not pay for psutil, the HTTP handler, re-drive or the
watchdog. The other public modules serve other audiences:

- :mod:`kq.core.driver`: the driver contract, for driver authors;
- :mod:`kq.core.testing`: the driver conformance suite and test helpers (needs pytest);
- :mod:`kq.core.plugins`: entry-point discovery (drivers, handlers, listeners) and loading objects
  named ``module:attribute``;
- :mod:`kq.core.listeners`, :mod:`kq.core.metrics`: ready-made event listeners and Prometheus metrics.

The names, by group:

Application and configuration
    :class:`App` ties a configuration to drivers, producers, consume loops and listeners.
    :func:`load_config` finds and reads ``kq.toml`` (or ``[tool.kq]`` in ``pyproject.toml``),
    :func:`find_config_file` only finds it, :func:`parse_config` reads a mapping; all give a
    :class:`Config`.

Messages
    :class:`Message` is what is sent, :class:`Delivery` what a handler receives. :func:`encode_json`,
    :func:`decode_body` and :func:`media_type` turn bodies into values and back, :data:`JSON` is the
    content type kq writes.

Headers kq writes
    Names starting with :data:`KQ_HEADER_PREFIX` are kq's own: :data:`ATTEMPT` counts executions; a
    dead letter carries :data:`DEAD_LETTER_REASON`, :data:`DEAD_LETTER_ERROR`,
    :data:`DEAD_LETTER_QUEUE` (the queue it came from), :data:`DEAD_LETTER_TIME`,
    :data:`DEAD_LETTER_DELIVERIES` and :data:`DEAD_LETTER_FOREIGN_HEADERS`.

Producing
    :class:`GenericMessageProducer` publishes bodies as they are; the typed producers publish one
    execution type's messages: :class:`ConsoleCommandProducer`, :class:`ServiceProducer`,
    :class:`HttpProducer`. :class:`MessageProducer` is their base, for new execution types.
    :func:`command_routing_key` and :func:`url_routing_key` are the default routing keys.

Handlers
    A :class:`Handler` executes what a message asks for, with a :class:`HandlerContext`;
    :class:`CallableHandler` wraps a function, :class:`NoopHandler` acknowledges. The built-in
    execution types: :class:`ConsoleCommandHandler`, :class:`InProcessConsoleCommandHandler` and
    :class:`ForkedConsoleCommandHandler` (a command line), :class:`ServiceHandler` (a method of a
    Python service), :class:`HttpHandler` (an HTTP request); each allowed by an :class:`AllowList` or
    :class:`AllowMap`.

Execution-type messages
    What the built-in types carry, to build and to read: :class:`CommandCall` (:func:`make_command`,
    :func:`parse_command`, result :class:`CommandResult`), :class:`ServiceCall`
    (:func:`make_service_call`, :func:`parse_service_call`), :class:`HttpRequest`
    (:func:`make_http_request`, :func:`parse_http_request`, result :class:`HttpResult`).

Consuming
    :class:`ConsumeLoop` receives, decodes, dispatches events, runs the handler and settles, within
    :class:`Limits`; :class:`PriorityLoop` consumes several queues in priority order, one
    :class:`ConsumeLoop` per queue; :class:`LoopStats` counts what they did; :class:`RetryPolicy` says
    when a failed message is tried again. :data:`CONSUME_OPTIONS` declares the options of ``kq consume``
    (each a :class:`ConsumeOption`); :func:`consume_arguments` turns option values into its command line
    and :func:`loop_arguments` into the arguments of :meth:`App.consume_loop`.

Events
    :class:`EventDispatcher` calls listeners for each :class:`Event`: :class:`ProcessStarted`,
    :class:`MessageReceived`, :class:`MessageConsumed`, :class:`MessageConsumptionFailed`,
    :class:`MessageSent`, :class:`ProcessStopped`.

Dead letters
    :func:`show_dead_letters`, :func:`retry_dead_letters` and :func:`remove_dead_letters` read, re-drive
    and drop the messages of a queue's dead-letter queue, each giving a :class:`RedriveResult`.

Signing
    :class:`Signer` signs what producers send and :class:`Verifier` checks it on receipt, with keys made
    by :func:`new_key`.

Errors
    Every error is a :class:`KqError`: :class:`ConfigError`, :class:`UnknownQueueError`,
    :class:`UnknownPluginError`, :class:`PluginLoadError`, :class:`MissingExtraError`,
    :class:`PublishError`, :class:`BrokerUnavailableError`, :class:`ClosedError`,
    :class:`MessageFormatError`, :class:`SignatureError`, :class:`NotAllowedError`,
    :class:`ExecutionFailedError` (:class:`HandlerTimeoutError`: past its time limit),
    :class:`DeliveryStateError`, :class:`LeaseLostError`, :class:`UnsupportedOperationError`.
"""

from __future__ import annotations

from kq.core._lazy import TYPE_CHECKING, lazy_exports
from kq.core.version import __version__

# For type checkers and IDEs only; at run time each name is imported on first use (_EXPORTS below).
# Keep the two in step when a name moves.
if TYPE_CHECKING:
    from kq.core._allow import AllowList, AllowMap
    from kq.core._app import App
    from kq.core._config import Config, find_config_file, load_config, parse_config
    from kq.core._consume_options import CONSUME_OPTIONS, ConsumeOption, consume_arguments, loop_arguments
    from kq.core._errors import (
        BrokerUnavailableError,
        ClosedError,
        ConfigError,
        DeliveryStateError,
        ExecutionFailedError,
        HandlerTimeoutError,
        KqError,
        LeaseLostError,
        MessageFormatError,
        MissingExtraError,
        NotAllowedError,
        PluginLoadError,
        PublishError,
        SignatureError,
        UnknownPluginError,
        UnknownQueueError,
        UnsupportedOperationError,
    )
    from kq.core._events import (
        Event,
        EventDispatcher,
        MessageConsumed,
        MessageConsumptionFailed,
        MessageReceived,
        MessageSent,
        ProcessStarted,
        ProcessStopped,
    )
    from kq.core._limits import Limits
    from kq.core._loop import ConsumeLoop
    from kq.core._message import (
        ATTEMPT,
        DEAD_LETTER_DELIVERIES,
        DEAD_LETTER_ERROR,
        DEAD_LETTER_FOREIGN_HEADERS,
        DEAD_LETTER_QUEUE,
        DEAD_LETTER_REASON,
        DEAD_LETTER_TIME,
        JSON,
        KQ_HEADER_PREFIX,
        Delivery,
        Message,
    )
    from kq.core._priority import PriorityLoop
    from kq.core._redrive import RedriveResult, remove_dead_letters, retry_dead_letters, show_dead_letters
    from kq.core._retry import RetryPolicy
    from kq.core._routing import command_routing_key, url_routing_key
    from kq.core._signing import Signer, Verifier, new_key
    from kq.core._stats import LoopStats
    from kq.core.handlers._base import CallableHandler, Handler, HandlerContext, NoopHandler
    from kq.core.handlers._codecs import decode_body, encode_json, media_type
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
    from kq.core.handlers._process import CommandResult
    from kq.core.handlers._producer import GenericMessageProducer, MessageProducer
    from kq.core.handlers._service import (
        ServiceCall,
        ServiceHandler,
        ServiceProducer,
        make_service_call,
        parse_service_call,
    )

# Where each public name lives, relative to this package. kq's own modules import from these modules,
# never from this package, so that a name moves by editing one line here (and one above).
_EXPORTS = {
    # application and configuration
    "App": "_app",
    "Config": "_config",
    "find_config_file": "_config",
    "load_config": "_config",
    "parse_config": "_config",
    # messages
    "Delivery": "_message",
    "JSON": "_message",
    "Message": "_message",
    "decode_body": "handlers._codecs",
    "encode_json": "handlers._codecs",
    "media_type": "handlers._codecs",
    # headers kq writes
    "ATTEMPT": "_message",
    "DEAD_LETTER_DELIVERIES": "_message",
    "DEAD_LETTER_ERROR": "_message",
    "DEAD_LETTER_FOREIGN_HEADERS": "_message",
    "DEAD_LETTER_QUEUE": "_message",
    "DEAD_LETTER_REASON": "_message",
    "DEAD_LETTER_TIME": "_message",
    "KQ_HEADER_PREFIX": "_message",
    # producing
    "ConsoleCommandProducer": "handlers._console",
    "GenericMessageProducer": "handlers._producer",
    "HttpProducer": "handlers._http",
    "MessageProducer": "handlers._producer",
    "ServiceProducer": "handlers._service",
    "command_routing_key": "_routing",
    "url_routing_key": "_routing",
    # handlers
    "AllowList": "_allow",
    "AllowMap": "_allow",
    "CallableHandler": "handlers._base",
    "ConsoleCommandHandler": "handlers._console",
    "Handler": "handlers._base",
    "HandlerContext": "handlers._base",
    "ForkedConsoleCommandHandler": "handlers._forked",
    "HttpHandler": "handlers._http",
    "InProcessConsoleCommandHandler": "handlers._inprocess",
    "NoopHandler": "handlers._base",
    "ServiceHandler": "handlers._service",
    # execution-type messages
    "CommandCall": "handlers._console",
    "CommandResult": "handlers._process",
    "HttpRequest": "handlers._http",
    "HttpResult": "handlers._http",
    "ServiceCall": "handlers._service",
    "make_command": "handlers._console",
    "make_http_request": "handlers._http",
    "make_service_call": "handlers._service",
    "parse_command": "handlers._console",
    "parse_http_request": "handlers._http",
    "parse_service_call": "handlers._service",
    # consuming
    "CONSUME_OPTIONS": "_consume_options",
    "ConsumeOption": "_consume_options",
    "consume_arguments": "_consume_options",
    "loop_arguments": "_consume_options",
    "ConsumeLoop": "_loop",
    "PriorityLoop": "_priority",
    "Limits": "_limits",
    "LoopStats": "_stats",
    "RetryPolicy": "_retry",
    # events
    "Event": "_events",
    "EventDispatcher": "_events",
    "MessageConsumed": "_events",
    "MessageConsumptionFailed": "_events",
    "MessageReceived": "_events",
    "MessageSent": "_events",
    "ProcessStarted": "_events",
    "ProcessStopped": "_events",
    # dead letters
    "RedriveResult": "_redrive",
    "remove_dead_letters": "_redrive",
    "retry_dead_letters": "_redrive",
    "show_dead_letters": "_redrive",
    # signing
    "Signer": "_signing",
    "Verifier": "_signing",
    "new_key": "_signing",
    # errors
    "BrokerUnavailableError": "_errors",
    "ClosedError": "_errors",
    "ConfigError": "_errors",
    "DeliveryStateError": "_errors",
    "ExecutionFailedError": "_errors",
    "HandlerTimeoutError": "_errors",
    "KqError": "_errors",
    "LeaseLostError": "_errors",
    "MessageFormatError": "_errors",
    "MissingExtraError": "_errors",
    "NotAllowedError": "_errors",
    "PluginLoadError": "_errors",
    "PublishError": "_errors",
    "SignatureError": "_errors",
    "UnknownPluginError": "_errors",
    "UnknownQueueError": "_errors",
    "UnsupportedOperationError": "_errors",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    # application and configuration
    "App",
    "Config",
    "find_config_file",
    "load_config",
    "parse_config",
    # messages
    "Delivery",
    "JSON",
    "Message",
    "decode_body",
    "encode_json",
    "media_type",
    # headers kq writes
    "ATTEMPT",
    "DEAD_LETTER_DELIVERIES",
    "DEAD_LETTER_ERROR",
    "DEAD_LETTER_FOREIGN_HEADERS",
    "DEAD_LETTER_QUEUE",
    "DEAD_LETTER_REASON",
    "DEAD_LETTER_TIME",
    "KQ_HEADER_PREFIX",
    # producing
    "ConsoleCommandProducer",
    "GenericMessageProducer",
    "HttpProducer",
    "MessageProducer",
    "ServiceProducer",
    "command_routing_key",
    "url_routing_key",
    # handlers
    "AllowList",
    "AllowMap",
    "CallableHandler",
    "ConsoleCommandHandler",
    "ForkedConsoleCommandHandler",
    "Handler",
    "HandlerContext",
    "HttpHandler",
    "InProcessConsoleCommandHandler",
    "NoopHandler",
    "ServiceHandler",
    # execution-type messages
    "CommandCall",
    "CommandResult",
    "HttpRequest",
    "HttpResult",
    "ServiceCall",
    "make_command",
    "make_http_request",
    "make_service_call",
    "parse_command",
    "parse_http_request",
    "parse_service_call",
    # consuming
    "CONSUME_OPTIONS",
    "ConsumeOption",
    "consume_arguments",
    "loop_arguments",
    "ConsumeLoop",
    "PriorityLoop",
    "Limits",
    "LoopStats",
    "RetryPolicy",
    # events
    "Event",
    "EventDispatcher",
    "MessageConsumed",
    "MessageConsumptionFailed",
    "MessageReceived",
    "MessageSent",
    "ProcessStarted",
    "ProcessStopped",
    # dead letters
    "RedriveResult",
    "remove_dead_letters",
    "retry_dead_letters",
    "show_dead_letters",
    # signing
    "Signer",
    "Verifier",
    "new_key",
    # errors
    "BrokerUnavailableError",
    "ClosedError",
    "ConfigError",
    "DeliveryStateError",
    "ExecutionFailedError",
    "HandlerTimeoutError",
    "KqError",
    "LeaseLostError",
    "MessageFormatError",
    "MissingExtraError",
    "NotAllowedError",
    "PluginLoadError",
    "PublishError",
    "SignatureError",
    "UnknownPluginError",
    "UnknownQueueError",
    "UnsupportedOperationError",
    # version
    "__version__",
]
